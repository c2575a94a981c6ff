//! [`ControllerStreamExt`]: the fluent entry points of the combinators.

use std::{future::Future, hash::Hash};

use futures::Stream;

use super::{
    Claim, ConfigTiming, DebounceConfig, DebounceKeyed, Next, Timing, TwoLaneQueue, TwoLaneRunner,
    run_two_lanes,
};
#[cfg(doc)]
use super::{Debounced, debounce, lanes, runner};

/// Fluent entry points for the combinators of [`stream`](crate::stream).
pub trait ControllerStreamExt: Stream {
    /// Works on the keys of this stream (the fast lane) and of `normal` (the normal lane)
    /// through `queue`, with at most `max_concurrent` `work` futures at once, and yields
    /// `(key, lane, result)` per finished work. The same as the free function
    /// [`run_two_lanes`]`(self, normal, queue, max_concurrent, work)`; see [`runner`] for the
    /// rules and [`lanes`] for the queue's.
    ///
    /// ```
    /// use futures::{StreamExt, stream};
    /// use kube_sentinel::stream::{ControllerStreamExt, Lane, LanesConfig, Next, TwoLaneQueue};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let triggers = stream::iter(["web"]);
    /// let resyncs = stream::iter(["db", "cache"]);
    /// let results: Vec<_> = triggers
    ///     .run_two_lanes(resyncs, TwoLaneQueue::new(LanesConfig::default()), 2, |claim| async move {
    ///         Ok::<_, String>(if claim.lane == Lane::Fast { Next::Requeue(Lane::Normal) } else { Next::Done })
    ///     })
    ///     .map(|(key, lane, _)| (key, lane))
    ///     .collect()
    ///     .await;
    /// assert_eq!(results[0], ("web", Lane::Fast));
    /// assert_eq!(results.len(), 4); // web (fast), db, cache, web (normal)
    /// # }
    /// ```
    fn run_two_lanes<K, No, W, Fut, E>(
        self,
        normal: No,
        queue: TwoLaneQueue<K>,
        max_concurrent: usize,
        work: W,
    ) -> TwoLaneRunner<K, Self, No, W, Fut>
    where
        Self: Stream<Item = K> + Sized,
        K: Clone + Hash + Eq,
        No: Stream<Item = K>,
        W: FnMut(Claim<K>) -> Fut,
        Fut: Future<Output = Result<Next, E>>,
    {
        run_two_lanes(self, normal, queue, max_concurrent, work)
    }

    /// Debounces items per key: one [`Debounced`] emission per key per burst, carrying the
    /// `fold` of the burst's items, when its first item arrived and how many it absorbed.
    ///
    /// `key` names the key of an item; `fold(acc, item)` folds an item into the burst's value
    /// (`acc` is `None` for the first item of an emission). The timing rules (trailing or
    /// leading+trailing, window, max-wait, jitter, end of input) are in [`DebounceConfig`] and
    /// the [`debounce`] module documentation. All open bursts share one timer.
    ///
    /// ## Warning
    /// Without [`max_wait`](DebounceConfig::max_wait), a key whose items keep arriving faster
    /// than the window is never emitted in trailing mode. Set a max-wait when the input can be
    /// continuous.
    ///
    /// ```
    /// use futures::{StreamExt, stream};
    /// use kube_sentinel::stream::{ControllerStreamExt, DebounceConfig};
    /// use std::time::Duration;
    /// use tokio::time::{Instant, sleep};
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// let start = Instant::now();
    /// // (object, generation) events, one every 500 ms: "web" changes three times, "db" once.
    /// let events = stream::iter([("web", 1), ("db", 7), ("web", 2), ("web", 3)])
    ///     .then(|event| async move {
    ///         sleep(Duration::from_millis(500)).await;
    ///         event
    ///     });
    /// let config = DebounceConfig::trailing(Duration::from_secs(2)).max_wait(Duration::from_secs(10));
    /// let emitted: Vec<_> = events
    ///     .debounce_keyed(config, |(name, _)| *name, |_latest, (_, generation)| generation)
    ///     .map(|d| (d.key, d.value, d.absorbed, d.first_seen - start, Instant::now() - start))
    ///     .collect()
    ///     .await;
    /// let s = Duration::from_millis;
    /// assert_eq!(emitted, [
    ///     // "db" was quiet for 2 s after its only event at 1 s.
    ///     ("db", 7, 1, s(1000), s(3000)),
    ///     // "web": events at 0.5, 1.5 and 2 s, emitted 2 s after the last with the latest value.
    ///     ("web", 3, 3, s(500), s(4000)),
    /// ]);
    /// # }
    /// ```
    fn debounce_keyed<K, A, KF, F>(
        self,
        config: DebounceConfig,
        key: KF,
        fold: F,
    ) -> DebounceKeyed<Self, K, A, KF, ConfigTiming<Self::Item>, F>
    where
        Self: Sized,
        K: Hash + Eq + Clone,
        KF: FnMut(&Self::Item) -> K,
        F: FnMut(Option<A>, Self::Item) -> A,
    {
        fn config_timing<I>(_: &I) -> Option<Timing> {
            None
        }
        DebounceKeyed::new(self, config, key, config_timing::<Self::Item>, fold)
    }

    /// [`debounce_keyed`](Self::debounce_keyed) with per-key timing: `timing(item)` is called
    /// on the item that opens a burst and gives that burst's [`Timing`] (`None`:
    /// `config.timing`). Later items of the same burst do not change it.
    ///
    /// ```
    /// use futures::{StreamExt, stream};
    /// use kube_sentinel::stream::{ControllerStreamExt, DebounceConfig, Timing};
    /// use std::time::Duration;
    /// use tokio::time::Instant;
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// let start = Instant::now();
    /// // Secrets are debounced for 100 ms with a leading emission; everything else for 2 s.
    /// let events = stream::iter(["configmap/a", "secret/tls", "secret/tls", "configmap/a"]);
    /// let emitted: Vec<_> = events
    ///     .debounce_keyed_with(
    ///         DebounceConfig::trailing(Duration::from_secs(2)),
    ///         |name| *name,
    ///         |name| {
    ///             name.starts_with("secret/")
    ///                 .then(|| Timing::leading_trailing(Duration::from_millis(100)))
    ///         },
    ///         |count, _| count.unwrap_or(0) + 1,
    ///     )
    ///     .map(|d| (d.key, d.value, d.leading, Instant::now() - start))
    ///     .collect()
    ///     .await;
    /// assert_eq!(emitted, [
    ///     ("secret/tls", 1, true, Duration::ZERO),
    ///     ("secret/tls", 1, false, Duration::from_millis(100)),
    ///     ("configmap/a", 2, false, Duration::from_secs(2)),
    /// ]);
    /// # }
    /// ```
    fn debounce_keyed_with<K, A, KF, TF, F>(
        self,
        config: DebounceConfig,
        key: KF,
        timing: TF,
        fold: F,
    ) -> DebounceKeyed<Self, K, A, KF, TF, F>
    where
        Self: Sized,
        K: Hash + Eq + Clone,
        KF: FnMut(&Self::Item) -> K,
        TF: FnMut(&Self::Item) -> Option<Timing>,
        F: FnMut(Option<A>, Self::Item) -> A,
    {
        DebounceKeyed::new(self, config, key, timing, fold)
    }
}

impl<S: Stream + ?Sized> ControllerStreamExt for S {}
