//! The Event conventions both programs follow: who reports, and a note the API server accepts.
//!
//! `events.k8s.io/v1` asks for a `reportingController` of the form `domain/name` and refuses
//! a `note` over 1 KiB (the whole Event is lost, not cut). Failures are `Warning` Events; that
//! is the caller's `EventType`.

use kube::runtime::events::Reporter;

/// `reportingController` of the sentinel's Events.
pub const SENTINEL_REPORTING_CONTROLLER: &str = "kube-sentinel.dev/sentinel";
/// `reportingController` of the operator's Events.
pub const OPERATOR_REPORTING_CONTROLLER: &str = "kube-sentinel.dev/operator";
/// Longest note the API server accepts, in bytes.
pub const MAX_NOTE_BYTES: usize = 1024;
/// Appended to a note that was cut.
const CUT_MARK: char = '…';

/// The reporter of `controller`'s Events from instance `instance` (the pod name).
pub fn reporter(controller: &str, instance: Option<String>) -> Reporter {
    Reporter {
        controller: controller.into(),
        instance,
    }
}

/// `note` as the API server accepts it: at most [`MAX_NOTE_BYTES`], cut on a character
/// boundary and marked with `…` when it was longer.
///
/// ```
/// use kube_sentinel::events::{MAX_NOTE_BYTES, note};
///
/// assert_eq!(note("short".into()), "short");
/// let cut = note("é".repeat(1000));
/// assert!(cut.len() <= MAX_NOTE_BYTES && cut.ends_with('…'));
/// ```
pub fn note(mut text: String) -> String {
    if text.len() <= MAX_NOTE_BYTES {
        return text;
    }
    let mut cut = MAX_NOTE_BYTES - CUT_MARK.len_utf8();
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    text.truncate(cut);
    text.push(CUT_MARK);
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_note_is_cut_on_a_char_boundary_within_1_kib() {
        assert_eq!(note("a".repeat(MAX_NOTE_BYTES)), "a".repeat(MAX_NOTE_BYTES));
        for filler in ["a", "é", "€", "🦀"] {
            let cut = note(filler.repeat(2000));
            assert!(cut.len() <= MAX_NOTE_BYTES, "{filler}: {}", cut.len());
            assert!(
                cut.len() > MAX_NOTE_BYTES - 3 - 4,
                "{filler}: {}",
                cut.len()
            );
            assert!(cut.ends_with(CUT_MARK));
            assert!(
                cut.trim_end_matches(CUT_MARK)
                    .chars()
                    .all(|c| c.to_string() == filler)
            );
        }
    }
}
