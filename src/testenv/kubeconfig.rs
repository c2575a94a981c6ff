//! Kubeconfigs for the local control plane: built in memory, written as YAML that `kubectl`
//! and `kube::Config` both read.

use std::path::Path;

use anyhow::{Context, Result};
use base64::Engine;
use kube::config::{
    AuthInfo, Cluster, Context as KubeContext, Kubeconfig, NamedAuthInfo, NamedCluster,
    NamedContext,
};

use super::CertPair;

/// How a kubeconfig user authenticates.
pub enum Credentials {
    /// A client certificate (CN = user, O = group).
    Certificate(CertPair),
    /// A bearer token, e.g. from TokenRequest.
    Token(String),
}

const CLUSTER: &str = "kube-sentinel-testenv";

/// A kubeconfig with one cluster (`server`, trusting `ca_pem`), one user and one context
/// named `user`, which is current; `namespace` becomes the context's default namespace.
pub fn kubeconfig_for(
    server: &str,
    ca_pem: &str,
    user: &str,
    credentials: Credentials,
    namespace: Option<&str>,
) -> Kubeconfig {
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let auth_info = match credentials {
        Credentials::Certificate(pair) => AuthInfo {
            client_certificate_data: Some(b64(&pair.cert_pem)),
            client_key_data: Some(b64(&pair.key_pem).into()),
            ..Default::default()
        },
        Credentials::Token(token) => AuthInfo {
            token: Some(token.into()),
            ..Default::default()
        },
    };
    Kubeconfig {
        clusters: vec![NamedCluster {
            name: CLUSTER.into(),
            cluster: Some(Cluster {
                server: Some(server.into()),
                certificate_authority_data: Some(b64(ca_pem)),
                ..Default::default()
            }),
            other: Default::default(),
        }],
        auth_infos: vec![NamedAuthInfo {
            name: user.into(),
            auth_info: Some(auth_info),
            other: Default::default(),
        }],
        contexts: vec![NamedContext {
            name: user.into(),
            context: Some(KubeContext {
                cluster: CLUSTER.into(),
                user: Some(user.into()),
                namespace: namespace.map(Into::into),
                ..Default::default()
            }),
            other: Default::default(),
        }],
        current_context: Some(user.into()),
        api_version: Some("v1".into()),
        kind: Some("Config".into()),
        ..Default::default()
    }
}

/// `base` with its user replaced by a bearer-token user `user`, on the same cluster.
pub fn with_token(
    base: &Kubeconfig,
    user: &str,
    token: String,
    namespace: &str,
) -> Result<Kubeconfig> {
    let cluster = base
        .clusters
        .first()
        .and_then(|c| c.cluster.as_ref())
        .context("the kubeconfig names no cluster")?;
    let server = cluster
        .server
        .as_deref()
        .context("the kubeconfig's cluster has no server")?;
    let ca_b64 = cluster
        .certificate_authority_data
        .as_deref()
        .context("the kubeconfig's cluster has no certificate-authority-data")?;
    let ca = base64::engine::general_purpose::STANDARD
        .decode(ca_b64.trim())
        .context("certificate-authority-data is not base64")?;
    let ca = String::from_utf8(ca).context("certificate-authority-data is not PEM text")?;
    Ok(kubeconfig_for(
        server,
        &ca,
        user,
        Credentials::Token(token),
        Some(namespace),
    ))
}

/// Writes `kubeconfig` to `path` as YAML, readable by the owner only (it holds keys).
pub fn write(kubeconfig: &Kubeconfig, path: &Path) -> Result<()> {
    let yaml = to_yaml(kubeconfig)?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, yaml).with_context(|| format!("writing {}", tmp.display()))?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))
            .with_context(|| format!("restricting {}", tmp.display()))?;
    }
    // Rename so a reader polling for the file never sees half of it.
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))
}

/// The kubeconfig as YAML.
pub fn to_yaml(kubeconfig: &Kubeconfig) -> Result<String> {
    serde_saphyr::to_string(kubeconfig).context("serializing the kubeconfig")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_kubeconfig_round_trips_through_yaml() {
        let kc = kubeconfig_for(
            "https://127.0.0.1:6443",
            "-----BEGIN CERTIFICATE-----\nx\n-----END CERTIFICATE-----\n",
            "admin",
            Credentials::Token("t0k".into()),
            Some("ns"),
        );
        let yaml = to_yaml(&kc).expect("yaml");
        let back = Kubeconfig::from_yaml(&yaml).expect("parses");
        assert_eq!(back.current_context.as_deref(), Some("admin"));
        let sa = with_token(&back, "sa", "t2".into(), "other").expect("with_token");
        assert_eq!(
            sa.contexts[0]
                .context
                .as_ref()
                .and_then(|c| c.namespace.as_deref()),
            Some("other")
        );
        assert_eq!(
            sa.clusters[0]
                .cluster
                .as_ref()
                .and_then(|c| c.server.as_deref()),
            Some("https://127.0.0.1:6443")
        );
    }
}
