//! The poll(2) sets and who owns each entry, in the manner of mio's poll
//! selector: a socket is registered once and gets a [`Token`]; the poller
//! keeps its `pollfd` array dense (a removed entry's place is taken by the
//! last one, and the poller fixes that entry's record itself), and after a
//! poll it lists the ready entries by owner. Nobody else sees a slot index.
//!
//! Two sets: one polled every pass (control and metrics sockets, RTP), one polled on
//! a slower clock (RTCP, a packet every few seconds per call), which keeps
//! the hot poll short.

use std::io;
use std::os::fd::RawFd;

use nix::libc;

use crate::rtpp_defines::{Party, SessionId, Stream};

/// Which set an entry is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cadence {
    /// Polled every pass of the loop.
    EveryPass,
    /// Polled on the RTCP clock.
    Slow,
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
    /// Also read in the pass before: the socket receives faster than the
    /// loop polls and likely holds several datagrams.
    pub busy: bool,
}

/// No slot: the token id is free.
const NO_SLOT: u32 = u32::MAX;

struct Entry {
    owner: Owner,
    token: u32,
    /// The pass in which this entry was last reported ready.
    ready_in: u32,
}

#[derive(Default)]
struct PollSet {
    fds: Vec<libc::pollfd>,
    entries: Vec<Entry>,
    /// Slot of each token id.
    slot_of: Vec<u32>,
    free_ids: Vec<u32>,
    pass: u32,
    events: Vec<Event>,
}

impl PollSet {
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
        self.fds.swap_remove(slot);
        self.entries.swap_remove(slot);
        if let Some(moved) = self.entries.get(slot) {
            self.slot_of[moved.token as usize] = slot as u32;
        }
        self.slot_of[token as usize] = NO_SLOT;
        self.free_ids.push(token);
    }

    fn poll(&mut self, timeout_ms: i32) -> io::Result<usize> {
        for p in self.fds.iter_mut() {
            p.revents = 0;
        }
        self.events.clear();
        // Starts at 1 (and skips 0 on wrapping) so a new entry, stamped 0,
        // never looks ready in the pass before.
        self.pass = self.pass.wrapping_add(1).max(1);
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
                busy,
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
    sets: [PollSet; 2],
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
            sets: Default::default(),
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
            set.fds[slot].fd = fd;
            set.fds[slot].events = libc::POLLIN;
            set.fds[slot].revents = 0;
        }
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
