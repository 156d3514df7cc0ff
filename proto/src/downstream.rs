//! Downstream cover (sans-IO policy): when a gateway writes to one connected client, and
//! whether a real frame or a cover frame goes out.
//!
//! The gateway runs one [`PoissonStream`] per connected client, at the mean gap the
//! directory publishes for every client alike (`cover.downstream_mean_ms`). In each slot a
//! waiting real frame (a message, a SURB reply, a returning loop) goes out, else a cover
//! frame of the same size that the client discards. What happens when real frames come
//! faster than the slots is the network's choice, also published:
//!
//! - [`DownstreamMode::Strict`]: real frames wait for slots, so the client's downstream is
//!   the same Poisson stream whether it is idle or downloading (and a download is capped at
//!   the slot rate);
//! - [`DownstreamMode::Burst`]: real frames leave at once; a slot sends cover only when no
//!   real frame left since the previous slot, so an idle client looks like any other and a
//!   busy one shows its bursts above the rate.

use std::time::Duration;

use rand::Rng;

use crate::cover::PoissonStream;
use crate::{Error, Timestamp};

/// How real frames share the downstream with cover (a directory parameter).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DownstreamMode {
    /// Real frames wait for the stream's slots.
    Strict,
    /// Real frames leave at once; cover fills the gaps.
    Burst,
}

/// What a gateway writes to its client now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DownstreamSend {
    /// The oldest waiting real frame.
    Real,
    /// A cover frame (same size, discarded by the client).
    Cover,
}

/// One client's downstream schedule at its gateway.
#[derive(Clone, Debug)]
pub struct Downstream {
    slots: PoissonStream,
    mode: DownstreamMode,
    /// A real frame left outside a slot since the last slot (burst mode).
    real_since_slot: bool,
}

impl Downstream {
    /// A schedule with `mean_gap` between slots (zero: no cover, real frames at once), idle
    /// until [`Downstream::start`].
    pub fn new(mean_gap: Duration, mode: DownstreamMode) -> Result<Self, Error> {
        let rate = if mean_gap.is_zero() {
            0.0
        } else {
            1.0 / mean_gap.as_secs_f64()
        };
        Ok(Downstream {
            slots: PoissonStream::new(rate)?,
            mode,
            real_since_slot: false,
        })
    }

    /// Whether the schedule sends cover at all.
    pub fn is_on(&self) -> bool {
        self.slots.rate_per_sec() > 0.0
    }

    /// The mode real frames follow.
    pub fn mode(&self) -> DownstreamMode {
        self.mode
    }

    /// Start the slots at `now` (the first one an exponential gap later).
    pub fn start<R: Rng + ?Sized>(&mut self, now: Timestamp, rng: &mut R) {
        self.slots.start(now, rng);
    }

    /// When the next slot is due (`None` without cover).
    pub fn poll_timeout(&self) -> Option<Timestamp> {
        self.slots.poll_timeout()
    }

    /// A real frame is waiting outside a slot at `now`: may it be written now? Always
    /// without cover and in burst mode, never in strict mode. In burst mode the frame stands
    /// in for the next slot's cover and for every slot already due: a writer that was busy
    /// writing real frames does not owe those slots a burst of cover afterwards.
    pub fn real_now<R: Rng + ?Sized>(&mut self, now: Timestamp, rng: &mut R) -> bool {
        if !self.is_on() {
            return true;
        }
        match self.mode {
            DownstreamMode::Strict => false,
            DownstreamMode::Burst => {
                while self.slots.pop_due(now, rng).is_some() {}
                self.real_since_slot = true;
                true
            }
        }
    }

    /// If a slot is due at or before `now`: what to write in it, given whether a real frame
    /// is waiting. `None` when no slot is due, or (burst mode) when a real frame already
    /// left since the previous slot and nothing waits.
    pub fn pop_due<R: Rng + ?Sized>(
        &mut self,
        now: Timestamp,
        rng: &mut R,
        real_waiting: bool,
    ) -> Option<DownstreamSend> {
        loop {
            self.slots.pop_due(now, rng)?;
            let sent_real = std::mem::take(&mut self.real_since_slot);
            if real_waiting {
                return Some(DownstreamSend::Real);
            }
            if !sent_real {
                return Some(DownstreamSend::Cover);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    fn at(ms: u64) -> Timestamp {
        Timestamp::ZERO + Duration::from_millis(ms)
    }

    /// Run a schedule for `secs` on a virtual clock with real frames arriving every
    /// `real_every_ms` (0: none); returns (real, cover) frames written per second and the
    /// longest wait of a real frame.
    fn run(mode: DownstreamMode, real_every_ms: u64, secs: u64) -> (f64, f64, Duration) {
        let mut rng = StdRng::seed_from_u64(7);
        let mut d = Downstream::new(Duration::from_millis(10), mode).unwrap();
        d.start(at(0), &mut rng);
        let mut waiting: std::collections::VecDeque<Timestamp> = Default::default();
        let (mut real, mut cover, mut worst) = (0u64, 0u64, Duration::ZERO);
        let mut next_real = (real_every_ms > 0).then(|| at(real_every_ms));
        let end = at(secs * 1000);
        loop {
            let slot = d.poll_timeout().unwrap();
            let now = match next_real {
                Some(r) if r < slot => r,
                _ => slot,
            };
            if now >= end {
                break;
            }
            if next_real == Some(now) {
                waiting.push_back(now);
                next_real = Some(now + Duration::from_millis(real_every_ms));
                if d.real_now(now, &mut rng) {
                    waiting.pop_front();
                    real += 1;
                }
                continue;
            }
            while let Some(s) = d.pop_due(now, &mut rng, !waiting.is_empty()) {
                match s {
                    DownstreamSend::Real => {
                        let came = waiting.pop_front().unwrap();
                        worst = worst.max(now - came);
                        real += 1;
                    }
                    DownstreamSend::Cover => cover += 1,
                }
            }
        }
        let s = secs as f64;
        (real as f64 / s, cover as f64 / s, worst)
    }

    #[test]
    fn strict_mode_writes_at_the_slot_rate_whatever_the_load() {
        // 100 slots a second; idle, a quarter of the rate, and three times the rate.
        let (r0, c0, _) = run(DownstreamMode::Strict, 0, 200);
        let (r1, c1, w1) = run(DownstreamMode::Strict, 40, 200);
        let (r2, c2, _) = run(DownstreamMode::Strict, 3, 200);
        for (r, c) in [(r0, c0), (r1, c1), (r2, c2)] {
            let total = r + c;
            assert!((total - 100.0).abs() < 3.0, "{total} frames/s");
        }
        assert_eq!(r0, 0.0);
        assert!((r1 - 25.0).abs() < 0.5, "{r1}");
        assert!(w1 < Duration::from_millis(200), "{w1:?}");
        // Above the rate, real frames take every slot (and wait: the driver bounds that).
        assert!(c2 < 1.0 && r2 > 97.0, "{r2} {c2}");
    }

    #[test]
    fn burst_mode_fills_gaps_and_lets_bursts_through() {
        let (r0, c0, _) = run(DownstreamMode::Burst, 0, 200);
        assert!(r0 == 0.0 && (c0 - 100.0).abs() < 3.0, "{c0}");
        // A quarter of the rate: the total stays near the rate (a real frame stands in for
        // the next slot's cover).
        let (r1, c1, w1) = run(DownstreamMode::Burst, 40, 200);
        assert!((r1 - 25.0).abs() < 0.5, "{r1}");
        assert!((r1 + c1 - 100.0).abs() < 5.0, "{}", r1 + c1);
        assert_eq!(w1, Duration::ZERO, "nothing waits");
        // Three times the rate: all real, at once; cover only in the slots that follow
        // another within 3 ms with no real frame between (about 14 of the 100).
        let (r2, c2, _) = run(DownstreamMode::Burst, 3, 200);
        assert!(r2 > 330.0 && c2 < 20.0, "{r2} {c2}");
    }

    #[test]
    fn a_burst_writer_that_fell_behind_owes_no_cover_for_the_slots_it_filled() {
        let mut rng = StdRng::seed_from_u64(3);
        let mut d = Downstream::new(Duration::from_millis(10), DownstreamMode::Burst).unwrap();
        d.start(at(0), &mut rng);
        // Busy writing real frames for 400 ms (about 40 slots came due meanwhile)...
        assert!(d.real_now(at(400), &mut rng));
        // ...then idle: no cover frames back to back for the slots that passed.
        let mut cover_at_400 = 0;
        while d.pop_due(at(400), &mut rng, false).is_some() {
            cover_at_400 += 1;
        }
        assert_eq!(cover_at_400, 0);
        // And cover resumes at the slots' rate afterwards.
        let mut later = 0;
        for ms in 401..=1400 {
            while d.pop_due(at(ms), &mut rng, false).is_some() {
                later += 1;
            }
        }
        assert!((80..=120).contains(&later), "{later} cover frames in 1 s");
    }

    #[test]
    fn without_a_rate_real_frames_go_at_once_and_no_cover() {
        let mut rng = StdRng::seed_from_u64(1);
        let mut d = Downstream::new(Duration::ZERO, DownstreamMode::Strict).unwrap();
        d.start(at(0), &mut rng);
        assert!(!d.is_on());
        assert_eq!(d.poll_timeout(), None);
        assert!(d.real_now(at(5), &mut rng));
        assert_eq!(d.pop_due(at(10_000), &mut rng, false), None);
    }
}
