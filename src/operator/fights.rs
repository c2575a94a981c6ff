//! Fights: one foreign manager re-drifting one object right after each revert.
//!
//! A mutating webhook, a forgotten HPA or another controller can undo every revert at once;
//! reverting forever then costs API writes and hides the conflict. The operator keeps, per
//! object and per foreign manager, how many reverts in a row that manager undid within
//! `withinSeconds` ([`FightRules`], from `spec.sentinel.fightBackoff`). From the `reverts`-th
//! on, the next revert against that manager waits 2 s, then 3 times longer each time, at most
//! `maxDelaySeconds` (Argo CD's self-heal backoff, argoproj/argo-cd#20172, but per object and
//! per manager). A drift by any other manager, or of any other object, is reverted at once; a
//! re-drift later than `withinSeconds` after the last revert starts the count again.
//!
//! Who drifted an object is read from its `managedFields` ([`drifting_writers`]): the entries
//! of other managers written no earlier than the operator's own last write (whole seconds, so
//! a tie counts), except status entries, the API server's `before-first-apply` record, and
//! entries that own only ignored fields.

use std::{collections::HashMap, sync::Mutex, time::Duration};

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::{
    contract::{FightBackoffSpec, OPERATOR_FIELD_MANAGER},
    watch::{NamespacedName, actor::BEFORE_FIRST_APPLY, field_path::FieldPath},
};

/// The first delay once a fight is recognised.
const FIRST_DELAY: Duration = Duration::from_secs(2);
/// How much longer each next delay is.
const FACTOR: u32 = 3;

/// A resource's fight settings, defaults filled in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FightRules {
    /// Reverts in a row before backing off; 0 never backs off.
    pub reverts: u32,
    /// How soon after a revert a re-drift counts.
    pub within: Duration,
    /// The longest delay.
    pub max_delay: Duration,
}

impl FightRules {
    /// The rules of `spec.sentinel.fightBackoff`.
    pub fn of(spec: Option<&FightBackoffSpec>) -> Self {
        let spec = spec.copied().unwrap_or_default();
        let seconds = |s: u32| Duration::from_secs(u64::from(s));
        Self {
            reverts: spec.reverts.unwrap_or(FightBackoffSpec::DEFAULT_REVERTS),
            within: seconds(
                spec.within_seconds
                    .unwrap_or(FightBackoffSpec::DEFAULT_WITHIN_SECONDS)
                    .max(1),
            ),
            max_delay: seconds(
                spec.max_delay_seconds
                    .unwrap_or(FightBackoffSpec::DEFAULT_MAX_DELAY_SECONDS)
                    .max(2),
            ),
        }
    }

    /// The hold after a revert that was the `strikes`-th in a row: none before `reverts`,
    /// then 2 s × 3ⁿ, capped.
    pub fn delay(&self, strikes: u32) -> Option<Duration> {
        if self.reverts == 0 || strikes < self.reverts {
            return None;
        }
        let steps = (strikes - self.reverts).min(32);
        let delay = FACTOR
            .checked_pow(steps)
            .and_then(|f| FIRST_DELAY.checked_mul(f))
            .unwrap_or(self.max_delay);
        Some(delay.min(self.max_delay))
    }
}

/// A foreign manager's latest write of an object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Writer {
    /// Its field manager.
    pub manager: String,
    /// When it wrote (whole seconds, as `managedFields` keeps them).
    pub at: Option<Timestamp>,
}

/// Who drifted the object `meta` describes; see the [module documentation](self).
pub fn drifting_writers(meta: &ObjectMeta, ignore: &[FieldPath]) -> Vec<Writer> {
    let entries = meta.managed_fields.as_deref().unwrap_or_default();
    let ours = entries
        .iter()
        .filter(|e| e.manager.as_deref() == Some(OPERATOR_FIELD_MANAGER))
        .filter_map(|e| e.time.as_ref().map(|t| t.0))
        .max();
    let mut writers: Vec<Writer> = Vec::new();
    for entry in entries {
        let Some(manager) = entry.manager.as_deref() else {
            continue;
        };
        let at = entry.time.as_ref().map(|t| t.0);
        let foreign = manager != OPERATOR_FIELD_MANAGER
            && manager != BEFORE_FIRST_APPLY
            && entry.subresource.as_deref() != Some("status");
        let recent = match (at, ours) {
            (Some(at), Some(ours)) => at >= ours,
            _ => true,
        };
        let ignored = entry
            .fields_v1
            .as_ref()
            .is_some_and(|f| !ignore.is_empty() && FieldPath::all_cover_fields(ignore, &f.0));
        if !foreign || !recent || ignored {
            continue;
        }
        match writers.iter_mut().find(|w| w.manager == manager) {
            Some(w) => w.at = w.at.max(at),
            None => writers.push(Writer {
                manager: manager.to_string(),
                at,
            }),
        }
    }
    writers
}

/// One object of one resource.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct FoughtObject {
    /// The owning resource.
    pub resource: NamespacedName,
    /// The object's kind.
    pub kind: String,
    /// The object's name.
    pub name: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct FightKey {
    object: FoughtObject,
    manager: String,
}

#[derive(Clone, Copy, Debug)]
struct Fight {
    /// Reverts in a row that this manager undid within the window.
    strikes: u32,
    last_revert: Timestamp,
    /// No revert against this manager before then.
    hold_until: Option<Timestamp>,
    /// How long an entry stays relevant: the window after the hold.
    forget_after: Timestamp,
}

/// What to do with a drifted object now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Revert it.
    Revert,
    /// Leave it until `until`: every manager drifting it is in a fight.
    Hold {
        /// When the hold of the last of them ends.
        until: Timestamp,
    },
}

/// A fight recognised by a revert: the Event and the metric report it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FightStarted {
    /// The foreign manager.
    pub manager: String,
    /// Reverts in a row it undid.
    pub strikes: u32,
    /// The hold before the next revert.
    pub delay: Duration,
}

/// A fight in progress, for the `DriftFighting` condition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ActiveFight {
    /// Kind of the object.
    pub kind: String,
    /// Name of the object.
    pub name: String,
    /// The foreign manager.
    pub manager: String,
    /// Reverts in a row it undid.
    pub strikes: u32,
    /// When the current hold ends, if one is running.
    pub hold_until: Option<Timestamp>,
}

/// Every fight the operator is in; see the [module documentation](self).
#[derive(Debug, Default)]
pub struct Fights(Mutex<HashMap<FightKey, Fight>>);

impl Fights {
    /// Whether `object`, drifted by `writers`, may be reverted at `now`.
    pub fn decide(&self, object: &FoughtObject, writers: &[Writer], now: Timestamp) -> Decision {
        if writers.is_empty() {
            return Decision::Revert;
        }
        let fights = self.lock();
        let mut until: Option<Timestamp> = None;
        for writer in writers {
            let key = FightKey {
                object: object.clone(),
                manager: writer.manager.clone(),
            };
            match fights.get(&key).and_then(|f| f.hold_until) {
                Some(hold) if hold > now => until = Some(until.map_or(hold, |u| u.max(hold))),
                _ => return Decision::Revert,
            }
        }
        until.map_or(Decision::Revert, |until| Decision::Hold { until })
    }

    /// Records a revert of `object` at `now` against `writers`; returns the fights that this
    /// revert recognised (each reported once until it ends).
    pub fn reverted(
        &self,
        object: &FoughtObject,
        writers: &[Writer],
        rules: FightRules,
        now: Timestamp,
    ) -> Vec<FightStarted> {
        let mut fights = self.lock();
        fights.retain(|_, f| f.forget_after > now);
        let mut started = Vec::new();
        for writer in writers {
            let key = FightKey {
                object: object.clone(),
                manager: writer.manager.clone(),
            };
            let previous = fights.get(&key).copied();
            let redrift = previous.is_some_and(|f| redrifted(writer.at, f.last_revert, rules));
            let strikes = match previous {
                Some(f) if redrift => f.strikes.saturating_add(1),
                _ => 1,
            };
            let delay = rules.delay(strikes);
            let hold_until = delay.and_then(|d| now.checked_add(d).ok());
            let span = rules.within + delay.unwrap_or_default();
            let forget_after = now.checked_add(span).unwrap_or(now);
            if let Some(delay) = delay
                && strikes == rules.reverts
            {
                started.push(FightStarted {
                    manager: writer.manager.clone(),
                    strikes,
                    delay,
                });
            }
            let fight = Fight {
                strikes,
                last_revert: now,
                hold_until,
                forget_after,
            };
            fights.insert(key, fight);
        }
        started
    }

    /// The fights of `resource` still within their window at `now`, at or past the point of
    /// backing off.
    pub fn active(&self, resource: &NamespacedName, now: Timestamp) -> Vec<ActiveFight> {
        let mut active: Vec<ActiveFight> = self
            .lock()
            .iter()
            .filter(|(k, f)| {
                &k.object.resource == resource && f.forget_after > now && f.hold_until.is_some()
            })
            .map(|(k, f)| ActiveFight {
                kind: k.object.kind.clone(),
                name: k.object.name.clone(),
                manager: k.manager.clone(),
                strikes: f.strikes,
                hold_until: f.hold_until.filter(|h| *h > now),
            })
            .collect();
        active.sort_by(|a, b| (&a.kind, &a.name, &a.manager).cmp(&(&b.kind, &b.name, &b.manager)));
        active
    }

    /// Objects held back at `now`, over every resource (`kube_sentinel_operator_objects_held`).
    pub fn held(&self, now: Timestamp) -> usize {
        self.lock()
            .values()
            .filter(|f| f.hold_until.is_some_and(|h| h > now))
            .count()
    }

    /// Forgets every fight of `resource` (deleted, or gone from the cache).
    pub fn forget(&self, resource: &NamespacedName) {
        self.lock().retain(|k, _| &k.object.resource != resource);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<FightKey, Fight>> {
        // A poisoned map of fights is still a valid map of fights.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Whether a write at `at` (whole seconds) came after the revert at `reverted` and within the
/// window: a tie with the revert's second counts, as a drift lost costs more than a spurious
/// count.
fn redrifted(at: Option<Timestamp>, reverted: Timestamp, rules: FightRules) -> bool {
    let Some(at) = at else { return true };
    let reverted_second = Timestamp::from_second(reverted.as_second()).unwrap_or(reverted);
    let window = jiff::SignedDuration::try_from(rules.within).unwrap_or_default();
    at >= reverted_second && at.duration_since(reverted) <= window
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{FieldsV1, ManagedFieldsEntry, Time};
    use serde_json::json;

    use super::*;

    fn at(second: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + second).expect("time")
    }

    fn writer(manager: &str, second: i64) -> Writer {
        Writer {
            manager: manager.into(),
            at: Some(at(second)),
        }
    }

    fn object(name: &str) -> FoughtObject {
        FoughtObject {
            resource: NamespacedName::new("ns", "db"),
            kind: "StatefulSet".into(),
            name: name.into(),
        }
    }

    const RULES: FightRules = FightRules {
        reverts: 3,
        within: Duration::from_secs(30),
        max_delay: Duration::from_secs(300),
    };

    #[test]
    fn delays_grow_by_three_from_the_third_revert_and_stop_at_the_cap() {
        let delays: Vec<u64> = (1..=10)
            .map(|s| RULES.delay(s).map_or(0, |d| d.as_secs()))
            .collect();
        assert_eq!(delays, [0, 0, 2, 6, 18, 54, 162, 300, 300, 300]);
        let never = FightRules {
            reverts: 0,
            ..RULES
        };
        assert_eq!(never.delay(1000), None);
        assert_eq!(RULES.delay(u32::MAX), Some(Duration::from_secs(300)));
    }

    #[test]
    fn a_manager_that_keeps_redrifting_is_held_back_and_others_are_not() {
        let fights = Fights::default();
        let sts = object("db");
        let mut now = 0;
        let mut started = Vec::new();
        // The fighter re-drifts one second after each revert, which comes two seconds later.
        for _ in 0..3 {
            assert_eq!(
                fights.decide(&sts, &[writer("fighter", now + 1)], at(now + 2)),
                Decision::Revert
            );
            now += 2;
            started.extend(fights.reverted(&sts, &[writer("fighter", now - 1)], RULES, at(now)));
        }
        assert_eq!(started.len(), 1, "reported once: {started:?}");
        assert_eq!(
            (started[0].strikes, started[0].delay),
            (3, Duration::from_secs(2))
        );
        let held = fights.decide(&sts, &[writer("fighter", now + 1)], at(now + 1));
        assert_eq!(held, Decision::Hold { until: at(now + 2) });
        // Another manager on the same object, and the same manager on another object, are
        // reverted at once.
        let both = [writer("fighter", now + 1), writer("someone", now + 1)];
        assert_eq!(fights.decide(&sts, &both, at(now + 1)), Decision::Revert);
        assert_eq!(
            fights.decide(&object("other"), &[writer("fighter", now + 1)], at(now + 1)),
            Decision::Revert
        );
        assert_eq!(
            fights.decide(&sts, &[writer("fighter", now + 1)], at(now + 2)),
            Decision::Revert
        );
        fights.reverted(&sts, &[writer("fighter", now + 1)], RULES, at(now + 2));
        let active = fights.active(&NamespacedName::new("ns", "db"), at(now + 3));
        assert_eq!((active.len(), active[0].strikes), (1, 4));
        assert_eq!(
            active[0].hold_until,
            Some(at(now + 8)),
            "6 s after the fourth"
        );
        assert_eq!(fights.held(at(now + 3)), 1);
    }

    #[test]
    fn a_redrift_outside_the_window_starts_the_count_again() {
        let fights = Fights::default();
        let sts = object("db");
        for second in [0, 2, 4] {
            fights.reverted(&sts, &[writer("fighter", second)], RULES, at(second + 1));
        }
        assert!(matches!(
            fights.decide(&sts, &[writer("fighter", 5)], at(5)),
            Decision::Hold { .. }
        ));
        // The fight stopped: the next write comes long after the hold and the window.
        let late = writer("fighter", 100);
        assert_eq!(
            fights.decide(&sts, std::slice::from_ref(&late), at(100)),
            Decision::Revert
        );
        assert!(fights.reverted(&sts, &[late], RULES, at(101)).is_empty());
        assert!(
            fights
                .active(&NamespacedName::new("ns", "db"), at(102))
                .is_empty()
        );
        fights.forget(&NamespacedName::new("ns", "db"));
        assert_eq!(fights.held(at(102)), 0);
    }

    #[test]
    fn writers_are_foreign_entries_no_older_than_the_operators_last_write() {
        let entry = |manager: &str, second, sub: Option<&str>, fields| ManagedFieldsEntry {
            manager: Some(manager.into()),
            operation: Some("Update".into()),
            time: Some(Time(at(second))),
            subresource: sub.map(Into::into),
            fields_v1: Some(FieldsV1(fields)),
            ..Default::default()
        };
        let spec = json!({"f:spec": {"f:template": {}}});
        let replicas = json!({"f:spec": {"f:replicas": {}}});
        let meta = ObjectMeta {
            managed_fields: Some(vec![
                entry(OPERATOR_FIELD_MANAGER, 10, None, spec.clone()),
                entry("stale", 9, None, spec.clone()),
                entry("fighter", 10, None, spec.clone()),
                entry("kube-controller-manager", 12, Some("status"), spec.clone()),
                entry(BEFORE_FIRST_APPLY, 12, None, spec.clone()),
                entry("hpa", 12, Some("scale"), replicas),
            ]),
            ..Default::default()
        };
        let managers = |ignore: &[FieldPath]| -> Vec<String> {
            drifting_writers(&meta, ignore)
                .into_iter()
                .map(|w| w.manager)
                .collect()
        };
        assert_eq!(managers(&[]), ["fighter", "hpa"]);
        let replicas = FieldPath::parse("/spec/replicas").expect("path");
        assert_eq!(managers(&[replicas]), ["fighter"]);
    }
}
