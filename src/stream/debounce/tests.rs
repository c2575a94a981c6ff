//! Tests of the keyed debounce: paused-clock scenarios, wake-up counts, and a model proptest.

use super::store::{COMPACT_MIN_CAPACITY, jitter_of};
use super::stream::DRAIN_BUDGET;
use super::*;
use crate::stream::ControllerStreamExt;
use futures::{
    Stream, StreamExt,
    channel::mpsc,
    poll,
    stream::{self, BoxStream},
    task::{ArcWake, waker},
};
use proptest::prelude::*;
use std::{
    collections::{HashMap, HashSet},
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};
use tokio::time::{Instant, advance, sleep_until};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Whole milliseconds since `start`.
fn ms_since(start: Instant, at: Instant) -> u64 {
    u64::try_from((at - start).as_millis()).expect("test durations fit")
}

/// `(at_ms, key, value)` events, each yielded at `start + at_ms`.
fn scheduled<K: Send + 'static, V: Send + 'static>(
    start: Instant,
    events: Vec<(u64, K, V)>,
) -> BoxStream<'static, (K, V)> {
    stream::iter(events)
        .then(move |(at, key, value)| async move {
            sleep_until(start + ms(at)).await;
            (key, value)
        })
        .boxed()
}

/// What a test sees of one emission, instants in ms since the start.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Seen<K, A> {
    key: K,
    value: A,
    absorbed: u64,
    first_ms: u64,
    at_ms: u64,
    leading: bool,
}

async fn record<K, A>(
    start: Instant,
    debounced: impl Stream<Item = Debounced<K, A>>,
) -> Vec<Seen<K, A>> {
    debounced
        .map(|d| Seen {
            at_ms: ms_since(start, Instant::now()),
            first_ms: ms_since(start, d.first_seen),
            key: d.key,
            value: d.value,
            absorbed: d.absorbed,
            leading: d.leading,
        })
        .collect()
        .await
}

fn seen<K, A>(
    key: K,
    value: A,
    absorbed: u64,
    first_ms: u64,
    at_ms: u64,
    leading: bool,
) -> Seen<K, A> {
    Seen {
        key,
        value,
        absorbed,
        first_ms,
        at_ms,
        leading,
    }
}

fn keep_latest<K, V>(_: Option<V>, (_, value): (K, V)) -> V {
    value
}

#[tokio::test(start_paused = true)]
async fn trailing_emits_after_a_quiet_window_with_the_latest_value() {
    let start = Instant::now();
    let events = vec![(0, "a", 1), (300, "a", 2), (500, "b", 10), (900, "a", 3)];
    let out = record(
        start,
        scheduled(start, events).debounce_keyed(
            DebounceConfig::trailing(ms(1000)),
            |(key, _)| *key,
            keep_latest,
        ),
    )
    .await;
    assert_eq!(
        out,
        [
            seen("b", 10, 1, 500, 1500, false),
            seen("a", 3, 3, 0, 1900, false),
        ]
    );
    // The stream ended when the last burst was emitted, not later.
    assert_eq!(ms_since(start, Instant::now()), 1900);
}

#[tokio::test(start_paused = true)]
async fn max_wait_caps_a_continuous_burst() {
    let start = Instant::now();
    // An event every 200 ms from 0 to 3000 ms: never quiet for the 500 ms window.
    let events = (0..=15).map(|i| (i * 200, "a", i)).collect();
    let config = DebounceConfig::trailing(ms(500)).max_wait(ms(1000));
    let out = record(
        start,
        scheduled(start, events).debounce_keyed(config, |(key, _)| *key, keep_latest),
    )
    .await;
    assert_eq!(
        out,
        [
            // The event that arrives exactly at the deadline (1000 ms) is still absorbed.
            seen("a", 5, 6, 0, 1000, false),
            seen("a", 11, 6, 1200, 2200, false),
            // Last event at 3000 ms: quiet deadline 3500 ms, but the cap is 2400 + 1000.
            seen("a", 15, 4, 2400, 3400, false),
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn leading_trailing_emits_at_once_then_once_more_if_items_followed() {
    let start = Instant::now();
    let events = vec![
        (0, "a", 1),
        (300, "a", 2),
        (600, "a", 3),
        // Quiet since 600 + 1000: a new burst, with nothing after its leading item.
        (2000, "a", 4),
        (3500, "b", 5),
    ];
    let out = record(
        start,
        scheduled(start, events).debounce_keyed(
            DebounceConfig::leading_trailing(ms(1000)),
            |(key, _)| *key,
            |acc: Option<Vec<i32>>, (_, value)| {
                let mut acc = acc.unwrap_or_default();
                acc.push(value);
                acc
            },
        ),
    )
    .await;
    assert_eq!(
        out,
        [
            seen("a", vec![1], 1, 0, 0, true),
            // The trailing emission carries only what came after the leading one.
            seen("a", vec![2, 3], 2, 0, 1600, false),
            seen("a", vec![4], 1, 2000, 2000, true),
            seen("b", vec![5], 1, 3500, 3500, true),
        ]
    );
    // b's window (closing silently at 4500 ms) was still waited for.
    assert_eq!(ms_since(start, Instant::now()), 4500);
}

#[tokio::test(start_paused = true)]
async fn a_settled_leading_burst_lets_the_next_item_through_at_once() {
    let start = Instant::now();
    let events = vec![
        (0, "a", 1),
        // "a" is settled at 100 ms (nothing joined since its leading item): 2 leads at once.
        (400, "a", 2),
        (0, "b", 10),
        // "b" is settled at 100 ms too, but 11 joined first: its trailing edge stays.
        (50, "b", 11),
        (400, "b", 12),
    ];
    let mut events = events;
    events.sort_by_key(|e| e.0);
    let settled = scheduled(start, vec![(100, (), "a"), (100, (), "b"), (150, (), "zz")])
        .map(|((), key)| key);
    let out = record(
        start,
        scheduled(start, events)
            .debounce_keyed(
                DebounceConfig::leading_trailing(ms(1000)),
                |(key, _)| *key,
                keep_latest,
            )
            .settle_on(settled),
    )
    .await;
    assert_eq!(
        out,
        [
            seen("a", 1, 1, 0, 0, true),
            seen("b", 10, 1, 0, 0, true),
            seen("a", 2, 1, 400, 400, true),
            seen("b", 12, 2, 0, 1400, false),
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn settling_a_trailing_burst_changes_nothing() {
    let start = Instant::now();
    let settled = scheduled(start, vec![(100, (), "a")]).map(|((), key)| key);
    let out = record(
        start,
        scheduled(start, vec![(0, "a", 1), (400, "a", 2)])
            .debounce_keyed(
                DebounceConfig::trailing(ms(1000)),
                |(key, _)| *key,
                keep_latest,
            )
            .settle_on(settled),
    )
    .await;
    assert_eq!(out, [seen("a", 2, 2, 0, 1400, false)]);
}

#[tokio::test(start_paused = true)]
async fn leading_trailing_respects_max_wait() {
    let start = Instant::now();
    let events = (0..=10).map(|i| (i * 100, "a", i)).collect();
    let config = DebounceConfig::leading_trailing(ms(300)).max_wait(ms(450));
    let out = record(
        start,
        scheduled(start, events).debounce_keyed(config, |(key, _)| *key, keep_latest),
    )
    .await;
    assert_eq!(
        out,
        [
            seen("a", 0, 1, 0, 0, true),
            seen("a", 4, 4, 0, 450, false),
            seen("a", 5, 1, 500, 500, true),
            seen("a", 9, 4, 500, 950, false),
            seen("a", 10, 1, 1000, 1000, true),
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn jitter_is_deterministic_per_key_and_below_the_max() {
    async fn run(max_jitter: Duration, max_wait: Option<Duration>) -> HashMap<u32, u64> {
        let start = Instant::now();
        let mut config = DebounceConfig::trailing(ms(1000)).jitter(max_jitter);
        config.timing.max_wait = max_wait;
        record(
            start,
            stream::iter(0..200u32).debounce_keyed(config, |key| *key, |_, key| key),
        )
        .await
        .into_iter()
        .map(|seen| (seen.key, seen.at_ms))
        .collect()
    }
    let first = run(ms(300), None).await;
    assert_eq!(first.len(), 200);
    for (key, at) in &first {
        let jitter = u64::try_from(jitter_of(key, ms(300)).as_millis()).expect("small");
        assert_eq!(*at, 1000 + jitter, "key {key}");
        assert!(jitter < 300);
    }
    // Spread: 200 keys over 300 possible milliseconds land on many distinct instants.
    let distinct: HashSet<_> = first.values().collect();
    assert!(
        distinct.len() > 100,
        "only {} distinct instants",
        distinct.len()
    );
    assert_eq!(run(ms(300), None).await, first);
    // The cap wins over the jitter.
    assert!(
        run(ms(300), Some(ms(1100)))
            .await
            .values()
            .all(|at| (1000..=1100).contains(at))
    );
    // A max jitter of 1 s or more is clamped below 1 s.
    let clamped = run(Duration::from_secs(30), None).await;
    assert!(clamped.values().all(|at| (1000..2000).contains(at)));
    assert!(clamped.values().any(|at| *at >= 1300));
    // No jitter without a max.
    assert!(
        run(Duration::ZERO, None)
            .await
            .values()
            .all(|at| *at == 1000)
    );
}

#[tokio::test(start_paused = true)]
async fn per_key_timing_is_read_from_the_item_that_opens_a_burst() {
    let start = Instant::now();
    // (key, override window in ms, value); 0 = use the config.
    let events = vec![
        (0, "fast", (100, 1)),
        (0, "slow", (0, 3)),
        // Within fast's burst: its override is ignored (the burst keeps 100 ms).
        (50, "fast", (5000, 2)),
        (400, "fast", (0, 4)),
    ];
    let out = record(
        start,
        scheduled(start, events).debounce_keyed_with(
            DebounceConfig::trailing(ms(1000)),
            |(key, _)| *key,
            |(_, (window, _))| (*window > 0).then(|| Timing::trailing(ms(*window))),
            |_, (_, (_, value))| value,
        ),
    )
    .await;
    assert_eq!(
        out,
        [
            seen("fast", 2, 2, 0, 150, false),
            // A new burst of "fast" opened by an item without override: the config's 1000 ms.
            seen("slow", 3, 1, 0, 1000, false),
            seen("fast", 4, 1, 400, 1400, false),
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn input_end_emits_pending_keys_at_their_deadlines() {
    let start = Instant::now();
    let items = stream::iter([("a", 1), ("b", 2), ("a", 3)]);
    let config = DebounceConfig::trailing(ms(1000)).jitter(ms(500));
    let out = record(
        start,
        items.debounce_keyed(config, |(key, _)| *key, keep_latest),
    )
    .await;
    let jitter = |key: &str| u64::try_from(jitter_of(&key, ms(500)).as_millis()).expect("small");
    let mut expected = vec![
        seen("a", 3, 2, 0, 1000 + jitter("a"), false),
        seen("b", 2, 1, 0, 1000 + jitter("b"), false),
    ];
    expected.sort_by_key(|seen| seen.at_ms);
    assert_eq!(out, expected);
}

#[tokio::test(start_paused = true)]
async fn input_end_can_emit_pending_keys_at_once() {
    let start = Instant::now();
    let items = stream::iter([("a", 1), ("b", 2), ("a", 3), ("c", 4)]);
    let config = DebounceConfig::trailing(Duration::from_secs(3600))
        .jitter(ms(999))
        .on_input_end(OnInputEnd::Immediately);
    let out = record(
        start,
        items.debounce_keyed(config, |(key, _)| *key, keep_latest),
    )
    .await;
    let mut keys: Vec<_> = out
        .iter()
        .map(|seen| (seen.key, seen.value, seen.absorbed))
        .collect();
    keys.sort_unstable();
    assert_eq!(keys, [("a", 3, 2), ("b", 2, 1), ("c", 4, 1)]);
    assert!(out.iter().all(|seen| seen.at_ms == 0));
    // Earliest deadline first.
    let jitters: Vec<_> = out
        .iter()
        .map(|seen| jitter_of(&seen.key, ms(999)))
        .collect();
    assert!(jitters.is_sorted(), "{jitters:?}");
}

#[tokio::test(start_paused = true)]
async fn input_end_immediately_drops_only_empty_leading_windows() {
    let start = Instant::now();
    let items = stream::iter([("a", 1), ("b", 2), ("a", 3)]);
    let config = DebounceConfig::leading_trailing(ms(1000)).on_input_end(OnInputEnd::Immediately);
    let out = record(
        start,
        items.debounce_keyed(config, |(key, _)| *key, keep_latest),
    )
    .await;
    assert_eq!(
        out,
        [
            seen("a", 1, 1, 0, 0, true),
            seen("b", 2, 1, 0, 0, true),
            seen("a", 3, 1, 0, 0, false),
        ]
    );
}

/// Counts wake-ups, to show there is no busy polling.
struct WakeCounter(AtomicUsize);

impl ArcWake for WakeCounter {
    fn wake_by_ref(arc_self: &Arc<Self>) {
        arc_self.0.fetch_add(1, Ordering::SeqCst);
    }
}

#[tokio::test(start_paused = true)]
async fn pending_just_before_the_deadline_and_ready_at_it_without_spurious_wakeups() {
    let (tx, rx) = mpsc::unbounded();
    let mut debounced = rx.debounce_keyed(
        DebounceConfig::trailing(ms(1000)),
        |key: &u32| *key,
        |_, key| key,
    );
    let counter = Arc::new(WakeCounter(AtomicUsize::new(0)));
    let waker = waker(counter.clone());
    let mut cx = Context::from_waker(&waker);
    let wakes = || counter.0.load(Ordering::SeqCst);

    tx.unbounded_send(7).expect("receiver alive");
    assert!(debounced.poll_next_unpin(&mut cx).is_pending());
    assert_eq!(debounced.pending_keys(), 1);
    advance(ms(999)).await;
    assert_eq!(wakes(), 0, "woken before the deadline");
    assert!(debounced.poll_next_unpin(&mut cx).is_pending());
    advance(ms(1)).await;
    assert_eq!(wakes(), 1, "not woken at the deadline");
    let Poll::Ready(Some(emitted)) = debounced.poll_next_unpin(&mut cx) else {
        panic!("not ready at the deadline");
    };
    assert_eq!((emitted.key, emitted.absorbed), (7, 1));
    assert_eq!(debounced.pending_keys(), 0);
    assert!(debounced.poll_next_unpin(&mut cx).is_pending());
    advance(Duration::from_secs(60)).await;
    assert_eq!(wakes(), 1, "woken with nothing pending");
    drop(tx);
    assert_eq!(poll!(debounced.next()), Poll::Ready(None));
}

#[tokio::test(start_paused = true)]
async fn a_flood_of_ready_items_is_drained_in_bounded_slices() {
    let mut debounced = stream::iter(0..(3 * DRAIN_BUDGET as u64))
        .chain(stream::pending())
        .debounce_keyed(
            DebounceConfig::trailing(ms(10)),
            |n| *n % 3,
            |count, _| count.unwrap_or(0) + 1,
        );
    let counter = Arc::new(WakeCounter(AtomicUsize::new(0)));
    let waker = waker(counter.clone());
    let mut cx = Context::from_waker(&waker);
    for slice in 1..=3 {
        assert!(debounced.poll_next_unpin(&mut cx).is_pending());
        assert_eq!(
            counter.0.load(Ordering::SeqCst),
            slice,
            "yielded and woke itself"
        );
    }
    assert!(debounced.poll_next_unpin(&mut cx).is_pending());
    assert_eq!(
        counter.0.load(Ordering::SeqCst),
        3,
        "no self-wake once drained"
    );
    advance(ms(10)).await;
    let mut counts = Vec::new();
    while let Poll::Ready(Some(emitted)) = debounced.poll_next_unpin(&mut cx) {
        counts.push(emitted.value);
    }
    assert_eq!(counts, [DRAIN_BUDGET as u64; 3]);
}

#[tokio::test(start_paused = true)]
async fn memory_is_given_back_after_a_mass_emission() {
    let start = Instant::now();
    let keys = 20_000u32;
    let mut debounced = stream::iter(0..keys)
        .chain(stream::pending())
        .debounce_keyed(DebounceConfig::trailing(ms(10)), |key| *key, |_, key| key);
    let mut emitted = 0;
    while emitted < keys {
        if debounced.next().await.is_some() {
            emitted += 1;
        }
    }
    assert_eq!(ms_since(start, Instant::now()), 10);
    assert_eq!(debounced.pending_keys(), 0);
    let bursts = &debounced.bursts;
    assert!(
        bursts.slots.capacity() < COMPACT_MIN_CAPACITY,
        "{}",
        bursts.slots.capacity()
    );
    assert!(bursts.index.capacity() < 2 * COMPACT_MIN_CAPACITY);
    assert!(bursts.deadlines.capacity() < 2 * COMPACT_MIN_CAPACITY);
}

#[test]
fn debounce_keyed_is_send_when_its_parts_are() {
    fn assert_send<T: Send>(_: &T) {}
    let debounced = stream::iter(vec![(String::from("a"), 1u64)]).debounce_keyed_with(
        DebounceConfig::trailing(ms(1)),
        |(key, _)| key.clone(),
        |_| None,
        |acc: Option<Vec<u64>>, (_, value)| {
            let mut acc = acc.unwrap_or_default();
            acc.push(value);
            acc
        },
    );
    assert_send(&debounced);
}

/// One input item of the property test: key, sequence number, arrival (ms).
type Event = (u8, usize, u64);

/// Inputs, emissions, and when the input ended (ms).
type ScheduleRun = (Vec<Event>, Vec<Seen<u8, Vec<Event>>>, u64);

fn run_schedule(delays: &[(u8, u64)], config: DebounceConfig) -> ScheduleRun {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let start = Instant::now();
        let mut at = 0;
        let mut schedule = Vec::new();
        for (seq, (key, delay)) in delays.iter().enumerate() {
            at += delay;
            schedule.push((at, *key, (*key, seq, at)));
        }
        let inputs = schedule.iter().map(|(_, _, event)| *event).collect();
        let out = record(
            start,
            scheduled(start, schedule).debounce_keyed(
                config,
                |(key, _)| *key,
                |acc, (_, event)| {
                    let mut acc: Vec<Event> = acc.unwrap_or_default();
                    acc.push(event);
                    acc
                },
            ),
        )
        .await;
        (inputs, out, at)
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    /// Over random schedules: no item lost or duplicated, every key emitted, every
    /// emission exactly when its rule says, and a bounded number of emissions per burst.
    #[test]
    fn random_schedules_obey_the_rules(
        delays in prop::collection::vec((0u8..5, prop_oneof![0u64..50, 0u64..1500]), 1..60),
        window in 1u64..800,
        max_wait in prop::option::of(1u64..2000),
        leading in any::<bool>(),
        max_jitter in prop_oneof![Just(0u64), 1u64..400],
        immediately in any::<bool>(),
    ) {
        let mut config = if leading {
            DebounceConfig::leading_trailing(ms(window))
        } else {
            DebounceConfig::trailing(ms(window))
        }
        .jitter(ms(max_jitter));
        config.timing.max_wait = max_wait.map(ms);
        if immediately {
            config = config.on_input_end(OnInputEnd::Immediately);
        }
        let (inputs, out, input_end) = run_schedule(&delays, config);

        // No loss, no duplicate: every item in exactly one emission, in arrival order.
        let absorbed: u64 = out.iter().map(|seen| seen.absorbed).sum();
        prop_assert_eq!(absorbed, inputs.len() as u64);
        let mut folded: Vec<Event> = out.iter().flat_map(|seen| seen.value.clone()).collect();
        folded.sort_unstable_by_key(|event| event.1);
        prop_assert_eq!(&folded, &inputs);
        let keys_in: HashSet<u8> = inputs.iter().map(|event| event.0).collect();
        let keys_out: HashSet<u8> = out.iter().map(|seen| seen.key).collect();
        prop_assert_eq!(keys_in, keys_out);

        let jitter_max = max_jitter.saturating_sub(1);
        let cap = max_wait.unwrap_or(u64::MAX);
        // Per key: start of the open burst (leading+trailing), close of the last emission.
        let mut burst_start: HashMap<u8, u64> = HashMap::new();
        let mut last_emission: HashMap<u8, u64> = HashMap::new();
        for seen in &out {
            let items = &seen.value;
            prop_assert_eq!(seen.absorbed, items.len() as u64);
            prop_assert!(items.iter().all(|event| event.0 == seen.key));
            prop_assert!(items.windows(2).all(|pair| pair[0].1 < pair[1].1));
            let first = items[0].2;
            let last = items[items.len() - 1].2;
            let first_seen_rule = if leading && !seen.leading {
                burst_start.get(&seen.key).copied()
            } else {
                Some(first)
            };
            prop_assert_eq!(Some(seen.first_ms), first_seen_rule);
            // Items of an emission came after the previous emission of the key.
            if let Some(previous) = last_emission.get(&seen.key) {
                prop_assert!(first >= *previous);
            }
            // Consecutive items of a burst are never farther apart than its quiet time.
            prop_assert!(items.windows(2).all(|pair| pair[1].2 - pair[0].2 <= window + jitter_max));
            if seen.leading {
                prop_assert_eq!(seen.absorbed, 1);
                prop_assert_eq!(seen.at_ms, first);
                burst_start.insert(seen.key, first);
            } else {
                let start = if leading {
                    burst_start.remove(&seen.key).expect("a trailing emission follows a leading one")
                } else {
                    first
                };
                prop_assert!(last - start <= cap);
                let earliest = (last + window).min(start.saturating_add(cap));
                let latest = (last + window + jitter_max).min(start.saturating_add(cap));
                let (earliest, latest) = if immediately {
                    (earliest.min(input_end), latest.min(input_end))
                } else {
                    (earliest, latest)
                };
                prop_assert!(
                    (earliest..=latest).contains(&seen.at_ms),
                    "emitted at {} outside [{}, {}]", seen.at_ms, earliest, latest
                );
            }
            last_emission.insert(seen.key, seen.at_ms);
        }

        // Bound: split each key's arrivals into runs at gaps >= window; a run spanning
        // `span` ms yields at most floor(span / max_wait) + 1 bursts, and a burst at most
        // one emission (trailing) or two (leading+trailing).
        let per_burst = if leading { 2 } else { 1 };
        for key in out.iter().map(|seen| seen.key).collect::<HashSet<_>>() {
            let arrivals: Vec<u64> =
                inputs.iter().filter(|event| event.0 == key).map(|event| event.2).collect();
            let mut bound = 0;
            let mut run_start = arrivals[0];
            for (i, at) in arrivals.iter().enumerate() {
                let run_ends = arrivals.get(i + 1).is_none_or(|next| next - at >= window);
                if run_ends {
                    bound += per_burst * ((at - run_start) / cap.max(1) + 1);
                    if let Some(next) = arrivals.get(i + 1) {
                        run_start = *next;
                    }
                }
            }
            let emissions = out.iter().filter(|seen| seen.key == key).count() as u64;
            prop_assert!(emissions <= bound, "key {}: {} emissions > bound {}", key, emissions, bound);
        }
    }
}
