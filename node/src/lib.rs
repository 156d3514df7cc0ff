#![doc = include_str!("../README.md")]

pub mod authority;
pub mod config;
pub mod error;
pub mod keys;
pub mod metrics;
pub mod relay;

pub use config::{CONFIG_FILE, NodeConfig, NodeRole};
pub use error::NodeError;
pub use keys::NodeKeys;

use std::path::Path;

/// Create a node directory: `node.toml` from `cfg` and fresh keys (0600). Refuses to touch a
/// directory that already holds a node.
pub fn init(dir: &Path, cfg: &NodeConfig) -> Result<NodeKeys, NodeError> {
    cfg.validate()?;
    let cfg_path = dir.join(CONFIG_FILE);
    if cfg_path.exists() {
        return Err(NodeError::AlreadyInitialised(cfg_path));
    }
    std::fs::create_dir_all(dir).map_err(|source| NodeError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let keys = NodeKeys::generate()?;
    keys.save(dir)?;
    std::fs::write(&cfg_path, cfg.to_toml()?).map_err(|source| NodeError::Io {
        path: cfg_path,
        source,
    })?;
    Ok(keys)
}

/// Run the node in `dir` until `shutdown` turns true.
pub async fn run(dir: &Path, shutdown: lethe_net::shutdown::Shutdown) -> Result<(), NodeError> {
    let cfg = NodeConfig::load(dir)?;
    let keys = NodeKeys::load(dir)?;
    match cfg.node.role {
        NodeRole::Authority => authority::run(cfg, keys, shutdown).await,
        NodeRole::Mix | NodeRole::Gateway => relay::Relay::new(cfg, keys, dir)?.run(shutdown).await,
    }
}
