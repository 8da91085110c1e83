//! The suite's one stable hash: FNV-1a (64 and 128 bits), the same value on every build,
//! Rust version and machine (unlike `std`'s `DefaultHasher`). What it names outlives a
//! process: nftables rule tags, host veth names and VTEP MACs (found again by the next
//! plugin version), and the node-local store's entry names for over-long keys (on disk).
//! Its values must therefore never change; the tests pin them.

/// The FNV-1a state of one width.
trait Fnv: Copy {
    const OFFSET_BASIS: Self;
    fn step(self, byte: u8) -> Self;
}

impl Fnv for u64 {
    const OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
    fn step(self, byte: u8) -> u64 {
        (self ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3)
    }
}

impl Fnv for u128 {
    const OFFSET_BASIS: u128 = 0x6c62_272e_07bb_0142_62b8_2175_6295_c58d;
    fn step(self, byte: u8) -> u128 {
        (self ^ u128::from(byte)).wrapping_mul(0x0000_0000_0100_0000_0000_0000_0000_013b)
    }
}

/// FNV-1a of `parts` with a `0xff` byte between two parts: a byte that never occurs in
/// UTF-8, so `("ab", "c")` and `("a", "bc")` differ. One part is plain FNV-1a of it.
fn fnv1a<H: Fnv>(parts: &[&str]) -> H {
    let mut h = H::OFFSET_BASIS;
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            h = h.step(0xff);
        }
        for b in part.bytes() {
            h = h.step(b);
        }
    }
    h
}

/// 64-bit FNV-1a of `parts` (see [`stable_hash_128`] for a wider one).
pub fn stable_hash(parts: &[&str]) -> u64 {
    fnv1a(parts)
}

/// 128-bit FNV-1a of `parts`, where 64 bits could collide (names of many entries).
pub fn stable_hash_128(parts: &[&str]) -> u128 {
    fnv1a(parts)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The published FNV-1a test vectors (single parts), and joined parts computed
    /// by hand from the definition (FNV-1a over `net 0xff cid 0xff eth0`).
    #[test]
    fn known_values() {
        assert_eq!(stable_hash(&[""]), 0xcbf2_9ce4_8422_2325);
        assert_eq!(stable_hash(&["a"]), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(stable_hash(&["foobar"]), 0x8594_4171_f739_67e8);
        assert_eq!(stable_hash(&["net", "cid", "eth0"]), 0x616e_9ad5_ebe5_7ab1);
        assert_eq!(
            stable_hash_128(&["a"]),
            0xd228_cb69_6f1a_8caf_7891_2b70_4e4a_8964
        );
        assert_eq!(
            stable_hash_128(&["foobar"]),
            0x343e_1662_793c_64bf_6f0d_3597_ba44_6f18
        );
    }

    #[test]
    fn parts_are_separated() {
        assert_ne!(stable_hash(&["ab", "c"]), stable_hash(&["a", "bc"]));
        assert_ne!(stable_hash_128(&["ab", "c"]), stable_hash_128(&["a", "bc"]));
    }
}
