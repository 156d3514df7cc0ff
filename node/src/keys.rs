//! A node's keys on disk, each file 0600: `identity.key` (Ed25519, signs descriptors and, for
//! an authority, topology documents), `sphinx.key` (X25519, peels packets), and
//! `tls.crt`/`tls.key` (the QUIC identity peers pin).

use std::path::Path;

use lethe_net::{TlsIdentity, files};
use lethe_proto::{Key32, NodeId};
use rand::Rng;
use zeroize::Zeroize;

use crate::NodeError;

const IDENTITY_FILE: &str = "identity.key";
const SPHINX_FILE: &str = "sphinx.key";

/// All of a node's secrets.
pub struct NodeKeys {
    /// Ed25519 secret.
    pub identity: [u8; 32],
    /// X25519 Sphinx secret.
    pub sphinx: [u8; 32],
    /// QUIC/TLS identity.
    pub tls: TlsIdentity,
}

impl Drop for NodeKeys {
    fn drop(&mut self) {
        // Best effort: overwrite the secrets we own before the memory is freed.
        self.identity.zeroize();
        self.sphinx.zeroize();
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
        let mut sphinx = [0u8; 32];
        rng.fill_bytes(&mut identity);
        rng.fill_bytes(&mut sphinx);
        Ok(NodeKeys {
            identity,
            sphinx,
            tls: TlsIdentity::generate()?,
        })
    }

    /// Write all key files into `dir` (refuses to overwrite).
    pub fn save(&self, dir: &Path) -> Result<(), NodeError> {
        files::write_secret(&dir.join(IDENTITY_FILE), &self.identity)?;
        files::write_secret(&dir.join(SPHINX_FILE), &self.sphinx)?;
        self.tls.save(dir)?;
        Ok(())
    }

    /// Load all key files from `dir`; a file readable by others is refused.
    pub fn load(dir: &Path) -> Result<Self, NodeError> {
        Ok(NodeKeys {
            identity: files::read_key32(&dir.join(IDENTITY_FILE))?,
            sphinx: files::read_key32(&dir.join(SPHINX_FILE))?,
            tls: TlsIdentity::load(dir)?,
        })
    }

    /// The node's identity (Ed25519 public key).
    pub fn id(&self) -> NodeId {
        NodeId(lethe_proto::topology::identity_public_key(&self.identity))
    }

    /// The Sphinx public key.
    pub fn sphinx_public(&self) -> Key32 {
        lethe_proto::packet::sphinx_public_key(&self.sphinx)
    }
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
        for f in [IDENTITY_FILE, SPHINX_FILE, "tls.key"] {
            let mode = std::fs::metadata(dir.path().join(f))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{f}");
        }
        let back = NodeKeys::load(dir.path()).unwrap();
        assert_eq!(back.id(), k.id());
        assert_eq!(back.sphinx_public(), k.sphinx_public());
        assert_eq!(back.tls.cert_hash(), k.tls.cert_hash());
        assert!(k.save(dir.path()).is_err(), "never overwrites keys");
        let p = dir.path().join(SPHINX_FILE);
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = NodeKeys::load(dir.path()).unwrap_err().to_string();
        assert!(err.contains("chmod 600"), "{err}");
    }
}
