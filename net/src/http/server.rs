//! The HTTP/1.1 server of the directory authorities and the metrics endpoints, on hyper:
//! one request per connection, bounded in connections (per source prefix and in all), in
//! header and body size, and in time at every step, so idle or slow clients (slowloris)
//! cannot take every slot.

use std::convert::Infallible;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use lethe_proto::limit::{Counters, source_prefix};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::shutdown::Shutdown;

use super::{Handler, MAX_REQUEST_BODY, Request, Response};

/// Connections served at once, all sources together; others wait for a slot.
pub const MAX_CONNECTIONS: usize = 256;
/// Connections served at once from one source prefix (an IPv4 address, an IPv6 /64); more
/// are closed at once.
pub const MAX_CONNECTIONS_PER_PREFIX: usize = 8;
/// The request line and headers must arrive within this.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// The body must arrive within this.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(10);
/// No connection lives longer than this, whatever it does.
pub const CONNECTION_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest request head (line and headers) read.
const MAX_HEAD: usize = 16 * 1024;

fn to_hyper(r: Response) -> hyper::Response<Full<Bytes>> {
    let mut resp = hyper::Response::new(Full::new(Bytes::from(r.body)));
    *resp.status_mut() =
        hyper::StatusCode::from_u16(r.status).unwrap_or(hyper::StatusCode::INTERNAL_SERVER_ERROR);
    if let Ok(v) = hyper::header::HeaderValue::from_str(r.content_type) {
        resp.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    resp
}

async fn answer(handler: Handler, req: hyper::Request<Incoming>) -> Response {
    let method = req.method().as_str().to_string();
    let path = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "/".into());
    let limited = Limited::new(req.into_body(), MAX_REQUEST_BODY);
    let body = match tokio::time::timeout(BODY_TIMEOUT, limited.collect()).await {
        Ok(Ok(c)) => c.to_bytes().to_vec(),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => {
            return Response::error(413, format!("body over {MAX_REQUEST_BODY} bytes"));
        }
        Ok(Err(_)) => return Response::error(400, "body could not be read"),
        Err(_) => return Response::error(408, "request timeout"),
    };
    handler(Request { method, path, body })
}

/// Serve `handler` on `listener` until `shutdown` turns true.
pub async fn serve(listener: TcpListener, handler: Handler, mut shutdown: Shutdown) {
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let per_prefix: Arc<Mutex<Counters<IpAddr>>> = Arc::new(Mutex::new(Counters::new(
        MAX_CONNECTIONS_PER_PREFIX,
        MAX_CONNECTIONS,
    )));
    loop {
        let permit = tokio::select! {
            p = permits.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => return },
            _ = shutdown.wait() => return,
        };
        let accepted = tokio::select! {
            c = listener.accept() => c,
            _ = shutdown.wait() => return,
        };
        let (stream, peer) = match accepted {
            Ok(c) => c,
            // Out of file descriptors or similar: do not spin.
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let prefix = source_prefix(peer.ip());
        let admitted = per_prefix
            .lock()
            .map(|mut c| c.acquire(prefix))
            .unwrap_or(false);
        if !admitted {
            // Closed at once: one source cannot hold more than its share of slots.
            drop(stream);
            continue;
        }
        let (handler, per_prefix) = (handler.clone(), per_prefix.clone());
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let handler = handler.clone();
                async move { Ok::<_, Infallible>(to_hyper(answer(handler, req).await)) }
            });
            let conn = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .keep_alive(false)
                .max_buf_size(MAX_HEAD)
                .serve_connection(TokioIo::new(stream), svc);
            let _ = tokio::time::timeout(CONNECTION_TIMEOUT, conn).await;
            if let Ok(mut c) = per_prefix.lock() {
                c.release(prefix);
            }
            drop(permit);
        });
    }
}
