//! Summaries of timed samples, in milliseconds, as the report prints and serialises them.

use serde::Serialize;
use std::time::Duration;

/// Percentiles of one sample of durations (nearest rank), in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Stats {
    /// Samples.
    pub n: usize,
    /// Median.
    pub p50_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Mean.
    pub mean_ms: f64,
    /// Fastest.
    pub min_ms: f64,
    /// Slowest.
    pub max_ms: f64,
}

impl Stats {
    /// Summarises `samples`; `None` when there are none.
    pub fn of(samples: &[Duration]) -> Option<Stats> {
        if samples.is_empty() {
            return None;
        }
        let mut s = samples.to_vec();
        s.sort();
        let pct = |p: f64| s[((p / 100.0 * s.len() as f64).ceil() as usize).clamp(1, s.len()) - 1];
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        Some(Stats {
            n: s.len(),
            p50_ms: ms(pct(50.0)),
            p99_ms: ms(pct(99.0)),
            mean_ms: ms(s.iter().sum::<Duration>() / s.len() as u32),
            min_ms: ms(s[0]),
            max_ms: ms(s[s.len() - 1]),
        })
    }
}

/// `a ÷ b` of the same percentile of two samples, the figure the bench exists to give.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Ratio {
    /// Medians.
    pub p50: f64,
    /// 99th percentiles.
    pub p99: f64,
    /// Means.
    pub mean: f64,
}

impl Ratio {
    /// `a ÷ b`, percentile by percentile.
    pub fn of(a: &Stats, b: &Stats) -> Ratio {
        Ratio {
            p50: a.p50_ms / b.p50_ms,
            p99: a.p99_ms / b.p99_ms,
            mean: a.mean_ms / b.mean_ms,
        }
    }
}

/// The median of `values` (the upper one of an even count); `NaN` when empty.
pub fn median(values: impl IntoIterator<Item = f64>) -> f64 {
    let mut v: Vec<f64> = values.into_iter().collect();
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let samples: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        let s = Stats::of(&samples).unwrap();
        assert_eq!((s.n, s.p50_ms, s.p99_ms), (100, 50.0, 99.0));
        assert_eq!((s.min_ms, s.max_ms, s.mean_ms), (1.0, 100.0, 50.5));
        assert!(Stats::of(&[]).is_none());
        assert_eq!(median([3.0, 1.0, 2.0]), 2.0);
        let r = Ratio::of(&s, &s);
        assert_eq!((r.p50, r.p99, r.mean), (1.0, 1.0, 1.0));
    }
}
