//! Installing the system as `deploy/` describes it, on a local control plane: the CRD, the
//! manifests of `deploy/operator` and `deploy/sentinel` without their Deployments (local
//! processes take their place), ServiceAccount kubeconfigs for those processes, and the sample.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Context, Result};
use kube::{Client, config::Kubeconfig};
use serde_json::json;

use super::SYSTEM_NAMESPACE;
use crate::{manifests, operator::crd::crd_yaml, testenv};

/// Field manager of the installation's own writes.
const INSTALLER: &str = "kube-sentinel-demo";
/// Lifetime of the programs' ServiceAccount tokens: longer than anyone plays with a demo.
const TOKEN_TTL: Duration = Duration::from_secs(24 * 3600);

/// `deploy/operator` and `deploy/sentinel`, in the order they are applied.
pub(crate) const COMPONENT_MANIFESTS: [(&str, &str); 5] = [
    (
        "deploy/operator/namespace.yaml",
        include_str!("../../deploy/operator/namespace.yaml"),
    ),
    (
        "deploy/operator/rbac.yaml",
        include_str!("../../deploy/operator/rbac.yaml"),
    ),
    (
        "deploy/operator/deployment.yaml",
        include_str!("../../deploy/operator/deployment.yaml"),
    ),
    (
        "deploy/sentinel/rbac.yaml",
        include_str!("../../deploy/sentinel/rbac.yaml"),
    ),
    (
        "deploy/sentinel/admission-policy.yaml",
        include_str!("../../deploy/sentinel/admission-policy.yaml"),
    ),
];
/// The sample StatefulCluster (`deploy/samples/minimal.yaml`).
pub(crate) const SAMPLE: &str = include_str!("../../deploy/samples/minimal.yaml");

/// Installs the StatefulCluster CRD and [`COMPONENT_MANIFESTS`] without their Deployments
/// (namespace [`SYSTEM_NAMESPACE`], ServiceAccounts, RBAC, the sentinel's admission policy).
pub(crate) async fn install_system(admin: &Client) -> Result<()> {
    manifests::apply(admin, &crd_yaml(), INSTALLER, "default")
        .await
        .context("installing the StatefulCluster CRD")?;
    for (file, text) in COMPONENT_MANIFESTS {
        manifests::apply(
            admin,
            &without_deployments(text)?,
            INSTALLER,
            SYSTEM_NAMESPACE,
        )
        .await
        .with_context(|| format!("applying {file}"))?;
    }
    Ok(())
}

/// Writes `<dir>/<name>.kubeconfig`, acting as ServiceAccount `account` of
/// [`SYSTEM_NAMESPACE`] with a fresh TokenRequest token asked for with `admin`, and returns its
/// path.
pub(crate) async fn service_account_kubeconfig(
    admin: &Kubeconfig,
    account: &str,
    dir: &Path,
    name: &str,
) -> Result<PathBuf> {
    let kubeconfig =
        testenv::service_account_kubeconfig(admin, SYSTEM_NAMESPACE, account, TOKEN_TTL).await?;
    let path = dir.join(format!("{name}.kubeconfig"));
    testenv::write_kubeconfig(&kubeconfig, &path)?;
    Ok(path)
}

/// Creates `namespace` and the sample StatefulCluster in it.
pub(crate) async fn install_sample(admin: &Client, namespace: &str) -> Result<()> {
    manifests::apply(
        admin,
        &json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})
            .to_string(),
        INSTALLER,
        namespace,
    )
    .await
    .with_context(|| format!("creating the {namespace} namespace"))?;
    manifests::apply(admin, SAMPLE, INSTALLER, namespace)
        .await
        .context("applying deploy/samples/minimal.yaml")?;
    Ok(())
}

/// The documents of `yaml` except Deployments, as a multi-document YAML (JSON) text.
fn without_deployments(yaml: &str) -> Result<String> {
    manifests::without_kinds(yaml, &["Deployment"])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::demo::CLUSTER_NAME;

    #[test]
    fn the_embedded_manifests_parse_and_lose_only_their_deployments() {
        let mut kinds = Vec::new();
        for (file, text) in COMPONENT_MANIFESTS {
            let kept = without_deployments(text).expect(file);
            kinds.extend(
                manifests::parse(&kept)
                    .expect(file)
                    .iter()
                    .map(|d| d["kind"].as_str().expect("kind").to_string()),
            );
        }
        assert!(!kinds.iter().any(|k| k == "Deployment"), "{kinds:?}");
        for kind in [
            "Namespace",
            "ServiceAccount",
            "ClusterRole",
            "ClusterRoleBinding",
            "ValidatingAdmissionPolicy",
            "ValidatingAdmissionPolicyBinding",
        ] {
            assert!(kinds.iter().any(|k| k == kind), "{kind} missing: {kinds:?}");
        }
        let sample = manifests::parse(SAMPLE).expect("sample");
        assert_eq!(sample.len(), 1);
        assert_eq!(sample[0]["metadata"]["name"], CLUSTER_NAME);
    }
}
