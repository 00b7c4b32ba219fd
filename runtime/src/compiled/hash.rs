//! The content hash of compiled artefacts and compile-cache keys: 128-bit FNV-1a.
//!
//! It is not cryptographic (the cache is local and trusted); it detects corruption (any
//! single changed byte changes it, as each step is a bijection of the state) and makes
//! accidental key collisions practically impossible.

const OFFSET: u128 = 0x6c62272e07bb014262b821756295c58d;
const PRIME: u128 = 0x0000000001000000000000000000013b;

/// Incremental FNV-1a over byte strings.
#[derive(Clone, Copy, Debug)]
pub struct Hasher(u128);

impl Default for Hasher {
    fn default() -> Hasher {
        Hasher(OFFSET)
    }
}

impl Hasher {
    /// Feeds `bytes`.
    pub fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 ^= u128::from(b);
            self.0 = self.0.wrapping_mul(PRIME);
        }
    }

    /// Feeds a field and a separator, so that ("ab", "c") and ("a", "bc") differ.
    pub fn field(&mut self, text: &str) {
        self.write(&(text.len() as u64).to_le_bytes());
        self.write(text.as_bytes());
    }

    /// The hash as 32 lowercase hex digits.
    pub fn hex(&self) -> String {
        format!("{:032x}", self.0)
    }
}

/// The hash of `bytes` as 32 hex digits.
pub fn hex(bytes: &[u8]) -> String {
    let mut h = Hasher::default();
    h.write(bytes);
    h.hex()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_published_fnv1a_128_vectors() {
        // The empty string hashes to the offset basis; "a" is a published test vector.
        assert_eq!(hex(b""), "6c62272e07bb014262b821756295c58d");
        assert_eq!(hex(b"a"), "d228cb696f1a8caf78912b704e4a8964");
    }

    #[test]
    fn fields_are_delimited() {
        let mut a = Hasher::default();
        a.field("ab");
        a.field("c");
        let mut b = Hasher::default();
        b.field("a");
        b.field("bc");
        assert_ne!(a.hex(), b.hex());
    }
}
