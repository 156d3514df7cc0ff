//! The drivers' one adapter between the system's monotonic clock and the core's
//! [`Timestamp`] (time since an origin), and the one poison-tolerant mutex lock.

use std::sync::{Mutex, MutexGuard};
use std::time::Instant;

use lethe_proto::Timestamp;

/// A monotonic clock whose [`Timestamp`]s count from its creation.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    origin: Instant,
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock {
    /// A clock starting now.
    pub fn new() -> Self {
        Clock {
            origin: Instant::now(),
        }
    }

    /// The current time.
    pub fn now(&self) -> Timestamp {
        self.at(Instant::now())
    }

    /// The time of `i` (the origin for an instant before it).
    pub fn at(&self, i: Instant) -> Timestamp {
        Timestamp::from_duration(i.saturating_duration_since(self.origin))
    }

    /// The instant of `t`, for the runtime's timers.
    pub fn instant(&self, t: Timestamp) -> Instant {
        self.origin + t.since_origin()
    }

    /// Milliseconds since the origin.
    pub fn elapsed_ms(&self) -> u64 {
        self.origin.elapsed().as_millis() as u64
    }
}

/// Lock `m`, going on with its data if a holder panicked: none of the drivers' locks can be
/// left half-updated in a way that matters more than stopping would.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn timestamps_and_instants_round_trip() {
        let c = Clock::new();
        let t = c.now();
        let i = c.instant(t + Duration::from_millis(250));
        assert_eq!(c.at(i), t + Duration::from_millis(250));
        assert_eq!(c.at(i - Duration::from_secs(3600)), Timestamp::ZERO);
    }
}
