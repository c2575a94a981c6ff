//! The debounce's vocabulary: its configuration, per-burst timing, and what it emits.

use std::time::Duration;

use tokio::time::Instant;

/// When a burst is emitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DebounceMode {
    /// Emit once the key has been quiet for the window (or at `max_wait`).
    #[default]
    Trailing,
    /// Emit the first item of a quiet key at once, then at most one trailing emission for the
    /// items that arrive while its burst is open.
    LeadingTrailing,
}

/// The timing rules of a burst: window, max-wait cap and mode.
///
/// Durations are rounded up to whole milliseconds (the resolution of tokio's timer) and
/// capped at about 49 days.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// Quiet time after the last item of a burst before the burst is emitted.
    pub window: Duration,
    /// The latest a burst is emitted after its first item, even under continuous items.
    /// `None`: no cap (a key that never goes quiet is never emitted; see the warning on
    /// [`ControllerStreamExt::debounce_keyed`](crate::stream::ControllerStreamExt::debounce_keyed)).
    pub max_wait: Option<Duration>,
    /// Trailing only, or leading and trailing.
    pub mode: DebounceMode,
}

impl Timing {
    /// Trailing emission after `window` of quiet, no max-wait cap.
    pub fn trailing(window: Duration) -> Self {
        Self {
            window,
            max_wait: None,
            mode: DebounceMode::Trailing,
        }
    }

    /// Leading emission for a quiet key, then a trailing one after `window` of quiet.
    pub fn leading_trailing(window: Duration) -> Self {
        Self {
            window,
            max_wait: None,
            mode: DebounceMode::LeadingTrailing,
        }
    }

    /// Caps a burst at `max_wait` after its first item.
    pub fn max_wait(self, max_wait: Duration) -> Self {
        Self {
            max_wait: Some(max_wait),
            ..self
        }
    }
}

/// What happens to open bursts when the input stream ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnInputEnd {
    /// Each open burst is emitted at its deadline, as if the input had merely gone quiet.
    #[default]
    AtDeadline,
    /// All open bursts are emitted at once, earliest deadline first.
    Immediately,
}

/// Configuration of [`ControllerStreamExt::debounce_keyed`](crate::stream::ControllerStreamExt::debounce_keyed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DebounceConfig {
    /// Timing of every key, unless overridden per key by
    /// [`debounce_keyed_with`](crate::stream::ControllerStreamExt::debounce_keyed_with).
    pub timing: Timing,
    /// Upper bound (exclusive) of the per-key jitter added to the quiet deadline; zero for
    /// none. Clamped below one second; the jitter is a whole number of milliseconds.
    pub max_jitter: Duration,
    /// What happens to open bursts when the input ends.
    pub on_input_end: OnInputEnd,
}

impl DebounceConfig {
    /// Trailing debounce with `window`, no max-wait, no jitter, emitting at deadlines after
    /// the input ends.
    pub fn trailing(window: Duration) -> Self {
        Self {
            timing: Timing::trailing(window),
            max_jitter: Duration::ZERO,
            on_input_end: OnInputEnd::AtDeadline,
        }
    }

    /// Leading and trailing debounce with `window`, no max-wait, no jitter.
    pub fn leading_trailing(window: Duration) -> Self {
        Self {
            timing: Timing::leading_trailing(window),
            ..Self::trailing(window)
        }
    }

    /// Caps every burst at `max_wait` after its first item.
    pub fn max_wait(self, max_wait: Duration) -> Self {
        Self {
            timing: self.timing.max_wait(max_wait),
            ..self
        }
    }

    /// Adds a deterministic per-key jitter in `[0, max)` (whole milliseconds, `max` clamped
    /// below one second) to each key's quiet deadline.
    pub fn jitter(self, max: Duration) -> Self {
        Self {
            max_jitter: max,
            ..self
        }
    }

    /// Sets what happens to open bursts when the input ends.
    pub fn on_input_end(self, on_input_end: OnInputEnd) -> Self {
        Self {
            on_input_end,
            ..self
        }
    }
}

/// One emission: the folded value of (part of) a burst of one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Debounced<K, A> {
    /// The key.
    pub key: K,
    /// The fold of the items this emission absorbed.
    pub value: A,
    /// When the burst's first item arrived. For the trailing emission of a leading+trailing
    /// burst that is the item already emitted as the leading one, so the time from
    /// `first_seen` to the emission is always the latency of the burst.
    pub first_seen: Instant,
    /// How many items `value` folds (at least one).
    pub absorbed: u64,
    /// `true` for the immediate emission of a quiet key in
    /// [`DebounceMode::LeadingTrailing`] (then `absorbed` is 1).
    pub leading: bool,
}

/// The timing function of
/// [`ControllerStreamExt::debounce_keyed`](crate::stream::ControllerStreamExt::debounce_keyed):
/// every burst takes `config.timing`.
pub type ConfigTiming<I> = fn(&I) -> Option<Timing>;
