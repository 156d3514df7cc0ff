//! Replay filter keyed by the Sphinx replay tag.
//!
//! Two rotating blocked Bloom filter generations, each sized for `capacity` tags at
//! false-positive rate `fp_rate`. When the current generation has taken `capacity` tags, the older one is
//! cleared and becomes current. A replay is therefore caught for at least the last
//! `capacity` packets (and at most `2 * capacity`); older tags are forgotten, which is why
//! Sphinx keys must rotate (each key's filter covers its whole epoch when sized for it).
//! Memory is fixed at construction: `2 * 1.25 * capacity * ln(1/p) / ln(2)^2` bits; for one
//! million tags at p = 1e-6 that is 2 x 4.5 MB.
//!
//! Tags are hashed with a per-filter secret key (BLAKE3 keyed mode), so a sender who knows
//! its own packets' tags cannot aim them at chosen bits.

use crate::Error;
use crate::error::{Constraint, Defect};

/// A bounded-memory set of replay tags.
pub struct ReplayFilter {
    key: [u8; 32],
    generations: [Vec<u64>; 2],
    current: usize,
    in_current: u64,
    /// Tags recorded in all (kept in a saved filter).
    inserted: u64,
    capacity: u64,
    bits: u64,
    hashes: u32,
}

impl std::fmt::Debug for ReplayFilter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplayFilter")
            .field("capacity", &self.capacity)
            .field("bits", &self.bits)
            .field("hashes", &self.hashes)
            .finish_non_exhaustive()
    }
}

const BLOCK_BITS: u64 = 512;
const BLOCK_WORDS: usize = (BLOCK_BITS / 64) as usize;

/// Bits and hash count of one Bloom generation for `capacity` items at rate `fp_rate`:
/// the classic optimum `n ln(1/p) / ln(2)^2` bits, plus a quarter for the blocked layout's
/// uneven load, rounded up to whole 512-bit blocks; k = log2(1/p) hashes.
pub fn bloom_sizing(capacity: u64, fp_rate: f64) -> (u64, u32) {
    let ln2 = std::f64::consts::LN_2;
    let classic = capacity as f64 * (1.0 / fp_rate).ln() / (ln2 * ln2);
    let bits = ((classic * 1.25).ceil() as u64)
        .max(BLOCK_BITS)
        .div_ceil(BLOCK_BITS)
        * BLOCK_BITS;
    let hashes = (1.0 / fp_rate).log2().round().clamp(1.0, 42.0) as u32;
    (bits, hashes)
}

impl ReplayFilter {
    /// A filter with a secret hashing `key` (draw it from a CSPRNG), holding `capacity` tags
    /// per generation at false-positive rate `fp_rate`.
    pub fn new(key: [u8; 32], capacity: u64, fp_rate: f64) -> Result<Self, Error> {
        if capacity == 0 || capacity > 1 << 32 {
            return Err(Error::Invalid {
                field: "replay.capacity",
                reason: Constraint::Rule("must be between 1 and 2^32"),
            });
        }
        if !(1e-12..0.5).contains(&fp_rate) {
            return Err(Error::Invalid {
                field: "replay.false_positive_rate",
                reason: Constraint::Rule("must be in [1e-12, 0.5)"),
            });
        }
        let (bits, hashes) = bloom_sizing(capacity, fp_rate);
        let words = usize::try_from(bits / 64).map_err(|_| Error::Invalid {
            field: "replay.capacity",
            reason: Constraint::Rule("too large for this machine"),
        })?;
        Ok(ReplayFilter {
            key,
            generations: [vec![0; words], vec![0; words]],
            current: 0,
            in_current: 0,
            inserted: 0,
            capacity,
            bits,
            hashes,
        })
    }

    /// Bytes held by both generations.
    pub fn memory_bytes(&self) -> usize {
        self.generations.iter().map(|g| g.len() * 8).sum()
    }

    /// Hash functions per tag.
    pub fn hashes(&self) -> u32 {
        self.hashes
    }

    /// Word index and mask of each of `tag`'s bits. Blocked Bloom filter: all of a tag's bits
    /// fall in one 512-bit (cache-line) block of a generation, so a lookup costs one cache
    /// miss per generation rather than one per hash.
    fn positions(&self, tag: &[u8; 32]) -> ([(usize, u64); 64], usize) {
        let h = blake3::keyed_hash(&self.key, tag);
        let b = h.as_bytes();
        let block_hash = u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]);
        let block = (block_hash % (self.bits / BLOCK_BITS)) as usize * BLOCK_WORDS;
        // Up to 21 bit positions of 9 bits each from the remaining 192 hash bits; more hashes
        // than that reuse them with a rotation (sizing caps k well below 64).
        let mut rest = [0u64; 3];
        for (i, r) in rest.iter_mut().enumerate() {
            let o = 8 + 8 * i;
            *r = u64::from_le_bytes([
                b[o],
                b[o + 1],
                b[o + 2],
                b[o + 3],
                b[o + 4],
                b[o + 5],
                b[o + 6],
                b[o + 7],
            ]);
        }
        let mut positions = [(0usize, 0u64); 64];
        let k = self.hashes as usize;
        for (i, p) in positions[..k].iter_mut().enumerate() {
            let word = rest[(i / 7) % 3];
            let shift = (i % 7) * 9;
            let bit = ((word >> shift) as usize + i / 21 * 173) & 511;
            *p = (block + bit / 64, 1u64 << (bit % 64));
        }
        (positions, k)
    }

    /// Whether `tag` is (probably) in the filter, without recording it.
    pub fn contains(&self, tag: &[u8; 32]) -> bool {
        let (positions, k) = self.positions(tag);
        let positions = &positions[..k];
        self.generations
            .iter()
            .any(|g| positions.iter().all(|&(w, m)| g[w] & m != 0))
    }

    /// Record `tag`; returns `true` if it was (probably) seen before.
    pub fn check_and_insert(&mut self, tag: &[u8; 32]) -> bool {
        let (positions, k) = self.positions(tag);
        let positions = &positions[..k];
        let (cur, old) = (self.current, 1 - self.current);
        let seen_in = |g: &[u64]| positions.iter().all(|&(w, m)| g[w] & m != 0);
        if seen_in(&self.generations[cur]) || seen_in(&self.generations[old]) {
            return true;
        }
        for &(w, m) in positions.iter() {
            self.generations[cur][w] |= m;
        }
        self.in_current += 1;
        self.inserted += 1;
        if self.in_current >= self.capacity {
            self.current = old;
            self.generations[old].fill(0);
            self.in_current = 0;
        }
        false
    }
}

/// First bytes of a saved filter (version 1 of the format below).
const FILE_MAGIC: &[u8; 8] = b"LETHERF1";

impl ReplayFilter {
    /// Tags recorded since the filter was made (a saved filter keeps its count): a driver
    /// saves the filter again only when this moved.
    pub fn inserted(&self) -> u64 {
        self.inserted
    }

    /// The filter as bytes, for a relay to keep across a restart. Format (little endian):
    /// `LETHERF1`, the 32-byte hashing key, capacity, bits (u64 each), hashes (u32),
    /// current generation (u8), tags in the current generation, tags inserted (u64 each),
    /// both generations' words (u64 each, bits / 64 per generation), then the BLAKE3 hash
    /// of everything before it (32 bytes): a torn or altered file is refused whole.
    pub fn to_bytes(&self) -> Vec<u8> {
        let words: usize = self.generations.iter().map(Vec::len).sum();
        let mut out = Vec::with_capacity(8 + 32 + 8 * 2 + 4 + 1 + 8 * 2 + words * 8 + 32);
        out.extend_from_slice(FILE_MAGIC);
        out.extend_from_slice(&self.key);
        out.extend_from_slice(&self.capacity.to_le_bytes());
        out.extend_from_slice(&self.bits.to_le_bytes());
        out.extend_from_slice(&self.hashes.to_le_bytes());
        out.push(self.current as u8);
        out.extend_from_slice(&self.in_current.to_le_bytes());
        out.extend_from_slice(&self.inserted.to_le_bytes());
        for g in &self.generations {
            for w in g {
                out.extend_from_slice(&w.to_le_bytes());
            }
        }
        let check = blake3::hash(&out);
        out.extend_from_slice(check.as_bytes());
        out
    }

    /// A filter saved by [`ReplayFilter::to_bytes`], if it is whole and was made for
    /// `capacity` tags at `fp_rate` (a filter of other parameters is refused: the relay then
    /// starts a fresh one).
    pub fn from_bytes(bytes: &[u8], capacity: u64, fp_rate: f64) -> Result<Self, Error> {
        let bad = |detail: &'static str| Error::Malformed {
            what: "replay filter file",
            detail: Defect::Other(detail),
        };
        let fresh = ReplayFilter::new([0; 32], capacity, fp_rate)?;
        let words = fresh.generations[0].len();
        let want = 8 + 32 + 8 + 8 + 4 + 1 + 8 + 8 + 2 * words * 8 + 32;
        if bytes.len() != want {
            return Err(bad("wrong length for these parameters"));
        }
        let (body, check) = bytes.split_at(want - 32);
        if blake3::hash(body).as_bytes() != check {
            return Err(bad("checksum mismatch (torn or altered)"));
        }
        if &body[..8] != FILE_MAGIC {
            return Err(bad("not a replay filter file"));
        }
        let u64_at = |o: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&body[o..o + 8]);
            u64::from_le_bytes(b)
        };
        let mut key = [0u8; 32];
        key.copy_from_slice(&body[8..40]);
        let (cap, bits) = (u64_at(40), u64_at(48));
        let mut h = [0u8; 4];
        h.copy_from_slice(&body[56..60]);
        let hashes = u32::from_le_bytes(h);
        if cap != fresh.capacity || bits != fresh.bits || hashes != fresh.hashes {
            return Err(bad("made for other parameters"));
        }
        let current = usize::from(body[60]);
        let (in_current, inserted) = (u64_at(61), u64_at(69));
        if current > 1 || in_current >= cap {
            return Err(bad("inconsistent header"));
        }
        let mut generations = [vec![0u64; words], vec![0u64; words]];
        let mut o = 77;
        for g in generations.iter_mut() {
            for w in g.iter_mut() {
                *w = u64_at(o);
                o += 8;
            }
        }
        Ok(ReplayFilter {
            key,
            generations,
            current,
            in_current,
            inserted,
            capacity: cap,
            bits,
            hashes,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    fn tag(rng: &mut StdRng) -> [u8; 32] {
        let mut t = [0u8; 32];
        rng.fill_bytes(&mut t);
        t
    }

    #[test]
    fn sizing_matches_the_formula() {
        let (bits, k) = bloom_sizing(1_000_000, 1e-6);
        // 1.25 * 1e6 * ln(1e6) / ln(2)^2 = 35.95 Mbit, k = log2(1e6) = 20
        assert!((35_940_000..35_960_000).contains(&bits), "{bits}");
        assert_eq!(bits % 512, 0);
        assert_eq!(k, 20);
        let f = ReplayFilter::new([0; 32], 1_000_000, 1e-6).unwrap();
        assert_eq!(f.memory_bytes(), 2 * (bits / 8) as usize);
    }

    #[test]
    fn catches_replays_and_bounds_false_positives() {
        let mut rng = StdRng::seed_from_u64(7);
        let mut f = ReplayFilter::new([1; 32], 20_000, 1e-3).unwrap();
        let tags: Vec<[u8; 32]> = (0..20_000).map(|_| tag(&mut rng)).collect();
        let mut false_pos = 0;
        for t in &tags[..19_999] {
            if f.check_and_insert(t) {
                false_pos += 1;
            }
        }
        // expected about 1e-3 * 20_000 / 2 (the filter fills as it goes): allow 4x
        assert!(false_pos < 40, "{false_pos} false positives");
        for t in &tags[..19_999] {
            assert!(f.check_and_insert(t), "replay missed");
        }
    }

    #[test]
    fn measured_false_positive_rate_is_within_twice_the_target() {
        // Fill a generation to capacity - 1 (no rotation), then ask about fresh tags.
        let mut rng = StdRng::seed_from_u64(12);
        let mut f = ReplayFilter::new([3; 32], 50_000, 1e-4).unwrap();
        for _ in 0..49_999 {
            f.check_and_insert(&tag(&mut rng));
        }
        let trials = 400_000;
        let fp = (0..trials).filter(|_| f.contains(&tag(&mut rng))).count();
        let rate = fp as f64 / trials as f64;
        assert!(rate < 2e-4, "false-positive rate {rate}");
    }

    #[test]
    fn rotation_keeps_the_last_generation_and_forgets_older_ones() {
        let mut rng = StdRng::seed_from_u64(8);
        let mut f = ReplayFilter::new([2; 32], 100, 1e-9).unwrap();
        let first = tag(&mut rng);
        assert!(!f.check_and_insert(&first));
        for _ in 0..99 {
            f.check_and_insert(&tag(&mut rng));
        }
        // generation rotated once: `first` is in the old generation, still caught
        assert!(f.check_and_insert(&first));
        for _ in 0..100 {
            f.check_and_insert(&tag(&mut rng));
        }
        // rotated twice: `first` is forgotten
        assert!(!f.check_and_insert(&first));
    }

    #[test]
    fn a_saved_filter_remembers_its_tags_and_a_damaged_file_is_refused() {
        let mut rng = StdRng::seed_from_u64(9);
        let mut f = ReplayFilter::new([4; 32], 1000, 1e-6).unwrap();
        let tags: Vec<[u8; 32]> = (0..1500).map(|_| tag(&mut rng)).collect();
        for t in &tags {
            f.check_and_insert(t);
        }
        let bytes = f.to_bytes();
        let mut g = ReplayFilter::from_bytes(&bytes, 1000, 1e-6).unwrap();
        assert_eq!(g.inserted(), 1500);
        for t in &tags {
            assert!(
                g.check_and_insert(t),
                "a replay after the restart is caught"
            );
        }
        assert_eq!(g.to_bytes(), f.to_bytes(), "nothing new was recorded");
        // Torn, altered or made for other parameters: refused.
        assert!(ReplayFilter::from_bytes(&bytes[..bytes.len() - 1], 1000, 1e-6).is_err());
        let mut flipped = bytes.clone();
        flipped[100] ^= 1;
        assert!(ReplayFilter::from_bytes(&flipped, 1000, 1e-6).is_err());
        assert!(ReplayFilter::from_bytes(&bytes, 2000, 1e-6).is_err());
    }

    #[test]
    fn invalid_parameters_name_the_field() {
        let e = ReplayFilter::new([0; 32], 0, 1e-6).unwrap_err();
        assert!(e.to_string().contains("replay.capacity"));
        for bad in [0.0, 1e-300, 0.5, f64::NAN] {
            let e = ReplayFilter::new([0; 32], 10, bad).unwrap_err();
            assert!(e.to_string().contains("false_positive_rate"));
        }
    }
}
