//! ICMPv4 messages (RFC 792), including the IP header embedded in error messages.
//!
//! A load balancer must translate ICMP errors about NATed flows, or path MTU discovery breaks:
//! the embedded header names the flow as the *other* side saw it, so its address and port are
//! rewritten along with every checksum that covers them.

use std::net::Ipv4Addr;

use super::checksum;
use super::{read_ipv4, read_u16, read_u32, write_u16, write_u32, WireError};
use super::{IPPROTO_TCP, IPPROTO_UDP};

/// Echo reply.
pub const ECHO_REPLY: u8 = 0;
/// Destination unreachable (see the `*_UNREACHABLE` and [`FRAG_NEEDED`] codes).
pub const DEST_UNREACHABLE: u8 = 3;
/// Source quench (deprecated, still an error carrying a header).
pub const SOURCE_QUENCH: u8 = 4;
/// Redirect.
pub const REDIRECT: u8 = 5;
/// Echo request.
pub const ECHO_REQUEST: u8 = 8;
/// Time exceeded (TTL expired in transit or reassembly time exceeded).
pub const TIME_EXCEEDED: u8 = 11;
/// Parameter problem.
pub const PARAM_PROBLEM: u8 = 12;

/// Destination unreachable code: network unreachable.
pub const NET_UNREACHABLE: u8 = 0;
/// Destination unreachable code: host unreachable.
pub const HOST_UNREACHABLE: u8 = 1;
/// Destination unreachable code: protocol unreachable.
pub const PROTO_UNREACHABLE: u8 = 2;
/// Destination unreachable code: port unreachable.
pub const PORT_UNREACHABLE: u8 = 3;
/// Destination unreachable code: fragmentation needed and DF set (path MTU discovery).
pub const FRAG_NEEDED: u8 = 4;
/// Time exceeded code: TTL expired in transit.
pub const TTL_EXPIRED: u8 = 0;

/// Length of the ICMP header (type, code, checksum, rest of header).
pub const HEADER_LEN: usize = 8;

/// How many bytes of the offending packet's L4 header an error must quote (RFC 792).
pub const EMBEDDED_L4_LEN: usize = 8;

mod field {
    pub const TYPE: usize = 0;
    pub const CODE: usize = 1;
    pub const CHECKSUM: usize = 2;
    pub const REST: usize = 4;
    /// Next-hop MTU of a fragmentation-needed message (RFC 1191), in the rest of header.
    pub const NEXT_HOP_MTU: usize = 6;
}

mod inner {
    pub const VER_IHL: usize = 0;
    pub const TOTAL_LEN: usize = 2;
    pub const FLAGS_FRAG: usize = 6;
    pub const PROTOCOL: usize = 9;
    pub const CHECKSUM: usize = 10;
    pub const SRC: usize = 12;
    pub const DST: usize = 16;
    /// Offsets after the inner IP header.
    pub const SRC_PORT: usize = 0;
    pub const DST_PORT: usize = 2;
    pub const UDP_CHECKSUM: usize = 6;
    pub const TCP_CHECKSUM: usize = 16;
}

/// True for message types that carry the offending packet's IP header.
#[inline]
pub const fn is_error_type(msg_type: u8) -> bool {
    matches!(
        msg_type,
        DEST_UNREACHABLE | SOURCE_QUENCH | REDIRECT | TIME_EXCEEDED | PARAM_PROBLEM
    )
}

/// A view of an ICMPv4 message; the buffer is exactly the message (the IP payload), because
/// the checksum covers all of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IcmpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> IcmpPacket<T> {
    /// Wraps a buffer without validation; getters panic below 8 bytes.
    #[inline]
    pub const fn new_unchecked(buffer: T) -> Self {
        IcmpPacket { buffer }
    }

    /// Wraps a buffer holding at least the 8-byte ICMP header.
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let packet = Self::new_unchecked(buffer);
        packet.check()?;
        Ok(packet)
    }

    #[inline]
    pub fn check(&self) -> Result<(), WireError> {
        if self.buffer.as_ref().len() < HEADER_LEN {
            return Err(WireError::Truncated);
        }
        Ok(())
    }

    #[inline]
    pub fn into_inner(self) -> T {
        self.buffer
    }

    #[inline]
    pub fn msg_type(&self) -> u8 {
        self.buffer.as_ref()[field::TYPE]
    }

    #[inline]
    pub fn code(&self) -> u8 {
        self.buffer.as_ref()[field::CODE]
    }

    #[inline]
    pub fn checksum(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::CHECKSUM)
    }

    /// Bytes 4..8: identifier and sequence of echoes, next-hop MTU of frag-needed, ...
    #[inline]
    pub fn rest_of_header(&self) -> u32 {
        read_u32(self.buffer.as_ref(), field::REST)
    }

    /// Identifier of an echo request or reply (high half of the rest of header).
    #[inline]
    pub fn echo_ident(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::REST)
    }

    /// Sequence number of an echo request or reply.
    #[inline]
    pub fn echo_seq(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::NEXT_HOP_MTU)
    }

    /// Next-hop MTU of a fragmentation-needed message (0 from pre-RFC 1191 routers).
    #[inline]
    pub fn next_hop_mtu(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::NEXT_HOP_MTU)
    }

    #[inline]
    pub fn payload(&self) -> &[u8] {
        self.buffer.as_ref().get(HEADER_LEN..).unwrap_or(&[])
    }

    /// True when the checksum over the whole message is right.
    #[inline]
    pub fn verify_checksum(&self) -> bool {
        checksum::fold(checksum::sum(self.buffer.as_ref())) == 0xffff
    }

    /// True for destination unreachable, source quench, redirect, time exceeded and parameter
    /// problem: the messages that quote an offending packet.
    #[inline]
    pub fn is_error(&self) -> bool {
        is_error_type(self.msg_type())
    }

    /// The quoted IP header and L4 bytes of an error message.
    ///
    /// `Unsupported` for messages that are not errors (an echo payload is not a header);
    /// otherwise the embedded view's own validation errors.
    #[inline]
    pub fn embedded(&self) -> Result<EmbeddedIpv4<&[u8]>, WireError> {
        if !self.is_error() {
            return Err(WireError::Unsupported);
        }
        EmbeddedIpv4::new_checked(self.payload())
    }
}

impl<T: AsRef<[u8]>> AsRef<[u8]> for IcmpPacket<T> {
    fn as_ref(&self) -> &[u8] {
        self.buffer.as_ref()
    }
}

/// Which end of the quoted flow a rewrite changes.
#[derive(Clone, Copy)]
enum EmbeddedEnd {
    Src,
    Dst,
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> IcmpPacket<T> {
    #[inline]
    pub fn set_msg_type(&mut self, value: u8) {
        self.buffer.as_mut()[field::TYPE] = value;
    }

    #[inline]
    pub fn set_code(&mut self, value: u8) {
        self.buffer.as_mut()[field::CODE] = value;
    }

    #[inline]
    pub fn set_checksum(&mut self, value: u16) {
        write_u16(self.buffer.as_mut(), field::CHECKSUM, value);
    }

    #[inline]
    pub fn set_rest_of_header(&mut self, value: u32) {
        write_u32(self.buffer.as_mut(), field::REST, value);
    }

    /// Recomputes the checksum over the whole message.
    #[inline]
    pub fn fill_checksum(&mut self) {
        self.set_checksum(0);
        let csum = checksum::checksum(self.buffer.as_ref());
        self.set_checksum(csum);
    }

    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        self.buffer
            .as_mut()
            .get_mut(HEADER_LEN..)
            .unwrap_or(&mut [])
    }

    /// Mutable access to the quoted header. Raw setters on it do not maintain any checksum:
    /// prefer [`rewrite_embedded_src`](Self::rewrite_embedded_src) and
    /// [`rewrite_embedded_dst`](Self::rewrite_embedded_dst).
    #[inline]
    pub fn embedded_mut(&mut self) -> Result<EmbeddedIpv4<&mut [u8]>, WireError> {
        if !self.is_error() {
            return Err(WireError::Unsupported);
        }
        EmbeddedIpv4::new_checked(self.payload_mut())
    }

    /// Rewrites the quoted packet's source address and port (e.g. VIP:vport -> backend:bport
    /// for a frag-needed about a reply the backend sent through us), keeping the quoted IP
    /// checksum, the quoted L4 checksum when present, and the ICMP checksum right.
    ///
    /// `Unsupported` when the message is not an error, the quoted protocol is neither TCP nor
    /// UDP, or the quoted packet is a non-first fragment (its ports are not there); nothing is
    /// changed in those cases. A quoted TCP checksum cut in half by the end of the quote is left
    /// as it is: its new value depends on the missing byte.
    /// (RFC 5508 asks NATs for exactly this translation of ICMP error payloads.)
    #[inline]
    pub fn rewrite_embedded_src(
        &mut self,
        new_addr: Ipv4Addr,
        new_port: u16,
    ) -> Result<(), WireError> {
        self.rewrite_embedded(EmbeddedEnd::Src, new_addr, new_port)
    }

    /// Rewrites the quoted packet's destination address and port (e.g. backend:bport ->
    /// VIP:vport for an error a backend's network sends about a client packet); see
    /// [`rewrite_embedded_src`](Self::rewrite_embedded_src).
    #[inline]
    pub fn rewrite_embedded_dst(
        &mut self,
        new_addr: Ipv4Addr,
        new_port: u16,
    ) -> Result<(), WireError> {
        self.rewrite_embedded(EmbeddedEnd::Dst, new_addr, new_port)
    }

    fn rewrite_embedded(
        &mut self,
        end: EmbeddedEnd,
        new_addr: Ipv4Addr,
        new_port: u16,
    ) -> Result<(), WireError> {
        let embedded = self.embedded()?;
        let protocol = embedded.protocol();
        if (protocol != IPPROTO_TCP && protocol != IPPROTO_UDP) || embedded.frag_offset() != 0 {
            return Err(WireError::Unsupported);
        }
        let l4 = HEADER_LEN + embedded.header_len();
        let (addr_at, port_at) = match end {
            EmbeddedEnd::Src => (HEADER_LEN + inner::SRC, l4 + inner::SRC_PORT),
            EmbeddedEnd::Dst => (HEADER_LEN + inner::DST, l4 + inner::DST_PORT),
        };
        // UDP's checksum is within the 8 quoted bytes; TCP's only when more was quoted.
        let l4_csum_at = match protocol {
            IPPROTO_UDP => l4 + inner::UDP_CHECKSUM,
            _ => l4 + inner::TCP_CHECKSUM,
        };

        let data = self.buffer.as_mut();
        // All offsets are even from the ICMP start (8-byte header, IHL in 4-byte words), so
        // every changed field is whole 16-bit words of the ICMP checksum's coverage.
        let mut icmp_delta = 0u32;

        let old_addr = read_u32(data, addr_at);
        let new_addr = u32::from(new_addr);
        write_u32(data, addr_at, new_addr);
        let addr_delta = checksum::delta_u32(old_addr, new_addr);
        icmp_delta += addr_delta;

        let ip_csum_at = HEADER_LEN + inner::CHECKSUM;
        let old_ip_csum = read_u16(data, ip_csum_at);
        let new_ip_csum = checksum::apply_delta(old_ip_csum, addr_delta);
        write_u16(data, ip_csum_at, new_ip_csum);
        icmp_delta += checksum::delta_u16(old_ip_csum, new_ip_csum);

        let old_port = read_u16(data, port_at);
        write_u16(data, port_at, new_port);
        let port_delta = checksum::delta_u16(old_port, new_port);
        icmp_delta += port_delta;

        if l4_csum_at + 2 <= data.len() {
            let old_l4_csum = read_u16(data, l4_csum_at);
            // A zero UDP checksum means "none" and stays zero.
            let present = protocol == IPPROTO_TCP || old_l4_csum != 0;
            if present {
                // The quoted L4 checksum covers the address through the pseudo-header.
                let mut new_l4_csum = checksum::apply_delta(old_l4_csum, addr_delta + port_delta);
                if protocol == IPPROTO_UDP && new_l4_csum == 0 {
                    new_l4_csum = 0xffff;
                }
                write_u16(data, l4_csum_at, new_l4_csum);
                icmp_delta += checksum::delta_u16(old_l4_csum, new_l4_csum);
            }
        }

        let icmp_csum = read_u16(data, field::CHECKSUM);
        write_u16(
            data,
            field::CHECKSUM,
            checksum::apply_delta(icmp_csum, icmp_delta),
        );
        Ok(())
    }
}

/// The offending packet quoted by an ICMP error: an IPv4 header and at least 8 bytes after it.
///
/// Validation is deliberately looser than [`Ipv4Packet`](super::ipv4::Ipv4Packet)'s: the quoted
/// packet is usually cut short, so its total length may exceed what is present.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EmbeddedIpv4<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> EmbeddedIpv4<T> {
    /// Wraps a buffer without validation; getters panic on a short buffer.
    #[inline]
    pub const fn new_unchecked(buffer: T) -> Self {
        EmbeddedIpv4 { buffer }
    }

    /// Validates version 4, IHL >= 5 and IHL * 4 + 8 <= the bytes present.
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let embedded = Self::new_unchecked(buffer);
        embedded.check()?;
        Ok(embedded)
    }

    pub fn check(&self) -> Result<(), WireError> {
        let data = self.buffer.as_ref();
        let Some(&ver_ihl) = data.first() else {
            return Err(WireError::Truncated);
        };
        if ver_ihl >> 4 != 4 {
            return Err(WireError::BadVersion);
        }
        let header_len = usize::from(ver_ihl & 0x0f) * 4;
        if header_len < super::ipv4::MIN_HEADER_LEN {
            return Err(WireError::BadHeaderLen);
        }
        if header_len + EMBEDDED_L4_LEN > data.len() {
            return Err(WireError::Truncated);
        }
        Ok(())
    }

    #[inline]
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// The quoted header's length in bytes (IHL * 4).
    #[inline]
    pub fn header_len(&self) -> usize {
        usize::from(self.buffer.as_ref()[inner::VER_IHL] & 0x0f) * 4
    }

    /// The quoted packet's total length as it was sent (usually more than is quoted).
    #[inline]
    pub fn total_len(&self) -> u16 {
        read_u16(self.buffer.as_ref(), inner::TOTAL_LEN)
    }

    /// Fragment offset (8-byte units) of the quoted packet; non-zero means no L4 header.
    #[inline]
    pub fn frag_offset(&self) -> u16 {
        read_u16(self.buffer.as_ref(), inner::FLAGS_FRAG) & 0x1fff
    }

    #[inline]
    pub fn protocol(&self) -> u8 {
        self.buffer.as_ref()[inner::PROTOCOL]
    }

    #[inline]
    pub fn checksum(&self) -> u16 {
        read_u16(self.buffer.as_ref(), inner::CHECKSUM)
    }

    #[inline]
    pub fn src_addr(&self) -> Ipv4Addr {
        read_ipv4(self.buffer.as_ref(), inner::SRC)
    }

    #[inline]
    pub fn dst_addr(&self) -> Ipv4Addr {
        read_ipv4(self.buffer.as_ref(), inner::DST)
    }

    /// First two bytes after the quoted header: the source port for TCP and UDP.
    #[inline]
    pub fn src_port(&self) -> u16 {
        read_u16(self.buffer.as_ref(), self.header_len() + inner::SRC_PORT)
    }

    /// Bytes 2..4 after the quoted header: the destination port for TCP and UDP.
    #[inline]
    pub fn dst_port(&self) -> u16 {
        read_u16(self.buffer.as_ref(), self.header_len() + inner::DST_PORT)
    }

    /// The quoted header bytes.
    #[inline]
    pub fn header(&self) -> &[u8] {
        let data = self.buffer.as_ref();
        &data[..self.header_len().min(data.len())]
    }

    /// The quoted bytes after the header (at least 8 on a checked view).
    #[inline]
    pub fn l4_bytes(&self) -> &[u8] {
        let data = self.buffer.as_ref();
        &data[self.header_len().min(data.len())..]
    }

    /// True when the quoted header's own checksum is right.
    #[inline]
    pub fn verify_checksum(&self) -> bool {
        checksum::fold(checksum::sum(self.header())) == 0xffff
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> EmbeddedIpv4<T> {
    #[inline]
    pub fn set_src_addr(&mut self, addr: Ipv4Addr) {
        write_u32(self.buffer.as_mut(), inner::SRC, u32::from(addr));
    }

    #[inline]
    pub fn set_dst_addr(&mut self, addr: Ipv4Addr) {
        write_u32(self.buffer.as_mut(), inner::DST, u32::from(addr));
    }

    #[inline]
    pub fn set_src_port(&mut self, port: u16) {
        let at = self.header_len() + inner::SRC_PORT;
        write_u16(self.buffer.as_mut(), at, port);
    }

    #[inline]
    pub fn set_dst_port(&mut self, port: u16) {
        let at = self.header_len() + inner::DST_PORT;
        write_u16(self.buffer.as_mut(), at, port);
    }

    #[inline]
    pub fn set_checksum(&mut self, value: u16) {
        write_u16(self.buffer.as_mut(), inner::CHECKSUM, value);
    }
}

/// The header fields of an ICMP message, for building one (errors, echo replies).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IcmpRepr {
    pub msg_type: u8,
    pub code: u8,
    pub rest_of_header: u32,
    pub payload_len: usize,
}

impl IcmpRepr {
    /// Reads a message, re-validating it and verifying its checksum.
    pub fn parse<T: AsRef<[u8]>>(packet: &IcmpPacket<T>) -> Result<Self, WireError> {
        packet.check()?;
        if !packet.verify_checksum() {
            return Err(WireError::BadChecksum);
        }
        Ok(IcmpRepr {
            msg_type: packet.msg_type(),
            code: packet.code(),
            rest_of_header: packet.rest_of_header(),
            payload_len: packet.payload().len(),
        })
    }

    /// Header plus payload.
    #[inline]
    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN + self.payload_len
    }

    /// Writes header and `payload` (for errors: the offending IP header and at least 8 bytes
    /// after it) at the start of `buf`, fills the checksum, and returns the message length.
    pub fn emit(&self, buf: &mut [u8], payload: &[u8]) -> Result<usize, WireError> {
        if payload.len() != self.payload_len {
            return Err(WireError::BadLength);
        }
        let bytes = buf
            .get_mut(..self.buffer_len())
            .ok_or(WireError::Truncated)?;
        bytes[HEADER_LEN..].copy_from_slice(payload);
        let mut packet = IcmpPacket::new_unchecked(bytes);
        packet.set_msg_type(self.msg_type);
        packet.set_code(self.code);
        packet.set_rest_of_header(self.rest_of_header);
        packet.fill_checksum();
        Ok(self.buffer_len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Frag-needed (MTU 1400) quoting 10.0.0.1:51234 -> 10.0.0.100:80 SYN (IP header + 8 bytes);
    // checksums (ICMP c664, inner IP 0a22) computed independently (Python, RFC 1071).
    const FRAG_NEEDED_TCP: [u8; 36] = [
        0x03, 0x04, 0xc6, 0x64, 0x00, 0x00, 0x05, 0x78, 0x45, 0x00, 0x00, 0x2c, 0x1c, 0x46, 0x40,
        0x00, 0x40, 0x06, 0x0a, 0x22, 0x0a, 0x00, 0x00, 0x01, 0x0a, 0x00, 0x00, 0x64, 0xc8, 0x22,
        0x00, 0x50, 0x12, 0x34, 0x56, 0x78,
    ];

    // The same message as it must look after rewriting the quoted destination to
    // 192.168.10.5:8080 (generated independently from a rebuilt SYN).
    const FRAG_NEEDED_TCP_REWRITTEN: [u8; 36] = [
        0x03, 0x04, 0xa7, 0x24, 0x00, 0x00, 0x05, 0x78, 0x45, 0x00, 0x00, 0x2c, 0x1c, 0x46, 0x40,
        0x00, 0x40, 0x06, 0x49, 0xd8, 0x0a, 0x00, 0x00, 0x01, 0xc0, 0xa8, 0x0a, 0x05, 0xc8, 0x22,
        0x1f, 0x90, 0x12, 0x34, 0x56, 0x78,
    ];

    // Port unreachable quoting the whole UDP datagram 192.168.1.10:5353 -> 8.8.8.8:53.
    const PORT_UNREACH_UDP: [u8; 48] = [
        0x03, 0x03, 0xce, 0xe4, 0x00, 0x00, 0x00, 0x00, 0x45, 0x00, 0x00, 0x28, 0xbe, 0xef, 0x00,
        0x00, 0x40, 0x11, 0xea, 0x13, 0xc0, 0xa8, 0x01, 0x0a, 0x08, 0x08, 0x08, 0x08, 0x14, 0xe9,
        0x00, 0x35, 0x00, 0x14, 0x88, 0xb8, 0x68, 0x65, 0x6c, 0x6c, 0x6f, 0x20, 0x73, 0x6c, 0x75,
        0x69, 0x63, 0x65,
    ];

    // ... after rewriting the quoted source to 10.9.9.9:4000 (inner UDP checksum 3ca2).
    const PORT_UNREACH_UDP_REWRITTEN: [u8; 48] = [
        0x03, 0x03, 0x20, 0x44, 0x00, 0x00, 0x00, 0x00, 0x45, 0x00, 0x00, 0x28, 0xbe, 0xef, 0x00,
        0x00, 0x40, 0x11, 0x98, 0xb4, 0x0a, 0x09, 0x09, 0x09, 0x08, 0x08, 0x08, 0x08, 0x0f, 0xa0,
        0x00, 0x35, 0x00, 0x14, 0x3c, 0xa2, 0x68, 0x65, 0x6c, 0x6c, 0x6f, 0x20, 0x73, 0x6c, 0x75,
        0x69, 0x63, 0x65,
    ];

    #[test]
    fn parses_frag_needed_with_quoted_tcp() {
        let packet = IcmpPacket::new_checked(&FRAG_NEEDED_TCP[..]).unwrap();
        assert_eq!(packet.msg_type(), DEST_UNREACHABLE);
        assert_eq!(packet.code(), FRAG_NEEDED);
        assert_eq!(packet.checksum(), 0xc664);
        assert_eq!(packet.rest_of_header(), 1400);
        assert_eq!(packet.next_hop_mtu(), 1400);
        assert!(packet.is_error());
        assert!(packet.verify_checksum());
        let embedded = packet.embedded().unwrap();
        assert_eq!(embedded.header_len(), 20);
        assert_eq!(embedded.total_len(), 44);
        assert_eq!(embedded.protocol(), IPPROTO_TCP);
        assert_eq!(embedded.src_addr(), Ipv4Addr::new(10, 0, 0, 1));
        assert_eq!(embedded.dst_addr(), Ipv4Addr::new(10, 0, 0, 100));
        assert_eq!(embedded.src_port(), 51234);
        assert_eq!(embedded.dst_port(), 80);
        assert_eq!(embedded.l4_bytes().len(), 8);
        assert!(embedded.verify_checksum());
    }

    #[test]
    fn rewrite_embedded_dst_matches_independent_bytes() {
        let mut bytes = FRAG_NEEDED_TCP;
        let mut packet = IcmpPacket::new_checked(&mut bytes[..]).unwrap();
        packet
            .rewrite_embedded_dst(Ipv4Addr::new(192, 168, 10, 5), 8080)
            .unwrap();
        assert_eq!(bytes, FRAG_NEEDED_TCP_REWRITTEN);
    }

    #[test]
    fn rewrite_embedded_src_updates_quoted_udp_checksum() {
        let mut bytes = PORT_UNREACH_UDP;
        let mut packet = IcmpPacket::new_checked(&mut bytes[..]).unwrap();
        assert!(packet.verify_checksum());
        packet
            .rewrite_embedded_src(Ipv4Addr::new(10, 9, 9, 9), 4000)
            .unwrap();
        assert_eq!(bytes, PORT_UNREACH_UDP_REWRITTEN);
    }

    #[test]
    fn rewrite_leaves_absent_udp_checksum_alone() {
        let mut bytes = PORT_UNREACH_UDP;
        bytes[34..36].fill(0);
        let mut packet = IcmpPacket::new_checked(&mut bytes[..]).unwrap();
        packet.fill_checksum();
        packet
            .rewrite_embedded_src(Ipv4Addr::new(10, 9, 9, 9), 4000)
            .unwrap();
        assert_eq!(&bytes[34..36], &[0, 0]);
        let packet = IcmpPacket::new_checked(&bytes[..]).unwrap();
        assert!(packet.verify_checksum());
        assert!(packet.embedded().unwrap().verify_checksum());
    }

    #[test]
    fn rewrite_refuses_what_it_cannot_translate() {
        // Not an error message.
        let mut echo = FRAG_NEEDED_TCP;
        echo[0] = ECHO_REQUEST;
        let mut packet = IcmpPacket::new_checked(&mut echo[..]).unwrap();
        assert!(!packet.is_error());
        assert_eq!(packet.embedded().unwrap_err(), WireError::Unsupported);
        assert_eq!(
            packet.rewrite_embedded_src(Ipv4Addr::LOCALHOST, 1),
            Err(WireError::Unsupported)
        );
        // Quoted ICMP (no ports).
        let mut quoted_icmp = FRAG_NEEDED_TCP;
        quoted_icmp[17] = super::super::IPPROTO_ICMP;
        let before = quoted_icmp;
        let mut packet = IcmpPacket::new_checked(&mut quoted_icmp[..]).unwrap();
        assert_eq!(
            packet.rewrite_embedded_dst(Ipv4Addr::LOCALHOST, 1),
            Err(WireError::Unsupported)
        );
        assert_eq!(quoted_icmp, before);
        // Quoted non-first fragment.
        let mut fragment = FRAG_NEEDED_TCP;
        fragment[15] = 0x10;
        let mut packet = IcmpPacket::new_checked(&mut fragment[..]).unwrap();
        assert_eq!(
            packet.rewrite_embedded_dst(Ipv4Addr::LOCALHOST, 1),
            Err(WireError::Unsupported)
        );
        // Quoted header cut before its 8 L4 bytes.
        let mut short = FRAG_NEEDED_TCP;
        let mut packet = IcmpPacket::new_checked(&mut short[..35]).unwrap();
        assert_eq!(packet.embedded_mut().unwrap_err(), WireError::Truncated);
        assert_eq!(
            packet.rewrite_embedded_dst(Ipv4Addr::LOCALHOST, 1),
            Err(WireError::Truncated)
        );
    }

    #[test]
    fn half_quoted_tcp_checksum_is_left_alone() {
        // Quote the SYN up to the first byte of its TCP checksum (20 + 17 bytes).
        let mut syn = [0u8; 44];
        syn[..28].copy_from_slice(&FRAG_NEEDED_TCP[8..]);
        syn[28..].copy_from_slice(&[
            0x00, 0x00, 0x00, 0x00, 0x60, 0x02, 0xfa, 0xf0, 0x57, 0xb2, 0x00, 0x00, 0x02, 0x04,
            0x05, 0xb4,
        ]);
        let mut message = [0u8; 8 + 37];
        message[..8].copy_from_slice(&FRAG_NEEDED_TCP[..8]);
        message[8..].copy_from_slice(&syn[..37]);
        let mut packet = IcmpPacket::new_checked(&mut message[..]).unwrap();
        packet.fill_checksum();
        packet
            .rewrite_embedded_dst(Ipv4Addr::new(192, 168, 10, 5), 8080)
            .unwrap();
        assert!(packet.verify_checksum());
        assert_eq!(message[8 + 36], 0x57);
    }

    #[test]
    fn embedded_validation() {
        assert_eq!(
            EmbeddedIpv4::new_checked(&[][..]),
            Err(WireError::Truncated)
        );
        assert_eq!(
            EmbeddedIpv4::new_checked(&FRAG_NEEDED_TCP[9..]),
            Err(WireError::BadVersion)
        );
        let mut bytes = FRAG_NEEDED_TCP;
        bytes[8] = 0x44;
        assert_eq!(
            EmbeddedIpv4::new_checked(&bytes[8..]),
            Err(WireError::BadHeaderLen)
        );
        bytes[8] = 0x46;
        assert_eq!(
            EmbeddedIpv4::new_checked(&bytes[8..]),
            Err(WireError::Truncated)
        );
        // Total length of the quoted packet beyond what is present is fine.
        assert!(EmbeddedIpv4::new_checked(&FRAG_NEEDED_TCP[8..]).is_ok());
        assert_eq!(
            IcmpPacket::new_checked(&FRAG_NEEDED_TCP[..7]),
            Err(WireError::Truncated)
        );
    }

    #[test]
    fn repr_round_trip_echo() {
        let repr = IcmpRepr {
            msg_type: ECHO_REQUEST,
            code: 0,
            rest_of_header: 0x1234_0001,
            payload_len: 4,
        };
        let mut buf = [0u8; 12];
        assert_eq!(repr.emit(&mut buf, b"ping"), Ok(12));
        let packet = IcmpPacket::new_checked(&buf[..]).unwrap();
        assert!(packet.verify_checksum());
        assert_eq!(packet.echo_ident(), 0x1234);
        assert_eq!(packet.echo_seq(), 1);
        assert_eq!(packet.payload(), b"ping");
        assert!(packet.embedded().is_err());
        assert_eq!(IcmpRepr::parse(&packet), Ok(repr));
        assert_eq!(
            repr.emit(&mut buf[..11], b"ping"),
            Err(WireError::Truncated)
        );
    }

    #[test]
    fn error_types() {
        for t in [
            DEST_UNREACHABLE,
            SOURCE_QUENCH,
            REDIRECT,
            TIME_EXCEEDED,
            PARAM_PROBLEM,
        ] {
            assert!(is_error_type(t));
        }
        for t in [ECHO_REPLY, ECHO_REQUEST, 13, 255] {
            assert!(!is_error_type(t));
        }
    }
}
