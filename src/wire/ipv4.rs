//! IPv4 headers (RFC 791) with incremental checksum maintenance for NAT rewrites.

use std::net::Ipv4Addr;

use super::checksum;
use super::{read_ipv4, read_u16, write_ipv4, write_u16, WireError};

pub(crate) mod field {
    pub const VER_IHL: usize = 0;
    pub const DSCP_ECN: usize = 1;
    pub const TOTAL_LEN: usize = 2;
    pub const IDENT: usize = 4;
    pub const FLAGS_FRAG: usize = 6;
    pub const TTL: usize = 8;
    pub const PROTOCOL: usize = 9;
    pub const CHECKSUM: usize = 10;
    pub const SRC: usize = 12;
    pub const DST: usize = 16;
}

/// Length of a header without options.
pub const MIN_HEADER_LEN: usize = 20;
/// Length of a header with the most options IHL can describe.
pub const MAX_HEADER_LEN: usize = 60;

const FLAG_DF: u16 = 0x4000;
const FLAG_MF: u16 = 0x2000;
const FRAG_OFFSET_MASK: u16 = 0x1fff;

/// A view of an IPv4 packet over a byte buffer that starts at the IP header.
///
/// The buffer may extend past `total_len` (Ethernet pads short frames to 60 bytes); everything
/// past `total_len` is ignored by [`payload`](Self::payload).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Ipv4Packet<T> {
    /// Wraps a buffer without validation; fixed-offset getters panic below 20 bytes.
    #[inline]
    pub const fn new_unchecked(buffer: T) -> Self {
        Ipv4Packet { buffer }
    }

    /// Wraps a buffer holding a well-formed IPv4 header and the payload it announces.
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let packet = Self::new_unchecked(buffer);
        packet.check()?;
        Ok(packet)
    }

    /// Validates version, IHL and total length against the buffer (not the checksum: the data
    /// path decides whether to verify, NICs often already did).
    pub fn check(&self) -> Result<(), WireError> {
        let data = self.buffer.as_ref();
        if data.len() < MIN_HEADER_LEN {
            return Err(WireError::Truncated);
        }
        if data[field::VER_IHL] >> 4 != 4 {
            return Err(WireError::BadVersion);
        }
        let header_len = self.header_len();
        if header_len < MIN_HEADER_LEN || header_len > data.len() {
            return Err(WireError::BadHeaderLen);
        }
        let total_len = usize::from(self.total_len());
        if total_len < header_len || total_len > data.len() {
            return Err(WireError::BadTotalLen);
        }
        Ok(())
    }

    #[inline]
    pub fn into_inner(self) -> T {
        self.buffer
    }

    #[inline]
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[field::VER_IHL] >> 4
    }

    /// Header length in bytes (IHL * 4), 20..=60 on a checked packet.
    #[inline]
    pub fn header_len(&self) -> usize {
        usize::from(self.buffer.as_ref()[field::VER_IHL] & 0x0f) * 4
    }

    #[inline]
    pub fn dscp_ecn(&self) -> u8 {
        self.buffer.as_ref()[field::DSCP_ECN]
    }

    #[inline]
    pub fn total_len(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::TOTAL_LEN)
    }

    #[inline]
    pub fn ident(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::IDENT)
    }

    #[inline]
    pub fn dont_fragment(&self) -> bool {
        read_u16(self.buffer.as_ref(), field::FLAGS_FRAG) & FLAG_DF != 0
    }

    #[inline]
    pub fn more_fragments(&self) -> bool {
        read_u16(self.buffer.as_ref(), field::FLAGS_FRAG) & FLAG_MF != 0
    }

    /// Fragment offset in 8-byte units.
    #[inline]
    pub fn frag_offset(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::FLAGS_FRAG) & FRAG_OFFSET_MASK
    }

    /// True for any piece of a fragmented datagram, first one included (MF or offset set).
    #[inline]
    pub fn is_fragment(&self) -> bool {
        read_u16(self.buffer.as_ref(), field::FLAGS_FRAG) & (FLAG_MF | FRAG_OFFSET_MASK) != 0
    }

    #[inline]
    pub fn ttl(&self) -> u8 {
        self.buffer.as_ref()[field::TTL]
    }

    #[inline]
    pub fn protocol(&self) -> u8 {
        self.buffer.as_ref()[field::PROTOCOL]
    }

    #[inline]
    pub fn checksum(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::CHECKSUM)
    }

    #[inline]
    pub fn src_addr(&self) -> Ipv4Addr {
        read_ipv4(self.buffer.as_ref(), field::SRC)
    }

    #[inline]
    pub fn dst_addr(&self) -> Ipv4Addr {
        read_ipv4(self.buffer.as_ref(), field::DST)
    }

    /// The header bytes, options included. Clamped to the buffer, so it cannot panic even after
    /// a setter broke the invariants `new_checked` established.
    #[inline]
    pub fn header(&self) -> &[u8] {
        let data = self.buffer.as_ref();
        &data[..self.header_len().min(data.len())]
    }

    /// The option bytes (empty for IHL 5).
    #[inline]
    pub fn options(&self) -> &[u8] {
        let header = self.header();
        header.get(MIN_HEADER_LEN..).unwrap_or(&[])
    }

    /// The bytes from the end of the header to `total_len` (padding excluded).
    #[inline]
    pub fn payload(&self) -> &[u8] {
        let data = self.buffer.as_ref();
        let (start, end) = self.payload_range();
        &data[start..end]
    }

    #[inline]
    fn payload_range(&self) -> (usize, usize) {
        let len = self.buffer.as_ref().len();
        let end = usize::from(self.total_len()).min(len);
        let start = self.header_len().min(end);
        (start, end)
    }

    /// True when the header checksum is right.
    #[inline]
    pub fn verify_checksum(&self) -> bool {
        checksum::fold(checksum::sum(self.header())) == 0xffff
    }
}

impl<T: AsRef<[u8]>> AsRef<[u8]> for Ipv4Packet<T> {
    fn as_ref(&self) -> &[u8] {
        self.buffer.as_ref()
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv4Packet<T> {
    /// Sets the version nibble (keeps the IHL).
    #[inline]
    pub fn set_version(&mut self, version: u8) {
        let byte = &mut self.buffer.as_mut()[field::VER_IHL];
        *byte = (*byte & 0x0f) | (version << 4);
    }

    /// Sets IHL from a length in bytes (rounded down to words; keeps the version).
    #[inline]
    pub fn set_header_len(&mut self, len: usize) {
        let byte = &mut self.buffer.as_mut()[field::VER_IHL];
        *byte = (*byte & 0xf0) | ((len / 4) as u8 & 0x0f);
    }

    #[inline]
    pub fn set_dscp_ecn(&mut self, value: u8) {
        self.buffer.as_mut()[field::DSCP_ECN] = value;
    }

    #[inline]
    pub fn set_total_len(&mut self, value: u16) {
        write_u16(self.buffer.as_mut(), field::TOTAL_LEN, value);
    }

    #[inline]
    pub fn set_ident(&mut self, value: u16) {
        write_u16(self.buffer.as_mut(), field::IDENT, value);
    }

    #[inline]
    fn set_flags_frag_bits(&mut self, mask: u16, bits: u16) {
        let data = self.buffer.as_mut();
        let word = read_u16(data, field::FLAGS_FRAG);
        write_u16(data, field::FLAGS_FRAG, (word & !mask) | (bits & mask));
    }

    #[inline]
    pub fn set_dont_fragment(&mut self, value: bool) {
        self.set_flags_frag_bits(FLAG_DF, if value { FLAG_DF } else { 0 });
    }

    #[inline]
    pub fn set_more_fragments(&mut self, value: bool) {
        self.set_flags_frag_bits(FLAG_MF, if value { FLAG_MF } else { 0 });
    }

    /// Sets the fragment offset in 8-byte units (13 bits; higher bits are dropped).
    #[inline]
    pub fn set_frag_offset(&mut self, value: u16) {
        self.set_flags_frag_bits(FRAG_OFFSET_MASK, value);
    }

    #[inline]
    pub fn set_ttl(&mut self, value: u8) {
        self.buffer.as_mut()[field::TTL] = value;
    }

    #[inline]
    pub fn set_protocol(&mut self, value: u8) {
        self.buffer.as_mut()[field::PROTOCOL] = value;
    }

    #[inline]
    pub fn set_checksum(&mut self, value: u16) {
        write_u16(self.buffer.as_mut(), field::CHECKSUM, value);
    }

    #[inline]
    pub fn set_src_addr(&mut self, addr: Ipv4Addr) {
        write_ipv4(self.buffer.as_mut(), field::SRC, addr);
    }

    #[inline]
    pub fn set_dst_addr(&mut self, addr: Ipv4Addr) {
        write_ipv4(self.buffer.as_mut(), field::DST, addr);
    }

    /// Recomputes the header checksum from scratch.
    #[inline]
    pub fn fill_checksum(&mut self) {
        self.set_checksum(0);
        let csum = checksum::checksum(self.header());
        self.set_checksum(csum);
    }

    /// Rewrites the source address and patches the header checksum (RFC 1624), without
    /// touching the rest of the header. The L4 checksum is the caller's: see
    /// `TcpSegment::update_checksum_for_addr` / `UdpDatagram::update_checksum_for_addr`.
    #[inline]
    pub fn rewrite_src_addr(&mut self, new: Ipv4Addr) {
        let old = self.src_addr();
        self.set_src_addr(new);
        let csum = checksum::update_addr(self.checksum(), old, new);
        self.set_checksum(csum);
    }

    /// Rewrites the destination address and patches the header checksum.
    #[inline]
    pub fn rewrite_dst_addr(&mut self, new: Ipv4Addr) {
        let old = self.dst_addr();
        self.set_dst_addr(new);
        let csum = checksum::update_addr(self.checksum(), old, new);
        self.set_checksum(csum);
    }

    /// Decrements the TTL, patches the checksum, and returns the new TTL.
    ///
    /// The caller checks `ttl() <= 1` first and answers with ICMP time-exceeded instead of
    /// forwarding; a TTL of 0 is left at 0 (and the checksum untouched) rather than wrapping.
    #[inline]
    pub fn decrement_ttl(&mut self) -> u8 {
        let ttl = self.ttl();
        if ttl == 0 {
            return 0;
        }
        let new_ttl = ttl - 1;
        // TTL is the high byte of the word it shares with the protocol.
        let data = self.buffer.as_mut();
        let old_word = read_u16(data, field::TTL);
        data[field::TTL] = new_ttl;
        let new_word = read_u16(data, field::TTL);
        let csum = checksum::update_u16(read_u16(data, field::CHECKSUM), old_word, new_word);
        write_u16(data, field::CHECKSUM, csum);
        new_ttl
    }

    /// The header bytes, for options rewrites; clamped to the buffer.
    #[inline]
    pub fn header_mut(&mut self) -> &mut [u8] {
        let header_len = self.header_len();
        let data = self.buffer.as_mut();
        let end = header_len.min(data.len());
        &mut data[..end]
    }

    /// The bytes from the end of the header to `total_len`.
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let (start, end) = self.payload_range();
        &mut self.buffer.as_mut()[start..end]
    }
}

/// The fields of an option-less, unfragmented IPv4 header, for building packets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ipv4Repr {
    pub src_addr: Ipv4Addr,
    pub dst_addr: Ipv4Addr,
    pub protocol: u8,
    pub ttl: u8,
    /// Bytes after the header.
    pub payload_len: usize,
    pub ident: u16,
    pub dont_fragment: bool,
}

impl Ipv4Repr {
    /// Reads a packet, re-validating it (so an unchecked view is fine).
    ///
    /// Errors: the view's validation errors, `BadChecksum`, and `Unsupported` for fragments
    /// (this struct has no fragment fields, and dropping them silently would corrupt a rebuild).
    /// Options are skipped: `payload_len` counts from the end of the real header.
    pub fn parse<T: AsRef<[u8]>>(packet: &Ipv4Packet<T>) -> Result<Self, WireError> {
        packet.check()?;
        if !packet.verify_checksum() {
            return Err(WireError::BadChecksum);
        }
        if packet.is_fragment() {
            return Err(WireError::Unsupported);
        }
        Ok(Ipv4Repr {
            src_addr: packet.src_addr(),
            dst_addr: packet.dst_addr(),
            protocol: packet.protocol(),
            ttl: packet.ttl(),
            payload_len: packet.payload().len(),
            ident: packet.ident(),
            dont_fragment: packet.dont_fragment(),
        })
    }

    /// Always 20: this struct emits no options.
    #[inline]
    pub const fn header_len(&self) -> usize {
        MIN_HEADER_LEN
    }

    /// Header plus payload.
    #[inline]
    pub const fn buffer_len(&self) -> usize {
        MIN_HEADER_LEN + self.payload_len
    }

    /// Writes a 20-byte header (IHL 5, DSCP 0, checksum filled) at the start of `buf` and
    /// returns 20; the payload is the caller's to write after it.
    ///
    /// `BadLength` if the total length would not fit in 16 bits, `Truncated` if `buf` is
    /// shorter than the header.
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize, WireError> {
        let total_len = u16::try_from(self.buffer_len()).map_err(|_| WireError::BadLength)?;
        let header = buf.get_mut(..MIN_HEADER_LEN).ok_or(WireError::Truncated)?;
        header.fill(0);
        let mut packet = Ipv4Packet::new_unchecked(header);
        packet.set_version(4);
        packet.set_header_len(MIN_HEADER_LEN);
        packet.set_total_len(total_len);
        packet.set_ident(self.ident);
        packet.set_dont_fragment(self.dont_fragment);
        packet.set_ttl(self.ttl);
        packet.set_protocol(self.protocol);
        packet.set_src_addr(self.src_addr);
        packet.set_dst_addr(self.dst_addr);
        packet.fill_checksum();
        Ok(MIN_HEADER_LEN)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // 192.168.0.1 -> 192.168.0.199, UDP, total length 0x73, DF, TTL 64, checksum b861
    // (a widely used worked example), followed by 0x5f payload bytes.
    fn known_packet() -> Vec<u8> {
        let mut bytes = vec![
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0xb8, 0x61, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        bytes.extend((0..0x5f).map(|i| i as u8));
        bytes
    }

    #[test]
    fn parses_known_header() {
        let bytes = known_packet();
        let packet = Ipv4Packet::new_checked(&bytes[..]).unwrap();
        assert_eq!(packet.version(), 4);
        assert_eq!(packet.header_len(), 20);
        assert_eq!(packet.dscp_ecn(), 0);
        assert_eq!(packet.total_len(), 0x73);
        assert_eq!(packet.ident(), 0);
        assert!(packet.dont_fragment());
        assert!(!packet.more_fragments());
        assert_eq!(packet.frag_offset(), 0);
        assert!(!packet.is_fragment());
        assert_eq!(packet.ttl(), 64);
        assert_eq!(packet.protocol(), super::super::IPPROTO_UDP);
        assert_eq!(packet.checksum(), 0xb861);
        assert_eq!(packet.src_addr(), Ipv4Addr::new(192, 168, 0, 1));
        assert_eq!(packet.dst_addr(), Ipv4Addr::new(192, 168, 0, 199));
        assert!(packet.options().is_empty());
        assert_eq!(packet.payload().len(), 0x5f);
        assert!(packet.verify_checksum());
    }

    #[test]
    fn repr_round_trip() {
        let bytes = known_packet();
        let repr = Ipv4Repr::parse(&Ipv4Packet::new_unchecked(&bytes[..])).unwrap();
        assert_eq!(repr.payload_len, 0x5f);
        assert_eq!(repr.buffer_len(), 0x73);
        let mut out = vec![0xaa; 20];
        assert_eq!(repr.emit(&mut out), Ok(20));
        assert_eq!(&out[..], &bytes[..20]);
        let huge = Ipv4Repr {
            payload_len: 65_516,
            ..repr
        };
        assert_eq!(huge.emit(&mut out), Err(WireError::BadLength));
        assert_eq!(repr.emit(&mut out[..19]), Err(WireError::Truncated));
    }

    #[test]
    fn repr_parse_rejects_bad_checksum_and_fragments() {
        let mut bytes = known_packet();
        bytes[11] ^= 1;
        assert_eq!(
            Ipv4Repr::parse(&Ipv4Packet::new_unchecked(&bytes[..])),
            Err(WireError::BadChecksum)
        );
        bytes[11] ^= 1;
        let mut packet = Ipv4Packet::new_unchecked(&mut bytes[..]);
        packet.set_more_fragments(true);
        packet.fill_checksum();
        assert_eq!(Ipv4Repr::parse(&packet), Err(WireError::Unsupported));
    }

    #[test]
    fn validation_errors() {
        let bytes = known_packet();
        assert_eq!(
            Ipv4Packet::new_checked(&bytes[..19]),
            Err(WireError::Truncated)
        );
        let mut v6 = bytes.clone();
        v6[0] = 0x65;
        assert_eq!(Ipv4Packet::new_checked(&v6[..]), Err(WireError::BadVersion));
        let mut short_ihl = bytes.clone();
        short_ihl[0] = 0x44;
        assert_eq!(
            Ipv4Packet::new_checked(&short_ihl[..]),
            Err(WireError::BadHeaderLen)
        );
        let mut long_ihl = bytes.clone();
        long_ihl[0] = 0x4f;
        assert_eq!(
            Ipv4Packet::new_checked(&long_ihl[..40]),
            Err(WireError::BadHeaderLen)
        );
        // total_len smaller than the header.
        let mut small_total = bytes.clone();
        small_total[2..4].copy_from_slice(&19u16.to_be_bytes());
        assert_eq!(
            Ipv4Packet::new_checked(&small_total[..]),
            Err(WireError::BadTotalLen)
        );
        // total_len beyond the buffer.
        assert_eq!(
            Ipv4Packet::new_checked(&bytes[..0x72]),
            Err(WireError::BadTotalLen)
        );
        // Exactly a header with total_len 20: empty payload.
        let mut bare = bytes[..20].to_vec();
        bare[2..4].copy_from_slice(&20u16.to_be_bytes());
        assert!(Ipv4Packet::new_checked(&bare[..])
            .unwrap()
            .payload()
            .is_empty());
    }

    #[test]
    fn ethernet_padding_is_ignored() {
        let mut bytes = known_packet();
        bytes[2..4].copy_from_slice(&28u16.to_be_bytes());
        let mut packet = Ipv4Packet::new_unchecked(&mut bytes[..]);
        packet.fill_checksum();
        let packet = Ipv4Packet::new_checked(&bytes[..46]).unwrap();
        assert_eq!(packet.payload(), &[0, 1, 2, 3, 4, 5, 6, 7]);
    }

    #[test]
    fn options_every_ihl() {
        for ihl in 5..=15u8 {
            let header_len = usize::from(ihl) * 4;
            let mut bytes = vec![0u8; header_len + 4];
            bytes[0] = 0x40 | ihl;
            bytes[2..4].copy_from_slice(&((header_len + 4) as u16).to_be_bytes());
            for (i, b) in bytes[20..header_len].iter_mut().enumerate() {
                *b = 0x80 | i as u8;
            }
            bytes[header_len..].copy_from_slice(b"data");
            let mut packet = Ipv4Packet::new_checked(&mut bytes[..]).unwrap();
            packet.fill_checksum();
            assert!(packet.verify_checksum());
            assert_eq!(packet.header_len(), header_len);
            assert_eq!(packet.options().len(), header_len - 20);
            assert_eq!(packet.payload(), b"data");
            packet.rewrite_dst_addr(Ipv4Addr::new(10, 0, 0, 9));
            assert!(packet.verify_checksum());
        }
    }

    #[test]
    fn fragment_flags_and_offset() {
        let mut bytes = known_packet();
        let mut packet = Ipv4Packet::new_checked(&mut bytes[..]).unwrap();
        packet.set_dont_fragment(false);
        packet.set_more_fragments(true);
        assert!(packet.is_fragment());
        assert_eq!(packet.frag_offset(), 0);
        packet.set_more_fragments(false);
        packet.set_frag_offset(185);
        assert!(packet.is_fragment());
        assert!(!packet.more_fragments());
        assert_eq!(packet.frag_offset(), 185);
        assert_eq!(&packet.as_ref()[6..8], &[0x00, 0xb9]);
        packet.set_frag_offset(0x1fff);
        packet.set_dont_fragment(true);
        assert_eq!(&packet.as_ref()[6..8], &[0x5f, 0xff]);
        assert!(packet.dont_fragment());
        packet.set_frag_offset(0);
        assert!(!packet.is_fragment());
    }

    #[test]
    fn rewrites_keep_checksum_equal_to_recompute() {
        let mut bytes = known_packet();
        let mut packet = Ipv4Packet::new_checked(&mut bytes[..]).unwrap();
        packet.rewrite_src_addr(Ipv4Addr::new(203, 0, 113, 7));
        packet.rewrite_dst_addr(Ipv4Addr::new(10, 1, 2, 3));
        assert_eq!(packet.decrement_ttl(), 63);
        assert!(packet.verify_checksum());
        let incremental = packet.checksum();
        packet.fill_checksum();
        assert_eq!(packet.checksum(), incremental);
        assert_eq!(packet.src_addr(), Ipv4Addr::new(203, 0, 113, 7));
        assert_eq!(packet.dst_addr(), Ipv4Addr::new(10, 1, 2, 3));
    }

    #[test]
    fn ttl_one_and_zero() {
        let mut bytes = known_packet();
        let mut packet = Ipv4Packet::new_checked(&mut bytes[..]).unwrap();
        packet.set_ttl(1);
        packet.fill_checksum();
        assert_eq!(packet.decrement_ttl(), 0);
        assert_eq!(packet.ttl(), 0);
        assert!(packet.verify_checksum());
        let before = packet.checksum();
        assert_eq!(packet.decrement_ttl(), 0);
        assert_eq!(packet.ttl(), 0);
        assert_eq!(packet.checksum(), before);
        assert!(packet.verify_checksum());
    }

    #[test]
    fn getters_survive_setters_that_break_invariants() {
        let mut bytes = known_packet();
        let mut packet = Ipv4Packet::new_checked(&mut bytes[..]).unwrap();
        packet.set_total_len(0xffff);
        assert_eq!(packet.payload().len(), 0x5f);
        packet.set_total_len(3);
        assert!(packet.payload().is_empty());
        packet.set_header_len(60);
        assert_eq!(packet.options().len(), 40);
        assert!(packet.payload_mut().is_empty());
    }
}
