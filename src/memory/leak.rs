//! Leak detection: a growth estimate from a series of memory samples that
//! distinguishes steady growth from a plateau, noise, a sawtooth or a one-off step.
//!
//! Pure computation, called by the memory sampler thread after each sample.
//! It never allocates and never reads the clock, so it is tested on
//! synthetic series.
//!
//! Method. The caller passes only samples taken after warm-up, with the
//! cache ring's resident growth already subtracted. The series is cut into
//! three parts of equal sample count, and an ordinary least-squares line is
//! fitted to each part. The growth estimate is the median of the three
//! slopes. A leak grows in every part, so all three slopes agree and the
//! median equals the true rate. A one-off step (an allocator arena, a table
//! filling once) lifts one part's slope only, and the median ignores it. A
//! sawtooth or noise around a flat mean gives slopes of either sign near
//! zero. The leak verdict needs all of: the median projected over 24 h above
//! the threshold, every part's slope above half the threshold, every part's
//! slope more than two standard errors above zero, and a fitted growth over
//! the whole span of at least [`MIN_EVIDENCE_FRACTION`] of the threshold.
//! The last rule keeps a few pages of creep over a short span from
//! projecting to a leak: growth of 1 MiB in one minute projects to 1.4 GiB
//! a day, but it is no evidence of one.

/// Minimum number of samples per part of the fit.
pub const MIN_SAMPLES_PER_PART: usize = 5;

/// Share of the threshold that the fitted growth over the span must reach
/// before a leak is reported: one eighth, so 6.25 MiB at the default
/// threshold of 50 MiB. A leak at twice the threshold gets there in 1.5 h.
pub const MIN_EVIDENCE_FRACTION: f64 = 0.125;

/// Parts the series is cut into.
const PARTS: usize = 3;

/// Seconds in the projection horizon of the threshold: 24 h.
pub const HORIZON_SECONDS: f64 = 24.0 * 3600.0;

/// Outcome of one assessment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Too few samples, or too short a span, to estimate growth.
    Insufficient,
    /// Growth below the threshold, or not steady.
    Steady,
    /// Steady growth that projects above the threshold over 24 h.
    Leak,
}

/// Result of [`assess`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Assessment {
    /// Verdict.
    pub verdict: Verdict,
    /// Median growth in bytes per hour; 0 when the verdict is
    /// [`Verdict::Insufficient`].
    pub growth_per_hour: f64,
    /// Slope of each part in bytes per hour, oldest first.
    pub part_slopes: [f64; PARTS],
    /// Samples used.
    pub samples: usize,
    /// Time between the first and the last sample used, in seconds.
    pub span_seconds: f64,
}

impl Assessment {
    fn insufficient(samples: usize, span_seconds: f64) -> Assessment {
        Assessment {
            verdict: Verdict::Insufficient,
            growth_per_hour: 0.0,
            part_slopes: [0.0; PARTS],
            samples,
            span_seconds,
        }
    }

    /// Growth projected over 24 h, in bytes.
    pub fn growth_per_day(&self) -> f64 {
        self.growth_per_hour * 24.0
    }
}

/// Assesses a series of `(seconds, bytes)` points in time order.
///
/// `threshold_per_day` is the projected growth over 24 h, in bytes, that
/// counts as a leak. `min_span_seconds` is the shortest span that gets a
/// verdict other than [`Verdict::Insufficient`], because a line fitted to a
/// few minutes predicts little about a day.
pub fn assess<I>(points: I, threshold_per_day: f64, min_span_seconds: f64) -> Assessment
where
    I: Iterator<Item = (f64, f64)> + Clone,
{
    let samples = points.clone().count();
    let (first, last) = match (points.clone().next(), points.clone().last()) {
        (Some(first), Some(last)) => (first.0, last.0),
        _ => return Assessment::insufficient(0, 0.0),
    };
    let span_seconds = last - first;
    if samples < PARTS * MIN_SAMPLES_PER_PART || span_seconds < min_span_seconds {
        return Assessment::insufficient(samples, span_seconds);
    }

    let mut fits = [Fit::default(); PARTS];
    for (part, fit) in fits.iter_mut().enumerate() {
        let start = part * samples / PARTS;
        let end = (part + 1) * samples / PARTS;
        *fit = Fit::of(points.clone().skip(start).take(end - start));
    }
    let mut slopes = [0.0; PARTS];
    for (slope, fit) in slopes.iter_mut().zip(&fits) {
        *slope = fit.slope * 3600.0;
    }
    let mut sorted = slopes;
    sorted.sort_by(f64::total_cmp);
    let growth_per_hour = sorted[PARTS / 2];

    let threshold_per_hour = threshold_per_day / 24.0;
    let every_part_grows = fits.iter().all(|fit| {
        fit.slope * 3600.0 > threshold_per_hour / 2.0 && fit.slope > 2.0 * fit.standard_error
    });
    let evidence =
        growth_per_hour * span_seconds / 3600.0 >= threshold_per_day * MIN_EVIDENCE_FRACTION;
    let verdict = if growth_per_hour > threshold_per_hour && every_part_grows && evidence {
        Verdict::Leak
    } else {
        Verdict::Steady
    };
    Assessment { verdict, growth_per_hour, part_slopes: slopes, samples, span_seconds }
}

/// Least-squares line through one part: slope in bytes per second and its
/// standard error.
#[derive(Clone, Copy, Debug, Default)]
struct Fit {
    slope: f64,
    standard_error: f64,
}

impl Fit {
    fn of<I: Iterator<Item = (f64, f64)> + Clone>(points: I) -> Fit {
        // Centring on the means first keeps the sums small, so large RSS
        // figures and timestamps lose no precision.
        let mut n = 0.0;
        let (mut mean_x, mut mean_y) = (0.0, 0.0);
        for (x, y) in points.clone() {
            n += 1.0;
            mean_x += x;
            mean_y += y;
        }
        if n < 3.0 {
            return Fit::default();
        }
        mean_x /= n;
        mean_y /= n;

        let (mut sxx, mut sxy) = (0.0, 0.0);
        for (x, y) in points.clone() {
            sxx += (x - mean_x) * (x - mean_x);
            sxy += (x - mean_x) * (y - mean_y);
        }
        if sxx <= 0.0 {
            return Fit::default();
        }
        let slope = sxy / sxx;

        let mut residuals = 0.0;
        for (x, y) in points {
            let residual = y - mean_y - slope * (x - mean_x);
            residuals += residual * residual;
        }
        let standard_error = (residuals / (n - 2.0) / sxx).sqrt();
        Fit { slope, standard_error }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MB: f64 = 1_000_000.0;
    const THRESHOLD: f64 = 50.0 * MB;
    const INTERVAL: f64 = 30.0;
    /// 24 h at 30 s.
    const DAY_SAMPLES: usize = 2880;

    /// Deterministic noise in [-1, 1): a 64-bit linear congruential
    /// generator (Knuth's MMIX constants).
    struct Noise(u64);

    impl Noise {
        fn next(&mut self) -> f64 {
            self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (self.0 >> 11) as f64 / (1u64 << 52) as f64 - 1.0
        }
    }

    fn series(count: usize, mut value: impl FnMut(usize, f64) -> f64) -> Vec<(f64, f64)> {
        (0..count)
            .map(|i| {
                let t = i as f64 * INTERVAL;
                (t, value(i, t))
            })
            .collect()
    }

    fn run(points: &[(f64, f64)]) -> Assessment {
        assess(points.iter().copied(), THRESHOLD, 3600.0)
    }

    fn assert_growth_near(assessment: &Assessment, truth_per_day: f64) {
        let error = (assessment.growth_per_day() - truth_per_day).abs();
        let allowed = 0.1 * truth_per_day.abs().max(THRESHOLD);
        assert!(
            error <= allowed,
            "growth {:.0} B/day, truth {truth_per_day:.0} B/day, parts {:?}",
            assessment.growth_per_day(),
            assessment.part_slopes
        );
    }

    #[test]
    fn flat_series_is_steady() {
        let points = series(DAY_SAMPLES, |_, _| 80.0 * MB);
        let assessment = run(&points);
        assert_eq!(assessment.verdict, Verdict::Steady);
        assert_growth_near(&assessment, 0.0);
        assert_eq!(assessment.growth_per_hour, 0.0);
    }

    #[test]
    fn slow_leak_is_steady_with_its_growth() {
        // 20 MB a day: measured, but under the 50 MB threshold.
        let rate = 20.0 * MB / HORIZON_SECONDS;
        let mut noise = Noise(1);
        let points = series(DAY_SAMPLES, |_, t| 80.0 * MB + rate * t + 0.2 * MB * noise.next());
        let assessment = run(&points);
        assert_eq!(assessment.verdict, Verdict::Steady);
        let error = (assessment.growth_per_day() - 20.0 * MB).abs();
        assert!(error <= 2.0 * MB, "growth {:.0} B/day", assessment.growth_per_day());
    }

    #[test]
    fn fast_leak_is_a_leak() {
        // 200 MB a day, found within two hours of samples.
        let rate = 200.0 * MB / HORIZON_SECONDS;
        let mut noise = Noise(2);
        let points = series(240, |_, t| 80.0 * MB + rate * t + 0.2 * MB * noise.next());
        let assessment = run(&points);
        assert_eq!(assessment.verdict, Verdict::Leak);
        let error = (assessment.growth_per_day() - 200.0 * MB).abs();
        assert!(error <= 20.0 * MB, "growth {:.0} B/day", assessment.growth_per_day());
    }

    #[test]
    fn leak_just_above_threshold_alerts() {
        let rate = 60.0 * MB / HORIZON_SECONDS;
        let mut noise = Noise(3);
        let points = series(DAY_SAMPLES, |_, t| 80.0 * MB + rate * t + 0.5 * MB * noise.next());
        let assessment = run(&points);
        assert_eq!(assessment.verdict, Verdict::Leak);
        let error = (assessment.growth_per_day() - 60.0 * MB).abs();
        assert!(error <= 6.0 * MB, "growth {:.0} B/day", assessment.growth_per_day());
    }

    #[test]
    fn noisy_plateau_is_steady() {
        // +-5 MB of noise around 100 MB.
        let mut noise = Noise(4);
        let points = series(DAY_SAMPLES, |_, _| 100.0 * MB + 5.0 * MB * noise.next());
        let assessment = run(&points);
        assert_eq!(assessment.verdict, Verdict::Steady);
        assert_growth_near(&assessment, 0.0);
    }

    #[test]
    fn ring_warm_up_step_is_steady() {
        // The ring fills over the first two hours (64 MB), then RSS is flat.
        // Without subtracting the ring, the window still contains the ramp.
        let points = series(DAY_SAMPLES, |_, t| 20.0 * MB + 64.0 * MB * (t / 7200.0).min(1.0));
        let assessment = run(&points);
        assert_eq!(assessment.verdict, Verdict::Steady, "{assessment:?}");
        assert_growth_near(&assessment, 0.0);
    }

    #[test]
    fn one_off_step_is_steady() {
        // A 30 MB step in the middle of the window, anywhere in a part.
        for step_at in [DAY_SAMPLES / 6, DAY_SAMPLES / 2, DAY_SAMPLES / 3, DAY_SAMPLES * 5 / 6] {
            let points =
                series(DAY_SAMPLES, |i, _| if i < step_at { 80.0 * MB } else { 110.0 * MB });
            let assessment = run(&points);
            assert_eq!(assessment.verdict, Verdict::Steady, "step at {step_at}: {assessment:?}");
            assert_growth_near(&assessment, 0.0);
        }
    }

    #[test]
    fn sawtooth_is_steady() {
        // Ramps of 20 MB that drop back every 30 minutes.
        let points = series(DAY_SAMPLES, |_, t| 80.0 * MB + 20.0 * MB * ((t % 1800.0) / 1800.0));
        let assessment = run(&points);
        assert_eq!(assessment.verdict, Verdict::Steady);
        assert_growth_near(&assessment, 0.0);
    }

    #[test]
    fn staircase_leak_is_a_leak() {
        // 10 MB steps every 2 h: 120 MB a day, in steps rather than a slope.
        let points = series(DAY_SAMPLES, |_, t| 80.0 * MB + 10.0 * MB * (t / 7200.0).floor());
        let assessment = run(&points);
        assert_eq!(assessment.verdict, Verdict::Leak);
        assert_growth_near(&assessment, 120.0 * MB);
    }

    #[test]
    fn small_growth_over_short_span_is_steady() {
        // 2 MB in 30 minutes projects to 96 MB a day, but it is less than
        // an eighth of the threshold, so no verdict of leak yet.
        let points = series(60, |_, t| 80.0 * MB + 2.0 * MB * t / 1800.0);
        let assessment = assess(points.iter().copied(), THRESHOLD, 600.0);
        assert_eq!(assessment.verdict, Verdict::Steady);
        assert_growth_near(&assessment, 96.0 * MB);
    }

    #[test]
    fn short_series_is_insufficient() {
        // Ten minutes of a fast leak: shorter than the one-hour minimum span.
        let points = series(20, |_, t| 80.0 * MB + 1000.0 * t);
        let assessment = run(&points);
        assert_eq!(assessment.verdict, Verdict::Insufficient);
        assert_eq!(assessment.growth_per_hour, 0.0);
        let few = series(PARTS * MIN_SAMPLES_PER_PART - 1, |_, t| 1000.0 * t);
        let assessment = assess(few.iter().copied(), THRESHOLD, 0.0);
        assert_eq!(assessment.verdict, Verdict::Insufficient);
        assert_eq!(assess(std::iter::empty(), THRESHOLD, 0.0).samples, 0);
    }
}
