//! Exponential backoff with jitter. Pure: the caller brings the randomness, as a `u64`.
//!
//! The store draws a retry's jitter from the job id and attempt (`retry_jitter`), not from an
//! RNG, so that MemStore and the Redis scripts compute the same release time. That hash is
//! 32-bit on purpose: Redis's Lua has only doubles and 32-bit bit operations.

use super::time::Span;

/// The delay before retry number `attempt` (1 for the first retry): `base * 2^(attempt-1)`,
/// capped at `max`, then "equal jitter": half of it fixed, half drawn from `random`.
pub fn delay(base: Span, max: Span, attempt: u32, random: u64) -> Span {
    let doublings = attempt.saturating_sub(1).min(40);
    let full = base
        .as_micros()
        .saturating_mul(1u64 << doublings)
        .min(max.as_micros());
    let half = full / 2;
    Span::from_micros(half + random % (full - half + 1))
}

/// The jitter of the retry after attempt `attempt` of `job`: MurmurHash3's 32-bit finalizer
/// over the job id's low 32 bits mixed with the attempt. `redis/lua` computes the same value.
pub fn retry_jitter(job: u64, attempt: u32) -> u64 {
    let mut h = (job as u32) ^ attempt.wrapping_mul(0x9E37_79B9);
    h ^= h >> 16;
    h = h.wrapping_mul(0x85EB_CA6B);
    h ^= h >> 13;
    h = h.wrapping_mul(0xC2B2_AE35);
    h ^= h >> 16;
    h as u64
}

/// SplitMix64's finalizer: a well-mixed `u64` from any `u64` (agents' retry jitter).
pub fn mix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_until_the_cap_and_stays_within_jitter_bounds() {
        let base = Span::from_secs(1);
        let max = Span::from_secs(60);
        for attempt in 1..12u32 {
            let full = (1u64 << (attempt - 1)).min(60) * 1_000_000;
            for random in [0, 1, 12345, u64::MAX] {
                let d = delay(base, max, attempt, random).as_micros();
                assert!(
                    d >= full / 2 && d <= full,
                    "attempt {attempt}: {d} outside [{}, {full}]",
                    full / 2
                );
            }
        }
    }

    #[test]
    fn jitter_spreads_retries() {
        let base = Span::from_secs(8);
        let delays: std::collections::BTreeSet<u64> = (0..100u64)
            .map(|job| delay(base, base, 1, mix64(job)).as_micros())
            .collect();
        assert!(delays.len() > 90, "only {} distinct delays", delays.len());
    }

    #[test]
    fn retry_jitter_matches_the_reference_values() {
        // Pinned so that the Lua port can be checked against the same numbers.
        assert_eq!(retry_jitter(0, 0), 0);
        assert_eq!(retry_jitter(1, 1), 0x36DE_B503);
        assert_eq!(retry_jitter(12345, 3), 0x2A78_7E8A);
        assert_eq!(
            retry_jitter((1 << 40) + 7, 2),
            0x2C85_567E,
            "only the low 32 bits of the id"
        );
        let spread: std::collections::BTreeSet<u64> =
            (0..1000).map(|j| retry_jitter(j, 1) % 1000).collect();
        assert!(spread.len() > 550, "{}", spread.len());
    }

    #[test]
    fn huge_attempts_do_not_overflow() {
        assert_eq!(
            delay(Span::from_secs(1), Span::from_secs(10), u32::MAX, 0),
            Span::from_secs(5)
        );
    }
}
