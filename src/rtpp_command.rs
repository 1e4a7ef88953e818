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

/// Longest packet `z` may ask for.
pub const MAX_PTIME_MS: u32 = 1000;

/// At most this many tokens of a command are looked at.
pub const MAX_TOKENS: usize = 10;

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

/// Modifiers of `U` and `L`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Modifiers<'a> {
    /// `a` (true) or `s` (false); `None` = the mode's default.
    pub asymmetric: Option<bool>,
    /// Interfaces picked by `i` (0) and `e` (1), in the order given.
    pub ifaces: [Option<u8>; 2],
    /// `6`: the command's address is IPv6.
    pub ipv6: bool,
    /// `w`: this side holds the session weakly.
    pub weak: bool,
    /// `zNN`: re-packetize to this many milliseconds (a multiple of 10, at most 1000).
    pub ptime_ms: Option<u32>,
    /// `cLIST`: payload types offered by this party, validated.
    pub codecs: Option<&'a [u8]>,
    /// The modifier letters as given, for [`Modifiers::unknown`].
    pub text: &'a [u8],
}

impl Modifiers<'_> {
    /// Letters that mean nothing to us: logged and otherwise ignored, as
    /// the classic daemon did.
    pub fn unknown(&self) -> impl Iterator<Item = char> + '_ {
        unknown_modifiers(self.text)
    }
}

/// `NOTIFY_SOCKET [NOTIFY_TAG]` of `U`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notify<'a> {
    pub socket: &'a [u8],
    /// URL-decoded tag.
    pub tag: Option<Vec<u8>>,
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
    Query(StreamIds<'a>),
    Info,
    DeleteAll,
    /// `G [name ...]`: counters, all of them when no name is given.
    Stats {
        names: [&'a [u8]; MAX_TOKENS - 1],
        count: usize,
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
            Reply::Silent => {
                out.clear();
                return;
            }
        };
        out.push(b'\n');
    }
}

/// Splits a command into at most [`MAX_TOKENS`] tokens on space, tab, CR, LF.
pub fn tokenize(buf: &[u8]) -> impl Iterator<Item = &[u8]> {
    buf.split(|c| matches!(c, b' ' | b'\t' | b'\r' | b'\n'))
        .filter(|t| !t.is_empty())
        .take(MAX_TOKENS)
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

/// Parses one command (without cookie).
pub fn parse(buf: &[u8]) -> Result<Command<'_>, ErrorCode> {
    let mut argv: [&[u8]; MAX_TOKENS] = [&[]; MAX_TOKENS];
    let mut argc = 0;
    for t in tokenize(buf) {
        argv[argc] = t;
        argc += 1;
    }
    if argc == 0 {
        return Err(ErrorCode::EMPTY);
    }
    let verb = argv[0][0].to_ascii_uppercase();
    let mods = &argv[0][1..];
    let args = &argv[1..argc];
    match verb {
        b'V' => parse_version(mods, args),
        b'U' | b'L' => parse_update(verb == b'L', mods, args),
        b'D' | b'R' | b'S' | b'Q' => {
            if !(2..=3).contains(&args.len()) {
                return Err(ErrorCode::SYNTAX);
            }
            // The classic D, R and S take no modifiers; Q ignores them.
            if verb != b'Q' && !mods.is_empty() {
                return Err(ErrorCode::SYNTAX);
            }
            let ids = stream_ids(args[0], args[1], args.get(2).copied())?;
            Ok(match verb {
                b'D' => Command::Delete(ids),
                b'R' => Command::Record(ids),
                b'S' => Command::Stop(ids),
                _ => Command::Query(ids),
            })
        }
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
        b'I' => Ok(Command::Info),
        b'G' => {
            let mut names: [&[u8]; MAX_TOKENS - 1] = [&[]; MAX_TOKENS - 1];
            for (slot, name) in names.iter_mut().zip(args) {
                *slot = name;
            }
            Ok(Command::Stats {
                names,
                count: args.len(),
            })
        }
        b'X' => Ok(Command::DeleteAll),
        _ => Err(ErrorCode::UNKNOWN),
    }
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
    let ids = stream_ids(args[0], args[3], args.get(4).copied())?;
    let (addr, port) = (args[1], args[2]);
    if lookup {
        return Ok(Command::Lookup {
            mods,
            ids,
            addr,
            port,
        });
    }
    let notify = match args.get(5) {
        None => None,
        Some(socket) => {
            check_len(socket)?;
            let tag = match args.get(6) {
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

/// Parses the letters after `U`/`L`. Unknown letters are ignored (see
/// [`Modifiers::unknown`]); bad `z`/`c` values and a third `i`/`e` are `E1`.
pub fn parse_modifiers(mods: &[u8]) -> Result<Modifiers<'_>, ErrorCode> {
    let mut m = Modifiers {
        text: mods,
        ..Modifiers::default()
    };
    let mut n_ifaces = 0;
    let mut i = 0;
    while i < mods.len() {
        let c = mods[i].to_ascii_lowercase();
        i += 1;
        match c {
            b'a' => m.asymmetric = Some(true),
            b's' => m.asymmetric = Some(false),
            b'i' | b'e' => {
                if n_ifaces >= 2 {
                    return Err(ErrorCode::SYNTAX);
                }
                m.ifaces[n_ifaces] = Some(u8::from(c == b'e'));
                n_ifaces += 1;
            }
            b'6' => m.ipv6 = true,
            b'w' => m.weak = true,
            b'z' => {
                let digits = count_while(&mods[i..], |c| c.is_ascii_digit());
                let ms: u32 = std::str::from_utf8(&mods[i..i + digits])
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .ok_or(ErrorCode::SYNTAX)?;
                i += digits;
                // Whole 10 ms units only (the classic daemon silently
                // rounded down), and no more than a second of audio.
                if ms == 0 || !ms.is_multiple_of(10) || ms > MAX_PTIME_MS {
                    return Err(ErrorCode::SYNTAX);
                }
                m.ptime_ms = Some(ms);
            }
            b'c' => {
                let len = count_while(&mods[i..], |c| c.is_ascii_digit() || c == b',');
                let list = &mods[i..i + len];
                i += len;
                if !valid_codec_list(list) {
                    return Err(ErrorCode::SYNTAX);
                }
                m.codecs = Some(list);
            }
            _ => {}
        }
    }
    Ok(m)
}

/// Letters of a `U`/`L` modifier string that mean nothing to us.
fn unknown_modifiers(mods: &[u8]) -> impl Iterator<Item = char> + '_ {
    let mut skip_digits = false;
    mods.iter().filter_map(move |&c| {
        let lc = c.to_ascii_lowercase();
        if skip_digits && (c.is_ascii_digit() || c == b',') {
            return None;
        }
        skip_digits = matches!(lc, b'z' | b'c');
        match lc {
            b'a' | b's' | b'i' | b'e' | b'6' | b'w' | b'z' | b'c' => None,
            _ => Some(c as char),
        }
    })
}

fn count_while(s: &[u8], pred: impl Fn(u8) -> bool) -> usize {
    s.iter().take_while(|&&c| pred(c)).count()
}

/// A comma list of payload types 0..=127, no empty items.
fn valid_codec_list(list: &[u8]) -> bool {
    !list.is_empty()
        && list.split(|&c| c == b',').all(|item| {
            !item.is_empty()
                && item.len() <= 3
                && std::str::from_utf8(item)
                    .ok()
                    .and_then(|s| s.parse::<u16>().ok())
                    .is_some_and(|pt| pt <= 127)
        })
}

/// Payload types of a validated codec list, in order.
pub fn codec_list(list: &[u8]) -> impl Iterator<Item = u8> + '_ {
    list.split(|&c| c == b',').filter_map(|item| {
        std::str::from_utf8(item)
            .ok()
            .and_then(|s| s.parse::<u8>().ok())
            .filter(|&pt| pt <= 127)
    })
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

    fn err(s: &str) -> u8 {
        match parse(s.as_bytes()) {
            Err(ErrorCode(c)) => c,
            Ok(c) => panic!("{s:?} parsed as {c:?}"),
        }
    }

    #[test]
    fn versions() {
        assert_eq!(parse(b"V"), Ok(Command::Version));
        assert_eq!(parse(b"v extra"), Ok(Command::Version));
        assert_eq!(err("V a b"), 2);
        assert_eq!(
            parse(b"VF 20050322"),
            Ok(Command::VersionFeature(b"20050322"))
        );
        assert_eq!(
            parse(b"vf 20050322 x"),
            Ok(Command::VersionFeature(b"20050322"))
        );
        assert_eq!(err("VF"), 2);
        assert_eq!(err("VF a b c"), 2);
    }

    #[test]
    fn update_and_lookup() {
        let c = parse(b"Uc0,8,101 call 10.0.0.1 4000 ftag;1").unwrap();
        match c {
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
            parse(b"L call 10.0.0.1 4000 f t"),
            Ok(Command::Lookup { .. })
        ));
        assert_eq!(err("U call 10.0.0.1 4000"), 4);
        assert_eq!(err("L call 10.0.0.1 4000 f t x"), 4);
        assert_eq!(err("U c a p f t s n x"), 4);
    }

    #[test]
    fn notify_tag_is_decoded() {
        match parse(b"U c a p f t unix:/tmp/s hello%20world").unwrap() {
            Command::Update {
                notify: Some(n), ..
            } => {
                assert_eq!(n.socket, b"unix:/tmp/s");
                assert_eq!(n.tag.as_deref(), Some(&b"hello world"[..]));
            }
            other => panic!("{other:?}"),
        }
        // A socket without a tag is fine (the classic daemon crashed on it).
        assert!(parse(b"U c a p f t /tmp/s").is_ok());
        assert_eq!(err("U c a p f t /tmp/s bad%zz"), 4);
    }

    #[test]
    fn modifiers() {
        let m = parse_modifiers(b"aie6wz20c8,0").unwrap();
        assert_eq!(m.asymmetric, Some(true));
        assert_eq!(m.ifaces, [Some(0), Some(1)]);
        assert!(m.ipv6 && m.weak);
        assert_eq!(m.ptime_ms, Some(20));
        assert_eq!(m.codecs, Some(&b"8,0"[..]));
        assert_eq!(parse_modifiers(b"z15"), Err(ErrorCode::SYNTAX));
        assert_eq!(parse_modifiers(b"z0"), Err(ErrorCode::SYNTAX));
        assert_eq!(parse_modifiers(b"z2000"), Err(ErrorCode::SYNTAX));
        assert_eq!(parse_modifiers(b"z1000").unwrap().ptime_ms, Some(1000));
        assert_eq!(parse_modifiers(b"as").unwrap().asymmetric, Some(false));
        assert_eq!(parse_modifiers(b"z"), Err(ErrorCode::SYNTAX));
        assert_eq!(parse_modifiers(b"z5"), Err(ErrorCode::SYNTAX));
        assert_eq!(parse_modifiers(b"c"), Err(ErrorCode::SYNTAX));
        assert_eq!(parse_modifiers(b"c8,,0"), Err(ErrorCode::SYNTAX));
        assert_eq!(parse_modifiers(b"c8,"), Err(ErrorCode::SYNTAX));
        assert_eq!(parse_modifiers(b"c200"), Err(ErrorCode::SYNTAX));
        assert_eq!(parse_modifiers(b"iei"), Err(ErrorCode::SYNTAX));
        // Unknown letters are ignored.
        assert!(parse_modifiers(b"xyq").is_ok());
        assert_eq!(unknown_modifiers(b"xc8,0z20q").collect::<String>(), "xq");
    }

    #[test]
    fn delete_family() {
        assert!(matches!(parse(b"D c f"), Ok(Command::Delete(_))));
        assert!(matches!(parse(b"D c f t"), Ok(Command::Delete(_))));
        assert_eq!(err("D c"), 1);
        assert_eq!(err("D c f t x"), 1);
        assert_eq!(err("Dw c f t"), 1);
        assert_eq!(err("Rx c f"), 1);
        assert_eq!(err("Sx c f"), 1);
        assert!(matches!(parse(b"Qv c f"), Ok(Command::Query(_))));
        assert_eq!(err("Q c"), 1);
        assert!(matches!(parse(b"C c name f"), Ok(Command::Copy { .. })));
        assert_eq!(err("C c name"), 1);
        assert_eq!(err("Cx c name f"), 1);
    }

    #[test]
    fn play() {
        match parse(b"P-1 c prompt 0,8 f t").unwrap() {
            Command::Play { count, prompt, .. } => {
                assert_eq!(count, -1);
                assert_eq!(prompt, b"prompt");
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            parse(b"P c p session f"),
            Ok(Command::Play { count: 1, .. })
        ));
        assert_eq!(err("P c p 0"), 4);
        assert_eq!(err("Pxx c p 0 f"), 1);
        let long = format!("P c {} 0 f", "x".repeat(5000));
        assert_eq!(err(&long), 1);
    }

    #[test]
    fn other_verbs() {
        assert_eq!(parse(b"I"), Ok(Command::Info));
        match parse(b"G nsess_created npkts_rcvd") {
            Ok(Command::Stats { names, count }) => {
                assert_eq!(count, 2);
                assert_eq!(names[1], b"npkts_rcvd");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(parse(b"x"), Ok(Command::DeleteAll));
        assert_eq!(err("Z"), 3);
        assert_eq!(err(""), 0);
        assert_eq!(err(" \r\n"), 0);
    }

    #[test]
    fn tokens_are_capped() {
        assert_eq!(tokenize(b"a b c d e f g h i j k l").count(), 10);
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
    }
}

pub mod exec;
