//! Flow keys: the client side of a connection, as the data path sees it.

use std::net::Ipv4Addr;

use crate::hash::hash_words_v1;

/// IP protocol numbers the flow layer distinguishes.
pub mod ip_proto {
    /// Transmission Control Protocol.
    pub const TCP: u8 = 6;
    /// User Datagram Protocol.
    pub const UDP: u8 = 17;
}

/// A flow keyed by its client side: (client address, client port, VIP address, VIP port,
/// protocol).
///
/// Backend replies are looked up with the same key (the data path rebuilds it from the reply's
/// destination and the VIP), so one entry serves both directions and no reverse index is needed.
/// Addresses are host-order `u32`s of [`Ipv4Addr`] (`u32::from(addr)`). `repr(C)` pins the
/// field order so the struct is 16 bytes with the padding at the end.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
#[repr(C)]
pub struct FlowKey {
    /// Client IPv4 address, host order.
    pub client_addr: u32,
    /// Virtual IP address of the service, host order.
    pub vip_addr: u32,
    /// Client transport port.
    pub client_port: u16,
    /// Service transport port.
    pub vip_port: u16,
    /// IP protocol number ([`ip_proto`]).
    pub proto: u8,
}

const _: () = assert!(core::mem::size_of::<FlowKey>() == 16);

impl FlowKey {
    /// Builds a key from typed addresses.
    pub fn new(
        client: Ipv4Addr,
        client_port: u16,
        vip: Ipv4Addr,
        vip_port: u16,
        proto: u8,
    ) -> Self {
        FlowKey {
            client_addr: u32::from(client),
            vip_addr: u32::from(vip),
            client_port,
            vip_port,
            proto,
        }
    }

    /// The client address as an [`Ipv4Addr`].
    pub fn client(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.client_addr)
    }

    /// The VIP as an [`Ipv4Addr`].
    pub fn vip(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.vip_addr)
    }

    /// Stable 5-tuple hash ([`hash_words_v1`] over two packed words).
    ///
    /// Used with a per-service seed for Maglev, where it must be identical on every instance and
    /// every build: the packing below is part of that contract (`w0` = client address above VIP
    /// address; `w1` = client port, VIP port, protocol from the top byte down, low 24 bits zero).
    /// Packing explicitly instead of hashing the struct's bytes keeps the result independent of
    /// padding and endianness.
    #[inline(always)]
    pub fn hash_v1(&self, seed: u64) -> u64 {
        let w0 = (self.client_addr as u64) << 32 | self.vip_addr as u64;
        let w1 = (self.client_port as u64) << 48
            | (self.vip_port as u64) << 32
            | (self.proto as u64) << 24;
        hash_words_v1(w0, w1, seed)
    }
}

/// What the flow table needs of a key.
///
/// Keeping this a trait lets an IPv6 key be added later without touching the table.
pub trait TableKey: Copy + Eq {
    /// Hash of the key under the table's (random, per-table) seed.
    fn table_hash(&self, seed: u64) -> u64;
}

impl TableKey for FlowKey {
    #[inline(always)]
    fn table_hash(&self, seed: u64) -> u64 {
        self.hash_v1(seed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> FlowKey {
        FlowKey::new(
            Ipv4Addr::new(10, 0, 0, 1),
            8080,
            Ipv4Addr::new(198, 18, 0, 100),
            80,
            ip_proto::TCP,
        )
    }

    #[test]
    fn key_is_sixteen_bytes_and_round_trips_addresses() {
        assert_eq!(core::mem::size_of::<FlowKey>(), 16);
        let k = sample();
        assert_eq!(k.client(), Ipv4Addr::new(10, 0, 0, 1));
        assert_eq!(k.vip(), Ipv4Addr::new(198, 18, 0, 100));
        assert_eq!(k.client_addr, 0x0a00_0001);
    }

    #[test]
    fn hash_v1_packing_is_frozen() {
        // The packing is a cross-instance contract (Maglev): this pins it to the words that
        // hash.rs freezes, so a change to either shows up here.
        let k = sample();
        assert_eq!(
            k.hash_v1(7),
            hash_words_v1(0x0a00_0001_c612_0064, 0x1f90_0050_0600_0000, 7)
        );
        assert_eq!(k.table_hash(7), k.hash_v1(7));
    }

    #[test]
    fn hash_v1_depends_on_every_field_and_the_seed() {
        let k = sample();
        let h = k.hash_v1(1);
        let variants = [
            FlowKey {
                client_addr: k.client_addr ^ 1,
                ..k
            },
            FlowKey {
                vip_addr: k.vip_addr ^ 1,
                ..k
            },
            FlowKey {
                client_port: k.client_port ^ 1,
                ..k
            },
            FlowKey {
                vip_port: k.vip_port ^ 1,
                ..k
            },
            FlowKey {
                proto: ip_proto::UDP,
                ..k
            },
        ];
        for v in variants {
            assert_ne!(v.hash_v1(1), h, "{v:?}");
        }
        assert_ne!(k.hash_v1(2), h);
        // Swapping client and VIP is a different flow.
        let swapped = FlowKey {
            client_addr: k.vip_addr,
            vip_addr: k.client_addr,
            client_port: k.vip_port,
            vip_port: k.client_port,
            ..k
        };
        assert_ne!(swapped.hash_v1(1), h);
    }
}
