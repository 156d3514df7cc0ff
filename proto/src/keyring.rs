//! Which epochs' Sphinx keys a relay holds at a given time, and when that changes (sans-IO
//! policy, shared by the relay and its tests).
//!
//! A relay holds the key of the current epoch and of the next (published ahead, so senders
//! can build packets for it), and keeps the previous epoch's key for an overlap of a
//! quarter epoch after the boundary, so packets built just before it still peel. Every other
//! key is deleted (forward secrecy).

/// The overlap after an epoch boundary during which the previous key is kept: a quarter
/// epoch, at least one second.
pub fn overlap_secs(epoch_secs: u64) -> u64 {
    (epoch_secs / 4).max(1)
}

/// The epochs whose keys a relay holds at `now_unix`, newest first: the next, the current,
/// and the previous one during the overlap.
pub fn wanted_epochs(now_unix: u64, epoch_secs: u64) -> Vec<u64> {
    let len = epoch_secs.max(1);
    let epoch = now_unix / len;
    let keep_previous = epoch > 0 && now_unix < epoch * len + overlap_secs(len);
    [epoch + 1, epoch]
        .into_iter()
        .chain(keep_previous.then(|| epoch - 1))
        .collect()
}

/// The next time (Unix seconds, after `now_unix`) at which [`wanted_epochs`] changes: the
/// end of the overlap, or the next epoch boundary.
pub fn next_change(now_unix: u64, epoch_secs: u64) -> u64 {
    let len = epoch_secs.max(1);
    let start = now_unix / len * len;
    let overlap_end = start + overlap_secs(len);
    if now_unix < overlap_end {
        overlap_end
    } else {
        start + len
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_follow_the_epochs_with_a_quarter_epoch_overlap() {
        // 100 s epochs: the overlap is 25 s.
        assert_eq!(wanted_epochs(1000, 100), vec![11, 10, 9]);
        assert_eq!(wanted_epochs(1024, 100), vec![11, 10, 9]);
        assert_eq!(wanted_epochs(1025, 100), vec![11, 10]);
        assert_eq!(wanted_epochs(1099, 100), vec![11, 10]);
        assert_eq!(wanted_epochs(1100, 100), vec![12, 11, 10]);
        // Epoch 0 has no previous one; tiny epochs still overlap one second.
        assert_eq!(wanted_epochs(5, 100), vec![1, 0]);
        assert_eq!(overlap_secs(2), 1);
        // The set changes exactly at the times next_change names, and not between them.
        let mut t = 990;
        while t < 1400 {
            let n = next_change(t, 100);
            assert!(n > t);
            assert_eq!(wanted_epochs(n - 1, 100), wanted_epochs(t, 100));
            assert_ne!(wanted_epochs(n, 100), wanted_epochs(t, 100));
            t = n;
        }
    }
}
