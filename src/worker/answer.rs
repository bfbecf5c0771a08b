//! Building the answers of [`Verdict::Answer`](super::Verdict) in the
//! buffer of the packet they answer, and the rate limit on ICMP errors.

use super::verdict::{Answer, AnswerKind, DropReason};
use super::Counters;
use crate::flow::Tick;
use crate::nat::answer::{self, ICMP_ERROR_PREFIX};
use crate::port::PacketBuf;
use crate::wire::ipv4::Ipv4Packet;

/// ICMP errors a worker may send per second, and in one burst: Linux's
/// `icmp_msgs_per_sec` and `icmp_msgs_burst` defaults. A spoofed flood of
/// packets that would each earn an error must not make sluice flood the
/// spoofed sources (or its own links) in turn.
pub const ICMP_ERRORS_PER_SEC: u32 = 1000;
pub const ICMP_ERRORS_BURST: u32 = 50;

/// A token bucket over the worker's millisecond clock (refilled from `now`,
/// never from a clock read of its own).
#[derive(Clone, Copy, Debug)]
pub struct TokenBucket {
    tokens: u32,
    last: Tick,
    per_sec: u32,
    burst: u32,
}

impl TokenBucket {
    pub fn new(per_sec: u32, burst: u32) -> TokenBucket {
        TokenBucket {
            tokens: burst,
            last: 0,
            per_sec,
            burst,
        }
    }

    /// Takes a token if one is left at `now`.
    pub fn take(&mut self, now: Tick) -> bool {
        let elapsed = now.wrapping_sub(self.last);
        // Refill in whole tokens; the remainder of a millisecond-interval
        // stays in `last` so slow rates still refill.
        let earned = u64::from(elapsed) * u64::from(self.per_sec) / 1000;
        if earned > 0 {
            self.tokens = (u64::from(self.tokens) + earned).min(u64::from(self.burst)) as u32;
            let used_ms = (earned * 1000 / u64::from(self.per_sec.max(1))) as u32;
            self.last = self.last.wrapping_add(used_ms.min(elapsed));
        } else if elapsed > i32::MAX as u32 {
            // A clock read behind `last` (never expected): start over.
            self.last = now;
        }
        if self.tokens == 0 {
            return false;
        }
        self.tokens -= 1;
        true
    }
}

/// Turns `b` (the packet being answered) into `a`'s answer. `Err` gives the
/// reason the packet is dropped instead; counters say what was sent.
pub(super) fn build<B: PacketBuf>(
    b: &mut B,
    a: Answer,
    icmp_limit: &mut TokenBucket,
    now: Tick,
    c: &mut Counters,
) -> Result<(), DropReason> {
    let o = a.o;
    let src = Ipv4Packet::new_unchecked(&b.data()[o.l3()..o.end()]).src_addr();
    // Never answer a frame sent to a broadcast or multicast MAC, nor a
    // source no answer may go to.
    let group = b.data().first().is_some_and(|m| m & 1 != 0);
    if group || !answer::answerable(src) {
        return Err(a.reason);
    }
    match a.kind {
        AnswerKind::TcpReset => {
            let len = answer::tcp_reset(b.data_mut(), o);
            b.truncate(len);
            c.resets += 1;
        }
        AnswerKind::EchoReply => {
            let len = answer::echo_reply(b.data_mut(), o).ok_or(a.reason)?;
            b.truncate(len);
        }
        AnswerKind::IcmpError {
            msg_type,
            code,
            src,
        } => {
            if !icmp_limit.take(now) {
                c.icmp_errors_limited += 1;
                return Err(a.reason);
            }
            let quoted = o.end() - o.l3();
            let l2 = o.l3();
            if b.prepend(ICMP_ERROR_PREFIX).is_none() {
                return Err(DropReason::NoBuffer);
            }
            let len = answer::icmp_error(b.data_mut(), l2, quoted, (msg_type, code), src);
            b.truncate(len);
            c.icmp_errors += 1;
        }
    }
    c.answered += 1;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_allows_a_burst_then_the_rate() {
        let mut t = TokenBucket::new(1000, 50);
        let now = 10_000;
        let sent = (0..200).filter(|_| t.take(now)).count();
        assert_eq!(sent, 50);
        // 20 ms later: 20 more.
        let sent = (0..200).filter(|_| t.take(now + 20)).count();
        assert_eq!(sent, 20);
        // A long pause refills to the burst, not beyond.
        let sent = (0..200).filter(|_| t.take(now + 60_000)).count();
        assert_eq!(sent, 50);
    }

    #[test]
    fn slow_rates_still_refill() {
        let mut t = TokenBucket::new(3, 1);
        assert!(t.take(0));
        assert!(!t.take(100));
        // 334 ms earns one token at 3/s.
        assert!(t.take(334));
        assert!(!t.take(335));
        assert!(t.take(1000));
    }
}
