//! Sub-commands (extension 20191015): `CMD ARGS && SUB ARGS && ...`.
//!
//! A sub-command that does not parse rejects the whole command (`E1`,
//! nothing runs); one whose arguments are merely unusable (a `M3:1`
//! without a tag) parses, and answers `-1` when it runs.

use super::ErrorCode;
use crate::rtpp_util::url_unquote;

/// Payload type of RFC 4733 events when `M3:1` names none.
pub const DEFAULT_EVENT_PT: u8 = 101;

/// One sub-command after `&&`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubCommand {
    /// `M3:1 TAG [PT [h]]` after `U`/`L`: report the DTMF events the
    /// party at the command's address sends; `None` when its arguments are
    /// unusable (it then answers `-1`, the main command still done).
    CatchDtmf(Option<DtmfArgs>),
    /// `D` after `Q` (extension 20230314): delete the queried stream.
    Delete,
}

/// What `M3:1` asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DtmfArgs {
    /// URL-decoded; `+` is a space.
    pub tag: Vec<u8>,
    pub payload_type: u8,
    /// `h`: the event packets are caught and not relayed.
    pub hide: bool,
}

/// What a sub-command yields when it runs: `0` or `-1` on the wire.
pub type SubResult = Result<(), ()>;

/// Parses one sub-command of a main command with verb `main_verb`
/// (uppercase). Only `U`, `L` and `Q` take sub-commands.
pub fn parse_sub(main_verb: u8, tokens: &[&[u8]]) -> Result<SubCommand, ErrorCode> {
    let Some((&name, args)) = tokens.split_first() else {
        return Err(ErrorCode::SYNTAX);
    };
    match (main_verb, name) {
        (b'Q', b"D" | b"d") if args.is_empty() => Ok(SubCommand::Delete),
        (b'U' | b'L', n) if n.eq_ignore_ascii_case(b"M3:1") => {
            Ok(SubCommand::CatchDtmf(DtmfArgs::parse(args)))
        }
        _ => Err(ErrorCode::SYNTAX),
    }
}

impl DtmfArgs {
    fn parse(args: &[&[u8]]) -> Option<DtmfArgs> {
        let (&tag, rest) = args.split_first()?;
        if rest.len() > 2 {
            return None;
        }
        let spaced: Vec<u8> = tag
            .iter()
            .map(|&c| if c == b'+' { b' ' } else { c })
            .collect();
        let tag = url_unquote(&spaced)?;
        let payload_type = match rest.first() {
            None => DEFAULT_EVENT_PT,
            Some(pt) => std::str::from_utf8(pt)
                .ok()?
                .parse::<u8>()
                .ok()
                .filter(|&pt| pt <= 127)?,
        };
        let hide = match rest.get(1) {
            None => false,
            Some(m) if m.eq_ignore_ascii_case(b"h") => true,
            Some(_) => return None,
        };
        Some(DtmfArgs {
            tag,
            payload_type,
            hide,
        })
    }
}

/// The reply's tail: ` && X` for each sub-command that ran, up to and
/// including the first failure; successes at the end say nothing, so an
/// all-good compound reads like the plain reply.
pub fn results_tail(results: &[SubResult]) -> String {
    let shown = match results.iter().position(Result::is_err) {
        Some(failed) => &results[..=failed],
        None => &results[..0],
    };
    shown
        .iter()
        .map(|r| if r.is_ok() { " && 0" } else { " && -1" })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toks(s: &str) -> Vec<&[u8]> {
        s.split_whitespace().map(str::as_bytes).collect()
    }

    #[test]
    fn dtmf_arguments() {
        let args = |s: &str| match parse_sub(b'U', &toks(s)) {
            Ok(SubCommand::CatchDtmf(a)) => a,
            other => panic!("{s}: {other:?}"),
        };
        assert_eq!(
            args("M3:1 Dd%20x+y"),
            Some(DtmfArgs {
                tag: b"Dd x y".to_vec(),
                payload_type: 101,
                hide: false
            })
        );
        let a = args("m3:1 t 96 h").unwrap();
        assert_eq!((a.payload_type, a.hide), (96, true));
        for bad in [
            "M3:1",
            "M3:1 t 128",
            "M3:1 t x",
            "M3:1 t 101 q",
            "M3:1 t 101 h x",
            "M3:1 %zz",
        ] {
            assert_eq!(args(bad), None, "{bad}");
        }
    }

    #[test]
    fn what_takes_what() {
        assert_eq!(parse_sub(b'Q', &toks("D")), Ok(SubCommand::Delete));
        for (verb, sub) in [
            (b'Q', "D x"),
            (b'Q', "Dw"),
            (b'U', "D"),
            (b'Q', "M3:1 t"),
            (b'U', "M4:1"),
            (b'L', "X"),
        ] {
            assert_eq!(parse_sub(verb, &toks(sub)), Err(ErrorCode::SYNTAX), "{sub}");
        }
    }

    #[test]
    fn reply_tail() {
        assert_eq!(results_tail(&[]), "");
        assert_eq!(results_tail(&[Ok(()), Ok(())]), "");
        assert_eq!(results_tail(&[Err(())]), " && -1");
        assert_eq!(results_tail(&[Ok(()), Err(())]), " && 0 && -1");
    }
}
