//! The bounded window of memory samples: a ring of [`Sample`] values
//! allocated once at its full size.
//!
//! Owned by the memory sampler thread. A push overwrites the oldest sample
//! once the window is full, so it never allocates after creation.

use super::Sample;

/// The newest samples, oldest first, up to a fixed count.
#[derive(Debug)]
pub struct SampleWindow {
    samples: Vec<Sample>,
    /// Index of the oldest sample.
    start: usize,
    len: usize,
}

impl SampleWindow {
    /// Creates a window of `capacity` samples (at least 1), allocated now.
    pub fn new(capacity: usize) -> SampleWindow {
        SampleWindow { samples: vec![Sample::default(); capacity.max(1)], start: 0, len: 0 }
    }

    /// Maximum number of samples kept.
    pub fn capacity(&self) -> usize {
        self.samples.len()
    }

    /// Number of samples kept now.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no sample is kept.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Adds `sample`, dropping the oldest when the window is full.
    pub fn push(&mut self, sample: Sample) {
        let capacity = self.samples.len();
        if self.len < capacity {
            self.samples[(self.start + self.len) % capacity] = sample;
            self.len += 1;
        } else {
            self.samples[self.start] = sample;
            self.start = (self.start + 1) % capacity;
        }
    }

    /// Iterates over the samples, oldest first.
    pub fn iter(&self) -> impl Iterator<Item = &Sample> + Clone + '_ {
        // The window is full whenever `start` is not 0, so the samples are
        // `start..` followed by `..start`. Two slices iterate faster than
        // indexing modulo the capacity.
        let (newer, older) = self.samples.split_at(self.start);
        older.iter().chain(newer).take(self.len)
    }

    /// Address of the storage, for tests that check it never moves.
    pub fn storage_address(&self) -> usize {
        self.samples.as_ptr() as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(at: f64) -> Sample {
        Sample { at_seconds: at, ..Sample::default() }
    }

    #[test]
    fn window_keeps_newest_in_order() {
        let mut window = SampleWindow::new(3);
        assert!(window.is_empty());
        for at in 0..5 {
            window.push(sample(f64::from(at)));
        }
        let kept: Vec<f64> = window.iter().map(|s| s.at_seconds).collect();
        assert_eq!(kept, [2.0, 3.0, 4.0]);
        assert_eq!(window.len(), 3);
    }

    #[test]
    fn full_window_never_reallocates() {
        let mut window = SampleWindow::new(100);
        let address = window.storage_address();
        for at in 0..1000 {
            window.push(sample(f64::from(at)));
        }
        assert_eq!(window.storage_address(), address);
        assert_eq!(window.capacity(), 100);
        assert_eq!(window.iter().next().map(|s| s.at_seconds), Some(900.0));
    }
}
