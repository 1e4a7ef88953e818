//! The control protocol: a command's bytes are parsed into a [`Command`]
//! (pure, no state), executed against the daemon's state elsewhere, and the
//! resulting [`Reply`] is formatted here, in one place.
//!
//! See doc/PROTOCOL.md for the wire contract and the error table.

use std::io::Write;
use std::net::IpAddr;

use crate::rtpp_defines::{CPROTOVER, MAX_ID_LEN};
use crate::rtpp_session::StreamIds;
use crate::rtpp_util::url_unquote;

mod modifiers;
mod report;
pub mod subcommand;

pub use modifiers::{codec_list, parse_modifiers, LegAddr, Modifiers};
use subcommand::{parse_sub, results_tail, SubCommand, SubResult};

/// Longest packet `z` may ask for.
pub const MAX_PTIME_MS: u32 = 1000;

/// A command, and each of its sub-commands, may hold this many tokens;
/// more is `E1` (the classic 10 were too few for the later commands).
pub const MAX_TOKENS: usize = 23;
/// Sub-commands after one command, at most.
pub const MAX_SUBCOMMANDS: usize = 15;
/// Names one `Q` may ask for.
pub const MAX_QUERY_NAMES: usize = 11;

/// An `E<code>` reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ErrorCode(pub u8);

impl ErrorCode {
    pub const EMPTY: ErrorCode = ErrorCode(0);
    pub const SYNTAX: ErrorCode = ErrorCode(1);
    pub const VERSION_ARGS: ErrorCode = ErrorCode(2);
    pub const UNKNOWN: ErrorCode = ErrorCode(3);
    pub const ARGS: ErrorCode = ErrorCode(4);
    pub const NO_PLAYER: ErrorCode = ErrorCode(6);
    pub const NO_PORT_SECOND_LEG: ErrorCode = ErrorCode(7);
    pub const NOT_FOUND: ErrorCode = ErrorCode(8);
    pub const NO_PORT: ErrorCode = ErrorCode(10);
    /// `V` while draining (not in the classic table).
    pub const DRAINING: ErrorCode = ErrorCode(15);
}

/// `NOTIFY_SOCKET [NOTIFY_TAG]` of `U`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notify<'a> {
    pub socket: &'a [u8],
    /// URL-decoded tag.
    pub tag: Option<Vec<u8>>,
}

/// Names given to `G` or `Q`, in order, without allocating.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Names<'a> {
    list: [&'a [u8]; MAX_TOKENS - 1],
    len: usize,
}

impl<'a> Names<'a> {
    fn new(names: &[&'a [u8]]) -> Names<'a> {
        let mut list: [&[u8]; MAX_TOKENS - 1] = [&[]; MAX_TOKENS - 1];
        for (slot, name) in list.iter_mut().zip(names) {
            *slot = name;
        }
        Names {
            list,
            len: names.len().min(MAX_TOKENS - 1),
        }
    }

    pub fn as_slice(&self) -> &[&'a [u8]] {
        &self.list[..self.len]
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// A parsed command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command<'a> {
    Version,
    VersionFeature(&'a [u8]),
    Update {
        mods: Modifiers<'a>,
        ids: StreamIds<'a>,
        addr: &'a [u8],
        port: &'a [u8],
        notify: Option<Notify<'a>>,
    },
    Lookup {
        mods: Modifiers<'a>,
        ids: StreamIds<'a>,
        addr: &'a [u8],
        port: &'a [u8],
    },
    Delete(StreamIds<'a>),
    Record(StreamIds<'a>),
    /// `N[a]` (extension 20200226): stop recording what the FROMTAG party
    /// sends, or with `a` both directions.
    StopRecording {
        ids: StreamIds<'a>,
        both: bool,
    },
    Copy {
        target: &'a [u8],
        ids: StreamIds<'a>,
    },
    Play {
        count: i32,
        prompt: &'a [u8],
        codecs: &'a [u8],
        ids: StreamIds<'a>,
    },
    Stop(StreamIds<'a>),
    /// `Q[v] CALLID FROMTAG [TOTAG [NAME ...]]`: the classic five fields,
    /// or the named values (extension 20150420); `v` puts `name=` before
    /// each. Names are checked once the session is found (`E8` first).
    Query {
        ids: StreamIds<'a>,
        verbose: bool,
        names: Names<'a>,
    },
    /// `I[b][l]`: `b` leaves out the per-stream lines, `l` adds the load
    /// line (extension 20140323).
    Info {
        brief: bool,
        load: bool,
    },
    DeleteAll,
    /// `G[v] [name ...]`: counters (extension 20141004); no name: all of
    /// them as `name=value`.
    Stats {
        verbose: bool,
        names: Names<'a>,
    },
}

impl Command<'_> {
    /// The modifiers of a `U` or `L`.
    pub fn modifiers(&self) -> Option<&Modifiers<'_>> {
        match self {
            Command::Update { mods, .. } | Command::Lookup { mods, .. } => Some(mods),
            _ => None,
        }
    }
}

/// A command and the sub-commands `&&` chained to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Compound<'a> {
    pub cmd: Command<'a>,
    pub subs: Vec<SubCommand>,
}

/// What a command answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// `0`.
    Ok,
    /// A bare number (`VF`).
    Number(u64),
    /// `PORT [ADDR[ 6]]`; ADDR left out for the wildcard address.
    Port { port: u16, addr: Option<IpAddr> },
    /// Free text (`V`, `Q`, `I`), without the final newline.
    Text(String),
    /// `E<code>`.
    Error(ErrorCode),
    /// A reply followed by what its sub-commands yielded.
    Compound(Box<Reply>, Vec<SubResult>),
    /// No reply at all. A draining relay stays silent to a `U` that would
    /// create a session: Kamailio's rtpproxy module takes silence (unlike an
    /// `E` reply, which fails the call) as a dead relay and retries the
    /// offer on the next relay of its set.
    Silent,
}

impl From<ErrorCode> for Reply {
    fn from(e: ErrorCode) -> Reply {
        Reply::Error(e)
    }
}

impl Reply {
    /// The version reply.
    pub fn version() -> Reply {
        Reply::Text(CPROTOVER.to_string())
    }

    /// Writes the reply as sent on the wire, cookie first when there is one.
    pub fn format(&self, cookie: Option<&[u8]>, out: &mut Vec<u8>) {
        out.clear();
        if let Some(c) = cookie {
            out.extend_from_slice(c);
            out.push(b' ');
        }
        if *self == Reply::Silent {
            out.clear();
            return;
        }
        self.write_body(out);
        out.push(b'\n');
    }

    fn write_body(&self, out: &mut Vec<u8>) {
        // Writing into a Vec cannot fail.
        let _ = match self {
            Reply::Ok => out.write_all(b"0"),
            Reply::Number(n) => write!(out, "{n}"),
            Reply::Port { port, addr } => match addr {
                Some(ip) if !ip.is_unspecified() => {
                    let six = if ip.is_ipv6() { " 6" } else { "" };
                    write!(out, "{port} {ip}{six}")
                }
                _ => write!(out, "{port}"),
            },
            Reply::Text(t) => out.write_all(t.as_bytes()),
            Reply::Error(ErrorCode(c)) => write!(out, "E{c}"),
            Reply::Compound(main, results) => {
                main.write_body(out);
                out.write_all(results_tail(results).as_bytes())
            }
            Reply::Silent => Ok(()),
        };
    }
}

/// Splits a command into tokens on space, tab, CR, LF.
pub fn tokenize(buf: &[u8]) -> impl Iterator<Item = &[u8]> {
    buf.split(|c| matches!(c, b' ' | b'\t' | b'\r' | b'\n'))
        .filter(|t| !t.is_empty())
}

/// Splits a UDP datagram into its cookie and the command after it.
pub fn split_cookie(buf: &[u8]) -> Option<(&[u8], &[u8])> {
    let start = buf.iter().position(|c| !c.is_ascii_whitespace())?;
    let rest = &buf[start..];
    let end = rest
        .iter()
        .position(|c| matches!(c, b' ' | b'\t' | b'\r' | b'\n'))
        .unwrap_or(rest.len());
    Some((&rest[..end], &rest[end..]))
}

/// Most tokens a command with all its sub-commands may hold.
const MAX_ALL_TOKENS: usize = (MAX_TOKENS + 1) * (MAX_SUBCOMMANDS + 1);

/// Parses one command (without cookie) and its sub-commands.
pub fn parse(buf: &[u8]) -> Result<Compound<'_>, ErrorCode> {
    let mut all: [&[u8]; MAX_ALL_TOKENS] = [&[]; MAX_ALL_TOKENS];
    let mut n = 0;
    for t in tokenize(buf) {
        let slot = all.get_mut(n).ok_or(ErrorCode::SYNTAX)?;
        *slot = t;
        n += 1;
    }
    if n == 0 {
        return Err(ErrorCode::EMPTY);
    }
    let mut segments = all[..n].split(|t| *t == b"&&");
    let main = segments.next().unwrap_or(&[]);
    if main.is_empty() || main.len() > MAX_TOKENS {
        return Err(ErrorCode::SYNTAX);
    }
    let cmd = parse_command(main)?;
    let mut subs = Vec::new();
    for segment in segments {
        if segment.len() > MAX_TOKENS || subs.len() == MAX_SUBCOMMANDS {
            return Err(ErrorCode::SYNTAX);
        }
        subs.push(parse_sub(main[0][0].to_ascii_uppercase(), segment)?);
    }
    Ok(Compound { cmd, subs })
}

/// Parses one command's tokens (at least one).
fn parse_command<'a>(argv: &[&'a [u8]]) -> Result<Command<'a>, ErrorCode> {
    let Some((&verb_token, args)) = argv.split_first() else {
        return Err(ErrorCode::EMPTY);
    };
    let verb = verb_token[0].to_ascii_uppercase();
    let mods = &verb_token[1..];
    match verb {
        b'V' => parse_version(mods, args),
        b'U' | b'L' => parse_update(verb == b'L', mods, args),
        b'D' | b'R' | b'S' => {
            // The classic D, R and S take no modifiers.
            if !(2..=3).contains(&args.len()) || !mods.is_empty() {
                return Err(ErrorCode::SYNTAX);
            }
            let ids = stream_ids(args[0], args[1], args.get(2).copied())?;
            Ok(match verb {
                b'D' => Command::Delete(ids),
                b'R' => Command::Record(ids),
                _ => Command::Stop(ids),
            })
        }
        b'N' => {
            let both = match mods {
                b"" => false,
                b"a" | b"A" => true,
                _ => return Err(ErrorCode::SYNTAX),
            };
            if !(2..=3).contains(&args.len()) {
                return Err(ErrorCode::SYNTAX);
            }
            let ids = stream_ids(args[0], args[1], args.get(2).copied())?;
            Ok(Command::StopRecording { ids, both })
        }
        b'Q' => parse_query(mods, args),
        b'C' => {
            if !(3..=4).contains(&args.len()) || !mods.is_empty() {
                return Err(ErrorCode::SYNTAX);
            }
            check_len(args[1])?;
            Ok(Command::Copy {
                target: args[1],
                ids: stream_ids(args[0], args[2], args.get(3).copied())?,
            })
        }
        b'P' => parse_play(mods, args),
        b'I' => {
            let letters = flags(mods, b"bl")?;
            Ok(Command::Info {
                brief: letters[0],
                load: letters[1],
            })
        }
        b'G' => Ok(Command::Stats {
            verbose: flags(mods, b"v")?[0],
            names: Names::new(args),
        }),
        b'X' => Ok(Command::DeleteAll),
        _ => Err(ErrorCode::UNKNOWN),
    }
}

/// Which of `allowed` (lowercase letters) `mods` holds, in any case; any
/// other letter is `E1`.
fn flags<const N: usize>(mods: &[u8], allowed: &[u8; N]) -> Result<[bool; N], ErrorCode> {
    let mut set = [false; N];
    for c in mods {
        let at = allowed
            .iter()
            .position(|a| *a == c.to_ascii_lowercase())
            .ok_or(ErrorCode::SYNTAX)?;
        set[at] = true;
    }
    Ok(set)
}

/// `Q[v] CALLID FROMTAG [TOTAG [NAME ...]]`.
fn parse_query<'a>(mods: &'a [u8], args: &[&'a [u8]]) -> Result<Command<'a>, ErrorCode> {
    let verbose = flags(mods, b"v")?[0];
    if !(2..=3 + MAX_QUERY_NAMES).contains(&args.len()) {
        return Err(ErrorCode::SYNTAX);
    }
    Ok(Command::Query {
        ids: stream_ids(args[0], args[1], args.get(2).copied())?,
        verbose,
        names: Names::new(args.get(3..).unwrap_or(&[])),
    })
}

/// `P[count] CALLID PROMPT CODECS FROMTAG [TOTAG]`.
fn parse_play<'a>(mods: &'a [u8], args: &[&'a [u8]]) -> Result<Command<'a>, ErrorCode> {
    if !(4..=5).contains(&args.len()) {
        return Err(ErrorCode::ARGS);
    }
    let count = if mods.is_empty() {
        1
    } else {
        std::str::from_utf8(mods)
            .ok()
            .and_then(|s| s.parse::<i32>().ok())
            .ok_or(ErrorCode::SYNTAX)?
    };
    check_len(args[1])?;
    check_len(args[2])?;
    Ok(Command::Play {
        count,
        prompt: args[1],
        codecs: args[2],
        ids: stream_ids(args[0], args[3], args.get(4).copied())?,
    })
}

fn parse_version<'a>(mods: &'a [u8], args: &[&'a [u8]]) -> Result<Command<'a>, ErrorCode> {
    if mods.first().is_some_and(|c| c.eq_ignore_ascii_case(&b'F')) {
        // VF DATESTAMP, optionally followed by one extra parameter.
        if !(1..=2).contains(&args.len()) {
            return Err(ErrorCode::VERSION_ARGS);
        }
        return Ok(Command::VersionFeature(args[0]));
    }
    if args.len() > 1 {
        return Err(ErrorCode::VERSION_ARGS);
    }
    Ok(Command::Version)
}

fn parse_update<'a>(
    lookup: bool,
    mods: &'a [u8],
    args: &[&'a [u8]],
) -> Result<Command<'a>, ErrorCode> {
    let max = if lookup { 5 } else { 7 };
    if args.len() < 4 || args.len() > max {
        return Err(ErrorCode::ARGS);
    }
    let mods = parse_modifiers(mods)?;
    // `U CALLID ADDR PORT FROMTAG NOTIFY_SOCKET NOTIFY_TAG`: no to-tag.
    let to_tag = match notify_at(args) {
        Some(4) => None,
        _ => args.get(4).copied(),
    };
    let ids = stream_ids(args[0], args[3], to_tag)?;
    let (addr, port) = (args[1], args[2]);
    if lookup {
        return Ok(Command::Lookup {
            mods,
            ids,
            addr,
            port,
        });
    }
    let notify = match notify_at(args) {
        None => None,
        Some(at) => {
            let socket = args[at];
            check_len(socket)?;
            let tag = match args.get(at + 1) {
                None => None,
                Some(raw) => Some(url_unquote(raw).ok_or(ErrorCode::ARGS)?),
            };
            Some(Notify { socket, tag })
        }
    };
    Ok(Command::Update {
        mods,
        ids,
        addr,
        port,
        notify,
    })
}

/// Where a `U`'s NOTIFY_SOCKET is among its arguments, if it has one.
/// Seven arguments: after the to-tag, then the tag. Six are ambiguous:
/// rtpproxy 2.x and later, the Sippy B2BUA and OpenSIPS send
/// `FROMTAG NOTIFY_SOCKET NOTIFY_TAG` (no to-tag), while Kamailio's
/// module sends `FROMTAG TOTAG NOTIFY_SOCKET` on the answer, as 1.2 read
/// it. A SIP tag is an RFC 3261 token, which holds neither `/` nor `:`,
/// and every notify socket name does, so the fifth argument tells them
/// apart.
fn notify_at(args: &[&[u8]]) -> Option<usize> {
    match args.len() {
        6 if args[4].iter().any(|&c| c == b'/' || c == b':') => Some(4),
        6 | 7 => Some(5),
        _ => None,
    }
}

fn check_len(token: &[u8]) -> Result<(), ErrorCode> {
    if token.len() > MAX_ID_LEN {
        Err(ErrorCode::SYNTAX)
    } else {
        Ok(())
    }
}

fn stream_ids<'a>(
    call_id: &'a [u8],
    from_tag: &'a [u8],
    to_tag: Option<&'a [u8]>,
) -> Result<StreamIds<'a>, ErrorCode> {
    check_len(call_id)?;
    check_len(from_tag)?;
    if let Some(t) = to_tag {
        check_len(t)?;
    }
    Ok(StreamIds {
        call_id,
        from_tag,
        to_tag,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(s: &str) -> Command<'_> {
        match parse(s.as_bytes()) {
            Ok(c) if c.subs.is_empty() => c.cmd,
            other => panic!("{s:?}: {other:?}"),
        }
    }

    fn err(s: &str) -> u8 {
        match parse(s.as_bytes()) {
            Err(ErrorCode(c)) => c,
            Ok(c) => panic!("{s:?} parsed as {c:?}"),
        }
    }

    #[test]
    fn versions() {
        assert_eq!(one("V"), Command::Version);
        assert_eq!(one("v extra"), Command::Version);
        assert_eq!(err("V a b"), 2);
        assert_eq!(one("VF 20050322"), Command::VersionFeature(b"20050322"));
        assert_eq!(one("vf 20050322 x"), Command::VersionFeature(b"20050322"));
        assert_eq!(err("VF"), 2);
        assert_eq!(err("VF a b c"), 2);
    }

    #[test]
    fn update_and_lookup() {
        match one("Uc0,8,101 call 10.0.0.1 4000 ftag;1") {
            Command::Update {
                mods, ids, notify, ..
            } => {
                assert_eq!(mods.codecs, Some(&b"0,8,101"[..]));
                assert_eq!(ids.from_tag, b"ftag;1");
                assert_eq!(ids.to_tag, None);
                assert_eq!(notify, None);
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            one("L call 10.0.0.1 4000 f t"),
            Command::Lookup { .. }
        ));
        assert_eq!(err("U call 10.0.0.1 4000"), 4);
        assert_eq!(err("L call 10.0.0.1 4000 f t x"), 4);
        assert_eq!(err("U c a p f t s n x"), 4);
        assert!(matches!(
            one("Uc, call 10.0.0.1 4000 f"),
            Command::Update { .. }
        ));
    }

    fn notify_of(s: &str) -> (Option<Vec<u8>>, Option<Notify<'_>>) {
        match one(s) {
            Command::Update { ids, notify, .. } => (ids.to_tag.map(<[u8]>::to_vec), notify),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn notify_forms() {
        // The full classic form: to-tag, socket, tag (decoded).
        let (to, n) = notify_of("U c a p f t unix:/tmp/s hello%20world");
        assert_eq!(to.as_deref(), Some(&b"t"[..]));
        let n = n.unwrap();
        assert_eq!(n.socket, b"unix:/tmp/s");
        assert_eq!(n.tag.as_deref(), Some(&b"hello world"[..]));
        // Kamailio's answer: to-tag and socket, no tag.
        let (to, n) = notify_of("U c a p f;1 t;1 unix:/tmp/s");
        assert_eq!(to.as_deref(), Some(&b"t;1"[..]));
        assert_eq!(n.unwrap().tag, None);
        // 2.x, B2BUA, OpenSIPS: socket and tag without a to-tag.
        for sock in [
            "/tmp/s",
            "unix:/tmp/s",
            "tcp:%%CC_SELF%%:2000",
            "tcp:127.0.0.1:2000",
        ] {
            let cmd = format!("U c a p f {sock} r%20abc");
            let (to, n) = notify_of(&cmd);
            assert_eq!(to, None, "{sock}");
            let n = n.unwrap();
            assert_eq!(n.socket, sock.as_bytes());
            assert_eq!(n.tag.as_deref(), Some(&b"r abc"[..]));
        }
        assert_eq!(err("U c a p f t /tmp/s bad%zz"), 4);
        assert_eq!(err("U c a p f /tmp/s bad%zz"), 4);
    }

    #[test]
    fn delete_family() {
        assert!(matches!(one("D c f"), Command::Delete(_)));
        assert!(matches!(one("D c f t"), Command::Delete(_)));
        assert_eq!(err("D c"), 1);
        assert_eq!(err("D c f t x"), 1);
        assert_eq!(err("Dw c f t"), 1);
        assert_eq!(err("Rx c f"), 1);
        assert_eq!(err("Sx c f"), 1);
        assert!(matches!(one("C c name f"), Command::Copy { .. }));
        assert_eq!(err("C c name"), 1);
        assert_eq!(err("Cx c name f"), 1);
    }

    #[test]
    fn stop_recording() {
        assert!(matches!(
            one("N c f"),
            Command::StopRecording { both: false, .. }
        ));
        assert!(matches!(
            one("Na c f t"),
            Command::StopRecording { both: true, .. }
        ));
        assert_eq!(err("Nx c f"), 1);
        assert_eq!(err("N c"), 1);
        assert_eq!(err("N c f t x"), 1);
    }

    #[test]
    fn queries() {
        match one("Qv c f t ttl rtpa_nlost") {
            Command::Query { verbose, names, .. } => {
                assert!(verbose);
                assert_eq!(names.as_slice(), [&b"ttl"[..], b"rtpa_nlost"]);
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            one("Q c f"),
            Command::Query { verbose: false, .. }
        ));
        assert_eq!(err("Qx c f"), 1);
        assert_eq!(err("Q c"), 1);
        let twelve = ["ttl"; 12].join(" ");
        assert_eq!(err(&format!("Q c f t {twelve}")), 1);
        let eleven = ["ttl"; 11].join(" ");
        assert!(parse(format!("Q c f t {eleven}").as_bytes()).is_ok());
    }

    #[test]
    fn play() {
        match one("P-1 c prompt 0,8 f t") {
            Command::Play { count, prompt, .. } => {
                assert_eq!(count, -1);
                assert_eq!(prompt, b"prompt");
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            one("P c p session f"),
            Command::Play { count: 1, .. }
        ));
        assert_eq!(err("P c p 0"), 4);
        assert_eq!(err("Pxx c p 0 f"), 1);
        let long = format!("P c {} 0 f", "x".repeat(5000));
        assert_eq!(err(&long), 1);
    }

    #[test]
    fn other_verbs() {
        assert_eq!(
            one("I"),
            Command::Info {
                brief: false,
                load: false
            }
        );
        assert_eq!(
            one("Ib"),
            Command::Info {
                brief: true,
                load: false
            }
        );
        assert_eq!(
            one("ILB"),
            Command::Info {
                brief: true,
                load: true
            }
        );
        assert_eq!(err("Ix"), 1);
        match one("Gv nsess_created npkts_rcvd") {
            Command::Stats { verbose, names } => {
                assert!(verbose);
                assert_eq!(names.as_slice()[1], b"npkts_rcvd");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(err("Gq"), 1);
        assert_eq!(one("x"), Command::DeleteAll);
        assert_eq!(err("Z"), 3);
        assert_eq!(err(""), 0);
        assert_eq!(err(" \r\n"), 0);
    }

    #[test]
    fn sub_commands() {
        let c = parse(b"U c 10.0.0.1 4000 f && M3:1 tag 101 h").unwrap();
        assert!(matches!(c.cmd, Command::Update { .. }));
        assert_eq!(c.subs.len(), 1);
        let c = parse(b"Q c f t && D").unwrap();
        assert_eq!(c.subs, [SubCommand::Delete]);
        for bad in [
            "D c f && D",
            "G && D",
            "Q c f t &&",
            "Q c f t && && D",
            "&& D",
            "Q c f t && D x",
            "U c 10.0.0.1 4000 f && M9:1",
        ] {
            assert_eq!(err(bad), 1, "{bad}");
        }
        // At most 15 sub-commands.
        let fifteen = " && M3:1 t".repeat(15);
        assert!(parse(format!("U c a 1 f{fifteen}").as_bytes()).is_ok());
        assert_eq!(err(&format!("U c a 1 f{fifteen} && M3:1 t")), 1);
    }

    #[test]
    fn tokens_are_capped() {
        let words = |n: usize| vec!["x"; n].join(" ");
        // 23 tokens are read; 24 are E1 (the classic cut at 10 silently).
        assert_eq!(err(&format!("U c a 1 f {}", words(18))), 4);
        assert_eq!(err(&format!("U c a 1 f {}", words(19))), 1);
        assert_eq!(split_cookie(b"  ck V\n"), Some((&b"ck"[..], &b" V\n"[..])));
        assert_eq!(split_cookie(b"ck"), Some((&b"ck"[..], &b""[..])));
        assert_eq!(split_cookie(b"  "), None);
    }

    #[test]
    fn replies_format() {
        let mut out = Vec::new();
        Reply::Port {
            port: 35000,
            addr: Some("::1".parse().unwrap()),
        }
        .format(Some(b"ck"), &mut out);
        assert_eq!(out, b"ck 35000 ::1 6\n");
        Reply::Port {
            port: 35000,
            addr: Some("0.0.0.0".parse().unwrap()),
        }
        .format(None, &mut out);
        assert_eq!(out, b"35000\n");
        Reply::Error(ErrorCode(8)).format(Some(b"c"), &mut out);
        assert_eq!(out, b"c E8\n");
        let port = Reply::Port {
            port: 24270,
            addr: None,
        };
        Reply::Compound(Box::new(port.clone()), vec![Err(())]).format(None, &mut out);
        assert_eq!(out, b"24270 && -1\n");
        Reply::Compound(Box::new(port), vec![Ok(())]).format(None, &mut out);
        assert_eq!(out, b"24270\n");
        Reply::Silent.format(Some(b"c"), &mut out);
        assert!(out.is_empty());
    }
}

pub mod exec;
