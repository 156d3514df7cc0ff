//! HTTP/1.1 for the directory and the metrics endpoints: the server ([`serve`], on hyper,
//! in `http/server.rs`) and a deliberately small client (one request per connection,
//! Content-Length bodies, bounded sizes and time) that fetches documents and uploads
//! descriptors. The server faces anyone on the Internet, so it is a well-kept stack; the
//! client talks only to the authorities it was configured with.

mod server;
pub use server::{
    BODY_TIMEOUT, CONNECTION_TIMEOUT, HEADER_TIMEOUT, MAX_CONNECTIONS, MAX_CONNECTIONS_PER_PREFIX,
    serve,
};

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::NetError;

const MAX_HEAD: usize = 8 * 1024;
/// Largest request body a server accepts (descriptors are under 1 KiB).
pub const MAX_REQUEST_BODY: usize = 64 * 1024;
/// Largest response body a client accepts (a topology document of many relays).
pub const MAX_RESPONSE_BODY: usize = 16 * 1024 * 1024;
const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// A parsed request.
#[derive(Debug)]
pub struct Request {
    /// `GET`, `POST`, ...
    pub method: String,
    /// The path, query included.
    pub path: String,
    /// The body.
    pub body: Vec<u8>,
}

/// A response to send.
#[derive(Debug)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Content-Type header.
    pub content_type: &'static str,
    /// The body.
    pub body: Vec<u8>,
}

impl Response {
    /// 200 with a body.
    pub fn ok(content_type: &'static str, body: impl Into<Vec<u8>>) -> Self {
        Response {
            status: 200,
            content_type,
            body: body.into(),
        }
    }
    /// An error status with a plain-text reason.
    pub fn error(status: u16, reason: impl Into<String>) -> Self {
        Response {
            status,
            content_type: "text/plain; charset=utf-8",
            body: reason.into().into_bytes(),
        }
    }
}

/// A request handler.
pub type Handler = Arc<dyn Fn(Request) -> Response + Send + Sync>;

fn find_head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 4)
}

fn content_length(head: &str) -> Option<usize> {
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim()
            .eq_ignore_ascii_case("content-length")
            .then(|| v.trim().parse().ok())?
    })
}

/// Read a head and a Content-Length body from `s`.
async fn read_message(s: &mut TcpStream, max_body: usize) -> Result<(String, Vec<u8>), String> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(end) = find_head_end(&buf) {
            break end;
        }
        if buf.len() > MAX_HEAD {
            return Err("header too large".into());
        }
        let n = s.read(&mut chunk).await.map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("connection closed before the end of the header".into());
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let len = content_length(&head).unwrap_or(0);
    if len > max_body {
        return Err(format!("body of {len} bytes is too large"));
    }
    let mut body = buf[head_end..].to_vec();
    while body.len() < len {
        let n = s.read(&mut chunk).await.map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("connection closed inside the body".into());
        }
        body.extend_from_slice(&chunk[..n]);
    }
    body.truncate(len);
    Ok((head, body))
}

fn parse_url(url: &str) -> Result<(String, String), NetError> {
    let bad = |reason: &str| NetError::Http {
        url: url.to_string(),
        reason: reason.to_string(),
    };
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| bad("only http:// URLs are supported"))?;
    let (host, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if host.is_empty() {
        return Err(bad("no host"));
    }
    Ok((host.to_string(), path.to_string()))
}

/// One HTTP request; returns status and body. Bounded by a 5 s timeout per step.
pub async fn request(
    method: &str,
    url: &str,
    body: Option<&[u8]>,
) -> Result<(u16, Vec<u8>), NetError> {
    let err = |reason: String| NetError::Http {
        url: url.to_string(),
        reason,
    };
    let (host, path) = parse_url(url)?;
    let target = if host
        .rsplit_once(':')
        .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
    {
        host.clone()
    } else {
        format!("{host}:80")
    };
    let fut = async {
        let addr: SocketAddr = tokio::net::lookup_host(&target)
            .await
            .map_err(|e| e.to_string())?
            .next()
            .ok_or("no address")?;
        let mut s = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        let body = body.unwrap_or_default();
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {host}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        s.write_all(head.as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        // A server may refuse the body and close early; its answer is still worth reading.
        let _ = s.write_all(body).await;
        let (head, body) = read_message(&mut s, MAX_RESPONSE_BODY).await?;
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse::<u16>().ok())
            .ok_or("bad status line")?;
        Ok::<_, String>((status, body))
    };
    tokio::time::timeout(IO_TIMEOUT, fut)
        .await
        .map_err(|_| err("timed out".into()))?
        .map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    #[tokio::test]
    async fn serves_get_and_post_and_rejects_oversized_bodies() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = crate::shutdown::channel();
        let handler: Handler = Arc::new(|r: Request| match (r.method.as_str(), r.path.as_str()) {
            ("GET", "/hello") => Response::ok("text/plain", "hi"),
            ("POST", "/echo") => Response::ok("application/octet-stream", r.body),
            _ => Response::error(404, "no such path"),
        });
        let server = tokio::spawn(serve(listener, handler, rx));
        let base = format!("http://{addr}");
        assert_eq!(
            request("GET", &format!("{base}/hello"), None)
                .await
                .unwrap(),
            (200, b"hi".to_vec())
        );
        let big = vec![7u8; 60_000];
        assert_eq!(
            request("POST", &format!("{base}/echo"), Some(&big))
                .await
                .unwrap(),
            (200, big)
        );
        assert_eq!(
            request("GET", &format!("{base}/x"), None).await.unwrap().0,
            404
        );
        let huge = vec![0u8; MAX_REQUEST_BODY + 1];
        assert_eq!(
            request("POST", &format!("{base}/echo"), Some(&huge))
                .await
                .unwrap()
                .0,
            413
        );
        assert!(request("GET", "https://example", None).await.is_err());
        tx.fire();
        server.await.unwrap();
    }
}
