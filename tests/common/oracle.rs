//! An independent reader of the frames sluice builds: byte offsets from the
//! RFCs and a from-scratch RFC 1071 checksum, sharing no code with
//! `sluice::wire`, so a frame sluice's own views would accept wrongly is
//! still caught. What a receiving Linux kernel checks first (lengths and
//! checksums) is what this checks.

/// The RFC 1071 one's-complement sum of `data` as big-endian 16-bit words
/// (an odd last byte padded with zero), folded to 16 bits.
pub fn ones_sum(data: &[u8]) -> u16 {
    let mut sum: u64 = 0;
    let mut chunks = data.chunks_exact(2);
    for w in &mut chunks {
        sum += u64::from(u16::from_be_bytes([w[0], w[1]]));
    }
    if let [last] = chunks.remainder() {
        sum += u64::from(u16::from_be_bytes([*last, 0]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

fn be16(b: &[u8], i: usize) -> u16 {
    u16::from_be_bytes([b[i], b[i + 1]])
}

fn be32(b: &[u8], i: usize) -> u32 {
    u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]])
}

/// What an IPv4 frame says, read independently; `Err` names the first
/// check a kernel would fail.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checked {
    pub dst_mac: [u8; 6],
    pub src_mac: [u8; 6],
    pub vlan: Option<u16>,
    /// Offset of the IP header.
    pub l3: usize,
    pub ihl: usize,
    pub total_len: usize,
    pub tos: u8,
    pub ttl: u8,
    pub proto: u8,
    pub src: [u8; 4],
    pub dst: [u8; 4],
    pub df: bool,
    /// The IP payload (exactly `total_len - ihl` bytes).
    pub l4: Vec<u8>,
}

/// Reads an Ethernet (optionally 802.1Q-tagged) IPv4 frame and verifies the
/// IP header checksum and, for TCP, UDP and ICMP, the L4 checksum over
/// exactly the IP payload.
pub fn check_ipv4(f: &[u8]) -> Result<Checked, String> {
    if f.len() < 14 {
        return Err(format!("frame of {} bytes", f.len()));
    }
    let mut dst_mac = [0; 6];
    dst_mac.copy_from_slice(&f[0..6]);
    let mut src_mac = [0; 6];
    src_mac.copy_from_slice(&f[6..12]);
    let (vlan, l3) = match be16(f, 12) {
        0x8100 => {
            if f.len() < 18 || be16(f, 16) != 0x0800 {
                return Err("tagged frame without IPv4 inside".into());
            }
            (Some(be16(f, 14) & 0x0fff), 18)
        }
        0x0800 => (None, 14),
        t => return Err(format!("ethertype {t:#06x}")),
    };
    let ip = &f[l3..];
    if ip.len() < 20 || ip[0] >> 4 != 4 {
        return Err("not an IPv4 header".into());
    }
    let ihl = usize::from(ip[0] & 0x0f) * 4;
    let total_len = usize::from(be16(ip, 2));
    if ihl < 20 || total_len < ihl || total_len > ip.len() {
        return Err(format!(
            "IP header {ihl} bytes, total length {total_len}, {} bytes present",
            ip.len()
        ));
    }
    if ones_sum(&ip[..ihl]) != 0xffff {
        return Err("IP header checksum wrong".into());
    }
    let proto = ip[9];
    let payload = &ip[ihl..total_len];
    let pseudo = |len: usize| {
        let mut p = Vec::with_capacity(12 + len);
        p.extend_from_slice(&ip[12..20]);
        p.extend_from_slice(&[0, proto]);
        p.extend_from_slice(&(len as u16).to_be_bytes());
        p
    };
    match proto {
        6 => {
            if payload.len() < 20 {
                return Err("TCP segment shorter than its header".into());
            }
            let doff = usize::from(payload[12] >> 4) * 4;
            if doff < 20 || doff > payload.len() {
                return Err(format!("TCP data offset {doff}"));
            }
            let mut all = pseudo(payload.len());
            all.extend_from_slice(payload);
            if ones_sum(&all) != 0xffff {
                return Err("TCP checksum wrong".into());
            }
        }
        17 => {
            if payload.len() < 8 || usize::from(be16(payload, 4)) != payload.len() {
                return Err("UDP length disagrees with IP".into());
            }
            if be16(payload, 6) != 0 {
                let mut all = pseudo(payload.len());
                all.extend_from_slice(payload);
                if ones_sum(&all) != 0xffff {
                    return Err("UDP checksum wrong".into());
                }
            }
        }
        1 => {
            if payload.len() < 8 {
                return Err("ICMP message shorter than its header".into());
            }
            if ones_sum(payload) != 0xffff {
                return Err("ICMP checksum wrong".into());
            }
        }
        _ => {}
    }
    let mut src = [0; 4];
    src.copy_from_slice(&ip[12..16]);
    let mut dst = [0; 4];
    dst.copy_from_slice(&ip[16..20]);
    Ok(Checked {
        dst_mac,
        src_mac,
        vlan,
        l3,
        ihl,
        total_len,
        tos: ip[1],
        ttl: ip[8],
        proto,
        src,
        dst,
        df: ip[6] & 0x40 != 0,
        l4: payload.to_vec(),
    })
}

/// The TCP fields of a checked segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tcp {
    pub sport: u16,
    pub dport: u16,
    pub seq: u32,
    pub ack: u32,
    pub header_len: usize,
    /// The byte holding the data offset, reserved bits and NS.
    pub offset_byte: u8,
    pub flags: u8,
    pub window: u16,
    pub urgent: u16,
    pub payload_len: usize,
}

pub fn tcp(c: &Checked) -> Tcp {
    let t = &c.l4;
    let header_len = usize::from(t[12] >> 4) * 4;
    Tcp {
        sport: be16(t, 0),
        dport: be16(t, 2),
        seq: be32(t, 4),
        ack: be32(t, 8),
        header_len,
        offset_byte: t[12],
        flags: t[13],
        window: be16(t, 14),
        urgent: be16(t, 18),
        payload_len: t.len() - header_len,
    }
}

/// Checks an ARP frame sluice built: Ethernet/IPv4 ARP (RFC 826), 28
/// bytes of ARP after a 14-byte header, and returns (op, sender MAC,
/// sender IP, target MAC, target IP).
#[allow(clippy::type_complexity)]
pub fn check_arp(f: &[u8]) -> Result<(u16, [u8; 6], [u8; 4], [u8; 6], [u8; 4]), String> {
    if f.len() < 42 || be16(f, 12) != 0x0806 {
        return Err("not an ARP frame".into());
    }
    let a = &f[14..];
    if be16(a, 0) != 1 || be16(a, 2) != 0x0800 || a[4] != 6 || a[5] != 4 {
        return Err("not Ethernet/IPv4 ARP".into());
    }
    let op = be16(a, 6);
    if op != 1 && op != 2 {
        return Err(format!("ARP op {op}"));
    }
    let mut sha = [0; 6];
    sha.copy_from_slice(&a[8..14]);
    let mut spa = [0; 4];
    spa.copy_from_slice(&a[14..18]);
    let mut tha = [0; 6];
    tha.copy_from_slice(&a[18..24]);
    let mut tpa = [0; 4];
    tpa.copy_from_slice(&a[24..28]);
    if f[6..12] != sha {
        return Err("Ethernet source is not the ARP sender".into());
    }
    Ok((op, sha, spa, tha, tpa))
}
