//! Ethernet II frames, with at most one 802.1Q VLAN tag.

use super::{read_u16, write_u16, MacAddr, WireError};

/// IPv4 payload.
pub const ETHERTYPE_IPV4: u16 = 0x0800;
/// ARP payload.
pub const ETHERTYPE_ARP: u16 = 0x0806;
/// 802.1Q VLAN tag (the outer ethertype of a tagged frame).
pub const ETHERTYPE_VLAN: u16 = 0x8100;
/// IPv6 payload (recognised so it can be counted, not parsed yet).
pub const ETHERTYPE_IPV6: u16 = 0x86dd;

pub(crate) mod field {
    use core::ops::Range;
    pub const DST: Range<usize> = 0..6;
    pub const SRC: Range<usize> = 6..12;
    pub const ETHERTYPE: usize = 12;
    /// Present only when `ETHERTYPE` is 0x8100.
    pub const VLAN_TCI: usize = 14;
    pub const VLAN_ETHERTYPE: usize = 16;
}

/// Length of an untagged Ethernet header.
pub const HEADER_LEN: usize = 14;
/// Length of an Ethernet header with one 802.1Q tag.
pub const VLAN_HEADER_LEN: usize = 18;

/// A view of an Ethernet II frame (without FCS) over a byte buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EthernetFrame<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> EthernetFrame<T> {
    /// Wraps a buffer without validation; getters panic if it is too short.
    #[inline]
    pub const fn new_unchecked(buffer: T) -> Self {
        EthernetFrame { buffer }
    }

    /// Wraps a buffer that holds at least a full header (18 bytes when VLAN-tagged).
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let frame = Self::new_unchecked(buffer);
        frame.check_len()?;
        Ok(frame)
    }

    /// Validates that the header, including a VLAN tag if announced, is present.
    #[inline]
    pub fn check_len(&self) -> Result<(), WireError> {
        let data = self.buffer.as_ref();
        if data.len() < HEADER_LEN {
            return Err(WireError::Truncated);
        }
        if read_u16(data, field::ETHERTYPE) == ETHERTYPE_VLAN && data.len() < VLAN_HEADER_LEN {
            return Err(WireError::Truncated);
        }
        Ok(())
    }

    #[inline]
    pub fn into_inner(self) -> T {
        self.buffer
    }

    #[inline]
    pub fn dst_addr(&self) -> MacAddr {
        let mut mac = [0u8; 6];
        mac.copy_from_slice(&self.buffer.as_ref()[field::DST]);
        MacAddr(mac)
    }

    #[inline]
    pub fn src_addr(&self) -> MacAddr {
        let mut mac = [0u8; 6];
        mac.copy_from_slice(&self.buffer.as_ref()[field::SRC]);
        MacAddr(mac)
    }

    #[inline]
    fn is_vlan_tagged(&self) -> bool {
        read_u16(self.buffer.as_ref(), field::ETHERTYPE) == ETHERTYPE_VLAN
    }

    /// The ethertype of the payload: the inner one when the frame carries an 802.1Q tag.
    ///
    /// A second tag (QinQ) is not unwrapped: its 0x8100 comes back here and the caller drops it.
    #[inline]
    pub fn ethertype(&self) -> u16 {
        let data = self.buffer.as_ref();
        let outer = read_u16(data, field::ETHERTYPE);
        if outer == ETHERTYPE_VLAN {
            read_u16(data, field::VLAN_ETHERTYPE)
        } else {
            outer
        }
    }

    /// The tag control information (PCP, DEI, VLAN id) of an 802.1Q-tagged frame.
    #[inline]
    pub fn vlan_tci(&self) -> Option<u16> {
        if self.is_vlan_tagged() {
            Some(read_u16(self.buffer.as_ref(), field::VLAN_TCI))
        } else {
            None
        }
    }

    /// The VLAN id (low 12 bits of the TCI) of a tagged frame.
    #[inline]
    pub fn vlan_id(&self) -> Option<u16> {
        self.vlan_tci().map(|tci| tci & 0x0fff)
    }

    /// 14, or 18 with a VLAN tag.
    #[inline]
    pub fn header_len(&self) -> usize {
        if self.is_vlan_tagged() {
            VLAN_HEADER_LEN
        } else {
            HEADER_LEN
        }
    }

    /// Everything after the header (may include trailing padding to the 60-byte minimum).
    #[inline]
    pub fn payload(&self) -> &[u8] {
        let header_len = self.header_len();
        &self.buffer.as_ref()[header_len..]
    }
}

impl<T: AsRef<[u8]>> AsRef<[u8]> for EthernetFrame<T> {
    fn as_ref(&self) -> &[u8] {
        self.buffer.as_ref()
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> EthernetFrame<T> {
    #[inline]
    pub fn set_dst_addr(&mut self, addr: MacAddr) {
        self.buffer.as_mut()[field::DST].copy_from_slice(&addr.0);
    }

    #[inline]
    pub fn set_src_addr(&mut self, addr: MacAddr) {
        self.buffer.as_mut()[field::SRC].copy_from_slice(&addr.0);
    }

    /// Sets the payload ethertype: the inner one on a tagged frame, so the tag stays.
    #[inline]
    pub fn set_ethertype(&mut self, ethertype: u16) {
        let at = if self.is_vlan_tagged() {
            field::VLAN_ETHERTYPE
        } else {
            field::ETHERTYPE
        };
        write_u16(self.buffer.as_mut(), at, ethertype);
    }

    /// Replaces the TCI of a tagged frame; returns false (and changes nothing) if untagged,
    /// because adding a tag would move the payload.
    #[inline]
    pub fn set_vlan_tci(&mut self, tci: u16) -> bool {
        if !self.is_vlan_tagged() {
            return false;
        }
        write_u16(self.buffer.as_mut(), field::VLAN_TCI, tci);
        true
    }

    /// Swaps source and destination MAC, as a reply or a hairpin needs.
    #[inline]
    pub fn swap_addrs(&mut self) {
        let (src, dst) = (self.src_addr(), self.dst_addr());
        self.set_src_addr(dst);
        self.set_dst_addr(src);
    }

    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let header_len = self.header_len();
        &mut self.buffer.as_mut()[header_len..]
    }
}

/// The fields of an Ethernet header, for building frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EthernetRepr {
    pub src_addr: MacAddr,
    pub dst_addr: MacAddr,
    /// The payload ethertype (inside the tag when `vlan_tci` is set).
    pub ethertype: u16,
    pub vlan_tci: Option<u16>,
}

impl EthernetRepr {
    /// Reads the header of a frame, re-validating its length (so an unchecked view is fine).
    pub fn parse<T: AsRef<[u8]>>(frame: &EthernetFrame<T>) -> Result<Self, WireError> {
        frame.check_len()?;
        Ok(EthernetRepr {
            src_addr: frame.src_addr(),
            dst_addr: frame.dst_addr(),
            ethertype: frame.ethertype(),
            vlan_tci: frame.vlan_tci(),
        })
    }

    /// 14, or 18 with a VLAN tag.
    #[inline]
    pub const fn header_len(&self) -> usize {
        if self.vlan_tci.is_some() {
            VLAN_HEADER_LEN
        } else {
            HEADER_LEN
        }
    }

    /// Writes the header at the start of `buf`; returns the header length.
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize, WireError> {
        let header_len = self.header_len();
        let header = buf.get_mut(..header_len).ok_or(WireError::Truncated)?;
        header[field::DST].copy_from_slice(&self.dst_addr.0);
        header[field::SRC].copy_from_slice(&self.src_addr.0);
        match self.vlan_tci {
            Some(tci) => {
                write_u16(header, field::ETHERTYPE, ETHERTYPE_VLAN);
                write_u16(header, field::VLAN_TCI, tci);
                write_u16(header, field::VLAN_ETHERTYPE, self.ethertype);
            }
            None => write_u16(header, field::ETHERTYPE, self.ethertype),
        }
        Ok(header_len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Untagged frame: 00:1b:21:3a:4f:10 <- 02:42:ac:11:00:02, IPv4, then 4 payload bytes.
    const UNTAGGED: [u8; 18] = [
        0x00, 0x1b, 0x21, 0x3a, 0x4f, 0x10, 0x02, 0x42, 0xac, 0x11, 0x00, 0x02, 0x08, 0x00, 0x45,
        0x00, 0x00, 0x14,
    ];

    // Same frame tagged with PCP 5, VLAN 100 (TCI 0xa064), carrying ARP.
    const TAGGED: [u8; 20] = [
        0x00, 0x1b, 0x21, 0x3a, 0x4f, 0x10, 0x02, 0x42, 0xac, 0x11, 0x00, 0x02, 0x81, 0x00, 0xa0,
        0x64, 0x08, 0x06, 0x00, 0x01,
    ];

    #[test]
    fn parses_untagged_frame() {
        let frame = EthernetFrame::new_checked(&UNTAGGED[..]).unwrap();
        assert_eq!(frame.dst_addr(), "00:1b:21:3a:4f:10".parse().unwrap());
        assert_eq!(frame.src_addr(), "02:42:ac:11:00:02".parse().unwrap());
        assert_eq!(frame.ethertype(), ETHERTYPE_IPV4);
        assert_eq!(frame.vlan_tci(), None);
        assert_eq!(frame.header_len(), 14);
        assert_eq!(frame.payload(), &[0x45, 0x00, 0x00, 0x14]);
    }

    #[test]
    fn parses_vlan_tagged_frame() {
        let frame = EthernetFrame::new_checked(&TAGGED[..]).unwrap();
        assert_eq!(frame.ethertype(), ETHERTYPE_ARP);
        assert_eq!(frame.vlan_tci(), Some(0xa064));
        assert_eq!(frame.vlan_id(), Some(100));
        assert_eq!(frame.header_len(), 18);
        assert_eq!(frame.payload(), &[0x00, 0x01]);
    }

    #[test]
    fn rejects_truncated_headers() {
        assert_eq!(
            EthernetFrame::new_checked(&UNTAGGED[..13]),
            Err(WireError::Truncated)
        );
        assert!(EthernetFrame::new_checked(&UNTAGGED[..14]).is_ok());
        // A tag is announced but its 4 bytes are not all there.
        assert_eq!(
            EthernetFrame::new_checked(&TAGGED[..17]),
            Err(WireError::Truncated)
        );
        assert!(EthernetFrame::new_checked(&TAGGED[..18])
            .unwrap()
            .payload()
            .is_empty());
    }

    #[test]
    fn repr_round_trip_tagged_and_untagged() {
        for (bytes, len) in [(&UNTAGGED[..], 14), (&TAGGED[..], 18)] {
            let repr = EthernetRepr::parse(&EthernetFrame::new_checked(bytes).unwrap()).unwrap();
            assert_eq!(repr.header_len(), len);
            let mut out = vec![0u8; len];
            assert_eq!(repr.emit(&mut out), Ok(len));
            assert_eq!(&out[..], &bytes[..len]);
            assert_eq!(repr.emit(&mut out[..len - 1]), Err(WireError::Truncated));
        }
    }

    #[test]
    fn setters_keep_the_tag() {
        let mut bytes = TAGGED;
        let mut frame = EthernetFrame::new_checked(&mut bytes[..]).unwrap();
        frame.swap_addrs();
        frame.set_ethertype(ETHERTYPE_IPV4);
        assert!(frame.set_vlan_tci(0x0065));
        frame.payload_mut()[0] = 0xee;
        assert_eq!(frame.src_addr(), "00:1b:21:3a:4f:10".parse().unwrap());
        assert_eq!(frame.dst_addr(), "02:42:ac:11:00:02".parse().unwrap());
        assert_eq!(frame.ethertype(), ETHERTYPE_IPV4);
        assert_eq!(frame.vlan_id(), Some(101));
        assert_eq!(bytes[18], 0xee);

        let mut plain = UNTAGGED;
        let mut frame = EthernetFrame::new_checked(&mut plain[..]).unwrap();
        assert!(!frame.set_vlan_tci(1));
        frame.set_ethertype(ETHERTYPE_ARP);
        assert_eq!(frame.ethertype(), ETHERTYPE_ARP);
    }
}
