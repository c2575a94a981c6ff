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

use std::{
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use http::{Request, Response, Uri};
use kube::{
    Client, Config,
    client::{Body, ClientBuilder},
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
        let body_idle = if is_watch(request.uri()) {
            self.timeouts.watch_body_idle()
        } else {
            limit
        };
        let response = self.inner.call(request);
        Box::pin(async move {
            let response = tokio::time::timeout(limit, response)
                .await
                .map_err(|_| TimedOut(limit))??;
            Ok(response.map(|body| Box::pin(TimeoutBody::new(body_idle, body))))
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
