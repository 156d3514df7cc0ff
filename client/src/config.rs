//! A client's directory: `client.toml` ([`ClientConfig`]), `init` (identity, recipient key
//! and gateway) and the address it gives others.

use std::path::Path;

use lethe_net::TlsIdentity;
use lethe_net::directory::DirectoryClient;
use lethe_proto::{ClientAddress, ClientId, Key32, NodeId};
use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::ClientError;

/// File name of the client's configuration inside its directory.
pub const CONFIG_FILE: &str = "client.toml";

/// `client.toml`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientConfig {
    /// Directory authority URL.
    #[serde(default)]
    pub directory: String,
    /// The other authorities' URLs: documents are fetched from all of them, from a random
    /// one on, so one authority down, slow or lying costs nothing.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mirrors: Vec<String>,
    /// The network's name, recorded at `init` from the first document: a document of
    /// another network is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
    /// Hex Ed25519 keys of the authorities.
    #[serde(default)]
    pub authority_keys: Vec<String>,
    /// Signatures a topology document needs (default 1).
    #[serde(default = "one")]
    pub threshold: usize,
    /// The client's gateway (hex node id): its entry, and the exit of messages to it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
}

/// The newest document's (epoch, serial) a client accepted, kept in its directory: after a
/// restart it still refuses anything older.
pub const NEWEST_FILE: &str = "newest-document";

fn one() -> usize {
    1
}

fn config_err(path: &Path, reason: impl Into<String>) -> ClientError {
    ClientError::Config {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

impl ClientConfig {
    /// Read `client.toml` in `dir`.
    pub fn load(dir: &Path) -> Result<Self, ClientError> {
        let path = dir.join(CONFIG_FILE);
        let text = std::fs::read_to_string(&path).map_err(|e| config_err(&path, e.to_string()))?;
        toml::from_str(&text).map_err(|e| config_err(&path, e.to_string()))
    }

    /// Write `client.toml` in `dir`.
    pub fn save(&self, dir: &Path) -> Result<(), ClientError> {
        let path = dir.join(CONFIG_FILE);
        let text = toml::to_string_pretty(self).map_err(|e| config_err(&path, e.to_string()))?;
        std::fs::write(&path, text).map_err(|e| config_err(&path, e.to_string()))
    }

    pub(crate) fn directory_client(&self) -> Result<DirectoryClient, ClientError> {
        if self.directory.is_empty() || self.authority_keys.is_empty() {
            return Err(ClientError::NoDirectory);
        }
        let authorities = self
            .authority_keys
            .iter()
            .map(|k| Key32::parse_hex(k, "authority key"))
            .collect::<Result<Vec<_>, _>>()?;
        let mut d = DirectoryClient::single(self.directory.clone(), authorities, self.threshold);
        d.mirrors = self.mirrors.clone();
        d.network = self.network.clone();
        Ok(d)
    }

    pub(crate) fn gateway(&self) -> Result<NodeId, ClientError> {
        Ok(self
            .gateway
            .as_deref()
            .ok_or(ClientError::NoGateway)?
            .parse()?)
    }
}

/// Create a client directory: TLS identity (its hash is the client's id) and `client.toml`.
/// With a directory and no `gateway`, a gateway is chosen at random from the topology.
pub async fn init(dir: &Path, mut cfg: ClientConfig) -> Result<ClientAddress, ClientError> {
    let path = dir.join(CONFIG_FILE);
    if path.exists() {
        return Err(ClientError::AlreadyInitialised(path));
    }
    std::fs::create_dir_all(dir).map_err(|e| config_err(dir, e.to_string()))?;
    // The first document names the network: later ones must be of the same.
    let first = match cfg.gateway {
        None => Some(cfg.directory_client()?.fetch().await?),
        Some(_) => match cfg.directory_client() {
            Ok(d) => d.fetch().await.ok(),
            Err(_) => None,
        },
    };
    if cfg.network.is_none() {
        cfg.network = first.as_ref().map(|t| t.body().network.clone());
    }
    if cfg.gateway.is_none()
        && let Some(topology) = first
    {
        let gateways: Vec<NodeId> = topology.gateways().map(|g| g.id).collect();
        if gateways.is_empty() {
            return Err(lethe_proto::Error::NoRoute {
                what: lethe_proto::error::Missing::Gateway,
            }
            .into());
        }
        let pick = gateways[(rand::rng().next_u64() % gateways.len() as u64) as usize];
        cfg.gateway = Some(pick.to_string());
    }
    let gateway = cfg.gateway()?;
    let id = TlsIdentity::generate()?;
    id.save(dir)?;
    let keys = crate::keys::RecipientKeys::load_or_create(dir)?;
    cfg.save(dir)?;
    Ok(ClientAddress {
        client: ClientId(id.cert_hash()),
        key: keys.public()?,
        gateway,
    })
}

/// The address others send to, from a client directory.
pub fn address(dir: &Path) -> Result<ClientAddress, ClientError> {
    let cfg = ClientConfig::load(dir)?;
    let id = TlsIdentity::load(dir)?;
    let keys = crate::keys::RecipientKeys::load_or_create(dir)?;
    Ok(ClientAddress {
        client: ClientId(id.cert_hash()),
        key: keys.public()?,
        gateway: cfg.gateway()?,
    })
}
