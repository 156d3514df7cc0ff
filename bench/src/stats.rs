//! The arithmetic every report uses: latency percentiles (HDR histogram, microsecond
//! resolution, 3 significant digits), rates and ratios.

use hdrhistogram::Histogram;
use serde::Serialize;

/// Latencies in microseconds.
pub struct Latencies(Histogram<u64>);

/// A summary of a latency distribution, in microseconds.
#[derive(Clone, Copy, Debug, Default, Serialize, PartialEq)]
pub struct Percentiles {
    pub count: u64,
    pub p50_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
    pub mean_us: f64,
}

impl Default for Latencies {
    fn default() -> Self {
        Self::new()
    }
}

impl Latencies {
    /// Empty, for values from 1 us to 1 hour.
    pub fn new() -> Self {
        // Bounds and precision are constants known to be valid.
        #[allow(clippy::expect_used)]
        Latencies(Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid bounds"))
    }

    /// Record one latency in microseconds (values below 1 count as 1, above the bound as
    /// the bound).
    pub fn record_us(&mut self, us: u64) {
        self.0.saturating_record(us.max(1));
    }

    /// Add every value of `other`.
    pub fn merge(&mut self, other: &Latencies) {
        // Same bounds on both sides, so adding cannot fail.
        let _ = self.0.add(&other.0);
    }

    /// The summary.
    pub fn summary(&self) -> Percentiles {
        if self.0.is_empty() {
            return Percentiles::default();
        }
        Percentiles {
            count: self.0.len(),
            p50_us: self.0.value_at_quantile(0.50),
            p99_us: self.0.value_at_quantile(0.99),
            p999_us: self.0.value_at_quantile(0.999),
            max_us: self.0.max(),
            mean_us: self.0.mean(),
        }
    }
}

/// Events per second.
pub fn rate(count: u64, secs: f64) -> f64 {
    if secs > 0.0 { count as f64 / secs } else { 0.0 }
}

/// `a / b`, or 0 when `b` is 0.
pub fn ratio(a: f64, b: f64) -> f64 {
    if b != 0.0 { a / b } else { 0.0 }
}

/// The median of `xs` (mean of the middle two for an even count); 0 for none.
pub fn median(xs: &[f64]) -> f64 {
    let mut v: Vec<f64> = xs.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_a_known_distribution() {
        let mut l = Latencies::new();
        for us in 1..=1000 {
            l.record_us(us);
        }
        let s = l.summary();
        assert_eq!(s.count, 1000);
        // 3 significant digits: exact at these magnitudes
        assert_eq!(s.p50_us, 500);
        assert_eq!(s.p99_us, 990);
        assert_eq!(s.p999_us, 999);
        assert_eq!(s.max_us, 1000);
        assert!((s.mean_us - 500.5).abs() < 0.5);
        assert_eq!(Latencies::new().summary(), Percentiles::default());
    }

    #[test]
    fn tail_percentiles_see_rare_slow_values() {
        let mut l = Latencies::new();
        for _ in 0..9980 {
            l.record_us(100);
        }
        for _ in 0..20 {
            l.record_us(50_000);
        }
        let s = l.summary();
        assert_eq!(s.p99_us, 100);
        // the slowest 0.1% are at 50 ms (within 0.1%)
        assert!((49_950..=50_050).contains(&s.p999_us), "{}", s.p999_us);
        // zero and huge values are clamped, not lost
        l.record_us(0);
        l.record_us(u64::MAX);
        assert_eq!(l.summary().count, 10_002);
        let mut m = Latencies::new();
        m.record_us(7);
        m.merge(&l);
        assert_eq!(m.summary().count, 10_003);
    }

    #[test]
    fn rates_ratios_medians() {
        assert_eq!(rate(500, 2.0), 250.0);
        assert_eq!(rate(5, 0.0), 0.0);
        assert_eq!(ratio(3.0, 2.0), 1.5);
        assert_eq!(ratio(1.0, 0.0), 0.0);
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(median(&[]), 0.0);
        assert_eq!(median(&[f64::NAN, 1.0]), 1.0);
    }
}
