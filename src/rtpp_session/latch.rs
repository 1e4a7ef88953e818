//! Latching: which source address a party of a stream is locked to, and
//! the packets it sent. Pure state machines with the time passed in, so
//! they are tested (and fuzzed) without sockets.

use std::net::SocketAddr;
use std::time::Instant;

use crate::rtpp_defines::UPDATE_WINDOW;

/// What latching decided about a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// From the party's known address.
    Accept,
    /// Accepted, and the party's address was set from this packet's source.
    Latched,
    /// From a stranger: dropped.
    Reject,
}

/// One party of one stream as the relay sees it: where to send to it, how
/// that was learned, and what it sent.
#[derive(Debug, Clone, Default)]
pub struct Peer {
    /// Where media for this party goes (pre-filled, guessed or latched).
    pub addr: Option<SocketAddr>,
    /// Locked to the source of a packet it sent.
    pub latched: bool,
    /// A packet proved the signalled address wrong (NAT): later signalled
    /// addresses are not trusted to replace the latched one.
    pub untrusted: bool,
    /// `a`: accept any source port from the known host, send to the
    /// signalled address.
    pub asymmetric: bool,
    /// After a re-signalling U/L, a new source may take over until then.
    pub update_until: Option<Instant>,
    /// The address a U/L last signalled for this party (its SDP).
    pub signalled: Option<SocketAddr>,
    /// The party was taken by a source other than `signalled`: until then
    /// a packet from the signalled address itself takes it back.
    pub reclaim_until: Option<Instant>,
    /// Packets accepted from this party.
    pub packets: u64,
    /// Bytes accepted from this party.
    pub bytes: u64,
}

impl Peer {
    /// Decides whether a packet from `src` is this party's, latching it to
    /// the first source it sends from. Once latched, only a U/L that
    /// re-signals the party opens a short window for a new source; a packet
    /// from the current address closes it, so a stranger cannot take over a
    /// party that keeps sending (doc/PROTOCOL.md, "Latching").
    ///
    /// A stranger that sends first (it raced the real party to the relay
    /// port) holds the party only provisionally: for [`UPDATE_WINDOW`] a
    /// packet from exactly the signalled address takes it back, and the
    /// party is then locked to that address. The signalled address is the
    /// SIP proxy's word, and a forger of it could not receive the media
    /// anyway, so this hands nothing to anyone the SDP did not name.
    pub fn accept(&mut self, src: SocketAddr, now: Instant) -> Verdict {
        if self.asymmetric {
            return match self.addr {
                None => {
                    self.addr = Some(src);
                    Verdict::Latched
                }
                Some(a) if a.ip() == src.ip() => Verdict::Accept,
                Some(_) => Verdict::Reject,
            };
        }
        if !self.latched {
            if self.addr.is_some_and(|a| a != src) {
                self.untrusted = true;
            }
            self.latch(src, now);
            return Verdict::Latched;
        }
        if self.addr == Some(src) {
            self.update_until = None;
            return Verdict::Accept;
        }
        if self.update_until.is_some_and(|t| now < t) {
            self.untrusted = true;
            self.latch(src, now);
            return Verdict::Latched;
        }
        if self.signalled == Some(src) && self.reclaim_until.is_some_and(|t| now < t) {
            self.untrusted = false;
            self.latch(src, now);
            return Verdict::Latched;
        }
        Verdict::Reject
    }

    /// Locks the party to `src`; see `accept` for when the signalled
    /// address may still take it back.
    fn latch(&mut self, src: SocketAddr, now: Instant) {
        self.addr = Some(src);
        self.latched = true;
        self.update_until = None;
        self.reclaim_until = match self.signalled {
            Some(s) if s != src => Some(now + UPDATE_WINDOW),
            _ => None,
        };
    }

    /// Applies the address a U/L signalled for this party.
    pub fn signal(&mut self, remote: Option<SocketAddr>, asymmetric: bool, now: Instant) {
        self.asymmetric = asymmetric;
        let Some(remote) = remote else {
            return;
        };
        self.signalled = Some(remote);
        if asymmetric || !self.latched {
            self.addr = Some(remote);
        } else {
            if !self.untrusted {
                self.addr = Some(remote);
            }
            self.update_until = Some(now + UPDATE_WINDOW);
        }
        // The party is where its SDP now says: nothing left to take back.
        // A window left open would let a later re-signalled address take
        // the party after it spoke and closed the update window.
        if self.addr == Some(remote) {
            self.reclaim_until = None;
        }
    }

    /// Pre-fills a guessed address (RTCP = RTP port + 1) unless latched.
    pub fn guess(&mut self, addr: SocketAddr) {
        if !self.latched && !self.asymmetric {
            self.addr = Some(addr);
        }
    }
}

// Carried whole across a hand-over (doc/PROTOCOL.md, "Hand-over").
crate::rtpp_handover::wire::carry_fields!(Peer {
    addr,
    latched,
    untrusted,
    asymmetric,
    update_until,
    signalled,
    reclaim_until,
    packets,
    bytes,
});

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn first_packet_latches_even_from_prefilled_address() {
        let now = Instant::now();
        let mut p = Peer::default();
        p.signal(Some(addr("10.0.0.1:4000")), false, now);
        assert!(!p.latched);
        assert_eq!(p.accept(addr("10.0.0.1:4000"), now), Verdict::Latched);
        assert!(p.latched);
        // The classic daemon left this party open: a stranger took over.
        assert_eq!(p.accept(addr("10.6.6.6:6666"), now), Verdict::Reject);
        assert_eq!(p.addr, Some(addr("10.0.0.1:4000")));
    }

    #[test]
    fn signalled_address_takes_back_a_party_a_stranger_raced_to() {
        let now = Instant::now();
        let mut p = Peer::default();
        p.signal(Some(addr("10.0.0.1:4000")), false, now);
        // The stranger's packet arrives first and latches.
        assert_eq!(p.accept(addr("10.6.6.6:6666"), now), Verdict::Latched);
        // The real party speaks from the address its SDP named: it wins,
        // and from then on the stranger is a stranger.
        let later = now + Duration::from_millis(300);
        assert_eq!(p.accept(addr("10.0.0.1:4000"), later), Verdict::Latched);
        assert_eq!(p.addr, Some(addr("10.0.0.1:4000")));
        assert!(!p.untrusted);
        assert_eq!(p.accept(addr("10.6.6.6:6666"), later), Verdict::Reject);
        assert_eq!(p.accept(addr("10.0.0.1:4000"), later), Verdict::Accept);
        // Only the signalled address may take it back, and only for a while.
        let mut q = Peer::default();
        q.signal(Some(addr("192.168.1.2:4000")), false, now);
        assert_eq!(q.accept(addr("1.2.3.4:5000"), now), Verdict::Latched);
        assert_eq!(q.accept(addr("10.6.6.6:6666"), now), Verdict::Reject);
        let late = now + UPDATE_WINDOW + Duration::from_millis(1);
        assert_eq!(q.accept(addr("192.168.1.2:4000"), late), Verdict::Reject);
        assert_eq!(q.addr, Some(addr("1.2.3.4:5000")));
    }

    /// Found by the `latch` fuzz target: a re-INVITE naming the address the
    /// party was latched to left the take-back window of the first latch
    /// open, so the next re-signalled address could take the party even
    /// after the party spoke and closed the update window.
    #[test]
    fn resignal_to_the_latched_address_closes_the_take_back_window() {
        let now = Instant::now();
        let (a, s, b) = (
            addr("10.0.0.1:4000"),
            addr("1.2.3.4:5000"),
            addr("10.0.0.9:4000"),
        );
        let mut p = Peer::default();
        p.signal(Some(a), false, now);
        assert_eq!(p.accept(s, now), Verdict::Latched);
        p.signal(Some(s), false, now);
        assert_eq!(p.reclaim_until, None);
        assert_eq!(p.accept(s, now), Verdict::Accept);
        p.signal(Some(b), false, now);
        // The party speaks from where it is: the update window closes.
        assert_eq!(p.accept(s, now), Verdict::Accept);
        assert_eq!(p.accept(b, now), Verdict::Reject);
        assert_eq!(p.addr, Some(s));
    }

    #[test]
    fn first_packet_corrects_prefill_once() {
        let now = Instant::now();
        let mut p = Peer::default();
        p.signal(Some(addr("192.168.1.2:4000")), false, now);
        assert_eq!(p.accept(addr("1.2.3.4:5000"), now), Verdict::Latched);
        assert!(p.untrusted);
        assert_eq!(p.accept(addr("1.2.3.4:5001"), now), Verdict::Reject);
        assert_eq!(p.accept(addr("1.2.3.4:5000"), now), Verdict::Accept);
    }

    #[test]
    fn resignal_opens_window_until_party_speaks() {
        let now = Instant::now();
        let mut p = Peer::default();
        assert_eq!(p.accept(addr("1.2.3.4:5000"), now), Verdict::Latched);
        p.signal(Some(addr("192.168.1.2:4000")), false, now);
        // untrusted after the NAT correction? no: nothing was pre-filled
        assert_eq!(p.addr, Some(addr("192.168.1.2:4000")));
        assert_eq!(p.accept(addr("1.2.3.4:5000"), now), Verdict::Latched);
        assert_eq!(p.accept(addr("9.9.9.9:9"), now), Verdict::Reject);

        let mut q = Peer::default();
        q.accept(addr("1.2.3.4:5000"), now);
        q.signal(Some(addr("1.2.3.4:5000")), false, now);
        assert_eq!(q.accept(addr("1.2.3.4:5000"), now), Verdict::Accept);
        // The party spoke from its address: the window is closed.
        assert_eq!(q.accept(addr("9.9.9.9:9"), now), Verdict::Reject);

        let mut r = Peer::default();
        r.accept(addr("1.2.3.4:5000"), now);
        r.signal(None, false, now);
        r.signal(Some(addr("1.2.3.4:5000")), false, now);
        let later = now + UPDATE_WINDOW + Duration::from_millis(1);
        assert_eq!(r.accept(addr("5.5.5.5:5"), later), Verdict::Reject);
    }

    #[test]
    fn untrusted_party_keeps_latched_address_on_resignal() {
        let now = Instant::now();
        let mut p = Peer::default();
        p.signal(Some(addr("192.168.1.2:4000")), false, now);
        p.accept(addr("1.2.3.4:5000"), now);
        p.signal(Some(addr("192.168.1.2:4000")), false, now);
        assert_eq!(p.addr, Some(addr("1.2.3.4:5000")));
    }

    #[test]
    fn asymmetric_accepts_host_any_port() {
        let now = Instant::now();
        let mut p = Peer::default();
        p.signal(Some(addr("10.0.0.1:4000")), true, now);
        assert_eq!(p.accept(addr("10.0.0.1:4999"), now), Verdict::Accept);
        assert_eq!(p.addr, Some(addr("10.0.0.1:4000")));
        assert_eq!(p.accept(addr("10.0.0.2:4000"), now), Verdict::Reject);
    }
}
