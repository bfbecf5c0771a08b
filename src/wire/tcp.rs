//! TCP segment headers (RFC 9293) with incremental checksum maintenance for NAT rewrites.

use core::fmt;
use core::ops::{BitOr, BitOrAssign};
use std::net::Ipv4Addr;

use super::checksum;
use super::{read_u16, read_u32, write_u16, write_u32, WireError, IPPROTO_TCP};

pub(crate) mod field {
    pub const SRC_PORT: usize = 0;
    pub const DST_PORT: usize = 2;
    pub const SEQ: usize = 4;
    pub const ACK: usize = 8;
    /// Data offset in the high nibble; the low nibble is reserved bits and NS.
    pub const DATA_OFFSET: usize = 12;
    pub const FLAGS: usize = 13;
    pub const WINDOW: usize = 14;
    pub const CHECKSUM: usize = 16;
    pub const URGENT: usize = 18;
}

/// Length of a header without options.
pub const MIN_HEADER_LEN: usize = 20;

/// The eight TCP flag bits of byte 13.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct TcpFlags(pub u8);

impl TcpFlags {
    pub const FIN: TcpFlags = TcpFlags(0x01);
    pub const SYN: TcpFlags = TcpFlags(0x02);
    pub const RST: TcpFlags = TcpFlags(0x04);
    pub const PSH: TcpFlags = TcpFlags(0x08);
    pub const ACK: TcpFlags = TcpFlags(0x10);
    pub const URG: TcpFlags = TcpFlags(0x20);
    pub const ECE: TcpFlags = TcpFlags(0x40);
    pub const CWR: TcpFlags = TcpFlags(0x80);
    pub const NONE: TcpFlags = TcpFlags(0);

    const NAMES: [(TcpFlags, &'static str); 8] = [
        (TcpFlags::FIN, "FIN"),
        (TcpFlags::SYN, "SYN"),
        (TcpFlags::RST, "RST"),
        (TcpFlags::PSH, "PSH"),
        (TcpFlags::ACK, "ACK"),
        (TcpFlags::URG, "URG"),
        (TcpFlags::ECE, "ECE"),
        (TcpFlags::CWR, "CWR"),
    ];

    /// True when every bit of `other` is set in `self`.
    #[inline]
    pub const fn contains(self, other: TcpFlags) -> bool {
        self.0 & other.0 == other.0
    }

    /// True when any bit of `other` is set in `self`.
    #[inline]
    pub const fn intersects(self, other: TcpFlags) -> bool {
        self.0 & other.0 != 0
    }

    #[inline]
    pub const fn fin(self) -> bool {
        self.contains(TcpFlags::FIN)
    }

    #[inline]
    pub const fn syn(self) -> bool {
        self.contains(TcpFlags::SYN)
    }

    #[inline]
    pub const fn rst(self) -> bool {
        self.contains(TcpFlags::RST)
    }

    #[inline]
    pub const fn ack(self) -> bool {
        self.contains(TcpFlags::ACK)
    }
}

impl BitOr for TcpFlags {
    type Output = TcpFlags;

    #[inline]
    fn bitor(self, rhs: TcpFlags) -> TcpFlags {
        TcpFlags(self.0 | rhs.0)
    }
}

impl BitOrAssign for TcpFlags {
    #[inline]
    fn bitor_assign(&mut self, rhs: TcpFlags) {
        self.0 |= rhs.0;
    }
}

impl fmt::Debug for TcpFlags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TcpFlags(")?;
        let mut first = true;
        for (flag, name) in TcpFlags::NAMES {
            if self.contains(flag) {
                if !first {
                    f.write_str(" | ")?;
                }
                f.write_str(name)?;
                first = false;
            }
        }
        if first {
            f.write_str("empty")?;
        }
        f.write_str(")")
    }
}

/// A view of a TCP segment; the buffer is exactly the segment (the IP payload).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpSegment<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> TcpSegment<T> {
    /// Wraps a buffer without validation; fixed-offset getters panic below 20 bytes.
    #[inline]
    pub const fn new_unchecked(buffer: T) -> Self {
        TcpSegment { buffer }
    }

    /// Wraps a buffer holding a TCP header whose data offset fits in the segment.
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let segment = Self::new_unchecked(buffer);
        segment.check()?;
        Ok(segment)
    }

    /// `Truncated` below 20 bytes, `BadDataOffset` for an offset below 5 or past the end,
    /// `BadLength` for a segment that cannot fit in an IPv4 packet (its pseudo-header length is
    /// 16 bits).
    pub fn check(&self) -> Result<(), WireError> {
        let data = self.buffer.as_ref();
        if data.len() < MIN_HEADER_LEN {
            return Err(WireError::Truncated);
        }
        if data.len() > usize::from(u16::MAX) {
            return Err(WireError::BadLength);
        }
        let header_len = self.header_len();
        if header_len < MIN_HEADER_LEN || header_len > data.len() {
            return Err(WireError::BadDataOffset);
        }
        Ok(())
    }

    #[inline]
    pub fn into_inner(self) -> T {
        self.buffer
    }

    #[inline]
    pub fn src_port(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::SRC_PORT)
    }

    #[inline]
    pub fn dst_port(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::DST_PORT)
    }

    #[inline]
    pub fn seq_number(&self) -> u32 {
        read_u32(self.buffer.as_ref(), field::SEQ)
    }

    #[inline]
    pub fn ack_number(&self) -> u32 {
        read_u32(self.buffer.as_ref(), field::ACK)
    }

    /// Header length in bytes (data offset * 4), 20..=60 on a checked segment.
    #[inline]
    pub fn header_len(&self) -> usize {
        usize::from(self.buffer.as_ref()[field::DATA_OFFSET] >> 4) * 4
    }

    #[inline]
    pub fn flags(&self) -> TcpFlags {
        TcpFlags(self.buffer.as_ref()[field::FLAGS])
    }

    #[inline]
    pub fn window(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::WINDOW)
    }

    #[inline]
    pub fn checksum(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::CHECKSUM)
    }

    #[inline]
    pub fn urgent(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::URGENT)
    }

    /// Option bytes (between the fixed header and the data offset); clamped to the buffer.
    #[inline]
    pub fn options(&self) -> &[u8] {
        let data = self.buffer.as_ref();
        let end = self.header_len().min(data.len());
        data.get(MIN_HEADER_LEN..end).unwrap_or(&[])
    }

    /// Everything after the header; clamped to the buffer.
    #[inline]
    pub fn payload(&self) -> &[u8] {
        let data = self.buffer.as_ref();
        &data[self.header_len().min(data.len())..]
    }

    /// True when the checksum over pseudo-header, header and payload is right.
    #[inline]
    pub fn verify_checksum(&self, src: Ipv4Addr, dst: Ipv4Addr) -> bool {
        let data = self.buffer.as_ref();
        let pseudo = checksum::pseudo_header_v4(src, dst, IPPROTO_TCP, data.len() as u16);
        checksum::fold(pseudo + checksum::sum(data)) == 0xffff
    }
}

impl<T: AsRef<[u8]>> AsRef<[u8]> for TcpSegment<T> {
    fn as_ref(&self) -> &[u8] {
        self.buffer.as_ref()
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> TcpSegment<T> {
    #[inline]
    pub fn set_src_port(&mut self, port: u16) {
        write_u16(self.buffer.as_mut(), field::SRC_PORT, port);
    }

    #[inline]
    pub fn set_dst_port(&mut self, port: u16) {
        write_u16(self.buffer.as_mut(), field::DST_PORT, port);
    }

    #[inline]
    pub fn set_seq_number(&mut self, value: u32) {
        write_u32(self.buffer.as_mut(), field::SEQ, value);
    }

    #[inline]
    pub fn set_ack_number(&mut self, value: u32) {
        write_u32(self.buffer.as_mut(), field::ACK, value);
    }

    /// Sets the data offset from a length in bytes (rounded down to words), keeping NS and the
    /// reserved bits.
    #[inline]
    pub fn set_header_len(&mut self, len: usize) {
        let byte = &mut self.buffer.as_mut()[field::DATA_OFFSET];
        *byte = (*byte & 0x0f) | (((len / 4) as u8) << 4);
    }

    #[inline]
    pub fn set_flags(&mut self, flags: TcpFlags) {
        self.buffer.as_mut()[field::FLAGS] = flags.0;
    }

    #[inline]
    pub fn set_window(&mut self, value: u16) {
        write_u16(self.buffer.as_mut(), field::WINDOW, value);
    }

    #[inline]
    pub fn set_checksum(&mut self, value: u16) {
        write_u16(self.buffer.as_mut(), field::CHECKSUM, value);
    }

    #[inline]
    pub fn set_urgent(&mut self, value: u16) {
        write_u16(self.buffer.as_mut(), field::URGENT, value);
    }

    /// Recomputes the checksum over the whole buffer as the segment from `src` to `dst`.
    #[inline]
    pub fn fill_checksum(&mut self, src: Ipv4Addr, dst: Ipv4Addr) {
        self.set_checksum(0);
        let data = self.buffer.as_ref();
        let pseudo = checksum::pseudo_header_v4(src, dst, IPPROTO_TCP, data.len() as u16);
        let csum = !checksum::fold(pseudo + checksum::sum(data));
        self.set_checksum(csum);
    }

    /// Rewrites the source port and patches the checksum (RFC 1624).
    #[inline]
    pub fn rewrite_src_port(&mut self, new: u16) {
        let old = self.src_port();
        self.set_src_port(new);
        let csum = checksum::update_u16(self.checksum(), old, new);
        self.set_checksum(csum);
    }

    /// Rewrites the destination port and patches the checksum.
    #[inline]
    pub fn rewrite_dst_port(&mut self, new: u16) {
        let old = self.dst_port();
        self.set_dst_port(new);
        let csum = checksum::update_u16(self.checksum(), old, new);
        self.set_checksum(csum);
    }

    /// Patches the checksum for a pseudo-header address that the IP layer rewrote.
    #[inline]
    pub fn update_checksum_for_addr(&mut self, old: Ipv4Addr, new: Ipv4Addr) {
        let csum = checksum::update_addr(self.checksum(), old, new);
        self.set_checksum(csum);
    }

    /// Option bytes, for MSS clamping; clamped to the buffer.
    #[inline]
    pub fn options_mut(&mut self) -> &mut [u8] {
        let header_len = self.header_len();
        let data = self.buffer.as_mut();
        let end = header_len.min(data.len());
        data.get_mut(MIN_HEADER_LEN..end).unwrap_or(&mut [])
    }

    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let header_len = self.header_len();
        let data = self.buffer.as_mut();
        let start = header_len.min(data.len());
        &mut data[start..]
    }
}

/// The fields of an option-less TCP header, for building segments (RSTs, tests, benchmarks).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TcpRepr {
    pub src_port: u16,
    pub dst_port: u16,
    pub seq_number: u32,
    pub ack_number: u32,
    pub flags: TcpFlags,
    pub window: u16,
    pub payload_len: usize,
}

impl TcpRepr {
    /// Reads a segment sent from `src` to `dst`, re-validating it and verifying its checksum.
    /// Options are skipped; `payload_len` is the data after them.
    pub fn parse<T: AsRef<[u8]>>(
        segment: &TcpSegment<T>,
        src: Ipv4Addr,
        dst: Ipv4Addr,
    ) -> Result<Self, WireError> {
        segment.check()?;
        if !segment.verify_checksum(src, dst) {
            return Err(WireError::BadChecksum);
        }
        Ok(TcpRepr {
            src_port: segment.src_port(),
            dst_port: segment.dst_port(),
            seq_number: segment.seq_number(),
            ack_number: segment.ack_number(),
            flags: segment.flags(),
            window: segment.window(),
            payload_len: segment.payload().len(),
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

    /// Writes header and `payload` at the start of `buf`, fills the checksum for `src -> dst`,
    /// and returns the segment length.
    ///
    /// `BadLength` if `payload.len() != self.payload_len` or the segment exceeds 65535 bytes,
    /// `Truncated` if `buf` is too short.
    pub fn emit(
        &self,
        buf: &mut [u8],
        src: Ipv4Addr,
        dst: Ipv4Addr,
        payload: &[u8],
    ) -> Result<usize, WireError> {
        if payload.len() != self.payload_len || self.buffer_len() > usize::from(u16::MAX) {
            return Err(WireError::BadLength);
        }
        let bytes = buf
            .get_mut(..self.buffer_len())
            .ok_or(WireError::Truncated)?;
        bytes[..MIN_HEADER_LEN].fill(0);
        bytes[MIN_HEADER_LEN..].copy_from_slice(payload);
        let mut segment = TcpSegment::new_unchecked(bytes);
        segment.set_src_port(self.src_port);
        segment.set_dst_port(self.dst_port);
        segment.set_seq_number(self.seq_number);
        segment.set_ack_number(self.ack_number);
        segment.set_header_len(MIN_HEADER_LEN);
        segment.set_flags(self.flags);
        segment.set_window(self.window);
        segment.fill_checksum(src, dst);
        Ok(self.buffer_len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SRC: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
    const DST: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 100);

    // 10.0.0.1:51234 -> 10.0.0.100:80 SYN, seq 0x12345678, window 64240, MSS 1460 option;
    // checksum 0x57b2 computed independently (Python, 16-bit words, RFC 1071).
    const SYN: [u8; 24] = [
        0xc8, 0x22, 0x00, 0x50, 0x12, 0x34, 0x56, 0x78, 0x00, 0x00, 0x00, 0x00, 0x60, 0x02, 0xfa,
        0xf0, 0x57, 0xb2, 0x00, 0x00, 0x02, 0x04, 0x05, 0xb4,
    ];

    #[test]
    fn parses_known_syn() {
        let segment = TcpSegment::new_checked(&SYN[..]).unwrap();
        assert_eq!(segment.src_port(), 51234);
        assert_eq!(segment.dst_port(), 80);
        assert_eq!(segment.seq_number(), 0x1234_5678);
        assert_eq!(segment.ack_number(), 0);
        assert_eq!(segment.header_len(), 24);
        assert_eq!(segment.flags(), TcpFlags::SYN);
        assert!(segment.flags().syn() && !segment.flags().ack());
        assert_eq!(segment.window(), 64240);
        assert_eq!(segment.checksum(), 0x57b2);
        assert_eq!(segment.urgent(), 0);
        assert_eq!(segment.options(), &[0x02, 0x04, 0x05, 0xb4]);
        assert!(segment.payload().is_empty());
        assert!(segment.verify_checksum(SRC, DST));
        assert!(!segment.verify_checksum(SRC, Ipv4Addr::new(10, 0, 0, 101)));
    }

    #[test]
    fn fill_checksum_reproduces_known_value() {
        let mut bytes = SYN;
        let mut segment = TcpSegment::new_checked(&mut bytes[..]).unwrap();
        segment.set_checksum(0xdead);
        segment.fill_checksum(SRC, DST);
        assert_eq!(segment.checksum(), 0x57b2);
    }

    #[test]
    fn nat_rewrites_match_recompute() {
        let new_dst = Ipv4Addr::new(192, 168, 10, 5);
        let mut bytes = SYN;
        let mut segment = TcpSegment::new_checked(&mut bytes[..]).unwrap();
        segment.rewrite_dst_port(8080);
        segment.update_checksum_for_addr(DST, new_dst);
        assert!(segment.verify_checksum(SRC, new_dst));
        let incremental = segment.checksum();
        segment.fill_checksum(SRC, new_dst);
        assert_eq!(segment.checksum(), incremental);
        segment.rewrite_src_port(1);
        assert!(segment.verify_checksum(SRC, new_dst));
        assert_eq!(segment.src_port(), 1);
    }

    #[test]
    fn rejects_bogus_data_offset_and_truncation() {
        assert_eq!(
            TcpSegment::new_checked(&SYN[..19]),
            Err(WireError::Truncated)
        );
        let mut bytes = SYN;
        bytes[12] = 0x40;
        assert_eq!(
            TcpSegment::new_checked(&bytes[..]),
            Err(WireError::BadDataOffset)
        );
        bytes[12] = 0x70;
        assert_eq!(
            TcpSegment::new_checked(&bytes[..]),
            Err(WireError::BadDataOffset)
        );
        bytes[12] = 0xf0;
        assert_eq!(
            TcpSegment::new_checked(&bytes[..]),
            Err(WireError::BadDataOffset)
        );
        bytes[12] = 0x50;
        let segment = TcpSegment::new_checked(&bytes[..]).unwrap();
        assert!(segment.options().is_empty());
        assert_eq!(segment.payload(), &[0x02, 0x04, 0x05, 0xb4]);
    }

    #[test]
    fn repr_round_trip_with_payload() {
        let repr = TcpRepr {
            src_port: 443,
            dst_port: 40000,
            seq_number: 7,
            ack_number: 9,
            flags: TcpFlags::PSH | TcpFlags::ACK,
            window: 512,
            payload_len: 5,
        };
        let mut buf = [0u8; 32];
        assert_eq!(repr.emit(&mut buf, DST, SRC, b"hello"), Ok(25));
        let segment = TcpSegment::new_checked(&buf[..25]).unwrap();
        assert!(segment.verify_checksum(DST, SRC));
        assert_eq!(segment.payload(), b"hello");
        assert_eq!(TcpRepr::parse(&segment, DST, SRC), Ok(repr));
        // (Swapping src and dst would still verify: the pseudo-header sum is symmetric.)
        assert_eq!(
            TcpRepr::parse(&segment, DST, DST),
            Err(WireError::BadChecksum)
        );
        assert_eq!(
            repr.emit(&mut buf, DST, SRC, b"hell"),
            Err(WireError::BadLength)
        );
        assert_eq!(
            repr.emit(&mut buf[..24], DST, SRC, b"hello"),
            Err(WireError::Truncated)
        );
        assert_eq!(repr.header_len(), 20);
    }

    #[test]
    fn flags_debug_and_ops() {
        let mut flags = TcpFlags::SYN | TcpFlags::ACK;
        assert_eq!(format!("{flags:?}"), "TcpFlags(SYN | ACK)");
        assert!(flags.contains(TcpFlags::SYN | TcpFlags::ACK));
        assert!(!flags.contains(TcpFlags::SYN | TcpFlags::FIN));
        assert!(flags.intersects(TcpFlags::SYN | TcpFlags::FIN));
        flags |= TcpFlags::FIN;
        assert!(flags.fin() && flags.syn() && flags.ack() && !flags.rst());
        assert_eq!(format!("{:?}", TcpFlags::NONE), "TcpFlags(empty)");
        assert_eq!(
            format!("{:?}", TcpFlags(0xff)),
            "TcpFlags(FIN | SYN | RST | PSH | ACK | URG | ECE | CWR)"
        );
    }
}
