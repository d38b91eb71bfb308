//! Summaries of measured durations, for the benchmarks that drive a lab.

/// Nearest-rank percentiles and mean of a series of durations, in milliseconds.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Stats {
    pub p50: f64,
    pub p95: f64,
    pub max: f64,
    pub mean: f64,
}

/// The [`Stats`] of durations given in seconds. Panics on an empty series.
pub fn stats(v: impl Iterator<Item = f64>) -> Stats {
    let mut v: Vec<f64> = v.map(|x| x * 1000.0).collect();
    assert!(!v.is_empty(), "no measurements");
    v.sort_by(f64::total_cmp);
    let n = v.len();
    let rank = |q: f64| v[((q * n as f64).ceil() as usize).clamp(1, n) - 1];
    Stats { p50: rank(0.50), p95: rank(0.95), max: v[n - 1], mean: v.iter().sum::<f64>() / n as f64 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_in_milliseconds() {
        let s = stats((1..=20).map(|i| f64::from(i) / 1000.0));
        assert_eq!(s, Stats { p50: 10.0, p95: 19.0, max: 20.0, mean: 10.5 });
        assert_eq!(stats([0.004].into_iter()).p95, 4.0);
    }
}
