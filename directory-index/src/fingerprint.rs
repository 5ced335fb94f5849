//! A 64-bit FNV-1a hash. Unlike `std`'s `DefaultHasher`, its output is fixed across Rust releases,
//! so fingerprints stored on disk or handed to clients in cursors stay comparable after an upgrade.

const OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
const PRIME: u64 = 0x0000_0100_0000_01b3;

#[derive(Clone, Copy, Debug)]
pub(crate) struct Fingerprint(u64);

impl Fingerprint {
    pub(crate) fn new() -> Self {
        Self(OFFSET_BASIS)
    }

    pub(crate) fn bytes(mut self, bytes: &[u8]) -> Self {
        for byte in bytes {
            self.0 ^= u64::from(*byte);
            self.0 = self.0.wrapping_mul(PRIME);
        }
        self
    }

    /// Adds a string followed by a separator byte that UTF-8 never contains, so that ("ab", "c")
    /// and ("a", "bc") hash differently.
    pub(crate) fn str(self, value: &str) -> Self {
        self.bytes(value.as_bytes()).bytes(&[0xff])
    }

    pub(crate) fn finish(self) -> u64 {
        self.0
    }
}
