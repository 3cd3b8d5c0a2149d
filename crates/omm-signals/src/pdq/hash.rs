//! The 256-bit PDQ hash value: layout, hex, Hamming distance, word conversion.

use std::fmt;
use std::str::FromStr;

use crate::SignalError;

/// A 256-bit PDQ hash.
///
/// The 32 bytes are in **hex order**: byte 0 is the first two hex characters of the canonical
/// 64-character lower-case hex form. Equivalently the hash is a 256-bit big-endian integer whose bit
/// `k` (LSB = bit 0) is DCT coefficient `k = i*16 + j` (row `i` = vertical frequency `i+1`,
/// column `j` = horizontal frequency `j+1`); coefficient `k` lives in byte `31 - k/8`, bit `k % 8`.
/// This is exactly the reference C++ `Hash256::format()` output.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct PdqHash(pub [u8; 32]);

impl PdqHash {
    /// Number of bits in a PDQ hash.
    pub const BITS: u32 = 256;
    /// Length of the hex form.
    pub const HEX_LEN: usize = 64;

    /// Parses 64 hex characters (either case). No surrounding whitespace is accepted.
    pub fn from_hex(s: &str) -> Result<Self, SignalError> {
        let b = s.as_bytes();
        if b.len() != Self::HEX_LEN {
            return Err(SignalError::BadLength {
                expected: Self::HEX_LEN,
                actual: s.chars().count(),
            });
        }
        let mut out = [0u8; 32];
        for (i, pair) in b.chunks_exact(2).enumerate() {
            let hi = hex_val(pair[0]).ok_or(SignalError::NotHex)?;
            let lo = hex_val(pair[1]).ok_or(SignalError::NotHex)?;
            out[i] = (hi << 4) | lo;
        }
        Ok(PdqHash(out))
    }

    /// The canonical 64-character lower-case hex form.
    pub fn to_hex(&self) -> String {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut s = String::with_capacity(64);
        for &byte in &self.0 {
            s.push(DIGITS[(byte >> 4) as usize] as char);
            s.push(DIGITS[(byte & 15) as usize] as char);
        }
        s
    }

    /// Hamming distance (number of differing bits), 0..=256.
    pub fn distance(&self, other: &PdqHash) -> u32 {
        let a = self.to_words();
        let b = other.to_words();
        (0..4).map(|i| (a[i] ^ b[i]).count_ones()).sum()
    }

    /// The hash as four 64-bit words: word `i` is bytes `8i..8i+8` read **big-endian**, so
    /// word 0 holds the first 16 hex characters. This is the layout the index stores.
    pub fn to_words(&self) -> [u64; 4] {
        let mut w = [0u64; 4];
        for (i, word) in w.iter_mut().enumerate() {
            let mut bytes = [0u8; 8];
            bytes.copy_from_slice(&self.0[8 * i..8 * i + 8]);
            *word = u64::from_be_bytes(bytes);
        }
        w
    }

    /// Inverse of [`PdqHash::to_words`].
    pub fn from_words(words: [u64; 4]) -> Self {
        let mut out = [0u8; 32];
        for (i, word) in words.iter().enumerate() {
            out[8 * i..8 * i + 8].copy_from_slice(&word.to_be_bytes());
        }
        PdqHash(out)
    }

    /// Whether DCT coefficient `k` (0..256, `k = i*16 + j`) is above the median.
    pub fn bit(&self, k: usize) -> bool {
        assert!(k < 256, "PDQ bit index out of range");
        (self.0[31 - k / 8] >> (k % 8)) & 1 == 1
    }

    /// Sets coefficient bit `k` (0..256).
    pub fn set_bit(&mut self, k: usize) {
        assert!(k < 256, "PDQ bit index out of range");
        self.0[31 - k / 8] |= 1 << (k % 8);
    }

    /// Number of set bits.
    pub fn count_ones(&self) -> u32 {
        self.to_words().iter().map(|w| w.count_ones()).sum()
    }
}

fn hex_val(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

impl fmt::Display for PdqHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for PdqHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PdqHash({})", self.to_hex())
    }
}

impl FromStr for PdqHash {
    type Err = SignalError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        PdqHash::from_hex(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bit_layout_matches_reference_hex() {
        // Coefficient 0 is the lowest bit of the last hex character.
        let mut h = PdqHash::default();
        h.set_bit(0);
        assert!(h.to_hex().ends_with("01"));
        let mut h = PdqHash::default();
        h.set_bit(255);
        assert!(h.to_hex().starts_with('8'));
        assert_eq!(h.to_words()[0], 1 << 63);
    }

    #[test]
    fn util_vectors() {
        let z = PdqHash::from_hex(&"0".repeat(64)).unwrap();
        let a = PdqHash::from_hex(&"0f".repeat(32)).unwrap();
        let b = PdqHash::from_hex(&"f0".repeat(32)).unwrap();
        let f = PdqHash::from_hex(&"F".repeat(64)).unwrap();
        assert_eq!(a.distance(&b), 256);
        assert_eq!(a.distance(&f), 128);
        assert_eq!(z.distance(&a), 128);
        assert_eq!(f.to_hex(), "f".repeat(64));
    }

    #[test]
    fn rejects_bad_input() {
        assert!(PdqHash::from_hex("abc").is_err());
        assert!(PdqHash::from_hex(&"g".repeat(64)).is_err());
        assert!(PdqHash::from_hex(&"é".repeat(32)).is_err());
    }
}
