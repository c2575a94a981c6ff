//! Tests of the retry sink: backoff, latest-wins, merging, concurrency, flush and close.

use super::*;
use futures::{SinkExt, poll};
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

type Calls = Arc<Mutex<Vec<(Duration, &'static str, u32)>>>;

type BoxedOp = Pin<Box<dyn Future<Output = Result<u32, &'static str>> + Send>>;

/// An op that logs each call's instant, takes `op_time`, then returns
/// `behaviour(key, value, how many calls the key has had, this one included)`.
fn recorder(
    calls: Calls,
    op_time: Duration,
    behaviour: fn(&'static str, u32, usize) -> Result<u32, &'static str>,
) -> impl FnMut(&'static str, u32) -> BoxedOp {
    let t0 = Instant::now();
    move |key, value| {
        let n = {
            let mut calls = calls.lock().expect("lock");
            calls.push((Instant::now() - t0, key, value));
            calls.iter().filter(|c| c.1 == key).count()
        };
        Box::pin(async move {
            tokio::time::sleep(op_time).await;
            behaviour(key, value, n)
        })
    }
}

fn classify(e: &&'static str) -> Retry {
    if *e == "permanent" {
        Retry::Permanent
    } else {
        Retry::Transient
    }
}

fn config(max_concurrent: usize, max_attempts: Option<u32>) -> RetryConfig {
    RetryConfig {
        max_concurrent,
        backoff_base: Duration::from_secs(1),
        backoff_max: Duration::from_secs(5),
        max_attempts,
    }
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

#[tokio::test(start_paused = true)]
async fn transient_errors_back_off_exponentially_to_the_cap() {
    let calls = Calls::default();
    let mut sink = RetrySink::new(
        config(4, None),
        recorder(calls.clone(), Duration::ZERO, |_, _, n| {
            if n < 6 { Err("busy") } else { Ok(0) }
        }),
        classify,
    )
    .without_jitter();
    let stats = sink.stats_handle();
    sink.send(("a", 1)).await.expect("infallible");
    let instants: Vec<_> = calls.lock().expect("lock").iter().map(|c| c.0).collect();
    assert_eq!(
        instants,
        vec![secs(0), secs(1), secs(3), secs(7), secs(12), secs(17)]
    );
    let counts = stats.snapshot();
    assert_eq!((counts.sent, counts.retried, counts.pending), (1, 5, 0));
}

#[tokio::test(start_paused = true)]
async fn merge_keeps_what_superseded_items_carried() {
    let calls = Calls::default();
    // The first try of each key fails; values are bit sets, merged by union.
    let mut sink = RetrySink::new(
        config(1, None),
        recorder(calls.clone(), secs(1), |_, _, n| {
            if n < 2 { Err("busy") } else { Ok(0) }
        }),
        classify,
    )
    .without_jitter()
    .merge_superseded(|newer: &mut u32, older| *newer |= older);
    let stats = sink.stats_handle();
    // 0b001 runs and fails while 0b010 waits; 0b100 then replaces the waiting one.
    sink.feed(("a", 0b001)).await.expect("infallible");
    sink.feed(("a", 0b010)).await.expect("infallible");
    sink.feed(("a", 0b100)).await.expect("infallible");
    sink.flush().await.expect("infallible");
    let values: Vec<u32> = calls.lock().expect("lock").iter().map(|c| c.2).collect();
    assert_eq!(values, vec![0b001, 0b111]);
    let counts = stats.snapshot();
    assert_eq!((counts.sent, counts.superseded, counts.pending), (1, 2, 0));
}

#[tokio::test(start_paused = true)]
async fn jitter_stays_in_the_upper_half_of_the_backoff() {
    for _ in 0..20 {
        let calls = Calls::default();
        let mut sink = RetrySink::new(
            config(1, None),
            recorder(calls.clone(), Duration::ZERO, |_, _, n| {
                if n < 3 { Err("busy") } else { Ok(0) }
            }),
            classify,
        );
        sink.send(("a", 1)).await.expect("infallible");
        let calls = calls.lock().expect("lock");
        let first = calls[1].0 - calls[0].0;
        let second = calls[2].0 - calls[1].0;
        assert!(
            first >= Duration::from_millis(500) && first <= secs(1),
            "{first:?}"
        );
        assert!(second >= secs(1) && second <= secs(2), "{second:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn permanent_errors_and_max_attempts_fail() {
    let outcomes = Arc::new(Mutex::new(Vec::new()));
    let log = outcomes.clone();
    let calls = Calls::default();
    let mut sink = RetrySink::new(
        config(4, Some(3)),
        recorder(calls.clone(), Duration::ZERO, |key, _, _| {
            if key == "p" {
                Err("permanent")
            } else {
                Err("busy")
            }
        }),
        classify,
    )
    .without_jitter()
    .on_outcome(move |o| {
        log.lock()
            .expect("lock")
            .push((o.key, o.attempts, o.delivery))
    });
    let stats = sink.stats_handle();
    sink.feed(("p", 1)).await.expect("infallible");
    sink.feed(("t", 1)).await.expect("infallible");
    sink.close().await.expect("infallible");
    assert_eq!(
        *outcomes.lock().expect("lock"),
        vec![
            ("p", 1, Delivery::Failed("permanent")),
            ("t", 3, Delivery::Failed("busy")),
        ]
    );
    let t_calls: Vec<_> = calls
        .lock()
        .expect("lock")
        .iter()
        .filter(|c| c.1 == "t")
        .map(|c| c.0)
        .collect();
    assert_eq!(t_calls, vec![secs(0), secs(1), secs(3)]);
    let counts = stats.snapshot();
    assert_eq!((counts.failed, counts.retried, counts.pending), (2, 2, 0));
}

#[tokio::test(start_paused = true)]
async fn newer_item_replaces_one_waiting_for_a_slot() {
    let calls = Calls::default();
    let mut sink = RetrySink::new(
        config(1, None),
        recorder(calls.clone(), secs(1), |_, v, _| Ok(v)),
        classify,
    );
    let stats = sink.stats_handle();
    for item in [("a", 1), ("b", 1), ("b", 2), ("b", 3)] {
        sink.feed(item).await.expect("infallible");
    }
    sink.flush().await.expect("infallible");
    assert_eq!(
        *calls.lock().expect("lock"),
        vec![(secs(0), "a", 1), (secs(1), "b", 3)]
    );
    let counts = stats.snapshot();
    assert_eq!((counts.accepted, counts.sent, counts.superseded), (4, 2, 2));
}

#[tokio::test(start_paused = true)]
async fn newer_item_replaces_one_waiting_to_retry_and_keeps_its_instant() {
    let calls = Calls::default();
    let mut sink = RetrySink::new(
        config(4, None),
        recorder(calls.clone(), Duration::ZERO, |_, v, _| {
            if v == 1 { Err("busy") } else { Ok(v) }
        }),
        classify,
    )
    .without_jitter();
    let stats = sink.stats_handle();
    sink.feed(("a", 1)).await.expect("infallible");
    assert!(poll!(sink.flush()).is_pending()); // tried at 0, backing off until 1 s
    tokio::time::advance(Duration::from_millis(300)).await;
    sink.feed(("a", 2)).await.expect("infallible");
    sink.flush().await.expect("infallible");
    assert_eq!(
        *calls.lock().expect("lock"),
        vec![(secs(0), "a", 1), (secs(1), "a", 2)]
    );
    let counts = stats.snapshot();
    assert_eq!((counts.sent, counts.retried, counts.superseded), (1, 1, 1));
}

#[tokio::test(start_paused = true)]
async fn item_for_a_key_in_flight_waits_then_runs_with_the_latest() {
    let calls = Calls::default();
    let mut sink = RetrySink::new(
        config(4, None),
        recorder(calls.clone(), secs(5), |_, v, _| Ok(v)),
        classify,
    );
    let stats = sink.stats_handle();
    sink.feed(("a", 1)).await.expect("infallible");
    assert!(poll!(sink.flush()).is_pending()); // a=1 in flight until 5 s
    tokio::time::advance(secs(1)).await;
    sink.feed(("a", 2)).await.expect("infallible");
    sink.feed(("a", 3)).await.expect("infallible");
    sink.feed(("b", 1)).await.expect("infallible");
    sink.flush().await.expect("infallible");
    assert_eq!(
        *calls.lock().expect("lock"),
        vec![(secs(0), "a", 1), (secs(1), "b", 1), (secs(5), "a", 3)],
        "one op per key at a time; the latest value runs next"
    );
    let counts = stats.snapshot();
    assert_eq!((counts.sent, counts.superseded), (3, 1));
}

#[tokio::test(start_paused = true)]
async fn failure_in_flight_with_a_newer_item_is_superseded_not_retried() {
    let outcomes = Arc::new(Mutex::new(Vec::new()));
    let log = outcomes.clone();
    let calls = Calls::default();
    let mut sink = RetrySink::new(
        config(4, None),
        recorder(calls.clone(), secs(1), |_, v, _| {
            if v == 1 { Err("busy") } else { Ok(v) }
        }),
        classify,
    )
    .on_outcome(move |o| log.lock().expect("lock").push((o.attempts, o.delivery)));
    sink.feed(("a", 1)).await.expect("infallible");
    assert!(poll!(sink.flush()).is_pending());
    sink.feed(("a", 2)).await.expect("infallible");
    sink.close().await.expect("infallible");
    assert_eq!(
        *calls.lock().expect("lock"),
        vec![(secs(0), "a", 1), (secs(1), "a", 2)]
    );
    assert_eq!(
        *outcomes.lock().expect("lock"),
        vec![(1, Delivery::Superseded), (1, Delivery::Sent(2))]
    );
}

#[tokio::test(start_paused = true)]
async fn concurrency_is_bounded() {
    let calls = Calls::default();
    let mut sink = RetrySink::new(
        config(2, None),
        recorder(calls.clone(), secs(1), |_, v, _| Ok(v)),
        classify,
    );
    for key in ["a", "b", "c", "d", "e"] {
        sink.feed((key, 0)).await.expect("infallible");
    }
    sink.close().await.expect("infallible");
    let starts: Vec<_> = calls
        .lock()
        .expect("lock")
        .iter()
        .map(|c| c.0.as_secs())
        .collect();
    assert_eq!(starts, vec![0, 0, 1, 1, 2]);
}

proptest::proptest! {
    /// Over random feeding schedules, op durations and transient failures: at most one op
    /// per key and `max_concurrent` ops at once; per key, sent values only increase and the
    /// last value fed is sent; every item ends (sent, superseded or failed).
    #[test]
    fn latest_wins_and_nothing_is_lost(
        max_concurrent in 1usize..4,
        items in proptest::collection::vec((0u32..4, 0u64..40), 1..40),
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .expect("runtime");
        #[derive(Default)]
        struct Trace {
            running: Vec<u32>,
            max_running: usize,
            twice: bool,
            sent: Vec<(u32, u32)>,
        }
        let trace = Arc::new(Mutex::new(Trace::default()));
        let op_trace = trace.clone();
        let calls = Arc::new(Mutex::new(HashMap::<(u32, u32), u32>::new()));
        let mut sink = RetrySink::new(
            RetryConfig { max_concurrent, backoff_base: Duration::from_millis(10), backoff_max: Duration::from_millis(80), max_attempts: None },
            move |key: u32, value: u32| {
                let trace = op_trace.clone();
                let call = {
                    let mut calls = calls.lock().expect("lock");
                    let n = calls.entry((key, value)).or_default();
                    *n += 1;
                    *n
                };
                async move {
                    {
                        let mut t = trace.lock().expect("lock");
                        t.twice |= t.running.contains(&key);
                        t.running.push(key);
                        t.max_running = t.max_running.max(t.running.len());
                    }
                    tokio::time::sleep(Duration::from_millis(u64::from(value % 4) * 7)).await;
                    let mut t = trace.lock().expect("lock");
                    let at = t.running.iter().position(|k| *k == key).expect("running");
                    t.running.remove(at);
                    if (value + call).is_multiple_of(3) {
                        Err("busy")
                    } else {
                        t.sent.push((key, value));
                        Ok(())
                    }
                }
            },
            |_: &&str| Retry::Transient,
        );
        let stats = sink.stats_handle();
        let mut last = HashMap::new();
        runtime.block_on(async {
            for (value, (key, gap)) in items.iter().enumerate() {
                let _ = tokio::time::timeout(Duration::from_millis(*gap), sink.flush()).await;
                sink.feed((*key, value as u32)).await.expect("infallible");
                last.insert(*key, value as u32);
            }
            sink.close().await.expect("infallible");
        });
        let t = trace.lock().expect("lock");
        proptest::prop_assert!(!t.twice, "two ops on one key at once");
        proptest::prop_assert!(t.max_running <= max_concurrent);
        for (key, value) in &last {
            proptest::prop_assert!(t.sent.contains(&(*key, *value)), "last value of {} not sent", key);
            let per_key: Vec<u32> = t.sent.iter().filter(|s| s.0 == *key).map(|s| s.1).collect();
            proptest::prop_assert!(per_key.windows(2).all(|w| w[0] < w[1]), "older value sent after newer: {:?}", per_key);
        }
        let counts = stats.snapshot();
        proptest::prop_assert_eq!(counts.accepted, items.len() as u64);
        proptest::prop_assert_eq!(counts.pending, 0);
        proptest::prop_assert_eq!(counts.sent + counts.superseded + counts.failed, counts.accepted);
        proptest::prop_assert_eq!(counts.sent, t.sent.len() as u64);
    }
}

#[test]
fn sink_is_send_when_its_parts_are() {
    fn assert_send<T: Send>(_: &T) {}
    let sink = RetrySink::new(
        RetryConfig::default(),
        |_k: String, _v: u32| async { Ok::<_, std::io::Error>(()) },
        |_e: &std::io::Error| Retry::Transient,
    )
    .on_outcome(|_| {});
    assert_send(&sink);
}
