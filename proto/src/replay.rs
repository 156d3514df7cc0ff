//! Replay filter keyed by the Sphinx replay tag.
//!
//! Two rotating Bloom filter generations, each sized for `capacity` tags at false-positive
//! rate `fp_rate`. When the current generation has taken `capacity` tags, the older one is
//! cleared and becomes current. A replay is therefore caught for at least the last
//! `capacity` packets (and at most `2 * capacity`); older tags are forgotten, which is why
//! Sphinx keys must rotate (each key's filter covers its whole epoch when sized for it).
//! Memory is fixed at construction: `2 * capacity * ln(1/p) / ln(2)^2` bits; for one
//! million tags at p = 1e-6 that is 2 x 3.6 MB.
//!
//! Tags are hashed with a per-filter secret key (BLAKE3 keyed mode), so a sender who knows
//! its own packets' tags cannot aim them at chosen bits.

use crate::Error;

/// A bounded-memory set of replay tags.
pub struct ReplayFilter {
    key: [u8; 32],
    generations: [Vec<u64>; 2],
    current: usize,
    in_current: u64,
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

/// Bits and hash count of one Bloom generation for `capacity` items at rate `fp_rate`.
pub fn bloom_sizing(capacity: u64, fp_rate: f64) -> (u64, u32) {
    let ln2 = std::f64::consts::LN_2;
    let bits = (capacity as f64 * (1.0 / fp_rate).ln() / (ln2 * ln2)).ceil() as u64;
    let bits = bits.max(64).div_ceil(64) * 64;
    let hashes = ((bits as f64 / capacity as f64) * ln2)
        .round()
        .clamp(1.0, 64.0) as u32;
    (bits, hashes)
}

impl ReplayFilter {
    /// A filter with a secret hashing `key` (draw it from a CSPRNG), holding `capacity` tags
    /// per generation at false-positive rate `fp_rate`.
    pub fn new(key: [u8; 32], capacity: u64, fp_rate: f64) -> Result<Self, Error> {
        if capacity == 0 || capacity > 1 << 32 {
            return Err(Error::Invalid {
                field: "replay.capacity",
                reason: "must be between 1 and 2^32".into(),
            });
        }
        if !(fp_rate > 0.0 && fp_rate < 0.5) {
            return Err(Error::Invalid {
                field: "replay.false_positive_rate",
                reason: "must be in (0, 0.5)".into(),
            });
        }
        let (bits, hashes) = bloom_sizing(capacity, fp_rate);
        let words = usize::try_from(bits / 64).map_err(|_| Error::Invalid {
            field: "replay.capacity",
            reason: "too large for this machine".into(),
        })?;
        Ok(ReplayFilter {
            key,
            generations: [vec![0; words], vec![0; words]],
            current: 0,
            in_current: 0,
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

    /// Record `tag`; returns `true` if it was (probably) seen before.
    pub fn check_and_insert(&mut self, tag: &[u8; 32]) -> bool {
        let h = blake3::keyed_hash(&self.key, tag);
        let b = h.as_bytes();
        let mut h1 = u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]);
        let h2 = u64::from_le_bytes([b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]]) | 1;
        let (cur, old) = (self.current, 1 - self.current);
        let mut positions = [(0usize, 0u64); 64];
        let positions = &mut positions[..self.hashes as usize];
        let mut in_cur = true;
        let mut in_old = true;
        for p in positions.iter_mut() {
            let bit = h1 % self.bits;
            *p = ((bit / 64) as usize, 1u64 << (bit % 64));
            in_cur &= self.generations[cur][p.0] & p.1 != 0;
            in_old &= self.generations[old][p.0] & p.1 != 0;
            h1 = h1.wrapping_add(h2);
        }
        if in_cur || in_old {
            return true;
        }
        for &(w, m) in positions.iter() {
            self.generations[cur][w] |= m;
        }
        self.in_current += 1;
        if self.in_current >= self.capacity {
            self.current = old;
            self.generations[old].fill(0);
            self.in_current = 0;
        }
        false
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
        // 1e6 * ln(1e6) / ln(2)^2 = 28.76 Mbit, k = 20
        assert!((28_750_000..28_800_000).contains(&bits), "{bits}");
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
    fn invalid_parameters_name_the_field() {
        let e = ReplayFilter::new([0; 32], 0, 1e-6).unwrap_err();
        assert!(e.to_string().contains("replay.capacity"));
        let e = ReplayFilter::new([0; 32], 10, 0.0).unwrap_err();
        assert!(e.to_string().contains("false_positive_rate"));
    }
}
