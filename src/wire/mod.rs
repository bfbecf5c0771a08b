//! Zero-copy packet views (Ethernet, ARP, IPv4, TCP, UDP, ICMP) and checksums.
//!
//! Every protocol has two faces:
//! - a view (`EthernetFrame<T>`, `Ipv4Packet<T>`, ...) over any `T: AsRef<[u8]>`, with
//!   `new_unchecked` (getters may panic on a short buffer) and `new_checked` (validates, after
//!   which no getter panics); setters exist when `T: AsMut<[u8]>` too. The data path uses views
//!   only: one parse, in-place rewrites, incremental checksums, no allocation.
//! - a plain `Repr` struct with `parse` and `emit`, for building packets off the hot path
//!   (replies, tests, the benchmark generator).
//!
//! Views never name a backend's buffer type, so parser tests need no NIC.
//!
//! Checksum representation: full computations produce the RFC 1071 value `!fold(sum)`, which is
//! never `0xffff` for data that is not all zero (every header here has a non-zero word), and the
//! RFC 1624 eqn. 3 updates produce the same representation, so an incrementally updated checksum
//! is bit-identical to a full recomputation. UDP alone maps a computed `0x0000` to `0xffff`,
//! because `0x0000` on the wire means "no checksum" (RFC 768).

use core::fmt;
use core::str::FromStr;

pub mod arp;
pub mod checksum;
pub mod ethernet;
pub mod fixed;
pub mod icmp;
pub mod ipv4;
pub mod tcp;
pub mod udp;

/// IP protocol number of ICMP (for IPv4).
pub const IPPROTO_ICMP: u8 = 1;
/// IP protocol number of TCP.
pub const IPPROTO_TCP: u8 = 6;
/// IP protocol number of UDP.
pub const IPPROTO_UDP: u8 = 17;

/// Why a buffer is not a valid packet of the expected kind.
///
/// Small and `Copy` so that the data path can count drops by reason without allocation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
pub enum WireError {
    /// The buffer ends before the header (or the part of the payload the header announces) does.
    #[error("packet truncated: the buffer is shorter than the header or the length it announces")]
    Truncated,
    /// The IP version nibble is not 4.
    #[error("bad IP version: expected 4 in the version nibble")]
    BadVersion,
    /// The IPv4 IHL is below 5 words or beyond the buffer.
    #[error("bad IPv4 header length: IHL must be at least 5 and fit in the buffer")]
    BadHeaderLen,
    /// The IPv4 total length is smaller than the header or larger than the buffer.
    #[error("bad IPv4 total length: must cover the header and not exceed the buffer")]
    BadTotalLen,
    /// The TCP data offset is below 5 words or beyond the segment.
    #[error("bad TCP data offset: must be at least 5 and fit in the segment")]
    BadDataOffset,
    /// A length field (UDP length, segment size) is inconsistent with the header or the buffer.
    #[error("bad length field: smaller than the header or larger than the protocol allows")]
    BadLength,
    /// A checksum does not verify (reported by `Repr::parse`, never by the views).
    #[error("bad checksum: the stored checksum does not match the contents")]
    BadChecksum,
    /// A well-formed packet of a kind this module does not handle (e.g. ARP for non-Ethernet or
    /// non-IPv4 addresses, an ICMP message that carries no embedded IP header).
    #[error("unsupported packet: valid, but of a type or variant sluice does not handle")]
    Unsupported,
}

/// An Ethernet (EUI-48) MAC address.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    /// `ff:ff:ff:ff:ff:ff`.
    pub const BROADCAST: MacAddr = MacAddr([0xff; 6]);
    /// `00:00:00:00:00:00`, e.g. the unknown target of an ARP request.
    pub const ZERO: MacAddr = MacAddr([0; 6]);

    /// Reads an address from the first 6 bytes of `bytes`; `None` if there are fewer.
    #[inline]
    pub fn from_bytes(bytes: &[u8]) -> Option<MacAddr> {
        let octets: [u8; 6] = bytes.get(..6)?.try_into().ok()?;
        Some(MacAddr(octets))
    }

    /// The six octets in wire order.
    #[inline]
    pub const fn octets(&self) -> [u8; 6] {
        self.0
    }

    #[inline]
    pub fn is_broadcast(&self) -> bool {
        self.0 == [0xff; 6]
    }

    /// True for group addresses (I/G bit set), which includes broadcast.
    #[inline]
    pub fn is_multicast(&self) -> bool {
        self.0[0] & 0x01 != 0
    }

    /// True for individual (unicast) addresses.
    #[inline]
    pub fn is_unicast(&self) -> bool {
        !self.is_multicast()
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

impl fmt::Debug for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MacAddr({self})")
    }
}

/// Why a string is not a MAC address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid MAC address: expected six two-digit hex octets separated by ':' (aa:bb:cc:dd:ee:ff)"
)]
pub struct ParseMacAddrError;

impl FromStr for MacAddr {
    type Err = ParseMacAddrError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut octets = [0u8; 6];
        let mut parts = s.split(':');
        for octet in octets.iter_mut() {
            let part = parts.next().ok_or(ParseMacAddrError)?;
            // from_str_radix accepts a leading '+', which is not part of the notation.
            if part.len() != 2 || !part.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(ParseMacAddrError);
            }
            *octet = u8::from_str_radix(part, 16).map_err(|_| ParseMacAddrError)?;
        }
        if parts.next().is_some() {
            return Err(ParseMacAddrError);
        }
        Ok(MacAddr(octets))
    }
}

/// Big-endian field access shared by the views. Callers index with constant ranges on checked
/// buffers, so the bounds checks fold away or are the only guard left on unchecked ones.
#[inline(always)]
pub(crate) fn read_u16(data: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([data[at], data[at + 1]])
}

#[inline(always)]
pub(crate) fn read_u32(data: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([data[at], data[at + 1], data[at + 2], data[at + 3]])
}

#[inline(always)]
pub(crate) fn write_u16(data: &mut [u8], at: usize, value: u16) {
    data[at..at + 2].copy_from_slice(&value.to_be_bytes());
}

#[inline(always)]
pub(crate) fn write_u32(data: &mut [u8], at: usize, value: u32) {
    data[at..at + 4].copy_from_slice(&value.to_be_bytes());
}

#[inline(always)]
pub(crate) fn read_ipv4(data: &[u8], at: usize) -> std::net::Ipv4Addr {
    std::net::Ipv4Addr::from(read_u32(data, at))
}

#[inline(always)]
pub(crate) fn write_ipv4(data: &mut [u8], at: usize, addr: std::net::Ipv4Addr) {
    data[at..at + 4].copy_from_slice(&addr.octets());
}

/// MAC addresses appear in configuration and control replies as
/// `aa:bb:cc:dd:ee:ff` strings.
impl serde::Serialize for MacAddr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for MacAddr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<MacAddr, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_display_and_parse_round_trip() {
        let mac = MacAddr([0x02, 0x00, 0x5e, 0x10, 0xab, 0xff]);
        assert_eq!(mac.to_string(), "02:00:5e:10:ab:ff");
        assert_eq!("02:00:5e:10:ab:ff".parse::<MacAddr>(), Ok(mac));
        assert_eq!("02:00:5E:10:AB:FF".parse::<MacAddr>(), Ok(mac));
        assert_eq!(format!("{mac:?}"), "MacAddr(02:00:5e:10:ab:ff)");
    }

    #[test]
    fn mac_parse_rejects_malformed() {
        for bad in [
            "",
            "02:00:5e:10:ab",
            "02:00:5e:10:ab:ff:00",
            "2:00:5e:10:ab:ff",
            "02:00:5e:10:ab:fg",
            "+2:00:5e:10:ab:ff",
            "02-00-5e-10-ab-ff",
            "02:00:5e:10:ab:",
        ] {
            assert_eq!(bad.parse::<MacAddr>(), Err(ParseMacAddrError), "{bad:?}");
        }
    }

    #[test]
    fn mac_classes() {
        assert!(MacAddr::BROADCAST.is_broadcast());
        assert!(MacAddr::BROADCAST.is_multicast());
        assert!(MacAddr([0x01, 0x00, 0x5e, 0, 0, 1]).is_multicast());
        assert!(!MacAddr([0x01, 0x00, 0x5e, 0, 0, 1]).is_broadcast());
        assert!(MacAddr([0x02, 0, 0, 0, 0, 1]).is_unicast());
        assert_eq!(MacAddr::from_bytes(&[1, 2, 3, 4, 5]), None);
        assert_eq!(
            MacAddr::from_bytes(&[1, 2, 3, 4, 5, 6, 7]),
            Some(MacAddr([1, 2, 3, 4, 5, 6]))
        );
    }

    #[test]
    fn errors_explain_themselves() {
        assert!(WireError::Truncated.to_string().contains("truncated"));
        assert!(WireError::BadDataOffset.to_string().contains("data offset"));
    }
}
