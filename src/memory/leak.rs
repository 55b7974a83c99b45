//! Leak detection: a growth estimate and a leak verdict from a series of
//! memory samples, which tell steady growth from a plateau, noise, a
//! sawtooth or a one-off step.
//!
//! Pure computation, called by the memory sampler thread after each sample.
//! It never allocates and never reads the clock, so it is tested on
//! synthetic series.
//!
//! Method. The caller passes only samples taken after warm-up, with the
//! cache ring's resident growth already subtracted. The growth estimate is
//! the ordinary least-squares slope over the whole series. For a steady
//! leak it is the true rate. For a sawtooth around a flat mean it is small,
//! because the fitted slope over N whole periods is about the ramp slope
//! divided by N squared. A one-off step of height h fits to at most 1.5 h
//! per span, which is above the threshold for a step of about 0.7 of it,
//! so the slope alone cannot tell a step from a leak. The verdict is a
//! leak when either test below holds.
//!
//! - Sustained growth: the whole-series slope projects above the threshold
//!   over 24 h, and the fitted growth over the span is at least
//!   [`MIN_SUSTAINED_EVIDENCE_FRACTION`] of the threshold and more than the
//!   range of the first quarter. The low envelope rises: the minimum of
//!   the last quarter of the span is above the maximum of the first
//!   quarter. Growth is spread out: each half of the span rises on its
//!   own, by the same envelope test within the half or by a slope above
//!   half the threshold. A one-off step rises in one half only, so it
//!   never passes, however high. A sawtooth with a flat mean fails the
//!   envelope test as soon as the span contains one of its drops.
//! - Recent onset: the last `recent_seconds` are the horizon. Over it,
//!   the slope projects above the threshold, and the fitted growth is at
//!   least [`MIN_EVIDENCE_FRACTION`] of the threshold. Both halves of the
//!   horizon grow: each slope is above half the threshold and more than
//!   two standard errors above zero, and each half's own low envelope
//!   rises as in the sustained test. The minimum of the horizon's last
//!   quarter is above every sample before the horizon, a new high-water
//!   mark. The growth over the horizon must also exceed the range of the
//!   samples before it, less the part of that range that a whole-series
//!   slope above the threshold explains, so a series that wanders within a
//!   band does not pass by reaching the top of the band. This flags a leak
//!   that starts after the window is full within about one horizon, long
//!   before it dominates the whole-series slope. A one-off step grows in
//!   one half only. A sawtooth with a flat mean makes no new high once one
//!   of its drops lies before the horizon. The test needs samples spanning
//!   at least one horizon before the horizon.
//!
//! Hysteresis: while the alert is raised, both tests use the threshold
//! scaled by [`CLEAR_FRACTION`], and drop the conditions that only keep
//! false alerts from being raised. The sustained test then holds while the
//! whole-series slope and its evidence share pass and the minimum of the
//! last sixteenth of the span is above the maximum of the first quarter.
//! The recent-onset test holds while the horizon's slope and evidence
//! share pass and the horizon still ends at a new high-water mark. So a
//! staircase above the threshold stays flagged from step to step, and a
//! sawtooth raised during its first ramp clears at its first drop.
//!
//! Limits.
//! - A sawtooth is told from a leak only once the series holds one of its
//!   drops. During its first ramp after warm-up, a sawtooth whose ramp
//!   projects above the threshold may raise the alert, which clears at the
//!   drop. In the sampler's tests (24 h window, 3 h horizon), a 20 MiB
//!   sawtooth with an 8 h period raises it once, 6 h after warm-up. A
//!   sawtooth with a period as long as the window cannot be told from a
//!   leak at all.
//! - A staircase is flagged once two of its steps lie in different halves
//!   of the span, so steps half the span apart or more are flagged only
//!   after the second step, and steps a whole span apart or more read as
//!   one-off steps and are never flagged. In simulated runs at the
//!   defaults (24 h window, 30 s samples, 50 MiB), 60 MiB a day in 2 h
//!   steps was flagged 2.4 h after the first step, in 12 h or 16 h steps
//!   within 1 h after the second step, and in 24 h steps never.
//! - A series that wanders without a trend is flagged when it crosses a
//!   band wider than the threshold within one window, in the same
//!   direction all the way: inside one window, that is indistinguishable
//!   from a leak. In simulated runs of 96 h, a random walk of up to
//!   0.5 MiB a sample within 30 MiB either way raised nothing, and one of
//!   up to 2 MiB a sample raised the alert 3 times, for 0.3 to 2.6 h.
//! - A window too short for the evidence shares flags only growth faster
//!   than the threshold; [`smallest_detectable_per_day`] computes how fast.

/// Minimum number of samples in each half of the horizon, and in each
/// quarter of a series that gets a verdict.
pub const MIN_SAMPLES_PER_PART: usize = 5;

/// Minimum number of samples that get a verdict other than
/// [`Verdict::Insufficient`]: five per quarter of the span.
pub const MIN_SAMPLES: usize = 4 * MIN_SAMPLES_PER_PART;

/// Share of the threshold that the fitted growth over the horizon must
/// reach before the recent-onset test flags a leak: one eighth, so
/// 6.25 MiB at the default threshold of 50 MiB. It keeps a few pages of
/// creep over a short horizon from projecting to a leak: 1 MiB in one
/// minute projects to 1.4 GiB a day, but it is no evidence of one.
pub const MIN_EVIDENCE_FRACTION: f64 = 0.125;

/// Share of the threshold that the fitted growth over the whole span must
/// reach before the sustained test flags a leak: 0.4, so 20 MiB at the
/// default threshold. A leak at twice the threshold qualifies after 4.8 h,
/// and no window shorter than 9.6 h can flag a leak at the threshold.
pub const MIN_SUSTAINED_EVIDENCE_FRACTION: f64 = 0.4;

/// Share of the threshold that still counts as a leak while the alert is
/// raised: 0.75. A raised alert clears when growth falls below it.
pub const CLEAR_FRACTION: f64 = 0.75;

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

/// Thresholds of [`assess`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Limits {
    /// Projected growth over 24 h that counts as a leak, in bytes.
    pub threshold_per_day: f64,
    /// Shortest span that gets a verdict other than
    /// [`Verdict::Insufficient`], in seconds, because a line fitted to a
    /// few minutes predicts little about a day.
    pub min_span_seconds: f64,
    /// Length of the recent horizon of the recent-onset test, in seconds.
    /// The sampler uses an eighth of its window, at least the minimum span.
    pub recent_seconds: f64,
}

/// Result of [`assess`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Assessment {
    /// Verdict.
    pub verdict: Verdict,
    /// Growth in bytes per hour that backs the verdict: the slope over the
    /// recent horizon when only the recent-onset test flags a leak, else
    /// the slope over the whole series. 0 when the verdict is
    /// [`Verdict::Insufficient`].
    pub growth_per_hour: f64,
    /// Least-squares slope over the whole series, in bytes per hour.
    pub window_growth_per_hour: f64,
    /// Least-squares slope over the recent horizon, in bytes per hour. It
    /// is 0 when the series is shorter than two horizons.
    pub recent_growth_per_hour: f64,
    /// Whether the sustained-growth test holds.
    pub sustained: bool,
    /// Whether the recent-onset test holds.
    pub recent_onset: bool,
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
            window_growth_per_hour: 0.0,
            recent_growth_per_hour: 0.0,
            sustained: false,
            recent_onset: false,
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
/// `raised` is whether the leak alert is raised now. While it is, both
/// tests use the threshold scaled by [`CLEAR_FRACTION`] and the looser
/// holding conditions of the module doc, so the verdict stays a leak until
/// growth falls clearly below the threshold. Reads the series twice: once
/// for its count and ends, once for every figure.
pub fn assess<I>(points: I, limits: &Limits, raised: bool) -> Assessment
where
    I: Iterator<Item = (f64, f64)> + Clone,
{
    let mut samples = 0;
    let mut ends = None;
    for (t, y) in points.clone() {
        samples += 1;
        ends = Some(ends.map_or(((t, y), t), |(origin, _)| (origin, t)));
    }
    let Some(((first, origin_y), last)) = ends else {
        return Assessment::insufficient(0, 0.0);
    };
    let span = last - first;
    if samples < MIN_SAMPLES || span < limits.min_span_seconds || span <= 0.0 {
        return Assessment::insufficient(samples, span);
    }

    let threshold =
        if raised { limits.threshold_per_day * CLEAR_FRACTION } else { limits.threshold_per_day };
    let threshold_per_second = threshold / HORIZON_SECONDS;

    // One pass gathers every figure. The fits are relative to the first
    // point, so large RSS figures and timestamps lose little precision.
    let quarter = span / 4.0;
    let middle = first + span / 2.0;
    let newest_start = last - span / 16.0;
    let horizon = limits.recent_seconds;
    let horizon_start = last - horizon;
    let horizon_middle = last - horizon / 2.0;
    let horizon_tail = last - horizon / 4.0;
    let mut whole = Sums::default();
    let mut parts = [Part::new(first, middle), Part::new(middle, last)];
    let mut recent = Sums::default();
    let mut halves = [Part::new(horizon_start, horizon_middle), Part::new(horizon_middle, last)];
    let mut first_quarter = Envelope::default();
    let mut last_quarter_min = f64::INFINITY;
    let mut newest_min = f64::INFINITY;
    let mut before_horizon = Envelope::default();
    let mut horizon_tail_min = f64::INFINITY;
    for (t, y) in points {
        let (x, y) = (t - first, y - origin_y);
        whole.add(x, y);
        parts[usize::from(t >= middle)].add(t, x, y);
        if t < first + quarter {
            first_quarter.add(y);
        }
        if t >= last - quarter {
            last_quarter_min = last_quarter_min.min(y);
        }
        if t >= newest_start {
            newest_min = newest_min.min(y);
        }
        if t < horizon_start {
            before_horizon.add(y);
            continue;
        }
        recent.add(x, y);
        halves[usize::from(t >= horizon_middle)].add(t, x, y);
        if t >= horizon_tail {
            horizon_tail_min = horizon_tail_min.min(y);
        }
    }

    let whole = whole.fit();
    let envelope_rises = last_quarter_min > first_quarter.max;
    let sustained_slope = whole.slope > threshold_per_second
        && whole.slope * span >= threshold * MIN_SUSTAINED_EVIDENCE_FRACTION;
    let sustained = if raised {
        // Holding: the slope still projects above the lowered threshold,
        // and the newest samples are above the first quarter. A staircase
        // of 60 MB a day in steps two thirds of the span apart meets both
        // at every phase. A sawtooth fails the second at its drop.
        sustained_slope && newest_min > first_quarter.max
    } else {
        // Raising: a one-off step rises in one place only, so both halves
        // of the span must rise on their own, and the growth must exceed
        // the range the first quarter already wandered through.
        sustained_slope
            && envelope_rises
            && whole.slope * span > first_quarter.range()
            && parts.iter().all(|part| part.rises(threshold_per_second / 2.0))
    };

    // The recent-onset test needs one horizon of samples before the
    // horizon, so the new high-water mark is measured against something.
    let recent = if horizon > 0.0 && span >= 2.0 * horizon { recent.fit() } else { Fit::default() };
    let recent_growth = recent.slope * horizon;
    // The part of the range before the horizon that a whole-series trend
    // above the threshold explains: a leak that started before the
    // horizon is no reason to wait, but a wandering series is.
    let trend_before_horizon =
        if whole.slope > threshold_per_second { whole.slope * (span - horizon) } else { 0.0 };
    let recent_onset = span >= 2.0 * horizon
        && recent.slope > threshold_per_second
        && recent_growth >= threshold * MIN_EVIDENCE_FRACTION
        && horizon_tail_min > before_horizon.max
        && (raised
            || (recent_growth > before_horizon.range() - trend_before_horizon
                && halves.iter().all(|part| {
                    let half = part.sums.fit();
                    half.samples >= MIN_SAMPLES_PER_PART
                        && part.last_quarter_min > part.first_quarter_max
                        && half.slope > threshold_per_second / 2.0
                        && half.slope > 2.0 * half.standard_error
                })));

    let verdict = if sustained || recent_onset { Verdict::Leak } else { Verdict::Steady };
    let growth_per_second = if recent_onset && !sustained { recent.slope } else { whole.slope };
    Assessment {
        verdict,
        growth_per_hour: growth_per_second * 3600.0,
        window_growth_per_hour: whole.slope * 3600.0,
        recent_growth_per_hour: recent.slope * 3600.0,
        sustained,
        recent_onset,
        samples,
        span_seconds: span,
    }
}

/// Returns the smallest steady growth, in bytes per 24 h, that [`assess`]
/// can flag as a leak in a series of `samples` points `interval_seconds`
/// apart. Returns `None` when such a series never gets a verdict, because
/// it has fewer than [`MIN_SAMPLES`] points or spans less than the minimum.
///
/// It is the threshold itself when the span is long enough for the
/// evidence shares, and more when it is not. The sustained test needs
/// [`MIN_SUSTAINED_EVIDENCE_FRACTION`] of the threshold over the span. The
/// recent-onset test needs [`MIN_EVIDENCE_FRACTION`] of it over the
/// horizon. The result is the lower of the two, so with a 24 h span and a 3 h horizon
/// it is the threshold, and with a 2 min span of 1 s samples and a 30 s
/// horizon it is 288 times the threshold.
pub fn smallest_detectable_per_day(
    limits: &Limits,
    samples: usize,
    interval_seconds: f64,
) -> Option<f64> {
    let span = samples.saturating_sub(1) as f64 * interval_seconds;
    if samples < MIN_SAMPLES || span <= 0.0 || span < limits.min_span_seconds {
        return None;
    }
    let threshold = limits.threshold_per_day;
    let sustained =
        threshold.max(threshold * MIN_SUSTAINED_EVIDENCE_FRACTION * HORIZON_SECONDS / span);
    let horizon = limits.recent_seconds;
    // Each half of the horizon needs its own samples.
    let half_samples = (horizon / 2.0 / interval_seconds).floor();
    let recent =
        if horizon > 0.0 && span >= 2.0 * horizon && half_samples >= MIN_SAMPLES_PER_PART as f64 {
            threshold.max(threshold * MIN_EVIDENCE_FRACTION * HORIZON_SECONDS / horizon)
        } else {
            f64::INFINITY
        };
    Some(sustained.min(recent))
}

/// Lowest and highest value of a set of samples.
#[derive(Clone, Copy, Debug)]
struct Envelope {
    min: f64,
    max: f64,
}

impl Default for Envelope {
    fn default() -> Envelope {
        Envelope { min: f64::INFINITY, max: f64::NEG_INFINITY }
    }
}

impl Envelope {
    fn add(&mut self, y: f64) {
        self.min = self.min.min(y);
        self.max = self.max.max(y);
    }

    /// Highest minus lowest value; 0 when empty.
    fn range(&self) -> f64 {
        if self.max >= self.min { self.max - self.min } else { 0.0 }
    }
}

/// One half of the span, for the test that growth is spread out: its fit
/// and the envelopes of its first and last quarter.
#[derive(Clone, Copy, Debug)]
struct Part {
    first_quarter_end: f64,
    last_quarter_start: f64,
    sums: Sums,
    first_quarter_max: f64,
    last_quarter_min: f64,
}

impl Part {
    fn new(start: f64, end: f64) -> Part {
        let quarter = (end - start) / 4.0;
        Part {
            first_quarter_end: start + quarter,
            last_quarter_start: end - quarter,
            sums: Sums::default(),
            first_quarter_max: f64::NEG_INFINITY,
            last_quarter_min: f64::INFINITY,
        }
    }

    fn add(&mut self, t: f64, x: f64, y: f64) {
        self.sums.add(x, y);
        if t < self.first_quarter_end {
            self.first_quarter_max = self.first_quarter_max.max(y);
        }
        if t >= self.last_quarter_start {
            self.last_quarter_min = self.last_quarter_min.min(y);
        }
    }

    /// Returns whether the part grows on its own: its low envelope rises,
    /// or its slope is above `min_slope` (bytes per second).
    fn rises(&self, min_slope: f64) -> bool {
        self.sums.n >= MIN_SAMPLES_PER_PART
            && (self.last_quarter_min > self.first_quarter_max || self.sums.fit().slope > min_slope)
    }
}

/// Running sums of a least-squares fit, of points relative to an origin.
#[derive(Clone, Copy, Debug, Default)]
struct Sums {
    n: usize,
    x: f64,
    y: f64,
    xx: f64,
    xy: f64,
    yy: f64,
}

impl Sums {
    fn add(&mut self, x: f64, y: f64) {
        self.n += 1;
        self.x += x;
        self.y += y;
        self.xx += x * x;
        self.xy += x * y;
        self.yy += y * y;
    }

    /// Fits a line. The slope is 0 with fewer than three points or no
    /// spread in time.
    fn fit(&self) -> Fit {
        let samples = self.n;
        if samples < 3 {
            return Fit { samples, ..Fit::default() };
        }
        let n = samples as f64;
        let sxx = self.xx - self.x * self.x / n;
        let sxy = self.xy - self.x * self.y / n;
        let syy = self.yy - self.y * self.y / n;
        if sxx <= 0.0 {
            return Fit { samples, ..Fit::default() };
        }
        let slope = sxy / sxx;
        // Rounding can leave a tiny negative sum for a perfect line.
        let residuals = (syy - slope * sxy).max(0.0);
        let standard_error = (residuals / (n - 2.0) / sxx).sqrt();
        Fit { slope, standard_error, samples }
    }
}

/// Least-squares line: slope in bytes per second, its standard error, and
/// the number of points.
#[derive(Clone, Copy, Debug, Default)]
struct Fit {
    slope: f64,
    standard_error: f64,
    samples: usize,
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

    /// Limits the sampler uses with a 24 h window: a 1 h minimum span and
    /// a 3 h horizon.
    const DAY_LIMITS: Limits = Limits {
        threshold_per_day: THRESHOLD,
        min_span_seconds: 3600.0,
        recent_seconds: 3.0 * 3600.0,
    };

    fn run(points: &[(f64, f64)]) -> Assessment {
        assess(points.iter().copied(), &DAY_LIMITS, false)
    }

    /// Asserts the bound on the fitted growth of a one-off step of `step`
    /// bytes in a series of `span` seconds: at most 1.5 steps per span.
    fn assert_step_growth_bound(assessment: &Assessment, step: f64, span: f64) {
        let bound = 1.5 * step / span * HORIZON_SECONDS;
        assert!(
            assessment.growth_per_day().abs() <= bound * 1.01,
            "growth {:.0} B/day above the step bound {bound:.0}",
            assessment.growth_per_day()
        );
    }

    fn assert_growth_near(assessment: &Assessment, truth_per_day: f64) {
        let error = (assessment.growth_per_day() - truth_per_day).abs();
        let allowed = 0.1 * truth_per_day.abs().max(THRESHOLD);
        assert!(
            error <= allowed,
            "growth {:.0} B/day, truth {truth_per_day:.0} B/day: {assessment:?}",
            assessment.growth_per_day(),
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
        // 200 MB a day, found within two hours of samples by the recent
        // onset test with a 1 h horizon (an 8 h window).
        let rate = 200.0 * MB / HORIZON_SECONDS;
        let mut noise = Noise(2);
        let points = series(241, |_, t| 80.0 * MB + rate * t + 0.2 * MB * noise.next());
        let limits = Limits { recent_seconds: 3600.0, ..DAY_LIMITS };
        let assessment = assess(points.iter().copied(), &limits, false);
        assert_eq!(assessment.verdict, Verdict::Leak, "{assessment:?}");
        assert!(assessment.recent_onset);
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
        assert!(assessment.growth_per_day() > 0.0);
        assert_step_growth_bound(&assessment, 64.0 * MB, assessment.span_seconds);
    }

    #[test]
    fn one_off_step_is_steady() {
        // A 30 MB step in the middle of the window, anywhere in a part.
        for step_at in [DAY_SAMPLES / 6, DAY_SAMPLES / 2, DAY_SAMPLES / 3, DAY_SAMPLES * 5 / 6] {
            let points =
                series(DAY_SAMPLES, |i, _| if i < step_at { 80.0 * MB } else { 110.0 * MB });
            let assessment = run(&points);
            assert_eq!(assessment.verdict, Verdict::Steady, "step at {step_at}: {assessment:?}");
            assert_step_growth_bound(&assessment, 30.0 * MB, assessment.span_seconds);
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
        let limits = Limits { min_span_seconds: 600.0, ..DAY_LIMITS };
        let assessment = assess(points.iter().copied(), &limits, false);
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
        let few = series(MIN_SAMPLES - 1, |_, t| 1000.0 * t);
        let limits = Limits { min_span_seconds: 0.0, ..DAY_LIMITS };
        let assessment = assess(few.iter().copied(), &limits, false);
        assert_eq!(assessment.verdict, Verdict::Insufficient);
        assert_eq!(assess(std::iter::empty(), &limits, false).samples, 0);
    }

    #[test]
    fn late_leak_is_a_recent_onset() {
        // Flat for 20 h, then 200 MB a day for the last 3 h of a 24 h
        // window: the whole-window slope is far below the threshold.
        let onset = 21.0 * 3600.0;
        let rate = 200.0 * MB / HORIZON_SECONDS;
        let points = series(DAY_SAMPLES, |_, t| 80.0 * MB + rate * (t - onset).max(0.0));
        let assessment = run(&points);
        assert_eq!(assessment.verdict, Verdict::Leak, "{assessment:?}");
        assert!(assessment.recent_onset);
        assert!(!assessment.sustained);
        assert!(assessment.window_growth_per_hour * 24.0 < THRESHOLD);
        assert_growth_near(&assessment, 200.0 * MB);
    }

    #[test]
    fn sawtooth_with_third_of_window_period_is_steady() {
        // 20 MB ramps that drop back every 8 h, at every phase: each third
        // of the window is one clean ramp of 60 MB a day.
        for phase_hours in 0..8 {
            let phase = f64::from(phase_hours) * 3600.0;
            let points = series(DAY_SAMPLES, |_, t| {
                80.0 * MB + 20.0 * MB * (((t + phase) % 28_800.0) / 28_800.0)
            });
            for raised in [false, true] {
                let assessment = assess(points.iter().copied(), &DAY_LIMITS, raised);
                assert_eq!(
                    assessment.verdict,
                    Verdict::Steady,
                    "phase {phase_hours} h, raised {raised}: {assessment:?}"
                );
            }
        }
    }

    #[test]
    fn staircase_with_half_window_steps_is_a_leak() {
        // 30 MB every 12 h (60 MB a day): one or two steps in the window.
        // Once raised, the verdict stays a leak at every phase.
        for phase_hours in 0..12 {
            let phase = f64::from(phase_hours) * 3600.0;
            let points = series(DAY_SAMPLES, |_, t| {
                80.0 * MB + 30.0 * MB * ((t + phase) / 43_200.0).floor()
            });
            let assessment = assess(points.iter().copied(), &DAY_LIMITS, true);
            assert_eq!(assessment.verdict, Verdict::Leak, "phase {phase_hours} h: {assessment:?}");
            assert!(assessment.sustained);
        }
    }

    #[test]
    fn large_one_off_step_is_steady() {
        // Steps of 35 to 500 MB anywhere in a full window: the whole-window
        // slope of most of them projects above the threshold, but the
        // growth is in one place only.
        for step in [35.0 * MB, 45.0 * MB, 100.0 * MB, 500.0 * MB] {
            for eighth in 1..8 {
                let step_at = DAY_SAMPLES * eighth / 8;
                let mut noise = Noise(5);
                let points = series(DAY_SAMPLES, |i, _| {
                    80.0 * MB + if i < step_at { 0.0 } else { step } + MB * noise.next()
                });
                let assessment = run(&points);
                assert_eq!(
                    assessment.verdict,
                    Verdict::Steady,
                    "{step} B step at {eighth}/8: {assessment:?}"
                );
            }
        }
    }

    #[test]
    fn raised_staircase_holds_between_steps() {
        // 40 MB every 16 h (60 MB a day), at every phase: one or two steps
        // in the window. Once raised, the verdict holds.
        for phase_hours in 0..16 {
            let phase = f64::from(phase_hours) * 3600.0;
            let points = series(DAY_SAMPLES, |_, t| {
                80.0 * MB + 40.0 * MB * ((t + phase) / 57_600.0).floor()
            });
            let assessment = assess(points.iter().copied(), &DAY_LIMITS, true);
            assert_eq!(assessment.verdict, Verdict::Leak, "phase {phase_hours} h: {assessment:?}");
        }
    }

    #[test]
    fn detectable_growth_follows_span() {
        let limits = DAY_LIMITS;
        let day = smallest_detectable_per_day(&limits, DAY_SAMPLES + 1, INTERVAL);
        assert_eq!(day, Some(THRESHOLD));
        // 6 h: the recent-onset test needs an eighth of the threshold in
        // its 3 h horizon, which a leak at the threshold reaches.
        let quarter_day = smallest_detectable_per_day(&limits, 721, INTERVAL);
        assert_eq!(quarter_day, Some(THRESHOLD));
        // 4 h: too short for the recent-onset test, and the sustained test
        // needs 0.4 of the threshold in 4 h.
        let four_hours = smallest_detectable_per_day(&limits, 481, INTERVAL).unwrap_or(0.0);
        assert!((four_hours / THRESHOLD - 2.4).abs() < 1e-9, "{four_hours}");
        let short = Limits { min_span_seconds: 30.0, recent_seconds: 30.0, ..limits };
        let two_minutes = smallest_detectable_per_day(&short, 121, 1.0).unwrap_or(0.0);
        assert!((two_minutes / THRESHOLD - 288.0).abs() < 1e-9, "{two_minutes}");
        assert_eq!(smallest_detectable_per_day(&limits, MIN_SAMPLES - 1, INTERVAL), None);
        assert_eq!(smallest_detectable_per_day(&limits, 100, 30.0), None);
    }

    #[test]
    fn raised_alert_holds_just_under_threshold() {
        // 45 MB a day: not a new leak, but a raised alert stays raised
        // until growth falls below 75 % of the threshold.
        let rate = 45.0 * MB / HORIZON_SECONDS;
        let points = series(DAY_SAMPLES, |_, t| 80.0 * MB + rate * t);
        assert_eq!(run(&points).verdict, Verdict::Steady);
        let while_raised = assess(points.iter().copied(), &DAY_LIMITS, true);
        assert_eq!(while_raised.verdict, Verdict::Leak);
        assert_growth_near(&while_raised, 45.0 * MB);
        let slow = series(DAY_SAMPLES, |_, t| 80.0 * MB + 0.7 * rate * t);
        assert_eq!(assess(slow.iter().copied(), &DAY_LIMITS, true).verdict, Verdict::Steady);
    }
}
