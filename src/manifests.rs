//! Applying YAML manifests (like `kubectl apply --server-side`), for the demo, the benchmark
//! harness and tests that install `deploy/`.

use std::{path::Path, time::Duration};

use anyhow::{Context, Result, bail};
use kube::{
    Api, Client,
    api::{DynamicObject, GroupVersionKind, Patch, PatchParams},
    discovery::{self, Scope},
};
use serde_json::Value;

/// One object a manifest named.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Applied {
    /// `Kind`.
    pub kind: String,
    /// Namespace, for namespaced kinds.
    pub namespace: Option<String>,
    /// Name.
    pub name: String,
}

/// Parses a multi-document YAML text into its objects (empty documents skipped).
pub fn parse(yaml: &str) -> Result<Vec<Value>> {
    let docs: Vec<Value> = serde_saphyr::from_multiple(yaml).context("parsing YAML")?;
    Ok(docs.into_iter().filter(|d| !d.is_null()).collect())
}

/// The documents of `yaml` except those whose kind is one of `kinds`, as a multi-document
/// YAML (JSON) text: `deploy/` as it is, minus what a local run replaces (its Deployments).
pub fn without_kinds(yaml: &str, kinds: &[&str]) -> Result<String> {
    let kept = parse(yaml)?
        .iter()
        .filter(|d| !kinds.iter().any(|kind| d["kind"] == *kind))
        .map(serde_json::to_string)
        .collect::<Result<Vec<_>, _>>()
        .context("serializing a manifest")?;
    Ok(kept.join("\n---\n"))
}

/// Server-side applies every object of `yaml` with `field_manager`, in order. Objects of
/// namespaced kinds without a namespace go to `default_namespace`. A kind the API server does not
/// serve yet (a CRD applied just before) is retried for up to 30 s.
pub async fn apply(
    client: &Client,
    yaml: &str,
    field_manager: &str,
    default_namespace: &str,
) -> Result<Vec<Applied>> {
    let mut applied = Vec::new();
    for mut doc in parse(yaml)? {
        let api_version = doc["apiVersion"]
            .as_str()
            .context("an object without apiVersion")?
            .to_string();
        let kind = doc["kind"]
            .as_str()
            .context("an object without kind")?
            .to_string();
        let name = doc["metadata"]["name"]
            .as_str()
            .with_context(|| format!("a {kind} without metadata.name"))?
            .to_string();
        let (group, version) = match api_version.split_once('/') {
            Some((g, v)) => (g.to_string(), v.to_string()),
            None => (String::new(), api_version.clone()),
        };
        let gvk = GroupVersionKind::gvk(&group, &version, &kind);
        let (resource, caps) = discover(client, &gvk).await?;
        let api: Api<DynamicObject> = if caps.scope == Scope::Namespaced {
            let ns = doc["metadata"]["namespace"]
                .as_str()
                .unwrap_or(default_namespace)
                .to_string();
            doc["metadata"]["namespace"] = Value::String(ns.clone());
            applied.push(Applied {
                kind: kind.clone(),
                namespace: Some(ns.clone()),
                name: name.clone(),
            });
            Api::namespaced_with(client.clone(), &ns, &resource)
        } else {
            applied.push(Applied {
                kind: kind.clone(),
                namespace: None,
                name: name.clone(),
            });
            Api::all_with(client.clone(), &resource)
        };
        api.patch(
            &name,
            &PatchParams::apply(field_manager).force(),
            &Patch::Apply(&doc),
        )
        .await
        .with_context(|| format!("applying {kind} {name}"))?;
    }
    Ok(applied)
}

/// Applies every `*.yaml` file of `dir`, in name order.
pub async fn apply_dir(
    client: &Client,
    dir: &Path,
    field_manager: &str,
    default_namespace: &str,
) -> Result<Vec<Applied>> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .collect();
    files.sort();
    let mut applied = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file)
            .with_context(|| format!("reading {}", file.display()))?;
        applied.extend(
            apply(client, &text, field_manager, default_namespace)
                .await
                .with_context(|| format!("in {}", file.display()))?,
        );
    }
    Ok(applied)
}

async fn discover(
    client: &Client,
    gvk: &GroupVersionKind,
) -> Result<(kube::api::ApiResource, discovery::ApiCapabilities)> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        match discovery::pinned_kind(client, gvk).await {
            Ok(found) => return Ok(found),
            Err(e) if tokio::time::Instant::now() < deadline => {
                tracing::debug!(?gvk, error = %e, "kind not served yet; retrying");
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Err(e) => bail!(
                "the API server does not serve {}/{} {}: {e}",
                gvk.group,
                gvk.version,
                gvk.kind
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_multi_document_yaml_and_skips_empty_documents() {
        let docs = parse("---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n---\n---\napiVersion: v1\nkind: Service\nmetadata:\n  name: b\n").expect("parse");
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[1]["kind"], "Service");
    }

    #[test]
    fn leaves_out_the_named_kinds() {
        let yaml = "kind: Namespace\nmetadata: {name: a}\n---\nkind: Deployment\nmetadata: {name: b}\n---\nkind: Service\nmetadata: {name: c}\n";
        let kept = parse(&without_kinds(yaml, &["Namespace", "Deployment"]).expect("kept"))
            .expect("parse");
        assert_eq!(kept.len(), 1);
        assert_eq!(kept[0]["metadata"]["name"], "c");
    }

    #[test]
    fn malformed_yaml_is_an_error() {
        assert!(parse("kind: [unclosed").is_err());
    }
}
