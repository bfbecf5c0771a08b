//! UDP datagrams (RFC 768) with incremental checksum maintenance for NAT rewrites.
//!
//! A stored checksum of `0x0000` means "not computed" and is left alone by every rewrite. A
//! computed checksum of `0x0000` is stored as `0xffff` (its ones'-complement twin), by both full
//! computation and incremental updates, so they agree bit for bit.

use std::net::Ipv4Addr;

use super::checksum;
use super::{read_u16, write_u16, WireError, IPPROTO_UDP};

pub(crate) mod field {
    pub const SRC_PORT: usize = 0;
    pub const DST_PORT: usize = 2;
    pub const LENGTH: usize = 4;
    pub const CHECKSUM: usize = 6;
}

/// Length of the UDP header.
pub const HEADER_LEN: usize = 8;

/// The wire form of a computed checksum: `0x0000` would read as "no checksum".
#[inline(always)]
fn non_zero(csum: u16) -> u16 {
    if csum == 0 {
        0xffff
    } else {
        csum
    }
}

/// A view of a UDP datagram; the buffer starts at the UDP header and may run past the datagram
/// (the length field bounds it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UdpDatagram<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> UdpDatagram<T> {
    /// Wraps a buffer without validation; fixed-offset getters panic below 8 bytes.
    #[inline]
    pub const fn new_unchecked(buffer: T) -> Self {
        UdpDatagram { buffer }
    }

    /// Wraps a buffer holding a UDP header and the payload its length field announces.
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let datagram = Self::new_unchecked(buffer);
        datagram.check()?;
        Ok(datagram)
    }

    /// `Truncated` below 8 bytes or when the length field runs past the buffer; `BadLength`
    /// when the length field is below 8.
    pub fn check(&self) -> Result<(), WireError> {
        let data = self.buffer.as_ref();
        if data.len() < HEADER_LEN {
            return Err(WireError::Truncated);
        }
        let length = usize::from(self.length());
        if length < HEADER_LEN {
            return Err(WireError::BadLength);
        }
        if length > data.len() {
            return Err(WireError::Truncated);
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

    /// The length field: header plus payload.
    #[inline]
    pub fn length(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::LENGTH)
    }

    /// The stored checksum; `0` means none was computed.
    #[inline]
    pub fn checksum(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::CHECKSUM)
    }

    /// Header and payload as announced by the length field, clamped to the buffer.
    #[inline]
    fn datagram(&self) -> &[u8] {
        let data = self.buffer.as_ref();
        &data[..usize::from(self.length()).min(data.len())]
    }

    /// The payload (bounded by the length field, not by the buffer).
    #[inline]
    pub fn payload(&self) -> &[u8] {
        self.datagram().get(HEADER_LEN..).unwrap_or(&[])
    }

    /// True when the checksum is right or absent (`0`).
    #[inline]
    pub fn verify_checksum(&self, src: Ipv4Addr, dst: Ipv4Addr) -> bool {
        if self.checksum() == 0 {
            return true;
        }
        let pseudo = checksum::pseudo_header_v4(src, dst, IPPROTO_UDP, self.length());
        checksum::fold(pseudo + checksum::sum(self.datagram())) == 0xffff
    }
}

impl<T: AsRef<[u8]>> AsRef<[u8]> for UdpDatagram<T> {
    fn as_ref(&self) -> &[u8] {
        self.buffer.as_ref()
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> UdpDatagram<T> {
    #[inline]
    pub fn set_src_port(&mut self, port: u16) {
        write_u16(self.buffer.as_mut(), field::SRC_PORT, port);
    }

    #[inline]
    pub fn set_dst_port(&mut self, port: u16) {
        write_u16(self.buffer.as_mut(), field::DST_PORT, port);
    }

    #[inline]
    pub fn set_length(&mut self, value: u16) {
        write_u16(self.buffer.as_mut(), field::LENGTH, value);
    }

    #[inline]
    pub fn set_checksum(&mut self, value: u16) {
        write_u16(self.buffer.as_mut(), field::CHECKSUM, value);
    }

    /// Computes and stores the checksum for `src -> dst` (never stores `0x0000`).
    #[inline]
    pub fn fill_checksum(&mut self, src: Ipv4Addr, dst: Ipv4Addr) {
        self.set_checksum(0);
        let pseudo = checksum::pseudo_header_v4(src, dst, IPPROTO_UDP, self.length());
        let csum = !checksum::fold(pseudo + checksum::sum(self.datagram()));
        self.set_checksum(non_zero(csum));
    }

    /// Applies a checksum delta unless the datagram carries no checksum.
    #[inline(always)]
    fn apply_checksum_delta(&mut self, delta: u32) {
        let csum = self.checksum();
        if csum != 0 {
            self.set_checksum(non_zero(checksum::apply_delta(csum, delta)));
        }
    }

    /// Rewrites the source port and patches a present checksum (RFC 1624).
    #[inline]
    pub fn rewrite_src_port(&mut self, new: u16) {
        let old = self.src_port();
        self.set_src_port(new);
        self.apply_checksum_delta(checksum::delta_u16(old, new));
    }

    /// Rewrites the destination port and patches a present checksum.
    #[inline]
    pub fn rewrite_dst_port(&mut self, new: u16) {
        let old = self.dst_port();
        self.set_dst_port(new);
        self.apply_checksum_delta(checksum::delta_u16(old, new));
    }

    /// Patches a present checksum for a pseudo-header address that the IP layer rewrote.
    #[inline]
    pub fn update_checksum_for_addr(&mut self, old: Ipv4Addr, new: Ipv4Addr) {
        self.apply_checksum_delta(checksum::delta_u32(u32::from(old), u32::from(new)));
    }

    /// The payload (bounded by the length field).
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let length = usize::from(self.length());
        let data = self.buffer.as_mut();
        let end = length.min(data.len());
        data.get_mut(HEADER_LEN..end).unwrap_or(&mut [])
    }
}

/// The fields of a UDP header, for building datagrams.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct UdpRepr {
    pub src_port: u16,
    pub dst_port: u16,
    pub payload_len: usize,
}

impl UdpRepr {
    /// Reads a datagram sent from `src` to `dst`, re-validating it and verifying a present
    /// checksum.
    pub fn parse<T: AsRef<[u8]>>(
        datagram: &UdpDatagram<T>,
        src: Ipv4Addr,
        dst: Ipv4Addr,
    ) -> Result<Self, WireError> {
        datagram.check()?;
        if !datagram.verify_checksum(src, dst) {
            return Err(WireError::BadChecksum);
        }
        Ok(UdpRepr {
            src_port: datagram.src_port(),
            dst_port: datagram.dst_port(),
            payload_len: datagram.payload().len(),
        })
    }

    /// Always 8.
    #[inline]
    pub const fn header_len(&self) -> usize {
        HEADER_LEN
    }

    /// Header plus payload.
    #[inline]
    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN + self.payload_len
    }

    /// Writes header and `payload` at the start of `buf`, fills the checksum for `src -> dst`
    /// (never `0x0000`), and returns the datagram length.
    ///
    /// `BadLength` if `payload.len() != self.payload_len` or the datagram exceeds 65535 bytes,
    /// `Truncated` if `buf` is too short.
    pub fn emit(
        &self,
        buf: &mut [u8],
        src: Ipv4Addr,
        dst: Ipv4Addr,
        payload: &[u8],
    ) -> Result<usize, WireError> {
        if payload.len() != self.payload_len {
            return Err(WireError::BadLength);
        }
        let length = u16::try_from(self.buffer_len()).map_err(|_| WireError::BadLength)?;
        let bytes = buf
            .get_mut(..self.buffer_len())
            .ok_or(WireError::Truncated)?;
        bytes[HEADER_LEN..].copy_from_slice(payload);
        let mut datagram = UdpDatagram::new_unchecked(bytes);
        datagram.set_src_port(self.src_port);
        datagram.set_dst_port(self.dst_port);
        datagram.set_length(length);
        datagram.fill_checksum(src, dst);
        Ok(self.buffer_len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SRC: Ipv4Addr = Ipv4Addr::new(192, 168, 1, 10);
    const DST: Ipv4Addr = Ipv4Addr::new(8, 8, 8, 8);

    // 192.168.1.10:5353 -> 8.8.8.8:53, "hello sluice"; checksum 0x88b8 computed independently.
    const DATAGRAM: [u8; 20] = [
        0x14, 0xe9, 0x00, 0x35, 0x00, 0x14, 0x88, 0xb8, 0x68, 0x65, 0x6c, 0x6c, 0x6f, 0x20, 0x73,
        0x6c, 0x75, 0x69, 0x63, 0x65,
    ];

    #[test]
    fn parses_known_datagram() {
        let datagram = UdpDatagram::new_checked(&DATAGRAM[..]).unwrap();
        assert_eq!(datagram.src_port(), 5353);
        assert_eq!(datagram.dst_port(), 53);
        assert_eq!(datagram.length(), 20);
        assert_eq!(datagram.checksum(), 0x88b8);
        assert_eq!(datagram.payload(), b"hello sluice");
        assert!(datagram.verify_checksum(SRC, DST));
        assert!(!datagram.verify_checksum(DST, DST));
    }

    #[test]
    fn repr_round_trip() {
        let repr = UdpRepr::parse(&UdpDatagram::new_unchecked(&DATAGRAM[..]), SRC, DST).unwrap();
        assert_eq!(
            repr,
            UdpRepr {
                src_port: 5353,
                dst_port: 53,
                payload_len: 12
            }
        );
        let mut out = [0u8; 24];
        assert_eq!(repr.emit(&mut out, SRC, DST, b"hello sluice"), Ok(20));
        assert_eq!(&out[..20], &DATAGRAM[..]);
        assert_eq!(
            repr.emit(&mut out[..19], SRC, DST, b"hello sluice"),
            Err(WireError::Truncated)
        );
        assert_eq!(
            repr.emit(&mut out, SRC, DST, b"hello"),
            Err(WireError::BadLength)
        );
    }

    #[test]
    fn length_field_bounds_payload() {
        let mut padded = DATAGRAM.to_vec();
        padded.extend_from_slice(&[0; 6]);
        let datagram = UdpDatagram::new_checked(&padded[..]).unwrap();
        assert_eq!(datagram.payload(), b"hello sluice");
        assert!(datagram.verify_checksum(SRC, DST));
        assert_eq!(
            UdpDatagram::new_checked(&DATAGRAM[..7]),
            Err(WireError::Truncated)
        );
        assert_eq!(
            UdpDatagram::new_checked(&DATAGRAM[..19]),
            Err(WireError::Truncated)
        );
        let mut short = DATAGRAM;
        short[4..6].copy_from_slice(&7u16.to_be_bytes());
        assert_eq!(
            UdpDatagram::new_checked(&short[..]),
            Err(WireError::BadLength)
        );
        short[4..6].copy_from_slice(&8u16.to_be_bytes());
        assert!(UdpDatagram::new_checked(&short[..])
            .unwrap()
            .payload()
            .is_empty());
    }

    #[test]
    fn zero_checksum_means_none_and_stays_zero() {
        let mut bytes = DATAGRAM;
        let mut datagram = UdpDatagram::new_checked(&mut bytes[..]).unwrap();
        datagram.set_checksum(0);
        assert!(datagram.verify_checksum(SRC, DST));
        datagram.rewrite_dst_port(5300);
        datagram.rewrite_src_port(1);
        datagram.update_checksum_for_addr(DST, Ipv4Addr::new(10, 0, 0, 1));
        assert_eq!(datagram.checksum(), 0);
    }

    #[test]
    fn computed_zero_is_stored_as_ffff_by_fill_and_by_update() {
        // Find a destination port that makes the computed checksum 0x0000.
        let mut bytes = DATAGRAM;
        let mut datagram = UdpDatagram::new_checked(&mut bytes[..]).unwrap();
        let port = (0..=u16::MAX)
            .find(|&port| {
                datagram.set_dst_port(port);
                datagram.set_checksum(0);
                let pseudo = checksum::pseudo_header_v4(SRC, DST, IPPROTO_UDP, 20);
                !checksum::fold(pseudo + checksum::sum(datagram.as_ref())) == 0
            })
            .unwrap();
        datagram.set_dst_port(53);
        datagram.fill_checksum(SRC, DST);
        datagram.rewrite_dst_port(port);
        assert_eq!(datagram.checksum(), 0xffff);
        assert!(datagram.verify_checksum(SRC, DST));
        datagram.fill_checksum(SRC, DST);
        assert_eq!(datagram.checksum(), 0xffff);
        // And back again from the 0xffff form.
        datagram.rewrite_dst_port(53);
        assert_eq!(datagram.checksum(), 0x88b8);
    }

    #[test]
    fn nat_rewrites_match_recompute() {
        let backend = Ipv4Addr::new(10, 1, 0, 7);
        let mut bytes = DATAGRAM;
        let mut datagram = UdpDatagram::new_checked(&mut bytes[..]).unwrap();
        datagram.rewrite_dst_port(5353);
        datagram.update_checksum_for_addr(DST, backend);
        assert!(datagram.verify_checksum(SRC, backend));
        let incremental = datagram.checksum();
        datagram.fill_checksum(SRC, backend);
        assert_eq!(datagram.checksum(), incremental);
    }
}
