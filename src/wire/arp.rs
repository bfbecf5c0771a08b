//! ARP for Ethernet hardware addresses and IPv4 protocol addresses (RFC 826).
//!
//! Only that combination is accepted: anything else is `Unsupported`, so every field below has a
//! fixed offset and a checked packet is exactly 28 bytes of header.

use std::net::Ipv4Addr;

use super::{read_ipv4, read_u16, write_ipv4, write_u16, MacAddr, WireError};

/// Operation code of a request ("who has").
pub const ARP_REQUEST: u16 = 1;
/// Operation code of a reply ("is at").
pub const ARP_REPLY: u16 = 2;

/// Hardware type of Ethernet.
pub const HTYPE_ETHERNET: u16 = 1;
/// Protocol type of IPv4 (its ethertype).
pub const PTYPE_IPV4: u16 = 0x0800;

/// Length of an Ethernet/IPv4 ARP packet.
pub const PACKET_LEN: usize = 28;

mod field {
    use core::ops::Range;
    pub const HTYPE: usize = 0;
    pub const PTYPE: usize = 2;
    pub const HLEN: usize = 4;
    pub const PLEN: usize = 5;
    pub const OPER: usize = 6;
    pub const SHA: Range<usize> = 8..14;
    pub const SPA: usize = 14;
    pub const THA: Range<usize> = 18..24;
    pub const TPA: usize = 24;
}

/// A view of an Ethernet/IPv4 ARP packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> ArpPacket<T> {
    /// Wraps a buffer without validation; getters panic if it is shorter than 28 bytes.
    #[inline]
    pub const fn new_unchecked(buffer: T) -> Self {
        ArpPacket { buffer }
    }

    /// Wraps a buffer holding an Ethernet/IPv4 ARP packet (trailing padding is allowed).
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let packet = Self::new_unchecked(buffer);
        packet.check()?;
        Ok(packet)
    }

    /// `Truncated` below 28 bytes; `Unsupported` for other hardware or protocol types.
    pub fn check(&self) -> Result<(), WireError> {
        let data = self.buffer.as_ref();
        if data.len() < PACKET_LEN {
            return Err(WireError::Truncated);
        }
        if read_u16(data, field::HTYPE) != HTYPE_ETHERNET
            || read_u16(data, field::PTYPE) != PTYPE_IPV4
            || data[field::HLEN] != 6
            || data[field::PLEN] != 4
        {
            return Err(WireError::Unsupported);
        }
        Ok(())
    }

    #[inline]
    pub fn into_inner(self) -> T {
        self.buffer
    }

    #[inline]
    pub fn hardware_type(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::HTYPE)
    }

    #[inline]
    pub fn protocol_type(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::PTYPE)
    }

    #[inline]
    pub fn hardware_len(&self) -> u8 {
        self.buffer.as_ref()[field::HLEN]
    }

    #[inline]
    pub fn protocol_len(&self) -> u8 {
        self.buffer.as_ref()[field::PLEN]
    }

    /// [`ARP_REQUEST`], [`ARP_REPLY`] or another code the caller ignores.
    #[inline]
    pub fn operation(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::OPER)
    }

    #[inline]
    pub fn sender_hw_addr(&self) -> MacAddr {
        let data = self.buffer.as_ref();
        MacAddr([data[8], data[9], data[10], data[11], data[12], data[13]])
    }

    #[inline]
    pub fn sender_proto_addr(&self) -> Ipv4Addr {
        read_ipv4(self.buffer.as_ref(), field::SPA)
    }

    #[inline]
    pub fn target_hw_addr(&self) -> MacAddr {
        let data = self.buffer.as_ref();
        MacAddr([data[18], data[19], data[20], data[21], data[22], data[23]])
    }

    #[inline]
    pub fn target_proto_addr(&self) -> Ipv4Addr {
        read_ipv4(self.buffer.as_ref(), field::TPA)
    }
}

impl<T: AsRef<[u8]>> AsRef<[u8]> for ArpPacket<T> {
    fn as_ref(&self) -> &[u8] {
        self.buffer.as_ref()
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> ArpPacket<T> {
    #[inline]
    pub fn set_hardware_type(&mut self, value: u16) {
        write_u16(self.buffer.as_mut(), field::HTYPE, value);
    }

    #[inline]
    pub fn set_protocol_type(&mut self, value: u16) {
        write_u16(self.buffer.as_mut(), field::PTYPE, value);
    }

    #[inline]
    pub fn set_hardware_len(&mut self, value: u8) {
        self.buffer.as_mut()[field::HLEN] = value;
    }

    #[inline]
    pub fn set_protocol_len(&mut self, value: u8) {
        self.buffer.as_mut()[field::PLEN] = value;
    }

    #[inline]
    pub fn set_operation(&mut self, value: u16) {
        write_u16(self.buffer.as_mut(), field::OPER, value);
    }

    #[inline]
    pub fn set_sender_hw_addr(&mut self, addr: MacAddr) {
        self.buffer.as_mut()[field::SHA].copy_from_slice(&addr.0);
    }

    #[inline]
    pub fn set_sender_proto_addr(&mut self, addr: Ipv4Addr) {
        write_ipv4(self.buffer.as_mut(), field::SPA, addr);
    }

    #[inline]
    pub fn set_target_hw_addr(&mut self, addr: MacAddr) {
        self.buffer.as_mut()[field::THA].copy_from_slice(&addr.0);
    }

    #[inline]
    pub fn set_target_proto_addr(&mut self, addr: Ipv4Addr) {
        write_ipv4(self.buffer.as_mut(), field::TPA, addr);
    }
}

/// The fields of an Ethernet/IPv4 ARP packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ArpRepr {
    pub operation: u16,
    pub sender_hw_addr: MacAddr,
    pub sender_proto_addr: Ipv4Addr,
    pub target_hw_addr: MacAddr,
    pub target_proto_addr: Ipv4Addr,
}

impl ArpRepr {
    /// Reads a packet, re-validating it (so an unchecked view is fine).
    pub fn parse<T: AsRef<[u8]>>(packet: &ArpPacket<T>) -> Result<Self, WireError> {
        packet.check()?;
        Ok(ArpRepr {
            operation: packet.operation(),
            sender_hw_addr: packet.sender_hw_addr(),
            sender_proto_addr: packet.sender_proto_addr(),
            target_hw_addr: packet.target_hw_addr(),
            target_proto_addr: packet.target_proto_addr(),
        })
    }

    /// Always 28.
    #[inline]
    pub const fn buffer_len(&self) -> usize {
        PACKET_LEN
    }

    /// The reply a host owning `target_proto_addr` at `our_mac` sends to this request.
    pub fn reply(&self, our_mac: MacAddr) -> ArpRepr {
        ArpRepr {
            operation: ARP_REPLY,
            sender_hw_addr: our_mac,
            sender_proto_addr: self.target_proto_addr,
            target_hw_addr: self.sender_hw_addr,
            target_proto_addr: self.sender_proto_addr,
        }
    }

    /// Writes the 28-byte packet at the start of `buf`; returns 28.
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize, WireError> {
        let bytes = buf.get_mut(..PACKET_LEN).ok_or(WireError::Truncated)?;
        let mut packet = ArpPacket::new_unchecked(bytes);
        packet.set_hardware_type(HTYPE_ETHERNET);
        packet.set_protocol_type(PTYPE_IPV4);
        packet.set_hardware_len(6);
        packet.set_protocol_len(4);
        packet.set_operation(self.operation);
        packet.set_sender_hw_addr(self.sender_hw_addr);
        packet.set_sender_proto_addr(self.sender_proto_addr);
        packet.set_target_hw_addr(self.target_hw_addr);
        packet.set_target_proto_addr(self.target_proto_addr);
        Ok(PACKET_LEN)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // "Who has 192.168.1.1? Tell 192.168.1.100" from 00:0c:29:3e:5b:7a, as captured.
    const REQUEST: [u8; 28] = [
        0x00, 0x01, 0x08, 0x00, 0x06, 0x04, 0x00, 0x01, 0x00, 0x0c, 0x29, 0x3e, 0x5b, 0x7a, 0xc0,
        0xa8, 0x01, 0x64, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xc0, 0xa8, 0x01, 0x01,
    ];

    #[test]
    fn parses_request() {
        let packet = ArpPacket::new_checked(&REQUEST[..]).unwrap();
        assert_eq!(packet.operation(), ARP_REQUEST);
        assert_eq!(
            packet.sender_hw_addr(),
            "00:0c:29:3e:5b:7a".parse().unwrap()
        );
        assert_eq!(packet.sender_proto_addr(), Ipv4Addr::new(192, 168, 1, 100));
        assert_eq!(packet.target_hw_addr(), MacAddr::ZERO);
        assert_eq!(packet.target_proto_addr(), Ipv4Addr::new(192, 168, 1, 1));
    }

    #[test]
    fn repr_round_trip_and_reply() {
        let repr = ArpRepr::parse(&ArpPacket::new_unchecked(&REQUEST[..])).unwrap();
        let mut out = [0u8; 28];
        assert_eq!(repr.emit(&mut out), Ok(28));
        assert_eq!(out, REQUEST);

        let ours: MacAddr = "02:00:00:00:00:01".parse().unwrap();
        let reply = repr.reply(ours);
        reply.emit(&mut out).unwrap();
        let packet = ArpPacket::new_checked(&out[..]).unwrap();
        assert_eq!(packet.operation(), ARP_REPLY);
        assert_eq!(packet.sender_hw_addr(), ours);
        assert_eq!(packet.sender_proto_addr(), Ipv4Addr::new(192, 168, 1, 1));
        assert_eq!(
            packet.target_hw_addr(),
            "00:0c:29:3e:5b:7a".parse().unwrap()
        );
        assert_eq!(packet.target_proto_addr(), Ipv4Addr::new(192, 168, 1, 100));
        assert_eq!(reply.emit(&mut out[..27]), Err(WireError::Truncated));
    }

    #[test]
    fn rejects_truncated_and_foreign_types() {
        assert_eq!(
            ArpPacket::new_checked(&REQUEST[..27]),
            Err(WireError::Truncated)
        );
        let mut padded = [0u8; 46];
        padded[..28].copy_from_slice(&REQUEST);
        assert!(ArpPacket::new_checked(&padded[..]).is_ok());
        for (at, value) in [(1, 6u8), (2, 0x86), (4, 8), (5, 16)] {
            let mut bytes = REQUEST;
            bytes[at] = value;
            assert_eq!(
                ArpPacket::new_checked(&bytes[..]),
                Err(WireError::Unsupported),
                "{at}"
            );
        }
    }
}
