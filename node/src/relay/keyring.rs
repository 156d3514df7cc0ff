//! The Sphinx key ring: one key per epoch with its replay filter, rotated at epoch
//! boundaries (files deleted for forward secrecy) and saved across restarts.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use lethe_proto::{Processed, ReplayFilter, SphinxNode};
use tracing::{info, warn};

use crate::NodeError;

use super::state::*;

/// Peel `bytes` with whichever of the ring's keys it was made for: the current epoch's key
/// first. A packet for no key we hold (an unknown or expired epoch) fails every MAC check
/// and is dropped as `bad_mac`. Each key tried costs one X25519.
pub(super) fn process_with_ring(
    ring: &[Arc<EpochKeyState>],
    bytes: &[u8],
) -> Result<Processed, lethe_proto::Error> {
    let mut result = Err(lethe_proto::Error::BadMac);
    for k in ring {
        result = k
            .node
            .process(bytes, |tag| lock(&k.replay).check_and_insert(tag));
        if !matches!(result, Err(lethe_proto::Error::BadMac)) {
            break;
        }
    }
    result
}

impl Shared {
    /// Keep Sphinx keys for the current and the next epoch, and the previous one during the
    /// overlap after an epoch starts; delete the files of the others (forward secrecy) and
    /// drop their replay filters. Returns whether the published keys changed.
    pub(super) fn rotate(&self, now_unix: u64) -> Result<bool, NodeError> {
        let Some(t) = self.topology() else {
            return Ok(false);
        };
        let len = t.body().epoch_secs;
        let epoch = now_unix / len;
        let wanted = lethe_proto::keyring::wanted_epochs(now_unix, len);
        let old = self.ring();
        if old.iter().map(|k| k.epoch).collect::<Vec<_>>() == wanted {
            return Ok(false);
        }
        let mut ring = Vec::new();
        for e in &wanted {
            if let Some(k) = old.iter().find(|k| k.epoch == *e) {
                ring.push(k.clone());
                continue;
            }
            let secret = crate::keys::sphinx_key(&self.dir, *e)?;
            let node = SphinxNode::new(secret, t.max_delay());
            // The filter saved for this key before a restart, so that a packet seen then is
            // still a replay; else a fresh one.
            let (cap, fp) = (
                self.cfg.replay.capacity,
                self.cfg.replay.false_positive_rate,
            );
            let replay = match crate::keys::load_replay(&self.dir, *e, cap, fp) {
                Some(f) => {
                    info!(epoch = e, tags = f.inserted(), "replay filter restored");
                    f
                }
                None => {
                    let mut replay_key = [0u8; 32];
                    rand::Rng::fill_bytes(&mut rand::rng(), &mut replay_key);
                    ReplayFilter::new(replay_key, cap, fp)?
                }
            };
            ring.push(Arc::new(EpochKeyState {
                epoch: *e,
                public: node.public_key(),
                node,
                saved: replay.inserted().into(),
                replay: Mutex::new(replay),
            }));
        }
        for e in crate::keys::sphinx_key_epochs(&self.dir) {
            if !wanted.contains(&e) {
                let _ = std::fs::remove_file(crate::keys::sphinx_key_path(&self.dir, e));
                let _ = std::fs::remove_file(crate::keys::replay_path(&self.dir, e));
                info!(epoch = e, "expired Sphinx key deleted");
            }
        }
        let published = |r: &[Arc<EpochKeyState>]| {
            r.iter()
                .filter(|k| k.epoch >= epoch)
                .map(|k| (k.epoch, k.public))
                .collect::<Vec<_>>()
        };
        let changed = published(&old) != published(&ring);
        match self.ring.write() {
            Ok(mut g) => *g = ring,
            Err(p) => *p.into_inner() = ring,
        }
        Ok(changed)
    }

    /// Save every key's replay filter that recorded tags since its last save (a copy is
    /// made under the lock, the file written without it). Blocking: call off the async
    /// threads.
    pub(super) fn save_replays(&self) {
        for k in self.ring() {
            let (bytes, inserted) = {
                let f = lock(&k.replay);
                if f.inserted() == k.saved.load(Ordering::Relaxed) {
                    continue;
                }
                (f.to_bytes(), f.inserted())
            };
            match crate::keys::save_replay(&self.dir, k.epoch, &bytes) {
                Ok(()) => k.saved.store(inserted, Ordering::Relaxed),
                Err(e) => warn!(epoch = k.epoch, error = %e, "cannot save the replay filter"),
            }
        }
    }
}
