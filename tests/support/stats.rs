//! Statistics for the tests that compare traffic: the two-sample Kolmogorov-Smirnov test.

/// The two-sample Kolmogorov-Smirnov statistic: the largest distance between the two
/// empirical distribution functions.
pub fn ks_statistic(a: &[f64], b: &[f64]) -> f64 {
    let mut a = a.to_vec();
    let mut b = b.to_vec();
    a.sort_by(f64::total_cmp);
    b.sort_by(f64::total_cmp);
    let (n, m) = (a.len() as f64, b.len() as f64);
    let (mut i, mut j, mut d) = (0usize, 0usize, 0f64);
    while i < a.len() && j < b.len() {
        let x = a[i].min(b[j]);
        while i < a.len() && a[i] <= x {
            i += 1;
        }
        while j < b.len() && b[j] <= x {
            j += 1;
        }
        d = d.max((i as f64 / n - j as f64 / m).abs());
    }
    d
}

/// The KS critical value at level `alpha` for samples of sizes n and m (large-sample form).
pub fn ks_critical(alpha: f64, n: usize, m: usize) -> f64 {
    let c = (-(alpha / 2.0).ln() / 2.0).sqrt();
    let (n, m) = (n as f64, m as f64);
    c * ((n + m) / (n * m)).sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ks_statistic_has_known_values() {
        assert_eq!(ks_statistic(&[1.0, 2.0, 3.0], &[1.0, 2.0, 3.0]), 0.0);
        assert_eq!(ks_statistic(&[1.0, 2.0], &[3.0, 4.0]), 1.0);
        assert!((ks_statistic(&[1.0, 2.0, 3.0, 4.0], &[2.5, 3.5, 4.5, 5.5]) - 0.5).abs() < 1e-12);
        // c(0.05) = 1.358 (the textbook value).
        assert!((ks_critical(0.05, 100, 100) - 1.358 * (0.02f64).sqrt()).abs() < 1e-3);
    }
}
