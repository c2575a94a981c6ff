//! Runner: drives a [`TwoLaneQueue`] from two streams of keys with a bounded pool of work
//! futures.
//!
//! The counterpart of kube-runtime's `scheduler` + `Runner` pair, with two lanes: keys from the
//! `fast` stream are pushed on [`Lane::Fast`], keys from `normal` on [`Lane::Normal`]; up to
//! `max_concurrent` claims are worked on at once (all polled by this stream, no task spawned);
//! each finished work is yielded as `(key, lane, result)` after its claim has been given back:
//! `Ok(Next::Done)` completes it, `Ok(Next::Requeue(lane))` and `Ok(Next::RequeueAfter(lane, d))`
//! complete it and queue the key again, `Err(_)` fails it (per-key exponential backoff, on the
//! lane it was claimed from). The stream ends when both inputs have ended and the queue holds no
//! pending, delayed or claimed key.

use std::future::Future;
use std::hash::Hash;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures::stream::{Fuse, FuturesUnordered};
use futures::{Stream, StreamExt, ready};
use pin_project::pin_project;
use tokio::time::Instant;

use super::lanes::{Claim, Lane, Next, TwoLaneQueue};

/// One work future tagged with its key and lane.
#[pin_project]
#[must_use = "futures do nothing unless polled"]
struct Work<K, Fut> {
    key: Option<K>,
    lane: Lane,
    #[pin]
    future: Fut,
}

impl<K, Fut: Future> Future for Work<K, Fut> {
    type Output = (K, Lane, Fut::Output);

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let output = ready!(this.future.poll(cx));
        let key = this
            .key
            .take()
            .expect("FuturesUnordered never polls a finished work again");
        Poll::Ready((key, *this.lane, output))
    }
}

/// Stream returned by [`run_two_lanes`] and
/// [`ControllerStreamExt::run_two_lanes`](super::ControllerStreamExt::run_two_lanes): yields
/// `(key, lane, result)` per finished work.
///
/// ```
/// use futures::{StreamExt, stream};
/// use kube_sentinel::stream::{ControllerStreamExt, LanesConfig, Next, TwoLaneQueue};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let runner = stream::iter([1, 2]).run_two_lanes(
///     stream::empty(),
///     TwoLaneQueue::new(LanesConfig::default()),
///     4,
///     |claim| async move { if claim.key == 2 { Err("boom") } else { Ok(Next::Done) } },
/// );
/// futures::pin_mut!(runner);
/// let (key, _, result) = runner.next().await.expect("first result");
/// assert_eq!((key, result), (1, Ok(Next::Done)));
/// let (key, _, result) = runner.next().await.expect("second result");
/// assert_eq!((key, result), (2, Err("boom"))); // and 2 is retried after a backoff
/// # }
/// ```
#[pin_project]
#[must_use = "streams do nothing unless polled"]
pub struct TwoLaneRunner<K, Fa, No, W, Fut> {
    #[pin]
    fast: Fuse<Fa>,
    #[pin]
    normal: Fuse<No>,
    queue: TwoLaneQueue<K>,
    max_concurrent: usize,
    /// Normal-lane works allowed at once: `max_concurrent` less the workers kept for the fast
    /// lane.
    normal_limit: usize,
    normal_in_flight: usize,
    work: W,
    #[pin]
    in_flight: FuturesUnordered<Work<K, Fut>>,
}

/// Runs `work` on every key of `fast` (fast lane) and `normal` (normal lane) through `queue`,
/// with at most `max_concurrent` works at once (`0` is taken as `1`). See the
/// [module documentation](self) for the rules; the same is reachable as
/// [`ControllerStreamExt::run_two_lanes`](super::ControllerStreamExt::run_two_lanes).
///
/// ```
/// use futures::{StreamExt, stream};
/// use kube_sentinel::stream::{Lane, LanesConfig, Next, TwoLaneQueue, run_two_lanes};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let fast = stream::iter(["web-0"]);
/// let normal = stream::iter(["db-0", "web-0"]);
/// let runner = run_two_lanes(
///     fast,
///     normal,
///     TwoLaneQueue::new(LanesConfig::default()),
///     1,
///     |claim| async move { Ok::<_, std::convert::Infallible>(Next::Done) },
/// );
/// let done: Vec<_> = runner.map(|(key, lane, _)| (key, lane)).collect().await;
/// // "web-0" arrived on both lanes: promoted, worked on once, fast lane first.
/// assert_eq!(done, vec![("web-0", Lane::Fast), ("db-0", Lane::Normal)]);
/// # }
/// ```
pub fn run_two_lanes<K, Fa, No, W, Fut, E>(
    fast: Fa,
    normal: No,
    queue: TwoLaneQueue<K>,
    max_concurrent: usize,
    work: W,
) -> TwoLaneRunner<K, Fa, No, W, Fut>
where
    K: Clone + Hash + Eq,
    Fa: Stream<Item = K>,
    No: Stream<Item = K>,
    W: FnMut(Claim<K>) -> Fut,
    Fut: Future<Output = Result<Next, E>>,
{
    TwoLaneRunner {
        fast: fast.fuse(),
        normal: normal.fuse(),
        queue,
        max_concurrent: max_concurrent.max(1),
        normal_limit: max_concurrent.max(1),
        normal_in_flight: 0,
        work,
        in_flight: FuturesUnordered::new(),
    }
}

impl<K, Fa, No, W, Fut> TwoLaneRunner<K, Fa, No, W, Fut>
where
    K: Clone + Hash + Eq,
{
    /// Keeps `workers` of the `max_concurrent` for the fast lane: normal-lane work never
    /// takes more than the rest, so a fast key starts at once however long the normal lane's
    /// works take. At least one worker is left to the normal lane; fast keys may use all.
    ///
    /// ```
    /// use futures::stream;
    /// use kube_sentinel::stream::{LanesConfig, Next, TwoLaneQueue, run_two_lanes};
    ///
    /// // Four workers; full reconciles (normal lane) use at most three of them.
    /// let runner = run_two_lanes(
    ///     stream::iter(["revert"]),
    ///     stream::iter(["full-1", "full-2"]),
    ///     TwoLaneQueue::new(LanesConfig::default()),
    ///     4,
    ///     |_claim| async { Ok::<_, std::convert::Infallible>(Next::Done) },
    /// )
    /// .reserve_for_fast(1);
    /// # drop(runner);
    /// ```
    pub fn reserve_for_fast(mut self, workers: usize) -> Self {
        self.normal_limit = self.max_concurrent - workers.min(self.max_concurrent - 1);
        self
    }

    /// The queue, for its [`stats`](TwoLaneQueue::stats) or to push keys directly.
    pub fn queue_mut(self: Pin<&mut Self>) -> &mut TwoLaneQueue<K> {
        self.project().queue
    }
}

impl<K, Fa, No, W, Fut, E> Stream for TwoLaneRunner<K, Fa, No, W, Fut>
where
    K: Clone + Hash + Eq,
    Fa: Stream<Item = K>,
    No: Stream<Item = K>,
    W: FnMut(Claim<K>) -> Fut,
    Fut: Future<Output = Result<Next, E>>,
{
    type Item = (K, Lane, Result<Next, E>);

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let mut this = self.project();
        // Fast input first, so a fast key that is ready now is never queued behind normal ones.
        while let Poll::Ready(Some(key)) = this.fast.as_mut().poll_next(cx) {
            this.queue.push(key, Lane::Fast);
        }
        while let Poll::Ready(Some(key)) = this.normal.as_mut().poll_next(cx) {
            this.queue.push(key, Lane::Normal);
        }
        while this.in_flight.len() < *this.max_concurrent {
            let lowest = if *this.normal_in_flight < *this.normal_limit {
                Lane::Normal
            } else {
                Lane::Fast
            };
            let Poll::Ready(claim) = this.queue.poll_claim_at_least(cx, lowest) else {
                break;
            };
            if claim.lane == Lane::Normal {
                *this.normal_in_flight += 1;
            }
            let work = Work {
                key: Some(claim.key.clone()),
                lane: claim.lane,
                future: (this.work)(claim),
            };
            this.in_flight.as_mut().get_mut().push(work);
        }
        match this.in_flight.as_mut().poll_next(cx) {
            Poll::Ready(Some((key, lane, result))) => {
                if lane == Lane::Normal {
                    *this.normal_in_flight -= 1;
                }
                match &result {
                    Ok(Next::Done) => this.queue.complete(&key),
                    Ok(Next::Requeue(next)) => {
                        this.queue.complete(&key);
                        this.queue.push(key.clone(), *next);
                    }
                    Ok(Next::RequeueAfter(next, delay)) => {
                        this.queue.complete(&key);
                        this.queue
                            .schedule(key.clone(), *next, Instant::now() + *delay);
                    }
                    Err(_) => this.queue.fail(&key),
                }
                Poll::Ready(Some((key, lane, result)))
            }
            Poll::Ready(None) => {
                let inputs_done = this.fast.is_done() && this.normal.is_done();
                if inputs_done && this.queue.is_empty() {
                    Poll::Ready(None)
                } else {
                    Poll::Pending
                }
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stream::{ControllerStreamExt, LanesConfig};
    use futures::channel::mpsc;
    use futures::poll;
    use std::cell::RefCell;
    use std::collections::HashSet;
    use std::rc::Rc;
    use std::time::Duration;

    type Log = Rc<RefCell<Vec<(u32, Lane, &'static str)>>>;
    type BoxedWork = Pin<Box<dyn Future<Output = Result<Next, String>>>>;

    /// A work function that logs start and end, asserts no key runs twice at once, and takes
    /// 10 ms (paused clock).
    fn instrumented(
        log: Log,
        running: Rc<RefCell<HashSet<u32>>>,
    ) -> impl FnMut(Claim<u32>) -> BoxedWork {
        move |claim| {
            let log = log.clone();
            let running = running.clone();
            Box::pin(async move {
                assert!(
                    running.borrow_mut().insert(claim.key),
                    "key {} handed to two workers at once",
                    claim.key
                );
                log.borrow_mut().push((claim.key, claim.lane, "start"));
                tokio::time::sleep(Duration::from_millis(10)).await;
                running.borrow_mut().remove(&claim.key);
                log.borrow_mut().push((claim.key, claim.lane, "end"));
                Ok(Next::Done)
            })
        }
    }

    #[tokio::test(start_paused = true)]
    async fn fast_keys_go_first_when_workers_are_saturated() {
        let log = Log::default();
        let (fast_tx, fast_rx) = mpsc::unbounded::<u32>();
        let (normal_tx, normal_rx) = mpsc::unbounded::<u32>();
        let runner = fast_rx.run_two_lanes(
            normal_rx,
            TwoLaneQueue::new(LanesConfig::default()),
            2,
            instrumented(log.clone(), Rc::default()),
        );
        futures::pin_mut!(runner);
        for k in 1..=4 {
            normal_tx.unbounded_send(k).expect("send");
        }
        assert!(poll!(runner.next()).is_pending()); // 1 and 2 start; 3, 4 wait
        fast_tx.unbounded_send(10).expect("send");
        fast_tx.unbounded_send(11).expect("send");
        drop((fast_tx, normal_tx));
        let order: Vec<_> = runner
            .map(|(k, lane, r)| (k, lane, r.is_ok()))
            .collect()
            .await;
        let starts: Vec<_> = log
            .borrow()
            .iter()
            .filter(|e| e.2 == "start")
            .map(|e| e.0)
            .collect();
        assert_eq!(starts, vec![1, 2, 10, 11, 3, 4]);
        assert_eq!(order.len(), 6);
    }

    /// Slow normal work: each normal key takes 10 s, a fast key 10 ms (paused clock); logs
    /// each start with its instant.
    fn slow_normal(log: Rc<RefCell<Vec<(u32, Duration)>>>) -> impl FnMut(Claim<u32>) -> BoxedWork {
        let t0 = Instant::now();
        move |claim| {
            log.borrow_mut().push((claim.key, t0.elapsed()));
            let took = match claim.lane {
                Lane::Normal => Duration::from_secs(10),
                Lane::Fast => Duration::from_millis(10),
            };
            Box::pin(async move {
                tokio::time::sleep(took).await;
                Ok(Next::Done)
            })
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_reserved_worker_starts_a_fast_key_at_once_behind_a_normal_backlog() {
        let log = Rc::new(RefCell::new(Vec::new()));
        let (fast_tx, fast_rx) = mpsc::unbounded::<u32>();
        let runner = run_two_lanes(
            fast_rx,
            futures::stream::iter(1..=3),
            TwoLaneQueue::new(LanesConfig::default()),
            2,
            slow_normal(log.clone()),
        )
        .reserve_for_fast(1);
        futures::pin_mut!(runner);
        assert!(poll!(runner.next()).is_pending());
        assert_eq!(
            *log.borrow(),
            vec![(1, Duration::ZERO)],
            "one normal worker"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
        fast_tx.unbounded_send(10).expect("send");
        drop(fast_tx);
        let done: Vec<_> = runner.map(|(k, lane, _)| (k, lane)).collect().await;
        assert_eq!(done[0], (10, Lane::Fast), "the fast key did not wait");
        let starts = log.borrow().clone();
        assert_eq!(
            starts,
            vec![
                (1, Duration::ZERO),
                (10, Duration::from_secs(1)),
                (2, Duration::from_secs(10)),
                (3, Duration::from_secs(20)),
            ]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn fast_keys_may_use_every_worker_and_a_reservation_of_all_is_refused() {
        let log = Rc::new(RefCell::new(Vec::new()));
        let runner = run_two_lanes(
            futures::stream::iter([10, 11, 12]),
            futures::stream::iter([1]),
            TwoLaneQueue::new(LanesConfig::default()),
            3,
            slow_normal(log.clone()),
        )
        // Reserving every worker would starve the normal lane: one is always left to it.
        .reserve_for_fast(7);
        let mut done: Vec<_> = runner.map(|(k, _, _)| k).collect().await;
        assert_eq!(done.pop(), Some(1), "the normal key last");
        done.sort_unstable();
        assert_eq!(done, vec![10, 11, 12]);
        let at_once: Vec<_> = log
            .borrow()
            .iter()
            .filter(|s| s.1.is_zero())
            .map(|s| s.0)
            .collect();
        assert_eq!(
            at_once,
            vec![10, 11, 12],
            "three fast keys on three workers"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn never_two_workers_on_one_key_and_requeue_after_completion() {
        let log = Log::default();
        let (fast_tx, fast_rx) = mpsc::unbounded::<u32>();
        let (normal_tx, normal_rx) = mpsc::unbounded::<u32>();
        let runner = run_two_lanes(
            fast_rx,
            normal_rx,
            TwoLaneQueue::new(LanesConfig::default()),
            4,
            instrumented(log.clone(), Rc::default()),
        );
        futures::pin_mut!(runner);
        // A trigger: revert on the fast lane.
        fast_tx.unbounded_send(1).expect("send");
        assert!(poll!(runner.next()).is_pending());
        // While the revert runs, a full reconcile is asked for, and more triggers.
        normal_tx.unbounded_send(1).expect("send");
        fast_tx.unbounded_send(1).expect("send");
        normal_tx.unbounded_send(1).expect("send");
        assert!(poll!(runner.next()).is_pending());
        drop((fast_tx, normal_tx));
        let done: Vec<_> = runner.map(|(k, lane, _)| (k, lane)).collect().await;
        // Re-queued once, on the highest lane seen while claimed, after the first completed.
        assert_eq!(done, vec![(1, Lane::Fast), (1, Lane::Fast)]);
        assert_eq!(
            *log.borrow(),
            vec![
                (1, Lane::Fast, "start"),
                (1, Lane::Fast, "end"),
                (1, Lane::Fast, "start"),
                (1, Lane::Fast, "end"),
            ]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn revert_then_full_reconcile_in_order() {
        let log = Log::default();
        let (fast_tx, fast_rx) = mpsc::unbounded::<u32>();
        let (normal_tx, normal_rx) = mpsc::unbounded::<u32>();
        let runner = run_two_lanes(
            fast_rx,
            normal_rx,
            TwoLaneQueue::new(LanesConfig::default()),
            4,
            instrumented(log.clone(), Rc::default()),
        );
        futures::pin_mut!(runner);
        fast_tx.unbounded_send(1).expect("send");
        assert!(poll!(runner.next()).is_pending());
        normal_tx.unbounded_send(1).expect("send");
        drop((fast_tx, normal_tx));
        let done: Vec<_> = runner.map(|(k, lane, _)| (k, lane)).collect().await;
        assert_eq!(done, vec![(1, Lane::Fast), (1, Lane::Normal)]);
        let events: Vec<_> = log.borrow().iter().map(|e| (e.1, e.2)).collect();
        assert_eq!(
            events,
            vec![
                (Lane::Fast, "start"),
                (Lane::Fast, "end"),
                (Lane::Normal, "start"),
                (Lane::Normal, "end"),
            ]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn promotion_runs_a_waiting_normal_key_on_the_fast_lane_once() {
        let log = Log::default();
        let (fast_tx, fast_rx) = mpsc::unbounded::<u32>();
        let (normal_tx, normal_rx) = mpsc::unbounded::<u32>();
        let runner = run_two_lanes(
            fast_rx,
            normal_rx,
            TwoLaneQueue::new(LanesConfig::default()),
            1,
            instrumented(log.clone(), Rc::default()),
        );
        futures::pin_mut!(runner);
        for k in [1, 2, 3] {
            normal_tx.unbounded_send(k).expect("send");
        }
        assert!(poll!(runner.next()).is_pending()); // 1 runs
        fast_tx.unbounded_send(3).expect("send"); // 3 waits on normal: promoted
        drop((fast_tx, normal_tx));
        let done: Vec<_> = runner.map(|(k, lane, _)| (k, lane)).collect().await;
        assert_eq!(
            done,
            vec![(1, Lane::Normal), (3, Lane::Fast), (2, Lane::Normal)]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn requeue_after_and_error_backoff_are_scheduled() {
        let t0 = Instant::now();
        let runs = Rc::new(RefCell::new(Vec::new()));
        let runner = run_two_lanes(
            futures::stream::iter([1u32]),
            futures::stream::empty(),
            TwoLaneQueue::new(LanesConfig {
                retry_backoff_base: Duration::from_secs(2),
                ..LanesConfig::default()
            }),
            1,
            {
                let runs = runs.clone();
                move |claim: Claim<u32>| {
                    runs.borrow_mut()
                        .push((Instant::now() - t0, claim.lane, claim.attempt));
                    let n = runs.borrow().len();
                    async move {
                        match n {
                            1 => Ok(Next::RequeueAfter(Lane::Normal, Duration::from_secs(5))),
                            2 | 3 => Err("transient"),
                            4 => Ok(Next::Requeue(Lane::Fast)),
                            _ => Ok(Next::Done),
                        }
                    }
                }
            },
        );
        let results: Vec<_> = runner.map(|(_, _, r)| r).collect().await;
        assert_eq!(results.len(), 5);
        assert_eq!(
            *runs.borrow(),
            vec![
                (Duration::ZERO, Lane::Fast, 1),
                (Duration::from_secs(5), Lane::Normal, 1),
                (Duration::from_secs(7), Lane::Normal, 2), // +2 s backoff
                (Duration::from_secs(11), Lane::Normal, 3), // +4 s backoff
                (Duration::from_secs(11), Lane::Fast, 1),
            ]
        );
    }

    #[test]
    fn runner_is_send_when_its_parts_are() {
        fn assert_send<T: Send>(_: &T) {}
        let runner = run_two_lanes(
            futures::stream::iter(["a".to_string()]),
            futures::stream::iter(["b".to_string()]),
            TwoLaneQueue::new(LanesConfig::default()),
            2,
            |_claim| async { Ok::<_, std::io::Error>(Next::Done) },
        );
        assert_send(&runner);
    }
}
