//! Toxiproxy (built from its upstream module by `tests/controlplane/build-toxiproxy.sh`) as a
//! TCP proxy between each program and the API server, and its HTTP API: the faults a network
//! makes (latency, bandwidth, resets, an outage, half-open connections) on a real path.

use std::{path::Path, process::Command, time::Duration};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};
use tokio::time::Instant;

use crate::testenv::{ChildProcess, Tie, free_port, http_delete, http_get, http_post};

/// How long the server has to answer its API after it starts.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// A running toxiproxy server; killed when dropped.
pub(crate) struct Toxiproxy {
    process: ChildProcess,
    api_port: u16,
}

/// A toxic: a fault toxiproxy applies to the bytes of one proxy.
#[derive(Clone, Debug)]
pub(crate) struct Toxic {
    /// Its name on the proxy (one toxic of each name).
    pub name: &'static str,
    /// Toxiproxy's type: `latency`, `bandwidth`, `reset_peer`, `timeout`, ...
    pub kind: &'static str,
    /// `downstream` (API server to program) or `upstream`.
    pub stream: &'static str,
    /// The type's attributes (`{"latency": 800}`, ...).
    pub attributes: Value,
}

impl Toxiproxy {
    /// Starts `binary` on a free loopback port, its log in `<logs>/toxiproxy.log`, and waits
    /// until its API answers.
    pub(crate) async fn start(binary: &Path, logs: &Path) -> Result<Self> {
        let api_port = free_port()?;
        let mut command = Command::new(binary);
        command
            .args(["-host", "127.0.0.1", "-port", &api_port.to_string()])
            .env("LOG_LEVEL", "warn");
        let log = logs.join("toxiproxy.log");
        let process = ChildProcess::spawn("toxiproxy", command, Tie::ParentDeathSignal, log)?;
        let mut proxy = Self { process, api_port };
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            proxy.process.check_running()?;
            if http_get(api_port, "/version")
                .await
                .is_ok_and(|r| r.status == 200)
            {
                return Ok(proxy);
            }
            if Instant::now() > deadline {
                bail!("toxiproxy's API did not answer within {START_TIMEOUT:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Creates proxy `name` from a free loopback port to `upstream` (`host:port`); the port.
    pub(crate) async fn proxy(&self, name: &str, upstream: &str) -> Result<u16> {
        let port = free_port()?;
        let body = json!({
            "name": name, "listen": format!("127.0.0.1:{port}"), "upstream": upstream,
            "enabled": true
        });
        self.post("/proxies", &body).await?;
        Ok(port)
    }

    /// Adds `toxic` to proxy `proxy`, for every connection, new or open.
    pub(crate) async fn add(&self, proxy: &str, toxic: &Toxic) -> Result<()> {
        let body = json!({
            "name": toxic.name, "type": toxic.kind, "stream": toxic.stream,
            "toxicity": 1.0, "attributes": toxic.attributes
        });
        self.post(&format!("/proxies/{proxy}/toxics"), &body).await
    }

    /// Removes toxic `name` from proxy `proxy`.
    pub(crate) async fn remove(&self, proxy: &str, name: &str) -> Result<()> {
        let path = format!("/proxies/{proxy}/toxics/{name}");
        let answer = http_delete(self.api_port, &path).await?;
        if !(200..300).contains(&answer.status) {
            bail!("toxiproxy DELETE {path}: {} {}", answer.status, answer.body);
        }
        Ok(())
    }

    /// Cuts proxy `proxy` (closes its connections and refuses new ones) or restores it.
    pub(crate) async fn set_enabled(&self, proxy: &str, enabled: bool) -> Result<()> {
        let body = json!({ "enabled": enabled });
        self.post(&format!("/proxies/{proxy}"), &body).await
    }

    async fn post(&self, path: &str, body: &Value) -> Result<()> {
        let answer = http_post(self.api_port, path, &body.to_string())
            .await
            .with_context(|| format!("toxiproxy POST {path}"))?;
        if !(200..300).contains(&answer.status) {
            bail!("toxiproxy POST {path}: {} {}", answer.status, answer.body);
        }
        Ok(())
    }
}

/// Runs `tests/controlplane/build-toxiproxy.sh` from this crate's checkout; the binary's path.
pub(crate) fn build() -> Result<std::path::PathBuf> {
    let script =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/controlplane/build-toxiproxy.sh");
    crate::testenv::run_build_script(&script)
}
