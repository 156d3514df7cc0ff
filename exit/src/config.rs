//! The exit's directory and settings: `exit.toml` (`[exit]`), created by `init` next to
//! a client identity; the exit's address.

use std::net::SocketAddr;
use std::path::Path;

use lethe_client::ClientConfig;
use lethe_proto::ClientAddress;
use serde::{Deserialize, Serialize};

#[allow(unused_imports)]
use crate::*;

/// File name of the exit's own settings inside its directory.
pub const EXIT_FILE: &str = "exit.toml";

/// What can go wrong setting up or running the exit.
#[derive(Debug, thiserror::Error)]
pub enum ExitError {
    #[error(transparent)]
    Client(#[from] lethe_client::ClientError),
    #[error("{path}: {reason}")]
    Config { path: String, reason: String },
    #[error("allow-list rule {rule:?}: {reason}")]
    Rule { rule: String, reason: &'static str },
}

/// `exit.toml`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExitFile {
    /// The service's settings.
    #[serde(default)]
    pub exit: ExitSection,
}

/// `[exit]`
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExitSection {
    /// Targets the exit connects to, `HOST:PORT` each (default `["*:80", "*:443"]`). HOST
    /// is `*` (any public address), a name, `*.example.org` (the name and its subdomains),
    /// an IP address or a network `10.0.0.0/8` (`[::1]`, `[fd00::/8]` for IPv6). PORT is
    /// `*`, a number, or a range `8000-8080`.
    pub allow: Vec<String>,
    /// Local address of the QUIC endpoint to the gateway (default `0.0.0.0:0`).
    pub bind: Option<SocketAddr>,
    /// Streams open at once (default 1024); more are refused with a general failure.
    pub max_streams: usize,
    /// SURBs held per stream (default 256); older ones are dropped beyond it.
    pub max_surbs_per_stream: usize,
    /// Bytes read from a target and not yet sent, per stream (default 262144).
    pub max_buffered: usize,
    /// Seconds without traffic after which a stream is dropped (default 300).
    pub idle_secs: u64,
    /// Seconds to resolve and connect to a target (default 10).
    pub connect_timeout_secs: u64,
    /// Seconds a target may take none of the bytes waiting for it before its stream is
    /// reset (default 30): a target that stops reading holds no stream for longer.
    pub stall_secs: u64,
}

impl Default for ExitSection {
    fn default() -> Self {
        ExitSection {
            allow: vec!["*:80".into(), "*:443".into()],
            bind: None,
            max_streams: 1024,
            max_surbs_per_stream: 256,
            max_buffered: 256 * 1024,
            idle_secs: 300,
            connect_timeout_secs: 10,
            stall_secs: 30,
        }
    }
}

impl ExitFile {
    /// Read `exit.toml` in `dir`.
    pub fn load(dir: &Path) -> Result<Self, ExitError> {
        let path = dir.join(EXIT_FILE);
        let err = |reason: String| ExitError::Config {
            path: path.display().to_string(),
            reason,
        };
        let text = std::fs::read_to_string(&path).map_err(|e| err(e.to_string()))?;
        let f: ExitFile = toml::from_str(&text).map_err(|e| err(e.to_string()))?;
        AllowList::parse(&f.exit.allow)?;
        Ok(f)
    }
}

/// Whether `dir` holds an exit service.
pub fn is_exit(dir: &Path) -> bool {
    dir.join(EXIT_FILE).exists()
}

/// Create an exit directory: a client identity and `client.toml` (a gateway is picked from
/// the directory if `client.gateway` is none) and `exit.toml`. Returns the exit's address.
pub async fn init(
    dir: &Path,
    client: ClientConfig,
    exit: ExitSection,
) -> Result<ClientAddress, ExitError> {
    AllowList::parse(&exit.allow)?;
    let addr = lethe_client::init(dir, client).await?;
    let path = dir.join(EXIT_FILE);
    let err = |reason: String| ExitError::Config {
        path: path.display().to_string(),
        reason,
    };
    let text = toml::to_string_pretty(&ExitFile { exit }).map_err(|e| err(e.to_string()))?;
    std::fs::write(&path, text).map_err(|e| err(e.to_string()))?;
    restrict(dir);
    Ok(addr)
}

/// Files in the exit's directory are readable by their owner only.
pub(crate) fn restrict(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let _ = std::fs::set_permissions(e.path(), std::fs::Permissions::from_mode(0o600));
        }
    }
}

/// The exit's address (`CLIENT.KEY@GATEWAY`).
pub fn address(dir: &Path) -> Result<ClientAddress, ExitError> {
    Ok(lethe_client::address(dir)?)
}
