//! The node's error type.

use std::path::PathBuf;

/// Why the node could not start or keep running.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("config: {reason}")]
    ConfigSyntax { reason: String },
    #[error("config field {field}: {reason}")]
    Config { field: &'static str, reason: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0} already exists; refusing to overwrite an existing node")]
    AlreadyInitialised(PathBuf),
    #[error(transparent)]
    Net(#[from] lethe_net::NetError),
    #[error(transparent)]
    Proto(#[from] lethe_proto::Error),
    #[error("cannot bind {addr}: {source}")]
    Bind {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
}
