//! The exponential backoff of the work queue's failed claims and of the retry sink's retries.

use std::time::Duration;

/// `base * 2^(attempt - 1)`, capped at `max`, as controller-runtime's per-item rate limiter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ExponentialBackoff {
    /// The delay after the first failure.
    pub(crate) base: Duration,
    /// The cap.
    pub(crate) max: Duration,
}

impl ExponentialBackoff {
    /// The delay after the `attempt`-th consecutive failure (`0` counts as `1`); saturates
    /// rather than overflows.
    pub(crate) fn delay(self, attempt: u32) -> Duration {
        let factor = 1u32
            .checked_shl(attempt.saturating_sub(1))
            .unwrap_or(u32::MAX);
        self.base.saturating_mul(factor).min(self.max)
    }

    /// [`delay`](Self::delay) with "equal jitter": uniform in its upper half, so that clients
    /// failing together do not retry together.
    pub(crate) fn jittered_delay(self, attempt: u32) -> Duration {
        let full = self.delay(attempt);
        full / 2 + full.mul_f64(rand::random_range(0.0..=0.5))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_from_the_base_up_to_the_cap() {
        let backoff = ExponentialBackoff {
            base: Duration::from_millis(5),
            max: Duration::from_secs(1000),
        };
        let delays: Vec<_> = [0, 1, 2, 3, 10].map(|n| backoff.delay(n)).into();
        let ms = Duration::from_millis;
        assert_eq!(delays, [ms(5), ms(5), ms(10), ms(20), ms(2560)]);
        assert_eq!(backoff.delay(40), Duration::from_secs(1000), "capped");
        assert_eq!(
            backoff.delay(u32::MAX),
            Duration::from_secs(1000),
            "saturated"
        );
    }

    #[test]
    fn equal_jitter_stays_in_the_upper_half() {
        let backoff = ExponentialBackoff {
            base: Duration::from_secs(1),
            max: Duration::from_secs(30),
        };
        for attempt in 1..8 {
            let full = backoff.delay(attempt);
            let jittered = backoff.jittered_delay(attempt);
            assert!(
                (full / 2..=full).contains(&jittered),
                "{jittered:?} of {full:?}"
            );
        }
    }
}
