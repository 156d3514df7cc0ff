//! `node.toml`: the node's configuration. Unknown keys are errors; every key has a
//! documented default; [`NodeConfig::validate`] names the field it rejects.
//!
//! One concern a file: `sections` (the file's sections, each with its defaults),
//! `validate` (values that parse but make no sense); here the whole file, read and written.

mod sections;
mod validate;

#[cfg(test)]
mod fuzz;
#[cfg(test)]
mod tests;

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::NodeError;

pub use sections::{
    AuthoritySection, CoverSection, DirectorySection, DownstreamModeConfig, GatewaySection,
    LimitsSection, MixingSection, MixingStrategy, NodeRole, NodeSection, ReplaySection,
};
pub use validate::{MIN_COVER_MEAN_MS, MIN_MIX_LOOP_MEAN_MS};

/// File name of the configuration inside a node's directory.
pub const CONFIG_FILE: &str = "node.toml";

/// The whole configuration.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// Identity and addresses.
    pub node: NodeSection,
    /// Where the directory is (not used by the authority itself).
    #[serde(default)]
    pub directory: DirectorySection,
    /// Mixing and shutdown.
    #[serde(default)]
    pub mixing: MixingSection,
    /// Replay filter sizing.
    #[serde(default)]
    pub replay: ReplaySection,
    /// Gateway mailbox limits.
    #[serde(default)]
    pub gateway: GatewaySection,
    /// Network parameters the authority publishes.
    #[serde(default)]
    pub authority: AuthoritySection,
    /// Admission limits against hostile peers.
    #[serde(default)]
    pub limits: LimitsSection,
    /// The relay's own cover traffic (mixes).
    #[serde(default)]
    pub cover: CoverSection,
}

impl NodeConfig {
    /// Parse TOML text and validate it.
    pub fn parse(text: &str) -> Result<Self, NodeError> {
        let cfg: NodeConfig = toml::from_str(text).map_err(|e| NodeError::ConfigSyntax {
            reason: e.to_string(),
        })?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Read `node.toml` from a node directory.
    pub fn load(dir: &Path) -> Result<Self, NodeError> {
        let path = dir.join(CONFIG_FILE);
        let text = std::fs::read_to_string(&path).map_err(|source| NodeError::Io {
            path: path.clone(),
            source,
        })?;
        Self::parse(&text).map_err(|e| match e {
            NodeError::ConfigSyntax { reason } => NodeError::ConfigSyntax {
                reason: format!("{}: {reason}", path.display()),
            },
            other => other,
        })
    }

    /// TOML text of this configuration.
    pub fn to_toml(&self) -> Result<String, NodeError> {
        toml::to_string_pretty(self).map_err(|e| NodeError::ConfigSyntax {
            reason: e.to_string(),
        })
    }
}
