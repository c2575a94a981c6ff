//! Bytes the sentinel's detector keeps per watched object, counted by a counting global
//! allocator (`stats_alloc`): live heap bytes after the first list of 1,000, 10,000 and
//! 100,000 objects such as the operator writes (labels, a controller reference, one
//! server-side-apply managedFields entry), divided by the number of objects.
//!
//! This is the detector's own record (what it remembers to attribute the next change). The
//! scale scenario of `kube-sentinel bench` measures the whole process from outside; the
//! difference is the watch's buffers, the runtime and the allocator.
//!
//! Run: `cargo bench --bench sentinel_memory`.

use std::{alloc::System, collections::HashMap, time::Duration};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    FieldsV1, ManagedFieldsEntry, ObjectMeta, OwnerReference, Time,
};
use kube::runtime::watcher;
use kube_sentinel::{
    sentinel::{
        detect::{Detector, Input, TimingDefaults},
        metrics::SentinelMetrics,
        owner_state::OwnerState,
    },
    stream::DebounceMode,
    watch::{NamespacedName, OwnerKind, actor::ActorFilter},
};
use prometheus_client::registry::Registry;
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// Objects per owning custom resource (StatefulSet, two Services, ConfigMap, PDB...).
const OBJECTS_PER_OWNER: usize = 5;

/// A ConfigMap's metadata as the operator writes it: object `index` of owner `index / 5`.
fn operator_object(index: usize) -> ObjectMeta {
    let owner = format!("cluster-{:06}", index / OBJECTS_PER_OWNER);
    let fields = serde_json::json!({
        "f:metadata": {"f:labels": {
            "f:app.kubernetes.io/managed-by": {}, "f:app.kubernetes.io/instance": {}
        }, "f:ownerReferences": {"k:{\"uid\":\"0f6a\"}": {}}},
        "f:data": {"f:mode": {}, "f:settings.conf": {}}
    });
    ObjectMeta {
        name: Some(format!("{owner}-config-{index}")),
        namespace: Some("production".into()),
        uid: Some(format!("0f6a{index:032}")),
        resource_version: Some(format!("{}", 100_000 + index)),
        labels: Some(
            [
                ("app.kubernetes.io/managed-by", "kube-sentinel-operator"),
                ("app.kubernetes.io/instance", owner.as_str()),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ),
        owner_references: Some(vec![OwnerReference {
            api_version: "kube-sentinel.dev/v1alpha1".into(),
            kind: "StatefulCluster".into(),
            name: owner.clone(),
            uid: "0f6a".into(),
            controller: Some(true),
            block_owner_deletion: Some(true),
        }]),
        managed_fields: Some(vec![ManagedFieldsEntry {
            manager: Some("kube-sentinel-operator".into()),
            operation: Some("Apply".into()),
            api_version: Some("v1".into()),
            fields_type: Some("FieldsV1".into()),
            fields_v1: Some(FieldsV1(fields)),
            time: Some(Time(
                jiff::Timestamp::from_second(1_800_000_000).expect("a valid time"),
            )),
            subresource: None,
        }]),
        ..Default::default()
    }
}

/// Live heap bytes per object the detector keeps after a first list of `objects`.
fn bytes_per_object(objects: usize) -> f64 {
    let owners: HashMap<NamespacedName, OwnerState> = HashMap::new();
    let defaults = TimingDefaults {
        window: Duration::from_secs(2),
        max_wait: Duration::from_secs(10),
        mode: DebounceMode::Trailing,
    };
    let metrics = SentinelMetrics::register(&mut Registry::default());
    let filter = ActorFilter::new(["kube-sentinel-operator", "kube-controller-manager"]);
    let region = Region::new(GLOBAL);
    let mut detector = Detector::new(filter, OwnerKind::default(), owners, defaults, metrics);
    let kind = "ConfigMap";
    let mut drifts = detector
        .handle(Input::Watch(kind, watcher::Event::Init))
        .len();
    for index in 0..objects {
        let event = watcher::Event::InitApply(operator_object(index));
        drifts += detector.handle(Input::Watch(kind, event)).len();
    }
    drifts += detector
        .handle(Input::Watch(kind, watcher::Event::InitDone))
        .len();
    let change = region.change();
    assert_eq!(drifts, 0, "the operator's own objects are not drift");
    assert!(detector.is_synced(kind));
    let live = change.bytes_allocated as f64 - change.bytes_deallocated as f64;
    drop(detector);
    live / objects as f64
}

fn main() {
    println!("detector bytes per watched object (live heap bytes after the first list / objects)");
    println!("{:>10} {:>14}", "objects", "bytes/object");
    for objects in [1_000, 10_000, 100_000] {
        println!("{objects:>10} {:>14.1}", bytes_per_object(objects));
    }
}
