//! Latency recorder: a cheap cloneable handle over a histogram, for many tasks at once.
//!
//! [`LatencyRecorder::record`] is wait-free: two relaxed atomic adds and an atomic max on a
//! shared log-linear bucket array (128 linear sub-buckets per power of two of nanoseconds, so a
//! value is kept within 0.8 %; up to 2^43 ns ≈ 2.4 h, larger values land in the last bucket).
//! No lock, no allocation, no channel. Reading ([`LatencyRecorder::snapshot`]) copies the
//! buckets into an [`hdrhistogram::Histogram`] (3 significant digits), which computes the
//! percentiles and iterates the distribution.
//!
//! Why not `hdrhistogram::sync::SyncHistogram`: its `refresh` blocks the reader until every
//! `Recorder` has recorded again (or a timeout passes), so an idle task holds up a metrics
//! scrape, and on a current-thread runtime the reader can wait on a task that cannot run. Per-task
//! histograms merged on read would need a lock per histogram for the reader to see them. A
//! shared atomic array gives complete, non-blocking reads.
//!
//! A snapshot taken while others record is not atomic across buckets: a record in progress may
//! be counted in its bucket but not yet in the sum. Counts are taken from the buckets.

use std::fmt::{self, Write as _};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use hdrhistogram::Histogram;
use tokio::time::Instant;

const SUB_BITS: u32 = 7;
const SUB: usize = 1 << SUB_BITS;
/// Highest power of two with its own buckets (2^43 ns ≈ 2.4 h).
const MAX_EXP: u32 = 42;
const BUCKETS: usize = SUB + (MAX_EXP - SUB_BITS + 1) as usize * SUB;

fn bucket_of(ns: u64) -> usize {
    if ns < SUB as u64 {
        return ns as usize;
    }
    let exp = 63 - ns.leading_zeros();
    if exp > MAX_EXP {
        return BUCKETS - 1;
    }
    let shift = exp - SUB_BITS;
    let mantissa = (ns >> shift) as usize - SUB;
    SUB + shift as usize * SUB + mantissa
}

/// Lowest value of a bucket.
fn bucket_low(index: usize) -> u64 {
    if index < SUB {
        return index as u64;
    }
    let shift = (index - SUB) / SUB;
    let mantissa = (index - SUB) % SUB;
    ((SUB + mantissa) as u64) << shift
}

/// The value a bucket's samples are taken to have: its midpoint.
fn bucket_value(index: usize) -> u64 {
    let low = bucket_low(index);
    let width = if index < SUB {
        1
    } else {
        1u64 << ((index - SUB) / SUB)
    };
    low + (width - 1) / 2
}

struct Shared {
    buckets: Box<[AtomicU64]>,
    sum_ns: AtomicU64,
    max_ns: AtomicU64,
}

/// A cloneable, `Send + Sync` latency recorder; clones record into the same histogram.
///
/// ```
/// use kube_sentinel::telemetry::LatencyRecorder;
/// use std::time::Duration;
///
/// let latency = LatencyRecorder::new();
/// let worker = latency.clone();
/// for ms in 1..=100 {
///     worker.record(Duration::from_millis(ms));
/// }
/// let summary = latency.snapshot().summary();
/// assert_eq!(summary.count, 100);
/// assert!(summary.p50 >= Duration::from_millis(49) && summary.p50 <= Duration::from_millis(51));
/// assert_eq!(summary.max, Duration::from_millis(100));
/// ```
#[derive(Clone)]
pub struct LatencyRecorder {
    shared: Arc<Shared>,
}

impl fmt::Debug for LatencyRecorder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LatencyRecorder")
            .field("sum_ns", &self.shared.sum_ns.load(Ordering::Relaxed))
            .field("max_ns", &self.shared.max_ns.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl Default for LatencyRecorder {
    fn default() -> Self {
        Self::new()
    }
}

impl LatencyRecorder {
    /// An empty recorder (about 38 KiB of counters, shared by all clones).
    pub fn new() -> Self {
        LatencyRecorder {
            shared: Arc::new(Shared {
                buckets: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
                sum_ns: AtomicU64::new(0),
                max_ns: AtomicU64::new(0),
            }),
        }
    }

    /// Records one duration. Wait-free.
    pub fn record(&self, duration: Duration) {
        let ns = u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX);
        let shared = &*self.shared;
        shared.buckets[bucket_of(ns)].fetch_add(1, Ordering::Relaxed);
        shared.sum_ns.fetch_add(ns, Ordering::Relaxed);
        shared.max_ns.fetch_max(ns, Ordering::Relaxed);
    }

    /// Records the time elapsed since `start` (on tokio's clock, so paused-clock tests work).
    ///
    /// ```
    /// use kube_sentinel::telemetry::LatencyRecorder;
    /// use std::time::Duration;
    /// use tokio::time::Instant;
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// let latency = LatencyRecorder::new();
    /// let start = Instant::now();
    /// tokio::time::sleep(Duration::from_millis(250)).await;
    /// latency.record_since(start);
    /// assert_eq!(latency.snapshot().summary().max, Duration::from_millis(250));
    /// # }
    /// ```
    pub fn record_since(&self, start: Instant) {
        self.record(start.elapsed());
    }

    /// A copy of everything recorded so far, by every clone. Never blocks a recorder.
    pub fn snapshot(&self) -> LatencySnapshot {
        let counts: Vec<u64> = self
            .shared
            .buckets
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect();
        let mut histogram =
            Histogram::<u64>::new(3).expect("3 significant digits is a valid precision");
        for (index, &count) in counts.iter().enumerate() {
            if count > 0 {
                // `record_n` grows the histogram; it fails only if a size overflows usize.
                if histogram.record_n(bucket_value(index), count).is_err() {
                    histogram.saturating_record_n(bucket_value(index), count);
                }
            }
        }
        LatencySnapshot {
            histogram,
            counts,
            sum_ns: self.shared.sum_ns.load(Ordering::Relaxed),
            max_ns: self.shared.max_ns.load(Ordering::Relaxed),
        }
    }
}

/// Percentiles of a [`LatencySnapshot`]; `Display` prints them on one line.
///
/// ```
/// use kube_sentinel::telemetry::LatencyRecorder;
/// use std::time::Duration;
/// let latency = LatencyRecorder::new();
/// latency.record(Duration::from_millis(3));
/// let summary = latency.snapshot().summary();
/// assert_eq!((summary.count, summary.max), (1, Duration::from_millis(3)));
/// assert!(summary.to_string().starts_with("n=1 "));
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LatencySummary {
    /// Number of recorded durations.
    pub count: u64,
    /// Mean.
    pub mean: Duration,
    /// Median.
    pub p50: Duration,
    /// 90th percentile.
    pub p90: Duration,
    /// 99th percentile.
    pub p99: Duration,
    /// 99.9th percentile.
    pub p999: Duration,
    /// Largest recorded duration (exact).
    pub max: Duration,
}

impl fmt::Display for LatencySummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "n={} mean={:?} p50={:?} p90={:?} p99={:?} p99.9={:?} max={:?}",
            self.count, self.mean, self.p50, self.p90, self.p99, self.p999, self.max
        )
    }
}

/// What a [`LatencyRecorder`] held at one instant.
///
/// ```
/// use kube_sentinel::telemetry::LatencyRecorder;
/// use std::time::Duration;
/// let latency = LatencyRecorder::new();
/// latency.record(Duration::from_micros(1500));
/// let snapshot = latency.snapshot();
/// assert_eq!(snapshot.histogram().len(), 1); // nanoseconds, 3 significant digits
/// ```
#[derive(Clone, Debug)]
pub struct LatencySnapshot {
    /// In nanoseconds.
    histogram: Histogram<u64>,
    counts: Vec<u64>,
    sum_ns: u64,
    max_ns: u64,
}

impl LatencySnapshot {
    /// The recorded durations as an HdrHistogram of nanoseconds (3 significant digits).
    pub fn histogram(&self) -> &Histogram<u64> {
        &self.histogram
    }

    /// Count, mean, p50, p90, p99, p99.9 and max (percentiles within 1 %).
    ///
    /// ```
    /// use kube_sentinel::telemetry::LatencyRecorder;
    /// use std::time::Duration;
    /// let latency = LatencyRecorder::new();
    /// latency.record(Duration::from_micros(100));
    /// println!("{}", latency.snapshot().summary());
    /// ```
    pub fn summary(&self) -> LatencySummary {
        let h = &self.histogram;
        // A bucket's representative value can exceed the exact maximum: clamp to it.
        let at = |q: f64| {
            let ns = if h.is_empty() {
                0
            } else {
                h.value_at_quantile(q)
            };
            Duration::from_nanos(ns.min(self.max_ns))
        };
        let count = h.len();
        LatencySummary {
            count,
            mean: Duration::from_nanos(self.sum_ns.checked_div(count).unwrap_or(0)),
            p50: at(0.5),
            p90: at(0.9),
            p99: at(0.99),
            p999: at(0.999),
            max: Duration::from_nanos(self.max_ns),
        }
    }

    /// The percentile distribution in HdrHistogram's classic text format (the output of
    /// `outputPercentileDistribution` with 5 ticks per half distance), values in milliseconds:
    /// the table HdrHistogram's plotter reads.
    ///
    /// ```
    /// use kube_sentinel::telemetry::LatencyRecorder;
    /// use std::time::Duration;
    /// let latency = LatencyRecorder::new();
    /// for ms in [1, 2, 3] {
    ///     latency.record(Duration::from_millis(ms));
    /// }
    /// let text = latency.snapshot().percentile_distribution();
    /// assert!(text.starts_with("       Value     Percentile TotalCount 1/(1-Percentile)\n\n"));
    /// assert!(text.contains("#[Max     =        3.000, Total count    =            3]"));
    /// ```
    pub fn percentile_distribution(&self) -> String {
        const NS_PER_MS: f64 = 1e6;
        let h = &self.histogram;
        let mut out = String::new();
        let _ = write!(
            out,
            "{:>12} {:>14} {:>10} {:>14}\n\n",
            "Value", "Percentile", "TotalCount", "1/(1-Percentile)"
        );
        let mut total = 0u64;
        if !h.is_empty() {
            for v in h.iter_quantiles(5) {
                total += v.count_since_last_iteration();
                let value = v.value_iterated_to() as f64 / NS_PER_MS;
                let q = v.quantile_iterated_to();
                if q < 1.0 {
                    let _ = writeln!(
                        out,
                        "{value:12.3} {q:2.12} {total:10} {:14.2}",
                        1.0 / (1.0 - q)
                    );
                } else {
                    let _ = writeln!(out, "{value:12.3} {q:2.12} {total:10}");
                }
            }
        }
        // The exact mean (from the sum), where HdrHistogram's would be bucket-quantized.
        let mean = self.summary().mean.as_nanos() as f64 / NS_PER_MS;
        let stdev = if h.is_empty() {
            0.0
        } else {
            h.stdev() / NS_PER_MS
        };
        let max = self.max_ns as f64 / NS_PER_MS;
        let sub_buckets = (2.0 * 10f64.powi(i32::from(h.sigfig())))
            .log2()
            .ceil()
            .exp2();
        let _ = writeln!(
            out,
            "#[Mean    = {mean:12.3}, StdDeviation   = {stdev:12.3}]"
        );
        let _ = writeln!(
            out,
            "#[Max     = {max:12.3}, Total count    = {:12}]",
            h.len()
        );
        let _ = writeln!(
            out,
            "#[Buckets = {:12}, SubBuckets     = {:12}]",
            h.buckets(),
            sub_buckets as u64
        );
        out
    }

    /// Cumulative counts for a Prometheus histogram with these upper bounds (seconds,
    /// ascending), plus the total count (the `+Inf` bucket) and the sum in seconds.
    ///
    /// A recorder bucket counts under a bound when its lowest value is at or below it, so a value
    /// exactly on a bound is always counted, and one up to 0.8 % above it may be.
    ///
    /// ```
    /// use kube_sentinel::telemetry::LatencyRecorder;
    /// use std::time::Duration;
    /// let latency = LatencyRecorder::new();
    /// for ms in [5, 50, 500] {
    ///     latency.record(Duration::from_millis(ms));
    /// }
    /// let (buckets, count, sum) = latency.snapshot().prometheus_buckets(&[0.01, 0.1, 1.0]);
    /// assert_eq!(buckets, vec![(0.01, 1), (0.1, 2), (1.0, 3)]);
    /// assert_eq!(count, 3);
    /// assert!((sum - 0.555).abs() < 1e-9);
    /// ```
    pub fn prometheus_buckets(&self, upper_bounds_secs: &[f64]) -> (Vec<(f64, u64)>, u64, f64) {
        let mut out = Vec::with_capacity(upper_bounds_secs.len());
        let mut cumulative = 0u64;
        let mut index = 0usize;
        for &bound in upper_bounds_secs {
            // `as` saturates: negative bounds count nothing, huge ones everything.
            let bound_ns = (bound * 1e9) as u64;
            while index < self.counts.len() && bucket_low(index) <= bound_ns {
                cumulative += self.counts[index];
                index += 1;
            }
            out.push((bound, cumulative));
        }
        let count = self.counts.iter().sum();
        (out, count, self.sum_ns as f64 / 1e9)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn buckets_cover_values_in_order_within_resolution() {
        let mut previous = 0;
        for index in 1..BUCKETS {
            let low = bucket_low(index);
            assert!(low > previous, "bucket {index} not above {previous}");
            assert_eq!(bucket_of(low), index);
            assert_eq!(bucket_of(low - 1), index - 1);
            previous = low;
        }
        assert_eq!(bucket_of(u64::MAX), BUCKETS - 1);
    }

    proptest! {
        #[test]
        fn value_lands_in_its_bucket_within_resolution(ns in 0u64..(1u64 << 43)) {
            let index = bucket_of(ns);
            prop_assert!(bucket_low(index) <= ns);
            if index + 1 < BUCKETS {
                prop_assert!(ns < bucket_low(index + 1));
            }
            let represented = bucket_value(index) as f64;
            prop_assert!((represented - ns as f64).abs() <= ns as f64 / 128.0);
        }
    }

    #[test]
    fn summary_of_a_uniform_range() {
        let latency = LatencyRecorder::new();
        for ms in 1..=1000u64 {
            latency.record(Duration::from_millis(ms));
        }
        let s = latency.snapshot().summary();
        let close = |d: Duration, ms: f64| (d.as_secs_f64() * 1e3 - ms).abs() <= ms * 0.01;
        assert_eq!(s.count, 1000);
        assert!(close(s.mean, 500.5), "{s}");
        assert!(close(s.p50, 500.0), "{s}");
        assert!(close(s.p90, 900.0), "{s}");
        assert!(close(s.p99, 990.0), "{s}");
        assert!(close(s.p999, 999.0), "{s}");
        assert_eq!(s.max, Duration::from_secs(1));
    }

    #[test]
    fn clones_on_many_threads_record_into_one_histogram() {
        let latency = LatencyRecorder::new();
        std::thread::scope(|scope| {
            for t in 0..4u64 {
                let recorder = latency.clone();
                scope.spawn(move || {
                    for i in 0..10_000u64 {
                        recorder.record(Duration::from_micros(t * 10_000 + i));
                    }
                });
            }
        });
        let snapshot = latency.snapshot();
        assert_eq!(snapshot.summary().count, 40_000);
        assert_eq!(snapshot.summary().max, Duration::from_micros(39_999));
        let (_, count, sum) = snapshot.prometheus_buckets(&[]);
        assert_eq!(count, 40_000);
        let expected: u64 = (0..40_000u64).sum::<u64>() * 1000;
        assert!((sum - expected as f64 / 1e9).abs() < 1e-6);
    }

    #[test]
    fn empty_recorder_reports_zeros() {
        let snapshot = LatencyRecorder::new().snapshot();
        assert_eq!(snapshot.summary(), LatencySummary::default());
        assert_eq!(
            snapshot.prometheus_buckets(&[1.0]),
            (vec![(1.0, 0)], 0, 0.0)
        );
        assert!(
            snapshot
                .percentile_distribution()
                .contains("Total count    =            0]")
        );
    }

    #[test]
    fn percentile_distribution_has_the_classic_layout() {
        let latency = LatencyRecorder::new();
        for ms in 1..=100u64 {
            latency.record(Duration::from_millis(ms));
        }
        let text = latency.snapshot().percentile_distribution();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "       Value     Percentile TotalCount 1/(1-Percentile)"
        );
        assert_eq!(lines[1], "");
        let first: Vec<&str> = lines[2].split_whitespace().collect();
        assert_eq!(first.len(), 4);
        assert_eq!(first[2], "1");
        let last_row = lines[lines.len() - 4];
        let last: Vec<&str> = last_row.split_whitespace().collect();
        assert_eq!(last.len(), 3, "the 100 % row has no 1/(1-p): {last_row}");
        assert_eq!(last[1], "1.000000000000");
        assert_eq!(last[2], "100");
        assert!(
            lines[lines.len() - 3]
                .starts_with("#[Mean    =       50.500, StdDeviation   =       28.8")
        );
        assert_eq!(
            lines[lines.len() - 2],
            "#[Max     =      100.000, Total count    =          100]"
        );
        assert!(lines[lines.len() - 1].ends_with("SubBuckets     =         2048]"));
    }

    #[test]
    fn prometheus_buckets_are_cumulative() {
        let latency = LatencyRecorder::new();
        for ms in [1u64, 2, 2, 40, 300, 7000] {
            latency.record(Duration::from_millis(ms));
        }
        let (buckets, count, sum) = latency
            .snapshot()
            .prometheus_buckets(&[0.001, 0.005, 0.05, 1.0, 5.0]);
        assert_eq!(
            buckets,
            vec![(0.001, 1), (0.005, 3), (0.05, 4), (1.0, 5), (5.0, 5)]
        );
        assert_eq!(count, 6);
        assert!((sum - 7.345).abs() < 1e-9);
    }

    #[test]
    fn recorder_is_send_and_sync() {
        fn assert_send_sync<T: Send + Sync + Clone>(_: &T) {}
        assert_send_sync(&LatencyRecorder::new());
    }
}
