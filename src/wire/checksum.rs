//! Internet checksum (RFC 1071) and its incremental update (RFC 1624).
//!
//! Sums are kept "unfolded" (`u32`) so that several pieces (pseudo-header, header, payload) can be
//! added before one [`fold`]. Any `u32` returned here is congruent modulo `0xffff` to the true
//! ones'-complement sum, which is all that folding needs; adding a handful of them never overflows.
//!
//! Representation: [`checksum`] returns `!fold(sum)`; for data that is not all zero the folded sum
//! is in `1..=0xffff`, so the stored checksum is in `0x0000..=0xfffe`. The `update_*` functions
//! implement RFC 1624 eqn. 3, `HC' = ~(~HC + ~m + m')`, which keeps that representation (eqn. 2,
//! `HC' = HC + m - m'`, would turn a `0x0000` into `0xffff` and disagree with recomputation).

use std::net::Ipv4Addr;

/// Ones'-complement sum of `data` as big-endian 16-bit words, an odd last byte padded with zero.
///
/// Returned already folded to 16 bits (a valid unfolded sum too).
#[inline]
pub fn sum(data: &[u8]) -> u32 {
    // Two tricks from RFC 1071 section 2: the sum is byte-order independent (sum native-endian
    // words, swap once at the end), and 32-bit words into a 64-bit accumulator give the same
    // result as 16-bit words (2^32 = 1 mod 0xffff) with no carries to propagate, so the loop
    // is plain independent additions that LLVM vectorises with baseline SSE2.
    // Overflow would need more than 2^32 words.
    let mut acc: u64 = 0;
    let mut words = data.chunks_exact(4);
    for word in &mut words {
        acc += u64::from(u32::from_ne_bytes([word[0], word[1], word[2], word[3]]));
    }
    acc += match *words.remainder() {
        [a, b, c] => u64::from(u32::from_ne_bytes([a, b, c, 0])),
        [a, b] => u64::from(u32::from_ne_bytes([a, b, 0, 0])),
        [a] => u64::from(u32::from_ne_bytes([a, 0, 0, 0])),
        _ => 0,
    };
    let s = (acc & 0xffff_ffff) + (acc >> 32); // < 2^33
    let s = (s & 0xffff) + ((s >> 16) & 0xffff) + (s >> 32); // < 3 * 2^16
    let s = (s & 0xffff) + (s >> 16);
    let s = (s & 0xffff) + (s >> 16);
    // Native-endian words summed to the byte-swapped big-endian sum on little-endian hosts.
    u32::from(u16::from_be(s as u16))
}

/// Folds the carries of an unfolded sum into 16 bits (not complemented).
#[inline(always)]
pub fn fold(sum: u32) -> u16 {
    let s = (sum & 0xffff) + (sum >> 16);
    let s = (s & 0xffff) + (s >> 16);
    s as u16
}

/// The value to store in a checksum field whose bytes are zero in `data`.
#[inline]
pub fn checksum(data: &[u8]) -> u16 {
    !fold(sum(data))
}

/// Unfolded sum of the IPv4 pseudo-header that TCP and UDP checksums cover.
#[inline(always)]
pub fn pseudo_header_v4(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, l4_len: u16) -> u32 {
    let src = u32::from(src);
    let dst = u32::from(dst);
    (src >> 16)
        + (src & 0xffff)
        + (dst >> 16)
        + (dst & 0xffff)
        + u32::from(proto)
        + u32::from(l4_len)
}

/// The unfolded contribution `~m + m'` of one 16-bit word changing from `old` to `new`.
///
/// Several deltas can be added and applied once with [`apply_delta`].
#[inline(always)]
pub fn delta_u16(old: u16, new: u16) -> u32 {
    u32::from(!old) + u32::from(new)
}

/// The unfolded contribution of one 32-bit field (two words) changing from `old` to `new`.
#[inline(always)]
pub fn delta_u32(old: u32, new: u32) -> u32 {
    delta_u16((old >> 16) as u16, (new >> 16) as u16) + delta_u16(old as u16, new as u16)
}

/// Applies an accumulated delta to a stored checksum: `~(~HC + delta)` (RFC 1624 eqn. 3).
#[inline(always)]
pub fn apply_delta(csum: u16, delta: u32) -> u16 {
    !fold(u32::from(!csum) + delta)
}

/// New checksum after one 16-bit word of the covered data changed from `old` to `new`.
#[inline(always)]
pub fn update_u16(csum: u16, old: u16, new: u16) -> u16 {
    apply_delta(csum, delta_u16(old, new))
}

/// New checksum after a 32-bit field (two aligned words) changed from `old` to `new`.
#[inline(always)]
pub fn update_u32(csum: u16, old: u32, new: u32) -> u16 {
    apply_delta(csum, delta_u32(old, new))
}

/// New checksum after an IPv4 address in the covered data (or the pseudo-header) changed.
#[inline(always)]
pub fn update_addr(csum: u16, old: Ipv4Addr, new: Ipv4Addr) -> u16 {
    update_u32(csum, u32::from(old), u32::from(new))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The slow, obviously right definition: 16-bit words, fold at the end.
    fn reference_sum(data: &[u8]) -> u16 {
        let mut acc: u64 = 0;
        for pair in data.chunks(2) {
            let hi = u64::from(pair[0]) << 8;
            let lo = pair.get(1).copied().map_or(0, u64::from);
            acc += hi | lo;
        }
        while acc > 0xffff {
            acc = (acc & 0xffff) + (acc >> 16);
        }
        acc as u16
    }

    #[test]
    fn rfc1071_example() {
        // RFC 1071 section 3: the words 0001 f203 f4f5 f6f7 sum to ddf2.
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(fold(sum(&data)), 0xddf2);
        assert_eq!(checksum(&data), !0xddf2);
    }

    #[test]
    fn sum_matches_reference_for_every_length_and_alignment() {
        let data: Vec<u8> = (0..300u32)
            .map(|i| (i.wrapping_mul(151) ^ (i >> 3)) as u8)
            .collect();
        for start in 0..9 {
            for end in start..data.len() {
                let slice = &data[start..end];
                assert_eq!(fold(sum(slice)), reference_sum(slice), "{start}..{end}");
            }
        }
    }

    #[test]
    fn sum_of_long_all_ones_input_does_not_overflow() {
        let data = vec![0xffu8; 70_000];
        assert_eq!(fold(sum(&data)), 0xffff);
        assert_eq!(fold(sum(&[])), 0);
        assert_eq!(fold(sum(&[0xab])), 0xab00);
    }

    #[test]
    fn known_ipv4_header_checksum() {
        // Classic example header (Wikipedia "IPv4 header checksum"): checksum b861.
        let mut header = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        assert_eq!(checksum(&header), 0xb861);
        header[10..12].copy_from_slice(&0xb861u16.to_be_bytes());
        assert_eq!(fold(sum(&header)), 0xffff);
    }

    #[test]
    fn update_matches_recompute_including_zero_result() {
        // Pick data whose checksum after the change is exactly 0x0000 to pin the representation.
        let mut data = [0x12u8, 0x34, 0x00, 0x00, 0xab, 0xcd];
        let before = checksum(&data);
        // Choose the new first word so that the folded sum becomes 0xffff.
        let rest = u32::from(fold(sum(&data[2..])));
        let target_word = (0xffff - rest) as u16;
        let old_word = u16::from_be_bytes([data[0], data[1]]);
        data[..2].copy_from_slice(&target_word.to_be_bytes());
        assert_eq!(checksum(&data), 0x0000);
        assert_eq!(update_u16(before, old_word, target_word), 0x0000);
    }

    #[test]
    fn rfc1624_minus_zero_case() {
        // RFC 1624 section 3: header sums to 0xcd7a except one word 0x5555 -> 0x3285.
        // Eqn. 3 must give 0x0000 (as full recomputation does), not eqn. 2's 0xffff.
        assert_eq!(update_u16(0xdd2f, 0x5555, 0x3285), 0x0000);
    }

    #[test]
    fn update_u32_and_addr_agree_with_two_u16_updates() {
        let old = Ipv4Addr::new(10, 1, 2, 3);
        let new = Ipv4Addr::new(192, 168, 200, 7);
        let csum = 0x1c46;
        let (o, n) = (u32::from(old), u32::from(new));
        let twice = update_u16(
            update_u16(csum, (o >> 16) as u16, (n >> 16) as u16),
            o as u16,
            n as u16,
        );
        assert_eq!(update_u32(csum, o, n), twice);
        assert_eq!(update_addr(csum, old, new), twice);
    }

    #[test]
    fn pseudo_header_sum() {
        let src = Ipv4Addr::new(192, 168, 0, 1);
        let dst = Ipv4Addr::new(192, 168, 0, 199);
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&src.octets());
        bytes.extend_from_slice(&dst.octets());
        bytes.extend_from_slice(&[0, 17, 0x00, 0x5f]);
        assert_eq!(
            fold(pseudo_header_v4(src, dst, 17, 0x5f)),
            fold(sum(&bytes))
        );
    }
}
