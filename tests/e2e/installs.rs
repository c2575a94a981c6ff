//! Each install of `deploy/` runs: both programs as the ServiceAccounts it creates, through a
//! drift cycle, with no request refused; and each is refused a sample of what it does not
//! need. The cluster-wide install (`deploy/`) and the namespaced one
//! (`deploy/overlays/namespaced`), each on a control plane of its own.

use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, Service};
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

use crate::{
    operator::running::{Kubelet, cluster, create, wait_ready},
    support::{Installed, Logged, Program, eventually, install_on_own_plane, kubectl_output},
};

const WAIT: Duration = Duration::from_secs(60);
const SYSTEM: &str = "kube-sentinel";
const ACCOUNTS: [(&str, &str); 2] = [
    ("operator", "kube-sentinel-operator"),
    ("sentinel", "sentinel"),
];

/// A kubeconfig with a token of ServiceAccount `account` of the install.
async fn token_kubeconfig(installed: &Installed, account: &str) -> std::path::PathBuf {
    let kubeconfig = installed
        .plane
        .service_account_kubeconfig(SYSTEM, account, Duration::from_secs(3600))
        .await
        .expect("token");
    let path = installed.dir.path().join(format!("{account}.kubeconfig"));
    kube_sentinel::testenv::write_kubeconfig(&kubeconfig, &path).expect("write kubeconfig");
    path
}

/// Both programs as the install's ServiceAccounts, with `extra` flags; their ports.
async fn start(installed: &Installed, extra: &[&str]) -> Vec<(Logged, u16)> {
    let mut started = Vec::new();
    for (program, account) in ACCOUNTS {
        let kubeconfig = token_kubeconfig(installed, account).await;
        let port = kube_sentinel::testenv::free_port().expect("port");
        let addr = format!("127.0.0.1:{port}");
        let mut args = vec![program, "--metrics-addr", &addr];
        args.extend_from_slice(extra);
        let spawned = Program::spawn_with(program, &args, &kubeconfig, installed.dir.path(), &[]);
        started.push((Logged(spawned, program), port));
    }
    for (_, port) in &started {
        eventually(WAIT, "Ready", || async {
            (crate::support::http_ok_body(*port, "/readyz")
                .await
                .as_deref()
                == Some("ok"))
            .then_some(())
        })
        .await;
    }
    started
}

/// A StatefulCluster in `ns`, drifted by someone else and reverted; then no log of either
/// program shows a refused request.
async fn drift_cycle(installed: &Installed, ns: &str, programs: &[(Logged, u16)]) {
    let admin = &installed.admin;
    let _kubelet = Kubelet::start(admin.clone(), ns);
    create(admin, ns, &cluster("db", json!({}))).await;
    wait_ready(admin, ns, "db").await;
    let services: Api<Service> = Api::namespaced(admin.clone(), ns);
    let edit = PatchParams {
        field_manager: Some("kubectl-edit".into()),
        ..Default::default()
    };
    services
        .patch(
            "db",
            &edit,
            &Patch::Merge(json!({"metadata": {"labels": {"extra": "x"}}})),
        )
        .await
        .expect("drift");
    eventually(WAIT, "the drift reverted", || async {
        let labels = services
            .get("db")
            .await
            .ok()?
            .metadata
            .labels
            .unwrap_or_default();
        (!labels.contains_key("extra")).then_some(())
    })
    .await;
    for (program, _) in programs {
        let log = program.0.log();
        let refused = log
            .lines()
            .filter(|l| l.contains("403") || l.to_lowercase().contains("forbidden"))
            .collect::<Vec<_>>();
        assert!(
            refused.is_empty(),
            "{}: refused requests:\n{}",
            program.1,
            refused.join("\n")
        );
    }
}

/// Asks kubectl `args` as ServiceAccount `account`; asserts the API server refuses it.
async fn refused(installed: &Installed, account: &str, args: &[&str]) {
    let kubeconfig = token_kubeconfig(installed, account).await;
    let out = kubectl_output(&kubeconfig, args, None);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("Forbidden"),
        "{account} may {args:?}: {stderr}"
    );
}

#[tokio::test]
async fn the_cluster_wide_install_runs_a_drift_cycle_and_refuses_what_it_does_not_need() {
    let installed = install_on_own_plane(SYSTEM, "").await;
    // The managed cluster in a namespace of its own: the system namespace enforces the
    // "restricted" Pod Security profile, which its bare pause pods do not meet.
    let apps = "apps";
    let namespace: Namespace =
        serde_json::from_value(json!({"metadata": {"name": apps}})).expect("namespace");
    Api::<Namespace>::all(installed.admin.clone())
        .create(&PostParams::default(), &namespace)
        .await
        .expect("namespace apps");
    let programs = start(&installed, &[]).await;
    drift_cycle(&installed, apps, &programs).await;
    refused(&installed, "sentinel", &["get", "secrets", "-n", apps]).await;
    refused(
        &installed,
        "sentinel",
        &["patch", "statefulset", "db", "-n", apps, "-p", "{}"],
    )
    .await;
    refused(
        &installed,
        "kube-sentinel-operator",
        &["create", "namespace", "x"],
    )
    .await;
    refused(
        &installed,
        "kube-sentinel-operator",
        &["delete", "namespace", apps],
    )
    .await;
}

/// The rules of the role `kind`/`name` among `documents`.
fn rules(documents: &[Value], kind: &str, name: &str) -> Value {
    documents
        .iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .map(|d| d["rules"].clone())
        .unwrap_or_else(|| panic!("{kind} {name}"))
}

#[tokio::test]
async fn the_namespaced_install_runs_a_drift_cycle_in_its_namespace_only() {
    let installed = install_on_own_plane(SYSTEM, "overlays/namespaced").await;
    let documents = kube_sentinel::manifests::parse(&installed.rendered).expect("rendered");
    assert!(
        !documents
            .iter()
            .any(|d| d["kind"] == "ClusterRole" || d["kind"] == "ClusterRoleBinding"),
        "no cluster-wide rights"
    );
    // The Roles grant in the namespace exactly what the ClusterRoles grant everywhere.
    for component in ["operator", "sentinel"] {
        let text = std::fs::read_to_string(format!(
            "{}/deploy/{component}/rbac.yaml",
            crate::support::REPO
        ))
        .expect("rbac");
        let base = kube_sentinel::manifests::parse(&text).expect("rbac YAML");
        let name = format!("kube-sentinel-{component}");
        assert_eq!(
            rules(&documents, "Role", &format!("{name}-workloads")),
            rules(&base, "ClusterRole", &name),
            "{component}: deploy/overlays/namespaced/rbac.yaml is stale"
        );
    }
    let programs = start(&installed, &["--namespace", SYSTEM]).await;
    drift_cycle(&installed, SYSTEM, &programs).await;
    refused(&installed, "sentinel", &["get", "secrets", "-n", SYSTEM]).await;
    refused(&installed, "sentinel", &["get", "statefulclusters", "-A"]).await;
    refused(
        &installed,
        "kube-sentinel-operator",
        &["get", "statefulsets", "-n", "default"],
    )
    .await;
    refused(
        &installed,
        "kube-sentinel-operator",
        &["get", "secrets", "-n", "default"],
    )
    .await;
    refused(
        &installed,
        "kube-sentinel-operator",
        &["create", "namespace", "x"],
    )
    .await;
}
