//! The document an authority serves, and how long a round's document is valid.

use serde::Serialize;

use super::AuthorityError;
use super::state::AuthorityState;

impl AuthorityState {
    /// The end of a round's document's validity: the end of the epoch after the round's.
    pub(super) fn valid_until(&self, round: u64) -> u64 {
        let epoch_len = self.params.epoch_secs;
        (round * self.round_secs() / epoch_len + 2) * epoch_len
    }

    /// The document to serve: the newest with `threshold` signatures that is still valid.
    pub fn document(&self, now: u64) -> Result<Vec<u8>, AuthorityError> {
        let threshold = self.params.threshold;
        let doc = self
            .docs
            .iter()
            .rev()
            .find(|(round, d)| d.signatures.len() >= threshold && self.valid_until(**round) > now)
            .map(|(_, d)| d)
            .ok_or(AuthorityError::NoDocument { threshold })?;
        to_json(doc)
    }
}

/// JSON of a value the authority serves.
pub(super) fn to_json<T: Serialize>(v: &T) -> Result<Vec<u8>, AuthorityError> {
    serde_json::to_vec(v).map_err(|e| {
        lethe_proto::Error::Malformed {
            what: "json",
            detail: e.into(),
        }
        .into()
    })
}
