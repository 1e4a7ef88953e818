//! The command line: every option, its default, its bounds, and `--help`.

use crate::ctrl::{parse_host, parse_host_port, require_loopback, CtrlSpec, CtrlTiming};
use crate::packet::{MAX_PTIME_MS, MIN_PTIME_MS};
use crate::scenario::{self, CompareConfig};
use getopts::Options;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

/// What to measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Many concurrent G.711-shaped calls.
    Calls,
    /// One call, one direction, as fast as possible.
    Flood,
    /// The flood against the harness's own minimal relay.
    Baseline,
    /// Session set-up and tear-down rate.
    Control,
    /// `calls` over several call counts, to CSV and PNG.
    Sweep,
    /// Several relays, several scenarios, alternating rounds, medians.
    Compare,
    /// The minimal relay itself (started by `baseline`, not by people).
    BaselineRelay,
}

impl Mode {
    fn parse(word: &str) -> Result<Mode, String> {
        match word {
            "calls" => Ok(Mode::Calls),
            "flood" => Ok(Mode::Flood),
            "baseline" => Ok(Mode::Baseline),
            "control" => Ok(Mode::Control),
            "sweep" => Ok(Mode::Sweep),
            "compare" => Ok(Mode::Compare),
            "baseline-relay" => Ok(Mode::BaselineRelay),
            other => Err(format!(
                "unknown mode {other:?}: expected calls, flood, baseline, control, sweep or compare"
            )),
        }
    }
}

/// Which commands make one control-plane cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cycle {
    /// `U`, `L`, `D`: a whole answered call.
    UpdateLookupDelete,
    /// `U`, `D`: an offer that was never answered.
    UpdateDelete,
}

/// Periodic silences, each followed by a burst of the packets it held
/// back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Silence {
    /// A silence starts once per this many milliseconds of each stream.
    pub every_ms: u64,
    /// How long each silence lasts, milliseconds.
    pub length_ms: u64,
}

impl Silence {
    /// Parses `EVERY_MS:LENGTH_MS`; both must be whole multiples of the
    /// packet time, and the silence shorter than its period.
    pub fn parse(text: &str, ptime_ms: u64) -> Result<Silence, String> {
        let bad = || format!("--silence {text}: expected EVERY_MS:LENGTH_MS, e.g. 2000:200");
        let (every, length) = text.split_once(':').ok_or_else(bad)?;
        let every_ms = parse_num::<u64>("silence", every, 1, 3_600_000)?;
        let length_ms = parse_num::<u64>("silence", length, 1, 3_600_000)?;
        if every_ms % ptime_ms != 0 || length_ms % ptime_ms != 0 {
            return Err(format!(
                "--silence {text}: both must be multiples of the packet time ({ptime_ms} ms)"
            ));
        }
        if length_ms >= every_ms {
            return Err(format!(
                "--silence {text}: the silence must be shorter than its period"
            ));
        }
        Ok(Silence {
            every_ms,
            length_ms,
        })
    }
}

/// Everything a run needs to know.
#[derive(Debug, Clone)]
pub struct Config {
    /// What to measure.
    pub mode: Mode,
    /// The relay's control socket.
    pub ctrl: Option<CtrlSpec>,
    /// Media address of the relay when replies carry none.
    pub relay_addr: Option<IpAddr>,
    /// The relay's pid, for its CPU and memory.
    pub pid: Option<i32>,
    /// A file holding the relay's pid.
    pub pidfile: Option<PathBuf>,
    /// Concurrent calls in `calls`.
    pub calls: usize,
    /// Sessions set up beside the calls that never send a packet.
    pub idle_calls: usize,
    /// Packet time of `calls`, milliseconds per packet per direction.
    pub ptime_ms: u64,
    /// Silences and bursts in `calls`; `None`: steady sending.
    pub silence: Option<Silence>,
    /// Measured seconds.
    pub duration_s: u64,
    /// Seconds of traffic before measuring.
    pub warmup_s: u64,
    /// Sender threads in `calls`.
    pub senders: usize,
    /// Receiver threads in `calls`.
    pub receivers: usize,
    /// Smallest sleep of a sender, microseconds.
    pub tick_us: u64,
    /// Receivers look every this many microseconds instead of sleeping
    /// until a packet arrives; 0 = sleep.
    pub rx_poll_us: u64,
    /// How long receivers wait for stragglers after sending stops.
    pub drain_ms: u64,
    /// Outstanding control requests while setting calls up and down.
    pub setup_window: usize,
    /// Reply timeout and UDP resends.
    pub timing: CtrlTiming,
    /// Free text naming the relay under test.
    pub label: String,
    /// Where to append the JSON lines.
    pub json: Option<PathBuf>,
    /// Flood rate in packets per second, 0 = unlimited.
    pub rate: u64,
    /// Datagrams per sendmmsg/recvmmsg in `flood` and `baseline`.
    pub batch: usize,
    /// Also run `baseline` after `flood` and compare.
    pub with_baseline: bool,
    /// CPU for the minimal relay.
    pub baseline_cpu: Option<usize>,
    /// Outstanding requests in `control`.
    pub outstanding: usize,
    /// Commands of one control cycle.
    pub cycle: Cycle,
    /// Call counts of `sweep`.
    pub sweep_calls: Vec<usize>,
    /// Seconds of rest between sweep points.
    pub sweep_pause_s: u64,
    /// Sweep CSV output.
    pub csv: PathBuf,
    /// Sweep plot output.
    pub png: PathBuf,
    /// Where the minimal relay forwards (internal).
    pub forward_to: Option<SocketAddr>,
    /// What `compare` runs and against which relays.
    pub compare: CompareConfig,
}

const USAGE_HEAD: &str = "\
Usage: rtpp_bench [MODE] [OPTIONS]

Load generator and meter for a media relay speaking the rtpproxy control
protocol (rtpproxy, or any relay that accepts Us/Ls/D with media-numbered
tags). Everything stays on loopback; non-loopback addresses are refused.

Modes:
  calls     (default) set up --calls calls (Us + Ls), send G.711-shaped RTP
            (172-byte packets, 50 per second per direction per call, start
            phases spread over the 20 ms period) from both parties for
            --warmup + --duration seconds, measure the last --duration:
            sent/received/lost/duplicated packets, one-way latency through
            the relay (p50/p99/max), relay CPU (from /proc/PID/stat) and RSS,
            the generator's own CPU; then delete every call (D)
  flood     one call, one direction, as fast as the generator can send (or
            --rate): relayed packets per second and loss
  baseline  the same flood through the harness's own minimal relay (one
            blocking recvmmsg/sendmmsg loop on one socket pair), the bar the
            relay under test is compared with; needs no --ctrl
  control   Us+Ls+D (or Us+D, --cycle ud) cycles for --duration seconds with
            --outstanding requests in flight: cycles and commands per
            second, per-command latency, errors
  sweep     calls for each count in --sweep-calls; writes --csv and, when
            gnuplot is installed, --png (relay CPU per packet and p99
            latency against the number of calls)
  compare   several relays side by side: starts each relay (--rtpproxy,
            rtpengine when installed) fresh for every run, pinned to
            --relay-cpu, or uses relays given by address (--relay); runs
            every scenario of --scenarios on every relay in each of
            --rounds rounds, rotating the relays' order between rounds;
            prints each run, then a Markdown table of medians; needs no
            --ctrl
  baseline-relay
            internal: the minimal relay that baseline starts as a child

On a machine shared with other work, `nice -n -10` on both the relay and
the generator keeps that work from delaying them; each report says how busy
the machine was before the run.

Pin the relay and the generator to different CPUs so neither steals the
other's time, e.g. on 2 cores:
  taskset -c 1 rtpproxy -f -s udp:127.0.0.1:22300 -l 127.0.0.1 -m 30000 -M 34999 &
  taskset -c 0 rtpp_bench calls --ctrl udp:127.0.0.1:22300 --pid $! --calls 500

Every run has a hard deadline; the run ends by itself even if the relay
stops answering. SIGINT/SIGTERM end the measurement early and still delete
the sessions. The figures are printed as a table and as one JSON line
(starting with '{') per run.";

fn build_options() -> Options {
    let mut o = Options::new();
    o.optopt(
        "",
        "ctrl",
        "relay control socket: udp:HOST:PORT or unix:PATH",
        "SPEC",
    );
    o.optopt(
        "",
        "relay-addr",
        "relay media address when replies carry none (default: the --ctrl host, 127.0.0.1 for unix)",
        "IP",
    );
    o.optopt("", "pid", "relay process id, for its CPU and RSS", "PID");
    o.optopt("", "pidfile", "file holding the relay process id", "PATH");
    o.optopt(
        "",
        "label",
        "name of the relay under test, copied into the output",
        "TEXT",
    );
    o.optopt(
        "",
        "json",
        "also append each JSON line to this file",
        "PATH",
    );
    o.optopt(
        "",
        "calls",
        "concurrent calls (calls mode; default 100)",
        "N",
    );
    o.optopt("", "duration", "measured seconds (default 20)", "S");
    o.optopt(
        "",
        "warmup",
        "seconds of traffic before measuring (default 3)",
        "W",
    );
    add_generator_options(&mut o);
    add_mode_options(&mut o);
    add_traffic_options(&mut o);
    scenario::add_options(&mut o);
    o.optopt(
        "",
        "forward-to",
        "internal (baseline-relay): where to forward",
        "HOST:PORT",
    );
    o.optflag("h", "help", "print this help");
    o
}

/// How the generator sends, receives and signals.
fn add_generator_options(o: &mut Options) {
    o.optopt(
        "",
        "senders",
        "sender threads in calls mode (default 2)",
        "T",
    );
    o.optopt(
        "",
        "receivers",
        "receiver threads in calls mode (default 1)",
        "R",
    );
    o.optopt(
        "",
        "rx-poll-us",
        "calls: receivers read their sockets every US microseconds instead of \
         sleeping in epoll_wait until a packet comes (default 0: sleep). On \
         loopback the kernel charges waking a sleeping receiver to the process \
         that sends, i.e. to the relay; a relay sending to a network card has \
         no such cost. Latency stays exact (kernel receive timestamps)",
        "US",
    );
    o.optopt(
        "",
        "tick-us",
        "shortest sender sleep, microseconds (default 500)",
        "US",
    );
    o.optopt(
        "",
        "drain-ms",
        "wait for late packets after sending stops (default 500)",
        "MS",
    );
    o.optopt(
        "",
        "setup-window",
        "control requests in flight while setting calls up and down (default 16)",
        "K",
    );
    o.optopt(
        "",
        "timeout-ms",
        "control reply timeout (default 1000)",
        "MS",
    );
    o.optopt(
        "",
        "retries",
        "UDP control resends after a timeout (default 2)",
        "N",
    );
}

/// The options of flood, baseline, control and sweep.
fn add_mode_options(o: &mut Options) {
    o.optopt(
        "",
        "rate",
        "flood/baseline: packets per second, 0 = unlimited (default 0)",
        "PPS",
    );
    o.optopt(
        "",
        "batch",
        "flood/baseline: datagrams per sendmmsg/recvmmsg (default 64)",
        "B",
    );
    o.optflag(
        "",
        "with-baseline",
        "flood: also run baseline and compare (bar: 80%)",
    );
    o.optopt(
        "",
        "baseline-cpu",
        "CPU the minimal relay is pinned to (default 1 when the machine has 2+ CPUs)",
        "CPU",
    );
    o.optopt(
        "",
        "outstanding",
        "control: requests in flight (default 16)",
        "K",
    );
    o.optopt(
        "",
        "cycle",
        "control: uld (Us+Ls+D, default) or ud (Us+D)",
        "KIND",
    );
    o.optopt(
        "",
        "sweep-calls",
        "sweep: comma-separated call counts (default 100,500,1000,2000)",
        "LIST",
    );
    o.optopt(
        "",
        "sweep-pause",
        "sweep: seconds of rest between points (default 2)",
        "S",
    );
    o.optopt(
        "",
        "csv",
        "sweep: CSV output (default rtpp-bench-sweep.csv)",
        "PATH",
    );
    o.optopt(
        "",
        "png",
        "sweep: plot output (default rtpp-bench-sweep.png)",
        "PATH",
    );
}

fn add_traffic_options(o: &mut Options) {
    o.optopt(
        "",
        "ptime",
        "calls: packet time, ms per packet per direction (default 20; 10 = 100 packets a \
         second each way); the payload is 8 bytes per ms (G.711) after the 12-byte header",
        "MS",
    );
    o.optopt(
        "",
        "silence",
        "calls: every EVERY ms each stream falls silent for LENGTH ms, then sends the \
         packets due during the silence back to back, followed by the one due as it ends \
         (a burst of LENGTH/ptime + 1 packets, as after a stall upstream); streams are \
         staggered so their silences spread over the period. Burst packets get their own \
         latency rows. Both multiples of --ptime, e.g. 2000:200",
        "EVERY:LENGTH",
    );
    o.optopt(
        "",
        "idle-calls",
        "calls: also set up N sessions (Us + Ls, with their ports) that never send, \
         deleted at the end like the others (default 0)",
        "N",
    );
}

/// The full `--help` text.
pub fn usage() -> String {
    build_options().usage(USAGE_HEAD)
}

/// What the command line asks for: a run, or the help text.
pub enum Parsed {
    /// Run with this configuration.
    Run(Box<Config>),
    /// Print the help and exit.
    Help,
}

/// Parses the arguments after the program name.
pub fn parse(args: &[String]) -> Result<Parsed, String> {
    let opts = build_options();
    let m = opts.parse(args).map_err(|e| e.to_string())?;
    if m.opt_present("help") {
        return Ok(Parsed::Help);
    }
    let mode = match m.free.as_slice() {
        [] => Mode::Calls,
        [word] => Mode::parse(word)?,
        more => return Err(format!("one mode expected, got {}", more.join(" "))),
    };
    let ctrl = m.opt_str("ctrl").map(|s| CtrlSpec::parse(&s)).transpose()?;
    let needs_ctrl = !matches!(mode, Mode::Baseline | Mode::BaselineRelay | Mode::Compare);
    if ctrl.is_none() && needs_ctrl {
        return Err("--ctrl is required (udp:HOST:PORT or unix:PATH)".into());
    }
    let (ptime_ms, silence) = parse_traffic(&m, mode)?;
    let (relay_addr, forward_to) = parse_addresses(&m)?;
    let pid = m
        .opt_str("pid")
        .map(|s| parse_num::<i32>("pid", &s, 1, i32::MAX))
        .transpose()?;
    // The machine's CPUs, not this process's: under `taskset -c 0` the
    // minimal relay must still go to CPU 1, like the relay under test.
    let online = nix::unistd::sysconf(nix::unistd::SysconfVar::_NPROCESSORS_ONLN)
        .ok()
        .flatten()
        .unwrap_or(1);
    let compare = scenario::parse_compare(&m, args, online)?;
    let baseline_cpu = match m.opt_str("baseline-cpu") {
        Some(s) => Some(parse_num::<usize>("baseline-cpu", &s, 0, 1023)?),
        // Compared with the relays, the minimal relay runs where they do.
        None if mode == Mode::Compare => Some(compare.relay_cpu),
        None => (online >= 2).then_some(1),
    };
    let cycle = parse_cycle(m.opt_str("cycle").as_deref())?;
    let sweep_calls = match m.opt_str("sweep-calls") {
        Some(s) => parse_list(&s)?,
        None => vec![100, 500, 1000, 2000],
    };
    let timing = CtrlTiming {
        timeout: Duration::from_millis(opt_num(&m, "timeout-ms", 1000, 10, 60_000)?),
        retries: opt_num(&m, "retries", 2, 0, 10)?,
    };
    Ok(Parsed::Run(Box::new(Config {
        mode,
        ctrl,
        relay_addr,
        pid,
        pidfile: m.opt_str("pidfile").map(PathBuf::from),
        calls: opt_num(&m, "calls", 100, 1, MAX_CALLS)?,
        idle_calls: opt_num(&m, "idle-calls", 0, 0, MAX_CALLS)?,
        ptime_ms,
        silence,
        duration_s: opt_num(&m, "duration", 20, 1, 3600)?,
        warmup_s: opt_num(&m, "warmup", 3, 0, 600)?,
        senders: opt_num(&m, "senders", 2, 1, 64)?,
        receivers: opt_num(&m, "receivers", 1, 1, 64)?,
        tick_us: opt_num(&m, "tick-us", 500, 20, 20_000)?,
        rx_poll_us: opt_num(&m, "rx-poll-us", 0, 0, 20_000)?,
        drain_ms: opt_num(&m, "drain-ms", 500, 0, 10_000)?,
        setup_window: opt_num(&m, "setup-window", 16, 1, 1024)?,
        timing,
        label: m.opt_str("label").unwrap_or_default(),
        json: m.opt_str("json").map(PathBuf::from),
        rate: opt_num(&m, "rate", 0, 0, 100_000_000)?,
        batch: opt_num(&m, "batch", 64, 1, 1024)?,
        with_baseline: m.opt_present("with-baseline"),
        baseline_cpu,
        outstanding: opt_num(&m, "outstanding", 16, 1, 1024)?,
        cycle,
        sweep_calls,
        sweep_pause_s: opt_num(&m, "sweep-pause", 2, 0, 600)?,
        csv: path_or(&m, "csv", "rtpp-bench-sweep.csv"),
        png: path_or(&m, "png", "rtpp-bench-sweep.png"),
        forward_to,
        compare,
    })))
}

/// `--relay-addr` and `--forward-to`, both on loopback.
fn parse_addresses(m: &getopts::Matches) -> Result<(Option<IpAddr>, Option<SocketAddr>), String> {
    let relay_addr = match m.opt_str("relay-addr") {
        Some(s) => {
            let ip =
                parse_host(&s).ok_or_else(|| format!("--relay-addr {s}: not an IP address"))?;
            require_loopback(ip, "--relay-addr")?;
            Some(ip)
        }
        None => None,
    };
    let forward_to = match m.opt_str("forward-to") {
        Some(s) => {
            let addr = parse_host_port(&s)
                .ok_or_else(|| format!("--forward-to {s}: expected HOST:PORT"))?;
            require_loopback(addr.ip(), "--forward-to")?;
            Some(addr)
        }
        None => None,
    };
    Ok((relay_addr, forward_to))
}

fn path_or(m: &getopts::Matches, name: &str, default: &str) -> PathBuf {
    PathBuf::from(m.opt_str(name).unwrap_or_else(|| default.into()))
}

/// `--ptime` and `--silence`.
fn parse_traffic(m: &getopts::Matches, mode: Mode) -> Result<(u64, Option<Silence>), String> {
    let ptime_ms = opt_num(m, "ptime", 20, MIN_PTIME_MS, MAX_PTIME_MS)?;
    // compare's burst scenario sends at 20 ms whatever --ptime says.
    let silence_ptime = if mode == Mode::Compare { 20 } else { ptime_ms };
    let silence = m
        .opt_str("silence")
        .map(|s| Silence::parse(&s, silence_ptime))
        .transpose()?;
    Ok((ptime_ms, silence))
}

fn parse_cycle(text: Option<&str>) -> Result<Cycle, String> {
    match text {
        None | Some("uld") => Ok(Cycle::UpdateLookupDelete),
        Some("ud") => Ok(Cycle::UpdateDelete),
        Some(other) => Err(format!("--cycle {other}: expected uld or ud")),
    }
}

/// The most calls one run may set up: two sockets each, and the relay
/// needs four ports each.
pub const MAX_CALLS: usize = 20_000;

pub fn opt_num<T>(m: &getopts::Matches, name: &str, default: T, min: T, max: T) -> Result<T, String>
where
    T: std::str::FromStr + PartialOrd + std::fmt::Display + Copy,
{
    match m.opt_str(name) {
        Some(s) => parse_num(name, &s, min, max),
        None => Ok(default),
    }
}

pub fn parse_num<T>(name: &str, text: &str, min: T, max: T) -> Result<T, String>
where
    T: std::str::FromStr + PartialOrd + std::fmt::Display + Copy,
{
    let v: T = text
        .trim()
        .parse()
        .map_err(|_| format!("--{name} {text}: not a number"))?;
    if v < min || v > max {
        return Err(format!("--{name} {text}: must be between {min} and {max}"));
    }
    Ok(v)
}

fn parse_list(text: &str) -> Result<Vec<usize>, String> {
    let list: Vec<usize> = text
        .split(',')
        .map(|item| parse_num("sweep-calls", item, 1, MAX_CALLS))
        .collect::<Result<_, _>>()?;
    if list.is_empty() || list.len() > 64 {
        return Err(format!("--sweep-calls {text}: give 1 to 64 counts"));
    }
    Ok(list)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    fn config(list: &[&str]) -> Result<Config, String> {
        match parse(&args(list))? {
            Parsed::Run(c) => Ok(*c),
            Parsed::Help => Err("help".into()),
        }
    }

    #[test]
    fn defaults_are_calls_mode() {
        let c = config(&["--ctrl", "udp:127.0.0.1:22300"]).unwrap();
        assert_eq!(c.mode, Mode::Calls);
        assert_eq!(c.calls, 100);
        assert_eq!(c.duration_s, 20);
        assert_eq!(c.warmup_s, 3);
        assert_eq!(c.sweep_calls, vec![100, 500, 1000, 2000]);
    }

    #[test]
    fn ctrl_is_required_except_for_baseline() {
        assert!(config(&["calls"]).is_err());
        assert!(config(&["baseline"]).is_ok());
    }

    #[test]
    fn numbers_are_checked() {
        assert!(config(&["--ctrl", "udp:127.0.0.1:1", "--calls", "0"]).is_err());
        assert!(config(&["--ctrl", "udp:127.0.0.1:1", "--calls", "many"]).is_err());
        assert!(config(&["--ctrl", "udp:127.0.0.1:1", "--duration", "99999"]).is_err());
        assert!(config(&["--ctrl", "udp:127.0.0.1:1", "--pid", "-1"]).is_err());
    }

    #[test]
    fn non_loopback_addresses_are_refused() {
        assert!(config(&["--ctrl", "udp:192.168.1.1:22222"]).is_err());
        assert!(config(&["--ctrl", "udp:127.0.0.1:1", "--relay-addr", "10.1.1.1"]).is_err());
        assert!(config(&["--ctrl", "udp:127.0.0.1:1", "--relay-addr", "127.0.0.2"]).is_ok());
    }

    #[test]
    fn modes_and_lists_parse() {
        let c = config(&["sweep", "--ctrl", "unix:/tmp/x", "--sweep-calls", "10,20"]).unwrap();
        assert_eq!(c.mode, Mode::Sweep);
        assert_eq!(c.sweep_calls, vec![10, 20]);
        let c = config(&["control", "--ctrl", "udp:127.0.0.1:1", "--cycle", "ud"]).unwrap();
        assert_eq!(c.cycle, Cycle::UpdateDelete);
        assert!(config(&["control", "--ctrl", "udp:127.0.0.1:1", "--cycle", "x"]).is_err());
        assert!(config(&["dance", "--ctrl", "udp:127.0.0.1:1"]).is_err());
        assert!(config(&[
            "sweep",
            "--ctrl",
            "udp:127.0.0.1:1",
            "--sweep-calls",
            "1,,2"
        ])
        .is_err());
    }

    #[test]
    fn odd_traffic_options_parse() {
        let c = config(&["--ctrl", "udp:127.0.0.1:1"]).unwrap();
        assert_eq!((c.ptime_ms, c.silence, c.idle_calls), (20, None, 0));
        let c = config(&[
            "--ctrl",
            "udp:127.0.0.1:1",
            "--ptime",
            "10",
            "--silence",
            "1000:100",
            "--idle-calls",
            "2000",
        ])
        .unwrap();
        assert_eq!(c.ptime_ms, 10);
        assert_eq!(
            c.silence,
            Some(Silence {
                every_ms: 1000,
                length_ms: 100
            })
        );
        assert_eq!(c.idle_calls, 2000);
        for bad in ["100", "100:100", "1000:15", "x:1", "1000:0"] {
            assert!(config(&["--ctrl", "udp:127.0.0.1:1", "--silence", bad]).is_err());
        }
        assert!(config(&["--ctrl", "udp:127.0.0.1:1", "--ptime", "1"]).is_err());
    }

    #[test]
    fn compare_needs_no_ctrl() {
        let c = config(&["compare"]).unwrap();
        assert_eq!(c.mode, Mode::Compare);
        assert_eq!(c.baseline_cpu, Some(c.compare.relay_cpu));
    }

    #[test]
    fn help_is_recognised() {
        assert!(matches!(parse(&args(&["--help"])), Ok(Parsed::Help)));
        assert!(usage().contains("--ctrl"));
    }
}
