//! Logging set-up shared by the binaries, and rate limits for warnings that a remote party
//! can trigger.
//!
//! Our own code never prints an address except through [`crate::Sensitive`]; the crates we
//! depend on (QUIC, TLS, HTTP) do at debug and trace level. So unless unsafe logging is on,
//! their logs are capped at info, whatever `RUST_LOG` asks: `RUST_LOG=trace` shows all of
//! Lethe's own tracing and nothing of theirs that could name a peer.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Dependencies whose debug and trace output can name peers.
const CAPPED: &[&str] = &[
    "quinn",
    "quinn_proto",
    "quinn_udp",
    "rustls",
    "hyper",
    "hyper_util",
    "h2",
    "mio",
    "tokio",
    "tokio_util",
];

/// Install the global subscriber on standard error: `RUST_LOG` if set (else `default`),
/// with the dependencies in `CAPPED` held at info unless `unsafe_logging`.
pub fn init(default: &str, unsafe_logging: bool) {
    let mut filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    if !unsafe_logging {
        for krate in CAPPED {
            if let Ok(d) = format!("{krate}=info").parse() {
                filter = filter.add_directive(d);
            }
        }
    }
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .try_init();
}

fn since_start() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_millis() as u64 + 1
}

/// Lets one message through per interval at one call site and counts the ones held back
/// (see [`crate::warn_limited`]).
pub struct LogLimit {
    last_ms: AtomicU64,
    held: AtomicU64,
}

impl Default for LogLimit {
    fn default() -> Self {
        Self::new()
    }
}

impl LogLimit {
    /// Nothing logged yet.
    pub const fn new() -> Self {
        LogLimit {
            last_ms: AtomicU64::new(0),
            held: AtomicU64::new(0),
        }
    }

    /// Whether to log now: `Some(messages held back since the last one)` at most once per
    /// `every`, else `None` (and one more is counted as held back).
    pub fn check(&self, every: Duration) -> Option<u64> {
        let now = since_start();
        let last = self.last_ms.load(Ordering::Relaxed);
        let due = last == 0 || now.saturating_sub(last) >= every.as_millis() as u64;
        if due
            && self
                .last_ms
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            return Some(self.held.swap(0, Ordering::Relaxed));
        }
        self.held.fetch_add(1, Ordering::Relaxed);
        None
    }
}

/// `tracing::warn!` at most once per interval from this call site, with `held_back`, the
/// number of the same warning not logged since: `warn_limited!(Duration::from_secs(10),
/// error = %e, "...")`. For warnings anyone on the network can cause.
#[macro_export]
macro_rules! warn_limited {
    ($every:expr, $($arg:tt)+) => {{
        static LIMIT: $crate::logging::LogLimit = $crate::logging::LogLimit::new();
        if let Some(held_back) = LIMIT.check($every) {
            $crate::logging::__tracing::warn!(held_back, $($arg)+);
        }
    }};
}

#[doc(hidden)]
pub use tracing as __tracing;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_message_per_interval_and_the_rest_counted() {
        let l = LogLimit::new();
        assert_eq!(l.check(Duration::from_secs(60)), Some(0));
        for _ in 0..5 {
            assert_eq!(l.check(Duration::from_secs(60)), None);
        }
        assert_eq!(l.check(Duration::ZERO), Some(5));
    }
}
