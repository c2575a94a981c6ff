//! Operations endpoints shared by both programs: `/healthz`, `/readyz`, `/metrics`, plus any
//! debug routes a program adds, and the `tracing` subscriber set-up.
//!
//! Readiness is a set of named gates ([`Health::gate`]); `/readyz` answers 200 only when every
//! gate is open, and otherwise 503 naming the closed ones, so a probe failure says why.

use std::{
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
};

use axum::{Router, http::StatusCode, response::IntoResponse, routing::get};
use prometheus_client::registry::Registry;

type Gates = Vec<(&'static str, Arc<AtomicBool>)>;

/// Readiness gates shared between the program's stages and the `/readyz` handler.
#[derive(Clone, Default)]
pub struct Health {
    gates: Arc<Mutex<Gates>>,
}

/// One readiness condition, closed until [`Gate::set`] opens it.
#[derive(Clone, Debug)]
pub struct Gate(Arc<AtomicBool>);

impl Gate {
    /// Opens (`true`) or closes (`false`) the gate.
    pub fn set(&self, open: bool) {
        self.0.store(open, Ordering::Relaxed);
    }

    /// Whether the gate is open.
    pub fn is_open(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

impl Health {
    /// A health registry with no gates: ready until a gate is added.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a readiness gate named `name`, initially closed.
    pub fn gate(&self, name: &'static str) -> Gate {
        let flag = Arc::new(AtomicBool::new(false));
        self.lock().push((name, flag.clone()));
        Gate(flag)
    }

    /// Names of the gates that are closed; empty when ready.
    pub fn not_ready(&self) -> Vec<&'static str> {
        self.lock()
            .iter()
            .filter(|(_, open)| !open.load(Ordering::Relaxed))
            .map(|(name, _)| *name)
            .collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Gates> {
        // A poisoned list of flags is still a valid list of flags.
        self.gates.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Readiness from the outcome of API calls: unready once calls have failed without a success
/// for longer than a grace period (a blip is not an outage).
#[derive(Debug)]
pub struct Reachability {
    gate: Gate,
    grace: std::time::Duration,
    failing_since: Option<tokio::time::Instant>,
}

impl Reachability {
    /// Drives `gate` (opened now) with the given grace period.
    pub fn new(gate: Gate, grace: std::time::Duration) -> Self {
        gate.set(true);
        Self {
            gate,
            grace,
            failing_since: None,
        }
    }

    /// A call succeeded.
    pub fn succeeded(&mut self) {
        self.failing_since = None;
        self.gate.set(true);
    }

    /// A call failed; returns for how long calls have been failing.
    pub fn failed(&mut self) -> std::time::Duration {
        let since = *self
            .failing_since
            .get_or_insert_with(tokio::time::Instant::now);
        let down_for = since.elapsed();
        self.gate.set(down_for < self.grace);
        down_for
    }
}

/// The router with `/healthz`, `/readyz` and `/metrics`; merge a program's debug routes into it.
pub fn router(health: Health, registry: Arc<Registry>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(move || {
                let health = health.clone();
                async move {
                    let closed = health.not_ready();
                    if closed.is_empty() {
                        (StatusCode::OK, "ok".to_string())
                    } else {
                        (
                            StatusCode::SERVICE_UNAVAILABLE,
                            format!("not ready: {}", closed.join(", ")),
                        )
                    }
                }
            }),
        )
        .route(
            "/metrics",
            get(move || {
                let registry = registry.clone();
                async move { encode_metrics(&registry).into_response() }
            }),
        )
}

fn encode_metrics(registry: &Registry) -> impl IntoResponse {
    let mut body = String::new();
    match prometheus_client::encoding::text::encode(&mut body, registry) {
        Ok(()) => (
            StatusCode::OK,
            [(
                axum::http::header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            body,
        ),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            [(axum::http::header::CONTENT_TYPE, "text/plain")],
            format!("encoding metrics failed: {e}"),
        ),
    }
}

/// Serves `router` on `addr` until `shutdown` resolves.
pub async fn serve(
    addr: SocketAddr,
    router: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(%addr, "serving /healthz, /readyz and /metrics");
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
}

/// Installs the global `tracing` subscriber: `RUST_LOG` filtering (default `info`), one line per
/// event, JSON when `json` is set.
pub fn init_tracing(json: bool) {
    use tracing_subscriber::{EnvFilter, fmt};
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    use std::io::IsTerminal;
    let builder = fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    // A second init (tests, embedding) keeps the first subscriber; that is not an error.
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn unready_only_after_failing_for_the_grace_period() {
        let health = Health::new();
        let mut r = Reachability::new(health.gate("api"), std::time::Duration::from_secs(30));
        assert!(health.not_ready().is_empty());
        r.failed();
        tokio::time::advance(std::time::Duration::from_secs(29)).await;
        assert_eq!(r.failed(), std::time::Duration::from_secs(29));
        assert!(health.not_ready().is_empty(), "a blip is not an outage");
        tokio::time::advance(std::time::Duration::from_secs(1)).await;
        r.failed();
        assert_eq!(health.not_ready(), ["api"]);
        r.succeeded();
        assert!(health.not_ready().is_empty());
        r.failed();
        assert!(
            health.not_ready().is_empty(),
            "the clock restarts after a success"
        );
    }

    #[test]
    fn ready_only_when_every_gate_is_open() {
        let health = Health::new();
        assert!(health.not_ready().is_empty());
        let synced = health.gate("watches-synced");
        let api = health.gate("api-reachable");
        assert_eq!(health.not_ready(), vec!["watches-synced", "api-reachable"]);
        synced.set(true);
        assert_eq!(health.not_ready(), vec!["api-reachable"]);
        api.set(true);
        assert!(health.not_ready().is_empty());
        api.set(false);
        assert_eq!(health.not_ready(), vec!["api-reachable"]);
    }
}
