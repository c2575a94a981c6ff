//! The manifests in `deploy/` are what the API server accepts: every document of every
//! component, Deployments included, passes a server-side dry-run apply.

use kube::{
    api::{Api, DynamicObject, Patch, PatchParams},
    discovery::{Discovery, Scope},
};

use crate::support::{REPO, control_plane, install_crd, relocate};

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
    for component in ["crd", "operator", "sentinel", "identity", "samples"] {
        let dir = format!("{REPO}/deploy/{component}");
        for entry in std::fs::read_dir(&dir).expect("deploy dir") {
            let path = entry.expect("entry").path();
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
