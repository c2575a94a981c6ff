//! The feeder: watch events and resyncs turned into keys on the two lanes.
//!
//! The feeder: StatefulCluster watch events, resyncs and the side watches turned into keys on
//! the work queue's two lanes. A standby feeds nothing: it keeps what it saw, and queues every
//! resource once it leads ([`Feeder::lead`]).

use std::collections::{HashMap, HashSet};

use futures::channel::mpsc;
use kube::runtime::watcher;

use crate::{
    operator::crd::StatefulCluster,
    telemetry,
    watch::{NamespacedName, relist::Relist},
};

/// Turns watch events into queue keys: a pending trigger on the fast lane, a new generation
/// or the initial list on the normal lane, every known resource again at each resync; nothing
/// until this instance leads.
#[derive(Debug)]
pub struct Feeder {
    generations: HashMap<NamespacedName, Option<i64>>,
    /// Resources whose last event showed a pending trigger.
    triggered: HashSet<NamespacedName>,
    /// The resources listed so far while the watch (re)lists.
    relist: Relist<NamespacedName>,
    leading: bool,
    fast: mpsc::UnboundedSender<NamespacedName>,
    normal: mpsc::UnboundedSender<NamespacedName>,
    single_lane: bool,
}

/// The receiving ends of a [`Feeder`]'s lanes, for the work queue's runner.
pub struct Lanes {
    /// Keys for the fast lane.
    pub fast: mpsc::UnboundedReceiver<NamespacedName>,
    /// Keys for the normal lane.
    pub normal: mpsc::UnboundedReceiver<NamespacedName>,
}

impl Feeder {
    /// A feeder and the lanes it feeds; the lanes end when the feeder is dropped.
    pub fn new() -> (Self, Lanes) {
        let (fast, fast_rx) = mpsc::unbounded();
        let (normal, normal_rx) = mpsc::unbounded();
        let feeder = Self {
            generations: HashMap::new(),
            triggered: HashSet::new(),
            relist: Relist::default(),
            leading: false,
            fast,
            normal,
            single_lane: false,
        };
        (
            feeder,
            Lanes {
                fast: fast_rx,
                normal: normal_rx,
            },
        )
    }

    /// The fast lane switched off: what would go on it joins the normal lane in arrival order,
    /// behind every full reconcile queued before it (a baseline for measuring the fast lane).
    pub fn single_lane(mut self) -> Self {
        self.single_lane = true;
        self
    }

    fn send_fast(&self, key: NamespacedName) {
        let lane = if self.single_lane {
            &self.normal
        } else {
            &self.fast
        };
        let _ = lane.unbounded_send(key);
    }

    fn on_object(&mut self, cr: &StatefulCluster, initial: bool) {
        let Some(key) = NamespacedName::of(cr) else {
            return;
        };
        let generation = cr.metadata.generation;
        let changed = self.generations.insert(key.clone(), generation) != Some(generation);
        if cr.pending_trigger().is_some() {
            self.triggered.insert(key.clone());
        } else {
            self.triggered.remove(&key);
        }
        if !self.leading {
            return;
        }
        if cr.pending_trigger().is_some() {
            tracing::debug!(resource = %key, trigger = ?cr.pending_trigger(), "trigger: fast lane");
            self.send_fast(key);
        } else if initial || changed {
            let _ = self.normal.unbounded_send(key);
        }
    }

    /// Queues what a StatefulCluster watch event asks for; opens `synced` after the first list.
    pub fn on_event(&mut self, event: watcher::Event<StatefulCluster>, synced: &telemetry::Gate) {
        match event {
            watcher::Event::Init => self.relist.start(),
            watcher::Event::InitApply(cr) => {
                if let Some(key) = NamespacedName::of(&cr) {
                    self.relist.saw(key);
                }
                self.on_object(&cr, true);
            }
            watcher::Event::InitDone => {
                self.forget_unlisted();
                synced.set(true);
            }
            watcher::Event::Apply(cr) => self.on_object(&cr, false),
            watcher::Event::Delete(cr) => {
                if let Some(key) = NamespacedName::of(&cr) {
                    self.forget(&key);
                }
            }
        }
    }

    /// After a relist: resources known before and missing from it were deleted while the
    /// watch was down (no `Delete` came); forgotten, so no resync queues them.
    fn forget_unlisted(&mut self) {
        let Some(listed) = self.relist.done() else {
            return;
        };
        for key in listed.missing(self.generations.keys()) {
            tracing::debug!(resource = %key, "deleted while the watch was down");
            self.forget(&key);
        }
    }

    fn forget(&mut self, key: &NamespacedName) {
        self.generations.remove(key);
        self.triggered.remove(key);
    }

    /// From now on this instance leads: every known resource is queued as after the initial
    /// list (a pending trigger on the fast lane, the others on the normal lane), and events are
    /// fed as they come. The full reconciles also cover what a standby ignored (its Secret and
    /// owned-object hints).
    pub fn lead(&mut self) {
        self.leading = true;
        for key in self.generations.keys() {
            if self.triggered.contains(key) {
                self.send_fast(key.clone());
            } else {
                let _ = self.normal.unbounded_send(key.clone());
            }
        }
    }

    /// Puts every known resource on the normal lane (nothing on a standby).
    pub fn resync(&self) {
        if !self.leading {
            return;
        }
        tracing::info!(
            resources = self.generations.len(),
            "resync: every resource on the normal lane"
        );
        for key in self.generations.keys() {
            let _ = self.normal.unbounded_send(key.clone());
        }
    }

    /// Puts `key` on the fast lane (a foreign change to its Secrets), if leading.
    pub fn push_fast(&self, key: NamespacedName) {
        if self.leading {
            self.send_fast(key);
        }
    }

    /// Puts `key` on the normal lane (one of its objects changed), if leading.
    pub fn push_normal(&self, key: NamespacedName) {
        if self.leading {
            let _ = self.normal.unbounded_send(key);
        }
    }
}

#[cfg(test)]
impl Feeder {
    /// How many resources the feeder remembers.
    fn known(&self) -> usize {
        self.generations.len().max(self.triggered.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::operator::crd::{SentinelStatus, StatefulClusterStatus};
    use crate::telemetry::Health;

    fn cr(
        name: &str,
        generation: i64,
        trigger: Option<&str>,
        handled: Option<&str>,
    ) -> StatefulCluster {
        let spec = serde_json::from_value(serde_json::json!({
            "replicas": 1, "image": "db", "version": "1", "ports": [{"name": "c", "port": 1}]
        }))
        .expect("spec");
        let mut cr = StatefulCluster::new(name, spec);
        cr.metadata.namespace = Some("ns".into());
        cr.metadata.generation = Some(generation);
        let mut sentinel = SentinelStatus::default();
        sentinel.trigger.trigger_id = trigger.map(Into::into);
        sentinel.last_handled_trigger_id = handled.map(Into::into);
        cr.status = Some(StatefulClusterStatus {
            sentinel: Some(sentinel),
            ..Default::default()
        });
        cr
    }

    fn drain(rx: &mut mpsc::UnboundedReceiver<NamespacedName>) -> Vec<String> {
        let mut out = Vec::new();
        while let Ok(key) = rx.try_recv() {
            out.push(key.name);
        }
        out
    }

    #[test]
    fn pending_triggers_go_fast_new_generations_and_the_initial_list_go_normal() {
        let (mut feeder, lanes) = Feeder::new();
        feeder.lead();
        let (mut fast_rx, mut normal_rx) = (lanes.fast, lanes.normal);
        let health = Health::new();
        let synced = health.gate("watch-synced");
        feeder.on_event(watcher::Event::Init, &synced);
        feeder.on_event(
            watcher::Event::InitApply(cr("quiet", 1, Some("t1"), Some("t1"))),
            &synced,
        );
        feeder.on_event(
            watcher::Event::InitApply(cr("pending", 1, Some("t2"), Some("t1"))),
            &synced,
        );
        assert!(!synced.is_open());
        feeder.on_event(watcher::Event::InitDone, &synced);
        assert!(synced.is_open());
        assert_eq!(drain(&mut fast_rx), vec!["pending"]);
        assert_eq!(drain(&mut normal_rx), vec!["quiet"]);

        // A status-only change (the operator's own acknowledgement) queues nothing.
        feeder.on_event(
            watcher::Event::Apply(cr("pending", 1, Some("t2"), Some("t2"))),
            &synced,
        );
        assert!(drain(&mut fast_rx).is_empty() && drain(&mut normal_rx).is_empty());
        // A spec change goes on the normal lane, a new trigger on the fast lane.
        feeder.on_event(
            watcher::Event::Apply(cr("quiet", 2, Some("t1"), Some("t1"))),
            &synced,
        );
        feeder.on_event(
            watcher::Event::Apply(cr("pending", 1, Some("t3"), Some("t2"))),
            &synced,
        );
        assert_eq!(drain(&mut normal_rx), vec!["quiet"]);
        assert_eq!(drain(&mut fast_rx), vec!["pending"]);

        feeder.on_event(watcher::Event::Delete(cr("quiet", 2, None, None)), &synced);
        feeder.resync();
        assert_eq!(drain(&mut normal_rx), vec!["pending"]);
    }

    #[test]
    fn a_standby_feeds_nothing_and_queues_what_it_saw_once_it_leads() {
        let (mut feeder, lanes) = Feeder::new();
        let (mut fast_rx, mut normal_rx) = (lanes.fast, lanes.normal);
        let health = Health::new();
        let synced = health.gate("watch-synced");
        feeder.on_event(watcher::Event::Init, &synced);
        feeder.on_event(
            watcher::Event::InitApply(cr("quiet", 1, Some("t1"), Some("t1"))),
            &synced,
        );
        feeder.on_event(
            watcher::Event::InitApply(cr("gone", 1, None, None)),
            &synced,
        );
        feeder.on_event(watcher::Event::InitDone, &synced);
        assert!(
            synced.is_open(),
            "a standby's watch is synced (and it is Ready)"
        );
        feeder.on_event(
            watcher::Event::Apply(cr("pending", 1, Some("t2"), Some("t1"))),
            &synced,
        );
        feeder.on_event(watcher::Event::Delete(cr("gone", 1, None, None)), &synced);
        feeder.resync();
        feeder.push_fast(NamespacedName::new("ns", "quiet"));
        feeder.push_normal(NamespacedName::new("ns", "quiet"));
        assert!(drain(&mut fast_rx).is_empty() && drain(&mut normal_rx).is_empty());

        feeder.lead();
        assert_eq!(drain(&mut fast_rx), vec!["pending"]);
        assert_eq!(drain(&mut normal_rx), vec!["quiet"]);
        feeder.on_event(
            watcher::Event::Apply(cr("quiet", 1, Some("t3"), Some("t1"))),
            &synced,
        );
        assert_eq!(drain(&mut fast_rx), vec!["quiet"]);
    }

    #[test]
    fn a_relist_forgets_resources_deleted_while_the_watch_was_down() {
        let (mut feeder, lanes) = Feeder::new();
        feeder.lead();
        let (mut fast_rx, mut normal_rx) = (lanes.fast, lanes.normal);
        let synced = Health::new().gate("watch-synced");
        let list = |feeder: &mut Feeder, crs: Vec<StatefulCluster>| {
            feeder.on_event(watcher::Event::Init, &synced);
            for cr in crs {
                feeder.on_event(watcher::Event::InitApply(cr), &synced);
            }
            feeder.on_event(watcher::Event::InitDone, &synced);
        };
        list(
            &mut feeder,
            vec![
                cr("kept", 1, None, None),
                cr("gone", 1, Some("t2"), Some("t1")),
            ],
        );
        drain(&mut fast_rx);
        drain(&mut normal_rx);
        // The watch expired (410 Gone) and `gone` was deleted meanwhile: no Delete event.
        list(&mut feeder, vec![cr("kept", 1, None, None)]);
        assert_eq!(drain(&mut normal_rx), vec!["kept"]);
        feeder.resync();
        feeder.lead();
        assert_eq!(drain(&mut normal_rx), vec!["kept", "kept"]);
        assert!(
            drain(&mut fast_rx).is_empty(),
            "no trigger of a deleted resource"
        );
        assert_eq!(feeder.known(), 1, "memory follows the resources that exist");
    }

    #[test]
    fn a_single_lane_feeder_puts_triggers_on_the_normal_lane_in_arrival_order() {
        let (feeder, lanes) = Feeder::new();
        let mut feeder = feeder.single_lane();
        feeder.lead();
        let (mut fast_rx, mut normal_rx) = (lanes.fast, lanes.normal);
        let synced = Health::new().gate("watch-synced");
        feeder.on_event(
            watcher::Event::InitApply(cr("spec-change", 1, None, None)),
            &synced,
        );
        feeder.on_event(
            watcher::Event::InitApply(cr("pending", 1, Some("t2"), Some("t1"))),
            &synced,
        );
        feeder.push_fast(NamespacedName::new("ns", "secret-edited"));
        assert!(drain(&mut fast_rx).is_empty(), "the fast lane is off");
        assert_eq!(
            drain(&mut normal_rx),
            vec!["spec-change", "pending", "secret-edited"]
        );
    }
}
