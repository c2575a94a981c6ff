//! A trigger whose ID is not a UUID: the sentinel never writes one, so someone else did (an
//! admin bypassing the sentinel's admission policy, or a bug). It is not acted on.

use kube::runtime::events::EventType;

use super::{Context, Error, Requeue, fast::Acknowledgement};
use crate::operator::{crd::Outcome, crd::StatefulCluster, managers::Names};

/// Characters of an invalid ID shown in the Event and the log (it may be kilobytes long).
const SHOWN: usize = 64;

impl Context {
    /// Acknowledges `trigger_id` as `failed` without a revert (so it is not pending for ever),
    /// with a Warning Event; the full reconcile that follows still corrects any drift. The ID is
    /// shown escaped and cut: it may hold newlines or quotes meant to forge a log line.
    pub(super) async fn refuse_invalid_trigger(
        &self,
        cr: &StatefulCluster,
        names: &Names,
        trigger_id: &str,
    ) -> Result<Requeue, Error> {
        let ack = Acknowledgement {
            outcome: Outcome::Failed,
            reverted: &[],
            certificate: None,
            stages: None,
        };
        self.acknowledge(cr, names, trigger_id, ack).await?;
        self.metrics.invalid_triggers.inc();
        let shown: String = trigger_id.chars().take(SHOWN).collect();
        self.event(
            cr,
            EventType::Warning,
            "InvalidTrigger",
            "Acknowledge",
            format!("trigger ID {shown:?} is not a lowercase hyphenated UUID: refused, not acted on (the full reconcile still runs)"),
        )
        .await;
        tracing::warn!(resource = %names.name, trigger = ?shown, "trigger ID is not a lowercase hyphenated UUID: refused, not acted on");
        Ok(Requeue::Now)
    }
}
