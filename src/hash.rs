//! Stable, versioned hashing for flows.
//!
//! Backend choice must be a pure function of the flow and the endpoint set so
//! that every sluice instance (and every restart) agrees (S4 in SCENARIOS.md).
//! That rules out `RandomState` and any hasher whose output may change between
//! crate versions: the functions here are fixed and their version is part of
//! the service definition ([`HashVersion`]). Changing an output of a `V1`
//! function is a breaking change for running clusters; add a `V2` instead.
//!
//! The mixer is a folded 64x64->128 multiply (as in foldhash/wyhash): two
//! multiplications per 13-byte IPv4 5-tuple, good avalanche in both the high
//! bits (hashbrown's tag) and the low bits (bucket index, Maglev slot).

/// Version of the flow hash used by a service's Maglev table.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize,
)]
pub enum HashVersion {
    /// Folded-multiply over the packed 5-tuple (this module's `V1` functions).
    #[default]
    V1,
}

const K0: u64 = 0x243f_6a88_85a3_08d3;
const K1: u64 = 0x1319_8a2e_0370_7344;
const K2: u64 = 0xa409_3822_299f_31d0;
const K3: u64 = 0x082e_fa98_ec4e_6c89;

#[inline(always)]
fn folded_multiply(a: u64, b: u64) -> u64 {
    let full = (a as u128).wrapping_mul(b as u128);
    (full as u64) ^ ((full >> 64) as u64)
}

/// Hash of two 64-bit words under `seed`, stable across builds and hosts.
#[inline(always)]
pub fn hash_words_v1(w0: u64, w1: u64, seed: u64) -> u64 {
    let h = folded_multiply(w0 ^ K0 ^ seed, w1 ^ K1);
    folded_multiply(h ^ K2, K3 ^ seed.rotate_left(29))
}

/// Hash of a byte string under `seed` (endpoint identities for Maglev
/// permutations, digests). Stable across builds and hosts.
pub fn hash_bytes_v1(bytes: &[u8], seed: u64) -> u64 {
    let mut h = seed ^ (bytes.len() as u64).wrapping_mul(K2);
    let mut chunks = bytes.chunks_exact(16);
    for c in &mut chunks {
        let a = u64::from_le_bytes(c[..8].try_into().expect("chunk of 16"));
        let b = u64::from_le_bytes(c[8..].try_into().expect("chunk of 16"));
        h = hash_words_v1(a ^ h, b, seed);
    }
    let rest = chunks.remainder();
    let mut tail = [0u8; 16];
    tail[..rest.len()].copy_from_slice(rest);
    let a = u64::from_le_bytes(tail[..8].try_into().expect("tail of 16"));
    let b = u64::from_le_bytes(tail[8..].try_into().expect("tail of 16"));
    hash_words_v1(a ^ h, b ^ rest.len() as u64, seed)
}

/// Maps a 64-bit hash onto `0..n` without a division (Lemire's reduction on
/// the high 32 bits, which the mixer randomises best).
#[inline(always)]
pub fn reduce(hash: u64, n: u32) -> u32 {
    (((hash >> 32) * n as u64) >> 32) as u32
}

/// The worker that owns a flow (see [`crate::rss`]: the queue a NIC's
/// Toeplitz hash of the client's address and port selects).
pub use crate::rss::owner_worker;

/// A fast hasher for the generation's lookup maps (VIPs, backends,
/// neighbors). Their keys come from the configuration, so flooding is not a
/// concern; lookups come from packets, so speed is. Keys write one or two
/// words (see `VipKey`'s `Hash`), each folded in with one multiplication.
#[derive(Clone, Copy, Debug, Default)]
pub struct FastBuildHasher;

/// The hasher behind [`FastBuildHasher`].
#[derive(Clone, Copy, Debug)]
pub struct FastHasher(u64);

impl std::hash::BuildHasher for FastBuildHasher {
    type Hasher = FastHasher;
    #[inline]
    fn build_hasher(&self) -> FastHasher {
        FastHasher(K0)
    }
}

impl std::hash::Hasher for FastHasher {
    #[inline]
    fn finish(&self) -> u64 {
        folded_multiply(self.0, K3)
    }
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        self.0 = hash_bytes_v1(bytes, self.0);
    }
    #[inline]
    fn write_u8(&mut self, i: u8) {
        self.write_u64(u64::from(i));
    }
    #[inline]
    fn write_u16(&mut self, i: u16) {
        self.write_u64(u64::from(i));
    }
    #[inline]
    fn write_u32(&mut self, i: u32) {
        self.write_u64(u64::from(i));
    }
    #[inline]
    fn write_u64(&mut self, i: u64) {
        self.0 = folded_multiply(self.0 ^ i, K1);
    }
    #[inline]
    fn write_usize(&mut self, i: usize) {
        self.write_u64(i as u64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1_outputs_are_frozen() {
        // These values are part of the wire contract between instances: a
        // failure here means backend choice changed for every running flow.
        assert_eq!(hash_words_v1(0, 0, 0), hash_words_v1(0, 0, 0));
        let a = hash_words_v1(0x0a00_0001_c612_0064, 0x1f90_0050_0600_0000, 7);
        let b = hash_bytes_v1(b"198.18.0.100:80", 7);
        assert_eq!((a, b), (FROZEN_A, FROZEN_B));
    }

    const FROZEN_A: u64 = 7_949_172_477_645_524_080;
    const FROZEN_B: u64 = 2_339_071_092_285_052_715;

    #[test]
    fn reduce_stays_in_range_and_spreads() {
        let mut counts = [0u32; 7];
        for i in 0..70_000u64 {
            let r = reduce(hash_words_v1(i, 0, 1), 7);
            counts[r as usize] += 1;
        }
        for c in counts {
            assert!((9_000..11_000).contains(&c), "{counts:?}");
        }
    }

    #[test]
    fn owner_is_stable_and_in_range() {
        for p in 0..1000u16 {
            let w = owner_worker(0x0a00_0001, p, 3);
            assert!(w < 3);
            assert_eq!(w, owner_worker(0x0a00_0001, p, 3));
        }
        assert_eq!(owner_worker(1, 2, 1), 0);
    }
}
