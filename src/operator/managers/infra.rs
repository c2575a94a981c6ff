//! InfraManager: the StatefulSet(s), the headless and client Services and the ConfigMap.
//!
//! Desired objects are built from the spec and the upgrade [`InfraPlan`] by pure functions
//! ([`desired_objects`]); [`InfraManager::reconcile`] converges them (see [`super::converge()`]),
//! all of them or only those a trigger named.

use std::{collections::BTreeMap, sync::Arc};

use jiff::Timestamp;

use k8s_openapi::{
    api::{
        apps::v1::{
            RollingUpdateStatefulSetStrategy, StatefulSet, StatefulSetSpec,
            StatefulSetUpdateStrategy,
        },
        core::v1::{
            ConfigMap, ConfigMapEnvSource, Container, ContainerPort, EnvFromSource, PodSpec,
            PodTemplateSpec, SecretVolumeSource, Service, ServicePort, ServiceSpec, Volume,
            VolumeMount,
        },
    },
    apimachinery::pkg::{
        apis::meta::v1::{LabelSelector, ObjectMeta},
        util::intstr::IntOrString,
    },
};
use kube::{
    Api, Client, Resource,
    api::{ApiResource, DynamicObject},
};
use serde_json::Value;

use super::{
    Action, COMPONENT_LABEL, Error, Names, ObjectChange, Result, SET_LABEL,
    converge::{converge_from, current},
    owned_meta,
    upgrade::{InfraPlan, SetPlan},
};
use crate::{
    contract::INSTANCE_LABEL,
    operator::{
        crd::{OwnedObject, StatefulCluster},
        fights::{Decision, FightRules, Fights, FoughtObject, drifting_writers},
    },
    watch::{NamespacedName, field_path::ignored_paths},
};

/// Annotation on the pod template with a hash of `spec.config`: a settings change rolls the pods.
pub const CONFIG_HASH_ANNOTATION: &str = "kube-sentinel.dev/config-hash";
/// Where the serving certificate is mounted in members.
pub const TLS_MOUNT_PATH: &str = "/etc/kube-sentinel/tls";

/// One desired object.
#[derive(Clone, Debug)]
pub struct Desired {
    /// Kind.
    pub kind: String,
    /// Name.
    pub name: String,
    /// The full object to apply.
    pub object: Value,
    resource: ApiResource,
}

fn desired<K: Resource<DynamicType = ()> + serde::Serialize>(object: K) -> Result<Desired> {
    let resource = ApiResource::erase::<K>(&());
    let name = object
        .meta()
        .name
        .clone()
        .ok_or(Error::Incomplete("name"))?;
    let mut value = serde_json::to_value(&object).map_err(|e| Error::Json("object", e))?;
    // Typed objects serialize without apiVersion/kind when built by hand; apply needs them.
    value["apiVersion"] = Value::String(resource.api_version.clone());
    value["kind"] = Value::String(resource.kind.clone());
    Ok(Desired {
        kind: resource.kind.clone(),
        name,
        object: value,
        resource,
    })
}

/// Selector of the pods of StatefulSet `set`.
fn set_selector(names: &Names, set: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (INSTANCE_LABEL.to_string(), names.name.clone()),
        (SET_LABEL.to_string(), set.to_string()),
    ])
}

fn service_ports(cr: &StatefulCluster) -> Vec<ServicePort> {
    cr.spec
        .ports
        .iter()
        .map(|p| ServicePort {
            name: Some(p.name.clone()),
            port: p.port,
            target_port: Some(IntOrString::Int(p.port)),
            ..Default::default()
        })
        .collect()
}

/// FNV-1a of the settings: stable across processes and versions, unlike `DefaultHasher`.
fn config_hash(config: &BTreeMap<String, String>) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for (k, v) in config {
        for byte in k.bytes().chain([0]).chain(v.bytes()).chain([0]) {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
    }
    format!("{hash:016x}")
}

fn stateful_set(cr: &StatefulCluster, names: &Names, set: &SetPlan) -> Result<StatefulSet> {
    let selector = set_selector(names, &set.name);
    let mut pod_labels = selector.clone();
    pod_labels.insert(COMPONENT_LABEL.into(), "member".into());
    let tls = cr.spec.tls.as_ref().is_some_and(|t| t.enabled);
    let container = Container {
        name: "member".into(),
        image: Some(format!("{}:{}", cr.spec.image, set.version)),
        ports: Some(
            cr.spec
                .ports
                .iter()
                .map(|p| ContainerPort {
                    name: Some(p.name.clone()),
                    container_port: p.port,
                    ..Default::default()
                })
                .collect(),
        ),
        env_from: Some(vec![EnvFromSource {
            config_map_ref: Some(ConfigMapEnvSource {
                name: names.config_map(),
                optional: None,
            }),
            ..Default::default()
        }]),
        volume_mounts: tls.then(|| {
            vec![VolumeMount {
                name: "tls".into(),
                mount_path: TLS_MOUNT_PATH.into(),
                read_only: Some(true),
                ..Default::default()
            }]
        }),
        ..Default::default()
    };
    Ok(StatefulSet {
        metadata: owned_meta(cr, names, set.name.clone(), "member")?,
        spec: StatefulSetSpec {
            replicas: Some(cr.spec.replicas),
            service_name: Some(names.headless_service()),
            pod_management_policy: Some("Parallel".into()),
            selector: LabelSelector {
                match_labels: Some(selector),
                ..Default::default()
            },
            update_strategy: Some(StatefulSetUpdateStrategy {
                type_: Some("RollingUpdate".into()),
                rolling_update: Some(RollingUpdateStatefulSetStrategy {
                    partition: Some(set.partition),
                    max_unavailable: None,
                }),
            }),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(pod_labels),
                    annotations: Some(BTreeMap::from([(
                        CONFIG_HASH_ANNOTATION.into(),
                        config_hash(&cr.spec.config),
                    )])),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    containers: vec![container],
                    volumes: tls.then(|| {
                        vec![Volume {
                            name: "tls".into(),
                            secret: Some(SecretVolumeSource {
                                secret_name: Some(names.tls_secret()),
                                ..Default::default()
                            }),
                            ..Default::default()
                        }]
                    }),
                    ..Default::default()
                }),
            },
            ..Default::default()
        },
        status: None,
    })
}

fn service(
    cr: &StatefulCluster,
    names: &Names,
    name: String,
    serving_set: &str,
    headless: bool,
) -> Result<Service> {
    Ok(Service {
        metadata: owned_meta(cr, names, name, "member")?,
        spec: Some(ServiceSpec {
            selector: Some(set_selector(names, serving_set)),
            ports: Some(service_ports(cr)),
            cluster_ip: headless.then(|| "None".into()),
            publish_not_ready_addresses: headless.then_some(true),
            ..Default::default()
        }),
        status: None,
    })
}

/// Every object the InfraManager owns for `cr` under `plan`.
pub fn desired_objects(
    cr: &StatefulCluster,
    names: &Names,
    plan: &InfraPlan,
) -> Result<Vec<Desired>> {
    let mut out = vec![desired(ConfigMap {
        metadata: owned_meta(cr, names, names.config_map(), "config")?,
        data: Some(cr.spec.config.clone()),
        ..Default::default()
    })?];
    out.push(desired(service(
        cr,
        names,
        names.headless_service(),
        &plan.serving_set,
        true,
    )?)?);
    out.push(desired(service(
        cr,
        names,
        names.client_service(),
        &plan.serving_set,
        false,
    )?)?);
    for set in &plan.sets {
        out.push(desired(stateful_set(cr, names, set)?)?);
    }
    Ok(out)
}

/// Keeps the objects `only` names, or all when it names none of them (a trigger about an
/// object this manager does not own, or no list at all).
pub fn select<'a>(objects: &'a [Desired], only: &[OwnedObject]) -> Vec<&'a Desired> {
    let named: Vec<&Desired> = objects
        .iter()
        .filter(|d| only.iter().any(|o| o.kind == d.kind && o.name == d.name))
        .collect();
    if named.is_empty() {
        objects.iter().collect()
    } else {
        named
    }
}

/// Converges the infrastructure objects; see the module docs.
#[derive(Clone)]
pub struct InfraManager {
    client: Client,
    fights: Arc<Fights>,
}

impl InfraManager {
    /// A manager using `client`, holding back reverts as `fights` says.
    pub fn new(client: Client, fights: Arc<Fights>) -> Self {
        Self { client, fights }
    }

    /// Converges every object of `plan` (or only those in `only`, when it names some) and
    /// reports each object's outcome. Fields under `spec.sentinel.ignore` are left as they are;
    /// an object whose drifting managers are all in a fight is held.
    pub async fn reconcile(
        &self,
        cr: &StatefulCluster,
        names: &Names,
        plan: &InfraPlan,
        only: &[OwnedObject],
    ) -> Result<Vec<ObjectChange>> {
        let objects = desired_objects(cr, names, plan)?;
        let mut changes = Vec::new();
        for d in select(&objects, only) {
            changes.push(self.converge_one(cr, names, d).await?);
        }
        Ok(changes)
    }

    async fn converge_one(
        &self,
        cr: &StatefulCluster,
        names: &Names,
        d: &Desired,
    ) -> Result<ObjectChange> {
        let api: Api<DynamicObject> =
            Api::namespaced_with(self.client.clone(), &names.namespace, &d.resource);
        let sentinel = &cr.spec.sentinel;
        let ignore = ignored_paths(&sentinel.ignore, &d.kind, &d.name);
        let before = current(&api, &d.kind, &d.object).await?;
        let writers = before
            .as_ref()
            .map(|b| drifting_writers(&b.metadata, &ignore))
            .unwrap_or_default();
        let object = FoughtObject {
            resource: NamespacedName::new(&names.namespace, &names.name),
            kind: d.kind.clone(),
            name: d.name.clone(),
        };
        if let Decision::Hold { until } = self.fights.decide(&object, &writers, Timestamp::now()) {
            return Ok(ObjectChange::held(&d.kind, &d.name, until));
        }
        let mut change = converge_from(&api, &d.kind, &d.object, before, &ignore).await?;
        if change.action == Action::Updated {
            let rules = FightRules::of(sentinel.fight_backoff.as_ref());
            change.fights = self
                .fights
                .reverted(&object, &writers, rules, Timestamp::now());
        }
        Ok(change)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::operator::managers::upgrade;

    fn cluster() -> (StatefulCluster, Names) {
        let spec = serde_json::from_value(serde_json::json!({
            "replicas": 3, "image": "reg/db", "version": "1.2", "config": {"a": "1"},
            "ports": [{"name": "client", "port": 7000}], "tls": {"enabled": true}
        }))
        .expect("spec");
        let mut cr = StatefulCluster::new("db", spec);
        cr.metadata.namespace = Some("ns".into());
        cr.metadata.uid = Some("uid-1".into());
        let names = Names::of(&cr).expect("names");
        (cr, names)
    }

    #[test]
    fn desired_objects_are_owned_labelled_and_select_the_serving_set() {
        let (cr, names) = cluster();
        let plan = upgrade::plan(&cr, &names, &upgrade::recorded(&cr, &names));
        let objects = desired_objects(&cr, &names, &plan).expect("objects");
        let kinds: Vec<_> = objects
            .iter()
            .map(|d| (d.kind.as_str(), d.name.as_str()))
            .collect();
        assert_eq!(
            kinds,
            vec![
                ("ConfigMap", "db-config"),
                ("Service", "db-headless"),
                ("Service", "db"),
                ("StatefulSet", "db")
            ]
        );
        for d in &objects {
            let meta = &d.object["metadata"];
            assert_eq!(
                meta["labels"]["app.kubernetes.io/managed-by"],
                "kube-sentinel-operator"
            );
            assert_eq!(meta["labels"]["app.kubernetes.io/instance"], "db");
            assert_eq!(meta["ownerReferences"][0]["controller"], true);
            assert_eq!(meta["ownerReferences"][0]["uid"], "uid-1");
        }
        assert_eq!(objects[1].object["spec"]["clusterIP"], "None");
        assert_eq!(
            objects[2].object["spec"]["selector"]["kube-sentinel.dev/set"],
            "db"
        );
        let sts = &objects[3].object["spec"];
        assert_eq!(
            sts["template"]["spec"]["containers"][0]["image"],
            "reg/db:1.2"
        );
        assert_eq!(
            sts["template"]["spec"]["volumes"][0]["secret"]["secretName"],
            "db-tls"
        );
        assert_eq!(
            sts["selector"]["matchLabels"]["kube-sentinel.dev/set"],
            "db"
        );
    }

    #[test]
    fn select_targets_named_objects_or_falls_back_to_all() {
        let (cr, names) = cluster();
        let plan = upgrade::plan(&cr, &names, &upgrade::recorded(&cr, &names));
        let objects = desired_objects(&cr, &names, &plan).expect("objects");
        let svc = OwnedObject {
            kind: "Service".into(),
            name: "db".into(),
        };
        assert_eq!(select(&objects, std::slice::from_ref(&svc)).len(), 1);
        let foreign = OwnedObject {
            kind: "Secret".into(),
            name: "x".into(),
        };
        assert_eq!(select(&objects, &[foreign]).len(), objects.len());
        assert_eq!(select(&objects, &[]).len(), objects.len());
    }

    #[test]
    fn config_hash_changes_with_the_settings_only() {
        let a = BTreeMap::from([("k".to_string(), "v".to_string())]);
        let b = BTreeMap::from([("k".to_string(), "w".to_string())]);
        assert_eq!(config_hash(&a), config_hash(&a.clone()));
        assert_ne!(config_hash(&a), config_hash(&b));
    }
}
