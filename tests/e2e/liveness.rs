//! Liveness under real conditions: two operator replicas roll out and fail over, a revert the
//! API server keeps refusing ends, and both programs ride out a stalled API server (on a
//! control plane of the test's own).

use std::time::{Duration, Instant};

use k8s_openapi::api::{
    admissionregistration::v1::{ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding},
    apps::v1::StatefulSet,
    core::v1::{ConfigMap, Service},
    events::v1::Event,
};
use kube::{
    Api, Client, ResourceExt,
    api::{DeleteParams, ListParams, Patch, PatchParams},
};
use kube_sentinel::{
    contract::OPERATOR_FIELD_MANAGER,
    operator::crd::{Outcome, StatefulCluster},
    testenv::{self, ControlPlane, ControlPlaneConfig},
};
use serde_json::json;

use crate::{
    operator::running::{
        Kubelet, Operator, cluster, create, handled, http_get, settle, start_operator, trigger,
        wait_ready,
    },
    support::{self, Logged, Program, Stopped, eventually},
};

const WAIT: Duration = Duration::from_secs(60);

/// A hand edit (not one of the field managers the programs ignore).
fn edit() -> PatchParams {
    PatchParams {
        field_manager: Some("kubectl-edit".into()),
        ..Default::default()
    }
}

/// A label `hand: <value>` added to Service `db` by hand.
async fn label_service(client: &Client, ns: &str, value: &str) {
    Api::<Service>::namespaced(client.clone(), ns)
        .patch(
            "db",
            &edit(),
            &Patch::Merge(json!({"metadata": {"labels": {"hand": value}}})),
        )
        .await
        .expect("label the Service");
}

/// Whether Service `db` still carries the hand-made label.
async fn service_labelled(client: &Client, ns: &str) -> bool {
    let svc = Api::<Service>::namespaced(client.clone(), ns)
        .get("db")
        .await
        .expect("get Service");
    svc.labels().contains_key("hand")
}

/// `kube_sentinel_operator_leader` from the operator's metrics: 1 leading, 0 standing by.
async fn leads(port: u16) -> Option<bool> {
    let text = http_get(port, "/metrics").await?;
    text.lines()
        .find_map(|l| l.strip_prefix("kube_sentinel_operator_leader "))
        .map(|v| v.trim() == "1")
}

#[tokio::test]
async fn two_operator_replicas_are_ready_and_the_standby_reverts_once_the_leader_dies() {
    let cp = support::control_plane();
    let ns = cp.namespace("live-ha").await;
    let client = cp.admin().await;
    let lease = Duration::from_secs(6);
    let replica = |identity: &'static str| {
        [
            "--leader-elect",
            "--lease-duration",
            "6s",
            "--lease-grace",
            "2s",
            "--identity",
            identity,
        ]
    };
    // Each start waits for the replica's /readyz: the standby must be Ready too.
    let mut a = start_operator(&ns, &replica("op-a")).await;
    let mut b = start_operator(&ns, &replica("op-b")).await;
    let a_leads = eventually(WAIT, "exactly one leader, as a metric", || async {
        match (leads(a.port).await?, leads(b.port).await?) {
            (true, false) => Some(true),
            (false, true) => Some(false),
            _ => None,
        }
    })
    .await;
    let _kubelet = Kubelet::start(client.clone(), &ns);
    create(&client, &ns, &cluster("db", json!({}))).await;
    wait_ready(&client, &ns, "db").await;
    let (leader, standby): (&mut Operator, &Operator) =
        if a_leads { (&mut a, &b) } else { (&mut b, &a) };
    settle(leader.port).await;
    assert!(
        support::http_ok_body(standby.port, "/readyz")
            .await
            .as_deref()
            == Some("ok"),
        "the standby stays Ready"
    );

    leader.program.kill();
    let killed = Instant::now();
    label_service(&client, &ns, "made").await;
    let id = trigger(&client, &ns, "db", &[("Service", "db", "modified")]).await;
    let cr = handled(&client, &ns, "db", &id).await;
    let took = killed.elapsed();
    let s = cr.status.and_then(|s| s.sentinel).expect("sentinel status");
    assert_eq!(s.last_outcome, Some(Outcome::Corrected), "{s:?}");
    assert!(!service_labelled(&client, &ns).await, "reverted");
    eprintln!("leader killed -> drift reverted by the standby in {took:?}");
    // The Lease's duration, plus the usual revert latency (about a second) with room for two
    // busy cores.
    assert!(took < lease + Duration::from_secs(10), "{took:?}");
    assert_eq!(
        leads(standby.port).await,
        Some(true),
        "the standby leads now"
    );
}

/// A ValidatingAdmissionPolicy (and its binding) refusing every write of the operator's
/// ServiceAccount to Service `db` in `ns`, with `message`.
fn refusing_policy(ns: &str, message: &str) -> String {
    format!(
        r#"apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicy
metadata:
  name: {ns}-freeze-db
spec:
  failurePolicy: Fail
  matchConstraints:
    resourceRules:
      - apiGroups: [""]
        apiVersions: ["v1"]
        operations: ["CREATE", "UPDATE"]
        resources: ["services"]
  matchConditions:
    - name: the-operator
      expression: "request.userInfo.username == 'system:serviceaccount:{ns}:{ns}-operator'"
    - name: service-db
      expression: "object.metadata.name == 'db'"
  validations:
    - expression: "false"
      message: "{message}"
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicyBinding
metadata:
  name: {ns}-freeze-db
spec:
  policyName: {ns}-freeze-db
  validationActions: [Deny]
  matchResources:
    namespaceSelector:
      matchLabels:
        kubernetes.io/metadata.name: {ns}
"#
    )
}

/// Whether the API server refuses the operator's write to Service `db` now (a dry run), with
/// the refusal's text.
async fn operator_refused(operator: &Client, ns: &str) -> Option<String> {
    let params = PatchParams {
        field_manager: Some(OPERATOR_FIELD_MANAGER.into()),
        dry_run: true,
        ..Default::default()
    };
    let patch = Patch::Merge(json!({"metadata": {"labels": {"probe": "x"}}}));
    match Api::<Service>::namespaced(operator.clone(), ns)
        .patch("db", &params, &patch)
        .await
    {
        Ok(_) => None,
        Err(e) => Some(e.to_string()),
    }
}

/// Full reconciles that ended in an error, from the operator's metrics.
async fn failed_full_reconciles(port: u16) -> u64 {
    support::metric_sample(
        port,
        "kube_sentinel_operator_reconciles_total{path=\"full\",result=\"error\"}",
    )
    .await
}

#[tokio::test]
async fn a_revert_the_api_server_keeps_refusing_ends_failed_and_the_full_path_still_runs() {
    let cp = support::control_plane();
    let ns = cp.namespace("live-deny").await;
    let client = cp.admin().await;
    let op = start_operator(&ns, &[]).await;
    let _kubelet = Kubelet::start(client.clone(), &ns);
    create(&client, &ns, &cluster("db", json!({}))).await;
    wait_ready(&client, &ns, "db").await;
    settle(op.port).await;

    let message = "e2e freeze: the operator may not write Service db";
    kube_sentinel::manifests::apply(&client, &refusing_policy(&ns, message), "e2e", &ns)
        .await
        .expect("apply the policy");
    let operator = cp
        .service_account_client(&ns, &format!("{ns}-operator"))
        .await;
    eventually(WAIT, "the policy enforced", || async {
        operator_refused(&operator, &ns)
            .await
            .filter(|e| e.contains(message))
    })
    .await;

    label_service(&client, &ns, "made").await;
    let full_failures = failed_full_reconciles(op.port).await;
    let id = trigger(&client, &ns, "db", &[("Service", "db", "modified")]).await;
    let cr = handled(&client, &ns, "db", &id).await;
    let s = cr
        .status
        .as_ref()
        .and_then(|s| s.sentinel.clone())
        .expect("sentinel status");
    assert_eq!(s.last_outcome, Some(Outcome::Failed), "{s:?}");
    let error = s.last_error.clone().unwrap_or_default();
    assert!(error.contains(message), "lastError: {error:?}");
    assert!(service_labelled(&client, &ns).await, "the policy held");

    let events: Api<Event> = Api::namespaced(client.clone(), &ns);
    eventually(WAIT, "a Warning Event naming the refusal", || async {
        let list = events.list(&ListParams::default()).await.ok()?;
        list.items
            .iter()
            .find(|e| {
                e.type_.as_deref() == Some("Warning")
                    && e.reason.as_deref() == Some("RevertFailed")
                    && e.note.as_deref().is_some_and(|n| n.contains(message))
            })
            .map(drop)
    })
    .await;
    let clusters: Api<StatefulCluster> = Api::namespaced(client.clone(), &ns);
    eventually(WAIT, "Degraded with the refusal", || async {
        let cr = clusters.get("db").await.ok()?;
        let status = cr.status?;
        status
            .conditions
            .iter()
            .find(|c| c.type_ == "Degraded" && c.status == "True" && c.message.contains(message))
            .map(drop)
    })
    .await;
    // The full path runs after the failed trigger (and meets the same refusal).
    eventually(
        WAIT,
        "a full reconcile after the failed trigger",
        || async { (failed_full_reconciles(op.port).await > full_failures).then_some(()) },
    )
    .await;

    let delete = DeleteParams::default();
    let name = format!("{ns}-freeze-db");
    Api::<ValidatingAdmissionPolicyBinding>::all(client.clone())
        .delete(&name, &delete)
        .await
        .expect("delete the binding");
    Api::<ValidatingAdmissionPolicy>::all(client.clone())
        .delete(&name, &delete)
        .await
        .expect("delete the policy");
    eventually(WAIT, "the policy gone", || async {
        operator_refused(&operator, &ns)
            .await
            .is_none()
            .then_some(())
    })
    .await;
    // The full path's retries get through now, and clear Degraded.
    eventually(WAIT, "Degraded cleared by the full path", || async {
        let cr = clusters.get("db").await.ok()?;
        let status = cr.status?;
        status
            .conditions
            .iter()
            .find(|c| c.type_ == "Degraded" && c.status == "False")
            .map(drop)
    })
    .await;
    settle(op.port).await;
    label_service(&client, &ns, "again").await;
    let id = trigger(&client, &ns, "db", &[("Service", "db", "modified")]).await;
    let cr = handled(&client, &ns, "db", &id).await;
    let s = cr.status.and_then(|s| s.sentinel).expect("sentinel status");
    assert_eq!(s.last_outcome, Some(Outcome::Corrected), "{s:?}");
    assert!(!service_labelled(&client, &ns).await, "reverted");
}

// ---------------------------------------------------------------------------------------------
// A stalled API server, on a control plane of this test's own.

/// Whether `/readyz` on `port` answers `ok`.
pub(crate) async fn ready(port: u16) -> bool {
    support::http_ok_body(port, "/readyz").await.as_deref() == Some("ok")
}

async fn live(port: u16) -> bool {
    support::http_ok_body(port, "/healthz").await.as_deref() == Some("ok")
}

/// The sentinel and the operator of `ns` on `plane`, each as its ServiceAccount, with short
/// timeouts; their metrics ports.
pub(crate) async fn start_programs(
    plane: &ControlPlane,
    ns: &str,
    dir: &std::path::Path,
) -> (Logged, u16, Logged, u16) {
    let admin = plane.admin_client().await.expect("admin");
    support::install_crd(&admin).await;
    for component in ["operator", "sentinel"] {
        support::apply_component_manifests(&admin, component, ns).await;
    }
    // Given as environment variables, which a build without these settings ignores.
    let timeouts = [
        ("KUBE_SENTINEL_REQUEST_TIMEOUT", "2s"),
        ("KUBE_SENTINEL_WATCH_TIMEOUT", "3s"),
        ("KUBE_SENTINEL_UNREACHABLE_AFTER", "1s"),
    ];
    let mut started = Vec::new();
    for (program, account) in [
        ("operator", format!("{ns}-operator")),
        ("sentinel", "sentinel".to_string()),
    ] {
        let kubeconfig = plane
            .service_account_kubeconfig(ns, &account, Duration::from_secs(3600))
            .await
            .expect("kubeconfig");
        let path = dir.join(format!("{program}.kubeconfig"));
        testenv::write_kubeconfig(&kubeconfig, &path).expect("write kubeconfig");
        let port = testenv::free_port().expect("port");
        let addr = format!("127.0.0.1:{port}");
        let args = [program, "--namespace", ns, "--metrics-addr", &addr];
        let spawned = Program::spawn_with(program, &args, &path, dir, &timeouts);
        started.push((Logged(spawned, program), port));
    }
    let (sentinel, sentinel_port) = started.pop().expect("sentinel");
    let (operator, operator_port) = started.pop().expect("operator");
    (operator, operator_port, sentinel, sentinel_port)
}

#[tokio::test]
async fn both_programs_ride_out_a_stalled_api_server_and_revert_every_drift() {
    let config = ControlPlaneConfig::from_build_script().expect("control-plane binaries");
    let ns = "stall";
    let (plane, admin) = support::own_control_plane(config, ns).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let (mut operator, op_port, mut sentinel, sentinel_port) =
        start_programs(&plane, ns, dir.path()).await;
    eventually(WAIT, "both programs Ready", || async {
        (ready(op_port).await && ready(sentinel_port).await).then_some(())
    })
    .await;
    let _kubelet = Kubelet::start(admin.clone(), ns);
    create(&admin, ns, &cluster("db", json!({}))).await;
    wait_ready(&admin, ns, "db").await;
    settle(op_port).await;

    // Drift just before the stall: its trigger and its revert fall into it.
    label_service(&admin, ns, "made").await;
    Api::<StatefulSet>::namespaced(admin.clone(), ns)
        .patch(
            "db",
            &edit(),
            &Patch::Merge(json!({"spec": {"replicas": 1}})),
        )
        .await
        .expect("scale");
    let apiserver = plane
        .pids()
        .into_iter()
        .find(|(name, _)| name.contains("apiserver"))
        .map(|(_, pid)| pid)
        .expect("kube-apiserver pid");
    let stopped = Stopped::stop(apiserver);
    let stalled_at = Instant::now();
    // Drift during the stall: the request waits in the stopped server and lands on SIGCONT.
    let during = {
        let cms: Api<ConfigMap> = Api::namespaced(admin.clone(), ns);
        tokio::spawn(async move {
            cms.patch(
                "db-config",
                &edit(),
                &Patch::Merge(json!({"data": {"mode": "rogue"}})),
            )
            .await
        })
    };
    eventually(
        Duration::from_secs(19),
        "both programs unready during the stall",
        || async { (!ready(op_port).await && !ready(sentinel_port).await).then_some(()) },
    )
    .await;
    // Unready, but alive: a stalled API server is no reason for the kubelet to restart them.
    for port in [op_port, sentinel_port] {
        assert!(live(port).await, "/healthz during the stall on {port}");
    }
    tokio::time::sleep(Duration::from_secs(20).saturating_sub(stalled_at.elapsed())).await;
    for port in [op_port, sentinel_port] {
        assert!(
            live(port).await,
            "/healthz at the end of the stall on {port}"
        );
    }
    drop(stopped);
    eprintln!("kube-apiserver continued after {:?}", stalled_at.elapsed());

    eventually(WAIT, "both programs Ready again", || async {
        (ready(op_port).await && ready(sentinel_port).await).then_some(())
    })
    .await;
    during
        .await
        .expect("join")
        .expect("the drift sent during the stall");
    let sts: Api<StatefulSet> = Api::namespaced(admin.clone(), ns);
    let cms: Api<ConfigMap> = Api::namespaced(admin.clone(), ns);
    eventually(Duration::from_secs(120), "every drift reverted", || async {
        let replicas = sts.get("db").await.ok()?.spec.replicas;
        let mode = cms.get("db-config").await.ok()?.data?.get("mode").cloned();
        let labelled = service_labelled(&admin, ns).await;
        (replicas == Some(3) && mode.as_deref() == Some("primary") && !labelled).then_some(())
    })
    .await;
    assert!(
        operator.0.is_running() && sentinel.0.is_running(),
        "both recovered without a restart"
    );
    drop((operator, sentinel));
    plane.stop().await;
}
