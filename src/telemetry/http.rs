//! The operations endpoints: `/healthz`, `/readyz` and `/metrics` on one axum router.

use std::{net::SocketAddr, sync::Arc};

use axum::{Router, http::StatusCode, response::IntoResponse, routing::get};
use prometheus_client::registry::Registry;

use super::Health;

/// The router with `/healthz`, `/readyz` and `/metrics`; merge a program's debug routes into it.
pub fn router(health: Health, registry: Arc<Registry>) -> Router {
    Router::new()
        .route(
            "/healthz",
            get({
                let health = health.clone();
                move || {
                    let stalled = health.stalled();
                    async move { healthz(&stalled) }
                }
            }),
        )
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

/// `/healthz`: ok while every heartbeat beats; 503 naming the stalled ones otherwise.
fn healthz(stalled: &[(&'static str, std::time::Duration)]) -> (StatusCode, String) {
    if stalled.is_empty() {
        return (StatusCode::OK, "ok".to_string());
    }
    let which: Vec<String> = stalled
        .iter()
        .map(|(name, silent)| format!("{name} silent for {} s", silent.as_secs()))
        .collect();
    (
        StatusCode::SERVICE_UNAVAILABLE,
        format!("stalled: {}", which.join(", ")),
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// What `path` answers on `router`, status and body.
    async fn get_path(router: Router, path: &str) -> (StatusCode, String) {
        use tower::ServiceExt as _;
        let request = axum::http::Request::get(path)
            .body(axum::body::Body::empty())
            .expect("request");
        let response = router.oneshot(request).await.expect("response");
        let status = response.status();
        let body = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .expect("body");
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    #[tokio::test(start_paused = true)]
    async fn healthz_fails_naming_a_heartbeat_that_stopped_and_recovers_when_it_beats() {
        let health = Health::new();
        let heart = health.heartbeat("pipeline", Duration::from_secs(120));
        let router = || router(health.clone(), Arc::new(Registry::default()));
        assert_eq!(
            get_path(router(), "/healthz").await,
            (StatusCode::OK, "ok".into())
        );
        tokio::time::advance(Duration::from_secs(121)).await;
        assert_eq!(
            get_path(router(), "/healthz").await,
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "stalled: pipeline silent for 121 s".into()
            )
        );
        // Readiness is a separate question: no gate is closed.
        assert_eq!(get_path(router(), "/readyz").await.0, StatusCode::OK);
        heart.beat();
        assert_eq!(get_path(router(), "/healthz").await.0, StatusCode::OK);
    }
}
