//! `localnet.json`, the description of a running local network that
//! `scripts/localnet.sh start --dir D` writes to `D/localnet.json`: the one reader the
//! benchmarks and the end-to-end tests share.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// The whole file.
#[derive(Clone, Debug, Deserialize)]
pub struct Localnet {
    /// The first authority's URL.
    pub directory: String,
    /// Every authority's URL, the first one first.
    pub directories: Vec<String>,
    /// The authorities' keys (hex).
    pub authority_keys: Vec<String>,
    /// How many authorities' signatures a topology document needs.
    pub threshold: usize,
    /// The exit service's address (`CLIENT.KEY@GATEWAY`) and log.
    pub exit: String,
    pub exit_log: PathBuf,
    /// The SOCKS5 proxy's listen address and log.
    pub socks: String,
    pub socks_log: PathBuf,
    /// The authorities and relays.
    pub nodes: Vec<NodeInfo>,
}

/// One authority or relay.
#[derive(Clone, Debug, Deserialize)]
pub struct NodeInfo {
    pub name: String,
    /// `authority`, `gateway` or `mix`.
    pub role: String,
    /// A mix's layer; `None` for the others.
    pub layer: Option<u64>,
    pub listen: String,
    /// The metrics address (`None` for an authority).
    pub metrics: Option<SocketAddr>,
    pub pid: u32,
    pub log: PathBuf,
    pub dir: PathBuf,
    /// The node's id (an authority's key).
    pub id: String,
}

impl Localnet {
    /// Read `dir/localnet.json`.
    pub fn read(dir: &Path) -> std::io::Result<Localnet> {
        let path = dir.join("localnet.json");
        Self::parse(&std::fs::read(&path)?).map_err(|e| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("{}: {e}", path.display()),
            )
        })
    }

    /// Parse the file's bytes.
    pub fn parse(json: &[u8]) -> serde_json::Result<Localnet> {
        serde_json::from_slice(json)
    }

    /// The authorities' URLs after the first (clients use every one: this one as
    /// `directory`, these as mirrors).
    pub fn mirrors(&self) -> Vec<String> {
        self.directories.iter().skip(1).cloned().collect()
    }

    /// The nodes of `role`.
    pub fn with_role<'a>(&'a self, role: &'a str) -> impl Iterator<Item = &'a NodeInfo> {
        self.nodes.iter().filter(move |n| n.role == role)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// As localnet.sh writes it (one authority and one mix of each kind of line).
    const SAMPLE: &str = r#"{
  "directory": "http://127.0.0.10:8000",
  "directories": ["http://127.0.0.10:8000", "http://127.0.0.13:8000"],
  "authority_keys": ["aa", "bb"],
  "threshold": 2,
  "bin_dir": "/x/target/debug",
  "exit": "c1@g2",
  "exit_log": "/n/exit/node.log",
  "socks": "127.0.0.51:1080",
  "socks_log": "/n/socks/socks.log",
  "nodes": [
    {"name": "authority-1", "role": "authority", "layer": null, "listen": "127.0.0.10:8000", "metrics": null, "pid": 7, "log": "/n/authority-1/node.log", "dir": "/n/authority-1", "id": "aa"},
    {"name": "mix-1a", "role": "mix", "layer": 1, "listen": "127.0.0.21:9000", "metrics": "127.0.0.21:9100", "pid": 8, "log": "/n/mix-1a/node.log", "dir": "/n/mix-1a", "id": "m1"}
  ]
}
"#;

    #[test]
    fn reads_what_localnet_sh_writes() {
        let n = Localnet::parse(SAMPLE.as_bytes()).unwrap();
        assert_eq!(n.threshold, 2);
        assert_eq!(n.mirrors(), ["http://127.0.0.13:8000"]);
        assert_eq!(n.socks, "127.0.0.51:1080");
        let auth = &n.nodes[0];
        assert_eq!((auth.layer, auth.metrics, auth.pid), (None, None, 7));
        let mix = n.with_role("mix").next().unwrap();
        assert_eq!(mix.layer, Some(1));
        assert_eq!(mix.metrics, Some("127.0.0.21:9100".parse().unwrap()));
        assert_eq!(mix.dir, Path::new("/n/mix-1a"));
    }
}
