//! How many SURBs a SOCKS proxy keeps at the exit for one stream (sans-IO policy): a few,
//! plus what the exit will use in one and a half round trips at its recent rate; refilled
//! after a silence (the exit's SURBs were lost), when the client starts avoiding a relay
//! (SURBs through it never come back), and before the SURBs held die with their epoch's
//! keys (they then no longer count as held). Time is passed in.

use std::collections::VecDeque;
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

/// A SURB counts as dead this long before its keys are deleted, when no round trip has
/// been measured yet: it must still reach the exit, wait there and come back.
pub const DEATH_MARGIN: Duration = Duration::from_secs(1);
/// The most a measured round trip adds to that margin.
pub const MAX_DEATH_MARGIN: Duration = Duration::from_secs(5);

/// One stream's SURB supply at the exit, as the proxy estimates it.
#[derive(Clone, Debug)]
pub struct SurbSupply {
    /// Estimate of the SURBs the exit holds for this stream, in batches as they were sent
    /// (oldest first): how many, and when their keys die (`None`: never, as far as known).
    held: VecDeque<(Option<Timestamp>, i64)>,
    /// Replies that came in SURBs no batch accounted for (after [`SurbSupply::forget_held`]):
    /// the next SURBs sent replace them first.
    debt: i64,
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
            held: VecDeque::new(),
            debt: 0,
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
        // The exit uses the newest SURBs first.
        match self.held.back_mut() {
            Some((_, n)) => {
                *n -= 1;
                if *n <= 0 {
                    self.held.pop_back();
                }
            }
            None => self.debt += 1,
        }
        self.demand.add(now);
        self.stall = STALL;
        self.next_stall = now + STALL;
    }

    /// SURBs the exit held may be dead (a relay on their routes is now avoided): count
    /// none as held, so fresh ones follow.
    pub fn forget_held(&mut self) {
        self.held.clear();
    }

    /// How long before its keys die a SURB stops counting: one round trip (as measured,
    /// at most [`MAX_DEATH_MARGIN`]), at least [`DEATH_MARGIN`].
    fn margin(&self) -> Duration {
        self.rtt
            .unwrap_or(DEATH_MARGIN)
            .clamp(DEATH_MARGIN, MAX_DEATH_MARGIN)
    }

    /// SURBs the exit holds that will still work for a round trip from `now`; batches that
    /// will not are forgotten.
    fn alive(&mut self, now: Timestamp) -> i64 {
        let margin = self.margin();
        self.held
            .retain(|(dies, _)| dies.is_none_or(|d| now + margin < d));
        self.held.iter().map(|(_, n)| n).sum::<i64>() - self.debt
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
        self.alive(now) + 4 <= self.target(now)
    }

    /// When [`SurbSupply::wants_extra`] may turn true with nothing arriving: after a
    /// silence, or when a batch of SURBs stops counting before its keys die.
    pub fn next_extra(&self) -> Timestamp {
        let margin = self.margin();
        self.held
            .iter()
            .filter_map(|(dies, _)| *dies)
            .map(|d| d.saturating_sub(margin))
            .fold(self.next_stall, Timestamp::min)
    }

    /// How many SURBs a packet with room for `room` should carry now.
    pub fn to_attach(&mut self, now: Timestamp, room: usize) -> usize {
        let want = usize::try_from((self.target(now) - self.alive(now)).max(0)).unwrap_or(0);
        room.min(want)
    }

    /// `n` SURBs left for the exit, alive as long as their keys.
    pub fn attached(&mut self, n: usize) {
        self.attached_until(n, None);
    }

    /// `n` SURBs left for the exit, whose keys die at `dies` (the earliest of them).
    pub fn attached_until(&mut self, n: usize, dies: Option<Timestamp>) {
        let mut n = i64::try_from(n).unwrap_or(i64::MAX);
        let paid = n.min(self.debt);
        self.debt -= paid;
        n -= paid;
        if n > 0 {
            self.held.push_back((dies, n));
        }
    }

    /// The estimate of SURBs held at the exit (dead ones included until they are looked at).
    pub fn held(&self) -> i64 {
        self.held.iter().map(|(_, n)| n).sum::<i64>() - self.debt
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: u64) -> Timestamp {
        Timestamp::ZERO + Duration::from_millis(ms)
    }

    #[test]
    fn surbs_stop_counting_a_round_trip_before_their_keys_die() {
        let mut s = SurbSupply::new(at(0), 112);
        s.opened(at(0));
        // 30 SURBs whose keys die at 10 s; a reply every 400 ms keeps the silence timer
        // quiet (the first one sets the round trip to 0.4 s: the margin is then 1 s, the
        // least).
        s.attached_until(30, Some(at(10_000)));
        for i in 1..=22u64 {
            s.on_chunk(at(i * 400));
        }
        assert_eq!(s.held(), 8);
        assert_eq!(
            s.next_extra(),
            at(9000),
            "a round trip before the keys die, ahead of the silence timer (9.8 s)"
        );
        assert!(s.to_attach(at(8900), 50) < s.target(at(8900)) as usize);
        // At 9 s none of them counts: the whole target goes out, in time.
        let target = s.target(at(9000));
        assert!(target >= MIN_SURBS as i64);
        assert_eq!(s.to_attach(at(9000), 50) as i64, target);
        assert!(s.wants_extra(at(9000)));
        assert_eq!(s.held(), 0, "the dead batch is forgotten");
        // SURBs that live longer (the next epoch's keys) keep counting.
        s.attached_until(10, Some(at(20_000)));
        assert_eq!(
            s.to_attach(at(9100), 50) as i64,
            (s.target(at(9100)) - 10).max(0)
        );
        // A reply uses the newest batch; one in a SURB no batch holds is a debt the next
        // SURBs pay first.
        s.attached_until(2, None);
        s.on_chunk(at(9200));
        s.on_chunk(at(9300));
        s.on_chunk(at(9400));
        assert_eq!(s.held(), 9);
        s.forget_held();
        s.on_chunk(at(9500));
        assert_eq!(s.held(), -1);
        s.attached_until(3, Some(at(20_000)));
        assert_eq!(s.held(), 2);
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
