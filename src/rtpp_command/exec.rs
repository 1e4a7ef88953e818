//! Executing a parsed command against the session table.

use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::time::{Instant, SystemTime};

use super::{
    codec_list, match_tag, Command, ErrorCode, Modifiers, Notify, Reply, StreamIds, TagMatch,
};
use crate::rtp_resizer::Resizer;
use crate::rtp_server::Player;
use crate::rtpp_account::CallRecord;
pub use crate::rtpp_account::EndReason;
use crate::rtpp_copy::{parse_remote_target, RemoteCopy};
use crate::rtpp_defines::{BindMode, Config, NOTIFY_CAP, PROTO_CAPS};
use crate::rtpp_log;
use crate::rtpp_network::parse_remote;
use crate::rtpp_proc::flush_resizer;
use crate::rtpp_record::{copy_file_name, record_file_name, RecordFile, RecordFormat};
use crate::rtpp_session::{Session, Sessions, CALLEE, CALLER, RTCP, RTP};

/// What a command runs against.
pub struct Context<'a> {
    pub cfg: &'a Config,
    pub sessions: &'a mut Sessions,
    pub now: Instant,
}

/// Runs one command and says what to answer.
pub fn execute(cmd: &Command<'_>, ctx: &mut Context<'_>) -> Reply {
    match cmd {
        // While draining, a failed version check keeps Kamailio from
        // re-enabling this relay for new calls.
        Command::Version if ctx.sessions.draining => ErrorCode::DRAINING.into(),
        Command::Version => Reply::version(),
        Command::VersionFeature(stamp) => Reply::Number(u64::from(supports(ctx.cfg, stamp))),
        Command::Update {
            mods,
            ids,
            addr,
            port,
            notify,
        } => {
            let reply = update_or_lookup(ctx, false, mods, ids, addr, port);
            if let (Reply::Port { .. }, Some((id, _))) = (&reply, ctx.sessions.find(ids)) {
                if let Some(s) = ctx.sessions.get_mut(id) {
                    arm_notify(ctx.cfg, s, notify.as_ref());
                }
            }
            reply
        }
        Command::Lookup {
            mods,
            ids,
            addr,
            port,
        } => update_or_lookup(ctx, true, mods, ids, addr, port),
        Command::Delete(ids) => delete(ctx, ids),
        Command::Record(ids) => {
            let found = ctx.sessions.find_all(ids);
            if found.is_empty() {
                return not_found("record", ids);
            }
            for (id, _) in found {
                if let Some(s) = ctx.sessions.get_mut(id) {
                    start_recording(ctx.cfg, s);
                }
            }
            Reply::Ok
        }
        Command::Copy { target, ids } => copy(ctx, target, ids),
        Command::Stop(ids) => match ctx.sessions.find(ids) {
            Some((id, from_matched)) => {
                if let Some(s) = ctx.sessions.get_mut(id) {
                    stop_player(s, if from_matched { CALLER } else { CALLEE });
                }
                Reply::Ok
            }
            None => not_found("noplay", ids),
        },
        Command::Play {
            count,
            prompt,
            codecs,
            ids,
        } => play(ctx, *count, prompt, codecs, ids),
        Command::Query(ids) => query(ctx, ids),
        Command::Info => info(ctx),
        Command::Stats { names, count } => stats(ctx, &names[..(*count).min(names.len())]),
        Command::DeleteAll => {
            rtpp_log!(Info, "deleting all active sessions");
            for id in ctx.sessions.ids() {
                end_session(ctx.sessions, id, EndReason::DeletedAll);
            }
            Reply::Ok
        }
    }
}

/// Whether `VF` answers 1 for a datestamp.
pub fn supports(cfg: &Config, stamp: &[u8]) -> bool {
    if stamp == NOTIFY_CAP.as_bytes() {
        return cfg.notify_socket.is_some();
    }
    PROTO_CAPS.iter().any(|(s, _)| s.as_bytes() == stamp)
}

/// Arms (or, when `U` names no socket, disarms) the timeout notification.
/// A socket other than the `-n` one is refused; the session stays as is.
fn arm_notify(cfg: &Config, s: &mut Session, notify: Option<&Notify<'_>>) {
    let Some(n) = notify else {
        if s.notify.take().is_some() {
            rtpp_log!(Info, "{}: disabling timeout notification", show(&s.call_id));
        }
        return;
    };
    let name = n.socket.strip_prefix(b"unix:").unwrap_or(n.socket);
    match &cfg.notify_socket {
        None => rtpp_log!(Err, "must permit notification socket with -n"),
        Some(p) if p.as_os_str().as_encoded_bytes() != name => {
            rtpp_log!(Err, "invalid socket name {}", show(n.socket))
        }
        Some(_) => {
            rtpp_log!(Info, "{}: setting timeout notification", show(&s.call_id));
            s.notify = Some(n.tag.as_deref().map(Into::into));
        }
    }
}

/// Removes a session and accounts for it (the INFO line, and the `-A`
/// file when there is one); the one place sessions end. Returns it for what
/// the caller still owes it (a timeout notification).
pub fn end_session(sessions: &mut Sessions, id: u32, why: EndReason) -> Option<Session> {
    let mut s = sessions.remove(id)?;
    if why == EndReason::Timeout {
        sessions.totals.sessions_timeout += 1;
    }
    finish_recordings(&mut s);
    let record = CallRecord::of(&s, why, SystemTime::now());
    rtpp_log!(Info, "{}", record.log_line());
    if let Some(file) = sessions.accounting.as_mut() {
        file.append(&record.json_line());
    }
    Some(s)
}

/// Records both directions of a session's RTP (and RTCP unless `-R`) into
/// `CALLID=TAG.{o,a}.{rtp,rtcp}`; channels already open are kept.
pub fn start_recording(cfg: &Config, s: &mut Session) {
    let Some(dir) = &cfg.record_dir else {
        rtpp_log!(
            Err,
            "can't record {}/{}: no recording directory (-r) given",
            show(&s.call_id),
            show(&s.tag)
        );
        return;
    };
    for kind in [RTP, RTCP] {
        if kind == RTCP && !cfg.record_rtcp {
            continue;
        }
        for party in [CALLER, CALLEE] {
            if s.recorders[kind][party].is_some() {
                continue;
            }
            let suffix = format!(
                "{}.{}",
                if party == CALLER { "o" } else { "a" },
                if kind == RTP { "rtp" } else { "rtcp" }
            );
            let name = record_file_name(&s.call_id, &s.tag, &suffix);
            s.recorders[kind][party] = open_recording(cfg, dir, &name, kind);
        }
    }
}

fn open_recording(
    cfg: &Config,
    dir: &std::path::Path,
    name: &str,
    kind: usize,
) -> Option<RecordFile> {
    let format = if cfg.record_pcap {
        RecordFormat::Pcap
    } else {
        RecordFormat::Adhoc
    };
    // A second of G.711 fits the RTP buffer, and the 1-second timer
    // flushes it; RTCP needs little.
    let capacity = if kind == RTP { 16 * 1024 } else { 4 * 1024 };
    match RecordFile::create_sized(dir, cfg.spool_dir.as_deref(), name, format, capacity) {
        Ok(f) => {
            rtpp_log!(Info, "recording to {}", f.path().display());
            Some(f)
        }
        Err(e) => {
            rtpp_log!(
                Err,
                "can't create recording {name} in {}: {e}",
                dir.display()
            );
            None
        }
    }
}

/// Flushes, closes and moves out of the spool every recording of a session.
pub fn finish_recordings(s: &mut Session) {
    for rec in s.recorders.iter_mut().flatten() {
        if let Some(f) = rec.take() {
            match f.finish() {
                Ok(path) => rtpp_log!(Info, "recording {} finished", path.display()),
                Err(e) => rtpp_log!(Err, "finishing recording: {e}"),
            }
        }
    }
}

fn stop_player(s: &mut Session, party: usize) {
    if s.players[party].take().is_some() {
        rtpp_log!(Info, "stopping player at port {}", s.port(party));
    }
}

/// `P`: plays `PROMPT.<pt>` to the FROMTAG party, for the first payload
/// type of CODECS (or of its `c` list with `session`) that has a file.
fn play(
    ctx: &mut Context<'_>,
    count: i32,
    prompt: &[u8],
    codecs: &[u8],
    ids: &StreamIds<'_>,
) -> Reply {
    use std::os::unix::ffi::OsStrExt;
    let Some((id, from_matched)) = ctx.sessions.find(ids) else {
        return not_found("play", ids);
    };
    let (ssrc, seq, ts) = {
        let r = ctx.sessions.rng.next_u64();
        (
            r as u32,
            (r >> 32) as u16,
            ctx.sessions.rng.next_u64() as u32,
        )
    };
    let Some(s) = ctx.sessions.get_mut(id) else {
        return not_found("play", ids);
    };
    let party = if from_matched { CALLER } else { CALLEE };
    stop_player(s, party);
    let list: Vec<u8> = if codecs.eq_ignore_ascii_case(b"session") {
        match &s.codecs[party] {
            Some(c) => codec_list(c).collect(),
            None => {
                rtpp_log!(Err, "play: no codec list known for {}", show(&s.call_id));
                return ErrorCode::NO_PLAYER.into();
            }
        }
    } else {
        codec_list(codecs).collect()
    };
    if count == 0 {
        return Reply::Ok;
    }
    let path = std::path::Path::new(std::ffi::OsStr::from_bytes(prompt));
    match Player::open(path, &list, count, ssrc, seq, ts, ctx.now) {
        Ok(player) => {
            rtpp_log!(
                Info,
                "{count} times playing prompt {} codec {} to port {}",
                show(prompt),
                player.payload_type(),
                s.port(party)
            );
            s.players[party] = Some(player);
            ctx.sessions.mark_timed(id);
            Reply::Ok
        }
        Err(e) => {
            rtpp_log!(Err, "can't play prompt {}: {e}", show(prompt));
            ErrorCode::NO_PLAYER.into()
        }
    }
}

/// `C`: copies what the FROMTAG party sends to a UDP target or a file.
fn copy(ctx: &mut Context<'_>, target: &[u8], ids: &StreamIds<'_>) -> Reply {
    let Some((id, from_matched)) = ctx.sessions.find(ids) else {
        return not_found("copy", ids);
    };
    let Some(s) = ctx.sessions.get_mut(id) else {
        return not_found("copy", ids);
    };
    let party = if from_matched { CALLER } else { CALLEE };
    let text = String::from_utf8_lossy(target);
    if text.starts_with("udp:") || text.starts_with("udp6:") {
        match parse_remote_target(&text).map(RemoteCopy::new) {
            Some(Ok(c)) => {
                rtpp_log!(
                    Info,
                    "copying {}/{} to {}",
                    show(&s.call_id),
                    show(&s.tag),
                    c.target()
                );
                s.copies[party] = Some(c);
            }
            Some(Err(e)) => rtpp_log!(Err, "can't open copy socket for {text}: {e}"),
            None => rtpp_log!(Err, "invalid copy target {text}"),
        }
        return Reply::Ok;
    }
    let Some(dir) = &ctx.cfg.record_dir else {
        rtpp_log!(
            Err,
            "can't copy to {text}: no recording directory (-r) given"
        );
        return Reply::Ok;
    };
    let Some(base) = copy_file_name(target) else {
        rtpp_log!(Err, "invalid copy file name {text}");
        return Reply::Ok;
    };
    for kind in [RTP, RTCP] {
        if kind == RTCP && !ctx.cfg.record_rtcp {
            continue;
        }
        let name = format!("{base}.{}", if kind == RTP { "rtp" } else { "rtcp" });
        // As in the classic daemon, a direction already recorded (by R, -a
        // or an earlier C) keeps its file: replacing it would cut that
        // recording short in the middle of the call.
        if let Some(current) = &s.recorders[kind][party] {
            rtpp_log!(
                Info,
                "{}/{}: already recording to {}, {name} not opened",
                show(&s.call_id),
                show(&s.tag),
                current.path().display()
            );
            continue;
        }
        s.recorders[kind][party] = open_recording(ctx.cfg, dir, &name, kind);
    }
    Reply::Ok
}

fn update_or_lookup(
    ctx: &mut Context<'_>,
    lookup: bool,
    mods: &Modifiers<'_>,
    ids: &StreamIds<'_>,
    addr: &[u8],
    port: &[u8],
) -> Reply {
    let cfg = ctx.cfg;
    let bridge = match &cfg.bind {
        BindMode::Bridge(ips) => Some(*ips),
        BindMode::Single { .. } => None,
    };
    if bridge.is_none() && mods.ifaces.contains(&Some(1)) {
        rtpp_log!(Err, "command syntax error: 'e' given outside bridge mode");
        return ErrorCode::SYNTAX.into();
    }
    let (id, who, created) = match ctx.sessions.find(ids) {
        // U from the caller signals the caller; L on the reply signals the
        // callee. The leg answered is always the other party's.
        Some((id, from_matched)) => {
            let named = if from_matched { CALLER } else { CALLEE };
            (id, if lookup { 1 - named } else { named }, false)
        }
        None if lookup => {
            rtpp_log!(
                Info,
                "lookup request failed: session {}, tags {}/{} not found",
                show(ids.call_id),
                show(ids.from_tag),
                ids.to_tag.map_or("NONE".into(), show)
            );
            return Reply::Port {
                port: 0,
                addr: Some(default_ip(cfg, mods)),
            };
        }
        None if ctx.sessions.draining => {
            rtpp_log!(
                Info,
                "draining: not creating session {}, no reply so the proxy tries another relay",
                show(ids.call_id)
            );
            return Reply::Silent;
        }
        None => {
            let ips = leg_ips(cfg, mods);
            let id = ctx.sessions.create(ids.call_id, ids.from_tag, ips, ctx.now);
            rtpp_log!(
                Info,
                "new session {}, tag {} requested, type {}",
                show(ids.call_id),
                show(ids.from_tag),
                if mods.weak { "weak" } else { "strong" }
            );
            (id, CALLER, true)
        }
    };
    let answered = 1 - who;
    let Some(lport) = ctx.sessions.ensure_leg(id, answered, cfg.tos) else {
        rtpp_log!(Err, "can't create listener for {}", show(ids.call_id));
        if created {
            ctx.sessions.remove(id);
            return ErrorCode::NO_PORT.into();
        }
        return ErrorCode::NO_PORT_SECOND_LEG.into();
    };
    let Some(s) = ctx.sessions.get_mut(id) else {
        return ErrorCode::NOT_FOUND.into();
    };
    // Only once the session has its first leg: a `U` refused for want of
    // ports must not leave empty recordings of a call that never existed.
    if created && cfg.record_all {
        start_recording(cfg, s);
    }
    if mods.weak {
        s.weak[who] = true;
    } else if !lookup {
        s.strong = true;
    }
    if s.to_tag.is_none() {
        // The tag that is not the session's is the other party's.
        let other = if match_tag(&s.tag, ids.from_tag) != TagMatch::None {
            ids.to_tag
        } else {
            Some(ids.from_tag)
        };
        s.to_tag = other.map(Into::into);
    }
    s.last_rx = [ctx.now; 2];
    let remote = parse_remote(addr, port, mods.ipv6);
    let remote = match remote {
        Some(r) if r.is_ipv6() != s.leg_ips[who].is_ipv6() => {
            rtpp_log!(
                Warn,
                "address {} does not match the leg's family, not pre-filled",
                r
            );
            None
        }
        Some(r) => Some(r),
        None => {
            if !(addr == b"0.0.0.0" || addr == b"::" || port == b"0") {
                rtpp_log!(
                    Warn,
                    "can't parse address {}:{}, not pre-filled",
                    show(addr),
                    show(port)
                );
            }
            None
        }
    };
    let asymmetric = mods.asymmetric.unwrap_or(bridge.is_some());
    let rtcp_remote =
        remote.and_then(|r| r.port().checked_add(1).map(|p| SocketAddr::new(r.ip(), p)));
    s.streams[RTP].parties[who].signal(remote, asymmetric, ctx.now);
    s.streams[RTCP].parties[who].signal(rtcp_remote, asymmetric, ctx.now);
    s.codecs[who] = mods.codecs.map(Into::into);
    match mods.ptime_ms {
        Some(ms) if s.resizers[who].as_ref().map(Resizer::target_ms) != Some(ms) => {
            rtpp_log!(
                Info,
                "RTP packets from {} will be resized to {ms} ms",
                party_name(who)
            );
            flush_resizer(s, who, cfg.double_small);
            s.resizers[who] = Some(Resizer::new(ms));
        }
        Some(_) => {}
        None if s.resizers[who].is_some() => {
            rtpp_log!(
                Info,
                "resizing of RTP packets from {} disabled",
                party_name(who)
            );
            flush_resizer(s, who, cfg.double_small);
        }
        None => {}
    }
    let ip = s.legs[answered]
        .as_ref()
        .map_or(s.leg_ips[answered], |l| l.ip);
    rtpp_log!(
        Info,
        "{} {}/{}: {} leg port {}, {} {}",
        if lookup { "lookup" } else { "update" },
        show(ids.call_id),
        show(&s.tag),
        if answered == CALLER {
            "caller"
        } else {
            "callee"
        },
        lport,
        if who == CALLER { "caller" } else { "callee" },
        remote.map_or("unknown".into(), |r| r.to_string())
    );
    Reply::Port {
        port: lport,
        addr: Some(ip),
    }
}

/// The local addresses of the two legs of a new session. In bridge mode
/// the first `i`/`e` picks the caller-facing leg, the second the
/// callee-facing leg (the port `U` answers); otherwise both legs use the
/// family of the command's address.
fn leg_ips(cfg: &Config, mods: &Modifiers<'_>) -> [IpAddr; 2] {
    match &cfg.bind {
        BindMode::Bridge(ips) => [0, 1].map(|i| ips[usize::from(mods.ifaces[i].unwrap_or(0))]),
        BindMode::Single { .. } => {
            let ip = default_ip(cfg, mods);
            [ip, ip]
        }
    }
}

fn default_ip(cfg: &Config, mods: &Modifiers<'_>) -> IpAddr {
    match &cfg.bind {
        BindMode::Bridge(ips) => ips[0],
        BindMode::Single { v4, v6 } => {
            let (first, second) = if mods.ipv6 { (v6, v4) } else { (v4, v6) };
            first.or(*second).unwrap_or(IpAddr::from([0, 0, 0, 0]))
        }
    }
}

fn delete(ctx: &mut Context<'_>, ids: &StreamIds<'_>) -> Reply {
    let found = ctx.sessions.find_all(ids);
    if found.is_empty() {
        return not_found("delete", ids);
    }
    for (id, _) in found {
        let Some(s) = ctx.sessions.get_mut(id) else {
            continue;
        };
        s.strong = false;
        if s.weak[0] || s.weak[1] {
            rtpp_log!(
                Info,
                "delete {}/{}: strong hold dropped, weak holders keep it",
                show(ids.call_id),
                show(&s.tag)
            );
            continue;
        }
        end_session(ctx.sessions, id, EndReason::Deleted);
    }
    Reply::Ok
}

fn query(ctx: &mut Context<'_>, ids: &StreamIds<'_>) -> Reply {
    let Some((id, from_matched)) = ctx.sessions.find(ids) else {
        return not_found("query", ids);
    };
    let Some(s) = ctx.sessions.get(id) else {
        return not_found("query", ids);
    };
    let named = if from_matched { CALLER } else { CALLEE };
    let rtp = &s.streams[RTP];
    let left = s.ttl_left(ctx.cfg.max_ttl, ctx.now);
    let ttl = if ctx.cfg.independent_ttl {
        left[0].min(left[1])
    } else {
        left[0].max(left[1])
    };
    Reply::Text(format!(
        "{} {} {} {} {}",
        ttl,
        rtp.parties[named].packets,
        rtp.parties[1 - named].packets,
        rtp.relayed,
        rtp.dropped
    ))
}

/// `G`: `name=value` pairs of the daemon's counters; every counter when no
/// name is given; an unknown name is `E1`.
fn stats(ctx: &mut Context<'_>, names: &[&[u8]]) -> Reply {
    let c = ctx.sessions.counters();
    let all: [(&str, u64); 13] = [
        ("nsess_created", ctx.sessions.created_total),
        ("nsess_destroyed", c.sessions_destroyed),
        ("nsess_timeout", c.sessions_timeout),
        ("nsess_active", ctx.sessions.active() as u64),
        ("npkts_rcvd", c.packets_received),
        ("npkts_relayed", c.packets_relayed),
        ("npkts_discard", c.packets_dropped),
        ("npkts_played", c.packets_played),
        ("ncmds_rcvd", c.commands_received),
        ("ncmds_succd", c.commands_succeeded),
        ("ncmds_errs", c.commands_failed),
        ("ncmds_repld", c.commands_repeated),
        ("nlog_dropped", crate::rtpp_log::dropped_lines()),
    ];
    let mut out = Vec::new();
    if names.is_empty() {
        out.extend(all.iter().map(|(n, v)| format!("{n}={v}")));
    }
    for name in names {
        match all.iter().find(|(n, _)| n.as_bytes() == *name) {
            Some((n, v)) => out.push(format!("{n}={v}")),
            None => {
                rtpp_log!(Err, "G: unknown counter {}", show(name));
                return ErrorCode::SYNTAX.into();
            }
        }
    }
    Reply::Text(out.join(" "))
}

fn info(ctx: &mut Context<'_>) -> Reply {
    let sessions = &*ctx.sessions;
    let mut out = String::new();
    let _ = write!(
        out,
        "sessions created: {}\nactive sessions: {}\nactive streams: {}",
        sessions.created_total,
        sessions.active(),
        sessions.active() * 2
    );
    for id in sessions.ids() {
        let Some(s) = sessions.get(id) else { continue };
        let ttl = s.ttl_left(ctx.cfg.max_ttl, ctx.now);
        for kind in [RTP, RTCP] {
            out.push('\n');
            out.push('\t');
            if kind == RTCP {
                out.push_str("C ");
            }
            info_line(&mut out, s, kind, ttl);
        }
    }
    Reply::Text(out)
}

fn info_line(out: &mut String, s: &Session, kind: usize, ttl: [u64; 2]) {
    let local = |party: usize| match &s.legs[party] {
        Some(l) => format!("{}:{}", l.ip, l.port + kind as u16),
        None => "NONE".into(),
    };
    let remote = |party: usize| {
        s.streams[kind].parties[party]
            .addr
            .map_or("NONE".into(), |a| format!("{}:{}", a.ip(), a.port()))
    };
    let st = &s.streams[kind];
    let _ = write!(
        out,
        "{}/{}: caller = {}/{}, callee = {}/{}, stats = {}/{}/{}/{}, ttl = {}/{}",
        show(&s.call_id),
        show(&s.tag),
        local(CALLER),
        remote(CALLER),
        local(CALLEE),
        remote(CALLEE),
        st.parties[CALLER].packets,
        st.parties[CALLEE].packets,
        st.relayed,
        st.dropped,
        ttl[CALLER],
        ttl[CALLEE]
    );
}

fn party_name(party: usize) -> &'static str {
    if party == CALLER {
        "caller"
    } else {
        "callee"
    }
}

fn not_found(what: &str, ids: &StreamIds<'_>) -> Reply {
    rtpp_log!(
        Info,
        "{} request failed: session {}, tags {}/{} not found",
        what,
        show(ids.call_id),
        show(ids.from_tag),
        ids.to_tag.map_or("NONE".into(), show)
    );
    ErrorCode::NOT_FOUND.into()
}

/// Bytes from the wire as printable text for logs and replies.
pub fn show(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}
