//! `Sensitive<T>`: a value that must not reach logs (client addresses, destinations, next
//! hops). It prints `[scrubbed]` unless the process enabled unsafe logging at start
//! (`--unsafe-logging`, for debugging a private test network only).

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};

static UNSAFE_LOGGING: AtomicBool = AtomicBool::new(false);

/// Turn on unsafe logging for the whole process. Call once, at start, and log a warning.
pub fn enable_unsafe_logging() {
    UNSAFE_LOGGING.store(true, Ordering::Relaxed);
}

/// Whether unsafe logging is on.
pub fn unsafe_logging() -> bool {
    UNSAFE_LOGGING.load(Ordering::Relaxed)
}

/// Wraps a value so that it formats as `[scrubbed]` in logs.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Sensitive<T>(T);

impl<T> Sensitive<T> {
    /// Wrap `value`.
    pub fn new(value: T) -> Self {
        Sensitive(value)
    }
    /// Borrow the value for use (not for logging).
    pub fn as_inner(&self) -> &T {
        &self.0
    }
}

impl<T: fmt::Display> fmt::Display for Sensitive<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if unsafe_logging() {
            fmt::Display::fmt(&self.0, f)
        } else {
            f.write_str("[scrubbed]")
        }
    }
}

impl<T: fmt::Debug> fmt::Debug for Sensitive<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if unsafe_logging() {
            fmt::Debug::fmt(&self.0, f)
        } else {
            f.write_str("[scrubbed]")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scrubbed_by_default() {
        // The flag is process-wide and tests share a process, so only the default is tested
        // here; the node's audit test covers --unsafe-logging off end to end.
        if !unsafe_logging() {
            let s = Sensitive::new(std::net::SocketAddr::from(([127, 0, 0, 9], 4000)));
            assert_eq!(format!("{s}"), "[scrubbed]");
            assert_eq!(format!("{s:?}"), "[scrubbed]");
            assert_eq!(s.as_inner().port(), 4000);
        }
    }
}
