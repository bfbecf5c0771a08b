//! One verdict per packet, and the reasons a packet is dropped.

/// Defines [`DropReason`], its counter order ([`DropReason::ALL`]) and its
/// stable names from one list, so the three cannot drift apart.
macro_rules! drop_reasons {
    ($( $(#[doc = $doc:literal])* $variant:ident => $name:literal, )+) => {
        /// Why a packet was dropped. Indexes the per-worker drop counters:
        /// every drop is counted under exactly one reason.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        #[repr(u8)]
        pub enum DropReason {
            $( $(#[doc = $doc])* $variant, )+
        }

        impl DropReason {
            /// Number of reasons (size of the counter array).
            pub const COUNT: usize = [$(stringify!($variant)),+].len();

            /// Every reason, in counter order.
            pub const ALL: [DropReason; DropReason::COUNT] = [$(DropReason::$variant),+];

            /// Stable snake_case name (stats, metrics labels).
            pub fn name(self) -> &'static str {
                match self {
                    $( DropReason::$variant => $name, )+
                }
            }
        }
    };
}

drop_reasons! {
    /// Shorter than an Ethernet header, or a VLAN tag cut short.
    MalformedEthernet => "malformed_ethernet",
    /// Neither IPv4 nor ARP (IPv6, LLDP, ...).
    UnsupportedEthertype => "unsupported_ethertype",
    /// ARP that is not Ethernet/IPv4 or is cut short.
    MalformedArp => "malformed_arp",
    /// IPv4 header fails its checks (version, IHL, total length).
    MalformedIpv4 => "malformed_ipv4",
    /// IPv4 fragment: fragments after the first carry no ports, so they
    /// cannot be steered consistently with their flow.
    Fragment => "fragment",
    /// TCP, UDP or ICMP header fails its checks.
    MalformedL4 => "malformed_l4",
    /// IP protocol other than TCP, UDP, ICMP.
    UnsupportedProtocol => "unsupported_protocol",
    /// TTL would reach 0.
    TtlExpired => "ttl_expired",
    /// Matches no service and comes from no backend.
    NoService => "no_service",
    /// The service has no endpoint that can take the flow (non-TCP; TCP
    /// clients get a RST instead).
    NoBackend => "no_backend",
    /// A non-TCP flow whose backend was removed or failed.
    BackendGone => "backend_gone",
    /// The next hop's MAC address is not known (yet).
    NeighborUnresolved => "neighbor_unresolved",
    /// No route to the destination.
    NoRoute => "no_route",
    /// A backend packet that belongs to no known flow and no single service.
    ReplyUnknownFlow => "reply_unknown_flow",
    /// An ICMP message sluice does not handle (or an error about a flow it
    /// cannot place).
    IcmpUnhandled => "icmp_unhandled",
    /// The owner worker's handoff ring was full.
    HandoffFull => "handoff_full",
    /// The port's TX ring was full.
    TxFull => "tx_full",
    /// The control thread's punt queue was full.
    PuntFull => "punt_full",
    /// A packet sluice had to originate found no buffer.
    NoBuffer => "no_buffer",
    /// Addressed to another host's MAC (unicast flooded by a switch, seen
    /// by a promiscuous port) or to a multicast group: not sluice's to
    /// forward, or every instance on the segment would.
    NotOurMac => "not_our_mac",
}

/// What happens to one packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Rewritten; send on port `port`.
    Forward { port: u16 },
    /// Turned into an answer to its sender (built in the packet's own
    /// buffer), sent back out the port it came in on; if the answer cannot
    /// be built (rate limit, no room) the packet is dropped for the
    /// answer's `reason` instead.
    Answer(Answer),
    /// Dropped and counted.
    Drop(DropReason),
    /// Belongs to a flow another worker owns; hand it over unchanged.
    Handoff { worker: u32 },
    /// For the control thread (ARP).
    Punt,
}

/// A packet sluice answers itself, and why.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Answer {
    pub kind: AnswerKind,
    /// Where the headers of the packet being answered start.
    pub o: crate::nat::Offsets,
    /// What the packet counts as if no answer goes out.
    pub reason: DropReason,
}

/// The answers sluice builds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AnswerKind {
    /// A TCP RST to the segment's sender (its connection is gone, or the
    /// service has no endpoint): the client fails at once instead of
    /// retransmitting into a black hole.
    TcpReset,
    /// An ICMP error about the packet, from `src` (host order): port
    /// unreachable from the VIP for UDP with no backend, time exceeded
    /// from sluice's own address when the TTL runs out. Rate-limited.
    IcmpError { msg_type: u8, code: u8, src: u32 },
    /// An echo reply from a VIP.
    EchoReply,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_lists_every_reason_in_counter_order() {
        for (i, r) in DropReason::ALL.iter().enumerate() {
            assert_eq!(*r as usize, i);
        }
        let names: std::collections::HashSet<_> =
            DropReason::ALL.iter().map(|r| r.name()).collect();
        assert_eq!(names.len(), DropReason::COUNT);
    }
}
