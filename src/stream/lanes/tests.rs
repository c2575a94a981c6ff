//! Tests of the two-lane queue: scenarios on a paused clock, and two model proptests.

use super::state::KeyState;
use super::*;
use futures::{StreamExt, poll};
use proptest::prelude::*;
use std::collections::HashSet;
use std::time::Duration;
use tokio::time::Instant;

fn queue(burst: usize) -> TwoLaneQueue<u32> {
    TwoLaneQueue::new(LanesConfig {
        fast_burst_before_normal: burst,
        retry_backoff_base: Duration::from_secs(1),
        retry_backoff_max: Duration::from_secs(10),
    })
}

fn claim(q: &mut TwoLaneQueue<u32>) -> Option<(u32, Lane)> {
    q.try_claim().map(|c| (c.key, c.lane))
}

#[test]
fn fast_before_normal_fifo_within_lane() {
    let mut q = queue(100);
    q.push(1, Lane::Normal);
    q.push(2, Lane::Normal);
    q.push(3, Lane::Fast);
    q.push(4, Lane::Fast);
    assert_eq!(claim(&mut q), Some((3, Lane::Fast)));
    assert_eq!(claim(&mut q), Some((4, Lane::Fast)));
    assert_eq!(claim(&mut q), Some((1, Lane::Normal)));
    assert_eq!(claim(&mut q), Some((2, Lane::Normal)));
    assert_eq!(claim(&mut q), None);
}

#[test]
fn duplicates_coalesce_and_normal_key_is_promoted() {
    let mut q = queue(100);
    q.push(1, Lane::Normal);
    q.push(2, Lane::Normal);
    q.push(1, Lane::Normal);
    assert_eq!(q.stats().normal, 2);
    q.push(1, Lane::Fast);
    assert_eq!((q.stats().fast, q.stats().normal), (1, 1));
    q.push(1, Lane::Normal); // no demotion
    assert_eq!(claim(&mut q), Some((1, Lane::Fast)));
    assert_eq!(claim(&mut q), Some((2, Lane::Normal)));
    assert_eq!(claim(&mut q), None);
}

#[test]
fn claimed_key_is_requeued_on_complete_with_highest_lane() {
    let mut q = queue(100);
    q.push(1, Lane::Fast);
    assert_eq!(claim(&mut q), Some((1, Lane::Fast)));
    q.push(1, Lane::Normal);
    q.push(1, Lane::Fast);
    q.push(1, Lane::Normal);
    assert_eq!(claim(&mut q), None, "never handed out twice at once");
    q.complete(&1);
    assert_eq!(claim(&mut q), Some((1, Lane::Fast)));
    q.complete(&1);
    assert_eq!(claim(&mut q), None);
    assert!(q.is_empty());
    assert!(q.keys.is_empty(), "state freed once idle");
}

#[test]
fn fairness_bound_lets_one_normal_key_through() {
    let mut q = queue(2);
    q.push(100, Lane::Normal);
    q.push(101, Lane::Normal);
    for k in 0..5 {
        q.push(k, Lane::Fast);
    }
    let order: Vec<_> = std::iter::from_fn(|| claim(&mut q)).collect();
    assert_eq!(
        order,
        vec![
            (0, Lane::Fast),
            (1, Lane::Fast),
            (100, Lane::Normal),
            (2, Lane::Fast),
            (3, Lane::Fast),
            (101, Lane::Normal),
            (4, Lane::Fast),
        ]
    );
}

#[test]
fn a_claim_of_the_fast_lane_only_leaves_normal_keys_pending_and_the_streak_alone() {
    let mut q = queue(1);
    q.push(1, Lane::Normal);
    q.push(2, Lane::Fast);
    q.push(3, Lane::Fast);
    let fast_only = |q: &mut TwoLaneQueue<u32>| q.try_claim_at_least(Lane::Fast).map(|c| c.key);
    assert_eq!(fast_only(&mut q), Some(2));
    assert_eq!(fast_only(&mut q), Some(3));
    assert_eq!(fast_only(&mut q), None, "the normal key is not handed out");
    assert_eq!(q.stats().normal, 1);
    // Fast claims made while normal keys could not be served do not count against them.
    q.push(4, Lane::Fast);
    assert_eq!(claim(&mut q), Some((4, Lane::Fast)));
    assert_eq!(claim(&mut q), Some((1, Lane::Normal)));
}

#[tokio::test(start_paused = true)]
async fn schedule_fires_at_its_instant_with_one_timer() {
    let mut q = queue(8);
    let t0 = Instant::now();
    q.schedule(1, Lane::Normal, t0 + Duration::from_secs(5));
    q.schedule(2, Lane::Fast, t0 + Duration::from_secs(3));
    q.schedule(1, Lane::Normal, t0 + Duration::from_secs(4)); // earlier wins
    q.schedule(2, Lane::Normal, t0 + Duration::from_secs(9)); // later: lane kept, instant kept
    assert_eq!(q.stats().delayed, 2);
    assert!(poll!(q.next()).is_pending());
    tokio::time::advance(Duration::from_millis(2999)).await;
    assert!(poll!(q.next()).is_pending());
    tokio::time::advance(Duration::from_millis(1)).await;
    let c = q.next().await.expect("never ends");
    assert_eq!(
        (c.key, c.lane, c.enqueued_at),
        (2, Lane::Fast, t0 + Duration::from_secs(3))
    );
    assert!(poll!(q.next()).is_pending());
    tokio::time::advance(Duration::from_secs(1)).await;
    assert_eq!(q.next().await.map(|c| c.key), Some(1));
    assert_eq!(Instant::now(), t0 + Duration::from_secs(4));
    assert_eq!(q.stats().delayed, 0);
}

#[tokio::test(start_paused = true)]
async fn push_cancels_a_delay_and_schedule_is_absorbed_by_pending() {
    let mut q = queue(8);
    let t0 = Instant::now();
    q.schedule(1, Lane::Fast, t0 + Duration::from_secs(5));
    q.push(1, Lane::Normal);
    assert_eq!(
        q.stats(),
        QueueStats {
            fast: 1,
            normal: 0,
            in_flight: 0,
            delayed: 0
        }
    );
    q.schedule(2, Lane::Normal, t0); // due now: a push
    q.schedule(2, Lane::Fast, t0 + Duration::from_secs(1)); // absorbed by pending
    assert_eq!(claim(&mut q), Some((1, Lane::Fast)));
    assert_eq!(claim(&mut q), Some((2, Lane::Normal)));
    tokio::time::advance(Duration::from_secs(10)).await;
    assert_eq!(claim(&mut q), None, "the cancelled schedule does not fire");
}

#[tokio::test(start_paused = true)]
async fn schedule_due_while_claimed_requeues_on_complete() {
    let mut q = queue(8);
    let t0 = Instant::now();
    q.push(1, Lane::Normal);
    assert_eq!(claim(&mut q), Some((1, Lane::Normal)));
    q.schedule(1, Lane::Fast, t0 + Duration::from_secs(1));
    tokio::time::advance(Duration::from_secs(2)).await;
    assert_eq!(claim(&mut q), None);
    q.complete(&1);
    assert_eq!(claim(&mut q), Some((1, Lane::Fast)));
}

#[tokio::test(start_paused = true)]
async fn fail_backs_off_exponentially_and_complete_resets() {
    let mut q = queue(8);
    let t0 = Instant::now();
    q.push(7, Lane::Fast);
    let mut due = Vec::new();
    for _ in 0..6 {
        let c = q.next().await.expect("never ends");
        due.push(((Instant::now() - t0).as_secs(), c.attempt, c.lane));
        q.fail(&c.key);
    }
    // 1, 2, 4, 8, then capped at 10 s.
    assert_eq!(
        due,
        vec![
            (0, 1, Lane::Fast),
            (1, 2, Lane::Fast),
            (3, 3, Lane::Fast),
            (7, 4, Lane::Fast),
            (15, 5, Lane::Fast),
            (25, 6, Lane::Fast),
        ]
    );
    let c = q.next().await.expect("never ends");
    assert_eq!(c.attempt, 7);
    q.complete(&c.key);
    q.push(7, Lane::Normal);
    let c = q.next().await.expect("never ends");
    assert_eq!(c.attempt, 1);
    q.fail(&c.key);
    let before = Instant::now();
    let c = q.next().await.expect("never ends");
    assert_eq!(
        (Instant::now() - before, c.lane),
        (Duration::from_secs(1), Lane::Normal)
    );
}

#[tokio::test(start_paused = true)]
async fn fail_with_a_new_push_requeues_at_once() {
    let mut q = queue(8);
    q.push(1, Lane::Normal);
    let c = q.try_claim().expect("pending");
    q.push(1, Lane::Fast);
    q.fail(&c.key);
    assert_eq!(claim(&mut q), Some((1, Lane::Fast)));
}

#[test]
fn per_key_state_stays_small() {
    // A bound, so a change that bloats the per-key state is noticed (BENCHMARKS.md quotes it).
    let size = std::mem::size_of::<KeyState>();
    eprintln!("KeyState: {size} bytes");
    assert!(size <= 96, "KeyState grew to {size} bytes");
}

#[test]
fn queue_is_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>(_: &T) {}
    assert_send_sync(&queue(1));
}

#[derive(Clone, Debug)]
enum Op {
    Push(u32, bool),
    Claim,
    Complete(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0u32..12, any::<bool>()).prop_map(|(k, fast)| Op::Push(k, fast)),
        3 => Just(Op::Claim),
        2 => (0usize..8).prop_map(Op::Complete),
    ]
}

/// A reference model: pending keys with lane and sequence; the queue must match it claim
/// for claim, and the invariants are asserted on the model's view.
#[derive(Default)]
struct Model {
    pending: Vec<(u32, Lane, u64)>,
    in_flight: Vec<(u32, Option<Lane>)>,
    seq: u64,
    streak: usize,
}

impl Model {
    fn arrive(&mut self, k: u32, lane: Lane) {
        if let Some((_, arrived)) = self.in_flight.iter_mut().find(|(key, _)| *key == k) {
            *arrived = (*arrived).max(Some(lane));
            return;
        }
        self.seq += 1;
        match self.pending.iter_mut().find(|(key, _, _)| *key == k) {
            Some(p) if lane > p.1 => {
                p.1 = lane;
                p.2 = self.seq;
            }
            Some(_) => {}
            None => self.pending.push((k, lane, self.seq)),
        }
    }
    fn claim(&mut self, burst: usize) -> Option<(u32, Lane)> {
        let oldest = |lane: Lane, pending: &[(u32, Lane, u64)]| {
            pending
                .iter()
                .enumerate()
                .filter(|(_, p)| p.1 == lane)
                .min_by_key(|(_, p)| p.2)
                .map(|(i, _)| i)
        };
        let fast = oldest(Lane::Fast, &self.pending);
        let normal = oldest(Lane::Normal, &self.pending);
        let index = match (fast, normal) {
            (None, None) => return None,
            (Some(f), None) => {
                self.streak = 0;
                f
            }
            (None, Some(n)) => {
                self.streak = 0;
                n
            }
            (Some(_), Some(n)) if self.streak >= burst => {
                self.streak = 0;
                n
            }
            (Some(f), Some(_)) => {
                self.streak += 1;
                f
            }
        };
        let (k, lane, _) = self.pending.remove(index);
        self.in_flight.push((k, None));
        Some((k, lane))
    }
}

#[derive(Clone, Debug)]
enum TimedOp {
    Push(u32, bool),
    Schedule(u32, bool, u64),
    Claim,
    Complete(usize),
    Fail(usize),
    Advance(u64),
}

fn timed_op() -> impl Strategy<Value = TimedOp> {
    prop_oneof![
        3 => (0u32..8, any::<bool>()).prop_map(|(k, fast)| TimedOp::Push(k, fast)),
        1 => (0u32..8, any::<bool>(), 0u64..5_000).prop_map(|(k, fast, ms)| TimedOp::Schedule(k, fast, ms)),
        3 => Just(TimedOp::Claim),
        2 => (0usize..8).prop_map(TimedOp::Complete),
        1 => (0usize..8).prop_map(TimedOp::Fail),
        1 => (0u64..3_000).prop_map(TimedOp::Advance),
    ]
}

proptest! {
    /// With failures, schedules and time: never a key claimed twice at once, a fast key
    /// waiting means a normal claim happened only at the fairness bound, the counts match
    /// the claims, and every key pushed, scheduled or failed is claimed again later:
    /// nothing is lost, and all state is freed at the end.
    #[test]
    fn with_failures_and_time_nothing_is_lost(
        burst in 1usize..4,
        ops in proptest::collection::vec(timed_op(), 0..150),
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .expect("runtime");
        runtime.block_on(async {
            let mut q = queue(burst);
            let mut claimed: Vec<u32> = Vec::new();
            // Keys owed a claim: pushed, scheduled or failed since their last claim began.
            let mut owed: HashSet<u32> = HashSet::new();
            let mut streak = 0usize;
            let mut claim_one = |q: &mut TwoLaneQueue<u32>, claimed: &mut Vec<u32>, owed: &mut HashSet<u32>| -> Result<bool, TestCaseError> {
                let before = q.stats();
                let Some(c) = q.try_claim() else { return Ok(false) };
                let stats = q.stats();
                // Keys released by the clock in this call count as waiting before it.
                let fast_waiting = stats.fast + usize::from(c.lane == Lane::Fast) > 0;
                let normal_waiting = stats.normal + usize::from(c.lane == Lane::Normal) > 0;
                prop_assert!(!claimed.contains(&c.key), "key {} claimed twice at once", c.key);
                prop_assert_eq!(stats.in_flight, before.in_flight + 1);
                match c.lane {
                    Lane::Fast if normal_waiting => {
                        streak += 1;
                        prop_assert!(streak <= burst, "fairness bound exceeded");
                    }
                    Lane::Fast => streak = 0,
                    Lane::Normal => {
                        prop_assert!(!fast_waiting || streak == burst, "normal before fast");
                        streak = 0;
                    }
                }
                claimed.push(c.key);
                owed.remove(&c.key);
                Ok(true)
            };
            for op in ops {
                match op {
                    TimedOp::Push(k, fast) => {
                        q.push(k, if fast { Lane::Fast } else { Lane::Normal });
                        owed.insert(k);
                    }
                    TimedOp::Schedule(k, fast, ms) => {
                        let lane = if fast { Lane::Fast } else { Lane::Normal };
                        q.schedule(k, lane, Instant::now() + Duration::from_millis(ms));
                        owed.insert(k);
                    }
                    TimedOp::Claim => {
                        claim_one(&mut q, &mut claimed, &mut owed)?;
                    }
                    TimedOp::Complete(i) if !claimed.is_empty() => {
                        let k = claimed.remove(i % claimed.len());
                        q.complete(&k);
                    }
                    TimedOp::Fail(i) if !claimed.is_empty() => {
                        let k = claimed.remove(i % claimed.len());
                        q.fail(&k);
                        owed.insert(k);
                    }
                    TimedOp::Advance(ms) => tokio::time::advance(Duration::from_millis(ms)).await,
                    TimedOp::Complete(_) | TimedOp::Fail(_) => {}
                }
                prop_assert_eq!(q.stats().in_flight, claimed.len());
            }
            // Drain: complete everything, then wait out every delay and backoff (capped at 10 s).
            for _ in 0..10_000 {
                for k in claimed.drain(..) {
                    q.complete(&k);
                }
                if !claim_one(&mut q, &mut claimed, &mut owed)? {
                    if q.is_empty() {
                        break;
                    }
                    tokio::time::advance(Duration::from_millis(500)).await;
                }
            }
            prop_assert!(q.is_empty(), "left: {:?}", q.stats());
            prop_assert!(owed.is_empty(), "lost keys: {:?}", owed);
            prop_assert!(q.keys.is_empty(), "state freed");
            Ok(())
        })?;
    }
}

proptest! {
    #[test]
    fn queue_matches_model_and_keeps_invariants(
        burst in 1usize..4,
        ops in proptest::collection::vec(op(), 0..200),
    ) {
        let mut q = queue(burst);
        let mut model = Model::default();
        let mut claimed: Vec<u32> = Vec::new();
        let mut consecutive_fast_while_normal_waits = 0usize;
        let run = |op: Op, q: &mut TwoLaneQueue<u32>, model: &mut Model, claimed: &mut Vec<u32>, consecutive: &mut usize| -> Result<(), TestCaseError> {
            match op {
                Op::Push(k, fast) => {
                    let lane = if fast { Lane::Fast } else { Lane::Normal };
                    q.push(k, lane);
                    model.arrive(k, lane);
                }
                Op::Claim => {
                    let stats = q.stats();
                    let got = claim(q);
                    prop_assert_eq!(got, model.claim(burst));
                    if let Some((k, lane)) = got {
                        prop_assert!(!claimed.contains(&k), "key {} claimed twice at once", k);
                        claimed.push(k);
                        match lane {
                            Lane::Fast if stats.normal > 0 => {
                                *consecutive += 1;
                                prop_assert!(*consecutive <= burst, "fairness bound exceeded");
                            }
                            Lane::Fast => *consecutive = 0,
                            Lane::Normal => {
                                prop_assert!(stats.fast == 0 || *consecutive == burst,
                                    "normal key handed out while fast work waited");
                                *consecutive = 0;
                            }
                        }
                    }
                }
                Op::Complete(i) => {
                    if !claimed.is_empty() {
                        let k = claimed.remove(i % claimed.len());
                        q.complete(&k);
                        let at = model.in_flight.iter().position(|(key, _)| *key == k).expect("model in flight");
                        let (_, arrived) = model.in_flight.remove(at);
                        if let Some(lane) = arrived {
                            model.arrive(k, lane);
                        }
                    }
                }
            }
            let stats = q.stats();
            let mut keys = HashSet::new();
            for (k, _, _) in &model.pending {
                prop_assert!(keys.insert(*k), "key {} pending twice", k);
            }
            prop_assert_eq!(stats.fast + stats.normal, model.pending.len());
            prop_assert_eq!(stats.in_flight, claimed.len());
            Ok(())
        };
        for op in ops {
            run(op, &mut q, &mut model, &mut claimed, &mut consecutive_fast_while_normal_waits)?;
        }
        // Drain: every key that is pending or owed after its claim comes out; nothing lost.
        let owed: HashSet<u32> = model.pending.iter().map(|p| p.0)
            .chain(model.in_flight.iter().filter(|(_, a)| a.is_some()).map(|(k, _)| *k))
            .collect();
        let mut served = HashSet::new();
        for _ in 0..1000 {
            if claimed.is_empty() && q.stats().fast + q.stats().normal == 0 {
                break;
            }
            let op = if claimed.is_empty() { Op::Claim } else { Op::Complete(0) };
            let before = claimed.clone();
            run(op, &mut q, &mut model, &mut claimed, &mut consecutive_fast_while_normal_waits)?;
            if claimed.len() > before.len() {
                served.insert(*claimed.last().expect("just claimed"));
            }
        }
        prop_assert!(q.is_empty());
        prop_assert!(q.keys.is_empty(), "state freed");
        prop_assert!(owed.is_subset(&served), "lost keys: {:?}", owed.difference(&served).collect::<Vec<_>>());
    }
}
