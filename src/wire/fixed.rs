//! The one fixed layout the fast path handles: untagged Ethernet, IPv4
//! without options, then TCP or UDP. Offsets from the start of the frame,
//! derived from each header's `field` module, so the fast path's parse,
//! its rewrites and the benchmark's templates share one definition and no
//! literal offset lives anywhere else.

use super::{ethernet, ipv4, tcp, udp};

/// Start of the IPv4 header.
pub const L3: usize = ethernet::HEADER_LEN;
/// The Ethernet type field.
pub const ETHERTYPE: usize = ethernet::field::ETHERTYPE;
pub const VER_IHL: usize = L3 + ipv4::field::VER_IHL;
pub const TOTAL_LEN: usize = L3 + ipv4::field::TOTAL_LEN;
pub const FLAGS_FRAG: usize = L3 + ipv4::field::FLAGS_FRAG;
pub const TTL: usize = L3 + ipv4::field::TTL;
pub const PROTOCOL: usize = L3 + ipv4::field::PROTOCOL;
pub const IP_CSUM: usize = L3 + ipv4::field::CHECKSUM;
pub const IP_SRC: usize = L3 + ipv4::field::SRC;
pub const IP_DST: usize = L3 + ipv4::field::DST;
/// Start of the TCP or UDP header.
pub const L4: usize = L3 + ipv4::MIN_HEADER_LEN;
/// Ports, relative to `L4` (the same for TCP and UDP).
pub const L4_SPORT: usize = tcp::field::SRC_PORT;
pub const L4_DPORT: usize = tcp::field::DST_PORT;
/// TCP fields, relative to `L4`.
pub const TCP_SEQ: usize = tcp::field::SEQ;
pub const TCP_ACK: usize = tcp::field::ACK;
pub const TCP_DATA_OFFSET: usize = tcp::field::DATA_OFFSET;
pub const TCP_FLAGS: usize = tcp::field::FLAGS;
pub const TCP_CSUM: usize = tcp::field::CHECKSUM;
/// UDP fields, relative to `L4`.
pub const UDP_LEN: usize = udp::field::LENGTH;
pub const UDP_CSUM: usize = udp::field::CHECKSUM;
/// Bytes every fast-path frame has: the headers up to a TCP header
/// without options (a UDP frame is shorter only if it carries under 12
/// bytes of payload, and then takes the general path).
pub const HEADERS: usize = L4 + tcp::MIN_HEADER_LEN;

const _: () = assert!(L4_SPORT == udp::field::SRC_PORT && L4_DPORT == udp::field::DST_PORT);
const _: () = assert!(HEADERS == 54);
