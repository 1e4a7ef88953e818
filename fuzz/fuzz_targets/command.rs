//! Control commands: every input is parsed whole (the pure parser and the
//! UDP cookie split), then run line by line against a real session table
//! on a small loopback port range, checking after each command that the
//! table is consistent (`I`, `G nsess_active`, the port table and the poll
//! sets agree) and that every name a command carries becomes a file name
//! that stays inside the recording directory.
#![no_main]

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Instant;

use libfuzzer_sys::fuzz_target;
use rtpproxy::rtpp_command::exec::{execute, Context};
use rtpproxy::rtpp_command::{parse, split_cookie, Command, Compound, Reply};
use rtpproxy::rtpp_control::Origin;
use rtpproxy::rtpp_defines::{BindMode, Config, NotifyTarget};
use rtpproxy::rtpp_log::{self, Level};
use rtpproxy::rtpp_network::PortTable;
use rtpproxy::rtpp_notify::{Destination, Notifier};
use rtpproxy::rtpp_poll::{Cadence, Poller};
use rtpproxy::rtpp_record::{copy_file_name, record_file_name};
use rtpproxy::rtpp_session::{Sessions, StreamIds};
use rtpproxy::rtpp_state::Daemon;
use rtpproxy::rtpp_util::Random;

/// Media ports the executed commands may bind: 20 pairs on loopback, so a
/// long input also runs the table out (E10/E7). Kept apart from the ranges
/// tests/hardening.rs uses (21000-21959).
const PORT_MIN: u16 = 21960;
const PORT_MAX: u16 = 21999;
/// The unix notification target commands may name.
const NOTIFY_PATH: &str = "/tmp/rtpp-fuzz-notify.sock";
/// Commands executed per input; an input is at most a few KB anyway.
const MAX_COMMANDS: usize = 64;

fn config(bridge: bool) -> Config {
    let lo: IpAddr = [127, 0, 0, 1].into();
    Config {
        bind: if bridge {
            BindMode::Bridge([lo, [127, 0, 0, 2].into()])
        } else {
            BindMode::Single {
                v4: Some(lo),
                v6: Some("::1".parse().unwrap_or(lo)),
            }
        },
        // Timeout notifications may be armed; nothing is sent (no timers run).
        notify_targets: vec![
            NotifyTarget::Unix(PathBuf::from(NOTIFY_PATH)),
            NotifyTarget::TcpSelf {
                name: "tcp:%%CC_SELF%%:9".into(),
                port: 9,
            },
        ],
        tos: None,
        port_min: PORT_MIN,
        port_max: PORT_MAX,
        ..Config::default()
    }
}

/// `C ... udp:HOST:PORT` with a host name would resolve it (DNS): only IP
/// literals are executed, and the copy channel they open sends nothing
/// here, since no packet is relayed.
fn resolves_a_name(cmd: &Command<'_>) -> bool {
    let Command::Copy { target, .. } = cmd else {
        return false;
    };
    let lower = target.to_ascii_lowercase();
    lower.starts_with(b"udp")
        && !lower
            .iter()
            .skip(3)
            .all(|c| c.is_ascii_hexdigit() || b"6:.[]".contains(c))
}

/// A recording's file name must be one path component: no `/`, no NUL,
/// not `.` or `..` (doc/PROTOCOL.md: `../` in a Call-ID once escaped `-r`).
fn check_file_name(name: &str) {
    assert!(!name.contains('/') && !name.contains('\0'), "{name:?}");
    assert!(name != "." && name != "..", "{name:?}");
}

fn check_names(cmd: &Command<'_>) {
    let ids: Option<&StreamIds<'_>> = match cmd {
        Command::Update { ids, .. }
        | Command::Lookup { ids, .. }
        | Command::Delete(ids)
        | Command::Record(ids)
        | Command::Stop(ids)
        | Command::Query { ids, .. }
        | Command::StopRecording { ids, .. }
        | Command::Play { ids, .. } => Some(ids),
        Command::Copy { target, ids } => {
            if let Some(base) = copy_file_name(target) {
                check_file_name(&format!("{base}.rtcp"));
            }
            Some(ids)
        }
        _ => None,
    };
    if let Some(ids) = ids {
        check_file_name(&record_file_name(ids.call_id, ids.from_tag, "o.rtp"));
        if let Some(t) = ids.to_tag {
            check_file_name(&record_file_name(ids.call_id, t, "a.rtcp"));
        }
    }
}

fn run(
    cfg: &Config,
    sessions: &mut Sessions,
    daemon: &mut Daemon,
    cmd: &Compound<'_>,
    now: Instant,
) -> Reply {
    let origin = Origin::Udp(std::net::SocketAddr::from(([127, 0, 0, 1], 5060)));
    let mut ctx = Context {
        cfg,
        sessions,
        daemon,
        now,
        origin: &origin,
    };
    execute(cmd, &mut ctx)
}

/// Parses and runs a command the check itself makes.
fn run_text(
    cfg: &Config,
    sessions: &mut Sessions,
    daemon: &mut Daemon,
    text: &[u8],
    now: Instant,
) -> Reply {
    match parse(text) {
        Ok(cmd) => run(cfg, sessions, daemon, &cmd, now),
        Err(e) => panic!("{e:?} for {text:?}"),
    }
}

/// `I`, `G nsess_active`, the port table and the poll sets agree.
fn check_consistent(cfg: &Config, sessions: &mut Sessions, daemon: &mut Daemon, now: Instant) {
    let active = sessions.active();
    let Reply::Text(info) = run_text(cfg, sessions, daemon, b"I", now) else {
        panic!("I did not answer text");
    };
    let streams = info.lines().filter(|l| l.starts_with('\t')).count();
    assert_eq!(
        streams,
        2 * active,
        "I lists {streams} streams for {active} sessions"
    );
    assert!(info.contains(&format!("\nactive sessions: {active}\n")));
    let g = run_text(cfg, sessions, daemon, b"Gv nsess_active", now);
    assert_eq!(g, Reply::Text(format!("nsess_active={active}")));
    let legs: usize = sessions.iter().map(|(_, s)| s.open_legs()).sum();
    let ports = &daemon.ports;
    assert_eq!(
        ports.free_pairs() + legs,
        ports.total_pairs(),
        "ports leaked"
    );
    let polled = |c| daemon.poller.len(c);
    assert_eq!(polled(Cadence::Slow), legs, "RTCP poll set out of step");
    assert_eq!(polled(Cadence::EveryPass), legs, "RTP poll set out of step");
    for (id, s) in sessions.iter() {
        let ids = StreamIds {
            call_id: &s.call_id,
            from_tag: &s.tag,
            to_tag: None,
        };
        assert!(
            sessions.find(&ids).is_some(),
            "session {id:?} not found by its ids"
        );
    }
}

fuzz_target!(|data: &[u8]| {
    rtpp_log::open_stderr(Level::Crit);

    // The pure side: any bytes, as a unix command and as a UDP datagram.
    let mut out = Vec::new();
    if let Ok(compound) = parse(data) {
        check_names(&compound.cmd);
    }
    if let Some((cookie, rest)) = split_cookie(data) {
        assert!(!cookie.is_empty());
        if let Err(e) = parse(rest) {
            Reply::Error(e).format(Some(cookie), &mut out);
            assert!(out.starts_with(cookie) && out.ends_with(b"\n"));
        }
    }

    // The stateful side: one command per line against a fresh table.
    let cfg = config(data.first().is_some_and(|b| b & 1 == 1));
    let mut rng = Random::with_seed(u64::from(data.len() as u32));
    let ports = PortTable::new(PORT_MIN, PORT_MAX, &mut rng);
    let mut daemon = Daemon::new(Poller::new(), ports);
    daemon.notifier = Some(Notifier::new(vec![Destination::Unix(PathBuf::from(
        NOTIFY_PATH,
    ))]));
    let mut sessions = Sessions::new();
    let now = Instant::now();
    for line in data.split(|&c| c == b'\n').take(MAX_COMMANDS) {
        let Ok(cmd) = parse(line) else { continue };
        if resolves_a_name(&cmd.cmd) {
            continue;
        }
        let reply = run(&cfg, &mut sessions, &mut daemon, &cmd, now);
        reply.format(Some(b"ck"), &mut out);
        assert!(reply == Reply::Silent || (out.starts_with(b"ck ") && out.ends_with(b"\n")));
        check_consistent(&cfg, &mut sessions, &mut daemon, now);
    }
    assert_eq!(
        run_text(&cfg, &mut sessions, &mut daemon, b"X", now),
        Reply::Ok
    );
    assert_eq!(sessions.active(), 0);
    assert_eq!(daemon.ports.free_pairs(), daemon.ports.total_pairs());
    assert!(daemon.poller.is_empty(Cadence::EveryPass) && daemon.poller.is_empty(Cadence::Slow));
});
