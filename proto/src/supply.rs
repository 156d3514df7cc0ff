//! How many SURBs a SOCKS proxy keeps at the exit for one stream (sans-IO policy): a few,
//! plus what the exit will use in one and a half round trips at its recent rate; refilled
//! after a silence (the exit's SURBs were lost) or when the client starts avoiding a relay
//! (SURBs through it never come back). Time is passed in.

use std::time::Duration;

use crate::Timestamp;

/// SURBs kept at the exit for a stream that receives nothing: enough for the exit's answer
/// to `Open` and the first chunks of data.
pub const MIN_SURBS: usize = 8;
/// The reply demand is measured over this long: the target is [`MIN_SURBS`] plus the
/// chunks the exit sent in that time, times one and a half of the stream's round trips in
/// units of this window if that is more than one (at most 4).
pub const DEMAND_WINDOW: Duration = Duration::from_secs(1);
/// With nothing from the exit for this long, assume its SURBs were lost and send more
/// (doubling up to [`MAX_STALL`]).
pub const STALL: Duration = Duration::from_secs(1);
/// The longest wait between refills after a silence.
pub const MAX_STALL: Duration = Duration::from_secs(30);

/// Chunks received from the exit in the recent past, in buckets of a tenth of
/// [`DEMAND_WINDOW`].
#[derive(Clone, Debug)]
struct Demand {
    buckets: [u32; 10],
    /// Index of the bucket that ends last, and when it started.
    head: usize,
    head_start: Timestamp,
}

impl Demand {
    fn new(now: Timestamp) -> Self {
        Demand {
            buckets: [0; 10],
            head: 0,
            head_start: now,
        }
    }

    fn advance(&mut self, now: Timestamp) {
        let width = DEMAND_WINDOW / 10;
        let mut steps = 0;
        while now.saturating_duration_since(self.head_start) >= width && steps < 10 {
            self.head = (self.head + 1) % 10;
            self.buckets[self.head] = 0;
            self.head_start = self.head_start + width;
            steps += 1;
        }
        if steps == 10 {
            self.head_start = now;
        }
    }

    fn add(&mut self, now: Timestamp) {
        self.advance(now);
        self.buckets[self.head] = self.buckets[self.head].saturating_add(1);
    }

    fn recent(&mut self, now: Timestamp) -> u32 {
        self.advance(now);
        self.buckets.iter().sum()
    }
}

/// One stream's SURB supply at the exit, as the proxy estimates it.
#[derive(Clone, Debug)]
pub struct SurbSupply {
    /// Estimate of the SURBs the exit holds for this stream.
    held: i64,
    /// Most SURBs to keep at the exit.
    max_target: i64,
    demand: Demand,
    stall: Duration,
    next_stall: Timestamp,
    /// When the first packet (the `Open`) left, and the round trip until the exit's first
    /// chunk: the time a SURB takes to come back as a reply, at least.
    opened: Option<Timestamp>,
    rtt: Option<Duration>,
}

impl SurbSupply {
    /// A stream starting at `now`, keeping at most `max_target` SURBs at the exit.
    pub fn new(now: Timestamp, max_target: usize) -> Self {
        SurbSupply {
            held: 0,
            max_target: i64::try_from(max_target).unwrap_or(i64::MAX),
            demand: Demand::new(now),
            stall: STALL,
            next_stall: now + STALL,
            opened: None,
            rtt: None,
        }
    }

    /// The stream's first packet (its `Open`) left at `now`.
    pub fn opened(&mut self, now: Timestamp) {
        self.opened.get_or_insert(now);
    }

    /// SURBs to keep at the exit now: a few, plus what the exit will use in one and a half
    /// round trips at its recent rate (SURBs count as held from when they are made until
    /// their reply comes back). The round trip is measured once, from the `Open` to the
    /// exit's first chunk, which includes the exit's connection to the target: hence the
    /// cap of 4 windows.
    pub fn target(&mut self, now: Timestamp) -> i64 {
        let per_window = f64::from(self.demand.recent(now));
        let trips = self.rtt.map_or(1.0, |r| {
            (1.5 * r.as_secs_f64() / DEMAND_WINDOW.as_secs_f64()).clamp(1.0, 4.0)
        });
        let want = MIN_SURBS as f64 + per_window * trips;
        (want.min(self.max_target as f64)) as i64
    }

    /// A chunk of the exit's arrived (it came in one of our SURBs).
    pub fn on_chunk(&mut self, now: Timestamp) {
        if self.rtt.is_none() {
            self.rtt = self.opened.map(|t| now.saturating_duration_since(t));
        }
        self.held -= 1;
        self.demand.add(now);
        self.stall = STALL;
        self.next_stall = now + STALL;
    }

    /// SURBs the exit held may be dead (a relay on their routes is now avoided): count
    /// none as held, so fresh ones follow.
    pub fn forget_held(&mut self) {
        self.held = self.held.min(0);
    }

    /// Whether an extra (ack-only) chunk should carry SURBs now: after a silence the held
    /// ones count as lost (the wait doubles each time), and SURBs go out when at least four
    /// are missing.
    pub fn wants_extra(&mut self, now: Timestamp) -> bool {
        if now >= self.next_stall {
            self.forget_held();
            self.stall = (self.stall * 2).min(MAX_STALL);
            self.next_stall = now + self.stall;
        }
        self.held + 4 <= self.target(now)
    }

    /// When [`SurbSupply::wants_extra`] may turn true with nothing arriving.
    pub fn next_extra(&self) -> Timestamp {
        self.next_stall
    }

    /// How many SURBs a packet with room for `room` should carry now.
    pub fn to_attach(&mut self, now: Timestamp, room: usize) -> usize {
        let want = usize::try_from((self.target(now) - self.held).max(0)).unwrap_or(0);
        room.min(want)
    }

    /// `n` SURBs left for the exit.
    pub fn attached(&mut self, n: usize) {
        self.held += i64::try_from(n).unwrap_or(i64::MAX);
    }

    /// The estimate of SURBs held at the exit.
    pub fn held(&self) -> i64 {
        self.held
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: u64) -> Timestamp {
        Timestamp::ZERO + Duration::from_millis(ms)
    }

    #[test]
    fn an_idle_stream_keeps_a_few_and_a_busy_one_follows_its_demand() {
        let mut s = SurbSupply::new(at(0), 112);
        s.opened(at(0));
        assert_eq!(s.target(at(0)), MIN_SURBS as i64);
        assert_eq!(s.to_attach(at(0), 5), 5);
        s.attached(5);
        assert_eq!(s.to_attach(at(0), 5), 3, "up to the target");
        s.attached(3);
        assert!(!s.wants_extra(at(10)));
        // The exit's first chunk 400 ms later: the round trip is 0.4 s (trips = 1).
        s.on_chunk(at(400));
        assert_eq!(s.held(), 7);
        // 50 chunks a second for a while: the target follows (8 + 50 in a window).
        for i in 0..100u64 {
            s.on_chunk(at(1000 + i * 20));
        }
        let t = s.target(at(3000));
        assert!((50..=60).contains(&t), "{t}");
        assert!(s.wants_extra(at(3000)), "far below the target");
        // The demand window passes with nothing: back to the minimum.
        assert_eq!(s.target(at(5000)), MIN_SURBS as i64);
        // Never above the cap.
        let mut c = SurbSupply::new(at(0), 20);
        for i in 0..200u64 {
            c.on_chunk(at(i * 5));
        }
        assert_eq!(c.target(at(1000)), 20);
    }

    #[test]
    fn a_silence_refills_with_a_doubling_wait() {
        let mut s = SurbSupply::new(at(0), 112);
        s.attached(8);
        // Nothing from the exit: at 1 s the SURBs count as lost and refill is wanted...
        assert!(!s.wants_extra(at(999)));
        assert!(s.wants_extra(at(1000)));
        assert_eq!(s.held(), 0);
        s.attached(8);
        // ...then again after 2 s, 4 s, ... up to 30 s.
        assert_eq!(s.next_extra(), at(3000));
        let mut now = at(3000);
        let mut waits = Vec::new();
        for _ in 0..7 {
            let before = s.next_extra();
            s.wants_extra(before);
            s.attached(8);
            waits.push(s.next_extra().saturating_duration_since(before).as_secs());
            now = s.next_extra();
        }
        assert_eq!(waits, vec![4, 8, 16, 30, 30, 30, 30]);
        // A chunk resets the wait.
        s.on_chunk(now);
        assert_eq!(s.next_extra(), now + STALL);
    }
}
