//! The sink's vocabulary: error classes, settings, and how each item ended.

use std::time::Duration;

#[cfg(doc)]
use super::RetrySink;

/// How the caller classifies an operation's error.
///
/// ```
/// use kube_sentinel::stream::Retry;
/// fn classify(status: &u16) -> Retry {
///     if *status == 409 || *status == 429 || *status >= 500 { Retry::Transient } else { Retry::Permanent }
/// }
/// assert_eq!(classify(&503), Retry::Transient);
/// assert_eq!(classify(&422), Retry::Permanent);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Retry {
    /// Worth retrying after a backoff (a timeout, a conflict, a 5xx).
    Transient,
    /// Retrying cannot help (a 4xx other than conflict): the item fails.
    Permanent,
}

/// Settings of a [`RetrySink`].
///
/// ```
/// use kube_sentinel::stream::RetryConfig;
/// use std::time::Duration;
/// let config = RetryConfig { max_concurrent: 16, ..RetryConfig::default() };
/// assert_eq!(config.max_attempts, Some(10));
/// assert_eq!(config.backoff_base, Duration::from_millis(100));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryConfig {
    /// Operations in flight at most (`0` is taken as `1`). Default 8.
    pub max_concurrent: usize,
    /// Delay before the first retry. Default 100 ms.
    pub backoff_base: Duration,
    /// Cap of the delay between retries. Default 30 s.
    pub backoff_max: Duration,
    /// Tries per item, the first included, before a transient error fails it; `None` retries
    /// forever. Default 10.
    pub max_attempts: Option<u32>,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            max_concurrent: 8,
            backoff_base: Duration::from_millis(100),
            backoff_max: Duration::from_secs(30),
            max_attempts: Some(10),
        }
    }
}

/// How an item was delivered in the end: sent, failed or superseded (see [`RetrySink`]'s
/// example).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Delivery<O, E> {
    /// The operation succeeded with this output.
    Sent(O),
    /// A permanent error, or a transient one after `max_attempts` tries.
    Failed(E),
    /// Replaced by a newer item of the same key, before running or after a failed try.
    Superseded,
}

/// The final result of one item, given to the [`RetrySink::on_outcome`] callback.
///
/// ```
/// use kube_sentinel::stream::{Delivery, RetryOutcome};
/// fn log(outcome: RetryOutcome<String, (), std::io::Error>) {
///     match outcome.delivery {
///         Delivery::Sent(()) => println!("{} patched after {} tries", outcome.key, outcome.attempts),
///         Delivery::Failed(error) => eprintln!("{}: {error}", outcome.key),
///         Delivery::Superseded => {}
///     }
/// }
/// log(RetryOutcome { key: "web".into(), attempts: 1, delivery: Delivery::Sent(()) });
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetryOutcome<K, O, E> {
    /// The item's key.
    pub key: K,
    /// Tries made for this item (0 if it was superseded before running).
    pub attempts: u32,
    /// How it ended.
    pub delivery: Delivery<O, E>,
}
