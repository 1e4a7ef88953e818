//! What a hand-over carries, in the order it is written: a header with the
//! state version, the daemon-wide state (counters, drain flag, metrics,
//! `-A` file, `-n` targets, `--hep` socket), the control socket with its
//! UDP reply cache, the metrics listener, and every session. The layout is
//! described in doc/PROTOCOL.md, "Hand-over"; a change to it is a new
//! [`STATE_VERSION`].
//!
//! Decoding checks everything before anything is used: counts against
//! caps, descriptors against what the bytes say they are, ports against
//! this process's `-m`/`-M`, every session place and notification target
//! against the tables. Nothing decoded acts on the outside world (removes
//! a socket file, finishes a recording) until [`Taken::adopt`].

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::fd::OwnedFd;
use std::time::Instant;

use super::wire::{check_udp, refuse, Carry, Reader, WireResult, Writer};
use crate::rtpp_control::Control;
use crate::rtpp_defines::{ByParty, ByStream, Config, Pair, PairKey, Party, Stream};
use crate::rtpp_metrics::http::MetricsServer;
use crate::rtpp_network::PortTable;
use crate::rtpp_poll::Poller;
use crate::rtpp_session::{CarriedLeg, MediaStream, NotifyWith, Session, Sessions};
use crate::rtpp_state::Daemon;
use crate::rtpp_util::Random;

/// The state version this build writes and reads. The new process says
/// which it speaks before the old one sends anything.
pub const STATE_VERSION: u32 = 1;
/// The first bytes of the state.
const MAGIC: &[u8; 8] = b"RTPPSTAT";
/// Most sessions a hand-over may carry.
const SESSIONS_MAX: usize = 1 << 20;

impl<K: PairKey, T: Carry> Carry for Pair<K, T> {
    fn put(&self, w: &mut Writer) {
        for v in self.iter() {
            v.put(w);
        }
    }
    fn take(r: &mut Reader<'_>) -> WireResult<Self> {
        let first = T::take(r)?;
        let second = T::take(r)?;
        Ok(Pair::new(first, second))
    }
}

impl Carry for NotifyWith {
    fn put(&self, w: &mut Writer) {
        match self {
            NotifyWith::Ports => w.u8(0),
            NotifyWith::Tag(tag) => {
                w.u8(1);
                w.bytes(tag);
            }
        }
    }
    fn take(r: &mut Reader<'_>) -> WireResult<Self> {
        match r.u8()? {
            0 => Ok(NotifyWith::Ports),
            1 => Ok(NotifyWith::Tag(r.take()?)),
            v => refuse(format!("bad notification kind {v}")),
        }
    }
}

impl Carry for MediaStream {
    fn put(&self, w: &mut Writer) {
        w.put(&self.peers);
        w.u64(self.received);
        w.u64(self.relayed);
        w.u64(self.dropped);
        w.put(&self.recorders);
    }
    fn take(r: &mut Reader<'_>) -> WireResult<Self> {
        Ok(MediaStream {
            peers: r.take()?,
            received: r.u64()?,
            relayed: r.u64()?,
            dropped: r.u64()?,
            recorders: r.take()?,
        })
    }
}

/// Everything the old process hands over, written into `w`.
pub struct Given<'a> {
    pub control: &'a Control,
    pub metrics: Option<&'a MetricsServer>,
    pub daemon: &'a Daemon,
    pub sessions: &'a Sessions,
}

/// Writes the whole state.
pub fn encode(given: &Given<'_>, w: &mut Writer) {
    w.bytes.extend_from_slice(MAGIC);
    w.u32(STATE_VERSION);
    w.u32(std::process::id());
    let d = given.daemon;
    w.put(&d.counters);
    w.bool(d.draining);
    w.put(&d.metrics);
    w.put(&d.accounting);
    w.put(&d.notifier);
    w.put(&d.hep);
    given.control.handover_put(w);
    match given.metrics {
        Some(m) => {
            w.u8(1);
            w.put(m);
        }
        None => w.u8(0),
    }
    w.len(given.sessions.active());
    // In table order, which `I` lists them in; the new process numbers
    // them afresh, so no carried number can make its table sparse.
    for (_, s) in given.sessions.iter() {
        put_session(s, w);
    }
}

fn put_session(s: &Session, w: &mut Writer) {
    w.put(&s.call_id);
    w.put(&s.tag);
    w.put(&s.to_tag);
    w.put(&s.leg_ips);
    for leg in s.legs.iter() {
        match leg {
            None => w.u8(0),
            Some(l) => {
                w.u8(1);
                w.u16(l.port);
                w.put(&l.ip);
                w.fd(&l.sockets[Stream::Rtp]);
                w.fd(&l.sockets[Stream::Rtcp]);
            }
        }
    }
    w.put(&s.streams);
    w.bool(s.strong);
    w.put(&s.weak);
    w.put(&s.codecs);
    w.put(&s.last_rx);
    w.put(&s.created);
    w.put(&s.copies);
    w.put(&s.notify);
    w.put(&s.players);
    w.put(&s.resizers);
    w.u64(s.played);
    w.put(&s.tally);
    w.put(&s.analyzers);
    w.put(&s.dtmf);
    w.put(&s.quality);
}

/// The state rebuilt by the new process, not yet its own: see
/// [`Taken::adopt`].
pub struct Taken {
    pub control: Control,
    control_path: Option<std::path::PathBuf>,
    pub metrics: Option<MetricsServer>,
    pub daemon: Daemon,
    pub sessions: Sessions,
    /// The process that handed over.
    pub old_pid: u32,
}

impl Taken {
    /// Makes everything carried this process's own: from now on, its
    /// exit removes the control socket file and finishes recordings.
    pub fn adopt(&mut self) {
        self.control.adopt(self.control_path.take());
        self.sessions.adopt_recordings();
    }
}

/// Reads the header: the magic and the version.
pub fn check_header(r: &mut Reader<'_>) -> WireResult<()> {
    let magic = [
        r.u8()?,
        r.u8()?,
        r.u8()?,
        r.u8()?,
        r.u8()?,
        r.u8()?,
        r.u8()?,
        r.u8()?,
    ];
    if &magic != MAGIC {
        return refuse("not a hand-over state");
    }
    match r.u32()? {
        STATE_VERSION => Ok(()),
        v => refuse(format!(
            "state version {v}, this build reads {STATE_VERSION}"
        )),
    }
}

/// Rebuilds the state from `bytes` and the descriptors that came with
/// them, for a daemon configured by `cfg`.
pub fn decode(bytes: &[u8], fds: Vec<OwnedFd>, cfg: &Config, now: Instant) -> WireResult<Taken> {
    let mut r = Reader::new(bytes, fds, now);
    check_header(&mut r)?;
    let old_pid = r.u32()?;
    let mut rng = Random::new();
    let ports = PortTable::new(cfg.port_min, cfg.port_max, &mut rng);
    let mut daemon = Daemon::new(Poller::new(), ports);
    daemon.counters = r.take()?;
    daemon.draining = r.bool()?;
    daemon.metrics = r.take()?;
    daemon.accounting = r.take()?;
    daemon.notifier = r.take()?;
    daemon.hep = r.take()?;
    let (mut control, control_path) = Control::handover_take(&mut r)?;
    if !control.register(&mut daemon.poller) {
        return refuse("too few open files for the control socket (-L)");
    }
    let mut metrics: Option<MetricsServer> = r.take()?;
    if let Some(m) = metrics.as_mut() {
        if !m.register(&mut daemon.poller) {
            return refuse("too few open files for the metrics listener (-L)");
        }
    }
    let sessions = take_sessions(&mut r, cfg, &mut daemon)?;
    if r.remaining() != 0 || r.unused_fds() != 0 {
        return refuse(format!(
            "{} bytes and {} descriptors left over",
            r.remaining(),
            r.unused_fds()
        ));
    }
    Ok(Taken {
        control,
        control_path,
        metrics,
        daemon,
        sessions,
        old_pid,
    })
}

fn take_sessions(r: &mut Reader<'_>, cfg: &Config, daemon: &mut Daemon) -> WireResult<Sessions> {
    let n = r.len(SESSIONS_MAX, 64)?;
    let mut sessions = Sessions::new();
    let mut ports = HashSet::new();
    for _ in 0..n {
        let (session, legs) = take_session(r, cfg, daemon)?;
        for l in legs.iter().flatten() {
            if !ports.insert(l.port) {
                return refuse(format!("port {} used twice", l.port));
            }
        }
        sessions
            .restore(session, legs, daemon)
            .map_err(super::wire::WireError)?;
    }
    if !daemon.ports.claim_all(&ports) {
        return refuse("a carried port lies outside -m/-M");
    }
    Ok(sessions)
}

fn take_leg(r: &mut Reader<'_>, cfg: &Config) -> WireResult<Option<CarriedLeg>> {
    match r.u8()? {
        0 => return Ok(None),
        1 => {}
        v => return refuse(format!("bad leg tag {v}")),
    }
    let port = r.u16()?;
    let ip: IpAddr = r.take()?;
    if port < cfg.port_min || port >= cfg.port_max {
        return refuse(format!("port {port} outside -m/-M"));
    }
    let rtp = r.fd()?;
    let rtcp = r.fd()?;
    check_udp(&rtp, Some(SocketAddr::new(ip, port)))?;
    check_udp(&rtcp, Some(SocketAddr::new(ip, port + 1)))?;
    Ok(Some(CarriedLeg {
        port,
        ip,
        sockets: ByStream::new(UdpSocket::from(rtp), UdpSocket::from(rtcp)),
    }))
}

type SessionAndLegs = (Session, ByParty<Option<CarriedLeg>>);

fn take_session(r: &mut Reader<'_>, cfg: &Config, daemon: &Daemon) -> WireResult<SessionAndLegs> {
    let call_id = r.take()?;
    let tag = r.take()?;
    let to_tag = r.take()?;
    let leg_ips = r.take()?;
    let legs = ByParty::new(take_leg(r, cfg)?, take_leg(r, cfg)?);
    let s = Session {
        call_id,
        tag,
        to_tag,
        legs: ByParty::default(),
        leg_ips,
        streams: r.take()?,
        strong: r.bool()?,
        weak: r.take()?,
        codecs: r.take()?,
        last_rx: r.take()?,
        created: r.take()?,
        copies: r.take()?,
        notify: r.take()?,
        players: r.take()?,
        resizers: r.take()?,
        played: r.u64()?,
        tally: r.take()?,
        analyzers: r.take()?,
        dtmf: r.take()?,
        quality: r.take()?,
    };
    if let Some((target, _)) = &s.notify {
        if !daemon
            .notifier
            .as_ref()
            .is_some_and(|n| n.has_target(*target))
        {
            return refuse("notification target out of range");
        }
    }
    for party in Party::BOTH {
        if s.dtmf[party].is_some() && s.notify.is_none() {
            return refuse("DTMF catching without a notification target");
        }
    }
    Ok((s, legs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn another_version_is_refused() {
        let now = Instant::now();
        let mut w = Writer::new(now);
        w.bytes.extend_from_slice(MAGIC);
        w.u32(STATE_VERSION + 1);
        let mut r = Reader::new(&w.bytes, Vec::new(), now);
        let e = check_header(&mut r).unwrap_err();
        assert!(e.0.contains("state version 2"), "{e}");
    }

    #[test]
    fn a_state_comes_back_whole() {
        use crate::rtpp_defines::ControlSpec;
        use crate::rtpp_session::StreamIds;
        let cfg = Config {
            port_min: 40300,
            port_max: 40399,
            ..Config::default()
        };
        let mut rng = Random::with_seed(3);
        let ports = PortTable::new(cfg.port_min, cfg.port_max, &mut rng);
        let mut daemon = Daemon::new(Poller::with_limit(1000), ports);
        daemon.counters.commands_received = 42;
        let spec = ControlSpec::Udp("127.0.0.1:0".parse().unwrap());
        let mut control = Control::open(&spec).unwrap();
        assert!(control.register(&mut daemon.poller));
        let mut sessions = Sessions::new();
        let now = Instant::now();
        let ids = StreamIds {
            call_id: b"call",
            from_tag: b"ftag",
            to_tag: None,
        };
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let id = sessions.create(&ids, ByParty::both(ip), now, &mut daemon);
        let port = sessions
            .open_leg(id, Party::Caller, None, &mut daemon)
            .unwrap();
        let peer: SocketAddr = "127.0.0.1:4000".parse().unwrap();
        let s = sessions.get_mut(id).unwrap();
        s.streams[Stream::Rtp].peers[Party::Caller].addr = Some(peer);
        s.streams[Stream::Rtp].peers[Party::Caller].latched = true;
        s.last_rx[Party::Callee] = now - std::time::Duration::from_secs(7);

        let mut w = Writer::new(now);
        let given = Given {
            control: &control,
            metrics: None,
            daemon: &daemon,
            sessions: &sessions,
        };
        encode(&given, &mut w);
        let fds = w
            .fds
            .iter()
            .map(|&fd| nix::unistd::dup(fd).unwrap())
            .collect();
        let fds = fds_of(fds);
        let later = now + std::time::Duration::from_millis(3);
        let taken = match decode(&w.bytes, fds, &cfg, later) {
            Ok(t) => t,
            Err(e) => panic!("{e}"),
        };
        assert_eq!(taken.old_pid, std::process::id());
        assert_eq!(taken.daemon.counters.commands_received, 42);
        assert_eq!(taken.sessions.active(), 1);
        let back = taken.sessions.get(id).unwrap();
        assert_eq!(&*back.call_id, b"call");
        assert_eq!(back.port(Party::Caller), port);
        let p = &back.streams[Stream::Rtp].peers[Party::Caller];
        assert_eq!((p.addr, p.latched), (Some(peer), true));
        assert_eq!(
            later - back.last_rx[Party::Callee],
            std::time::Duration::from_secs(7)
        );
        assert_eq!(
            taken.daemon.ports.free_pairs(),
            taken.daemon.ports.total_pairs() - 1
        );
        // Every descriptor is named once: one more is refused.
        let mut extra = vec![nix::unistd::dup(w.fds[0]).unwrap()];
        extra.extend(w.fds.iter().map(|&fd| nix::unistd::dup(fd).unwrap()));
        assert!(decode(&w.bytes, fds_of(extra), &cfg, later).is_err());
    }

    fn fds_of(raw: Vec<std::os::fd::RawFd>) -> Vec<OwnedFd> {
        use std::os::fd::FromRawFd;
        // SAFETY: fresh dups, owned by nothing else.
        raw.into_iter()
            .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) })
            .collect()
    }

    #[test]
    fn garbage_is_refused() {
        let cfg = Config::default();
        for bytes in [&b""[..], b"RTPPSTAT", b"RTPPSTAT\x01\0\0\0\xff\xff"] {
            assert!(decode(bytes, Vec::new(), &cfg, Instant::now()).is_err());
        }
    }

    /// The fuzz target's seed (`fuzz/make_corpus.py`) is a whole state, so
    /// the fuzzer starts from one: decoded with descriptors like the
    /// target's, its ports moved to free ones.
    #[test]
    fn the_fuzz_seed_is_a_whole_state() {
        use std::net::{TcpListener, UdpSocket};
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/fuzz/corpus/handover/one-session"
        );
        let mut bytes = std::fs::read(path).unwrap();
        let (rtp, rtcp, port) = loop {
            let a = UdpSocket::bind("127.0.0.1:0").unwrap();
            let p = a.local_addr().unwrap().port();
            if p.is_multiple_of(2) && p < u16::MAX {
                if let Ok(b) = UdpSocket::bind(("127.0.0.1", p + 1)) {
                    break (a, b, p);
                }
            }
        };
        let metrics = TcpListener::bind("127.0.0.1:0").unwrap();
        let m = metrics.local_addr().unwrap().port();
        let mut move_port = |from: u16, to: u16, after: u8| {
            let mut needle = vec![after];
            needle.extend_from_slice(&from.to_le_bytes());
            let at = bytes.windows(3).position(|w| w == needle).unwrap();
            bytes[at + 1..at + 3].copy_from_slice(&to.to_le_bytes());
        };
        move_port(21960, port, 1);
        move_port(21962, m, 1);
        let dir = crate::test_support::TempDir::new("seed");
        let acct = std::fs::File::create(dir.path().join("acct")).unwrap();
        let fds = vec![
            OwnedFd::from(rtp),
            OwnedFd::from(rtcp),
            OwnedFd::from(UdpSocket::bind("127.0.0.1:0").unwrap()),
            OwnedFd::from(metrics),
            OwnedFd::from(acct),
        ];
        let cfg = Config {
            port_min: port,
            port_max: port + 1,
            ..Config::default()
        };
        let taken = match decode(&bytes, fds, &cfg, Instant::now()) {
            Ok(t) => t,
            Err(e) => panic!("{e}"),
        };
        assert_eq!(taken.sessions.active(), 1);
    }
}
