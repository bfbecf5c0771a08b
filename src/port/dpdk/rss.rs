//! Flow ownership on DPDK: RSS programmed so the queue a NIC picks for a
//! packet is [`crate::rss::owner_worker`] of its client side.
//!
//! The hash fields are the client's address and port only: the source on
//! a client-facing port (`L3_SRC_ONLY | L4_SRC_ONLY`), the destination on a
//! backend-facing one (`L3_DST_ONLY | L4_DST_ONLY`), for IPv4 TCP and UDP;
//! the key is [`crate::rss::KEY`]; the redirection table maps entry `i` to
//! queue `(i % RETA_SIZE) % queues`, which for any table whose size is a
//! multiple of [`crate::rss::RETA_SIZE`] gives `(hash % RETA_SIZE) % queues`
//! as `owner_worker` computes. A PMD that cannot do all of this (no
//! `*_ONLY` hash fields, another key size, a smaller table; net_af_xdp,
//! net_af_packet, net_ring and net_tap among them) leaves the device on the
//! symmetric hash and packets cross the handoff ring: [`plan`] says why.

use dpdk_sys as sys;

use super::{check, DpdkError};
use crate::rss::{self, ClientSide};

/// The RSS hash fields that make the NIC hash `side`'s address and port.
pub fn hash_fields(side: ClientSide) -> u64 {
    let only = match side {
        ClientSide::Source => sys::SLUICE_ETH_RSS_L3_SRC_ONLY | sys::SLUICE_ETH_RSS_L4_SRC_ONLY,
        ClientSide::Destination => {
            sys::SLUICE_ETH_RSS_L3_DST_ONLY | sys::SLUICE_ETH_RSS_L4_DST_ONLY
        }
    };
    sys::SLUICE_ETH_RSS_NONFRAG_IPV4_TCP | sys::SLUICE_ETH_RSS_NONFRAG_IPV4_UDP | only
}

/// The `rss_hf` to configure for owner steering on a device with these
/// capabilities, or why it cannot be done.
pub fn plan(
    flow_type_rss_offloads: u64,
    hash_key_size: u8,
    reta_size: u16,
    side: ClientSide,
) -> Result<u64, String> {
    let want = hash_fields(side);
    let missing = want & !flow_type_rss_offloads;
    if missing != 0 {
        return Err(format!(
            "the PMD does not hash on {} (rss offloads {flow_type_rss_offloads:#x}, missing {missing:#x})",
            match side {
                ClientSide::Source => "the source address and port alone",
                ClientSide::Destination => "the destination address and port alone",
            }
        ));
    }
    if usize::from(hash_key_size) != rss::KEY.len() {
        return Err(format!(
            "its RSS key is {hash_key_size} bytes, not {}",
            rss::KEY.len()
        ));
    }
    if reta_size == 0 || u32::from(reta_size) % rss::RETA_SIZE != 0 {
        return Err(format!(
            "its redirection table has {reta_size} entries, not a multiple of {}",
            rss::RETA_SIZE
        ));
    }
    Ok(want)
}

/// The redirection table: entry `i` -> queue `(i % RETA_SIZE) % queues`.
pub fn reta(reta_size: u16, queues: u16) -> Vec<sys::rte_eth_rss_reta_entry64> {
    let queues = u32::from(queues.max(1));
    (0..usize::from(reta_size).div_ceil(64))
        .map(|group| {
            let mut e = sys::rte_eth_rss_reta_entry64 {
                mask: u64::MAX,
                reta: [0; 64],
            };
            for (j, slot) in e.reta.iter_mut().enumerate() {
                let i = (group * 64 + j) as u32;
                *slot = ((i % rss::RETA_SIZE) % queues) as u16;
            }
            e
        })
        .collect()
}

/// Writes [`reta`] into configured device `port`.
pub fn program_reta(port: u16, reta_size: u16, queues: u16) -> Result<(), DpdkError> {
    let mut table = reta(reta_size, queues);
    // SAFETY: port is configured; the table has reta_size / 64 entries,
    // each with all 64 slots valid, as the call reads.
    check(port, "rte_eth_dev_rss_reta_update", unsafe {
        sys::rte_eth_dev_rss_reta_update(port, table.as_mut_ptr(), reta_size)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a NIC does with the programmed table: hash % table size, then
    /// the entry's queue. It must equal owner_worker for every hash.
    #[test]
    fn the_table_gives_owner_worker() {
        for (size, queues) in [(128u16, 2u16), (512, 2), (512, 3), (128, 7), (256, 4)] {
            let t = reta(size, queues);
            let mut s: u64 = 0x2545_f491_4f6c_dd1d;
            for _ in 0..5_000 {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                let (addr, port) = (s as u32, (s >> 32) as u16);
                let h = rss::client_hash(addr, port);
                let i = (h % u32::from(size)) as usize;
                let nic = u32::from(t[i / 64].reta[i % 64]);
                assert_eq!(nic, rss::owner_worker(addr, port, u32::from(queues)));
            }
        }
    }

    #[test]
    fn devices_that_cannot_are_refused_with_reasons() {
        let src = hash_fields(ClientSide::Source);
        assert_eq!(plan(src | 0xff, 40, 512, ClientSide::Source), Ok(src));
        let e = plan(0, 40, 512, ClientSide::Source).unwrap_err();
        assert!(e.contains("source address"), "{e}");
        assert!(plan(src, 40, 512, ClientSide::Destination).is_err());
        assert!(plan(src, 52, 512, ClientSide::Source)
            .unwrap_err()
            .contains("52"));
        assert!(plan(src, 40, 64, ClientSide::Source)
            .unwrap_err()
            .contains("64"));
        assert!(plan(src, 40, 0, ClientSide::Source).is_err());
    }
}
