//! The poll(2) sets and who owns each entry, in the manner of mio's poll
//! selector: a socket is registered once and gets a [`Token`]; the poller
//! keeps its `pollfd` array dense (a removed entry's place is taken by the
//! last one, and the poller fixes that entry's record itself), and after a
//! poll it lists the ready entries by owner. Nobody else sees a slot index.
//!
//! Three sets: one polled every pass (control and metrics sockets, RTP),
//! one polled on a slower clock (RTCP, a packet every few seconds per
//! call, and RTP sockets silent for seconds), which keeps the hot poll
//! short, and one on a slower one still (RTCP sockets that have long had
//! nothing: many endpoints never send RTCP on its own port). An entry may also rest ([`Poller::rest`]): it stays
//! in its set, with its descriptor negated so that poll(2) passes over it
//! at almost no cost, until its time comes (see `rtpp_pacing` for who
//! rests and for how long).

use std::io;
use std::os::fd::RawFd;
use std::time::Instant;

use nix::libc;

use crate::rtpp_defines::{Party, SessionId, Stream};

/// Which set an entry is in, from the most often polled to the least.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Cadence {
    /// Polled every pass of the loop.
    EveryPass,
    /// Polled on the RTCP clock.
    Slow,
    /// Polled on the idle clock: sockets that have long had nothing.
    Idle,
}

impl Cadence {
    fn position(self) -> usize {
        self as usize
    }
}

/// A registration, held by whoever registered the socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Token {
    cadence: Cadence,
    id: u32,
}

impl Token {
    /// The set the registration is in.
    pub fn cadence(self) -> Cadence {
        self.cadence
    }
}

/// Who an entry belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner {
    /// The control module's socket or client, by the control's own number.
    Control(usize),
    /// The metrics listener (0) or a scraper's place (1 and up).
    Metrics(usize),
    /// The socket of a hand-over under way (the new process's hello).
    Handover,
    /// A media socket: packets on it come from `party` on `stream`.
    Media {
        session: SessionId,
        party: Party,
        stream: Stream,
    },
}

/// A ready entry after a poll.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Event {
    pub owner: Owner,
    pub token: Token,
    /// Also read in the pass before: the socket receives faster than the
    /// loop polls and likely holds several datagrams.
    pub busy: bool,
    /// Ready the moment its rest ended: what it holds came early, and
    /// may be more than one datagram.
    pub early: bool,
}

/// No slot: the token id is free.
const NO_SLOT: u32 = u32::MAX;

struct Entry {
    owner: Owner,
    token: u32,
    /// The pass in which this entry was last reported ready.
    ready_in: u32,
    /// Resting until then: its descriptor is negated in the pollfd.
    rest_until: Option<Instant>,
    /// The pass in which its last rest ended.
    woke_in: u32,
}

struct PollSet {
    fds: Vec<libc::pollfd>,
    entries: Vec<Entry>,
    /// Slot of each token id.
    slot_of: Vec<u32>,
    free_ids: Vec<u32>,
    pass: u32,
    events: Vec<Event>,
    /// Entries resting now.
    resting: usize,
    cadence: Cadence,
}

impl PollSet {
    fn new(cadence: Cadence) -> PollSet {
        PollSet {
            fds: Vec::new(),
            entries: Vec::new(),
            slot_of: Vec::new(),
            free_ids: Vec::new(),
            pass: 0,
            events: Vec::new(),
            resting: 0,
            cadence,
        }
    }

    fn register(&mut self, fd: RawFd, owner: Owner) -> u32 {
        let slot = self.fds.len() as u32;
        let token = match self.free_ids.pop() {
            Some(id) => {
                self.slot_of[id as usize] = slot;
                id
            }
            None => {
                self.slot_of.push(slot);
                (self.slot_of.len() - 1) as u32
            }
        };
        self.fds.push(libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        });
        self.entries.push(Entry {
            owner,
            token,
            ready_in: 0,
            rest_until: None,
            woke_in: 0,
        });
        // Room for every entry to be ready at once: filling the event
        // list in the packet path never allocates.
        self.events.reserve(self.fds.len());
        token
    }

    fn slot(&self, token: u32) -> Option<usize> {
        match self.slot_of.get(token as usize) {
            Some(&slot) if slot != NO_SLOT => Some(slot as usize),
            _ => None,
        }
    }

    fn deregister(&mut self, token: u32) {
        let Some(slot) = self.slot(token) else {
            return;
        };
        self.wake(slot);
        self.fds.swap_remove(slot);
        self.entries.swap_remove(slot);
        if let Some(moved) = self.entries.get(slot) {
            self.slot_of[moved.token as usize] = slot as u32;
        }
        self.slot_of[token as usize] = NO_SLOT;
        self.free_ids.push(token);
    }

    /// Puts a resting entry back into the poll.
    fn wake(&mut self, slot: usize) {
        if let (Some(p), Some(e)) = (self.fds.get_mut(slot), self.entries.get_mut(slot)) {
            if e.rest_until.take().is_some() {
                p.fd = !p.fd;
                self.resting -= 1;
            }
        }
    }

    /// Wakes the entries whose rest is over; returns when the next one
    /// ends, so that a poll never sleeps past it.
    fn wake_due(&mut self, now: Instant, pass: u32) -> Option<Instant> {
        let mut next: Option<Instant> = None;
        for (p, e) in self.fds.iter_mut().zip(self.entries.iter_mut()) {
            let Some(until) = e.rest_until else {
                continue;
            };
            if until <= now {
                e.rest_until = None;
                e.woke_in = pass;
                p.fd = !p.fd;
                self.resting -= 1;
            } else {
                next = Some(next.map_or(until, |n| n.min(until)));
            }
        }
        next
    }

    fn poll(&mut self, mut timeout_ms: i32) -> io::Result<usize> {
        // Starts at 1 (and skips 0 on wrapping) so a new entry, stamped 0,
        // never looks ready in the pass before.
        self.pass = self.pass.wrapping_add(1).max(1);
        if self.resting > 0 {
            let now = Instant::now();
            if let Some(next) = self.wake_due(now, self.pass) {
                // Rounded up: waking early would find it still resting.
                let until = next
                    .saturating_duration_since(now)
                    .as_micros()
                    .div_ceil(1000);
                let until = i32::try_from(until).unwrap_or(i32::MAX);
                if timeout_ms < 0 || until < timeout_ms {
                    timeout_ms = until;
                }
            }
        }
        for p in self.fds.iter_mut() {
            p.revents = 0;
        }
        self.events.clear();
        // SAFETY: the pointer and length describe our own live Vec.
        let n = unsafe {
            libc::poll(
                self.fds.as_mut_ptr(),
                self.fds.len() as libc::nfds_t,
                timeout_ms,
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let n = n as usize;
        for (p, entry) in self.fds.iter().zip(self.entries.iter_mut()) {
            if self.events.len() == n {
                break;
            }
            if !is_ready(p) {
                continue;
            }
            let busy = entry.ready_in != 0 && entry.ready_in.wrapping_add(1) == self.pass;
            entry.ready_in = self.pass;
            self.events.push(Event {
                owner: entry.owner,
                token: Token {
                    cadence: self.cadence,
                    id: entry.token,
                },
                busy,
                early: entry.woke_in == self.pass,
            });
        }
        Ok(n)
    }
}

fn is_ready(p: &libc::pollfd) -> bool {
    p.revents & (libc::POLLIN | libc::POLLOUT | libc::POLLERR | libc::POLLHUP) != 0
}

/// The poll sets of the daemon.
pub struct Poller {
    sets: [PollSet; 3],
    /// Most entries one set may have: poll(2) fails with EINVAL when
    /// asked for more than the open-files limit, even for entries whose
    /// descriptor is -1. A set past it would leave the daemon deaf and
    /// spinning, so registration is refused first.
    limit: usize,
}

impl Poller {
    /// Empty sets, limited by the process's open-files limit.
    pub fn new() -> Poller {
        let limit = usize::try_from(crate::rtpp_util::nofile_limit()).unwrap_or(usize::MAX);
        Poller::with_limit(limit)
    }

    /// Empty sets of at most `limit` entries each.
    pub fn with_limit(limit: usize) -> Poller {
        Poller {
            sets: [
                PollSet::new(Cadence::EveryPass),
                PollSet::new(Cadence::Slow),
                PollSet::new(Cadence::Idle),
            ],
            limit,
        }
    }

    fn set(&self, cadence: Cadence) -> &PollSet {
        &self.sets[cadence.position()]
    }

    fn set_mut(&mut self, cadence: Cadence) -> &mut PollSet {
        &mut self.sets[cadence.position()]
    }

    /// True when every set can take `n` more entries.
    pub fn has_room(&self, n: usize) -> bool {
        self.sets.iter().all(|s| s.fds.len() + n <= self.limit)
    }

    /// Watches `fd` (-1: a place kept for later, see [`Poller::set_fd`])
    /// for input; `None` when the set is full.
    pub fn register(&mut self, fd: RawFd, owner: Owner, cadence: Cadence) -> Option<Token> {
        if self.set(cadence).fds.len() >= self.limit {
            return None;
        }
        let id = self.set_mut(cadence).register(fd, owner);
        Some(Token { cadence, id })
    }

    /// Stops watching; the token is spent.
    pub fn deregister(&mut self, token: Token) {
        self.set_mut(token.cadence).deregister(token.id);
    }

    /// Points a registration at another descriptor (-1: ignored by poll,
    /// e.g. a paused listener or a free client place), watched for input.
    pub fn set_fd(&mut self, token: Token, fd: RawFd) {
        let set = self.set_mut(token.cadence);
        if let Some(slot) = set.slot(token.id) {
            set.wake(slot);
            set.fds[slot].fd = fd;
            set.fds[slot].events = libc::POLLIN;
            set.fds[slot].revents = 0;
        }
    }

    /// Moves a registration to the other set, keeping its descriptor and
    /// owner; returns the new token (the old one is spent), or `None`,
    /// with nothing changed, when the other set is full.
    pub fn move_to(&mut self, token: Token, cadence: Cadence) -> Option<Token> {
        if token.cadence == cadence {
            return Some(token);
        }
        if self.set(cadence).fds.len() >= self.limit {
            return None;
        }
        let from = self.set_mut(token.cadence);
        let slot = from.slot(token.id)?;
        from.wake(slot);
        let (fd, owner) = (from.fds[slot].fd, from.entries[slot].owner);
        from.deregister(token.id);
        let id = self.set_mut(cadence).register(fd, owner);
        Some(Token { cadence, id })
    }

    /// Leaves a registration out of the polls until `until` (it is still
    /// registered, and the first poll after `until` includes it again).
    /// A place without a descriptor, or one resting already, is left as
    /// it is.
    pub fn rest(&mut self, token: Token, until: Instant) {
        let set = self.set_mut(token.cadence);
        let Some(slot) = set.slot(token.id) else {
            return;
        };
        if let (Some(p), Some(e)) = (set.fds.get_mut(slot), set.entries.get_mut(slot)) {
            if p.fd >= 0 && e.rest_until.is_none() {
                p.fd = !p.fd;
                e.rest_until = Some(until);
                set.resting += 1;
            }
        }
    }

    /// Ends every rest at once, so that the next poll sees every socket
    /// (at shutdown, before the last reads).
    pub fn wake_all(&mut self) {
        for set in self.sets.iter_mut() {
            for slot in 0..set.fds.len() {
                set.wake(slot);
            }
        }
    }

    /// Entries of a set resting now.
    pub fn resting(&self, cadence: Cadence) -> usize {
        self.set(cadence).resting
    }

    /// What a registration waits for: input, room to write, or both. With
    /// neither, only an error or hang-up makes it ready.
    pub fn set_interest(&mut self, token: Token, input: bool, output: bool) {
        let set = self.set_mut(token.cadence);
        if let Some(slot) = set.slot(token.id) {
            let mut events = 0;
            if input {
                events |= libc::POLLIN;
            }
            if output {
                events |= libc::POLLOUT;
            }
            set.fds[slot].events = events;
        }
    }

    /// Waits up to `timeout_ms` for input on a set; the ready entries are
    /// then in [`Poller::events`].
    pub fn poll(&mut self, cadence: Cadence, timeout_ms: i32) -> io::Result<usize> {
        self.set_mut(cadence).poll(timeout_ms)
    }

    /// The entries the last poll of a set found ready, in set order.
    pub fn events(&self, cadence: Cadence) -> &[Event] {
        &self.set(cadence).events
    }

    /// True when the last poll found the registration ready.
    pub fn is_ready(&self, token: Token) -> bool {
        let set = self.set(token.cadence);
        set.slot(token.id)
            .is_some_and(|slot| is_ready(&set.fds[slot]))
    }

    /// Entries in a set.
    pub fn len(&self, cadence: Cadence) -> usize {
        self.set(cadence).fds.len()
    }

    /// True when a set has no entry.
    pub fn is_empty(&self, cadence: Cadence) -> bool {
        self.set(cadence).fds.is_empty()
    }
}

impl Default for Poller {
    fn default() -> Self {
        Poller::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;
    use std::os::fd::AsRawFd;

    fn media(n: u32) -> Owner {
        Owner::Media {
            session: SessionId(n),
            party: Party::Caller,
            stream: Stream::Rtp,
        }
    }

    fn ready_socket() -> (UdpSocket, UdpSocket) {
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        tx.send_to(b"x", rx.local_addr().unwrap()).unwrap();
        (rx, tx)
    }

    #[test]
    fn removal_keeps_every_other_token_pointing_at_its_socket() {
        let mut p = Poller::with_limit(100);
        let (a, _ta) = ready_socket();
        let quiet = UdpSocket::bind("127.0.0.1:0").unwrap();
        let (c, _tc) = ready_socket();
        let ta = p
            .register(a.as_raw_fd(), media(1), Cadence::EveryPass)
            .unwrap();
        let tq = p
            .register(quiet.as_raw_fd(), media(2), Cadence::EveryPass)
            .unwrap();
        let tc = p
            .register(c.as_raw_fd(), media(3), Cadence::EveryPass)
            .unwrap();
        // The last entry moves into the first one's place.
        p.deregister(ta);
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert_eq!(p.poll(Cadence::EveryPass, 0).unwrap(), 1);
        assert!(p.is_ready(tc));
        assert!(!p.is_ready(tq));
        assert!(!p.is_ready(ta), "a spent token is never ready");
        assert_eq!(p.events(Cadence::EveryPass)[0].owner, media(3));
        // A new registration reuses the spent id without confusing it.
        let tn = p.register(-1, media(4), Cadence::EveryPass).unwrap();
        assert_eq!(p.len(Cadence::EveryPass), 3);
        p.deregister(tq);
        assert!(p.poll(Cadence::EveryPass, 0).unwrap() == 1 && p.is_ready(tc));
        assert!(!p.is_ready(tn));
    }

    #[test]
    fn a_resting_entry_is_passed_over_until_its_time_and_the_poll_waits_for_it() {
        use std::time::{Duration, Instant};
        let mut p = Poller::with_limit(100);
        let (a, _ta) = ready_socket();
        let (b, tb) = ready_socket();
        let tok_a = p
            .register(a.as_raw_fd(), media(1), Cadence::EveryPass)
            .unwrap();
        let tok_b = p
            .register(b.as_raw_fd(), media(2), Cadence::EveryPass)
            .unwrap();
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(p.poll(Cadence::EveryPass, 0).unwrap(), 2);
        assert_eq!(p.events(Cadence::EveryPass)[0].token, tok_a);
        let start = Instant::now();
        p.rest(tok_a, start + Duration::from_millis(30));
        p.rest(tok_b, start + Duration::from_millis(300));
        assert_eq!(p.resting(Cadence::EveryPass), 2);
        // Both hold a datagram, yet neither is polled while resting; a
        // poll asked to wait a second wakes when the first rest ends.
        assert_eq!(p.poll(Cadence::EveryPass, 1000).unwrap(), 0);
        let waited = start.elapsed();
        assert!(waited >= Duration::from_millis(30), "{waited:?}");
        assert!(waited < Duration::from_millis(250), "{waited:?}");
        assert_eq!(p.poll(Cadence::EveryPass, 0).unwrap(), 1);
        assert_eq!(p.events(Cadence::EveryPass)[0].owner, media(1));
        assert!(
            p.events(Cadence::EveryPass)[0].early,
            "ready as its rest ended"
        );
        assert_eq!(p.resting(Cadence::EveryPass), 1);
        assert_eq!(p.poll(Cadence::EveryPass, 0).unwrap(), 1);
        assert!(!p.events(Cadence::EveryPass)[0].early, "a pass later");
        // Removing the other entry moves nothing onto a negated slot, and
        // waking all brings back what rests.
        p.deregister(tok_a);
        assert_eq!(p.resting(Cadence::EveryPass), 1);
        p.wake_all();
        assert_eq!(p.resting(Cadence::EveryPass), 0);
        assert_eq!(p.poll(Cadence::EveryPass, 0).unwrap(), 1);
        assert_eq!(p.events(Cadence::EveryPass)[0].token, tok_b);
        drop(tb);
    }

    #[test]
    fn a_registration_moved_to_the_other_set_keeps_its_socket_and_owner() {
        let mut p = Poller::with_limit(2);
        let (a, _ta) = ready_socket();
        let (b, _tb) = ready_socket();
        let tok_a = p
            .register(a.as_raw_fd(), media(1), Cadence::EveryPass)
            .unwrap();
        let tok_b = p
            .register(b.as_raw_fd(), media(2), Cadence::EveryPass)
            .unwrap();
        p.rest(
            tok_a,
            std::time::Instant::now() + std::time::Duration::from_secs(9),
        );
        let moved = p.move_to(tok_a, Cadence::Slow).unwrap();
        assert_eq!(moved.cadence(), Cadence::Slow);
        // The rest does not travel: the slow set polls it at once.
        assert_eq!(p.resting(Cadence::EveryPass), 0);
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert_eq!(p.poll(Cadence::Slow, 0).unwrap(), 1);
        assert_eq!(p.events(Cadence::Slow)[0].owner, media(1));
        assert_eq!(p.events(Cadence::Slow)[0].token, moved);
        assert_eq!(p.poll(Cadence::EveryPass, 0).unwrap(), 1);
        assert_eq!(p.events(Cadence::EveryPass)[0].token, tok_b);
        // Back again; a full set refuses and leaves it where it was.
        let (c, _tc) = ready_socket();
        p.register(c.as_raw_fd(), media(3), Cadence::Slow).unwrap();
        assert_eq!(p.move_to(tok_b, Cadence::Slow), None);
        assert_eq!(p.len(Cadence::EveryPass), 1);
        let back = p.move_to(moved, Cadence::EveryPass).unwrap();
        assert_eq!(back.cadence(), Cadence::EveryPass);
        assert_eq!(p.len(Cadence::Slow), 1);
        assert_eq!(p.poll(Cadence::EveryPass, 0).unwrap(), 2);
    }

    #[test]
    fn a_place_without_a_descriptor_never_rests() {
        let mut p = Poller::with_limit(100);
        let tok = p.register(-1, media(1), Cadence::EveryPass).unwrap();
        p.rest(
            tok,
            std::time::Instant::now() + std::time::Duration::from_secs(1),
        );
        assert_eq!(p.resting(Cadence::EveryPass), 0);
        let (a, _ta) = ready_socket();
        let other = p
            .register(a.as_raw_fd(), media(2), Cadence::EveryPass)
            .unwrap();
        p.rest(
            other,
            std::time::Instant::now() + std::time::Duration::from_secs(1),
        );
        // Pointing a resting place at a descriptor ends the rest.
        p.set_fd(other, a.as_raw_fd());
        assert_eq!(p.resting(Cadence::EveryPass), 0);
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert_eq!(p.poll(Cadence::EveryPass, 0).unwrap(), 1);
    }

    #[test]
    fn an_entry_ready_in_consecutive_passes_is_busy() {
        let mut p = Poller::with_limit(100);
        let (a, ta) = ready_socket();
        let tok = p.register(a.as_raw_fd(), media(1), Cadence::Slow).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        p.poll(Cadence::Slow, 0).unwrap();
        assert!(!p.events(Cadence::Slow)[0].busy, "first time ready");
        p.poll(Cadence::Slow, 0).unwrap();
        assert!(p.events(Cadence::Slow)[0].busy, "ready in the pass before");
        let mut buf = [0u8; 8];
        a.recv_from(&mut buf).unwrap();
        p.poll(Cadence::Slow, 0).unwrap();
        assert!(p.events(Cadence::Slow).is_empty());
        ta.send_to(b"y", a.local_addr().unwrap()).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        p.poll(Cadence::Slow, 0).unwrap();
        assert!(!p.events(Cadence::Slow)[0].busy, "a quiet pass in between");
        // A paused registration is not polled.
        p.set_fd(tok, -1);
        assert_eq!(p.poll(Cadence::Slow, 0).unwrap(), 0);
        assert!(!p.is_ready(tok));
    }

    #[test]
    fn interest_in_output_makes_a_writable_socket_ready() {
        let mut p = Poller::with_limit(10);
        let (a, _ta) = ready_socket();
        let idle = UdpSocket::bind("127.0.0.1:0").unwrap();
        let tok = p
            .register(idle.as_raw_fd(), Owner::Control(1), Cadence::EveryPass)
            .unwrap();
        assert_eq!(p.poll(Cadence::EveryPass, 0).unwrap(), 0);
        p.set_interest(tok, false, true);
        assert_eq!(p.poll(Cadence::EveryPass, 0).unwrap(), 1);
        assert!(p.is_ready(tok));
        p.set_interest(tok, false, false);
        assert_eq!(p.poll(Cadence::EveryPass, 0).unwrap(), 0);
        // A new descriptor is watched for input again.
        p.set_interest(tok, false, true);
        p.set_fd(tok, a.as_raw_fd());
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert_eq!(p.poll(Cadence::EveryPass, 0).unwrap(), 1);
        a.recv_from(&mut [0u8; 8]).unwrap();
        assert_eq!(p.poll(Cadence::EveryPass, 0).unwrap(), 0);
    }

    #[test]
    fn sets_never_pass_the_open_files_limit() {
        let mut p = Poller::with_limit(40);
        // The unix control's 32 client places and its listener.
        for i in 0..33 {
            p.register(-1, Owner::Control(i), Cadence::EveryPass)
                .unwrap();
        }
        let mut added = 0;
        while p.has_room(1) {
            p.register(-1, media(added), Cadence::EveryPass).unwrap();
            p.register(-1, media(added), Cadence::Slow).unwrap();
            added += 1;
        }
        assert_eq!(added, 7);
        assert_eq!(p.len(Cadence::EveryPass), 40);
        assert!(p.register(-1, media(99), Cadence::EveryPass).is_none());
    }
}
