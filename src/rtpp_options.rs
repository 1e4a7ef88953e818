//! The command line: `rtpproxy`'s options, checked and turned into a
//! [`Config`] before anything is opened.

use std::path::{Path, PathBuf};

use getopts::{Matches, Options};

use crate::rtpp_defines::{BindMode, Config, ControlSpec, NotifyTarget, PID_FILE};
use crate::rtpp_log::{self, Level};
use crate::rtpp_network::{parse_control_spec, resolve_host};

/// What the command line asks for.
pub enum Action {
    Run(Box<Config>),
    /// `-v`: the protocol versions, as the classic daemon prints them.
    Version,
    /// `--version`: the software version, then what `-v` prints.
    SoftwareVersion,
    Help,
}

fn options() -> Options {
    let mut o = Options::new();
    o.optflag("f", "", "stay in the foreground, log to stderr");
    o.optflag("v", "", "print the protocol version and extensions, exit");
    o.optflag(
        "",
        "version",
        "print the software and protocol versions, exit",
    );
    o.optflag("2", "", "send packets shorter than 128 bytes twice");
    o.optflag(
        "F",
        "",
        "allow root with a UDP or TCP control socket without -u",
    );
    o.optflag("i", "", "idle timeout per direction");
    o.optflag("P", "", "record in PCAP format");
    o.optflag("a", "", "record every session");
    o.optflag("R", "", "do not record RTCP");
    o.optflag("h", "", "print this help");
    o.optflag("?", "", "print this help");
    o.optmulti("l", "", "IPv4 listen address(es)", "addr[/addr]");
    o.optmulti("6", "", "IPv6 listen address(es)", "addr[/addr]");
    o.optmulti(
        "s",
        "",
        "control socket",
        "unix:PATH|udp:ADDR[:PORT]|udp6:ADDR[:PORT]|tcp:ADDR[:PORT]|tcp6:ADDR[:PORT]|cunix:PATH",
    );
    o.optmulti("t", "", "TOS of media packets (-1 = leave alone)", "tos");
    o.optmulti("r", "", "recording directory", "dir");
    o.optmulti("S", "", "spool directory", "dir");
    o.optmulti("p", "", "pidfile", "file");
    o.optmulti("T", "", "session idle timeout in seconds", "ttl");
    o.optmulti("L", "", "open files limit", "nofile");
    o.optmulti("m", "", "lowest media port", "port");
    o.optmulti("M", "", "highest media port", "port");
    o.optmulti("u", "", "user (and group) to run as", "user[:group]");
    o.optmulti(
        "n",
        "",
        "timeout notification target (repeatable)",
        "unix:PATH|tcp:HOST:PORT|tcp:%%CC_SELF%%:PORT",
    );
    o.optmulti("A", "", "append one JSON line per ended session", "file");
    o.optmulti("d", "", "log level and syslog facility", "level[:facility]");
    o.optmulti(
        "",
        "hep",
        "send end-of-stream quality reports to a HEP (Homer) collector",
        "udp:HOST:PORT[/ID]",
    );
    o.optflag(
        "",
        "hep-rtcp",
        "with --hep, mirror each RTCP report relayed",
    );
    // Internal, left out of the usage text: a daemon handing over passes
    // it to the new process (doc/PROTOCOL.md, "Hand-over").
    o.optopt("", "handover-fd", "internal: hand-over socket", "FD");
    o.optmulti(
        "",
        "metrics",
        "serve Prometheus metrics at http://ADDR:PORT/metrics",
        "ADDR:PORT",
    );
    o
}

pub fn usage() -> String {
    "usage: rtpproxy [-2fvFiPaR] [-l addr1[/addr2]] [-6 addr1[/addr2]] [-s ctrl_socket]\n\
     \x20 [-t tos] [-r rdir [-S sdir]] [-T ttl] [-L nofile] [-m port_min]\n\
     \x20 [-M port_max] [-u uname[:gname]] [-n timeout_socket] [-d log_level[:log_facility]]\n\
     \x20 [-p pid_file] [-A acct_file] [--hep udp:host:port[/id] [--hep-rtcp]]\n\
     \x20 [--metrics addr:port]\n\
     \x20      rtpproxy --version\n\
     ctrl_socket: unix:path | path | cunix:path | udp:addr[:port] | udp6:addr[:port]\n\
     \x20            | tcp:addr[:port] | tcp6:addr[:port]\n\
     timeout_socket (-n may repeat): unix:path | path | tcp:host:port | tcp:%%CC_SELF%%:port\n\
     --hep: HEPv3 to a Homer collector, id = capture agent id (default 101)\n\
     --metrics addr:port: serve Prometheus metrics at http://addr:port/metrics\n\
     \x20            (IPv4 127.0.0.1:9099, IPv6 [::1]:9099)\n"
        .to_string()
}

pub fn parse_args(args: &[String]) -> Result<Action, String> {
    let m = options()
        .parse(args)
        .map_err(|e| format!("{e} (rtpproxy -h lists the options)"))?;
    if let Some(extra) = m.free.first() {
        return Err(format!("unexpected argument: {extra}"));
    }
    if m.opt_present("h") || m.opt_present("?") {
        return Ok(Action::Help);
    }
    if m.opt_present("version") {
        return Ok(Action::SoftwareVersion);
    }
    if m.opt_present("v") {
        return Ok(Action::Version);
    }
    let mut cfg = Config {
        foreground: m.opt_present("f"),
        double_small: m.opt_present("2"),
        allow_root_udp: m.opt_present("F"),
        independent_ttl: m.opt_present("i"),
        record_pcap: m.opt_present("P"),
        record_all: m.opt_present("a"),
        record_rtcp: !m.opt_present("R"),
        ..Config::default()
    };
    // The order of the groups decides which of several bad options is named.
    address_options(&m, &mut cfg)?;
    limit_options(&m, &mut cfg)?;
    path_options(&m, &mut cfg)?;
    run_as_option(&m, &mut cfg)?;
    output_options(&m, &mut cfg)?;
    hep_options(&m, &mut cfg)?;
    if let Some(fd) = m.opt_str("handover-fd") {
        cfg.handover_fd = Some(
            fd.parse::<i32>()
                .ok()
                .filter(|&fd| fd > 2)
                .ok_or_else(|| format!("invalid value for --handover-fd: {fd}"))?,
        );
    }
    Ok(Action::Run(Box::new(cfg)))
}

/// Like getopt(3): a repeated option's last value wins.
fn last(m: &Matches, flag: &str) -> Option<String> {
    m.opt_strs(flag).pop()
}

/// `-l`, `-6`, `-s`, `-t`: where media and commands arrive, how media is marked.
fn address_options(m: &Matches, cfg: &mut Config) -> Result<(), String> {
    cfg.bind = parse_bind(last(m, "l").as_deref(), last(m, "6").as_deref())?;
    if let Some(s) = last(m, "s") {
        cfg.control =
            match parse_control_spec(&s).map_err(|e| format!("invalid value for -s: {e}"))? {
                ControlSpec::Unix(path) => ControlSpec::Unix(absolute("s", &path)?),
                ControlSpec::Cunix(path) => ControlSpec::Cunix(absolute("s", &path)?),
                inet => inet,
            };
    }
    if let Some(t) = last(m, "t") {
        cfg.tos = parse_tos(&t).ok_or_else(|| format!("invalid value for -t: {t}"))?;
    }
    Ok(())
}

/// `-T`, `-L`, `-m`, `-M`: the session timeout, open files and media ports.
fn limit_options(m: &Matches, cfg: &mut Config) -> Result<(), String> {
    if let Some(t) = last(m, "T") {
        cfg.max_ttl = match t.parse::<u32>() {
            Ok(v) if v > 0 => v,
            _ => return Err(format!("invalid value for -T: {t}")),
        };
    }
    if let Some(l) = last(m, "L") {
        cfg.nofile = match l.parse::<u64>() {
            Ok(v) if v > 0 => Some(v),
            _ => return Err(format!("invalid value for -L: {l}")),
        };
    }
    for (flag, slot) in [("m", &mut cfg.port_min), ("M", &mut cfg.port_max)] {
        if let Some(v) = last(m, flag) {
            *slot = match v.parse::<u16>() {
                Ok(p) if p >= 1 => p,
                _ => return Err(format!("invalid value for -{flag}: {v}")),
            };
        }
    }
    // The first RTP port is the even one at or above -m, and its RTCP twin
    // (one above) must not pass -M.
    if u32::from(cfg.port_min) + u32::from(cfg.port_min % 2) >= u32::from(cfg.port_max) {
        return Err(format!(
            "invalid port range -m {} -M {}: no RTP/RTCP pair fits",
            cfg.port_min, cfg.port_max
        ));
    }
    Ok(())
}

/// `-r`, `-S`, `-p`: the recording and spool directories, the pidfile.
fn path_options(m: &Matches, cfg: &mut Config) -> Result<(), String> {
    cfg.record_dir = dir_option(m, "r")?;
    cfg.spool_dir = dir_option(m, "S")?;
    if cfg.spool_dir.is_some() && cfg.record_dir.is_none() {
        return Err("-S requires -r".into());
    }
    cfg.pid_file = match last(m, "p") {
        Some(p) => Some(pidfile_option(&p)?),
        None if cfg.foreground => None,
        None => Some(PathBuf::from(PID_FILE)),
    };
    Ok(())
}

/// `-u user[:group]`, its form only: the account is looked up at start-up.
fn run_as_option(m: &Matches, cfg: &mut Config) -> Result<(), String> {
    let Some(u) = last(m, "u") else {
        return Ok(());
    };
    let (user, group) = match u.split_once(':') {
        Some((u, g)) => (u.to_string(), Some(g.to_string())),
        None => (u.clone(), None),
    };
    if user.is_empty() || group.as_deref() == Some("") {
        return Err(format!("invalid value for -u: {u}"));
    }
    cfg.run_user = Some(user);
    cfg.run_group = group;
    Ok(())
}

/// `-n`, `-A`, `--metrics`, `-d`: where timeout notifications, accounting,
/// metrics and the log go.
fn output_options(m: &Matches, cfg: &mut Config) -> Result<(), String> {
    for n in m.opt_strs("n") {
        let target = notify_target(&n)?;
        if !cfg.notify_targets.contains(&target) {
            cfg.notify_targets.push(target);
        }
    }
    if let Some(a) = last(m, "A") {
        if a.is_empty() {
            return Err("invalid value for -A: empty path".into());
        }
        cfg.accounting_file = Some(absolute("A", Path::new(&a))?);
    }
    if let Some(v) = last(m, "metrics") {
        cfg.metrics = Some(metrics_addr(&v)?);
    }
    if let Some(d) = last(m, "d") {
        let (level, facility) = match d.split_once(':') {
            Some((l, f)) => (l, Some(f)),
            None => (d.as_str(), None),
        };
        cfg.log_level =
            Some(Level::parse(level).ok_or_else(|| format!("invalid log level for -d: {level}"))?);
        if let Some(f) = facility {
            if rtpp_log::parse_facility(f).is_none() {
                return Err(format!("invalid log facility for -d: {f}"));
            }
            cfg.log_facility = Some(f.to_string());
        }
    }
    Ok(())
}

/// `--hep`, `--hep-rtcp`: where quality reports (and RTCP) go. The host
/// is resolved now, like `-n`'s.
fn hep_options(m: &Matches, cfg: &mut Config) -> Result<(), String> {
    if let Some(h) = last(m, "hep") {
        cfg.hep = Some(crate::rtpp_hep::parse_hep_target(&h)?);
    }
    cfg.hep_rtcp = m.opt_present("hep-rtcp");
    if cfg.hep_rtcp && cfg.hep.is_none() {
        return Err("--hep-rtcp requires --hep".into());
    }
    Ok(())
}

/// One `-n` value: `unix:PATH` or a path (made absolute), `tcp:HOST:PORT`
/// (HOST resolved to IPv4 now, as the classic daemon did) or
/// `tcp:%%CC_SELF%%:PORT`.
fn notify_target(n: &str) -> Result<NotifyTarget, String> {
    let bad = |why: &str| {
        format!(
            "invalid value for -n: {n} ({why}; accepted: unix:PATH, a path, tcp:HOST:PORT, tcp:%%CC_SELF%%:PORT)"
        )
    };
    if let Some(rest) = n.strip_prefix("tcp:") {
        let Some((host, port)) = rest.rsplit_once(':') else {
            return Err(bad("no port"));
        };
        let port = match port.parse::<u16>() {
            Ok(p) if p > 0 => p,
            _ => return Err(bad("invalid port")),
        };
        if host == "%%CC_SELF%%" {
            return Ok(NotifyTarget::TcpSelf {
                name: n.to_string(),
                port,
            });
        }
        let ip = match resolve_host(host, false) {
            Ok(std::net::IpAddr::V4(ip)) if !ip.is_unspecified() => ip,
            Ok(_) => return Err(bad("no address to connect to")),
            Err(e) => return Err(bad(&e)),
        };
        return Ok(NotifyTarget::Tcp {
            name: n.to_string(),
            addr: std::net::SocketAddrV4::new(ip, port),
        });
    }
    let path = n.strip_prefix("unix:").unwrap_or(n);
    if path.is_empty() {
        return Err(bad("empty path"));
    }
    if n.strip_prefix("unix:").is_none() {
        if let Some(scheme) = crate::rtpp_network::unknown_scheme(n) {
            return Err(bad(&format!("unknown scheme \"{scheme}:\"")));
        }
        if ["udp:", "udp6:", "tcp6:", "cunix:"]
            .iter()
            .any(|p| n.starts_with(p))
        {
            return Err(bad("not a notification socket"));
        }
    }
    Ok(NotifyTarget::Unix(absolute("n", Path::new(path))?))
}

/// `--metrics ADDR:PORT`: a numeric IPv4 address, or an IPv6 one in
/// brackets, and a port other than 0 (a scrape config must name it).
fn metrics_addr(v: &str) -> Result<std::net::SocketAddr, String> {
    match v.parse::<std::net::SocketAddr>() {
        Ok(a) if a.port() != 0 => Ok(a),
        _ => Err(format!(
            "invalid value for --metrics: {v} (ADDR:PORT, e.g. 127.0.0.1:9099 or [::1]:9099)"
        )),
    }
}

fn dir_option(m: &Matches, flag: &str) -> Result<Option<PathBuf>, String> {
    let Some(d) = last(m, flag) else {
        return Ok(None);
    };
    if !Path::new(&d).is_dir() {
        return Err(format!("invalid value for -{flag}: {d} is not a directory"));
    }
    Ok(Some(absolute(flag, Path::new(&d))?))
}

/// The daemon works in `/` once in the background, so every path it keeps
/// is made absolute first (the pidfile and the control socket are also
/// removed at exit, which must not hit a file of the same name in `/`).
fn absolute(flag: &str, path: &Path) -> Result<PathBuf, String> {
    std::path::absolute(path).map_err(|e| format!("invalid value for -{flag}: {e}"))
}

/// `-p`: the directory must exist; the file itself is written (and can
/// still fail) once the daemon runs.
fn pidfile_option(p: &str) -> Result<PathBuf, String> {
    if p.is_empty() {
        return Err("invalid value for -p: empty path".into());
    }
    let path = absolute("p", Path::new(p))?;
    if path.is_dir() {
        return Err(format!("invalid value for -p: {p} is a directory"));
    }
    if !path.parent().is_some_and(Path::is_dir) {
        return Err(format!("invalid value for -p: {p}: no such directory"));
    }
    Ok(path)
}

fn parse_tos(t: &str) -> Option<Option<u8>> {
    if t == "-1" {
        return Some(None);
    }
    let v = match t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        Some(hex) => u8::from_str_radix(hex, 16).ok()?,
        None => t.parse::<u8>().ok()?,
    };
    Some(Some(v))
}

/// Builds the listen addresses from `-l` and `-6`. A `/` in either means
/// bridge mode, where each of the two interfaces is IPv4 or IPv6, not both.
fn parse_bind(l: Option<&str>, six: Option<&str>) -> Result<BindMode, String> {
    for (flag, value) in [("l", l), ("6", six)] {
        if let Some(v) = value.filter(|v| v.matches('/').count() > 1) {
            return Err(format!(
                "invalid value for -{flag}: {v} (one address, or two as ADDR1/ADDR2 to bridge)"
            ));
        }
    }
    let split = |s: Option<&str>| -> (Option<String>, Option<String>, bool) {
        match s {
            None => (None, None, false),
            Some(s) => match s.split_once('/') {
                Some((a, b)) => (non_empty(a), non_empty(b), true),
                None => (non_empty(s), None, false),
            },
        }
    };
    let (l0, l1, lb) = split(l);
    let (s0, s1, sb) = split(six);
    let v4 = |h: &Option<String>| -> Result<Option<std::net::IpAddr>, String> {
        h.as_deref()
            .map(|h| resolve_host(h, false).map_err(|e| format!("invalid value for -l: {e}")))
            .transpose()
    };
    let v6 = |h: &Option<String>| -> Result<Option<std::net::IpAddr>, String> {
        h.as_deref()
            .map(|h| resolve_host(h, true).map_err(|e| format!("invalid value for -6: {e}")))
            .transpose()
    };
    let (l0, l1, s0, s1) = (v4(&l0)?, v4(&l1)?, v6(&s0)?, v6(&s1)?);
    if lb || sb {
        let pick = |a: Option<std::net::IpAddr>, b: Option<std::net::IpAddr>, which: &str| {
            match (a, b) {
            (Some(_), Some(_)) => Err(format!(
                "either IPv4 or IPv6 should be configured for the {which} interface in bridging mode, not both"
            )),
            (None, None) => Err(format!(
                "the {which} interface should be either IPv4 or IPv6 in bridging mode"
            )),
            (Some(x), None) | (None, Some(x)) => Ok(x),
        }
        };
        let first = pick(l0, s0, "first")?;
        let second = pick(l1, s1, "second")?;
        return Ok(BindMode::Bridge([first, second]));
    }
    if l0.is_none() && s0.is_none() {
        if l.is_some() || six.is_some() {
            return Err("empty listen address".into());
        }
        return Ok(BindMode::Single {
            v4: Some(std::net::IpAddr::from([0, 0, 0, 0])),
            v6: None,
        });
    }
    Ok(BindMode::Single { v4: l0, v6: s0 })
}

fn non_empty(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    fn cfg(s: &str) -> Config {
        match parse_args(&args(s)) {
            Ok(Action::Run(c)) => *c,
            Ok(_) => panic!("not a run"),
            Err(e) => panic!("{e}"),
        }
    }

    fn bad(s: &str) -> String {
        match parse_args(&args(s)) {
            Err(e) => e,
            Ok(_) => panic!("{s} accepted"),
        }
    }

    #[test]
    fn defaults() {
        let c = cfg("-f");
        assert_eq!(c.max_ttl, 60);
        assert_eq!(c.tos, Some(0xb8));
        assert_eq!((c.port_min, c.port_max), (35000, 65000));
        assert_eq!(
            c.control,
            ControlSpec::Unix("/var/run/rtpproxy.sock".into())
        );
    }

    #[test]
    fn bind_modes() {
        assert_eq!(
            cfg("-l 127.0.0.1").bind,
            BindMode::Single {
                v4: Some("127.0.0.1".parse().unwrap()),
                v6: None
            }
        );
        assert_eq!(
            cfg("-l 127.0.0.1/127.0.0.2").bind,
            BindMode::Bridge(["127.0.0.1".parse().unwrap(), "127.0.0.2".parse().unwrap()])
        );
        assert_eq!(
            cfg("-l 127.0.0.1 -6 /::1").bind,
            BindMode::Bridge(["127.0.0.1".parse().unwrap(), "::1".parse().unwrap()])
        );
        assert!(bad("-l 127.0.0.1/ ").contains("second"));
        assert!(bad("-l 127.0.0.1/127.0.0.2 -6 ::1").contains("not both"));
        assert!(bad("-l ::1").contains("-l"));
        assert!(bad("-6 127.0.0.1").contains("-6"));
    }

    #[test]
    fn bad_values_name_the_option() {
        assert!(bad("-T 0").contains("-T"));
        assert!(bad("-T x").contains("-T"));
        assert!(bad("-t 300").contains("-t"));
        assert!(bad("-m 0").contains("-m"));
        assert!(bad("-M 70000").contains("-M"));
        assert!(bad("-m 4000 -M 4000").contains("port range"));
        assert!(bad("-L -5").contains("-L"));
        assert!(bad("-d LOUD").contains("-d"));
        assert!(bad("-d INFO:LOG_NOPE").contains("-d"));
        assert!(bad("-s udp:1.2.3.4:0").contains("-s"));
        assert!(bad("-r /nonexistent/dir").contains("-r"));
        assert!(bad("-S /tmp").contains("-S requires -r"));
        assert!(bad("-u :grp").contains("-u"));
        assert!(bad("-n udp:1.2.3.4:5").contains("-n"));
        assert!(bad("-n tcp6:[::1]:5").contains("-n"));
        assert!(bad("-n tcp:1.2.3.4").contains("-n"));
        assert!(bad("-n tcp:1.2.3.4:0").contains("-n"));
        assert!(bad("-n tcp:*:5").contains("-n"));
        assert!(bad("-n tcp:::1:5").contains("-n"));
        assert!(bad("-n cunix:/x").contains("-n"));
        assert!(bad("-n unix:").contains("-n"));
        assert!(bad("-s upd:127.0.0.1:22222").contains("-s"));
        assert!(bad("-Z").contains('Z'));
        assert!(bad("-f stray").contains("stray"));
        for v in [
            "127.0.0.1",
            "127.0.0.1:0",
            "::1:9099",
            "localhost:9099",
            "[::1]",
            "",
        ] {
            let e = bad(&format!("--metrics={v}"));
            assert!(e.starts_with("invalid value for --metrics"), "{e}");
        }
        assert!(bad("--metrics").contains("metrics"));
    }

    #[test]
    fn metrics_address() {
        assert_eq!(cfg("-f").metrics, None);
        let c = cfg("--metrics 127.0.0.1:9099");
        assert_eq!(c.metrics, Some("127.0.0.1:9099".parse().unwrap()));
        let c = cfg("--metrics [::1]:9099 --metrics=0.0.0.0:9100");
        assert_eq!(c.metrics, Some("0.0.0.0:9100".parse().unwrap()));
        assert_eq!(
            cfg("--metrics [::]:80").metrics,
            Some("[::]:80".parse().unwrap())
        );
    }

    #[test]
    fn pidfile_and_port_edges() {
        assert!(bad("-p /nonexistent/dir/x.pid").contains("-p"));
        assert!(bad("-p /tmp").contains("-p"));
        assert!(bad("-m 65535").contains("port range"));
        assert!(bad("-m 65534 -M 65534").contains("port range"));
        let c = cfg("-m 65534 -M 65535");
        assert_eq!((c.port_min, c.port_max), (65534, 65535));
        let c = cfg("-m 35001 -M 35003");
        assert_eq!((c.port_min, c.port_max), (35001, 35003));
    }

    #[test]
    fn kept_paths_are_absolute() {
        let c = cfg("-p x.pid -s unix:ctl.sock -n notify.sock -r . -S . -A acct.json");
        assert!(c.accounting_file.is_some_and(|p| p.is_absolute()));
        assert!(c.pid_file.is_some_and(|p| p.is_absolute()));
        assert!(matches!(&c.control, ControlSpec::Unix(p) if p.is_absolute()));
        assert!(matches!(&c.notify_targets[..], [NotifyTarget::Unix(p)] if p.is_absolute()));
        assert!(c.record_dir.is_some_and(|p| p.is_absolute()));
        assert!(c.spool_dir.is_some_and(|p| p.is_absolute()));
    }

    #[test]
    fn notify_targets_repeat_in_order_without_duplicates() {
        let c =
            cfg("-n tcp:%%CC_SELF%%:9000 -n unix:/run/n.sock -n tcp:127.0.0.1:9001 -n /run/n.sock");
        assert_eq!(
            c.notify_targets,
            [
                NotifyTarget::TcpSelf {
                    name: "tcp:%%CC_SELF%%:9000".into(),
                    port: 9000
                },
                NotifyTarget::Unix("/run/n.sock".into()),
                NotifyTarget::Tcp {
                    name: "tcp:127.0.0.1:9001".into(),
                    addr: "127.0.0.1:9001".parse().unwrap()
                },
            ]
        );
        assert!(cfg("-f").notify_targets.is_empty());
    }

    #[test]
    fn more_than_two_listen_addresses_are_refused_as_such() {
        for (opt, flag) in [
            ("-l 127.0.0.1/127.0.0.2/127.0.0.3", "-l"),
            ("-6 ::1/::1/::1", "-6"),
        ] {
            let e = bad(opt);
            assert!(e.contains(flag) && e.contains("ADDR1/ADDR2"), "{e}");
        }
    }

    #[test]
    fn pidfile_only_in_the_background_unless_asked() {
        assert_eq!(cfg("").pid_file, Some(PathBuf::from(PID_FILE)));
        assert_eq!(cfg("-f").pid_file, None);
        assert!(cfg("-f -p x.pid").pid_file.is_some());
    }

    #[test]
    fn hep_options() {
        let c = cfg("--hep udp:127.0.0.1:9060/77 --hep-rtcp");
        let target = c.hep.unwrap();
        assert_eq!(target.addr, "127.0.0.1:9060".parse().unwrap());
        assert_eq!(target.capture_id, 77);
        assert!(c.hep_rtcp);
        let c = cfg("--hep udp:[::1]:9060");
        assert_eq!(c.hep.unwrap().addr, "[::1]:9060".parse().unwrap());
        assert_eq!(c.hep.unwrap().capture_id, 101);
        assert!(!c.hep_rtcp);
        assert_eq!(cfg("--hep udp:::1:9/0").hep.unwrap().capture_id, 0);
        assert!(cfg("-f").hep.is_none());
        for b in [
            "--hep tcp:127.0.0.1:9060",
            "--hep udp:127.0.0.1",
            "--hep udp:127.0.0.1:0",
            "--hep udp:127.0.0.1:70000",
            "--hep udp:127.0.0.1:9060/",
            "--hep udp:127.0.0.1:9060/x",
            "--hep udp:127.0.0.1:9060/4294967296",
            "--hep udp:bad_host!:9060",
            "--hep udp:[::1:9060",
        ] {
            assert!(bad(b).contains("--hep"), "{b}: {}", bad(b));
        }
        assert!(bad("--hep-rtcp").contains("--hep-rtcp requires --hep"));
    }

    #[test]
    fn tos_values() {
        assert_eq!(cfg("-t -1").tos, None);
        assert_eq!(cfg("-t 0x10").tos, Some(16));
        assert_eq!(cfg("-t 184").tos, Some(184));
    }
}
