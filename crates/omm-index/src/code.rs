//! 256-bit PDQ codes: parsing, formatting and Hamming distance.

use crate::IndexError;

/// A 256-bit code (a PDQ hash).
///
/// Word `i` is the big-endian interpretation of bytes `8i..8i+8` of the 32-byte hash, where the
/// bytes are in the order of the 64-character hex string. So `code[0]` holds the first 16 hex
/// characters. Hamming distance does not depend on this choice; snapshots and hex use it.
pub type Code256 = [u64; 4];

/// Number of bytes of a [`Code256`] in its canonical byte form.
pub const CODE_BYTES: usize = 32;

/// Parses a 64-character hex string (either case) into a code.
pub fn code_from_hex(hex: &str) -> Result<Code256, IndexError> {
    let raw = hex.as_bytes();
    if raw.len() != 2 * CODE_BYTES {
        return Err(IndexError::InvalidKey(format!(
            "a PDQ hash has 64 hex characters, got {}",
            raw.len()
        )));
    }
    let mut code = [0u64; 4];
    for (i, ch) in raw.iter().enumerate() {
        let nibble = match ch {
            b'0'..=b'9' => ch - b'0',
            b'a'..=b'f' => ch - b'a' + 10,
            b'A'..=b'F' => ch - b'A' + 10,
            _ => {
                return Err(IndexError::InvalidKey(format!(
                    "invalid hex character {:?} at position {i}",
                    *ch as char
                )))
            }
        };
        code[i / 16] |= u64::from(nibble) << (60 - 4 * (i % 16));
    }
    Ok(code)
}

/// Formats a code as 64 lower-case hex characters.
pub fn code_to_hex(code: &Code256) -> String {
    code.iter().map(|w| format!("{w:016x}")).collect()
}

/// Builds a code from its 32 canonical bytes (the hex string's bytes, in order).
pub fn code_from_bytes(bytes: &[u8]) -> Result<Code256, IndexError> {
    if bytes.len() != CODE_BYTES {
        return Err(IndexError::InvalidKey(format!(
            "a PDQ hash has {CODE_BYTES} bytes, got {}",
            bytes.len()
        )));
    }
    let mut code = [0u64; 4];
    for (i, word) in code.iter_mut().enumerate() {
        let mut b = [0u8; 8];
        b.copy_from_slice(&bytes[8 * i..8 * i + 8]);
        *word = u64::from_be_bytes(b);
    }
    Ok(code)
}

/// The 32 canonical bytes of a code (inverse of [`code_from_bytes`]).
pub fn code_to_bytes(code: &Code256) -> [u8; CODE_BYTES] {
    let mut out = [0u8; CODE_BYTES];
    for (i, word) in code.iter().enumerate() {
        out[8 * i..8 * i + 8].copy_from_slice(&word.to_be_bytes());
    }
    out
}

/// Hamming distance between two codes.
#[inline(always)]
pub fn hamming(a: &Code256, b: &Code256) -> u32 {
    (a[0] ^ b[0]).count_ones()
        + (a[1] ^ b[1]).count_ones()
        + (a[2] ^ b[2]).count_ones()
        + (a[3] ^ b[3]).count_ones()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip_and_byte_order() {
        let hex = "98736629670cc19fc9f23862f66cce1f599e32c78e236c78619d202e9e66c157";
        let code = code_from_hex(hex).unwrap();
        assert_eq!(code[0], 0x98736629670cc19f);
        assert_eq!(code[3], 0x619d202e9e66c157);
        assert_eq!(code_to_hex(&code), hex);
        assert_eq!(code_from_hex(&hex.to_uppercase()).unwrap(), code);
        let bytes = code_to_bytes(&code);
        assert_eq!(bytes[0], 0x98);
        assert_eq!(code_from_bytes(&bytes).unwrap(), code);
    }

    #[test]
    fn bad_hex_is_an_error() {
        assert!(code_from_hex("abc").is_err());
        let mut s = "0".repeat(63);
        s.push('g');
        assert!(code_from_hex(&s).is_err());
        assert!(code_from_bytes(&[0u8; 31]).is_err());
    }

    #[test]
    fn hamming_counts_bits() {
        let a = [0u64; 4];
        let b = [1u64, 3, u64::MAX, 0];
        assert_eq!(hamming(&a, &b), 1 + 2 + 64);
        assert_eq!(hamming(&b, &b), 0);
    }
}
