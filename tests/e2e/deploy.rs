//! The manifests in `deploy/` are what the API server accepts: every document of every
//! component, Deployments included, passes a server-side dry-run apply.

use kube::{
    api::{Api, DynamicObject, Patch, PatchParams},
    discovery::{Discovery, Scope},
};

use crate::support::{REPO, control_plane, install_crd, relocate, run_kubectl};

#[tokio::test]
async fn every_deploy_manifest_passes_a_server_side_dry_run() {
    let cp = control_plane();
    let admin = cp.admin().await;
    install_crd(&admin).await;
    let ns = cp.namespace("deploy").await;
    let discovery = Discovery::new(admin.clone())
        .run()
        .await
        .expect("discovery");
    let params = PatchParams::apply("e2e-dry-run").force().dry_run();
    let mut checked = Vec::new();
    for component in [
        "crd",
        "operator",
        "sentinel",
        "identity",
        "samples",
        "overlays/lock",
        "overlays/namespaced",
    ] {
        let dir = format!("{REPO}/deploy/{component}");
        for entry in std::fs::read_dir(&dir).expect("deploy dir") {
            let path = entry.expect("entry").path();
            if crate::support::is_kustomization(&path) {
                continue;
            }
            let text = relocate(&std::fs::read_to_string(&path).expect("read"), &ns);
            for doc in kube_sentinel::manifests::parse(&text).expect("parse") {
                let obj: DynamicObject = serde_json::from_value(doc.clone()).expect("object");
                let types = obj.types.clone().expect("apiVersion and kind");
                let (group, version) = types
                    .api_version
                    .rsplit_once('/')
                    .unwrap_or(("", &types.api_version));
                let gvk = kube::api::GroupVersionKind::gvk(group, version, &types.kind);
                let (ar, caps) = discovery.resolve_gvk(&gvk).expect("served kind");
                let api: Api<DynamicObject> = match caps.scope {
                    Scope::Namespaced => Api::namespaced_with(admin.clone(), &ns, &ar),
                    Scope::Cluster => Api::all_with(admin.clone(), &ar),
                };
                let name = obj.metadata.name.clone().expect("name");
                api.patch(&name, &params, &Patch::Apply(&doc))
                    .await
                    .unwrap_or_else(|e| panic!("{}: {} {name}: {e}", path.display(), types.kind));
                checked.push(format!("{}/{name}", types.kind));
            }
        }
    }
    for kind in [
        "Deployment",
        "ValidatingAdmissionPolicy",
        "ClusterRole",
        "CustomResourceDefinition",
        "StatefulCluster",
    ] {
        assert!(
            checked.iter().any(|c| c.starts_with(kind)),
            "{kind} in {checked:?}"
        );
    }
}

/// The blocks of `docs/operations.md` that show `kubectl auth can-i --list` as each
/// ServiceAccount: (ServiceAccount, the output's lines).
fn documented_rights() -> Vec<(String, Vec<String>)> {
    let page = std::fs::read_to_string(format!("{REPO}/docs/operations.md")).expect("page");
    let mut blocks = Vec::new();
    let mut lines = page.lines();
    while let Some(line) = lines.next() {
        let Some(account) = line.strip_prefix("$ kubectl auth can-i --list -n kube-sentinel # as ")
        else {
            continue;
        };
        let output: Vec<String> = lines
            .by_ref()
            .take_while(|l| !l.starts_with("```"))
            .map(normalize)
            .collect();
        blocks.push((account.trim().to_string(), output));
    }
    blocks
}

fn normalize(line: &str) -> String {
    line.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[tokio::test]
async fn the_kustomization_renders_applies_for_real_and_grants_what_the_operations_page_lists() {
    let installed = crate::support::install_on_own_plane("deploy-e2e", "").await;
    let (plane, admin, dir) = (&installed.plane, &installed.admin, &installed.dir);
    let (rendered, applied) = (&installed.rendered, &installed.applied);
    let documents = kube_sentinel::manifests::parse(rendered).expect("rendered YAML");
    assert_eq!(
        applied
            .lines()
            .filter(|l| l.ends_with("serverside-applied"))
            .count(),
        documents.len(),
        "every rendered object applied:\n{applied}"
    );
    let deployments: Api<k8s_openapi::api::apps::v1::Deployment> =
        Api::namespaced(admin.clone(), "kube-sentinel");
    for name in ["kube-sentinel-operator", "kube-sentinel-sentinel"] {
        deployments.get(name).await.expect("Deployment stored");
    }
    // The controller manager creates both replicas of each, admitted by Pod Security's
    // "restricted" profile that the namespace enforces (this plane has no nodes to run them).
    let pods: Api<k8s_openapi::api::core::v1::Pod> =
        Api::namespaced(admin.clone(), "kube-sentinel");
    crate::support::eventually(
        std::time::Duration::from_secs(60),
        "two pods of each program created under the restricted profile",
        || async {
            let list = pods.list(&Default::default()).await.ok()?;
            let of = |component: &str| {
                list.items
                    .iter()
                    .filter(|p| {
                        p.metadata
                            .labels
                            .as_ref()
                            .and_then(|l| l.get("app.kubernetes.io/component"))
                            == Some(&component.to_string())
                    })
                    .count()
            };
            (of("operator") == 2 && of("sentinel") == 2).then_some(())
        },
    )
    .await;
    let documented = documented_rights();
    assert_eq!(documented.len(), 2, "one block per ServiceAccount");
    for (account, expected) in documented {
        let kubeconfig = plane
            .service_account_kubeconfig(
                "kube-sentinel",
                &account,
                std::time::Duration::from_secs(600),
            )
            .await
            .expect("token");
        let path = dir.path().join(format!("{account}.kubeconfig"));
        kube_sentinel::testenv::write_kubeconfig(&kubeconfig, &path).expect("write");
        let raw = run_kubectl(
            &path,
            &["auth", "can-i", "--list", "-n", "kube-sentinel"],
            None,
        );
        if std::env::var_os("KUBE_SENTINEL_REGENERATE").is_some() {
            rewrite_documented_rights(&account, &raw);
            continue;
        }
        // The API server lists rules in no promised order: compare them as sets of lines.
        let mut rights: Vec<String> = raw.lines().map(normalize).collect();
        let mut expected = expected;
        rights.sort();
        expected.sort();
        assert_eq!(
            rights, expected,
            "docs/operations.md lists other rights for {account} than the API server grants \
             (regenerate with KUBE_SENTINEL_REGENERATE=1):\n{raw}"
        );
    }
}

/// Replaces the output under `account`'s `kubectl auth can-i --list` line in
/// `docs/operations.md` with `output`.
fn rewrite_documented_rights(account: &str, output: &str) {
    let path = format!("{REPO}/docs/operations.md");
    let page = std::fs::read_to_string(&path).expect("page");
    let marker = format!("$ kubectl auth can-i --list -n kube-sentinel # as {account}");
    let mut out = String::new();
    let mut lines = page.lines();
    while let Some(line) = lines.next() {
        out.push_str(line);
        out.push('\n');
        if line.trim_end() == marker {
            out.push_str(output.trim_end());
            out.push('\n');
            for rest in lines.by_ref() {
                if rest.starts_with("```") {
                    out.push_str(rest);
                    out.push('\n');
                    break;
                }
            }
        }
    }
    std::fs::write(&path, out).expect("write page");
}
