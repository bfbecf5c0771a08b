//! Flow ownership as NICs compute it: the Toeplitz hash (Microsoft RSS) of
//! a flow's client-side address and port, through a redirection table.
//!
//! A flow belongs to one worker, and both its directions must reach that
//! worker: a client -> VIP packet carries the client in its *source*, the
//! backend's reply in its *destination*. So sluice has the NIC (or the
//! kernel's fanout) hash the source address and port on client-facing
//! ports and the destination address and port on backend-facing ports,
//! with one key and one redirection table, and computes the very same
//! function in software ([`owner_worker`]) to check a packet's owner, to
//! hand over a packet the NIC could not place, and to route restored and
//! queried flows. Under DNAT the 4-tuples of the two directions differ, so
//! a symmetric hash over the whole tuple cannot keep them together; the
//! client side is what both share.
//!
//! The hash is linear over GF(2), so it is computed from per-byte tables
//! (six lookups for an address and a port) built at compile time.

/// Which side of a packet holds the client (the flow's owner key), by the
/// role of the interface it arrives on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientSide {
    /// Client-facing interface: clients send to VIPs, the client is the
    /// packet's source.
    Source,
    /// Backend-facing interface: replies go back to clients, the client is
    /// the packet's destination.
    Destination,
}

/// The Toeplitz key sluice programs into NICs: the one from Microsoft's
/// RSS specification (and most drivers' default), so its test vectors hold.
pub const KEY: [u8; 40] = [
    0x6d, 0x5a, 0x56, 0xda, 0x25, 0x5b, 0x0e, 0xc2, 0x41, 0x67, 0x25, 0x3d, 0x43, 0xa3, 0x8f, 0xb0,
    0xd0, 0xca, 0x2b, 0xcb, 0xae, 0x7b, 0x30, 0xb4, 0x77, 0xcb, 0x2d, 0xa3, 0x80, 0x30, 0xf2, 0x0c,
    0x6a, 0x42, 0xb7, 0x3b, 0xbe, 0xac, 0x01, 0xfa,
];

/// Entries of the redirection table sluice programs: queue `i % workers`
/// at index `i`, the hash's low bits choosing the index.
pub const RETA_SIZE: u32 = 128;

/// The 32 key bits starting at bit `bit` of [`KEY`].
const fn key_window(bit: usize) -> u32 {
    let mut w = 0u32;
    let mut i = 0;
    while i < 32 {
        let b = bit + i;
        let set = (KEY[b / 8] >> (7 - (b % 8))) & 1;
        w = (w << 1) | set as u32;
        i += 1;
    }
    w
}

/// Per-byte tables for an input of `N` bytes: entry `[i][v]` is the hash
/// contribution of byte value `v` at position `i`.
const fn tables<const N: usize>() -> [[u32; 256]; N] {
    let mut t = [[0u32; 256]; N];
    let mut i = 0;
    while i < N {
        let mut v = 0;
        while v < 256 {
            let mut h = 0u32;
            let mut bit = 0;
            while bit < 8 {
                if (v >> (7 - bit)) & 1 == 1 {
                    h ^= key_window(i * 8 + bit);
                }
                bit += 1;
            }
            t[i][v] = h;
            v += 1;
        }
        i += 1;
    }
    t
}

/// Tables for an IPv4 address and a port (the client side).
static CLIENT: [[u32; 256]; 6] = tables::<6>();

/// The Toeplitz hash of `input` under [`KEY`], bit by bit (the reference
/// the tables are checked against, and what drivers document).
pub fn toeplitz(input: &[u8]) -> u32 {
    let mut h = 0u32;
    for (i, &byte) in input.iter().enumerate() {
        for bit in 0..8 {
            if (byte >> (7 - bit)) & 1 == 1 && i * 8 + bit + 32 <= KEY.len() * 8 {
                h ^= key_window(i * 8 + bit);
            }
        }
    }
    h
}

/// The Toeplitz hash of a client's address and port: the input a NIC
/// hashes with `L3_SRC_ONLY | L4_SRC_ONLY` on a client-facing port (the
/// packet's source) and `L3_DST_ONLY | L4_DST_ONLY` on a backend-facing
/// one (the reply's destination).
#[inline(always)]
pub fn client_hash(addr: u32, port: u16) -> u32 {
    let a = addr.to_be_bytes();
    let p = port.to_be_bytes();
    CLIENT[0][usize::from(a[0])]
        ^ CLIENT[1][usize::from(a[1])]
        ^ CLIENT[2][usize::from(a[2])]
        ^ CLIENT[3][usize::from(a[3])]
        ^ CLIENT[4][usize::from(p[0])]
        ^ CLIENT[5][usize::from(p[1])]
}

/// The queue a hash lands on through the redirection table sluice
/// programs ([`RETA_SIZE`] entries, entry `i` = queue `i % workers`).
#[inline(always)]
pub fn queue_of(hash: u32, workers: u32) -> u32 {
    (hash % RETA_SIZE) % workers.max(1)
}

/// The worker that owns a flow: the queue the NIC delivers its client's
/// packets to. Both directions of a flow agree, without shared state.
#[inline(always)]
pub fn owner_worker(client_addr: u32, client_port: u16, workers: u32) -> u32 {
    if workers <= 1 {
        return 0;
    }
    queue_of(client_hash(client_addr, client_port), workers)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Microsoft's RSS verification suite (IPv4): the 2-tuple (addresses)
    /// and 4-tuple (addresses, then ports) hashes.
    #[test]
    fn microsoft_test_vectors_hold() {
        type Case = ([u8; 4], u16, [u8; 4], u16, u32, u32);
        let cases: [Case; 3] = [
            (
                [66, 9, 149, 187],
                2794,
                [161, 142, 100, 80],
                1766,
                0x323e_8fc2,
                0x51cc_c178,
            ),
            (
                [199, 92, 111, 2],
                14230,
                [65, 69, 140, 83],
                4739,
                0xd718_262a,
                0xc626_b0ea,
            ),
            (
                [24, 19, 198, 95],
                12898,
                [12, 22, 207, 184],
                38024,
                0xd2d0_a5de,
                0x5c2b_394a,
            ),
        ];
        for (src, sport, dst, dport, ip, tcp) in cases {
            let mut two = src.to_vec();
            two.extend_from_slice(&dst);
            assert_eq!(toeplitz(&two), ip, "{src:?} {dst:?}");
            let mut four = two.clone();
            four.extend_from_slice(&sport.to_be_bytes());
            four.extend_from_slice(&dport.to_be_bytes());
            assert_eq!(toeplitz(&four), tcp, "{src:?}:{sport} {dst:?}:{dport}");
        }
    }

    #[test]
    fn tables_agree_with_the_bitwise_hash() {
        let mut x: u64 = 0x1234_5678_9abc_def0;
        for _ in 0..10_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let (addr, port) = (x as u32, (x >> 40) as u16);
            let mut input = addr.to_be_bytes().to_vec();
            input.extend_from_slice(&port.to_be_bytes());
            assert_eq!(client_hash(addr, port), toeplitz(&input));
        }
    }

    #[test]
    fn owners_spread_evenly() {
        let mut per = [0u32; 4];
        for i in 0..40_000u32 {
            per[owner_worker(0x0a00_0000 + i / 100, 1024 + (i % 100) as u16, 4) as usize] += 1;
        }
        for n in per {
            assert!((9_000..11_000).contains(&n), "{per:?}");
        }
        assert_eq!(owner_worker(1, 2, 1), 0);
    }
}
