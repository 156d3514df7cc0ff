//! The client's end-to-end encryption keys on disk: the current recipient key (its public
//! half is in the client's address) and, after a rotation, the previous one, kept so that
//! messages already sealed to it (waiting in the gateway's mailbox, or on their way) still
//! open. The rotation after that removes its file (an unlink: on a disk that keeps
//! unlinked blocks, or in a backup, the bytes may outlive it). Once it is gone, what anyone
//! recorded sealed to it stays sealed, even to whoever later takes this directory.
//!
//! Rotate while no client runs on the directory: a running one keeps the keys it loaded,
//! and counts messages sealed to the new key as unopened until it restarts.

use std::path::Path;

use lethe_net::files;
use lethe_proto::seal::{self, Opened, RecipientSecret};
use lethe_proto::{ClientId, RecipientKey};

use crate::ClientError;

/// The current recipient secret key (0600).
pub const KEY_FILE: &str = "recipient.key";
/// The previous one, kept for one rotation (0600).
pub const PREVIOUS_KEY_FILE: &str = "recipient-previous.key";

/// A client's recipient keys.
pub struct RecipientKeys {
    current: RecipientSecret,
    previous: Option<RecipientSecret>,
}

impl RecipientKeys {
    /// The keys of the client in `dir`; a directory made before end-to-end encryption gets
    /// its first key now (and so a new address).
    pub fn load_or_create(dir: &Path) -> Result<RecipientKeys, ClientError> {
        let path = dir.join(KEY_FILE);
        let current = if path.exists() {
            RecipientSecret::from_bytes(files::read_key32(&path)?)
        } else {
            let s = RecipientSecret::generate(&mut rand::rng());
            files::write_secret(&path, &s.to_bytes()[..])?;
            s
        };
        let prev_path = dir.join(PREVIOUS_KEY_FILE);
        let previous = if prev_path.exists() {
            Some(RecipientSecret::from_bytes(files::read_key32(&prev_path)?))
        } else {
            None
        };
        Ok(RecipientKeys { current, previous })
    }

    /// The public key others seal to.
    pub fn public(&self) -> Result<RecipientKey, ClientError> {
        Ok(self.current.public()?)
    }

    /// Open a sealed message to client `me`: with the current key, else the previous one.
    pub fn open(&self, me: &ClientId, sealed: &[u8]) -> Result<Opened, lethe_proto::Error> {
        match seal::open(&self.current, me, sealed) {
            Ok(o) => Ok(o),
            Err(e) => match &self.previous {
                Some(p) => seal::open(p, me, sealed),
                None => Err(e),
            },
        }
    }
}

/// Rotate the keys of the client in `dir`: the current key becomes the previous one (the
/// one before it is deleted) and a new key is made. Returns the new public key.
pub fn rotate(dir: &Path) -> Result<RecipientKey, ClientError> {
    let keys = RecipientKeys::load_or_create(dir)?;
    files::replace_secret(&dir.join(PREVIOUS_KEY_FILE), &keys.current.to_bytes()[..])?;
    let fresh = RecipientSecret::generate(&mut rand::rng());
    files::replace_secret(&dir.join(KEY_FILE), &fresh.to_bytes()[..])?;
    Ok(fresh.public()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rotation_keeps_one_previous_key_and_the_next_deletes_it() {
        let dir = std::env::temp_dir().join(format!("lethe-keys-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap_or_default();
        let me = ClientId::from_bytes([3; 32]);
        let k0 = RecipientKeys::load_or_create(&dir).unwrap_or_else(|e| panic!("{e}"));
        let pk0 = k0.public().unwrap_or_else(|e| panic!("{e}"));
        let old = seal::seal(&mut rand::rng(), &pk0, &me, b"old mail").unwrap_or_default();
        let pk1 = rotate(&dir).unwrap_or_else(|e| panic!("{e}"));
        assert_ne!(pk0, pk1);
        let k1 = RecipientKeys::load_or_create(&dir).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(k1.public().unwrap_or_else(|e| panic!("{e}")), pk1);
        assert_eq!(
            k1.open(&me, &old).map(|o| o.message).ok(),
            Some(b"old mail".to_vec())
        );
        rotate(&dir).unwrap_or_else(|e| panic!("{e}"));
        let k2 = RecipientKeys::load_or_create(&dir).unwrap_or_else(|e| panic!("{e}"));
        assert!(
            k2.open(&me, &old).is_err(),
            "two rotations later, old mail stays sealed"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
