/*
 * sluice's C shim over DPDK 22.11.
 *
 * DPDK's fast path (rx/tx burst, mbuf alloc/free, data pointer arithmetic,
 * lcore id) is static inline in the headers, so no symbol exists for Rust to
 * link against. Each function here is a one-line forwarder compiled with the
 * same flags as DPDK itself (pkg-config's -include rte_config.h -march=...),
 * so the inline bodies are the distribution's own, including the
 * rte_eth_fp_ops indirection that replaced direct device structs in 21.11.
 *
 * The constants below exist because DPDK builds its RSS and offload flags with
 * the function-like macro RTE_BIT64, which bindgen cannot expand; as `static
 * const` variables clang evaluates them and bindgen emits plain Rust consts.
 */
#ifndef SLUICE_SHIM_H
#define SLUICE_SHIM_H

#include <stdint.h>

#include <rte_config.h>
#include <rte_eal.h>
#include <rte_errno.h>
#include <rte_lcore.h>
#include <rte_launch.h>
#include <rte_mempool.h>
#include <rte_mbuf.h>
#include <rte_ethdev.h>
#include <rte_dev.h>
#include <rte_thash.h>

/* ---- fast path ---- */
uint16_t sluice_eth_rx_burst(uint16_t port_id, uint16_t queue_id, struct rte_mbuf **rx_pkts,
                             uint16_t nb_pkts);
uint16_t sluice_eth_tx_burst(uint16_t port_id, uint16_t queue_id, struct rte_mbuf **tx_pkts,
                             uint16_t nb_pkts);

/* ---- mbuf ---- */
struct rte_mbuf *sluice_pktmbuf_alloc(struct rte_mempool *pool);
int sluice_pktmbuf_alloc_bulk(struct rte_mempool *pool, struct rte_mbuf **mbufs, unsigned count);
void sluice_pktmbuf_free(struct rte_mbuf *m);
void sluice_pktmbuf_reset(struct rte_mbuf *m);
/* First byte of packet data in the first segment (rte_pktmbuf_mtod). */
uint8_t *sluice_pktmbuf_mtod(struct rte_mbuf *m);
uint16_t sluice_pktmbuf_data_len(const struct rte_mbuf *m);
uint32_t sluice_pktmbuf_pkt_len(const struct rte_mbuf *m);
uint16_t sluice_pktmbuf_nb_segs(const struct rte_mbuf *m);
uint16_t sluice_pktmbuf_headroom(const struct rte_mbuf *m);
uint16_t sluice_pktmbuf_tailroom(const struct rte_mbuf *m);
/* Return the new data start, or NULL when headroom is short (mbuf unchanged). */
uint8_t *sluice_pktmbuf_prepend(struct rte_mbuf *m, uint16_t len);
/* Return the start of the appended bytes, or NULL when tailroom is short. */
uint8_t *sluice_pktmbuf_append(struct rte_mbuf *m, uint16_t len);
/* Remove len bytes from the front; the new data start, or NULL. */
uint8_t *sluice_pktmbuf_adj(struct rte_mbuf *m, uint16_t len);
/* Remove len bytes from the end; 0 on success, -1 when len > data_len. */
int sluice_pktmbuf_trim(struct rte_mbuf *m, uint16_t len);
/* 1 and *hash set when the PMD stored an RSS hash in the mbuf, else 0. */
int sluice_pktmbuf_rss_hash(const struct rte_mbuf *m, uint32_t *hash);
uint16_t sluice_pktmbuf_port(const struct rte_mbuf *m);

/* ---- threads and errors ---- */
unsigned sluice_lcore_id(void);
unsigned sluice_socket_id(void);
int sluice_errno(void);
/* RTE_ETH_RSS_L3_SRC_ONLY is bit 63: clang evaluates the static const form as
 * signed and bindgen drops it, so Rust defines it by hand and tests it here. */
uint64_t sluice_eth_rss_l3_src_only(void);

/* ---- software RSS (rte_thash.h inlines) ---- */
uint32_t sluice_softrss(uint32_t *input_tuple, uint32_t input_len, const uint8_t *rss_key);
uint32_t sluice_softrss_be(uint32_t *input_tuple, uint32_t input_len, const uint8_t *rss_key);
void sluice_convert_rss_key(const uint32_t *orig, uint32_t *targ, int len);

/* ---- constants bindgen cannot expand (RTE_BIT64 macros) ---- */
static const uint64_t SLUICE_ETH_RSS_IPV4 = RTE_ETH_RSS_IPV4;
static const uint64_t SLUICE_ETH_RSS_FRAG_IPV4 = RTE_ETH_RSS_FRAG_IPV4;
static const uint64_t SLUICE_ETH_RSS_NONFRAG_IPV4_TCP = RTE_ETH_RSS_NONFRAG_IPV4_TCP;
static const uint64_t SLUICE_ETH_RSS_NONFRAG_IPV4_UDP = RTE_ETH_RSS_NONFRAG_IPV4_UDP;
static const uint64_t SLUICE_ETH_RSS_NONFRAG_IPV4_OTHER = RTE_ETH_RSS_NONFRAG_IPV4_OTHER;
static const uint64_t SLUICE_ETH_RSS_IPV6 = RTE_ETH_RSS_IPV6;
static const uint64_t SLUICE_ETH_RSS_NONFRAG_IPV6_TCP = RTE_ETH_RSS_NONFRAG_IPV6_TCP;
static const uint64_t SLUICE_ETH_RSS_NONFRAG_IPV6_UDP = RTE_ETH_RSS_NONFRAG_IPV6_UDP;
static const uint64_t SLUICE_ETH_RSS_IP = RTE_ETH_RSS_IP;
static const uint64_t SLUICE_ETH_RSS_TCP = RTE_ETH_RSS_TCP;
static const uint64_t SLUICE_ETH_RSS_UDP = RTE_ETH_RSS_UDP;
static const uint64_t SLUICE_ETH_RSS_L4_DST_ONLY = RTE_ETH_RSS_L4_DST_ONLY;
static const uint64_t SLUICE_ETH_RSS_L4_SRC_ONLY = RTE_ETH_RSS_L4_SRC_ONLY;
static const uint64_t SLUICE_ETH_RSS_L3_DST_ONLY = RTE_ETH_RSS_L3_DST_ONLY;
static const uint64_t SLUICE_ETH_RX_OFFLOAD_RSS_HASH = RTE_ETH_RX_OFFLOAD_RSS_HASH;
static const uint64_t SLUICE_ETH_RX_OFFLOAD_IPV4_CKSUM = RTE_ETH_RX_OFFLOAD_IPV4_CKSUM;
static const uint64_t SLUICE_ETH_TX_OFFLOAD_MBUF_FAST_FREE = RTE_ETH_TX_OFFLOAD_MBUF_FAST_FREE;
static const uint64_t SLUICE_ETH_TX_OFFLOAD_IPV4_CKSUM = RTE_ETH_TX_OFFLOAD_IPV4_CKSUM;
static const uint64_t SLUICE_ETH_TX_OFFLOAD_TCP_CKSUM = RTE_ETH_TX_OFFLOAD_TCP_CKSUM;
static const uint64_t SLUICE_ETH_TX_OFFLOAD_UDP_CKSUM = RTE_ETH_TX_OFFLOAD_UDP_CKSUM;
static const uint64_t SLUICE_MBUF_F_RX_RSS_HASH = RTE_MBUF_F_RX_RSS_HASH;
static const uint32_t SLUICE_LCORE_ID_ANY = LCORE_ID_ANY;
static const uint16_t SLUICE_MBUF_DEFAULT_BUF_SIZE = RTE_MBUF_DEFAULT_BUF_SIZE;
static const uint16_t SLUICE_PKTMBUF_HEADROOM = RTE_PKTMBUF_HEADROOM;

#endif
