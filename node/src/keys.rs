//! A node's keys on disk, each file 0600: `identity.key` (Ed25519, signs descriptors and, for
//! an authority, topology documents), `tls.crt`/`tls.key` (the QUIC identity peers pin), and
//! one `sphinx-EPOCH.key` (X25519, peels packets) per epoch, created ahead of its epoch and
//! deleted when it has expired.

use std::path::Path;

use lethe_net::{TlsIdentity, files};
use lethe_proto::{Key32, NodeId};
use rand::Rng;
use zeroize::Zeroize;

use crate::NodeError;

const IDENTITY_FILE: &str = "identity.key";

/// All of a node's secrets.
pub struct NodeKeys {
    /// Ed25519 secret.
    pub identity: [u8; 32],
    /// QUIC/TLS identity.
    pub tls: TlsIdentity,
}

impl Drop for NodeKeys {
    fn drop(&mut self) {
        // Best effort: overwrite the secrets we own before the memory is freed.
        self.identity.zeroize();
    }
}

impl std::fmt::Debug for NodeKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "NodeKeys({})", self.id().short())
    }
}

impl NodeKeys {
    /// Fresh keys from the operating system's randomness.
    pub fn generate() -> Result<Self, NodeError> {
        let mut rng = rand::rng();
        let mut identity = [0u8; 32];
        rng.fill_bytes(&mut identity);
        Ok(NodeKeys {
            identity,
            tls: TlsIdentity::generate()?,
        })
    }

    /// Write all key files into `dir` (refuses to overwrite).
    pub fn save(&self, dir: &Path) -> Result<(), NodeError> {
        files::write_secret(&dir.join(IDENTITY_FILE), &self.identity)?;
        self.tls.save(dir)?;
        Ok(())
    }

    /// Load all key files from `dir`; a file readable by others is refused.
    pub fn load(dir: &Path) -> Result<Self, NodeError> {
        Ok(NodeKeys {
            identity: files::read_key32(&dir.join(IDENTITY_FILE))?,
            tls: TlsIdentity::load(dir)?,
        })
    }

    /// The node's identity (Ed25519 public key).
    pub fn id(&self) -> NodeId {
        NodeId(lethe_proto::topology::identity_public_key(&self.identity))
    }
}

/// Path of the Sphinx key file of `epoch` in `dir`.
pub fn sphinx_key_path(dir: &Path, epoch: u64) -> std::path::PathBuf {
    dir.join(format!("sphinx-{epoch}.key"))
}

/// The Sphinx secret of `epoch`: read from its file, or created (0600) if there is none.
pub fn sphinx_key(dir: &Path, epoch: u64) -> Result<[u8; 32], NodeError> {
    let path = sphinx_key_path(dir, epoch);
    if path.exists() {
        return Ok(files::read_key32(&path)?);
    }
    let mut secret = [0u8; 32];
    rand::rng().fill_bytes(&mut secret);
    files::write_secret(&path, &secret)?;
    Ok(secret)
}

/// Epochs of the Sphinx key files in `dir`.
pub fn sphinx_key_epochs(dir: &Path) -> Vec<u64> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            name.strip_prefix("sphinx-")?
                .strip_suffix(".key")?
                .parse()
                .ok()
        })
        .collect()
}

/// Path of the saved replay filter of `epoch`'s Sphinx key in `dir`.
pub fn replay_path(dir: &Path, epoch: u64) -> std::path::PathBuf {
    dir.join(format!("replay-{epoch}.bin"))
}

/// The replay filter saved for `epoch`, if there is a whole one made for these parameters.
pub fn load_replay(
    dir: &Path,
    epoch: u64,
    capacity: u64,
    fp_rate: f64,
) -> Option<lethe_proto::ReplayFilter> {
    let bytes = files::read_secret(&replay_path(dir, epoch)).ok()?;
    lethe_proto::ReplayFilter::from_bytes(&bytes, capacity, fp_rate).ok()
}

/// Save a replay filter for `epoch` (0600): written to a temporary file, synced, then
/// renamed over the old one, so a crash leaves the old file or the new one, never half.
pub fn save_replay(dir: &Path, epoch: u64, bytes: &[u8]) -> Result<(), NodeError> {
    let path = replay_path(dir, epoch);
    let tmp = dir.join(format!("replay-{epoch}.bin.tmp"));
    let _ = std::fs::remove_file(&tmp);
    files::write_secret(&tmp, bytes)?;
    std::fs::rename(&tmp, &path).map_err(|source| NodeError::Io { path, source })
}

/// The public key of a Sphinx secret.
pub fn sphinx_public(secret: &[u8; 32]) -> Key32 {
    lethe_proto::packet::sphinx_public_key(secret)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn keys_round_trip_with_0600_and_wider_modes_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let k = NodeKeys::generate().unwrap();
        k.save(dir.path()).unwrap();
        sphinx_key(dir.path(), 7).unwrap();
        for f in [IDENTITY_FILE, "sphinx-7.key", "tls.key"] {
            let mode = std::fs::metadata(dir.path().join(f))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{f}");
        }
        let back = NodeKeys::load(dir.path()).unwrap();
        assert_eq!(back.id(), k.id());
        assert_eq!(
            sphinx_key(dir.path(), 7).unwrap(),
            sphinx_key(dir.path(), 7).unwrap()
        );
        assert_eq!(sphinx_key_epochs(dir.path()), vec![7]);
        assert_eq!(back.tls.cert_hash(), k.tls.cert_hash());
        assert!(k.save(dir.path()).is_err(), "never overwrites keys");
        let p = dir.path().join("identity.key");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = NodeKeys::load(dir.path()).unwrap_err().to_string();
        assert!(err.contains("chmod 600"), "{err}");
    }
}
