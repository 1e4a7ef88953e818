//! The commands that only report: `Q` (one stream), `I` (the daemon and
//! every stream), `G` (the counters).

use std::fmt::Write as _;

use super::exec::{not_found, Context};
use super::{ErrorCode, Names, Reply};
use crate::rtpp_defines::{ByParty, Party, Stream};
use crate::rtpp_log;
use crate::rtpp_log::show;
use crate::rtpp_session::{Session, StreamIds};
use crate::rtpp_state::CounterValue;

/// The longest `I` reply: one UDP datagram must hold it with its cookie
/// (at most 65507 bytes on IPv4), and a client reading it in one go
/// should get all of it. Stream lines past it are left out and counted.
pub const MAX_INFO_REPLY: usize = 65000 - crate::rtpp_defines::MAX_ID_LEN;

/// The names `Q` answers, in the order `Qv` without names lists the
/// first five.
const QUERY_NAMES: [&str; 15] = [
    "ttl",
    "npkts_ina",
    "npkts_ino",
    "nrelayed",
    "ndropped",
    "rtpa_nsent",
    "rtpa_nrcvd",
    "rtpa_ndups",
    "rtpa_perrs",
    "rtpa_nlost",
    "rtpq_mos",
    "rtpq_r",
    "rtpq_jitter",
    "rtpq_loss",
    "rtpq_rtt",
];

/// `Q`: the stream's TTL and packet counts, or the values named.
pub fn query(
    ctx: &mut Context<'_>,
    ids: &StreamIds<'_>,
    verbose: bool,
    names: &Names<'_>,
) -> Reply {
    let Some((id, named)) = ctx.sessions.find(ids) else {
        return not_found("query", ids);
    };
    let Some(s) = ctx.sessions.get(id) else {
        return not_found("query", ids);
    };
    let wanted: Vec<&[u8]> = if names.is_empty() {
        QUERY_NAMES[..5].iter().map(|n| n.as_bytes()).collect()
    } else {
        names.as_slice().to_vec()
    };
    let mut out = Vec::with_capacity(wanted.len());
    for name in wanted {
        let Some(value) = query_value(ctx, s, named, name) else {
            rtpp_log!(Err, "Q: unknown value {}", show(name));
            return ErrorCode::SYNTAX.into();
        };
        out.push(if verbose {
            format!("{}={value}", show(name))
        } else {
            value.to_string()
        });
    }
    Reply::Text(out.join(" "))
}

/// One value of `Q`, about what `named` (the FROMTAG party) sends and
/// what the other party sends.
fn query_value(ctx: &Context<'_>, s: &Session, named: Party, name: &[u8]) -> Option<CounterValue> {
    if let Some(quality) = name.strip_prefix(b"rtpq_") {
        return quality_value(s, named, quality).map(CounterValue::Float);
    }
    let rtp = &s.streams[Stream::Rtp];
    Some(CounterValue::Int(match name {
        b"ttl" => {
            let left = s.ttl_left(ctx.cfg.max_ttl, ctx.now);
            let (caller, callee) = (left[Party::Caller], left[Party::Callee]);
            if ctx.cfg.independent_ttl {
                caller.min(callee)
            } else {
                caller.max(callee)
            }
        }
        b"npkts_ina" => rtp.peers[named].packets,
        b"npkts_ino" => rtp.peers[named.other()].packets,
        b"nrelayed" => rtp.relayed,
        b"ndropped" => rtp.dropped,
        b"rtpa_nsent" => s.rtpa(named).nsent,
        b"rtpa_nrcvd" => s.rtpa(named).nrcvd,
        b"rtpa_ndups" => s.rtpa(named).ndups,
        b"rtpa_perrs" => s.rtpa(named).perrs,
        b"rtpa_nlost" => s.rtpa(named).nlost,
        _ => return None,
    }))
}

/// A quality figure of what `named` sends so far (`rtpq_` names): MOS,
/// R, mean jitter (ms), loss (%), round trip of its leg (ms); -1 while
/// not measured.
fn quality_value(s: &Session, named: Party, name: &[u8]) -> Option<f64> {
    let report = s.quality_report();
    let d = report.direction(named);
    let value = match name {
        b"mos" => d.mos,
        b"r" => d.r_factor,
        b"jitter" => d.jitter_ms,
        b"loss" => (d.expected > 0).then_some(d.loss_pct),
        b"rtt" => d.rtt_ms,
        _ => return None,
    };
    Some(value.unwrap_or(-1.0))
}

/// `G`: the counters named, in order (`name=value` with `v`), or every
/// counter as `name=value` when none is named; an unknown name is `E1`.
pub fn stats(ctx: &mut Context<'_>, verbose: bool, names: &Names<'_>) -> Reply {
    let all = ctx
        .daemon
        .counters_with_hep(ctx.sessions.counters(&ctx.daemon.counters))
        .named(ctx.sessions.active());
    let mut out = Vec::new();
    if names.is_empty() {
        out.extend(all.iter().map(|(n, v)| format!("{n}={v}")));
    }
    for name in names.as_slice() {
        match all.iter().find(|(n, _)| n.as_bytes() == *name) {
            Some((n, v)) if verbose => out.push(format!("{n}={v}")),
            Some((_, v)) => out.push(v.to_string()),
            None => {
                rtpp_log!(Err, "G: unknown counter {}", show(name));
                return ErrorCode::SYNTAX.into();
            }
        }
    }
    Reply::Text(out.join(" "))
}

/// `I`: the five summary lines, the load line with `l`, and one line per
/// stream (RTP, then RTCP with `C `) unless `b`.
pub fn info(ctx: &mut Context<'_>, brief: bool, load: bool) -> Reply {
    let sessions = &*ctx.sessions;
    let totals = sessions.counters(&ctx.daemon.counters);
    let mut out = String::new();
    let _ = write!(
        out,
        "sessions created: {}\nactive sessions: {}\nactive streams: {}\npackets received: {}\npackets transmitted: {}",
        totals.sessions_created,
        sessions.active(),
        sessions.active() * 2,
        totals.packets_received,
        totals.packets_relayed + totals.packets_played,
    );
    if load {
        let _ = write!(
            out,
            "\naverage load: {}",
            CounterValue::Float(ctx.daemon.load.average())
        );
    }
    if brief {
        return Reply::Text(out);
    }
    let mut left_out = 0usize;
    let mut line = String::new();
    for (_, s) in sessions.iter() {
        let ttl = s.ttl_left(ctx.cfg.max_ttl, ctx.now);
        for stream in Stream::BOTH {
            line.clear();
            line.push('\n');
            line.push('\t');
            if stream == Stream::Rtcp {
                line.push_str("C ");
            }
            info_line(&mut line, s, stream, ttl);
            if left_out > 0 || out.len() + line.len() > MAX_INFO_REPLY - 64 {
                left_out += 1;
            } else {
                out.push_str(&line);
            }
        }
    }
    if left_out > 0 {
        rtpp_log!(
            Info,
            "I: {left_out} stream lines left out, the reply would not fit one datagram (I b lists none)"
        );
        let _ = write!(out, "\nstreams not listed: {left_out}");
    }
    Reply::Text(out)
}

/// One stream line as the classic daemon printed it: a leg without its
/// socket yet shows the address it will open on with port 0, an RTCP
/// stream has no timers of its own (`ttl = -1/-1`).
fn info_line(out: &mut String, s: &Session, stream: Stream, ttl: ByParty<u64>) {
    let local = |party: Party| match &s.legs[party] {
        Some(l) => format!("{}:{}", l.ip, l.port_of(stream)),
        None => format!("{}:0", s.leg_ips[party]),
    };
    let st = &s.streams[stream];
    let remote = |party: Party| {
        st.peers[party]
            .addr
            .map_or("NONE".into(), |a| format!("{}:{}", a.ip(), a.port()))
    };
    let (caller, callee) = (Party::Caller, Party::Callee);
    let ttl = match stream {
        Stream::Rtp => format!("{}/{}", ttl[caller], ttl[callee]),
        Stream::Rtcp => "-1/-1".to_string(),
    };
    let _ = write!(
        out,
        "{}/{}: caller = {}/{}, callee = {}/{}, stats = {}/{}/{}/{}, ttl = {ttl}",
        show(&s.call_id),
        show(&s.tag),
        local(caller),
        remote(caller),
        local(callee),
        remote(callee),
        st.peers[caller].packets,
        st.peers[callee].packets,
        st.relayed,
        st.dropped,
    );
}
