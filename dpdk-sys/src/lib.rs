//! Raw FFI bindings to DPDK 22.11 as shipped by the distribution
//! (`libdpdk-dev`, found with pkg-config), plus a small C shim.
//!
//! DPDK's fast path (`rte_eth_rx_burst`, `rte_pktmbuf_alloc`, `rte_lcore_id`,
//! the mbuf data-pointer helpers, `rte_softrss`) is `static inline`, so it has
//! no symbol; the shim in `csrc/` exposes each one as an ordinary function
//! named `sluice_*` (for example [`sluice_eth_rx_burst`]). Everything else is
//! DPDK's own exported API under its own name.
//!
//! Flags that DPDK builds with the `RTE_BIT64` macro (RSS hash types, offload
//! bits) are exported as `SLUICE_*` constants, because bindgen cannot expand
//! function-like macros.
//!
//! Rules the types cannot express:
//! - `rte_eal_init` succeeds once per process; a second call fails with
//!   `EALREADY`, even after `rte_eal_cleanup`.
//! - On success `rte_eal_init` returns the number of arguments it consumed.
//! - Threads that are not EAL lcores should call `rte_thread_register` before
//!   touching mempools, or every alloc/free bypasses the per-lcore cache.

mod bindings {
    #![allow(
        non_upper_case_globals,
        non_camel_case_types,
        non_snake_case,
        dead_code,
        improper_ctypes,
        unnecessary_transmutes,
        unsafe_op_in_unsafe_fn,
        clippy::all,
        clippy::pedantic,
        clippy::undocumented_unsafe_blocks,
        clippy::missing_safety_doc,
        rustdoc::all
    )]
    include!(concat!(env!("OUT_DIR"), "/bindings.rs"));
}

pub use bindings::*;

/// The symmetric Toeplitz key: `0x6d5a` repeated over the 40 bytes DPDK
/// PMDs expect. With it a 4-tuple and its swap hash to the same value, so
/// both directions of an un-NATed flow land on one queue.
pub const SYMMETRIC_RSS_KEY: [u8; 40] = {
    let mut key = [0u8; 40];
    let mut i = 0;
    while i < key.len() {
        key[i] = if i % 2 == 0 { 0x6d } else { 0x5a };
        i += 1;
    }
    key
};

/// `RTE_ETH_RSS_L3_SRC_ONLY` (bit 63): bindgen drops it (clang evaluates the
/// expansion as a signed constant that overflows), so it is spelled out here
/// and checked against the C value by a test.
pub const SLUICE_ETH_RSS_L3_SRC_ONLY: u64 = 1 << 63;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn l3_src_only_matches_the_c_macro() {
        // SAFETY: a pure function returning a compile-time constant.
        let from_c = unsafe { sluice_eth_rss_l3_src_only() };
        assert_eq!(from_c, SLUICE_ETH_RSS_L3_SRC_ONLY);
    }

    #[test]
    fn symmetric_key_hashes_a_tuple_and_its_swap_alike() {
        // rte_softrss takes host-order words: src addr, dst addr, then
        // (src port << 16 | dst port).
        let forward = [0x0a00_0001_u32, 0x0a00_0002, (40_000 << 16) | 80];
        let reverse = [0x0a00_0002_u32, 0x0a00_0001, (80 << 16) | 40_000];
        let mut a = forward;
        let mut b = reverse;
        // SAFETY: each tuple is 3 valid u32 words and the key is 40 bytes, as
        // rte_softrss reads input_len words and up to 4 * input_len + 4 key bytes.
        let (ha, hb) = unsafe {
            (
                sluice_softrss(a.as_mut_ptr(), 3, SYMMETRIC_RSS_KEY.as_ptr()),
                sluice_softrss(b.as_mut_ptr(), 3, SYMMETRIC_RSS_KEY.as_ptr()),
            )
        };
        assert_eq!(ha, hb);
        assert_ne!(ha, 0);
        let mut other = [0x0a00_0003_u32, 0x0a00_0002, (40_000 << 16) | 80];
        // SAFETY: as above.
        let hc = unsafe { sluice_softrss(other.as_mut_ptr(), 3, SYMMETRIC_RSS_KEY.as_ptr()) };
        assert_ne!(
            ha, hc,
            "a different client should (almost surely) hash differently"
        );
    }
}
