//! The debounces a user would otherwise write, for side-by-side benchmarks of
//! `ControllerStreamExt::debounce_keyed`, and a driver shared by the throughput and memory
//! benchmarks. All are trailing debounces with a fixed window, keep-latest values.

#![allow(dead_code)] // each bench binary uses part of this module

use std::{
    collections::{HashMap, hash_map::Entry},
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use futures::{
    Stream, StreamExt,
    stream::{self, BoxStream, Fuse},
};
use kube::runtime::scheduler::{ScheduleRequest, debounced_scheduler};
use kube_sentinel::stream::{ControllerStreamExt, DebounceConfig};
use pin_project::pin_project;
use tokio::{
    sync::mpsc,
    task::AbortHandle,
    time::{Instant, sleep},
};
use tokio_util::time::{DelayQueue, delay_queue};

/// Events per throughput iteration.
pub const EVENTS: u64 = 200_000;

/// The debounce window of every benchmark.
pub const WINDOW: Duration = Duration::from_secs(1);

/// The implementations compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Approach {
    /// `ControllerStreamExt::debounce_keyed` (this crate).
    DebounceKeyed,
    /// `tokio_util::time::DelayQueue` + `std::collections::HashMap`.
    DelayQueue,
    /// A `tokio::spawn`ed sleeping task per key, results on an mpsc channel.
    TaskPerKey,
    /// `kube::runtime::scheduler::debounced_scheduler` (keys only: it folds no value).
    KubeScheduler,
}

impl Approach {
    /// All, in report order.
    pub const ALL: [Approach; 4] = [
        Approach::DebounceKeyed,
        Approach::DelayQueue,
        Approach::TaskPerKey,
        Approach::KubeScheduler,
    ];

    /// Short name for reports.
    pub fn name(self) -> &'static str {
        match self {
            Approach::DebounceKeyed => "debounce_keyed",
            Approach::DelayQueue => "delayqueue_hashmap",
            Approach::TaskPerKey => "task_per_key",
            Approach::KubeScheduler => "kube_debounced_scheduler",
        }
    }

    /// Debounces `input` (key, value) events: one `(key, latest value)` per key per burst
    /// (the kube scheduler yields `(key, 0)`, having no value).
    pub fn debounce(self, input: BoxStream<'static, (u64, u64)>) -> BoxStream<'static, (u64, u64)> {
        match self {
            Approach::DebounceKeyed => input
                .debounce_keyed(
                    DebounceConfig::trailing(WINDOW),
                    |(key, _)| *key,
                    |_, (_, value)| value,
                )
                .map(|debounced| (debounced.key, debounced.value))
                .boxed(),
            Approach::DelayQueue => DelayQueueDebounce::new(input, WINDOW).boxed(),
            Approach::TaskPerKey => TaskPerKeyDebounce::new(input, WINDOW).boxed(),
            Approach::KubeScheduler => {
                // Every event is scheduled "now"; the scheduler debounces by WINDOW.
                // It ends with its input, so the input never ends here.
                let now = Instant::now();
                let requests = input
                    .map(move |(key, _)| ScheduleRequest {
                        message: key,
                        run_at: now,
                    })
                    .chain(stream::pending());
                debounced_scheduler(requests, WINDOW)
                    .map(|key| (key, 0))
                    .boxed()
            }
        }
    }
}

/// `events` events over `keys` distinct keys (round robin), all ready at once.
pub fn events(events: u64, keys: u64) -> BoxStream<'static, (u64, u64)> {
    stream::iter((0..events).map(move |i| (i % keys, i))).boxed()
}

/// A runtime whose clock is paused: timers fire as soon as the runtime is idle, so the
/// benchmarks measure CPU work, not sleeping.
pub fn paused_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("tokio runtime")
}

/// Feeds `n` events over `keys` keys, lets the window pass, drains all emissions; returns
/// how many were emitted.
pub async fn run(approach: Approach, n: u64, keys: u64) -> u64 {
    let emissions = keys.min(n);
    // `take`: the kube scheduler never ends (its input must stay open).
    approach
        .debounce(events(n, keys))
        .take(usize::try_from(emissions).expect("fits"))
        .count()
        .await as u64
}

/// The debounce a user would write with `tokio_util::time::DelayQueue` and a `HashMap`.
#[pin_project]
pub struct DelayQueueDebounce<S> {
    #[pin]
    input: Fuse<S>,
    window: Duration,
    pending: HashMap<u64, (u64, delay_queue::Key)>,
    queue: DelayQueue<u64>,
}

impl<S: Stream> DelayQueueDebounce<S> {
    fn new(input: S, window: Duration) -> Self {
        Self {
            input: input.fuse(),
            window,
            pending: HashMap::new(),
            queue: DelayQueue::new(),
        }
    }
}

impl<S: Stream<Item = (u64, u64)>> Stream for DelayQueueDebounce<S> {
    type Item = (u64, u64);

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let mut this = self.project();
        while let Poll::Ready(Some((key, value))) = this.input.as_mut().poll_next(cx) {
            match this.pending.entry(key) {
                Entry::Occupied(mut occupied) => {
                    let (latest, queue_key) = occupied.get_mut();
                    *latest = value;
                    this.queue.reset(queue_key, *this.window);
                }
                Entry::Vacant(vacant) => {
                    let queue_key = this.queue.insert(key, *this.window);
                    vacant.insert((value, queue_key));
                }
            }
        }
        match this.queue.poll_expired(cx) {
            Poll::Ready(Some(expired)) => {
                let key = expired.into_inner();
                let (value, _) = this.pending.remove(&key).expect("pending key");
                Poll::Ready(Some((key, value)))
            }
            // An empty DelayQueue is not the end of the input.
            Poll::Ready(None) if this.input.is_done() => Poll::Ready(None),
            Poll::Ready(None) | Poll::Pending => Poll::Pending,
        }
    }
}

/// The debounce a user would write with a task per key: every event aborts the key's
/// sleeping task and spawns a new one, which reports on a channel when its sleep ends.
#[pin_project]
pub struct TaskPerKeyDebounce<S> {
    #[pin]
    input: Fuse<S>,
    window: Duration,
    pending: HashMap<u64, (u64, u64, AbortHandle)>,
    generation: u64,
    fired_tx: mpsc::UnboundedSender<(u64, u64)>,
    fired_rx: mpsc::UnboundedReceiver<(u64, u64)>,
}

impl<S: Stream> TaskPerKeyDebounce<S> {
    fn new(input: S, window: Duration) -> Self {
        let (fired_tx, fired_rx) = mpsc::unbounded_channel();
        Self {
            input: input.fuse(),
            window,
            pending: HashMap::new(),
            generation: 0,
            fired_tx,
            fired_rx,
        }
    }
}

impl<S: Stream<Item = (u64, u64)>> Stream for TaskPerKeyDebounce<S> {
    type Item = (u64, u64);

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let mut this = self.project();
        while let Poll::Ready(Some((key, value))) = this.input.as_mut().poll_next(cx) {
            *this.generation += 1;
            let generation = *this.generation;
            let window = *this.window;
            let fired = this.fired_tx.clone();
            let task = tokio::spawn(async move {
                sleep(window).await;
                let _ = fired.send((key, generation));
            })
            .abort_handle();
            if let Some((_, _, previous)) = this.pending.insert(key, (value, generation, task)) {
                previous.abort();
            }
        }
        loop {
            match this.fired_rx.poll_recv(cx) {
                Poll::Ready(Some((key, generation))) => match this.pending.entry(key) {
                    // A task aborted too late to stop its report is ignored.
                    Entry::Occupied(occupied) if occupied.get().1 == generation => {
                        let (value, _, _) = occupied.remove();
                        return Poll::Ready(Some((key, value)));
                    }
                    _ => continue,
                },
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Pending if this.input.is_done() && this.pending.is_empty() => {
                    return Poll::Ready(None);
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}
