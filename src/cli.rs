//! Command-line helpers shared by the programs.

use std::{path::Path, time::Duration};

use anyhow::Context;
use kube::{Client, Config, config::KubeConfigOptions};

/// Parses a duration flag: `2s`, `500ms`, `1m30s`, `10h` (jiff's friendly format), or a bare
/// number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if let Ok(secs) = text.parse::<f64>() {
        return Duration::try_from_secs_f64(secs)
            .map_err(|_| format!("{text:?}: a duration must be a non-negative number of seconds"));
    }
    let signed: jiff::SignedDuration = text
        .parse()
        .map_err(|e| format!("{text:?} is not a duration like 2s, 500ms or 10h: {e}"))?;
    Duration::try_from(signed).map_err(|_| format!("{text:?}: a duration must not be negative"))
}

/// A client for the cluster named by `--kubeconfig`, else the usual places: in-cluster
/// configuration, `KUBECONFIG`, `~/.kube/config`. Fails with one clear line when there is none.
pub async fn kube_client(kubeconfig: Option<&Path>) -> anyhow::Result<Client> {
    let config = match kubeconfig {
        Some(path) => {
            let kc = kube::config::Kubeconfig::read_from(path)
                .with_context(|| format!("reading kubeconfig {}", path.display()))?;
            Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
                .await
                .with_context(|| format!("using kubeconfig {}", path.display()))?
        }
        None => Config::infer().await.map_err(|e| {
            anyhow::anyhow!(
                "no Kubernetes cluster configuration found (pass --kubeconfig, set KUBECONFIG, \
                 or run in a cluster): {e}"
            )
        })?,
    };
    Client::try_from(config).context("building the Kubernetes client")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_friendly_durations_and_refuses_nonsense() {
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("10h"), Ok(Duration::from_secs(36_000)));
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
        for bad in ["", "two", "-1", "-2s", "5 parsecs"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }
}
