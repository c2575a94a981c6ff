//! Acknowledgements: which owners' triggers the operator has just handled.
//!
//! In leading mode a burst's first drift is triggered at once and the window then holds any
//! later drift until its trailing edge. Once the operator has acknowledged that trigger
//! (`lastHandledTriggerID` = `triggerID`) and nothing else drifted meanwhile, there is nothing
//! left to hold: the owner is reported here, and the debounce lets its next drift lead at once
//! ([`DebounceKeyed::settle_on`](crate::stream::DebounceKeyed::settle_on)). A storm keeps its
//! trailing edge, since its burst has taken in more drift by then.

use std::collections::HashMap;

use futures::channel::mpsc;
use kube::{ResourceExt, api::DynamicObject, runtime::watcher};

use crate::watch::NamespacedName;

/// The trigger `obj` says its operator has handled: `status.sentinel.triggerID` when
/// `lastHandledTriggerID` equals it.
pub fn handled_trigger(obj: &DynamicObject) -> Option<&str> {
    let sentinel = obj.data.get("status")?.get("sentinel")?;
    let trigger = sentinel.get("triggerID")?.as_str()?;
    let handled = sentinel.get("lastHandledTriggerID")?.as_str()?;
    (!trigger.is_empty() && trigger == handled).then_some(trigger)
}

/// Follows the owners' watch events and sends each owner whose handled trigger changed.
pub struct Acknowledgements {
    /// The handled trigger last seen per owner.
    handled: HashMap<NamespacedName, String>,
    sender: mpsc::UnboundedSender<NamespacedName>,
}

impl Acknowledgements {
    /// Reports to `sender`.
    pub fn new(sender: mpsc::UnboundedSender<NamespacedName>) -> Self {
        Self {
            handled: HashMap::new(),
            sender,
        }
    }

    /// Takes in one watch event of the owners. A list (at start or after a gap) records what
    /// is handled without reporting it: no burst of this process waits for those.
    pub fn observe(&mut self, event: &watcher::Event<DynamicObject>) {
        match event {
            watcher::Event::Init => self.handled.clear(),
            watcher::Event::InitApply(obj) => {
                self.record(obj);
            }
            watcher::Event::Apply(obj) => {
                if let Some(owner) = self.record(obj) {
                    // The receiver is gone only when the sentinel is stopping.
                    let _ = self.sender.unbounded_send(owner);
                }
            }
            watcher::Event::Delete(obj) => {
                if let Some(owner) = key(obj) {
                    self.handled.remove(&owner);
                }
            }
            watcher::Event::InitDone => {}
        }
    }

    /// Records `obj`'s handled trigger; the owner if it is new.
    fn record(&mut self, obj: &DynamicObject) -> Option<NamespacedName> {
        let trigger = handled_trigger(obj)?;
        let owner = key(obj)?;
        if self.handled.get(&owner).is_some_and(|seen| seen == trigger) {
            return None;
        }
        self.handled.insert(owner.clone(), trigger.to_string());
        Some(owner)
    }
}

fn key(obj: &DynamicObject) -> Option<NamespacedName> {
    Some(NamespacedName::new(obj.namespace()?, obj.name_any()))
}

#[cfg(test)]
mod tests {
    use futures::StreamExt;
    use serde_json::json;

    use super::*;

    fn owner(trigger: &str, handled: &str) -> DynamicObject {
        serde_json::from_value(json!({
            "apiVersion": "kube-sentinel.dev/v1alpha1", "kind": "StatefulCluster",
            "metadata": {"name": "db", "namespace": "prod"},
            "status": {"sentinel": {"triggerID": trigger, "lastHandledTriggerID": handled}},
        }))
        .expect("an object")
    }

    #[test]
    fn each_new_acknowledgement_is_reported_once_and_a_list_reports_none() {
        let (sender, receiver) = mpsc::unbounded();
        let mut acks = Acknowledgements::new(sender);
        acks.observe(&watcher::Event::Init);
        acks.observe(&watcher::Event::InitApply(owner("t1", "t1")));
        acks.observe(&watcher::Event::InitDone);
        // Pending, handled, the same again (another status write), the next one handled.
        acks.observe(&watcher::Event::Apply(owner("t2", "t1")));
        acks.observe(&watcher::Event::Apply(owner("t2", "t2")));
        acks.observe(&watcher::Event::Apply(owner("t2", "t2")));
        acks.observe(&watcher::Event::Apply(owner("t3", "t3")));
        acks.observe(&watcher::Event::Delete(owner("t3", "t3")));
        assert!(acks.handled.is_empty(), "forgotten with the owner");
        drop(acks);
        let reported: Vec<_> = futures::executor::block_on(receiver.collect());
        assert_eq!(reported, vec![NamespacedName::new("prod", "db"); 2]);
    }

    #[test]
    fn a_handled_trigger_needs_both_ids_equal_and_not_empty() {
        assert_eq!(handled_trigger(&owner("t1", "t1")), Some("t1"));
        assert_eq!(handled_trigger(&owner("t2", "t1")), None);
        assert_eq!(handled_trigger(&owner("", "")), None);
        let bare: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "X", "metadata": {"name": "x", "namespace": "n"},
            "status": {"sentinel": {"triggerID": 7}},
        }))
        .expect("an object");
        assert_eq!(handled_trigger(&bare), None);
    }
}
