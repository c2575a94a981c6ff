//! The refusal policy: why drift on an owner's objects is not triggered.
//!
//! Why drift on an owner's objects is not triggered: the one refusal policy, used by the
//! detector and by the gate before the trigger sink.

use super::owner_state::OwnerState;

/// Why the sentinel will not trigger an owner, in the order the checks are made.
///
/// The detector checks when an event arrives and the gate again when the debounce window
/// closes (the owner may have been paused or deleted meanwhile); both count the refusal under
/// [`Refusal::as_str`] (`events_ignored` and `triggers_dropped`).
///
/// ```
/// use kube_sentinel::sentinel::{owner_state::OwnerState, refusal::Refusal};
///
/// assert_eq!(Refusal::check(None).map(drop), Err(Refusal::OwnerNotFound));
/// let paused = OwnerState { paused: true, ..Default::default() };
/// assert_eq!(Refusal::check(Some(&paused)).map(drop), Err(Refusal::OwnerPaused));
/// assert!(Refusal::check(Some(&OwnerState::default())).is_ok());
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Refusal {
    /// The owner does not exist (as far as the cache knows).
    OwnerNotFound,
    /// The owner is being deleted: its objects go with it, that is not drift.
    OwnerDeleting,
    /// `spec.paused`: people are working by hand.
    OwnerPaused,
    /// `spec.sentinel.enabled` is false.
    SentinelDisabled,
}

impl Refusal {
    /// Every refusal.
    pub const ALL: [Refusal; 4] = [
        Self::OwnerNotFound,
        Self::OwnerDeleting,
        Self::OwnerPaused,
        Self::SentinelDisabled,
    ];

    /// The owner's state if the sentinel may trigger it, else why not.
    pub fn check(state: Option<&OwnerState>) -> Result<&OwnerState, Refusal> {
        let state = state.ok_or(Self::OwnerNotFound)?;
        if state.deleting {
            Err(Self::OwnerDeleting)
        } else if state.paused {
            Err(Self::OwnerPaused)
        } else if !state.sentinel.is_enabled() {
            Err(Self::SentinelDisabled)
        } else {
            Ok(state)
        }
    }

    /// The label of logs and metrics (`reason`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::OwnerNotFound => "owner_not_found",
            Self::OwnerDeleting => "owner_deleting",
            Self::OwnerPaused => "owner_paused",
            Self::SentinelDisabled => "sentinel_disabled",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::SentinelSpec;

    #[test]
    fn deletion_outranks_pause_and_pause_outranks_disabled() {
        let state = |deleting, paused, enabled| OwnerState {
            deleting,
            paused,
            sentinel: SentinelSpec {
                enabled: Some(enabled),
                ..Default::default()
            },
            ..Default::default()
        };
        let verdict = |s: &OwnerState| Refusal::check(Some(s)).map(drop);
        assert_eq!(
            verdict(&state(true, true, false)),
            Err(Refusal::OwnerDeleting)
        );
        assert_eq!(
            verdict(&state(false, true, false)),
            Err(Refusal::OwnerPaused)
        );
        assert_eq!(
            verdict(&state(false, false, false)),
            Err(Refusal::SentinelDisabled)
        );
        assert_eq!(verdict(&state(false, false, true)), Ok(()));
        assert_eq!(Refusal::check(None).map(drop), Err(Refusal::OwnerNotFound));
    }

    #[test]
    fn labels_are_the_metric_reasons() {
        let labels = [
            Refusal::OwnerNotFound,
            Refusal::OwnerDeleting,
            Refusal::OwnerPaused,
            Refusal::SentinelDisabled,
        ]
        .map(Refusal::as_str);
        assert_eq!(
            labels,
            [
                "owner_not_found",
                "owner_deleting",
                "owner_paused",
                "sentinel_disabled"
            ]
        );
    }
}
