//! Talking to local programs over loopback: free ports to give them, and the one HTTP GET probe
//! of their `/readyz`, `/metrics` and `/debug` endpoints (and POST and DELETE, for the JSON APIs
//! of etcd and toxiproxy).

use std::{
    net::{SocketAddr, TcpListener},
    time::Duration,
};

use anyhow::{Context, Result, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Longest wait for one probe's whole answer: a program that accepts and never answers does not
/// hang its caller.
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

/// Picks `N` distinct free loopback ports by binding port 0 and releasing them together.
pub fn free_ports<const N: usize>() -> Result<[u16; N]> {
    let listeners = (0..N)
        .map(|_| TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))))
        .collect::<std::io::Result<Vec<_>>>()
        .context("finding free loopback ports")?;
    let mut ports = [0u16; N];
    for (port, listener) in ports.iter_mut().zip(&listeners) {
        *port = listener.local_addr()?.port();
    }
    Ok(ports)
}

/// One free loopback port.
pub fn free_port() -> Result<u16> {
    let [port] = free_ports()?;
    Ok(port)
}

/// An HTTP answer: status code and body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpResponse {
    /// The status code (200, 503, …).
    pub status: u16,
    /// The body, as sent.
    pub body: String,
}

impl HttpResponse {
    /// The body, or an error naming the status unless it is 200.
    pub fn ok_body(self) -> Result<String> {
        if self.status != 200 {
            bail!("HTTP status {}", self.status);
        }
        Ok(self.body)
    }
}

/// `GET path` on `127.0.0.1:port` (HTTP/1.0, so the server closes the connection after the
/// body). An error if nothing answers within 10 s or the answer is not HTTP; any status is an
/// answer.
///
/// ```no_run
/// # async fn probe(port: u16) -> anyhow::Result<()> {
/// let ready = kube_sentinel::testenv::http_get(port, "/readyz").await?;
/// assert_eq!((ready.status, ready.body.trim()), (200, "ok"));
/// # Ok(()) }
/// ```
pub async fn http_get(port: u16, path: &str) -> Result<HttpResponse> {
    let request = format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n");
    send(port, &format!("GET {path}"), request).await
}

/// `POST path` with the JSON `body` on `127.0.0.1:port`, as [`http_get`].
pub(crate) async fn http_post(port: u16, path: &str, body: &str) -> Result<HttpResponse> {
    let request = format!(
        "POST {path} HTTP/1.0\r\nHost: localhost\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    send(port, &format!("POST {path}"), request).await
}

/// `DELETE path` on `127.0.0.1:port`, as [`http_get`].
pub(crate) async fn http_delete(port: u16, path: &str) -> Result<HttpResponse> {
    let request = format!("DELETE {path} HTTP/1.0\r\nHost: localhost\r\n\r\n");
    send(port, &format!("DELETE {path}"), request).await
}

async fn send(port: u16, what: &str, request: String) -> Result<HttpResponse> {
    tokio::time::timeout(PROBE_TIMEOUT, exchange(port, request))
        .await
        .with_context(|| format!("{what} on 127.0.0.1:{port}: no answer in {PROBE_TIMEOUT:?}"))?
        .with_context(|| format!("{what} on 127.0.0.1:{port}"))
}

async fn exchange(port: u16, request: String) -> Result<HttpResponse> {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .context("connecting")?;
    stream.write_all(request.as_bytes()).await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    parse_response(&response)
}

/// Splits a raw HTTP/1.x response into its status code and body.
fn parse_response(response: &str) -> Result<HttpResponse> {
    let (head, body) = response
        .split_once("\r\n\r\n")
        .context("a malformed HTTP response")?;
    let status_line = head.lines().next().unwrap_or_default();
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .with_context(|| format!("a malformed HTTP status line {status_line:?}"))?;
    Ok(HttpResponse {
        status,
        body: body.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_status_and_body() {
        let ok = parse_response("HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n\r\nok\n")
            .expect("parses");
        assert_eq!(
            ok,
            HttpResponse {
                status: 200,
                body: "ok\n".into()
            }
        );
        assert_eq!(ok.ok_body().expect("200"), "ok\n");
        let unavailable =
            parse_response("HTTP/1.0 503 Service Unavailable\r\n\r\nnot leader").expect("parses");
        assert_eq!(unavailable.status, 503);
        let err = unavailable.ok_body().expect_err("not 200");
        assert!(err.to_string().contains("503"), "{err}");
        assert!(parse_response("garbage").is_err());
        assert!(parse_response("HTTP/1.0 abc\r\n\r\n").is_err());
    }

    #[tokio::test]
    async fn gets_from_a_local_server() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let server = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.expect("accept");
            let mut request = [0u8; 256];
            let n = socket.read(&mut request).await.expect("read");
            let request = String::from_utf8_lossy(&request[..n]).into_owned();
            socket
                .write_all(b"HTTP/1.0 200 OK\r\n\r\nhello")
                .await
                .expect("write");
            request
        });
        let response = http_get(port, "/metrics").await.expect("answer");
        assert_eq!(response.ok_body().expect("200"), "hello");
        let request = server.await.expect("server");
        assert!(
            request.starts_with("GET /metrics HTTP/1.0\r\n"),
            "{request}"
        );
        assert!(free_ports::<3>().expect("ports").iter().all(|p| *p != 0));
    }
}
