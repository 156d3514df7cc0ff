//! Poisson send schedules, sans-IO: when a client or relay should next send, and what.
//!
//! A [`PoissonStream`] fires at the events of a Poisson process of a given rate: the gaps
//! between sends are independent exponential draws from an injected rng. A
//! [`ClientSchedule`] runs the three Loopix client streams side by side (payload, loop,
//! drop) and says at each due time which kind of packet to send; in the payload stream a
//! real message goes out if one is waiting, otherwise a drop cover packet takes its slot, so
//! an observer sees the same stream whether the client is talking or not.
//!
//! The driver asks `poll_timeout()` for the next due time, sleeps (or advances a virtual
//! clock) until then, and calls `pop_due(now, rng)` until it returns `None`.

use std::time::Duration;

use rand::Rng;

use crate::error::Constraint;
use crate::packet::sample_delay;
use crate::{Error, Timestamp};

/// The longest single gap a stream draws (a draw beyond it is cut to it): about 136 years,
/// far beyond any exponential draw that matters, and it keeps timestamps from saturating.
const MAX_GAP: Duration = Duration::from_secs(u32::MAX as u64);

/// How far behind its schedule a stream may fall and still catch up; beyond it, it starts
/// afresh from the present instead of sending a burst.
pub const MAX_LAG: Duration = Duration::from_millis(500);

/// One Poisson send stream.
#[derive(Clone, Debug)]
pub struct PoissonStream {
    mean_gap: Option<Duration>,
    next: Option<Timestamp>,
}

impl PoissonStream {
    /// A stream of `rate_per_sec` sends per second on average; rate 0 never sends. It is idle
    /// until [`PoissonStream::start`].
    pub fn new(rate_per_sec: f64) -> Result<Self, Error> {
        if !rate_per_sec.is_finite() || rate_per_sec < 0.0 {
            return Err(Error::Invalid {
                field: "cover rate",
                reason: Constraint::NotARate(rate_per_sec),
            });
        }
        let mean_gap = if rate_per_sec > 0.0 {
            Some(Duration::try_from_secs_f64(1.0 / rate_per_sec).unwrap_or(MAX_GAP))
        } else {
            None
        };
        Ok(PoissonStream {
            mean_gap,
            next: None,
        })
    }

    /// The average number of sends per second.
    pub fn rate_per_sec(&self) -> f64 {
        self.mean_gap.map_or(0.0, |g| 1.0 / g.as_secs_f64())
    }

    /// Start (or restart) the stream at `now`: the first send is one exponential gap later.
    /// Returns that time (`None` for rate 0).
    pub fn start<R: Rng + ?Sized>(&mut self, now: Timestamp, rng: &mut R) -> Option<Timestamp> {
        self.next = self.mean_gap.map(|g| now + sample_delay(rng, g, MAX_GAP));
        self.next
    }

    /// Start (or restart) the stream with its first send at `at` (e.g. at once).
    pub fn start_at(&mut self, at: Timestamp) {
        self.next = self.mean_gap.map(|_| at);
    }

    /// When the next send is due (`None` when idle or rate 0).
    pub fn poll_timeout(&self) -> Option<Timestamp> {
        self.next
    }

    /// If a send is due at or before `now`: its due time, and the next one is scheduled an
    /// exponential gap after it, so a driver that is a little late (a busy machine, a
    /// coarse timer) keeps the stream's rate exactly and only shifts sends by its lateness;
    /// how late it is must not change how often it sends. A driver more than [`MAX_LAG`]
    /// behind (a suspended laptop) does not get a burst of catch-up sends: the stream
    /// restarts from `now`.
    pub fn pop_due<R: Rng + ?Sized>(&mut self, now: Timestamp, rng: &mut R) -> Option<Timestamp> {
        let due = self.next?;
        if due > now {
            return None;
        }
        let gap = self.mean_gap?;
        let next = due + sample_delay(rng, gap, MAX_GAP);
        self.next = Some(if next + MAX_LAG > now {
            next
        } else {
            now + sample_delay(rng, gap, MAX_GAP)
        });
        Some(due)
    }
}

/// What a client sends at a due time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ClientSend {
    /// A payload slot with a real message waiting: send it.
    Real,
    /// A payload slot with nothing waiting: a drop cover packet in its place.
    PayloadCover,
    /// The loop stream: a packet through the whole network back to the sender.
    Loop,
    /// The drop stream: a packet discarded at a random gateway.
    Drop,
}

impl ClientSend {
    /// Whether this is cover (anything but a real message).
    pub fn is_cover(self) -> bool {
        self != ClientSend::Real
    }
}

/// The rates of the three client streams, sends per second (network-wide values, published
/// in the directory so that every client looks alike).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ClientRates {
    /// lambda_P: payload slots (a real message if one waits, else drop cover).
    pub payload: f64,
    /// lambda_L: loop cover.
    pub loop_: f64,
    /// lambda_D: drop cover.
    pub drop: f64,
}

/// The three Loopix client streams of one client.
#[derive(Clone, Debug)]
pub struct ClientSchedule {
    payload: PoissonStream,
    loop_: PoissonStream,
    drop: PoissonStream,
}

impl ClientSchedule {
    /// Streams at the given rates, idle until [`ClientSchedule::start`].
    pub fn new(rates: ClientRates) -> Result<Self, Error> {
        Ok(ClientSchedule {
            payload: PoissonStream::new(rates.payload)?,
            loop_: PoissonStream::new(rates.loop_)?,
            drop: PoissonStream::new(rates.drop)?,
        })
    }

    /// Start all three streams at `now` (each independently).
    pub fn start<R: Rng + ?Sized>(&mut self, now: Timestamp, rng: &mut R) {
        self.payload.start(now, rng);
        self.loop_.start(now, rng);
        self.drop.start(now, rng);
    }

    /// When the next send of any stream is due.
    pub fn poll_timeout(&self) -> Option<Timestamp> {
        [
            self.payload.poll_timeout(),
            self.loop_.poll_timeout(),
            self.drop.poll_timeout(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// The earliest send due at or before `now`, if any, and what to send; `real_waiting`
    /// says whether a real message is queued (the caller dequeues it on
    /// [`ClientSend::Real`]). Call again until `None`. Ties go payload, loop, drop.
    pub fn pop_due<R: Rng + ?Sized>(
        &mut self,
        now: Timestamp,
        rng: &mut R,
        real_waiting: bool,
    ) -> Option<(Timestamp, ClientSend)> {
        let candidates = [
            (self.payload.poll_timeout(), 0u8),
            (self.loop_.poll_timeout(), 1),
            (self.drop.poll_timeout(), 2),
        ];
        let (due, which) = candidates
            .into_iter()
            .filter_map(|(t, w)| t.map(|t| (t, w)))
            .filter(|(t, _)| *t <= now)
            .min()?;
        let kind = match which {
            0 => {
                self.payload.pop_due(now, rng);
                if real_waiting {
                    ClientSend::Real
                } else {
                    ClientSend::PayloadCover
                }
            }
            1 => {
                self.loop_.pop_due(now, rng);
                ClientSend::Loop
            }
            _ => {
                self.drop.pop_due(now, rng);
                ClientSend::Drop
            }
        };
        Some((due, kind))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    fn secs(s: f64) -> Timestamp {
        Timestamp::ZERO + Duration::from_secs_f64(s)
    }

    /// Drive `s` on a virtual clock from 0 to `end` seconds, stepping to each due time.
    fn run_stream(s: &mut PoissonStream, seed: u64, end: f64) -> Vec<Timestamp> {
        let mut rng = StdRng::seed_from_u64(seed);
        s.start(Timestamp::ZERO, &mut rng);
        let mut out = Vec::new();
        while let Some(t) = s.poll_timeout() {
            if t > secs(end) {
                break;
            }
            while let Some(due) = s.pop_due(t, &mut rng) {
                assert_eq!(due, t, "on a virtual clock a send is never late");
                out.push(due);
            }
        }
        out
    }

    #[test]
    fn mean_rate_and_exponential_gaps() {
        let mut s = PoissonStream::new(50.0).expect("rate");
        let sends = run_stream(&mut s, 7, 400.0);
        // 20000 expected; the standard deviation is about 141.
        let rate = sends.len() as f64 / 400.0;
        assert!((rate - 50.0).abs() < 1.5, "rate {rate}");
        // Exponential gaps: about e^-1 of them exceed the mean gap.
        let gaps: Vec<f64> = sends
            .windows(2)
            .map(|w| (w[1] - w[0]).as_secs_f64())
            .collect();
        let long = gaps.iter().filter(|g| **g > 0.02).count() as f64 / gaps.len() as f64;
        assert!(
            (long - (-1f64).exp()).abs() < 0.02,
            "share of long gaps {long}"
        );
    }

    #[test]
    fn deterministic_for_a_seed_and_silent_at_rate_zero() {
        let a = run_stream(&mut PoissonStream::new(10.0).expect("rate"), 3, 20.0);
        let b = run_stream(&mut PoissonStream::new(10.0).expect("rate"), 3, 20.0);
        let c = run_stream(&mut PoissonStream::new(10.0).expect("rate"), 4, 20.0);
        assert_eq!(a, b);
        assert_ne!(a, c);
        let mut zero = PoissonStream::new(0.0).expect("rate");
        assert!(run_stream(&mut zero, 3, 20.0).is_empty());
        assert!(PoissonStream::new(-1.0).is_err());
        assert!(PoissonStream::new(f64::NAN).is_err());
    }

    #[test]
    fn a_late_driver_gets_no_burst() {
        let mut rng = StdRng::seed_from_u64(5);
        let mut s = PoissonStream::new(100.0).expect("rate");
        s.start(Timestamp::ZERO, &mut rng);
        // Wake up after 10 s (about 1000 sends missed): only those of the last MAX_LAG
        // (about 50) leave, not a thousand.
        let mut n = 0;
        while s.pop_due(secs(10.0), &mut rng).is_some() {
            n += 1;
        }
        assert!(n <= 100, "{n} sends in a burst");
        assert!(s.poll_timeout().expect("scheduled") > secs(10.0));
    }

    #[test]
    fn a_slightly_late_driver_keeps_the_rate() {
        // Always 2 ms late at 250/s (gaps of 4 ms on average): the rate must not drop.
        let mut rng = StdRng::seed_from_u64(6);
        let mut s = PoissonStream::new(250.0).expect("rate");
        s.start(Timestamp::ZERO, &mut rng);
        let mut n = 0u32;
        while let Some(t) = s.poll_timeout() {
            if t > secs(100.0) {
                break;
            }
            let now = t + Duration::from_millis(2);
            while s.pop_due(now, &mut rng).is_some() {
                n += 1;
            }
        }
        // 25,000 expected; a Poisson count's standard deviation is about 158.
        assert!((24_400..=25_600).contains(&n), "{n} sends in 100 s");
    }

    #[test]
    fn client_schedule_mixes_three_streams_and_fills_payload_slots() {
        let rates = ClientRates {
            payload: 20.0,
            loop_: 5.0,
            drop: 5.0,
        };
        let mut rng = StdRng::seed_from_u64(9);
        let mut c = ClientSchedule::new(rates).expect("rates");
        c.start(Timestamp::ZERO, &mut rng);
        let end = secs(200.0);
        let mut counts = std::collections::HashMap::new();
        let mut waiting = 0u32;
        let mut sent_real = 0u32;
        let mut last = Timestamp::ZERO;
        // Real messages arrive every 0.1 s (10/s, half the payload rate).
        let mut next_msg = secs(0.1);
        while let Some(t) = c.poll_timeout() {
            if t > end {
                break;
            }
            while next_msg <= t {
                waiting += 1;
                next_msg = next_msg + Duration::from_millis(100);
            }
            while let Some((due, kind)) = c.pop_due(t, &mut rng, waiting > 0) {
                assert!(due >= last);
                last = due;
                if kind == ClientSend::Real {
                    waiting -= 1;
                    sent_real += 1;
                }
                *counts.entry(kind).or_insert(0u32) += 1;
            }
        }
        let per_sec = |k| f64::from(*counts.get(&k).unwrap_or(&0)) / 200.0;
        let payload = per_sec(ClientSend::Real) + per_sec(ClientSend::PayloadCover);
        assert!((payload - 20.0).abs() < 1.0, "payload {payload}");
        assert!((per_sec(ClientSend::Loop) - 5.0).abs() < 0.5);
        assert!((per_sec(ClientSend::Drop) - 5.0).abs() < 0.5);
        // Every real message got a slot (the payload rate is twice the message rate).
        assert!(
            sent_real >= 1990 && waiting < 10,
            "{sent_real} sent, {waiting} waiting"
        );
        assert!(per_sec(ClientSend::PayloadCover) > 8.0);
        assert!(ClientSend::Loop.is_cover() && !ClientSend::Real.is_cover());
    }
}
