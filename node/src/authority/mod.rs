//! The directory authorities. Relays upload signed descriptors to every authority. Time is
//! cut into voting rounds (`authority.vote_interval_secs`): at the start of each, every
//! authority freezes the descriptors it holds of relays it reached lately into a signed
//! vote (`GET /v1/held/ROUND`) and fetches its peers' votes; the round's body lists a relay
//! when `threshold` votes hold it ([`lethe_proto::consensus::combine`]), so authorities
//! with the same votes sign the same bytes, whatever was uploaded to each of them alone.
//! Each authority then attaches the signatures of peers that signed that same body
//! (`GET /v1/vote`). Clients and relays accept a document only with `threshold` valid
//! signatures of configured authorities, so one authority alone cannot add, drop or change
//! a relay. An authority serves the newest document with `threshold` signatures while it is
//! valid, and never an expired one. Relays are reached over QUIC with their pinned
//! certificate (the `probe` module): a relay that runs nothing is not listed.
//!
//! The files: `state` (what an authority holds), `uploads` (descriptor uploads), `probe`
//! (liveness probes), `voting` (rounds, votes and signatures), `documents` (the document
//! served), `gather` (the exchange with peers), `routes` (the HTTP server); each is a part
//! of [`AuthorityState`] or a task around it.

mod documents;
mod gather;
mod probe;
mod routes;
mod state;
mod uploads;
mod voting;

#[cfg(test)]
mod tests;

pub use probe::ProbeTarget;
pub use routes::run;
pub use state::AuthorityState;
pub use voting::Vote;

/// Most relays one authority lists.
pub const MAX_NODES: usize = 5000;
/// How far in the future a descriptor's publication time may be.
pub const MAX_CLOCK_SKEW_SECS: u64 = 120;
/// A relay reached is probed again after this long.
pub const PROBE_EVERY_SECS: u64 = 10;
/// A relay not reached yet (or not at the last try) is tried again after this long.
pub const PROBE_RETRY_SECS: u64 = 2;
/// A relay is voted for while it was reached within this long (three probes).
pub const REACHED_WITHIN_SECS: u64 = 3 * PROBE_EVERY_SECS;
/// Rounds whose votes and documents are kept.
const KEEP_ROUNDS: u64 = 4;

/// Why a request to the authority fails; each maps to an HTTP status.
#[derive(Debug, thiserror::Error)]
pub enum AuthorityError {
    /// No document has `threshold` signatures and is still valid.
    #[error("no valid document signed by {threshold} authorities yet")]
    NoDocument { threshold: usize },
    /// The requested round has not started here, or is no longer kept.
    #[error("no vote for round {round} (current round {current})")]
    NoVote { round: u64, current: u64 },
    /// Encoding or signing failed.
    #[error(transparent)]
    Proto(#[from] lethe_proto::Error),
}
