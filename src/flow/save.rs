//! Flow-table snapshots, so a planned restart keeps established flows even
//! when the endpoint set changed meanwhile (S4c).
//!
//! Without them a restarted sluice re-chooses every mid-flow packet's
//! backend by Maglev over the *current* endpoint set: right when nothing
//! changed (S4a), wrong for the flows whose Maglev slot moved. So on a
//! planned stop each worker hands its flows over, the control thread writes
//! them to a file, and the next start gives every flow back to the worker
//! that owns it, pinned to the backend it had (by address and port, so the
//! endpoint indices of the new configuration do not matter). A flow whose
//! backend is gone from the new configuration keeps its entry and gets what
//! any such flow gets: a RST on its next packet (S4b).
//!
//! The file is binary and versioned: an 8-byte magic, a version and a
//! record count, then fixed-size big-endian records (44 bytes in version 2,
//! which added the flow's flags, so a restored connection keeps its
//! protection from eviction, and the next sequence number each side
//! expects; version 1 files, 32-byte records, are still read). Ages are stored
//! relative to the moment of saving (a worker clock does not survive the
//! process). A file that is short, long, of another version or holding an
//! impossible record is refused as a whole with an error that says why.

use std::io::Write as _;
use std::path::Path;

use super::key::{ip_proto, FlowKey};
use super::tcp::FlowState;

/// One saved flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SavedFlow {
    pub key: FlowKey,
    /// The backend the flow is pinned to, host order.
    pub backend_addr: u32,
    pub backend_port: u16,
    pub state: FlowState,
    /// Milliseconds since the flow was created, at the time of saving.
    pub age_ms: u32,
    /// Milliseconds since its last packet, at the time of saving.
    pub idle_ms: u32,
    /// The client's SYN sequence number (tells a SYN retransmission).
    pub client_isn: u32,
    /// The flow was assured (see `FlowEntry::ASSURED`).
    pub assured: bool,
    /// The next sequence numbers each side expects (see `FlowEntry`), so a
    /// restored flow can still be reset in-window (connection recycling).
    pub client_next: u32,
    pub backend_next: u32,
}

const MAGIC: &[u8; 8] = b"SLUICEFS";
const VERSION: u32 = 2;
const HEADER: usize = 8 + 4 + 8;
const RECORD: usize = 44;
/// Records of version 1 files (no flags).
const RECORD_V1: usize = 32;

/// Why a snapshot could not be read.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("reading {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("not a sluice flow snapshot (no SLUICEFS header)")]
    NotASnapshot,
    #[error("flow snapshot version {0}; this sluice reads versions 1 to {VERSION}")]
    Version(u32),
    #[error("flow snapshot says {count} flows but holds {bytes} bytes of records (each {record})")]
    Length {
        count: u64,
        bytes: usize,
        record: usize,
    },
    #[error("flow snapshot record {index}: {what}")]
    Record { index: usize, what: String },
}

impl SavedFlow {
    fn encode(&self, out: &mut Vec<u8>) {
        let k = &self.key;
        out.extend_from_slice(&k.client_addr.to_be_bytes());
        out.extend_from_slice(&k.vip_addr.to_be_bytes());
        out.extend_from_slice(&k.client_port.to_be_bytes());
        out.extend_from_slice(&k.vip_port.to_be_bytes());
        out.push(k.proto);
        out.push(self.state as u8);
        out.extend_from_slice(&self.backend_port.to_be_bytes());
        out.extend_from_slice(&self.backend_addr.to_be_bytes());
        out.extend_from_slice(&self.age_ms.to_be_bytes());
        out.extend_from_slice(&self.idle_ms.to_be_bytes());
        out.extend_from_slice(&self.client_isn.to_be_bytes());
        out.push(u8::from(self.assured));
        out.extend_from_slice(&[0; 3]);
        out.extend_from_slice(&self.client_next.to_be_bytes());
        out.extend_from_slice(&self.backend_next.to_be_bytes());
    }

    /// One record of a version-`version` file (`r` is as long as that
    /// version's records).
    fn decode(r: &[u8], version: u32, index: usize) -> Result<SavedFlow, SnapshotError> {
        let u32_at = |i: usize| u32::from_be_bytes([r[i], r[i + 1], r[i + 2], r[i + 3]]);
        let u16_at = |i: usize| u16::from_be_bytes([r[i], r[i + 1]]);
        let bad = |what: String| SnapshotError::Record { index, what };
        let proto = r[12];
        if proto != ip_proto::TCP && proto != ip_proto::UDP {
            return Err(bad(format!("protocol {proto} is neither TCP nor UDP")));
        }
        let state = *FlowState::ALL
            .get(usize::from(r[13]))
            .ok_or_else(|| bad(format!("state {} does not exist", r[13])))?;
        if state.is_udp() != (proto == ip_proto::UDP) {
            return Err(bad(format!("state {state:?} on protocol {proto}")));
        }
        let assured = match version {
            // Before flags were saved: what ran before the restart was
            // real traffic, so established and replied flows keep their
            // protection.
            1 => matches!(state, FlowState::Established | FlowState::UdpReplied),
            _ => match r[32] {
                0 => false,
                1 => true,
                f => return Err(bad(format!("flags {f:#04x} are not defined"))),
            },
        };
        Ok(SavedFlow {
            key: FlowKey {
                client_addr: u32_at(0),
                vip_addr: u32_at(4),
                client_port: u16_at(8),
                vip_port: u16_at(10),
                proto,
            },
            state,
            backend_port: u16_at(14),
            backend_addr: u32_at(16),
            age_ms: u32_at(20),
            idle_ms: u32_at(24),
            client_isn: u32_at(28),
            assured,
            client_next: if version == 1 { 0 } else { u32_at(36) },
            backend_next: if version == 1 { 0 } else { u32_at(40) },
        })
    }
}

/// The snapshot's bytes.
pub fn encode(flows: &[SavedFlow]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER + RECORD * flows.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&VERSION.to_be_bytes());
    out.extend_from_slice(&(flows.len() as u64).to_be_bytes());
    for f in flows {
        f.encode(&mut out);
    }
    out
}

/// The flows of a snapshot, or why it cannot be trusted.
pub fn decode(bytes: &[u8]) -> Result<Vec<SavedFlow>, SnapshotError> {
    let header = bytes.get(..HEADER).ok_or(SnapshotError::NotASnapshot)?;
    if &header[..8] != MAGIC {
        return Err(SnapshotError::NotASnapshot);
    }
    let version = u32::from_be_bytes([header[8], header[9], header[10], header[11]]);
    let record = match version {
        1 => RECORD_V1,
        VERSION => RECORD,
        v => return Err(SnapshotError::Version(v)),
    };
    let mut count = [0u8; 8];
    count.copy_from_slice(&header[12..20]);
    let count = u64::from_be_bytes(count);
    let body = &bytes[HEADER..];
    if body.len() % record != 0 || (body.len() / record) as u64 != count {
        return Err(SnapshotError::Length {
            count,
            bytes: body.len(),
            record,
        });
    }
    body.chunks_exact(record)
        .enumerate()
        .map(|(i, r)| SavedFlow::decode(r, version, i))
        .collect()
}

/// Writes `flows` to `path` atomically (a temporary file beside it, then a
/// rename), readable by the owner only.
pub fn save(path: &Path, flows: &[SavedFlow]) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = std::path::PathBuf::from(tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(&encode(flows))?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// Reads and removes the snapshot at `path` (a snapshot is used once: a
/// later crash must not bring back flows from before it). `Ok(None)` if
/// there is none.
pub fn take(path: &Path) -> Result<Option<Vec<SavedFlow>>, SnapshotError> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(SnapshotError::Io {
                path: path.display().to_string(),
                source,
            })
        }
    };
    let _ = std::fs::remove_file(path);
    decode(&bytes).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn flow(i: u32, state: FlowState) -> SavedFlow {
        SavedFlow {
            key: FlowKey {
                client_addr: 0x0ac8_0100 + i,
                vip_addr: 0xc612_0064,
                client_port: 40_000 + i as u16,
                vip_port: 80,
                proto: if state.is_udp() {
                    ip_proto::UDP
                } else {
                    ip_proto::TCP
                },
            },
            backend_addr: 0x0ac8_020b,
            backend_port: 8080,
            state,
            age_ms: 1000 * i,
            idle_ms: 10 * i,
            client_isn: 0xdead_0000 + i,
            assured: i % 2 == 0,
            client_next: 0x1000_0000 + i,
            backend_next: 0x2000_0000 + i,
        }
    }

    #[test]
    fn round_trips_every_state() {
        let flows: Vec<SavedFlow> = FlowState::ALL
            .iter()
            .enumerate()
            .map(|(i, &s)| flow(i as u32, s))
            .collect();
        let bytes = encode(&flows);
        assert_eq!(bytes.len(), HEADER + RECORD * flows.len());
        assert_eq!(decode(&bytes).unwrap(), flows);
        assert_eq!(decode(&encode(&[])).unwrap(), vec![]);
    }

    #[test]
    fn reads_version_1_files_trusting_established_flows() {
        let flows = [
            flow(1, FlowState::Established),
            flow(2, FlowState::SynRecv),
            flow(3, FlowState::UdpReplied),
        ];
        let mut v1 = Vec::new();
        v1.extend_from_slice(MAGIC);
        v1.extend_from_slice(&1u32.to_be_bytes());
        v1.extend_from_slice(&3u64.to_be_bytes());
        for f in &flows {
            let mut r = Vec::new();
            f.encode(&mut r);
            v1.extend_from_slice(&r[..RECORD_V1]);
        }
        let back = decode(&v1).unwrap();
        assert_eq!((back[0].client_next, back[0].backend_next), (0, 0));
        assert_eq!(
            back.iter().map(|f| f.assured).collect::<Vec<_>>(),
            [true, false, true]
        );
        assert_eq!(back[1].key, flows[1].key);
    }

    #[test]
    fn refuses_damaged_snapshots_with_reasons() {
        let good = encode(&[
            flow(1, FlowState::Established),
            flow(2, FlowState::TimeWait),
        ]);
        let err = |b: &[u8]| decode(b).unwrap_err().to_string();
        assert!(err(b"hello").contains("not a sluice flow snapshot"));
        let mut v = good.clone();
        v[11] = 9;
        assert!(err(&v).contains("version 9"));
        assert!(err(&good[..good.len() - 1]).contains("says 2 flows"));
        let mut extra = good.clone();
        extra.extend_from_slice(&[0; RECORD]);
        assert!(err(&extra).contains("says 2 flows"));
        let mut v = good.clone();
        v[HEADER + RECORD + 13] = 200;
        assert!(err(&v).contains("record 1: state 200"), "{}", err(&v));
        let mut v = good.clone();
        v[HEADER + 12] = 1;
        assert!(err(&v).contains("record 0: protocol 1"));
        let mut v = good.clone();
        v[HEADER + 13] = FlowState::UdpReplied as u8;
        assert!(err(&v).contains("on protocol 6"));
        let mut v = good;
        v[HEADER + RECORD + 32] = 0x42;
        assert!(err(&v).contains("record 1: flags 0x42"), "{}", err(&v));
    }

    #[test]
    fn save_then_take_uses_a_snapshot_once() {
        let dir = std::env::temp_dir().join(format!("sluice-save-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("flows");
        let flows = vec![flow(7, FlowState::Established)];
        save(&path, &flows).unwrap();
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(take(&path).unwrap(), Some(flows));
        assert_eq!(take(&path).unwrap(), None, "a snapshot is used once");
        let _ = std::fs::remove_dir_all(&dir);
    }

    proptest! {
        /// Arbitrary bytes never panic the reader.
        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = decode(&bytes);
            let mut with_header = encode(&[]);
            with_header.truncate(12);
            with_header.extend_from_slice(&bytes);
            let _ = decode(&with_header);
        }
    }
}
