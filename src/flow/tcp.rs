//! Connection state tracking (TCP like Linux conntrack, simplified; UDP replied/unreplied) and
//! the per-state timeouts that drive aging.
//!
//! The state describes the connection as seen from the client's end, which is what lets one
//! byte hold the direction of the first FIN without a per-direction bit: `FinWait` means the
//! client closed first, `CloseWait` means the backend did.
//!
//! Segments are classified like conntrack's `get_conntrack_index`: RST wins, then SYN (with or
//! without ACK), then FIN, then ACK; SYN together with FIN is invalid. Only the FIN, SYN, RST
//! and ACK bits matter; PSH, URG, ECE and CWR are ignored. Sequence numbers are not tracked
//! (no window checks), so an RST is trusted: that is the simplification. What this buys is that
//! every flow ends in a state whose timeout is short, and nothing gets stuck.
//!
//! Transitions (`-` = unchanged). `O` = original (client -> VIP), `R` = reply (backend ->
//! client). `ACK` means ACK without SYN/FIN/RST; `none` is a segment with none of the four bits
//! (or SYN+FIN), which is invalid and never moves the state.
//!
//! | state \ segment | RST    | SYN O   | SYN R | SYN+ACK O | SYN+ACK R | FIN O   | FIN R     | ACK O       | ACK R    | none |
//! |-----------------|--------|---------|-------|-----------|-----------|---------|-----------|-------------|----------|------|
//! | SynSent         | Closed | -       | -     | -         | SynRecv   | FinWait | CloseWait | Established | -        | -    |
//! | SynRecv         | Closed | -       | -     | -         | -         | FinWait | CloseWait | Established | -        | -    |
//! | Established     | Closed | -       | -     | -         | -         | FinWait | CloseWait | -           | -        | -    |
//! | FinWait         | Closed | -       | -     | -         | -         | -       | LastAck   | -           | -        | -    |
//! | CloseWait       | Closed | -       | -     | -         | -         | LastAck | -         | -           | -        | -    |
//! | LastAck         | Closed | -       | -     | -         | -         | -       | -         | TimeWait    | TimeWait | -    |
//! | TimeWait        | Closed | SynSent | -     | -         | -         | -       | -         | -           | -        | -    |
//! | Closed          | -      | SynSent | -     | -         | -         | -       | -         | -           | -        | -    |
//! | Udp*            | -      | -       | -     | -         | -         | -       | -         | -           | -        | -    |
//!
//! Why these choices:
//! - `ACK O` in `SynSent` -> `Established`: a flow picked up mid-stream (after a restart, S4) or
//!   whose SYN+ACK never passes through us (direct server return) must not stay in a 120 s
//!   half-open state while it carries data. Established is not trust, though: the flow table
//!   gives the long established timeout and protection from eviction only to *assured* flows
//!   (`FlowEntry::ASSURED`: a handshake seen to complete, or a reply seen), so a spoofed ACK
//!   that lands here holds its entry for the short `unassured` timeout and is the first to go.
//! - A client SYN on a live state leaves it alone: whether it starts a new connection depends on
//!   the client's ISN and the backend's health (S3), which the data path knows; it then resets
//!   the entry with [`FlowState::new_tcp`]. On `Closed`/`TimeWait` the tuple is being reused, so
//!   the SYN opens a new connection here.
//! - `LastAck` accepts the final ACK from either side: without per-direction memory we cannot
//!   tell which side sent the second FIN, and a premature `TimeWait` still keeps the flow pinned
//!   for 120 s.
//! - UDP states ignore TCP segments (and TCP states ignore [`FlowState::next_udp`]): the
//!   protocol is part of the key, so a mix is a caller bug; leaving the state alone is the
//!   harmless answer.
//!
//! [`FlowState::new_tcp`] (a fresh flow from its first client packet): RST -> `Closed`, SYN ->
//! `SynSent`, FIN -> `FinWait` (pickup of a closing flow), ACK -> `Established` (mid-flow
//! pickup), anything else (SYN+ACK from a client, no flags, SYN+FIN) -> `SynSent`, the short,
//! untrusted state that a later client ACK promotes.

/// Milliseconds on the worker's clock, wrapping. Compare with `wrapping_sub`, never `<`.
pub type Tick = u32;

/// Raw TCP header flag bits (byte 13 of the TCP header).
pub mod tcp_flags {
    /// No more data from sender.
    pub const FIN: u8 = 0x01;
    /// Synchronize sequence numbers.
    pub const SYN: u8 = 0x02;
    /// Reset the connection.
    pub const RST: u8 = 0x04;
    /// Push function (ignored by state tracking).
    pub const PSH: u8 = 0x08;
    /// Acknowledgment field significant.
    pub const ACK: u8 = 0x10;
    /// Urgent pointer field significant (ignored by state tracking).
    pub const URG: u8 = 0x20;
}

/// State of a flow. One byte; the table uses its unused values to mark free slots.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
#[repr(u8)]
pub enum FlowState {
    /// Client SYN seen (or an untrusted first packet).
    SynSent,
    /// Backend SYN+ACK seen.
    SynRecv,
    /// Handshake complete or flow picked up mid-stream.
    Established,
    /// The client sent the first FIN.
    FinWait,
    /// The backend sent the first FIN.
    CloseWait,
    /// Both sides sent FIN; waiting for the final ACK.
    LastAck,
    /// Final ACK seen; the tuple may be reused by a new SYN.
    TimeWait,
    /// Reset; the tuple may be reused by a new SYN.
    Closed,
    /// UDP, no reply seen yet.
    UdpUnreplied,
    /// UDP, the backend has replied.
    UdpReplied,
}

/// Direction of a packet relative to the flow key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// Client -> VIP.
    Original,
    /// Backend -> client.
    Reply,
}

/// Conntrack-style classification of a segment by its flags.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Segment {
    Rst,
    Syn,
    SynAck,
    Fin,
    Ack,
    Invalid,
}

impl Segment {
    #[inline(always)]
    fn classify(flags: u8) -> Segment {
        use tcp_flags::{ACK, FIN, RST, SYN};
        if flags & RST != 0 {
            Segment::Rst
        } else if flags & SYN != 0 {
            if flags & FIN != 0 {
                Segment::Invalid
            } else if flags & ACK != 0 {
                Segment::SynAck
            } else {
                Segment::Syn
            }
        } else if flags & FIN != 0 {
            Segment::Fin
        } else if flags & ACK != 0 {
            Segment::Ack
        } else {
            Segment::Invalid
        }
    }
}

impl FlowState {
    /// Every state, for exhaustive tests and dumps.
    pub const ALL: [FlowState; 10] = [
        FlowState::SynSent,
        FlowState::SynRecv,
        FlowState::Established,
        FlowState::FinWait,
        FlowState::CloseWait,
        FlowState::LastAck,
        FlowState::TimeWait,
        FlowState::Closed,
        FlowState::UdpUnreplied,
        FlowState::UdpReplied,
    ];

    /// State of a fresh TCP flow from its first (client) packet's flags.
    #[inline]
    pub fn new_tcp(flags: u8) -> FlowState {
        match Segment::classify(flags) {
            Segment::Rst => FlowState::Closed,
            Segment::Fin => FlowState::FinWait,
            Segment::Ack => FlowState::Established,
            Segment::Syn | Segment::SynAck | Segment::Invalid => FlowState::SynSent,
        }
    }

    /// State of a fresh UDP flow.
    #[inline]
    pub fn new_udp() -> FlowState {
        FlowState::UdpUnreplied
    }

    /// The state after a TCP segment with `flags` travelling in `dir` (module docs have the
    /// table).
    #[inline]
    pub fn next_tcp(self, dir: Direction, flags: u8) -> FlowState {
        use FlowState::*;
        // Nearly every segment: an established flow stays so unless it
        // closes (the table below agrees; tested exhaustively).
        if self == Established && flags & (tcp_flags::FIN | tcp_flags::RST) == 0 {
            return self;
        }
        self.next_tcp_by_table(dir, flags)
    }

    /// [`FlowState::next_tcp`] without its shortcut.
    #[inline]
    fn next_tcp_by_table(self, dir: Direction, flags: u8) -> FlowState {
        use Direction::{Original, Reply};
        use FlowState::*;
        if self.is_udp() {
            return self;
        }
        match (Segment::classify(flags), dir, self) {
            (Segment::Rst, _, _) => Closed,
            (Segment::Syn, Original, TimeWait | Closed) => SynSent,
            (Segment::SynAck, Reply, SynSent) => SynRecv,
            (Segment::Fin, Original, SynSent | SynRecv | Established) => FinWait,
            (Segment::Fin, Reply, SynSent | SynRecv | Established) => CloseWait,
            (Segment::Fin, Reply, FinWait) | (Segment::Fin, Original, CloseWait) => LastAck,
            (Segment::Ack, Original, SynSent | SynRecv) => Established,
            (Segment::Ack, _, LastAck) => TimeWait,
            (_, _, state) => state,
        }
    }

    /// The state after a UDP datagram travelling in `dir`.
    #[inline]
    pub fn next_udp(self, dir: Direction) -> FlowState {
        match (self, dir) {
            (FlowState::UdpUnreplied, Direction::Reply) => FlowState::UdpReplied,
            (state, _) => state,
        }
    }

    /// How long (ms) a flow in this state may stay idle before it expires.
    #[inline]
    pub fn timeout(self, t: &Timeouts) -> u32 {
        match self {
            FlowState::SynSent => t.syn_sent,
            FlowState::SynRecv => t.syn_recv,
            FlowState::Established => t.established,
            FlowState::FinWait => t.fin_wait,
            FlowState::CloseWait => t.close_wait,
            FlowState::LastAck => t.last_ack,
            FlowState::TimeWait => t.time_wait,
            FlowState::Closed => t.closed,
            FlowState::UdpUnreplied => t.udp,
            FlowState::UdpReplied => t.udp_stream,
        }
    }

    /// `Closed` or `TimeWait`: the connection is over, so the tuple may carry a new one and the
    /// entry is the first to go when the table is full.
    #[inline]
    pub fn is_closed(self) -> bool {
        matches!(self, FlowState::Closed | FlowState::TimeWait)
    }

    /// One of the UDP states.
    #[inline]
    pub fn is_udp(self) -> bool {
        matches!(self, FlowState::UdpUnreplied | FlowState::UdpReplied)
    }
}

/// Idle timeouts per state, in milliseconds.
///
/// Every value must stay below 2^31 ms (about 24.8 days): ages are `now.wrapping_sub(last_seen)`
/// read as `i32`, which is what lets entries survive the wrap of the 32-bit clock.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Timeouts {
    /// [`FlowState::SynSent`].
    pub syn_sent: u32,
    /// [`FlowState::SynRecv`].
    pub syn_recv: u32,
    /// [`FlowState::Established`].
    pub established: u32,
    /// [`FlowState::FinWait`].
    pub fin_wait: u32,
    /// [`FlowState::CloseWait`].
    pub close_wait: u32,
    /// [`FlowState::LastAck`].
    pub last_ack: u32,
    /// [`FlowState::TimeWait`].
    pub time_wait: u32,
    /// [`FlowState::Closed`].
    pub closed: u32,
    /// [`FlowState::UdpUnreplied`].
    pub udp: u32,
    /// [`FlowState::UdpReplied`].
    pub udp_stream: u32,
    /// An established TCP flow that is not assured: picked up mid-stream
    /// (after a restart, a failover or an eviction) and not answered yet.
    /// A real connection's backend answers within a round trip and makes it
    /// assured; a spoofed ACK's never does, so it must not hold an entry
    /// for the established timeout.
    #[serde(default = "default_unassured")]
    pub unassured: u32,
}

fn default_unassured() -> u32 {
    Timeouts::default().unassured
}

/// Index of the `unassured` timeout in [`Timeouts::by_class`], after the
/// states.
pub const UNASSURED_CLASS: usize = FlowState::ALL.len();

/// Number of timeout classes: one per state, plus unassured established.
pub const TIMEOUT_CLASSES: usize = UNASSURED_CLASS + 1;

impl Timeouts {
    /// The timeouts indexed by timeout class (a [`FlowState`] discriminant,
    /// or [`UNASSURED_CLASS`]), for loops that judge many entries
    /// (eviction).
    #[inline]
    pub fn by_class(&self) -> [u32; TIMEOUT_CLASSES] {
        std::array::from_fn(|i| match FlowState::ALL.get(i) {
            Some(s) => s.timeout(self),
            None => self.unassured,
        })
    }
}

/// The largest timeout (ms) that wrapping age comparison can represent.
pub const MAX_TIMEOUT_MS: u32 = i32::MAX as u32;

impl Default for Timeouts {
    /// Linux conntrack's defaults (`nf_conntrack_tcp_timeout_*`, `nf_conntrack_udp_timeout*`).
    fn default() -> Self {
        const S: u32 = 1000;
        Timeouts {
            syn_sent: 120 * S,
            syn_recv: 60 * S,
            established: 432_000 * S,
            fin_wait: 120 * S,
            close_wait: 60 * S,
            last_ack: 30 * S,
            time_wait: 120 * S,
            closed: 10 * S,
            udp: 30 * S,
            udp_stream: 120 * S,
            // As long as an unreplied UDP flow: a real connection is
            // answered within a round trip.
            unassured: 30 * S,
        }
    }
}

/// A timeout that wrapping age comparison cannot represent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "timeout `{name}` is {value} ms, but timeouts must be at most {max} ms (about 24.8 days) \
     because flow ages are compared with wrapping 32-bit arithmetic; lower it",
    max = MAX_TIMEOUT_MS
)]
pub struct TimeoutTooLong {
    /// Field name in [`Timeouts`].
    pub name: &'static str,
    /// The rejected value (ms).
    pub value: u32,
}

impl Timeouts {
    /// Checks that every timeout fits the wrapping comparison.
    pub fn validate(&self) -> Result<(), TimeoutTooLong> {
        let fields = [
            ("syn_sent", self.syn_sent),
            ("syn_recv", self.syn_recv),
            ("established", self.established),
            ("fin_wait", self.fin_wait),
            ("close_wait", self.close_wait),
            ("last_ack", self.last_ack),
            ("time_wait", self.time_wait),
            ("closed", self.closed),
            ("udp", self.udp),
            ("udp_stream", self.udp_stream),
            ("unassured", self.unassured),
        ];
        match fields.into_iter().find(|&(_, v)| v > MAX_TIMEOUT_MS) {
            Some((name, value)) => Err(TimeoutTooLong { name, value }),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::tcp_flags::*;
    use super::Direction::{Original, Reply};
    use super::FlowState::*;
    use super::*;

    #[test]
    fn timeouts_by_class_are_indexed_by_discriminant_then_unassured() {
        let t = Timeouts::default();
        let table = t.by_class();
        for s in FlowState::ALL {
            assert_eq!(table[s as usize], s.timeout(&t), "{s:?}");
        }
        assert_eq!(table[UNASSURED_CLASS], t.unassured);
    }

    #[test]
    fn established_shortcut_agrees_with_the_table() {
        for flags in 0..=u8::MAX {
            for dir in [Direction::Original, Direction::Reply] {
                for state in FlowState::ALL {
                    assert_eq!(
                        state.next_tcp(dir, flags),
                        state.next_tcp_by_table(dir, flags),
                        "{state:?} {dir:?} flags {flags:#04x}"
                    );
                }
            }
        }
    }

    const DIRS: [Direction; 2] = [Original, Reply];

    /// The transition table of the module docs, written out independently of `next_tcp`'s
    /// match so the two check each other.
    fn expected(state: FlowState, dir: Direction, seg: Segment) -> FlowState {
        if state.is_udp() {
            return state;
        }
        let o = dir == Original;
        match seg {
            Segment::Rst => Closed,
            Segment::Invalid => state,
            Segment::Syn => match state {
                TimeWait | Closed if o => SynSent,
                _ => state,
            },
            Segment::SynAck => match state {
                SynSent if !o => SynRecv,
                _ => state,
            },
            Segment::Fin => match state {
                SynSent | SynRecv | Established => {
                    if o {
                        FinWait
                    } else {
                        CloseWait
                    }
                }
                FinWait if !o => LastAck,
                CloseWait if o => LastAck,
                _ => state,
            },
            Segment::Ack => match state {
                SynSent | SynRecv if o => Established,
                LastAck => TimeWait,
                _ => state,
            },
        }
    }

    #[test]
    fn every_state_direction_and_flag_byte_has_the_documented_successor() {
        for state in FlowState::ALL {
            for dir in DIRS {
                for flags in 0..=u8::MAX {
                    let next = state.next_tcp(dir, flags);
                    assert_eq!(
                        next,
                        expected(state, dir, Segment::classify(flags)),
                        "{state:?} {dir:?} {flags:#04x}"
                    );
                    assert!(FlowState::ALL.contains(&next));
                    // TCP never produces a UDP state and vice versa.
                    assert_eq!(next.is_udp(), state.is_udp());
                }
            }
        }
    }

    #[test]
    fn classification_follows_conntrack_priority_and_ignores_other_bits() {
        assert_eq!(Segment::classify(RST | SYN | FIN | ACK), Segment::Rst);
        assert_eq!(Segment::classify(SYN | FIN), Segment::Invalid);
        assert_eq!(Segment::classify(SYN | ACK | PSH), Segment::SynAck);
        assert_eq!(Segment::classify(SYN | URG), Segment::Syn);
        assert_eq!(Segment::classify(FIN), Segment::Fin);
        assert_eq!(Segment::classify(FIN | ACK | PSH), Segment::Fin);
        assert_eq!(Segment::classify(ACK | PSH | 0xc0), Segment::Ack);
        assert_eq!(Segment::classify(PSH), Segment::Invalid);
        assert_eq!(Segment::classify(0), Segment::Invalid);
    }

    #[test]
    fn new_tcp_maps_first_packets() {
        assert_eq!(FlowState::new_tcp(SYN), SynSent);
        assert_eq!(FlowState::new_tcp(ACK), Established);
        assert_eq!(FlowState::new_tcp(ACK | PSH), Established);
        assert_eq!(FlowState::new_tcp(FIN | ACK), FinWait);
        assert_eq!(FlowState::new_tcp(RST | ACK), Closed);
        assert_eq!(FlowState::new_tcp(SYN | ACK), SynSent);
        assert_eq!(FlowState::new_tcp(0), SynSent);
        assert_eq!(FlowState::new_tcp(SYN | FIN), SynSent);
        for flags in 0..=u8::MAX {
            assert!(!FlowState::new_tcp(flags).is_udp());
        }
    }

    fn run(start: FlowState, steps: &[(Direction, u8)]) -> Vec<FlowState> {
        let mut s = start;
        steps
            .iter()
            .map(|&(d, f)| {
                s = s.next_tcp(d, f);
                s
            })
            .collect()
    }

    #[test]
    fn normal_open_and_client_close() {
        let open = FlowState::new_tcp(SYN);
        let seq = run(
            open,
            &[
                (Reply, SYN | ACK),
                (Original, ACK),
                (Original, ACK | PSH),
                (Reply, ACK),
                (Original, FIN | ACK),
                (Reply, ACK),
                (Reply, FIN | ACK),
                (Original, ACK),
            ],
        );
        assert_eq!(
            seq,
            [
                SynRecv,
                Established,
                Established,
                Established,
                FinWait,
                FinWait,
                LastAck,
                TimeWait
            ]
        );
        assert!(TimeWait.is_closed());
    }

    #[test]
    fn backend_closes_first() {
        let seq = run(
            Established,
            &[
                (Reply, FIN | ACK),
                (Original, ACK),
                (Original, FIN | ACK),
                (Reply, ACK),
            ],
        );
        assert_eq!(seq, [CloseWait, CloseWait, LastAck, TimeWait]);
    }

    #[test]
    fn simultaneous_close() {
        let seq = run(
            Established,
            &[
                (Original, FIN | ACK),
                (Reply, FIN | ACK),
                (Original, ACK),
                (Reply, ACK),
            ],
        );
        assert_eq!(seq, [FinWait, LastAck, TimeWait, TimeWait]);
    }

    #[test]
    fn fin_retransmissions_do_not_advance() {
        assert_eq!(run(FinWait, &[(Original, FIN | ACK)]), [FinWait]);
        assert_eq!(run(CloseWait, &[(Reply, FIN | ACK)]), [CloseWait]);
    }

    #[test]
    fn rst_from_either_side_closes_every_tcp_state() {
        for state in FlowState::ALL.into_iter().filter(|s| !s.is_udp()) {
            for dir in DIRS {
                assert_eq!(state.next_tcp(dir, RST), Closed);
                assert_eq!(state.next_tcp(dir, RST | ACK), Closed);
            }
        }
        assert!(Closed.is_closed());
    }

    #[test]
    fn mid_flow_pickup_becomes_established() {
        // After a restart the first packet we see is data: never stuck half-open.
        assert_eq!(FlowState::new_tcp(ACK | PSH), Established);
        // And if the entry was created from an untrusted first packet, the next data packet
        // from the client promotes it.
        assert_eq!(SynSent.next_tcp(Original, ACK), Established);
        // Direct server return: no SYN+ACK ever passes, the client's ACK still completes.
        assert_eq!(
            run(FlowState::new_tcp(SYN), &[(Original, ACK)]),
            [Established]
        );
    }

    #[test]
    fn syn_reuses_only_closed_tuples() {
        assert_eq!(Closed.next_tcp(Original, SYN), SynSent);
        assert_eq!(TimeWait.next_tcp(Original, SYN), SynSent);
        assert_eq!(Established.next_tcp(Original, SYN), Established);
        assert_eq!(SynSent.next_tcp(Original, SYN), SynSent);
        assert_eq!(SynRecv.next_tcp(Reply, SYN | ACK), SynRecv);
    }

    #[test]
    fn udp_transitions() {
        assert_eq!(FlowState::new_udp(), UdpUnreplied);
        assert_eq!(UdpUnreplied.next_udp(Original), UdpUnreplied);
        assert_eq!(UdpUnreplied.next_udp(Reply), UdpReplied);
        assert_eq!(UdpReplied.next_udp(Original), UdpReplied);
        assert_eq!(UdpReplied.next_udp(Reply), UdpReplied);
        // Protocol mixes are caller bugs and leave the state alone.
        assert_eq!(Established.next_udp(Reply), Established);
        assert_eq!(UdpUnreplied.next_tcp(Original, RST), UdpUnreplied);
        assert!(!UdpReplied.is_closed());
    }

    #[test]
    fn timeouts_default_to_conntrack_and_map_per_state() {
        let t = Timeouts::default();
        assert!(t.validate().is_ok());
        let expected = [120, 60, 432_000, 120, 60, 30, 120, 10, 30, 120];
        for (state, secs) in FlowState::ALL.into_iter().zip(expected) {
            assert_eq!(state.timeout(&t), secs * 1000, "{state:?}");
        }
    }

    #[test]
    fn timeouts_reject_values_beyond_the_wrapping_range() {
        let t = Timeouts {
            time_wait: MAX_TIMEOUT_MS + 1,
            ..Timeouts::default()
        };
        let err = t.validate().unwrap_err();
        assert_eq!(err.name, "time_wait");
        assert!(err.to_string().contains("time_wait"));
        let ok = Timeouts {
            established: MAX_TIMEOUT_MS,
            ..Timeouts::default()
        };
        assert!(ok.validate().is_ok());
    }

    #[test]
    fn timeouts_round_trip_through_serde() {
        let t = Timeouts::default();
        let json = serde_json::to_string(&t).unwrap();
        assert_eq!(serde_json::from_str::<Timeouts>(&json).unwrap(), t);
    }
}
