//! ICMP through the VIP: echo requests answered, errors about a flow
//! steered to the side that needs them.

use std::net::Ipv4Addr;

use super::parse::Parsed;
use super::verdict::{Answer, AnswerKind, DropReason, Verdict};
use super::Worker;
use crate::flow::FlowKey;
use crate::hash::owner_worker;
use crate::nat::{self, IcmpSteer};
use crate::port::Port;
use crate::service::{EndpointRt, VipKey};
use crate::wire::icmp::IcmpPacket;

impl<P: Port> Worker<P> {
    /// ICMP: echo requests to a VIP are answered; errors to a VIP go to the
    /// backend of the flow they are about; errors from a backend about a
    /// client's packet go to the client as if from the VIP.
    pub(crate) fn icmp(&mut self, frame: &mut [u8], p: &Parsed) -> Verdict {
        use crate::wire::icmp::ECHO_REQUEST;
        let g = &*self.gen;
        let (is_err, msg_type, emb) = {
            let icmp = IcmpPacket::new_unchecked(&frame[p.o.l4()..p.o.end()]);
            let emb = icmp.embedded().ok().map(|e| {
                (
                    u32::from(e.src_addr()),
                    u32::from(e.dst_addr()),
                    e.src_port(),
                    e.dst_port(),
                    e.protocol(),
                )
            });
            (icmp.is_error(), icmp.msg_type(), emb)
        };
        if g.is_vip_addr(p.dst) {
            if msg_type == ECHO_REQUEST {
                // A request whose checksum is wrong is not answered.
                return Verdict::Answer(Answer {
                    kind: AnswerKind::EchoReply,
                    o: p.o,
                    reason: DropReason::MalformedL4,
                });
            }
            // An error about a packet the VIP sent: embedded src is VIP:vport,
            // embedded dst is the client.
            let Some((esrc, edst, esport, edport, eproto)) = emb.filter(|_| is_err) else {
                return Verdict::Drop(DropReason::IcmpUnhandled);
            };
            let vip = VipKey {
                addr: esrc,
                port: esport,
                proto: eproto,
            };
            let Some(svc) = g.service_for(&vip) else {
                return Verdict::Drop(DropReason::IcmpUnhandled);
            };
            let owner = owner_worker(edst, edport, self.n_workers);
            if owner != self.id {
                return Verdict::Handoff { worker: owner };
            }
            let key = FlowKey {
                client_addr: edst,
                vip_addr: esrc,
                client_port: edport,
                vip_port: esport,
                proto: eproto,
            };
            let h = self.flows.hash(&key);
            let ep_idx = match self.flows.lookup(&key, h) {
                Some(id) => {
                    let e = self.flows.entry(id);
                    g.find_endpoint(svc, e.backend_addr, e.backend_port)
                }
                None => g.choose_existing(svc, key.hash_v1(g.service(svc).seed)),
            };
            let Some(ep) = ep_idx.map(|i| *g.endpoint(i)) else {
                return Verdict::Drop(DropReason::IcmpUnhandled);
            };
            return self.icmp_out(frame, p, &ep, true, ep.addr, ep.port);
        }
        // From a backend: embedded src is the client, embedded dst the backend.
        let Some((esrc, edst, esport, edport, eproto)) = emb.filter(|_| is_err) else {
            return Verdict::Drop(DropReason::IcmpUnhandled);
        };
        let backend = VipKey {
            addr: edst,
            port: edport,
            proto: eproto,
        };
        let Some(r) = g.backend_refs(&backend).first().copied() else {
            return Verdict::Drop(DropReason::NoService);
        };
        let owner = owner_worker(esrc, esport, self.n_workers);
        if owner != self.id {
            return Verdict::Handoff { worker: owner };
        }
        let s = g.service(r.service);
        let (vaddr, vport) = (s.key.addr, s.key.port);
        let ep = *g.endpoint(r.endpoint);
        self.icmp_out(frame, p, &ep, false, vaddr, vport)
    }

    fn icmp_out(
        &mut self,
        frame: &mut [u8],
        p: &Parsed,
        ep: &EndpointRt,
        to_backend: bool,
        addr: u32,
        port16: u16,
    ) -> Verdict {
        let g = &*self.gen;
        if p.ttl <= 1 {
            return Verdict::Drop(DropReason::TtlExpired);
        }
        let (port, mac) = if to_backend {
            match ep.egress {
                Some(x) => x,
                None => return Verdict::Drop(DropReason::NeighborUnresolved),
            }
        } else {
            match g.route(p.dst) {
                Ok(x) => x,
                Err(None) => return Verdict::Drop(DropReason::NoRoute),
                Err(Some(_)) => return Verdict::Drop(DropReason::NeighborUnresolved),
            }
        };
        let Some(link) = g.link(port) else {
            return Verdict::Drop(DropReason::NoRoute);
        };
        let steer = if to_backend {
            IcmpSteer::ToBackend
        } else {
            IcmpSteer::FromBackend
        };
        let ok = nat::steer_icmp_error(
            frame,
            p.o,
            steer,
            Ipv4Addr::from(addr),
            port16,
            link.mac,
            mac,
        );
        if !ok {
            return Verdict::Drop(DropReason::IcmpUnhandled);
        }
        self.counters.forwarded += 1;
        Verdict::Forward { port }
    }
}
