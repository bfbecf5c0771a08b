//! The one decision of where a client -> VIP packet goes: kept on its
//! flow's backend, scheduled as a new connection, picked up mid-flow, or
//! refused. A pure function of the generation, the flow's entry and the
//! packet's flags: the data path ([`super::Worker::forward`]) acts on it,
//! and `sluice ctl explain` calls the same function and puts its answer
//! into words, so the explanation is the data path's own decision, never a
//! second opinion.

use crate::flow::{tcp_flags, FlowEntry, FlowKey};
use crate::service::{EndpointState, Generation};

/// What the decision needs to know of a client -> VIP packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Facts {
    /// TCP (else UDP).
    pub tcp: bool,
    /// A connection-opening SYN (SYN without ACK or RST).
    pub syn: bool,
    /// The RST flag is set.
    pub rst: bool,
    /// The TCP sequence number (a SYN's ISN).
    pub seq: u32,
}

impl Facts {
    /// The facts of a TCP segment with these flags and sequence number.
    pub fn tcp(flags: u8, seq: u32) -> Facts {
        Facts {
            tcp: true,
            syn: flags & (tcp_flags::SYN | tcp_flags::ACK | tcp_flags::RST) == tcp_flags::SYN,
            rst: flags & tcp_flags::RST != 0,
            seq,
        }
    }

    /// The facts of a UDP datagram.
    pub fn udp() -> Facts {
        Facts {
            tcp: false,
            syn: false,
            rst: false,
            seq: 0,
        }
    }
}

/// Where the packet goes, and why.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// The flow's entry holds: forward to its backend (endpoint index in
    /// the current generation).
    Keep { endpoint: u32 },
    /// A new connection (a SYN, or a UDP datagram with no entry), placed by
    /// the new-flow table (endpoints that take new flows).
    /// `rescheduled`: a SYN that found an entry unfit to keep (a reused
    /// TIME_WAIT tuple, a draining, failed or removed backend; S3), which
    /// is dropped first.
    New { endpoint: u32, rescheduled: bool },
    /// A mid-flow packet with no entry (after a restart, a failover or an
    /// eviction): where every instance with this endpoint set sends it,
    /// draining endpoints included (S4a). `track`: whether an entry is
    /// made for it (not for a lone RST).
    Pickup { endpoint: u32, track: bool },
    /// The flow's backend was removed, failed or drained past its
    /// deadline: a TCP client gets a RST at once (S4b); the entry goes.
    Gone,
    /// No endpoint can take the packet (an empty service, or all draining
    /// or down for a new connection). `rescheduled` as in `New`.
    NoBackend { rescheduled: bool },
}

impl Decision {
    /// The endpoint the packet is forwarded to, if it is.
    pub fn endpoint(&self) -> Option<u32> {
        match *self {
            Decision::Keep { endpoint }
            | Decision::New { endpoint, .. }
            | Decision::Pickup { endpoint, .. } => Some(endpoint),
            Decision::Gone | Decision::NoBackend { .. } => None,
        }
    }
}

/// Decides where a client -> VIP packet of service `svc` goes. `entry` is
/// the flow's table entry, if any; `key` its 5-tuple (whose Maglev hash
/// places it when the entry does not decide).
#[inline(always)]
pub fn decide(
    g: &Generation,
    svc: u32,
    key: &FlowKey,
    entry: Option<&FlowEntry>,
    f: Facts,
) -> Decision {
    let mut rescheduled = false;
    if let Some(e) = entry {
        match pin(g, svc, e, f) {
            Pin::Keep(endpoint) => return Decision::Keep { endpoint },
            Pin::Gone => return Decision::Gone,
            Pin::Reschedule => rescheduled = true,
        }
    }
    let mhash = key.hash_v1(g.service(svc).seed);
    // A SYN opens a connection: only endpoints taking new flows. Anything
    // else is mid-flow (after a restart, failover or eviction): the choice
    // every instance with this endpoint set makes, draining ones included.
    if f.syn || !f.tcp {
        return match g.choose_new(svc, mhash) {
            Some(endpoint) => Decision::New {
                endpoint,
                rescheduled,
            },
            None => Decision::NoBackend { rescheduled },
        };
    }
    match g.choose_existing(svc, mhash) {
        // A lone RST for an unknown flow is passed on but not remembered.
        Some(endpoint) => Decision::Pickup {
            endpoint,
            track: !f.rst,
        },
        None => Decision::NoBackend { rescheduled },
    }
}

/// How an existing entry treats a packet.
enum Pin {
    /// Keep the entry's backend.
    Keep(u32),
    /// Drop the entry and schedule the SYN afresh (S3).
    Reschedule,
    /// The backend is gone or down (S4b).
    Gone,
}

#[inline(always)]
fn pin(g: &Generation, svc: u32, e: &FlowEntry, f: Facts) -> Pin {
    let ep = if e.generation == g.number as u32 {
        Some(e.endpoint)
    } else {
        g.find_endpoint(svc, e.backend_addr, e.backend_port)
    };
    let Some(ep) = ep else {
        // Removed from the service since the flow began: a new connection
        // goes elsewhere, the old one is told it is over.
        return if f.syn { Pin::Reschedule } else { Pin::Gone };
    };
    let state = g.endpoint(ep).state;
    if f.syn {
        // S3: a SYN on a known tuple keeps its backend only if it is a plain
        // retransmission (same ISN) of a live flow to an active backend.
        // Anything else (TIME_WAIT reuse, a new connection after a close, a
        // draining or failed backend) is a new connection.
        let retransmit = e.client_isn == f.seq && !e.state.is_closed();
        return if retransmit && state == EndpointState::Active {
            Pin::Keep(ep)
        } else {
            Pin::Reschedule
        };
    }
    // Mid-flow packets (a packet after a RST included: the backend's stack
    // answers it as it sees fit) stay with a backend that carries flows.
    if state.carries_flows() {
        Pin::Keep(ep)
    } else {
        Pin::Gone
    }
}
