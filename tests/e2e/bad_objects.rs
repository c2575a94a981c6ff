//! One bad object must not stop the operator: integer bounds in the CRD, and an undecodable
//! StatefulCluster reported and skipped.

use std::process::Command;

use crate::support::{self, control_plane};

#[tokio::test]
async fn kubectl_apply_of_the_crd_prints_no_warnings() {
    let cp = control_plane();
    // The API server warns about a schema only where it changes: create the CRD under a group
    // of its own (dry run), so every field is new.
    let yaml =
        std::fs::read_to_string(format!("{}/deploy/crd/statefulcluster.yaml", support::REPO))
            .expect("read CRD");
    let path = cp.workdir().join("crd-warnings.yaml");
    std::fs::write(
        &path,
        yaml.replace("kube-sentinel.dev", "warnings.kube-sentinel.dev"),
    )
    .expect("write CRD copy");
    let output = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(cp.admin_kubeconfig_path())
        .args(["create", "--dry-run=server", "-f"])
        .arg(&path)
        .output()
        .expect("run kubectl");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "kubectl apply failed: {stderr}");
    assert!(
        !stderr.contains("Warning"),
        "kubectl apply of the CRD warned:\n{stderr}"
    );
}
