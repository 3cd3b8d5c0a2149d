//! The per-lookup coin flip that implements bank `enabled_ratio`s.
//!
//! Upstream draws `random.Random(seed).random()` when a `seed` is given, so a seeded lookup is
//! deterministic *and* gives the same draw as Open Media Match for the same seed string. Python
//! seeds its Mersenne Twister from a string by appending the string's SHA-512 digest, reading
//! the whole as one big-endian integer and feeding its 32-bit words (least significant first)
//! to `init_by_array`; we reproduce that exactly.

use sha2::{Digest, Sha512};

const N: usize = 624;
const M: usize = 397;
const MATRIX_A: u32 = 0x9908_b0df;
const UPPER_MASK: u32 = 0x8000_0000;
const LOWER_MASK: u32 = 0x7fff_ffff;

/// MT19937, as in CPython's `_random` module.
struct Mt19937 {
    state: Box<[u32; N]>,
    index: usize,
}

impl Mt19937 {
    fn init_genrand(seed: u32) -> Self {
        let mut state = Box::new([0u32; N]);
        state[0] = seed;
        for i in 1..N {
            let prev = state[i - 1];
            state[i] = 1_812_433_253u32
                .wrapping_mul(prev ^ (prev >> 30))
                .wrapping_add(i as u32);
        }
        Mt19937 { state, index: N }
    }

    fn init_by_array(key: &[u32]) -> Self {
        let mut mt = Self::init_genrand(19_650_218);
        let s = &mut mt.state;
        let mut i = 1usize;
        let mut j = 0usize;
        let key_len = key.len().max(1);
        for _ in 0..N.max(key_len) {
            let prev = s[i - 1];
            let k = key.get(j).copied().unwrap_or(0);
            s[i] = (s[i] ^ (prev ^ (prev >> 30)).wrapping_mul(1_664_525))
                .wrapping_add(k)
                .wrapping_add(j as u32);
            i += 1;
            j += 1;
            if i >= N {
                s[0] = s[N - 1];
                i = 1;
            }
            if j >= key_len {
                j = 0;
            }
        }
        for _ in 0..N - 1 {
            let prev = s[i - 1];
            s[i] =
                (s[i] ^ (prev ^ (prev >> 30)).wrapping_mul(1_566_083_941)).wrapping_sub(i as u32);
            i += 1;
            if i >= N {
                s[0] = s[N - 1];
                i = 1;
            }
        }
        s[0] = 0x8000_0000;
        mt
    }

    fn next_u32(&mut self) -> u32 {
        if self.index >= N {
            let s = &mut self.state;
            for k in 0..N {
                let y = (s[k] & UPPER_MASK) | (s[(k + 1) % N] & LOWER_MASK);
                let mut v = s[(k + M) % N] ^ (y >> 1);
                if y & 1 != 0 {
                    v ^= MATRIX_A;
                }
                s[k] = v;
            }
            self.index = 0;
        }
        let mut y = self.state[self.index];
        self.index += 1;
        y ^= y >> 11;
        y ^= (y << 7) & 0x9d2c_5680;
        y ^= (y << 15) & 0xefc6_0000;
        y ^= y >> 18;
        y
    }

    /// A double in [0, 1) with 53 random bits, as Python's `random()`.
    fn next_f64(&mut self) -> f64 {
        let a = (self.next_u32() >> 5) as f64;
        let b = (self.next_u32() >> 6) as f64;
        (a * 67_108_864.0 + b) * (1.0 / 9_007_199_254_740_992.0)
    }
}

/// The first value of Python's `random.Random(seed).random()` for a string seed.
pub fn python_seeded_random(seed: &str) -> f64 {
    let mut bytes = seed.as_bytes().to_vec();
    bytes.extend_from_slice(&Sha512::digest(seed.as_bytes()));
    // Big-endian integer -> 32-bit words, least significant first.
    bytes.reverse();
    while bytes.len() % 4 != 0 {
        bytes.push(0);
    }
    let mut key: Vec<u32> = bytes
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    while key.len() > 1 && key.last() == Some(&0) {
        key.pop();
    }
    Mt19937::init_by_array(&key).next_f64()
}

/// How the coin of one lookup is drawn.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Coin {
    /// Every bank and signal type with a ratio above 0 is kept.
    Bypassed,
    /// A drawn value in [0, 1): keep a bank iff `ratio >= value` (and `ratio > 0`).
    Drawn(f64),
}

impl Coin {
    /// Draws the coin for one lookup: deterministic (and Python-compatible) with a seed,
    /// random otherwise, and no draw at all when bypassed.
    pub fn draw(seed: Option<&str>, bypass: bool) -> Coin {
        if bypass {
            return Coin::Bypassed;
        }
        match seed {
            Some(seed) => Coin::Drawn(python_seeded_random(seed)),
            None => Coin::Drawn(rand::random::<f64>()),
        }
    }

    /// Whether a bank with this enabled ratio is kept for this lookup.
    ///
    /// As upstream (spec §6.2): a bypassed coin keeps every bank with a ratio of 0 or more (the
    /// point of the bypass is to find content in banks switched off for matching); a drawn coin
    /// keeps ratios of at least the draw, and never a ratio of 0. A negative or NaN ratio is
    /// never kept. Signal types are stricter: [`crate::Matcher::lookup`] refuses a type whose
    /// ratio is 0 before any coin is drawn.
    pub fn keeps(self, ratio: f64) -> bool {
        if ratio.is_nan() || ratio < 0.0 {
            return false;
        }
        match self {
            Coin::Bypassed => true,
            Coin::Drawn(c) => ratio > 0.0 && ratio >= c,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_python_random_for_string_seeds() {
        // Values printed by CPython 3: `random.Random(seed).random()`.
        assert_eq!(python_seeded_random("abc"), 0.7720246314157545);
        assert_eq!(python_seeded_random(""), 0.9602256525641875);
        assert_eq!(python_seeded_random("42"), 0.473659421919327);
        assert_eq!(python_seeded_random(&"a".repeat(100)), 0.8726388059900344);
        assert_eq!(python_seeded_random("\u{e9}"), 0.9689252893653495);
        assert_eq!(python_seeded_random("\0"), 0.761237843064138);
        assert_eq!(python_seeded_random("seed-7"), 0.6868032471748325);
    }

    #[test]
    fn ratio_semantics() {
        for c in [
            Coin::Bypassed,
            Coin::Drawn(0.0),
            Coin::Drawn(0.5),
            Coin::Drawn(0.999),
        ] {
            assert!(c.keeps(1.0));
            assert!(c.keeps(1.5));
            assert_eq!(c.keeps(0.0), c == Coin::Bypassed, "{c:?}");
            assert!(!c.keeps(-1.0));
            assert!(!c.keeps(f64::NAN));
        }
        assert!(Coin::Drawn(0.5).keeps(0.5));
        assert!(!Coin::Drawn(0.51).keeps(0.5));
        assert!(Coin::Bypassed.keeps(0.01));
    }

    #[test]
    fn draws_are_in_unit_interval_and_seeded_draws_repeat() {
        for i in 0..200 {
            let seed = format!("seed-{i}");
            let Coin::Drawn(a) = Coin::draw(Some(&seed), false) else {
                panic!("drawn")
            };
            let Coin::Drawn(b) = Coin::draw(Some(&seed), false) else {
                panic!("drawn")
            };
            assert_eq!(a, b);
            assert!((0.0..1.0).contains(&a));
        }
        assert_eq!(Coin::draw(Some("x"), true), Coin::Bypassed);
    }
}
