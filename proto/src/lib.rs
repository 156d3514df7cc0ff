#![doc = include_str!("../README.md")]

pub mod address;
pub mod anonymity;
pub mod batch;
pub mod consensus;
pub mod cover;
pub mod downstream;
pub mod error;
pub mod frame;
pub mod health;
pub mod keyring;
pub mod limit;
pub mod loops;
pub mod mailbox;
pub mod mixloop;
pub mod packet;
pub mod pool;
pub mod queue;
pub mod replay;
pub mod seal;
pub mod sphinx;
pub mod time;
pub mod topology;

pub use address::{ClientAddress, ClientId, Key32, NodeId, RecipientKey};
pub use anonymity::AnonymityEstimator;
pub use batch::{BatchConfig, BatchQueue};
pub use consensus::{SignedVote, VoteBody};
pub use cover::{ClientRates, ClientSchedule, ClientSend, PoissonStream};
pub use error::Error;
pub use frame::{Frame, FrameHeader, FrameKind};
pub use health::{HealthConfig, RelayHealth};
pub use mailbox::{Mailbox, MailboxLimits};
pub use packet::{HopSpec, Packet, Processed, SphinxNode};
pub use pool::Pool;
pub use queue::MixQueue;
pub use replay::ReplayFilter;
pub use time::Timestamp;
pub use topology::{
    EpochKey, NodeDescriptor, Role, SignedDescriptor, SignedTopology, Topology, TopologyBody,
};
pub mod socks;
pub mod stream;
pub mod supply;
pub mod surb;
