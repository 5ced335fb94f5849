//! Latency summaries: percentiles by the nearest-rank method over every recorded sample.

use std::time::Duration;

use serde::Serialize;

/// A summary of a set of latency samples, in milliseconds.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LatencySummary {
    pub count: usize,
    pub min_ms: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub mean_ms: f64,
}

/// Returns the `percentile` (0 to 100) of `sorted` by the nearest-rank method: the smallest
/// sample such that at least `percentile` percent of the samples are less than or equal to it.
///
/// Returns `None` for an empty slice. `sorted` must be in ascending order.
pub fn nearest_rank(sorted: &[Duration], percentile: f64) -> Option<Duration> {
    if sorted.is_empty() {
        return None;
    }
    let percentile = percentile.clamp(0.0, 100.0);
    // The rank is 1-based: ceil(p/100 * n), and at least 1 so that p = 0 gives the minimum.
    let rank = ((percentile / 100.0) * sorted.len() as f64).ceil() as usize;
    let index = rank.clamp(1, sorted.len()) - 1;
    Some(sorted[index])
}

/// Summarises `samples`, or returns `None` when there are none.
pub fn summarize(mut samples: Vec<Duration>) -> Option<LatencySummary> {
    if samples.is_empty() {
        return None;
    }
    samples.sort_unstable();
    let millis = |duration: Duration| duration.as_secs_f64() * 1000.0;
    let percentile = |p: f64| nearest_rank(&samples, p).map(millis).unwrap_or_default();
    let total: Duration = samples.iter().sum();
    Some(LatencySummary {
        count: samples.len(),
        min_ms: millis(samples[0]),
        p50_ms: percentile(50.0),
        p90_ms: percentile(90.0),
        p99_ms: percentile(99.0),
        max_ms: millis(samples[samples.len() - 1]),
        mean_ms: millis(total) / samples.len() as f64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(values: impl IntoIterator<Item = u64>) -> Vec<Duration> {
        values.into_iter().map(Duration::from_millis).collect()
    }

    #[test]
    fn nearest_rank_on_one_to_hundred() {
        let samples = ms(1..=100);
        assert_eq!(nearest_rank(&samples, 50.0), Some(Duration::from_millis(50)));
        assert_eq!(nearest_rank(&samples, 90.0), Some(Duration::from_millis(90)));
        assert_eq!(nearest_rank(&samples, 99.0), Some(Duration::from_millis(99)));
        assert_eq!(nearest_rank(&samples, 100.0), Some(Duration::from_millis(100)));
        assert_eq!(nearest_rank(&samples, 0.0), Some(Duration::from_millis(1)));
    }

    #[test]
    fn nearest_rank_rounds_rank_up() {
        // n = 10: p99 has rank ceil(9.9) = 10, p50 rank 5, p51 rank ceil(5.1) = 6.
        let samples = ms(1..=10);
        assert_eq!(nearest_rank(&samples, 99.0), Some(Duration::from_millis(10)));
        assert_eq!(nearest_rank(&samples, 50.0), Some(Duration::from_millis(5)));
        assert_eq!(nearest_rank(&samples, 51.0), Some(Duration::from_millis(6)));
    }

    #[test]
    fn nearest_rank_small_and_empty_sets() {
        assert_eq!(nearest_rank(&[], 50.0), None);
        let one = ms([7]);
        assert_eq!(nearest_rank(&one, 0.0), Some(Duration::from_millis(7)));
        assert_eq!(nearest_rank(&one, 50.0), Some(Duration::from_millis(7)));
        assert_eq!(nearest_rank(&one, 99.0), Some(Duration::from_millis(7)));
        let two = ms([3, 9]);
        assert_eq!(nearest_rank(&two, 50.0), Some(Duration::from_millis(3)));
        assert_eq!(nearest_rank(&two, 51.0), Some(Duration::from_millis(9)));
    }

    #[test]
    fn summarize_sorts_and_averages() {
        // Unsorted input with one outlier: p99 of 100 samples is the 99th, not the outlier.
        let mut samples = ms(1..=99);
        samples.push(Duration::from_secs(10));
        samples.reverse();
        let summary = summarize(samples).expect("samples are not empty");
        assert_eq!(summary.count, 100);
        assert_eq!(summary.min_ms, 1.0);
        assert_eq!(summary.p50_ms, 50.0);
        assert_eq!(summary.p90_ms, 90.0);
        assert_eq!(summary.p99_ms, 99.0);
        assert_eq!(summary.max_ms, 10_000.0);
        assert_eq!(summary.mean_ms, (4950.0 + 10_000.0) / 100.0);
    }

    #[test]
    fn summarize_empty_is_none() {
        assert_eq!(summarize(Vec::new()), None);
    }
}
