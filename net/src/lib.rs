#![doc = include_str!("../README.md")]

pub mod clock;
pub mod directory;
pub mod error;
pub mod files;
pub mod http;
pub mod link;
pub mod localnet;
pub mod logging;
pub mod sensitive;
pub mod shutdown;
pub mod tls;

pub use error::NetError;
pub use sensitive::Sensitive;
pub use tls::TlsIdentity;

/// Unix time in seconds from the system clock (drivers only; the core takes time as input).
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
