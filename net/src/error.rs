//! Errors of the network drivers.

use std::path::PathBuf;

/// What went wrong in I/O, TLS, QUIC or the directory.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("{path}: {source}")]
    File {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is readable by others (mode {mode:o}); run: chmod 600 {path}")]
    Permissions { path: PathBuf, mode: u32 },
    #[error("{path}: {reason}")]
    BadFile { path: PathBuf, reason: String },
    #[error("TLS setup: {0}")]
    Tls(String),
    #[error("QUIC connect: {0}")]
    Connect(#[from] quinn::ConnectError),
    #[error("QUIC connection: {0}")]
    Connection(#[from] quinn::ConnectionError),
    #[error("QUIC write: {0}")]
    Write(#[from] quinn::WriteError),
    #[error("QUIC stream closed")]
    ClosedStream(#[from] quinn::ClosedStream),
    #[error("QUIC read: {0}")]
    Read(#[from] quinn::ReadExactError),
    #[error("link frame: {0}")]
    Frame(#[from] lethe_proto::Error),
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("HTTP {url}: {reason}")]
    Http { url: String, reason: String },
    #[error("directory: {0}")]
    Directory(String),
    #[error("timed out: {0}")]
    Timeout(&'static str),
}
