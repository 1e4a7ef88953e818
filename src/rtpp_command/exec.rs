//! Executing a parsed command: find the sessions it names, ask the session
//! module to change them, say what to answer. Sessions are created, given
//! legs and ended only through `rtpp_session`.

use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use super::subcommand::{DtmfArgs, SubCommand, SubResult};
use super::{codec_list, report, Command, Compound, ErrorCode, LegAddr, Modifiers, Notify, Reply};
use crate::rtp_resizer::Resizer;
use crate::rtp_server::{prompt_files, Player};
use crate::rtpp_account::EndReason;
use crate::rtpp_control::Origin;
use crate::rtpp_copy::{parse_remote_target, RemoteCopy};
use crate::rtpp_defines::{
    BindMode, ByParty, Config, NotifyTarget, Party, SessionId, Stream, NOTIFY_CAP, PROTO_CAPS,
};
use crate::rtpp_log;
use crate::rtpp_log::show;
use crate::rtpp_network::parse_remote;
use crate::rtpp_notify::{Destination, Notifier};
use crate::rtpp_proc::flush_resizer;
use crate::rtpp_record::copy_file_name;
use crate::rtpp_session::{match_tag, NotifyWith, Session, Sessions, StreamIds, TagMatch};
use crate::rtpp_state::Daemon;

/// What a command runs against.
pub struct Context<'a> {
    pub cfg: &'a Config,
    pub sessions: &'a mut Sessions,
    pub daemon: &'a mut Daemon,
    pub now: Instant,
    /// Who sent the command.
    pub origin: &'a Origin<'a>,
}

/// Runs a command, then its sub-commands in order while they succeed,
/// and says what to answer. A command that fails runs no sub-command and
/// answers its plain error.
pub fn execute(compound: &Compound<'_>, ctx: &mut Context<'_>) -> Reply {
    let (reply, target) = execute_command(&compound.cmd, ctx);
    if compound.subs.is_empty() || matches!(reply, Reply::Error(_) | Reply::Silent) {
        return reply;
    }
    let mut results = Vec::with_capacity(compound.subs.len());
    for sub in &compound.subs {
        let result = match target {
            Some(target) => run_sub(ctx, sub, target),
            None => Err(()),
        };
        results.push(result);
        if result.is_err() {
            break;
        }
    }
    Reply::Compound(Box::new(reply), results)
}

/// Runs one command; also says which stream and party its sub-commands
/// act on: the party at a `U`/`L`'s address, the stream `Q` queried.
fn execute_command(cmd: &Command<'_>, ctx: &mut Context<'_>) -> (Reply, Option<Target>) {
    let reply = match cmd {
        // While draining, a failed version check keeps Kamailio from
        // re-enabling this relay for new calls.
        Command::Version if ctx.daemon.draining => ErrorCode::DRAINING.into(),
        Command::Version => Reply::version(),
        Command::VersionFeature(stamp) => Reply::Number(u64::from(supports(ctx.cfg, stamp))),
        Command::Update {
            mods,
            ids,
            addr,
            port,
            notify,
        } => {
            let req = Request {
                verb: Verb::Update,
                mods,
                ids,
                addr,
                port,
            };
            let (reply, target) = update_or_lookup(ctx, &req);
            if let (Reply::Port { .. }, Some(t)) = (&reply, target) {
                if let Some(s) = ctx.sessions.get_mut(t.id) {
                    let notifier = ctx.daemon.notifier.as_mut();
                    arm_notify(ctx.cfg, ctx.origin, notifier, s, notify.as_ref());
                }
            }
            return (reply, target);
        }
        Command::Lookup {
            mods,
            ids,
            addr,
            port,
        } => {
            let req = Request {
                verb: Verb::Lookup,
                mods,
                ids,
                addr,
                port,
            };
            return update_or_lookup(ctx, &req);
        }
        Command::Query {
            ids,
            verbose,
            names,
        } => {
            let reply = report::query(ctx, ids, *verbose, names);
            let target = ctx
                .sessions
                .find(ids)
                .map(|(id, party)| Target { id, party });
            return (reply, target);
        }
        Command::Delete(ids) => delete(ctx, ids),
        Command::Record(ids) => record(ctx, ids),
        Command::StopRecording { ids, both } => stop_recording(ctx, ids, *both),
        Command::Copy { target, ids } => copy(ctx, target, ids),
        Command::Stop(ids) => stop(ctx, ids),
        Command::Play {
            count,
            prompt,
            codecs,
            ids,
        } => play(ctx, *count, prompt, codecs, ids),
        Command::Info { brief, load } => report::info(ctx, *brief, *load),
        Command::Stats { verbose, names } => report::stats(ctx, *verbose, names),
        Command::DeleteAll => {
            rtpp_log!(Info, "deleting all active sessions");
            ctx.sessions.end_all(EndReason::DeletedAll, ctx.daemon);
            Reply::Ok
        }
    };
    (reply, None)
}

/// The stream a command acted on and the party it named.
#[derive(Debug, Clone, Copy)]
struct Target {
    id: SessionId,
    party: Party,
}

fn run_sub(ctx: &mut Context<'_>, sub: &SubCommand, target: Target) -> SubResult {
    match sub {
        SubCommand::CatchDtmf(None) => Err(()),
        SubCommand::CatchDtmf(Some(args)) => catch_dtmf(ctx, target, args),
        SubCommand::Delete => {
            if end_unless_held_weakly(ctx, target.id) {
                Ok(())
            } else {
                Err(())
            }
        }
    }
}

/// `&& M3:1`: report what `target.party` sends as RFC 4733 events to the
/// session's notification target.
fn catch_dtmf(ctx: &mut Context<'_>, target: Target, args: &DtmfArgs) -> SubResult {
    let tag = args.tag.clone();
    ctx.sessions
        .catch_dtmf(target.id, target.party, tag, args.payload_type, args.hide)
        .map_err(|why| {
            rtpp_log!(
                Err,
                "M3:1: DTMF catching for the {} refused: {why:?}",
                target.party
            );
        })
}

/// Whether `VF` answers 1 for a datestamp.
pub fn supports(cfg: &Config, stamp: &[u8]) -> bool {
    if stamp == NOTIFY_CAP.as_bytes() {
        return !cfg.notify_targets.is_empty();
    }
    PROTO_CAPS.iter().any(|(s, _)| s.as_bytes() == stamp)
}

/// Arms (or, when `U` names no socket, disarms) the timeout notification.
/// A socket that names none of the `-n` targets is refused; the session
/// stays as is.
fn arm_notify(
    cfg: &Config,
    origin: &Origin,
    notifier: Option<&mut Notifier>,
    s: &mut Session,
    notify: Option<&Notify<'_>>,
) {
    let Some(n) = notify else {
        if s.notify.take().is_some() {
            rtpp_log!(Info, "{}: disabling timeout notification", show(&s.call_id));
        }
        return;
    };
    let Some(notifier) = notifier else {
        rtpp_log!(Err, "must permit notification socket with -n");
        return;
    };
    let Some(target) = named_target(cfg, n.socket) else {
        rtpp_log!(Err, "invalid socket name {}", show(n.socket));
        return;
    };
    let to = Destination::of(target, origin.ipv4(), cfg.control.bound_ipv4());
    let Some(id) = notifier.target(&to) else {
        rtpp_log!(
            Err,
            "{}: too many notification targets, not notifying {to}",
            show(&s.call_id)
        );
        return;
    };
    rtpp_log!(
        Info,
        "{}: setting timeout notification to {to}",
        show(&s.call_id)
    );
    let with = match n.tag.as_deref() {
        Some(tag) => NotifyWith::Tag(tag.into()),
        None => NotifyWith::Ports,
    };
    s.notify = Some((id, with));
}

/// The `-n` target a NOTIFY_SOCKET names: a unix one by its path (with or
/// without `unix:`), a TCP one by its `-n` value exactly as given.
fn named_target<'c>(cfg: &'c Config, socket: &[u8]) -> Option<&'c NotifyTarget> {
    let path = socket.strip_prefix(b"unix:").unwrap_or(socket);
    cfg.notify_targets.iter().find(|t| match t {
        NotifyTarget::Unix(p) => p.as_os_str().as_encoded_bytes() == path,
        NotifyTarget::Tcp { name, .. } | NotifyTarget::TcpSelf { name, .. } => {
            name.as_bytes() == socket
        }
    })
}

/// `R`: records every stream the command names.
fn record(ctx: &mut Context<'_>, ids: &StreamIds<'_>) -> Reply {
    let found = ctx.sessions.find_all(ids);
    if found.is_empty() {
        return not_found("record", ids);
    }
    for id in found {
        if let Some(s) = ctx.sessions.get_mut(id) {
            s.start_recording(ctx.cfg);
        }
    }
    Reply::Ok
}

/// `S`: stops the prompt playing to the FROMTAG party.
fn stop(ctx: &mut Context<'_>, ids: &StreamIds<'_>) -> Reply {
    let Some((id, party)) = ctx.sessions.find(ids) else {
        return not_found("noplay", ids);
    };
    if let Some(s) = ctx.sessions.get_mut(id) {
        stop_player(s, party);
    }
    Reply::Ok
}

fn stop_player(s: &mut Session, party: Party) {
    if s.players[party].take().is_some() {
        s.tally.players_destroyed += 1;
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
    let Some((id, party)) = ctx.sessions.find(ids) else {
        return not_found("play", ids);
    };
    let rng = &mut ctx.daemon.rng;
    let (ssrc, seq, ts) = {
        let r = rng.next_u64();
        (r as u32, (r >> 32) as u16, rng.next_u64() as u32)
    };
    let Some(s) = ctx.sessions.get_mut(id) else {
        return not_found("play", ids);
    };
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
    let path = absolute_prompt(std::ffi::OsStr::from_bytes(prompt));
    match Player::open(&path, &list, count, ssrc, seq, ts, ctx.now) {
        Ok(player) => {
            let times = if count < 0 {
                "until stopped".to_string()
            } else {
                format!("{count} times")
            };
            rtpp_log!(
                Info,
                "playing prompt {} {times}, codec {} to port {}",
                show(prompt),
                player.payload_type(),
                s.port(party)
            );
            ctx.sessions.start_player(id, party, player);
            Reply::Ok
        }
        Err(e) => {
            rtpp_log!(
                Err,
                "can't play prompt {}: {e} (tried {})",
                path.display(),
                tried_files(&path, &list)
            );
            ErrorCode::NO_PLAYER.into()
        }
    }
}

/// A relative prompt name resolves against the working directory, which is
/// `/` once the daemon runs in the background: made absolute, the name in
/// the log is the file the daemon looked for, not the one the operator
/// meant. An empty name stays empty, for [`Player::open`] to refuse.
fn absolute_prompt(name: &std::ffi::OsStr) -> std::path::PathBuf {
    let given = std::path::Path::new(name);
    std::path::absolute(given).unwrap_or_else(|_| given.to_path_buf())
}

/// The prompt files a failed `P` looked for, for its log line.
fn tried_files(prompt: &std::path::Path, codecs: &[u8]) -> String {
    let files = prompt_files(prompt, codecs);
    if files.is_empty() {
        return "no file: no payload type of the list is one prompts are played in".into();
    }
    let names: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
    names.join(", ")
}

/// `C`: copies what the FROMTAG party sends to a UDP target or a file.
fn copy(ctx: &mut Context<'_>, target: &[u8], ids: &StreamIds<'_>) -> Reply {
    let Some((id, party)) = ctx.sessions.find(ids) else {
        return not_found("copy", ids);
    };
    let Some(s) = ctx.sessions.get_mut(id) else {
        return not_found("copy", ids);
    };
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
    match copy_file_name(target) {
        Some(base) => s.copy_to_files(ctx.cfg, party, &base),
        None => rtpp_log!(Err, "invalid copy file name {text}"),
    }
    Reply::Ok
}

/// `U` or `L`: they share everything but whom they sign up and whether
/// they may create a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verb {
    Update,
    Lookup,
}

impl Verb {
    fn name(self) -> &'static str {
        match self {
            Verb::Update => "update",
            Verb::Lookup => "lookup",
        }
    }
}

/// A `U` or `L` as parsed.
struct Request<'a> {
    verb: Verb,
    mods: &'a Modifiers<'a>,
    ids: &'a StreamIds<'a>,
    addr: &'a [u8],
    port: &'a [u8],
}

/// The session a `U`/`L` signs a party up in, and that party.
struct SignUp {
    id: SessionId,
    /// The party whose address the command carries.
    who: Party,
    created: bool,
}

fn update_or_lookup(ctx: &mut Context<'_>, req: &Request<'_>) -> (Reply, Option<Target>) {
    let (mods, ids) = (req.mods, req.ids);
    if !ctx.cfg.bridged() && mods.ifaces.contains(&Some(1)) {
        rtpp_log!(Err, "command syntax error: 'e' given outside bridge mode");
        return (ErrorCode::SYNTAX.into(), None);
    }
    let leg_ip = match mods.leg_addr.map(local_address).transpose() {
        Ok(ip) => ip,
        Err(e) => {
            rtpp_log!(Err, "{} {}: {e}", req.verb.name(), show(ids.call_id));
            return (ErrorCode::SYNTAX.into(), None);
        }
    };
    let sign_up = match find_or_create(ctx, req, leg_ip) {
        Ok(found) => found,
        Err(reply) => return (reply, None),
    };
    let target = Some(Target {
        id: sign_up.id,
        party: sign_up.who,
    });
    (answer_sign_up(ctx, req, &sign_up, leg_ip), target)
}

/// The rest of a `U`/`L` once its session is known: the answered leg's
/// port (a new one with `n`), the party signed up, the reply.
fn answer_sign_up(
    ctx: &mut Context<'_>,
    req: &Request<'_>,
    sign_up: &SignUp,
    leg_ip: Option<IpAddr>,
) -> Reply {
    let (mods, ids) = (req.mods, req.ids);
    // Signalling comes before media (an answer, a call taken off hold):
    // sockets polled less often for their silence are polled as usual.
    ctx.sessions
        .touch(sign_up.id, ctx.now, &mut ctx.daemon.poller);
    // The leg answered is always the other party's.
    let answered = sign_up.who.other();
    if let (Some(ip), false) = (leg_ip, sign_up.created) {
        ctx.sessions
            .set_leg_ip(sign_up.id, answered, ip, mods.new_port);
    }
    if mods.new_port && !sign_up.created {
        match ctx
            .sessions
            .reopen_leg(sign_up.id, answered, ctx.cfg.tos, ctx.daemon)
        {
            Ok(true) => rtpp_log!(
                Info,
                "{}: new port for the {answered} leg",
                show(ids.call_id)
            ),
            Ok(false) => {}
            Err(e) => {
                rtpp_log!(
                    Err,
                    "{}: no new port for the {answered} leg: {e}",
                    show(ids.call_id)
                );
                return ErrorCode::NO_PORT_SECOND_LEG.into();
            }
        }
    }
    let Some(lport) = open_answered_leg(ctx, sign_up, ids) else {
        return if sign_up.created {
            ErrorCode::NO_PORT.into()
        } else {
            ErrorCode::NO_PORT_SECOND_LEG.into()
        };
    };
    let Some(s) = ctx.sessions.get_mut(sign_up.id) else {
        return ErrorCode::NOT_FOUND.into();
    };
    // Only once the session has its first leg: a `U` refused for want of
    // ports must not leave empty recordings of a call that never existed.
    if sign_up.created && ctx.cfg.record_all {
        s.start_recording(ctx.cfg);
    }
    let remote = sign_up_party(ctx.cfg, s, req, sign_up.who, ctx.now);
    if let Some(resizer) = resize_change(ctx.cfg, s, sign_up.who, mods.ptime_ms) {
        ctx.sessions.start_resizer(sign_up.id, sign_up.who, resizer);
    }
    let Some(s) = ctx.sessions.get(sign_up.id) else {
        return ErrorCode::NOT_FOUND.into();
    };
    let ip = s.legs[answered]
        .as_ref()
        .map_or(s.leg_ips[answered], |l| l.ip);
    rtpp_log!(
        Info,
        "{} {}/{}: {answered} leg port {lport}, {} {}",
        req.verb.name(),
        show(ids.call_id),
        show(&s.tag),
        sign_up.who,
        remote.map_or("unknown".into(), |r| r.to_string())
    );
    Reply::Port {
        port: lport,
        addr: Some(ip),
    }
}

/// Finds the session a `U`/`L` names, or lets a `U` create it; the error
/// is the reply when there is nothing to sign up in.
fn find_or_create(
    ctx: &mut Context<'_>,
    req: &Request<'_>,
    leg_ip: Option<IpAddr>,
) -> Result<SignUp, Reply> {
    let (verb, mods, ids) = (req.verb, req.mods, req.ids);
    // U from the caller signals the caller; L on the reply signals the
    // callee.
    if let Some((id, named)) = ctx.sessions.find(ids) {
        let who = match verb {
            Verb::Update => named,
            Verb::Lookup => named.other(),
        };
        return Ok(SignUp {
            id,
            who,
            created: false,
        });
    }
    if verb == Verb::Lookup {
        rtpp_log!(
            Info,
            "lookup request failed: session {}, tags {}/{} not found",
            show(ids.call_id),
            show(ids.from_tag),
            ids.to_tag.map_or("NONE".into(), show)
        );
        return Err(Reply::Port {
            port: 0,
            addr: Some(default_ip(ctx.cfg, mods)),
        });
    }
    if ctx.daemon.draining {
        rtpp_log!(
            Info,
            "draining: not creating session {}, no reply so the proxy tries another relay",
            show(ids.call_id)
        );
        return Err(Reply::Silent);
    }
    let ips = leg_ip.map_or_else(|| leg_ips(ctx.cfg, mods), ByParty::both);
    let id = ctx.sessions.create(ids, ips, ctx.now, ctx.daemon);
    rtpp_log!(
        Info,
        "new session {}, tag {} requested, type {}",
        show(ids.call_id),
        show(ids.from_tag),
        if mods.weak { "weak" } else { "strong" }
    );
    Ok(SignUp {
        id,
        who: Party::Caller,
        created: true,
    })
}

/// Opens the leg a `U`/`L` answers with; a session this command created
/// and could give no leg ends again.
fn open_answered_leg(ctx: &mut Context<'_>, sign_up: &SignUp, ids: &StreamIds<'_>) -> Option<u16> {
    let answered = sign_up.who.other();
    let port = ctx
        .sessions
        .open_leg(sign_up.id, answered, ctx.cfg.tos, ctx.daemon);
    if port.is_none() {
        rtpp_log!(Err, "can't create listener for {}", show(ids.call_id));
        if sign_up.created {
            ctx.sessions.discard(sign_up.id, ctx.daemon);
        }
    }
    port
}

/// Applies what a `U`/`L` says about party `who`: its hold, the other
/// party's tag, its address (and the RTCP guess), its codecs. Returns the
/// address it signalled, if usable.
fn sign_up_party(
    cfg: &Config,
    s: &mut Session,
    req: &Request<'_>,
    who: Party,
    now: Instant,
) -> Option<SocketAddr> {
    let (mods, ids) = (req.mods, req.ids);
    if mods.weak {
        s.weak[who] = true;
    } else if req.verb == Verb::Update {
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
    s.last_rx = ByParty::both(now);
    let remote = signalled_remote(s.leg_ips[who], req.addr, req.port, mods.ipv6);
    let asymmetric = mods.asymmetric.unwrap_or(cfg.bridged());
    let rtcp_remote =
        remote.and_then(|r| r.port().checked_add(1).map(|p| SocketAddr::new(r.ip(), p)));
    s.streams[Stream::Rtp].peers[who].signal(remote, asymmetric, now);
    s.streams[Stream::Rtcp].peers[who].signal(rtcp_remote, asymmetric, now);
    s.codecs[who] = mods.codecs.map(Into::into);
    remote
}

/// The address a `U`/`L` signals, when it is one media can go to from a
/// leg bound to `leg_ip`.
fn signalled_remote(leg_ip: IpAddr, addr: &[u8], port: &[u8], ipv6: bool) -> Option<SocketAddr> {
    match parse_remote(addr, port, ipv6) {
        Some(r) if r.is_ipv6() != leg_ip.is_ipv6() => {
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
    }
}

/// Applies `zNN` (or its absence) to what `who` sends: what it held is
/// sent first; returns the re-packetizer to start, if a new one is due.
fn resize_change(
    cfg: &Config,
    s: &mut Session,
    who: Party,
    ptime_ms: Option<u32>,
) -> Option<Resizer> {
    let current = s.resizers[who].as_ref().map(Resizer::target_ms);
    match ptime_ms {
        Some(ms) if current != Some(ms) => {
            rtpp_log!(Info, "RTP packets from {who} will be resized to {ms} ms");
            flush_resizer(s, who, cfg.double_small);
            Some(Resizer::new(ms))
        }
        None if current.is_some() => {
            rtpp_log!(Info, "resizing of RTP packets from {who} disabled");
            flush_resizer(s, who, cfg.double_small);
            None
        }
        _ => None,
    }
}

/// The local addresses of the two legs of a new session. In bridge mode
/// the first `i`/`e` picks the caller-facing leg, the second the
/// callee-facing leg (the port `U` answers); otherwise both legs use the
/// family of the command's address.
fn leg_ips(cfg: &Config, mods: &Modifiers<'_>) -> ByParty<IpAddr> {
    match &cfg.bind {
        BindMode::Bridge(ips) => ByParty::new(
            ips[usize::from(mods.ifaces[0].unwrap_or(0))],
            ips[usize::from(mods.ifaces[1].unwrap_or(0))],
        ),
        BindMode::Single { .. } => ByParty::both(default_ip(cfg, mods)),
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

/// `D`: drops the strong hold of every stream named; a stream nobody
/// holds weakly ends.
fn delete(ctx: &mut Context<'_>, ids: &StreamIds<'_>) -> Reply {
    let found = ctx.sessions.find_all(ids);
    if found.is_empty() {
        return not_found("delete", ids);
    }
    for id in found {
        end_unless_held_weakly(ctx, id);
    }
    Reply::Ok
}

/// Drops a stream's strong hold and ends it unless a weak holder keeps
/// it; true when it ended.
fn end_unless_held_weakly(ctx: &mut Context<'_>, id: SessionId) -> bool {
    let Some(s) = ctx.sessions.get_mut(id) else {
        return false;
    };
    s.strong = false;
    if s.weak.iter().any(|&w| w) {
        rtpp_log!(
            Info,
            "delete {}/{}: strong hold dropped, weak holders keep it",
            show(&s.call_id),
            show(&s.tag)
        );
        return false;
    }
    ctx.sessions.end(id, EndReason::Deleted, ctx.daemon)
}

/// `N`: stops recording and copying what the FROMTAG party sends (with
/// `a`, both directions) in every stream named; `E8` when nothing was
/// being recorded.
fn stop_recording(ctx: &mut Context<'_>, ids: &StreamIds<'_>, both: bool) -> Reply {
    let mut stopped = false;
    for id in ctx.sessions.find_all(ids) {
        let Some(s) = ctx.sessions.get_mut(id) else {
            continue;
        };
        let named = if match_tag(&s.tag, ids.from_tag) == TagMatch::None {
            Party::Callee
        } else {
            Party::Caller
        };
        for party in Party::BOTH {
            if party == named || both {
                stopped |= s.stop_recording(party);
            }
        }
    }
    if stopped {
        Reply::Ok
    } else {
        not_found("stop recording", ids)
    }
}

/// The local address `l`/`r` asks a leg to open on: one of this host's
/// (checked by binding to it), or the one the kernel routes from toward
/// the peer.
fn local_address(at: LegAddr) -> std::io::Result<IpAddr> {
    use std::net::UdpSocket;
    match at {
        LegAddr::Local(ip) => UdpSocket::bind(SocketAddr::new(ip, 0)).map(|_| ip),
        LegAddr::Remote(peer) => {
            let any: IpAddr = if peer.is_ipv6() {
                std::net::Ipv6Addr::UNSPECIFIED.into()
            } else {
                std::net::Ipv4Addr::UNSPECIFIED.into()
            };
            let probe = UdpSocket::bind(SocketAddr::new(any, 0))?;
            // connect(2) on UDP sends nothing; it only picks the route.
            probe.connect(SocketAddr::new(peer, 9))?;
            Ok(probe.local_addr()?.ip())
        }
    }
}

pub(super) fn not_found(what: &str, ids: &StreamIds<'_>) -> Reply {
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
