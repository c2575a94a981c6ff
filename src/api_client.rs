//! The programs' Kubernetes client: a deadline on every call, and no retry layer of its own.
//!
//! * **Deadlines.** kube's client has no read timeout (`Config::read_timeout` is `None`), so a
//!   stalled connection would pin a call forever. Every response must start within
//!   [`Timeouts::request`], and no part of a body may take longer than that to follow the last
//!   one (a slow but moving list is fine; a silent one fails). A watch's body is bounded by the
//!   watch itself: the API server ends it after [`Timeouts::watch`], and kube's watcher reopens
//!   one that stays silent for that plus 5 s (a half-open connection), so a blind watch becomes
//!   a failed reopen, a watch error and, with time, an unready `/readyz`.
//! * **One retry layer.** kube retries 429, 503 and 504 by itself up to 15 times (backoff up to
//!   1000 s), invisibly, under the callers' own retries of the same codes. It is turned off: the
//!   callers' layers (the sentinel's `RetrySink`, the operator's work-queue backoff, the
//!   watchers' backoff) are the one layer, and each counts its retries in the metrics.
//! * **Every request counted**, by method and response code, as client-go's
//!   `rest_client_requests_total` ([`requests`]): what a program costs the API server.

use std::{
    pin::Pin,
    sync::LazyLock,
    task::{Context, Poll},
    time::Duration,
};

use http::{Request, Response, Uri};
use kube::{
    Client, Config,
    client::{Body, ClientBuilder},
};
use prometheus_client::{
    encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder},
    metrics::{counter::Counter, family::Family},
    registry::Registry,
};
use tower::{BoxError, Layer, Service};
use tower_http::timeout::TimeoutBody;

/// How long calls to the API server may take.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    /// Longest wait for a response's headers, and between two parts of a body (a watch's body
    /// excepted).
    pub request: Duration,
    /// How long the API server keeps a watch open before the watcher reopens it (from the last
    /// resource version: no relist); a watch silent for this plus 5 s is reopened.
    pub watch: Duration,
}

impl Default for Timeouts {
    /// 30 s per request, watches reopened every 60 s.
    fn default() -> Self {
        Self {
            request: Duration::from_secs(30),
            watch: Duration::from_secs(60),
        }
    }
}

impl Timeouts {
    /// The watch length in whole seconds for `watcher::Config::timeout` (at least 1).
    pub fn watch_seconds(&self) -> u32 {
        u32::try_from(self.watch.as_secs())
            .unwrap_or(u32::MAX)
            .max(1)
    }

    /// Longest silence of a watch's body: the watcher's own idle limit (watch plus 5 s) fires
    /// first; this is the backstop.
    fn watch_body_idle(&self) -> Duration {
        self.watch + self.request
    }
}

/// Requests by method and response code, as client-go's `rest_client_requests_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// `GET`, `POST`, `PUT`, `PATCH`, `DELETE`, or `OTHER`.
    pub method: &'static str,
    /// The response's status code, or `<error>` when none came (a timeout, a reset).
    pub code: StatusCode,
}

/// A response's status code as a label value: the number, or `<error>` for none.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub struct StatusCode(pub Option<u16>);

impl EncodeLabelValue for StatusCode {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> std::fmt::Result {
        match self.0 {
            Some(code) => EncodeLabelValue::encode(&code, encoder),
            None => std::fmt::Write::write_str(encoder, "<error>"),
        }
    }
}

/// Every request of every client [`build`] made in this process, counted once per attempt
/// (there is one retry layer, the callers'), by [`RequestLabels`]; the API writes a program
/// costs are its `POST`, `PUT`, `PATCH` and `DELETE`.
pub fn requests() -> &'static Family<RequestLabels, Counter> {
    static REQUESTS: LazyLock<Family<RequestLabels, Counter>> = LazyLock::new(Family::default);
    &REQUESTS
}

/// Registers [`requests`] in `registry` as `rest_client_requests_total`.
pub fn register(registry: &mut Registry) {
    registry.register(
        "rest_client_requests",
        "Requests to the API server, by method and response code",
        requests().clone(),
    );
}

fn method_label(method: &http::Method) -> &'static str {
    match *method {
        http::Method::GET => "GET",
        http::Method::POST => "POST",
        http::Method::PUT => "PUT",
        http::Method::PATCH => "PATCH",
        http::Method::DELETE => "DELETE",
        _ => "OTHER",
    }
}

/// A client for `config` with [`Timeouts`] on every call and kube's own retry layer off.
pub fn build(mut config: Config, timeouts: Timeouts) -> kube::Result<Client> {
    config.default_retry = false;
    Ok(ClientBuilder::try_from(config)?
        .with_layer(&DeadlineLayer(timeouts))
        .build())
}

/// A call that got no response (or no next part of one) in time.
#[derive(Debug, thiserror::Error)]
#[error("the API server did not answer within {0:?}")]
pub struct TimedOut(pub Duration);

/// Puts [`Deadline`] around the client's service.
struct DeadlineLayer(Timeouts);

impl<S> Layer<S> for DeadlineLayer {
    type Service = Deadline<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Deadline {
            inner,
            timeouts: self.0,
        }
    }
}

/// Fails a call whose response does not start within the request timeout, and a body that
/// falls silent for longer than its limit.
struct Deadline<S> {
    inner: S,
    timeouts: Timeouts,
}

type Limited<B> = Pin<Box<TimeoutBody<B>>>;

impl<S, B> Service<Request<Body>> for Deadline<S>
where
    S: Service<Request<Body>, Response = Response<B>, Error = BoxError>,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = Response<Limited<B>>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let limit = self.timeouts.request;
        let method = method_label(request.method());
        let body_idle = if is_watch(request.uri()) {
            self.timeouts.watch_body_idle()
        } else {
            limit
        };
        let response = self.inner.call(request);
        Box::pin(async move {
            let response = tokio::time::timeout(limit, response)
                .await
                .map_err(|_| BoxError::from(TimedOut(limit)))
                .and_then(|answered| answered);
            let code = StatusCode(response.as_ref().ok().map(|r| r.status().as_u16()));
            requests()
                .get_or_create(&RequestLabels { method, code })
                .inc();
            Ok(response?.map(|body| Box::pin(TimeoutBody::new(body_idle, body))))
        })
    }
}

/// Whether a request is a watch (`?watch=true`), whose body is a stream of events.
fn is_watch(uri: &Uri) -> bool {
    uri.query()
        .is_some_and(|q| q.split('&').any(|p| p == "watch=true" || p == "watch=1"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_watch_requests_count_as_watches() {
        for (uri, watch) in [
            ("/api/v1/services?watch=true&resourceVersion=1", true),
            (
                "/api/v1/namespaces/a/services?labelSelector=x&watch=1",
                true,
            ),
            ("/api/v1/services", false),
            ("/api/v1/services?labelSelector=watch%3Dtrue", false),
        ] {
            assert_eq!(is_watch(&uri.parse().expect("uri")), watch, "{uri}");
        }
        let t = Timeouts::default();
        assert_eq!(t.watch_seconds(), 60);
        assert_eq!(
            Timeouts {
                watch: Duration::from_millis(10),
                ..t
            }
            .watch_seconds(),
            1
        );
    }

    /// A server that accepts connections, writes `start` on each once it has read a request,
    /// and then never writes again.
    async fn stalling_server(start: &'static [u8]) -> (String, tokio::task::JoinHandle<()>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let task = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((mut socket, _)) = listener.accept().await {
                let mut request = [0u8; 4096];
                if socket.read(&mut request).await.is_ok() {
                    let _ = socket.write_all(start).await;
                }
                held.push(socket);
            }
        });
        (url, task)
    }

    /// A GET through [`build`] with a 300 ms request timeout: its error and how long it took.
    async fn get_from(url: &str) -> (kube::Error, Duration) {
        let timeouts = Timeouts {
            request: Duration::from_millis(300),
            ..Timeouts::default()
        };
        let client = build(Config::new(url.parse().expect("url")), timeouts).expect("client");
        let api: kube::Api<k8s_openapi::api::core::v1::ConfigMap> =
            kube::Api::namespaced(client, "default");
        let started = std::time::Instant::now();
        let result = tokio::time::timeout(Duration::from_secs(10), api.get("x"))
            .await
            .expect("the call must not hang");
        (
            result.expect_err("a stalled answer is an error"),
            started.elapsed(),
        )
    }

    #[tokio::test]
    async fn a_call_to_a_server_that_never_answers_fails_at_the_request_timeout() {
        let (url, server) = stalling_server(b"").await;
        let (error, took) = get_from(&url).await;
        assert!(
            error.to_string().contains("did not answer within"),
            "{error}"
        );
        assert!(took >= Duration::from_millis(300), "{took:?}");
        server.abort();
    }

    /// A server that answers every request with `418 I'm a teapot` (a code no other test
    /// sees, so the process-wide count is this test's).
    async fn teapot() -> (String, tokio::task::JoinHandle<()>) {
        stalling_server(
            b"HTTP/1.1 418 I'm a teapot\r\nconnection: close\r\ncontent-length: 0\r\n\r\n",
        )
        .await
    }

    #[tokio::test]
    async fn every_request_is_counted_by_method_and_code() {
        let (url, server) = teapot().await;
        let count = |method, code| {
            let code = StatusCode(code);
            requests()
                .get_or_create(&RequestLabels { method, code })
                .get()
        };
        let (gets, deletes) = (count("GET", Some(418)), count("DELETE", Some(418)));
        let timeouts = Timeouts {
            request: Duration::from_secs(5),
            ..Timeouts::default()
        };
        let client = build(Config::new(url.parse().expect("url")), timeouts).expect("client");
        let api: kube::Api<k8s_openapi::api::core::v1::ConfigMap> =
            kube::Api::namespaced(client, "default");
        for _ in 0..3 {
            assert!(api.get("x").await.is_err(), "a teapot is no ConfigMap");
        }
        assert!(api.delete("x", &Default::default()).await.is_err());
        let counted = (
            count("GET", Some(418)) - gets,
            count("DELETE", Some(418)) - deletes,
        );
        assert_eq!(counted, (3, 1));
        let (stalled, _) = stalling_server(b"").await;
        let errors = count("GET", None);
        let _ = get_from(&stalled).await;
        assert!(
            count("GET", None) > errors,
            "a call without an answer counts as <error>"
        );
        let mut text = String::new();
        let mut registry = prometheus_client::registry::Registry::default();
        register(&mut registry);
        prometheus_client::encoding::text::encode(&mut text, &registry).expect("encode");
        assert!(
            text.contains(r#"rest_client_requests_total{method="GET",code="418"}"#),
            "{text}"
        );
        assert!(text.contains(r#"code="<error>""#), "{text}");
        server.abort();
    }

    #[tokio::test]
    async fn a_body_that_stops_halfway_fails_at_the_request_timeout() {
        let (url, server) = stalling_server(
            b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{\"kind\":",
        )
        .await;
        let (error, took) = get_from(&url).await;
        assert!(took >= Duration::from_millis(300), "{took:?}: {error}");
        server.abort();
    }
}
