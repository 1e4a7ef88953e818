//! The modifier letters of `U` and `L` (`Uc0,8z20`, `Ul10.0.0.5`, ...).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::{ErrorCode, MAX_PTIME_MS};

/// `lADDR` / `rADDR` (extension 20090810): where a leg's ports are opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LegAddr {
    /// `l`: this local address.
    Local(IpAddr),
    /// `r`: the local address the kernel routes from toward this peer.
    Remote(IpAddr),
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
    /// `cLIST`: payload types offered by this party, validated (`c,` is an
    /// empty list, as the classic daemon took it).
    pub codecs: Option<&'a [u8]>,
    /// `l`/`r`: the address the answered leg (all legs, on creation) opens on.
    pub leg_addr: Option<LegAddr>,
    /// `n` (extension 20150330): a fresh port pair for the answered leg.
    pub new_port: bool,
    /// The modifier letters as given, for [`Modifiers::unknown`].
    pub text: &'a [u8],
}

impl Modifiers<'_> {
    /// Letters that mean nothing to us: logged and otherwise ignored, as
    /// the classic daemon did.
    pub fn unknown(&self) -> impl Iterator<Item = char> {
        let mut letters = Vec::new();
        // The text parsed once already, so scanning it again succeeds.
        let _ = scan(self.text, &mut |c| letters.push(char::from(c)));
        letters.into_iter()
    }
}

/// Parses the letters after `U`/`L`. Unknown letters are ignored (see
/// [`Modifiers::unknown`]); bad `z`/`c`/`l`/`r` values and a third `i`/`e`
/// are `E1`.
pub fn parse_modifiers(mods: &[u8]) -> Result<Modifiers<'_>, ErrorCode> {
    scan(mods, &mut |_| {})
}

fn scan<'a>(mods: &'a [u8], unknown: &mut dyn FnMut(u8)) -> Result<Modifiers<'a>, ErrorCode> {
    let mut m = Modifiers {
        text: mods,
        ..Modifiers::default()
    };
    let mut n_ifaces = 0;
    let mut i = 0;
    while let Some(&raw) = mods.get(i) {
        let c = raw.to_ascii_lowercase();
        i += 1;
        let rest = &mods[i..];
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
            b'n' => m.new_port = true,
            b'z' => {
                let (ms, used) = ptime(rest)?;
                m.ptime_ms = Some(ms);
                i += used;
            }
            b'c' => {
                let len = count_while(rest, |c| c.is_ascii_digit() || c == b',');
                let list = &rest[..len];
                if !valid_codec_list(list) {
                    return Err(ErrorCode::SYNTAX);
                }
                m.codecs = Some(list);
                i += len;
            }
            b'l' | b'r' => {
                let (addr, used) = leg_address(rest).ok_or(ErrorCode::SYNTAX)?;
                m.leg_addr = Some(if c == b'l' {
                    LegAddr::Local(addr)
                } else {
                    LegAddr::Remote(addr)
                });
                i += used;
            }
            _ => unknown(raw),
        }
    }
    Ok(m)
}

/// The digits of `zNN`: whole 10 ms units only (the classic daemon silently
/// rounded down), and no more than a second of audio.
fn ptime(rest: &[u8]) -> Result<(u32, usize), ErrorCode> {
    let digits = count_while(rest, |c| c.is_ascii_digit());
    let ms: u32 = std::str::from_utf8(&rest[..digits])
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or(ErrorCode::SYNTAX)?;
    if ms == 0 || !ms.is_multiple_of(10) || ms > MAX_PTIME_MS {
        return Err(ErrorCode::SYNTAX);
    }
    Ok((ms, digits))
}

/// The address after `l`/`r` and how many bytes it took: dotted IPv4,
/// `[IPv6]`, or IPv6 without brackets as OpenSIPS sends it. Unbracketed,
/// an IPv6 address runs into the hex letters of following modifiers; the
/// only one OpenSIPS puts after it is the codec list, so a run whose tail
/// is `c` and digits (and maybe a comma next) is split before that `c`
/// when what precedes it is an address. An address that itself ends in
/// `c` and decimal digits must be bracketed.
fn leg_address(rest: &[u8]) -> Option<(IpAddr, usize)> {
    if rest.first() == Some(&b'[') {
        let end = rest.iter().position(|&c| c == b']')?;
        let ip: Ipv6Addr = std::str::from_utf8(&rest[1..end]).ok()?.parse().ok()?;
        return Some((IpAddr::V6(ip), end + 1));
    }
    let run = count_while(rest, |c| c.is_ascii_hexdigit() || c == b':' || c == b'.');
    if !rest[..run].contains(&b':') {
        let len = count_while(rest, |c| c.is_ascii_digit() || c == b'.');
        let ip: Ipv4Addr = std::str::from_utf8(&rest[..len]).ok()?.parse().ok()?;
        return Some((IpAddr::V4(ip), len));
    }
    let v6 =
        |len: usize| -> Option<Ipv6Addr> { std::str::from_utf8(&rest[..len]).ok()?.parse().ok() };
    if let Some(c) = rest[..run].iter().rposition(|&b| b == b'c' || b == b'C') {
        let tail = &rest[c + 1..run];
        if tail.iter().all(u8::is_ascii_digit) {
            if let Some(ip) = v6(c) {
                return Some((IpAddr::V6(ip), c));
            }
        }
    }
    v6(run).map(|ip| (IpAddr::V6(ip), run))
}

fn count_while(s: &[u8], pred: impl Fn(u8) -> bool) -> usize {
    s.iter().take_while(|&&c| pred(c)).count()
}

/// A comma list of payload types 0..=127, no empty items; or commas only,
/// which the classic daemon accepted as no list at all.
fn valid_codec_list(list: &[u8]) -> bool {
    if !list.is_empty() && list.iter().all(|&c| c == b',') {
        return true;
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn classic_letters() {
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
        // Commas only: accepted, no payload type in it.
        let m = parse_modifiers(b"c,").unwrap();
        assert_eq!(codec_list(m.codecs.unwrap()).count(), 0);
        assert!(parse_modifiers(b"c,,,").is_ok());
    }

    #[test]
    fn unknown_letters_are_ignored_and_listed() {
        let m = parse_modifiers(b"xc8,0z20qr10.0.0.1n").unwrap();
        assert_eq!(m.unknown().collect::<String>(), "xq");
        assert!(m.new_port);
    }

    #[test]
    fn leg_addresses() {
        let at = |s: &[u8]| parse_modifiers(s).unwrap().leg_addr;
        assert_eq!(at(b"l127.0.0.1"), Some(LegAddr::Local(ip("127.0.0.1"))));
        assert_eq!(at(b"R127.0.0.1"), Some(LegAddr::Remote(ip("127.0.0.1"))));
        assert_eq!(at(b"6l[::1]"), Some(LegAddr::Local(ip("::1"))));
        // Other modifiers may follow.
        let m = parse_modifiers(b"l10.0.0.5c0,8").unwrap();
        assert_eq!(m.leg_addr, Some(LegAddr::Local(ip("10.0.0.5"))));
        assert_eq!(m.codecs, Some(&b"0,8"[..]));
        // OpenSIPS: unbracketed IPv6, then the codec list.
        let m = parse_modifiers(b"6R2001:db8::1c0,8").unwrap();
        assert_eq!(m.leg_addr, Some(LegAddr::Remote(ip("2001:db8::1"))));
        assert_eq!(m.codecs, Some(&b"0,8"[..]));
        let m = parse_modifiers(b"R2001:db8::1c8").unwrap();
        assert_eq!(m.leg_addr, Some(LegAddr::Remote(ip("2001:db8::1"))));
        assert_eq!(m.codecs, Some(&b"8"[..]));
        assert_eq!(
            at(b"r2001:db8::abcd"),
            Some(LegAddr::Remote(ip("2001:db8::abcd")))
        );
        let m = parse_modifiers(b"Z20R::1N").unwrap();
        assert_eq!(m.leg_addr, Some(LegAddr::Remote(ip("::1"))));
        assert!(m.new_port);
        for bad in [
            &b"l"[..],
            b"r",
            b"l10.0.0",
            b"l[::1",
            b"l[nope]",
            b"lx",
            b"r1.2.3.4.5",
        ] {
            assert_eq!(parse_modifiers(bad), Err(ErrorCode::SYNTAX), "{bad:?}");
        }
    }
}
