//! Interoperability with the real clients: Kamailio's `rtpproxy` module
//! drives the relay and sipp places calls through Kamailio with real RTP.
//!
//! Each test starts its own relay(s) through `common::Rtpproxy`, a Kamailio
//! configured from `tests/kamailio/kamailio.cfg.in`, a sipp callee
//! (`tests/sipp/callee.xml`, echoing RTP back) and sipp callers
//! (`tests/sipp/caller.xml`, playing sipp's `g711a.pcap`), and checks from
//! the outside that:
//! - every call completed (sipp's exit status and its call counters);
//! - the SDP that reached each side names the relay's address and a port of
//!   its range, and that port is one the relay's `I` lists for the call;
//! - RTP crossed the relay in both directions, counted by `I` during the
//!   calls and by the `Q` that Kamailio sends for `$rtpstat` at BYE;
//! - once the calls are over no session is left;
//! - with `start_recording()` on the 200 OK (the `R` command), the relay's
//!   `-r` directory holds both directions of every call afterwards;
//! - with two relays in one set, new calls move to one relay when the other
//!   dies or drains (SIGUSR1), and the calls running on a draining relay
//!   keep every packet until they end, after which it exits by itself;
//! - with two relays in one set handing over to new processes (SIGUSR2)
//!   while calls run, every call completes with its media and its `Q` at
//!   BYE covering the whole call.
//!
//! Two more tests drive the relay's other features through Kamailio:
//! `rtpproxy_stream2uac()` / `rtpproxy_stop_stream2uac()` (`P`, `S`) with
//! `tests/sipp/caller_prompt.xml`, whose media port the test listens on to
//! check the prompt it hears, and the module's `timeout_socket` (a `U` with
//! a notification socket, sent for a re-INVITE) with
//! `tests/sipp/caller_reinvite.xml` and `callee_reinvite.xml`, the test
//! listening on the relay's `-n` socket.
//!
//! Needs `kamailio` with its `rtpproxy` module and `sipp` (Debian:
//! `apt-get install kamailio sip-tester`), and root, because sipp plays the
//! pcap through raw sockets. When any of these is missing the test fails
//! with one line saying what to install; nothing is skipped.
//!
//! Every port (Kamailio's SIP port, each sipp's SIP, media and control
//! ports, the relays' control ports and media ranges) comes from
//! `common::ports`, so that the tests run in parallel; Kamailio gets its
//! ports through the configuration template, sipp through its arguments.
//!
//! The callers probe Kamailio's readiness from their own SIP port before
//! they start. Every child process runs under a deadline and is stopped and
//! reaped by a guard, also when a test fails; a failure message carries the
//! logs of Kamailio, sipp and the relays.

mod common;
mod sip;

use common::{port, ports, PortBlock, Rtpproxy, TempDir};
use sip::{
    expect_media_prerequisites, require_program, section, Endpoint, Guard, Sipps,
    MIN_PACKETS_PER_DIRECTION, PCAP_PACKETS,
};
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::Read;
use std::net::UdpSocket;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread::sleep;
use std::time::{Duration, Instant};

use rtpproxy::rtpp_record_reader::read_recording;

/// The prompt `rtpproxy_stream2uac()` plays: makeann's outfile_template,
/// in the test's directory.
const PROMPT: &str = "prompt";

/// Where distributions keep Kamailio's modules; `KAMAILIO_MPATH` overrides.
const MODULE_DIRS: &[&str] = &[
    "/usr/lib/x86_64-linux-gnu/kamailio/modules",
    "/usr/lib/aarch64-linux-gnu/kamailio/modules",
    "/usr/lib/kamailio/modules",
    "/usr/lib64/kamailio/modules",
    "/usr/local/lib64/kamailio/modules",
    "/usr/local/lib/kamailio/modules",
];

/// How long one sipp run may take before it is killed; sipp's own
/// `-timeout` fires a little earlier so that it can still write its logs.
const SIPP_DEADLINE: Duration = Duration::from_secs(45);

/// How long a child process gets between SIGTERM and SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(3);

/// How long Kamailio gets to start and answer an OPTIONS probe, and how
/// often it is probed.
const KAMAILIO_START: Duration = Duration::from_secs(10);
const PROBE_EVERY: Duration = Duration::from_millis(200);

/// Pause between two `I` queries while calls run.
const SAMPLE_EVERY: Duration = Duration::from_millis(200);

/// The installed programs the tests need.
struct Tools {
    kamailio: PathBuf,
    sipp: PathBuf,
    module_dir: PathBuf,
}

/// Finds Kamailio, sipp and Kamailio's rtpproxy module, or fails with one
/// line saying what to install.
fn tools() -> Tools {
    const INSTALL: &str = "apt-get install kamailio sip-tester";
    let kamailio = require_program("kamailio", "Kamailio", INSTALL);
    let sipp = require_program("sipp", "sipp", INSTALL);
    let module_dir = std::env::var_os("KAMAILIO_MPATH")
        .map(PathBuf::from)
        .into_iter()
        .chain(MODULE_DIRS.iter().map(PathBuf::from))
        .find(|dir| dir.join("rtpproxy.so").is_file())
        .unwrap_or_else(|| {
            panic!(
                "interop tests need Kamailio's rtpproxy module: no rtpproxy.so in {MODULE_DIRS:?} \
                 or $KAMAILIO_MPATH ({INSTALL})"
            )
        });
    Tools {
        kamailio,
        sipp,
        module_dir,
    }
}

/// One relay of the test and what Kamailio calls it.
struct Relay {
    proxy: Rtpproxy,
    /// Its control socket, as `-s` and Kamailio's `rtpproxy_sock` name it.
    url: String,
    /// Its media ports.
    ports: PortBlock,
    alive: bool,
    /// Sent SIGUSR1: it exits by itself once its last session ended.
    draining: bool,
}

/// One line of `I`: a stream of a session.
struct StreamInfo {
    call_id: String,
    /// The session's tag (the creating from-tag, media number included).
    tag: String,
    local_ports: Vec<u16>,
    /// Packets from the FROMTAG side, from the other side, relayed, dropped.
    stats: [u64; 4],
}

/// A parsed `I` reply.
struct Info {
    created: u64,
    active: u64,
    streams: Vec<StreamInfo>,
}

/// What the `I` samples showed for one call.
#[derive(Default, Clone)]
struct CallMedia {
    /// The session's tag, as `I` showed it (for `Q`).
    tag: String,
    relays: BTreeSet<usize>,
    local_ports: BTreeSet<u16>,
    /// Highest counts seen in any stream line of the call: packets from the
    /// FROMTAG side and from the other side.
    from_offerer: u64,
    from_answerer: u64,
}

/// The SDP one side received, as its scenario logged it.
struct SdpSeen {
    call_id: String,
    c_line: String,
    port: u16,
    marked: bool,
}

/// Everything one test started, stopped in field order on drop (sipp, then
/// Kamailio, then the relays, then the directory).
struct Run {
    sipps: Sipps,
    kamailio: Option<Guard>,
    relays: Vec<Relay>,
    /// Per Call-ID, what the relays' `I` showed during the calls.
    media: BTreeMap<String, CallMedia>,
    /// Per relay, the last `I` header (sessions created, active).
    last_counts: Vec<(u64, u64)>,
    /// Kamailio's `timeout_socket`; empty: none.
    timeout_socket: String,
    /// Whether Kamailio calls start_recording() on each 2xx answer.
    recording: bool,
    /// Kamailio's `rtpproxy_retr`: how often a command is sent before the
    /// relay counts as dead.
    rtpproxy_retr: u32,
    /// Kamailio's `rtpproxy_disable_tout`: seconds before a relay that
    /// counted as dead is probed (`V`) again.
    disable_tout: u32,
    tools: Tools,
    dir: TempDir,
}

impl Run {
    fn new(name: &str) -> Run {
        let tools = tools();
        expect_media_prerequisites();
        let dir = TempDir::new(name);
        Run {
            sipps: Sipps::new(tools.sipp.clone(), dir.path(), SIPP_DEADLINE, STOP_GRACE),
            kamailio: None,
            relays: Vec::new(),
            media: BTreeMap::new(),
            last_counts: Vec::new(),
            timeout_socket: String::new(),
            recording: false,
            rtpproxy_retr: 2,
            // Longer than a test: a dead relay is not probed again.
            disable_tout: 60,
            tools,
            dir,
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Starts one relay on 127.0.0.1 with the control socket `control` (as
    /// Kamailio names it too) and the media ports `media`.
    fn start_relay(&mut self, control: &str, media: PortBlock) -> usize {
        self.start_relay_with(control, media, &[])
    }

    /// Like `start_relay`, with more options for the relay; a repeated
    /// option's last value wins.
    fn start_relay_with(&mut self, control: &str, media: PortBlock, extra: &[&str]) -> usize {
        let min = media.first.to_string();
        let max = media.last().to_string();
        let mut args = vec!["-s", control, "-l", "127.0.0.1", "-m", &min, "-M", &max];
        args.extend(["-d", "INFO", "-T", "60"]);
        args.extend_from_slice(extra);
        if control.starts_with("udp:") {
            // The tests run as root; UDP control as root needs -F.
            args.push("-F");
        }
        let proxy = Rtpproxy::start(&args);
        self.relays.push(Relay {
            proxy,
            url: control.to_string(),
            ports: media,
            alive: true,
            draining: false,
        });
        self.last_counts.push((0, 0));
        self.relays.len() - 1
    }

    /// Writes the Kamailio configuration, starts Kamailio and waits until it
    /// answers an OPTIONS sent from `probe_port`.
    fn start_kamailio(&mut self, sip_port: u16, callee_port: u16, probe_port: u16, sock: &str) {
        let prompt = self.path(PROMPT).display().to_string();
        let config = render_kamailio_config(&[
            (
                "MPATH",
                self.tools.module_dir.to_str().expect("utf-8 module path"),
            ),
            ("SIP_PORT", &sip_port.to_string()),
            ("CALLEE_PORT", &callee_port.to_string()),
            ("RTPPROXY_SOCK", sock),
            // Small, so that a dead relay is noticed within a second or two.
            ("RTPPROXY_TOUT", "1"),
            ("RTPPROXY_RETR", &self.rtpproxy_retr.to_string()),
            ("RTPPROXY_DISABLE_TOUT", &self.disable_tout.to_string()),
            // Only the prompt test writes the files.
            ("PROMPT", &prompt),
            ("TIMEOUT_SOCKET", &self.timeout_socket),
            (
                "RECORDING",
                if self.recording {
                    "#!define WITH_RECORDING"
                } else {
                    "# no recording"
                },
            ),
        ]);
        let cfg = self.path("kamailio.cfg");
        fs::write(&cfg, config).expect("write kamailio.cfg");
        let run_dir = self.path("kamailio-run");
        fs::create_dir_all(&run_dir).expect("create Kamailio run directory");
        let mut command = Command::new(&self.tools.kamailio);
        command
            .args(["-DD", "-E", "-f"])
            .arg(&cfg)
            .arg("-Y")
            .arg(&run_dir)
            .arg("-P")
            .arg(run_dir.join("kamailio.pid"))
            .arg("-w")
            .arg(self.dir.path())
            .current_dir(self.dir.path());
        let guard = Guard::spawn(
            "kamailio",
            &mut command,
            self.path("kamailio.log"),
            STOP_GRACE,
            true,
        );
        self.kamailio = Some(guard);

        let probe = UdpSocket::bind(("127.0.0.1", probe_port))
            .unwrap_or_else(|e| self.fail(&format!("cannot bind probe port {probe_port}: {e}")));
        probe
            .set_read_timeout(Some(PROBE_EVERY))
            .expect("set probe timeout");
        // One probe per PROBE_EVERY at most, within KAMAILIO_START.
        let deadline = Instant::now() + KAMAILIO_START;
        let attempts = (KAMAILIO_START.as_millis() / PROBE_EVERY.as_millis()) as u32;
        for attempt in 0..attempts {
            if let Some(status) = self.kamailio.as_mut().and_then(Guard::poll) {
                self.fail(&format!("Kamailio exited at start-up ({status})"));
            }
            if Instant::now() >= deadline {
                break;
            }
            let sent = Instant::now();
            let _ = probe.send_to(
                options_probe(sip_port, probe_port, attempt).as_bytes(),
                ("127.0.0.1", sip_port),
            );
            let mut buf = [0u8; 2048];
            if let Ok((n, _)) = probe.recv_from(&mut buf) {
                if buf[..n].starts_with(b"SIP/2.0 200") {
                    return;
                }
            }
            sleep(PROBE_EVERY.saturating_sub(sent.elapsed()));
        }
        self.fail(&format!(
            "Kamailio did not answer OPTIONS within {KAMAILIO_START:?}"
        ));
    }

    /// Starts the callee for `calls` calls, echoing RTP.
    fn start_callee(&mut self, me: Endpoint, calls: u64) -> usize {
        self.sipps
            .start("callee", "callee.xml", me, calls, &["-rtp_echo"])
    }

    /// Starts a caller placing `calls` calls through Kamailio at `rate` per
    /// second, all of them up at once.
    fn start_caller(
        &mut self,
        name: &str,
        me: Endpoint,
        kamailio: u16,
        calls: u64,
        rate: u32,
    ) -> usize {
        let rate = rate.to_string();
        let limit = calls.to_string();
        let target = format!("127.0.0.1:{kamailio}");
        let extra = [
            "-s", "service", "-r", &rate, "-rp", "1000", "-l", &limit, &target,
        ];
        self.sipps.start(name, "caller.xml", me, calls, &extra)
    }

    /// One control command, turning a harness panic into a failure that
    /// carries every log.
    fn command(&self, relay: usize, cmd: &str) -> String {
        let proxy = &self.relays[relay].proxy;
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| proxy.command(cmd))) {
            Ok(reply) => reply,
            Err(e) => {
                let what = e
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                self.fail(&format!("relay {relay}: command {cmd:?} failed: {what}"))
            }
        }
    }

    /// Queries `I` on every live relay and records what it shows per call.
    /// A draining relay that exited by itself is marked so and skipped.
    fn sample(&mut self) {
        for relay in 0..self.relays.len() {
            if !self.relays[relay].alive {
                continue;
            }
            let reply = if self.relays[relay].draining {
                match self.draining_command(relay, "I") {
                    Some(reply) => reply,
                    None => continue,
                }
            } else {
                self.command(relay, "I")
            };
            let info = parse_info(&reply).unwrap_or_else(|| {
                self.fail(&format!("relay {relay}: unreadable I reply:\n{reply}"))
            });
            self.last_counts[relay] = (info.created, info.active);
            for stream in info.streams {
                let call = self.media.entry(stream.call_id).or_default();
                if call.tag.is_empty() {
                    call.tag = stream.tag;
                }
                call.relays.insert(relay);
                call.local_ports.extend(stream.local_ports);
                call.from_offerer = call.from_offerer.max(stream.stats[0]);
                call.from_answerer = call.from_answerer.max(stream.stats[1]);
            }
        }
    }

    /// A command to a draining relay, which may exit by itself at any
    /// moment: None once it has exited (then it is marked so), a failure if
    /// it neither answers nor exits.
    fn draining_command(&mut self, relay: usize, cmd: &str) -> Option<String> {
        if !self.relays[relay].proxy.alive() {
            self.relays[relay].alive = false;
            return None;
        }
        let proxy = &self.relays[relay].proxy;
        let reply = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| proxy.command(cmd)));
        if let Ok(reply) = reply {
            return Some(reply);
        }
        match self.relays[relay].proxy.wait_exit(Duration::from_secs(2)) {
            Some(_) => {
                self.relays[relay].alive = false;
                None
            }
            None => self.fail(&format!(
                "draining relay {relay} neither answered {cmd:?} nor exited"
            )),
        }
    }

    /// Samples until every sipp in `sipps` has ended, or `limit` passes.
    fn watch_until_done(&mut self, sipps: &[usize], limit: Duration) {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            let running = sipps.iter().any(|&i| self.sipps[i].guard.poll().is_none());
            if !running {
                return;
            }
            self.sample();
            sleep(SAMPLE_EVERY);
        }
        self.fail(&format!("sipp still running after {limit:?}"));
    }

    /// Waits (6 s at most) until `calls` calls carry media both ways.
    fn wait_for_media_on(&mut self, calls: u64) {
        self.watch_until(
            "the first calls to carry media",
            Duration::from_secs(6),
            |run| {
                let flowing = run
                    .media
                    .values()
                    .filter(|m| m.from_offerer > 0 && m.from_answerer > 0)
                    .count();
                flowing as u64 == calls
            },
        );
    }

    /// Fails unless each call in `then` relayed more both ways since;
    /// `what` says what happened in between ("stopped at ...").
    fn expect_media_went_on(&mut self, then: &BTreeMap<String, CallMedia>, what: &str) {
        for (call, earlier) in then {
            let now = &self.media[call];
            if now.from_offerer <= earlier.from_offerer
                || now.from_answerer <= earlier.from_answerer
            {
                let line = format!(
                    "{call}: media {what} ({}/{} packets then, {}/{} later)",
                    earlier.from_offerer,
                    earlier.from_answerer,
                    now.from_offerer,
                    now.from_answerer
                );
                self.fail(&line);
            }
        }
    }

    /// Samples until `ready` holds, or fails after `limit`.
    fn watch_until(&mut self, what: &str, limit: Duration, ready: impl Fn(&Run) -> bool) {
        let deadline = Instant::now() + limit;
        loop {
            self.sample();
            if ready(self) {
                return;
            }
            if Instant::now() >= deadline {
                self.fail(&format!("timed out waiting for {what}"));
            }
            sleep(SAMPLE_EVERY);
        }
    }

    /// Waits for one sipp to end and checks that it completed all its calls.
    fn expect_all_calls_completed(&mut self, index: usize) {
        if let Err(what) = self.sipps.completed(index) {
            self.fail(&what);
        }
    }

    /// The SDP bodies a sipp received, from its `<log>` lines: "OFFER" for
    /// the callee, "ANSWER" for a caller.
    fn sdp_seen(&self, index: usize, kind: &str) -> Vec<SdpSeen> {
        let text = fs::read_to_string(&self.sipps[index].actions).unwrap_or_default();
        let mut seen = Vec::new();
        for line in text.lines().filter(|l| l.starts_with(kind)) {
            seen.push(
                parse_sdp_log(line)
                    .unwrap_or_else(|| self.fail(&format!("unreadable sipp log line: {line}"))),
            );
        }
        seen
    }

    /// Checks the SDP one side received for each call: the relay's address,
    /// a port of the serving relay's range that `I` listed for the call,
    /// and Kamailio's nortpproxy mark. Returns the Call-IDs seen.
    fn expect_sdp_names_relay(&self, index: usize, kind: &str) -> BTreeSet<String> {
        let seen = self.sdp_seen(index, kind);
        let mut calls = BTreeSet::new();
        for sdp in &seen {
            let Some(media) = self.media.get(&sdp.call_id) else {
                self.fail(&format!(
                    "{kind} for {}: no relay listed this call in I",
                    sdp.call_id
                ));
            };
            if sdp.c_line != "c=IN IP4 127.0.0.1" {
                self.fail(&format!(
                    "{kind} for {}: {} instead of the relay's 127.0.0.1",
                    sdp.call_id, sdp.c_line
                ));
            }
            let in_range = media
                .relays
                .iter()
                .any(|&r| self.relays[r].ports.contains(sdp.port));
            if !in_range || !media.local_ports.contains(&sdp.port) {
                self.fail(&format!(
                    "{kind} for {}: m= port {} is not a relay port of the call (I listed {:?})",
                    sdp.call_id, sdp.port, media.local_ports
                ));
            }
            if !sdp.marked {
                self.fail(&format!("{kind} for {}: no a=nortpproxy:yes", sdp.call_id));
            }
            calls.insert(sdp.call_id.clone());
        }
        let expected = self.sipps[index].calls as usize;
        if calls.len() != expected || seen.len() != expected {
            self.fail(&format!(
                "{}: {} {kind} SDP logged for {} calls, {expected} expected",
                self.sipps[index].name,
                seen.len(),
                calls.len()
            ));
        }
        calls
    }

    /// Checks that `I` saw RTP from both sides of every call in `calls`.
    fn expect_media_both_ways(&self, calls: &BTreeSet<String>) {
        for call in calls {
            let media = self.media.get(call).cloned().unwrap_or_default();
            if media.from_offerer == 0 || media.from_answerer == 0 {
                self.fail(&format!(
                    "{call}: during the call I counted {} packets from one side and {} from the other",
                    media.from_offerer, media.from_answerer
                ));
            }
        }
    }

    /// Checks the `Q` statistics Kamailio logged at BYE for `calls`: nearly
    /// the whole recording relayed in each direction.
    fn expect_bye_statistics(&self, calls: &BTreeSet<String>) {
        let log = self
            .kamailio
            .as_ref()
            .map(Guard::output)
            .unwrap_or_default();
        for call in calls {
            let marker = format!("INTEROP bye {call} stats=");
            let Some(line) = log.lines().find(|l| l.contains(&marker)) else {
                self.fail(&format!("{call}: Kamailio logged no BYE statistics"));
            };
            let stats: Vec<u64> = line[line.find(&marker).unwrap() + marker.len()..]
                .split_whitespace()
                .filter_map(|t| t.parse().ok())
                .collect();
            // The callee only echoes what the relay delivered to it, so B
            // counts caller-to-callee deliveries; RELAYED covers both ways.
            if stats.len() != 5
                || stats[1] < MIN_PACKETS_PER_DIRECTION
                || stats[2] < MIN_PACKETS_PER_DIRECTION
                || stats[3] < 2 * MIN_PACKETS_PER_DIRECTION
            {
                self.fail(&format!(
                    "{call}: Q at BYE gave {stats:?}; expected TTL A B RELAYED DROPPED with A and B >= \
                     {MIN_PACKETS_PER_DIRECTION} of the {PCAP_PACKETS} packets sent and RELAYED >= A + B \
                     minus the same margin"
                ));
            }
        }
    }

    /// Checks that every live relay is left without sessions.
    fn expect_no_sessions_left(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(3);
        loop {
            self.sample();
            let left: Vec<_> = (0..self.relays.len())
                .filter(|&r| self.relays[r].alive && self.last_counts[r].1 != 0)
                .collect();
            if left.is_empty() {
                return;
            }
            if Instant::now() >= deadline {
                let replies: Vec<_> = left.iter().map(|&r| self.command(r, "I")).collect();
                self.fail(&format!(
                    "sessions left after the calls:\n{}",
                    replies.join("\n")
                ));
            }
            sleep(SAMPLE_EVERY);
        }
    }

    /// Calls served by `relay`, according to `I`.
    fn calls_on(&self, relay: usize) -> BTreeSet<String> {
        self.media
            .iter()
            .filter(|(_, m)| m.relays.contains(&relay))
            .map(|(call, _)| call.clone())
            .collect()
    }

    /// Fails the test with `what` and the logs of everything it started.
    fn fail(&self, what: &str) -> ! {
        let mut report = format!("{what}\n");
        for (i, relay) in self.relays.iter().enumerate() {
            section(
                &mut report,
                &format!("relay {i} ({}) stderr", relay.url),
                &relay.proxy.log(),
                60,
            );
        }
        if let Some(kamailio) = &self.kamailio {
            section(&mut report, "Kamailio log", &kamailio.output(), 150);
        }
        self.sipps.report(&mut report, 30);
        panic!("{report}");
    }
}

/// Fills the `@NAME@` placeholders of `tests/kamailio/kamailio.cfg.in`.
fn render_kamailio_config(values: &[(&str, &str)]) -> String {
    let mut config = include_str!("kamailio/kamailio.cfg.in").to_string();
    for (name, value) in values {
        config = config.replace(&format!("@{name}@"), value);
    }
    let left: Vec<&str> = config
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter(|l| {
            l.split('@')
                .skip(1)
                .step_by(2)
                .any(|w| !w.is_empty() && w.chars().all(|c| c.is_ascii_uppercase() || c == '_'))
        })
        .collect();
    assert!(
        left.is_empty(),
        "unfilled placeholders in the Kamailio template: {left:?}"
    );
    config
}

/// A minimal out-of-dialog OPTIONS, answered 200 by the test configuration.
fn options_probe(sip_port: u16, probe_port: u16, attempt: u32) -> String {
    format!(
        "OPTIONS sip:ping@127.0.0.1:{sip_port} SIP/2.0\r\n\
         Via: SIP/2.0/UDP 127.0.0.1:{probe_port};branch=z9hG4bK-probe-{attempt}\r\n\
         From: <sip:probe@127.0.0.1:{probe_port}>;tag=probe{attempt}\r\n\
         To: <sip:ping@127.0.0.1:{sip_port}>\r\n\
         Call-ID: probe-{attempt}-{probe_port}@127.0.0.1\r\n\
         CSeq: 1 OPTIONS\r\n\
         Max-Forwards: 70\r\n\
         Content-Length: 0\r\n\r\n"
    )
}

/// Parses `KIND call=CALLID | c=IN IP4 ADDR | m=audio PORT | a=nortpproxy:yes`
/// (the last field is empty when the mark is missing).
fn parse_sdp_log(line: &str) -> Option<SdpSeen> {
    let mut fields = line.split(" | ");
    let call_id = fields.next()?.split_once("call=")?.1.to_string();
    let c_line = fields.next()?.trim().to_string();
    let port = fields
        .next()?
        .trim()
        .strip_prefix("m=audio ")?
        .parse()
        .ok()?;
    let marked = fields.next().map(str::trim) == Some("a=nortpproxy:yes");
    Some(SdpSeen {
        call_id,
        c_line,
        port,
        marked,
    })
}

/// Parses an `I` reply (doc/PROTOCOL.md, "`Q` and `I`"). Stream lines are read
/// for the Call-ID, the local ports and the packet counters only; an
/// optional `C ` prefix marks an RTCP twin. Which of a session's two lines
/// carries the RTP counters differs between implementations (the classic
/// daemon printed the RTCP addresses next to the RTP counters), so callers
/// combine all lines of a call.
fn parse_info(reply: &str) -> Option<Info> {
    let header = |name: &str| -> Option<u64> {
        let line = reply.lines().find(|l| l.starts_with(name))?;
        line[name.len()..].trim().parse().ok()
    };
    let created = header("sessions created:")?;
    let active = header("active sessions:")?;
    let mut streams = Vec::new();
    for line in reply.lines().filter(|l| l.starts_with('\t')) {
        let body = line.trim_start();
        let body = body.strip_prefix("C ").unwrap_or(body);
        let (call_id, rest) = body.split_once('/')?;
        let call_id = call_id.to_string();
        let tag = rest.split_once(": ")?.0.to_string();
        let mut local_ports = Vec::new();
        for side in ["caller = ", "callee = "] {
            let start = body.find(side)? + side.len();
            let local = body[start..].split('/').next()?;
            // A leg whose port is not allocated yet (offer seen, answer
            // not yet) prints the address it will open on, port 0.
            let port: u16 = local.rsplit_once(':')?.1.parse().ok()?;
            if port != 0 {
                local_ports.push(port);
            }
        }
        let start = body.find("stats = ")? + "stats = ".len();
        let counters: Vec<u64> = body[start..]
            .split(',')
            .next()?
            .split('/')
            .map(|n| n.trim().parse().ok())
            .collect::<Option<_>>()?;
        streams.push(StreamInfo {
            call_id,
            tag,
            local_ports,
            stats: counters.try_into().ok()?,
        });
    }
    Some(Info {
        created,
        active,
        streams,
    })
}

/// One relay, one caller placing five calls, one callee: the checks every
/// single-relay test makes. Returns the Call-IDs.
fn single_relay_calls(
    run: &mut Run,
    kamailio: u16,
    callee: Endpoint,
    caller: Endpoint,
) -> BTreeSet<String> {
    const CALLS: u64 = 5;
    let callee = run.start_callee(callee, CALLS);
    let caller = run.start_caller("caller", caller, kamailio, CALLS, 5);
    run.watch_until_done(&[caller, callee], SIPP_DEADLINE);
    run.expect_all_calls_completed(caller);
    run.expect_all_calls_completed(callee);
    let answered = run.expect_sdp_names_relay(caller, "ANSWER");
    let offered = run.expect_sdp_names_relay(callee, "OFFER");
    if answered != offered {
        run.fail(&format!(
            "the callee saw calls {offered:?}, the caller {answered:?}"
        ));
    }
    run.expect_media_both_ways(&answered);
    run.expect_bye_statistics(&answered);
    run.expect_no_sessions_left();
    let (created, _) = run.last_counts[0];
    if created != CALLS {
        run.fail(&format!(
            "relay created {created} sessions for {CALLS} calls"
        ));
    }
    answered
}

/// Kamailio reaches the relay over its unix stream socket (`unix:/path`).
#[test]
fn kamailio_drives_relay_over_unix_socket() {
    let mut run = Run::new("interop-unix");
    let socket = run.path("rtpproxy.sock");
    let url = format!("unix:{}", socket.display());
    run.start_relay(&url, ports(100));
    let (kamailio, callee, caller) = (port(), Endpoint::new(), Endpoint::new());
    run.start_kamailio(kamailio, callee.sip, caller.sip, &url);
    single_relay_calls(&mut run, kamailio, callee, caller);
}

/// Kamailio reaches the relay over UDP (`udp:127.0.0.1:PORT`, with cookies
/// and retransmissions).
#[test]
fn kamailio_drives_relay_over_udp() {
    let mut run = Run::new("interop-udp");
    let url = format!("udp:127.0.0.1:{}", port());
    run.start_relay(&url, ports(100));
    let (kamailio, callee, caller) = (port(), Endpoint::new(), Endpoint::new());
    run.start_kamailio(kamailio, callee.sip, caller.sip, &url);
    single_relay_calls(&mut run, kamailio, callee, caller);
}

/// Two relays in one Kamailio set: calls spread over both; when one dies,
/// the calls on the other run to their end and new calls all go to it.
#[test]
fn kamailio_relay_set_spreads_calls_and_survives_a_dead_relay() {
    const FIRST: u64 = 6;
    const SECOND: u64 = 6;
    let mut run = Run::new("interop-set");
    let url0 = format!("udp:127.0.0.1:{}", port());
    let url1 = format!("udp:127.0.0.1:{}", port());
    let survivor = run.start_relay(&url0, ports(100));
    let victim = run.start_relay(&url1, ports(100));
    let kamailio = port();
    let (callee, first_caller, second_caller) = (Endpoint::new(), Endpoint::new(), Endpoint::new());
    // Equal weights: Kamailio picks by a sum over the Call-ID bytes, so
    // sipp's consecutive Call-IDs ("1-PID@...", "2-PID@...") alternate.
    run.start_kamailio(
        kamailio,
        callee.sip,
        first_caller.sip,
        &format!("{url0}=1 {url1}=1"),
    );
    let callee = run.start_callee(callee, FIRST + SECOND);
    let first = run.start_caller("caller-1", first_caller, kamailio, FIRST, 10);

    // All first calls up, with media both ways, before a relay dies.
    run.wait_for_media_on(FIRST);
    let before = run.calls_on(survivor);
    let on_victim = run.calls_on(victim);
    if before.is_empty() || on_victim.is_empty() {
        run.fail(&format!(
            "calls not spread over the set: {} on {url0}, {} on {url1}",
            before.len(),
            on_victim.len()
        ));
    }
    let at_kill: BTreeMap<String, CallMedia> = before
        .iter()
        .map(|c| (c.clone(), run.media[c].clone()))
        .collect();

    run.relays[victim].proxy.terminate();
    run.relays[victim].alive = false;

    let second = run.start_caller("caller-2", second_caller, kamailio, SECOND, 10);
    run.watch_until_done(&[first, second, callee], SIPP_DEADLINE);
    for sipp in [first, second, callee] {
        run.expect_all_calls_completed(sipp);
    }

    // Every SDP named the relay that served the call.
    let first_calls = run.expect_sdp_names_relay(first, "ANSWER");
    let second_calls = run.expect_sdp_names_relay(second, "ANSWER");
    let offered = run.expect_sdp_names_relay(callee, "OFFER");
    let all: BTreeSet<String> = first_calls.union(&second_calls).cloned().collect();
    if offered != all {
        run.fail(&format!(
            "the callee saw calls {offered:?}, the callers {all:?}"
        ));
    }
    run.expect_media_both_ways(&all);

    // New calls all went to the survivor.
    let misplaced: Vec<_> = second_calls
        .iter()
        .filter(|c| run.media[*c].relays != BTreeSet::from([survivor]))
        .collect();
    if !misplaced.is_empty() {
        run.fail(&format!(
            "calls placed after {url1} died did not all go to {url0}: {misplaced:?}"
        ));
    }

    // The survivor's running calls kept their media through the other
    // relay's death and relayed nearly all of it by their BYE.
    run.expect_media_went_on(&at_kill, &format!("on {url0} stopped when {url1} died"));
    let survivor_calls: BTreeSet<String> = before.union(&second_calls).cloned().collect();
    run.expect_bye_statistics(&survivor_calls);

    run.expect_no_sessions_left();
    let (created, _) = run.last_counts[survivor];
    if created != before.len() as u64 + SECOND {
        run.fail(&format!(
            "{url0} created {created} sessions; {} first calls and {SECOND} later ones expected",
            before.len()
        ));
    }
}

/// Hand-over (SIGUSR2) with two relays in one Kamailio set: while calls
/// run on both, each relay in turn hands everything over to a new process
/// of its binary. Every call completes, keeps its media both ways through
/// the hand-overs, and the `Q` Kamailio sends at BYE, answered by the new
/// processes, covers the whole call; calls placed afterwards are served by
/// the new processes, whose counters went on from the old ones'.
#[test]
fn kamailio_relay_set_keeps_its_calls_through_a_hand_over() {
    const FIRST: u64 = 6;
    const SECOND: u64 = 4;
    let mut run = Run::new("interop-handover");
    let urls = [
        format!("udp:127.0.0.1:{}", port()),
        format!("udp:127.0.0.1:{}", port()),
    ];
    for url in &urls {
        run.start_relay(url, ports(60));
    }
    let kamailio = port();
    let (callee, first_caller, second_caller) = (Endpoint::new(), Endpoint::new(), Endpoint::new());
    run.start_kamailio(
        kamailio,
        callee.sip,
        first_caller.sip,
        &format!("{}=1 {}=1", urls[0], urls[1]),
    );
    let callee = run.start_callee(callee, FIRST + SECOND);
    let first = run.start_caller("caller-1", first_caller, kamailio, FIRST, 10);
    run.wait_for_media_on(FIRST);
    let before: BTreeMap<String, CallMedia> = run.media.clone();
    for relay in 0..urls.len() {
        let old = run.relays[relay].proxy.live_pid();
        match run.relays[relay].proxy.hand_over() {
            Some(new) if Some(new) != old => {}
            _ => run.fail(&format!("relay {relay} did not hand over")),
        }
    }
    let second = run.start_caller("caller-2", second_caller, kamailio, SECOND, 10);
    run.watch_until_done(&[first, second, callee], SIPP_DEADLINE);
    for sipp in [first, second, callee] {
        run.expect_all_calls_completed(sipp);
    }
    let first_calls = run.expect_sdp_names_relay(first, "ANSWER");
    let second_calls = run.expect_sdp_names_relay(second, "ANSWER");
    let all: BTreeSet<String> = first_calls.union(&second_calls).cloned().collect();
    run.expect_media_both_ways(&all);
    run.expect_media_went_on(&before, "stopped at the hand-over");
    run.expect_bye_statistics(&all);
    run.expect_no_sessions_left();
    let created: u64 = run.last_counts.iter().map(|c| c.0).sum();
    if created != FIRST + SECOND {
        run.fail(&format!(
            "the new processes count {created} sessions created; {} calls were placed",
            FIRST + SECOND
        ));
    }
    for relay in &run.relays {
        if !relay.proxy.log().contains("took over") {
            run.fail("a relay's log has no hand-over");
        }
    }
}

/// Graceful drain with two relays in one Kamailio set: SIGUSR1 to one of
/// them while calls run on both. New calls all move to the other relay
/// (the draining one stays silent to the `U` that would create a session,
/// Kamailio takes it for dead, retries the offer on the other relay, and
/// its periodic `V` re-check gets `E15`); the calls already on the
/// draining relay keep relaying every packet until they end; their
/// sessions then time out there (Kamailio sends their `D` to the relay it
/// picks among the enabled ones), and the relay exits by itself. Its `-A`
/// file has one record per call with the relay's own counts.
#[test]
fn kamailio_moves_new_calls_off_a_draining_relay() {
    const FIRST: u64 = 6;
    const SECOND: u64 = 6;
    let mut run = Run::new("interop-drain");
    let url0 = format!("udp:127.0.0.1:{}", port());
    let url1 = format!("udp:127.0.0.1:{}", port());
    let survivor = run.start_relay(&url0, ports(100));
    let accounting = run.path("drained-calls.json");
    let acct = accounting.to_str().expect("utf-8 temp path").to_string();
    // A short idle timeout: the drained relay's sessions end by timeout
    // soon after their calls.
    let drained = run.start_relay_with(&url1, ports(100), &["-T", "3", "-A", &acct]);
    // One unanswered send moves an offer (rtpproxy_tout is 1 s), and the
    // draining relay is probed again after 2 s, during the test.
    run.rtpproxy_retr = 1;
    run.disable_tout = 2;
    let kamailio = port();
    let (callee, first_caller, second_caller) = (Endpoint::new(), Endpoint::new(), Endpoint::new());
    run.start_kamailio(
        kamailio,
        callee.sip,
        first_caller.sip,
        &format!("{url0}=1 {url1}=1"),
    );
    let callee = run.start_callee(callee, FIRST + SECOND);
    let first = run.start_caller("caller-1", first_caller, kamailio, FIRST, 10);
    run.wait_for_media_on(FIRST);
    let on_survivor = run.calls_on(survivor);
    let on_drained = run.calls_on(drained);
    if on_survivor.is_empty() || on_drained.is_empty() {
        run.fail(&format!(
            "calls not spread over the set: {} on {url0}, {} on {url1}",
            on_survivor.len(),
            on_drained.len()
        ));
    }

    common::signal(run.relays[drained].proxy.pid(), "USR1");
    run.relays[drained].draining = true;
    let at_signal: BTreeMap<String, CallMedia> = on_drained
        .iter()
        .map(|c| (c.clone(), run.media[c].clone()))
        .collect();
    // Draining once V fails (the relay still has sessions, so it is up).
    let deadline = Instant::now() + Duration::from_secs(3);
    while run.command(drained, "V") != "E15" {
        if Instant::now() >= deadline {
            run.fail(&format!("{url1} does not drain after SIGUSR1"));
        }
        sleep(Duration::from_millis(20));
    }
    // Commands about its running calls keep working.
    for (call, media) in &at_signal {
        let q = run.command(drained, &format!("Q {call} {}", media.tag));
        let counts: Vec<u64> = q.split(' ').filter_map(|t| t.parse().ok()).collect();
        if counts.len() != 5 || counts[1] == 0 || counts[2] == 0 {
            run.fail(&format!("{call}: Q on the draining relay answered {q:?}"));
        }
    }

    let second = run.start_caller("caller-2", second_caller, kamailio, SECOND, 10);
    run.watch_until_done(&[first, second, callee], SIPP_DEADLINE);
    for sipp in [first, second, callee] {
        run.expect_all_calls_completed(sipp);
    }
    let first_calls = run.expect_sdp_names_relay(first, "ANSWER");
    let second_calls = run.expect_sdp_names_relay(second, "ANSWER");
    let offered = run.expect_sdp_names_relay(callee, "OFFER");
    let all: BTreeSet<String> = first_calls.union(&second_calls).cloned().collect();
    if offered != all {
        run.fail(&format!(
            "the callee saw calls {offered:?}, the callers {all:?}"
        ));
    }
    run.expect_media_both_ways(&all);

    // Every new call went to the survivor, and at least one of them was
    // offered to the draining relay first and moved.
    let misplaced: Vec<_> = second_calls
        .iter()
        .filter(|c| run.media[*c].relays != BTreeSet::from([survivor]))
        .collect();
    if !misplaced.is_empty() {
        run.fail(&format!(
            "calls placed while {url1} drained did not all go to {url0}: {misplaced:?}"
        ));
    }
    let log = run.relays[drained].proxy.log();
    let refused: BTreeSet<String> = log
        .lines()
        .filter_map(|l| {
            l.split_once("draining: not creating session ")?
                .1
                .split(',')
                .next()
        })
        .map(String::from)
        .collect();
    if refused.is_empty() || !refused.is_subset(&second_calls) {
        run.fail(&format!(
            "{url1} refused offers for {refused:?}; at least one, all of them new calls {second_calls:?}, expected"
        ));
    }
    let kamailio_log = run.kamailio.as_ref().map(Guard::output).unwrap_or_default();
    if !kamailio_log.contains(&format!("unsupported version of RTP proxy <{url1}>")) {
        run.fail(&format!(
            "Kamailio never re-checked {url1} with V while it drained (or did not take E15 as a failure)"
        ));
    }

    // The calls on the draining relay kept their media to the end.
    run.expect_media_went_on(
        &at_signal,
        &format!("on {url1} stopped when it began to drain"),
    );
    let survivor_calls: BTreeSet<String> = on_survivor.union(&second_calls).cloned().collect();
    run.expect_bye_statistics(&survivor_calls);

    // The drained relay exits by itself once its last session timed out.
    let status = run.relays[drained].proxy.wait_exit(Duration::from_secs(10));
    run.relays[drained].alive = false;
    if !status.is_some_and(|s| s.success()) {
        run.fail(&format!(
            "{url1} did not exit cleanly after draining: {status:?}"
        ));
    }
    if !run.relays[drained]
        .proxy
        .log()
        .contains("drained: the last session ended, exiting")
    {
        run.fail(&format!("{url1} exited without saying it drained"));
    }
    run.expect_no_sessions_left();
    let (created, _) = run.last_counts[survivor];
    if created != on_survivor.len() as u64 + SECOND {
        run.fail(&format!(
            "{url0} created {created} sessions; {} first calls and {SECOND} later ones expected",
            on_survivor.len()
        ));
    }
    let (created, _) = run.last_counts[drained];
    if created != on_drained.len() as u64 {
        run.fail(&format!(
            "{url1} created {created} sessions for {} calls",
            on_drained.len()
        ));
    }

    // Its accounting: one record per call, ended by timeout, and by the
    // relay's own counts not one packet lost, dropped or left unrelayed.
    let text = fs::read_to_string(&accounting).unwrap_or_default();
    let mut accounted = BTreeSet::new();
    for line in text.lines() {
        let rec = common::parse_flat_json(line)
            .unwrap_or_else(|e| run.fail(&format!("unreadable accounting line ({e}): {line}")));
        let field = |key: &str| match rec.get(key) {
            Some(common::Json::Num(n)) => *n as u64,
            _ => run.fail(&format!("no number {key} in {line}")),
        };
        let call = match rec.get("call_id") {
            Some(common::Json::Str(c)) => c.clone(),
            _ => run.fail(&format!("no call_id in {line}")),
        };
        let packets = [
            "rtp_caller_packets",
            "rtp_callee_packets",
            "rtcp_caller_packets",
            "rtcp_callee_packets",
        ]
        .map(field);
        let ok = rec.get("reason") == Some(&common::Json::Str("timeout".into()))
            && packets[0] == PCAP_PACKETS
            && packets[1] == packets[0]
            && field("relayed") == packets.iter().sum::<u64>()
            && field("dropped") == 0
            && field("lost_caller") == 0
            && field("lost_callee") == 0;
        if !ok {
            run.fail(&format!(
                "{call}: expected a timeout with all {PCAP_PACKETS} packets each way relayed, none dropped or lost: {line}"
            ));
        }
        accounted.insert(call);
    }
    if accounted != on_drained || text.lines().count() != on_drained.len() {
        run.fail(&format!(
            "{url1} accounted for {accounted:?} in {} lines, its calls were {on_drained:?}",
            text.lines().count()
        ));
    }
}

/// Writes the prompt files with the built makeann from 0.2 s of a tone
/// (20 packets of G.711) and returns the PCMA one, which the caller's offer
/// ("8 0 101") selects.
fn make_prompt(run: &Run) -> Vec<u8> {
    let pcm: Vec<u8> = (0..1600)
        .flat_map(|i| {
            let phase = i as f64 * std::f64::consts::TAU * 700.0 / 8000.0;
            ((phase.sin() * 12000.0) as i16).to_le_bytes()
        })
        .collect();
    let raw = run.path("prompt.raw");
    fs::write(&raw, pcm).expect("write prompt PCM");
    let status = Command::new(env!("CARGO_BIN_EXE_makeann"))
        .arg(&raw)
        .arg(run.path(PROMPT))
        .status()
        .expect("run makeann");
    assert!(status.success(), "makeann failed: {status}");
    fs::read(run.path(&format!("{PROMPT}.8"))).expect("makeann wrote the PCMA prompt")
}

/// Kamailio's `rtpproxy_stream2uac()` (a `P-1 ... session` command) plays a
/// makeann prompt to the caller, from the relay port Kamailio wrote into
/// the caller's answer, in the codec the caller offered first; its
/// `rtpproxy_stop_stream2uac()` (`S`) stops it while the call goes on.
#[test]
fn kamailio_streams_a_prompt_to_the_caller_and_stops_it() {
    let mut run = Run::new("interop-prompt");
    let prompt = make_prompt(&run);
    let url = format!("udp:127.0.0.1:{}", port());
    run.start_relay(&url, ports(50));
    let (kamailio, callee, caller) = (port(), Endpoint::new(), Endpoint::new());
    run.start_kamailio(kamailio, callee.sip, caller.sip, &url);
    // The caller's SDP names its media port + 4: this socket.
    let media = UdpSocket::bind(("127.0.0.1", caller.media + 4))
        .unwrap_or_else(|e| run.fail(&format!("cannot bind the caller's media port: {e}")));
    media
        .set_read_timeout(Some(Duration::from_millis(20)))
        .expect("set media timeout");
    let callee = run.start_callee(callee, 1);
    let target = format!("127.0.0.1:{kamailio}");
    let extra = ["-s", "service", "-l", "1", &target];
    let caller = run
        .sipps
        .start("caller", "caller_prompt.xml", caller, 1, &extra);

    // Collect what reaches the caller while the call runs. The caller ends
    // on the 200 to its BYE, right after Kamailio's D ended the session.
    let mut packets: Vec<(Instant, Vec<u8>, std::net::SocketAddr)> = Vec::new();
    let mut next_sample = Instant::now();
    let deadline = Instant::now() + SIPP_DEADLINE;
    while run.sipps[caller].guard.poll().is_none() && Instant::now() < deadline {
        let mut buf = [0u8; 2048];
        if let Ok((n, from)) = media.recv_from(&mut buf) {
            packets.push((Instant::now(), buf[..n].to_vec(), from));
        }
        if Instant::now() >= next_sample {
            run.sample();
            next_sample += SAMPLE_EVERY;
        }
    }
    let call_ended = Instant::now();
    run.expect_all_calls_completed(caller);
    run.expect_all_calls_completed(callee);
    let answered = run.expect_sdp_names_relay(caller, "ANSWER");
    let relay_port = run.sdp_seen(caller, "ANSWER")[0].port;
    let log = run.kamailio.as_ref().map(Guard::output).unwrap_or_default();
    for event in ["start", "stop"] {
        if !answered
            .iter()
            .all(|c| log.contains(&format!("INTEROP prompt {event} {c}")))
        {
            run.fail(&format!("Kamailio did not log the prompt {event}"));
        }
    }

    // The stream: PCMA from the relay port, marker first, consecutive
    // sequence numbers and timestamps, one SSRC, the prompt's bytes looped.
    if packets.len() < 2 * prompt.len() / 80 {
        run.fail(&format!(
            "{} prompt packets reached the caller; the prompt has {} and was to loop",
            packets.len(),
            prompt.len() / 80
        ));
    }
    let mut played = Vec::new();
    let first = &packets[0].1;
    for (i, (_, p, from)) in packets.iter().enumerate() {
        let bad = |what: &str| -> ! { run.fail(&format!("prompt packet {i}: {what}: {p:02x?}")) };
        if from.port() != relay_port {
            bad(&format!(
                "came from {from}, not the relay port {relay_port}"
            ));
        }
        if p.len() != 12 + 80 || p[0] != 0x80 || p[1] & 0x7f != 8 {
            bad("not a 10 ms PCMA packet");
        }
        if (p[1] & 0x80 != 0) != (i == 0) {
            bad("marker bit");
        }
        let seq = u16::from_be_bytes([p[2], p[3]]);
        let ts = u32::from_be_bytes([p[4], p[5], p[6], p[7]]);
        let seq0 = u16::from_be_bytes([first[2], first[3]]);
        let ts0 = u32::from_be_bytes([first[4], first[5], first[6], first[7]]);
        if seq != seq0.wrapping_add(i as u16) || ts != ts0.wrapping_add(80 * i as u32) {
            bad("sequence number or timestamp");
        }
        if p[8..12] != first[8..12] {
            bad("SSRC changed");
        }
        played.extend_from_slice(&p[12..]);
    }
    let expected: Vec<u8> = prompt.iter().copied().cycle().take(played.len()).collect();
    if played != expected {
        run.fail("the caller heard other bytes than the prompt file's");
    }

    // It played for the 1.5 s between ACK and INFO, then stopped while the
    // call lasted another second.
    let last = packets[packets.len() - 1].0;
    let span = last - packets[0].0;
    if span < Duration::from_millis(1200) || span > Duration::from_millis(2200) {
        run.fail(&format!("the prompt played for {span:?}, not about 1.5 s"));
    }
    if call_ended < last + Duration::from_millis(600) {
        run.fail(&format!(
            "the prompt went on until {:?} before the call ended: S did not stop it",
            call_ended - last
        ));
    }
    println!(
        "prompt: {} packets over {span:?}, stopped {:?} before the call ended",
        packets.len(),
        call_ended - last
    );
    run.expect_no_sessions_left();
}

/// Kamailio's `timeout_socket`: its rtpproxy module (5.6) adds the socket,
/// and no tag, to a U that carries both tags, which a re-INVITE's offer
/// does (never to the first offer, nor through the dialog module). The
/// relay arms the notification, and when the silent call's session times
/// out the listener on the `-n` socket reads the call's two relay ports:
/// the one the re-INVITE's U answered (the callee's m= port) and the one
/// its L answered (the caller's).
#[test]
fn kamailio_timeout_socket_gets_the_timeout_notification() {
    let mut run = Run::new("interop-timeout");
    let notify_path = run.path("timeout.sock");
    let listener = UnixListener::bind(&notify_path)
        .unwrap_or_else(|e| run.fail(&format!("cannot bind the notification socket: {e}")));
    listener
        .set_nonblocking(true)
        .expect("non-blocking listener");
    let notify = format!("unix:{}", notify_path.display());
    let control = format!("unix:{}", run.path("rtpproxy.sock").display());
    run.start_relay_with(&control, ports(50), &["-n", &notify, "-T", "2"]);
    run.timeout_socket = notify.clone();
    let (kamailio, callee, caller) = (port(), Endpoint::new(), Endpoint::new());
    run.start_kamailio(kamailio, callee.sip, caller.sip, &control);
    let callee = run
        .sipps
        .start("callee", "callee_reinvite.xml", callee, 1, &[]);
    let target = format!("127.0.0.1:{kamailio}");
    let extra = ["-s", "service", "-l", "1", &target];
    let caller = run
        .sipps
        .start("caller", "caller_reinvite.xml", caller, 1, &extra);

    // Read what the relay writes to the listener while the call runs.
    let mut conn = None;
    let mut received = Vec::new();
    let mut notified_at = None;
    let deadline = Instant::now() + SIPP_DEADLINE;
    while run.sipps[caller].guard.poll().is_none() && Instant::now() < deadline {
        if conn.is_none() {
            conn = listener.accept().ok().map(|(s, _)| s);
            if let Some(s) = &conn {
                s.set_nonblocking(true).expect("non-blocking connection");
            }
        }
        let mut buf = [0u8; 1024];
        if let Some(Ok(n)) = conn.as_mut().map(|s| s.read(&mut buf)) {
            received.extend_from_slice(&buf[..n]);
            notified_at.get_or_insert_with(Instant::now);
        }
        run.sample();
        sleep(SAMPLE_EVERY);
    }
    let call_ended = Instant::now();
    run.expect_all_calls_completed(caller);
    run.expect_all_calls_completed(callee);
    run.expect_sdp_names_relay(caller, "ANSWER");
    run.expect_sdp_names_relay(callee, "OFFER");
    let reoffer = run.sdp_seen(callee, "REOFFER");
    let reanswer = run.sdp_seen(caller, "REANSWER");
    let (Some(u_port), Some(l_port)) = (reoffer.first(), reanswer.first()) else {
        run.fail("the re-INVITE's SDP was not logged");
    };
    let want = format!("{} {}\n", u_port.port, l_port.port);
    let got = String::from_utf8_lossy(&received);
    if got != want {
        run.fail(&format!(
            "the notification listener read {got:?}, expected {want:?}"
        ));
    }
    let before_bye = notified_at.map(|t| call_ended.saturating_duration_since(t));
    if before_bye.is_none_or(|d| d < Duration::from_millis(500)) {
        run.fail(&format!(
            "the notification did not come before the BYE ({before_bye:?} before the call ended)"
        ));
    }
    println!("timeout notification {got:?}, {before_bye:?} before the call ended");
    run.expect_no_sessions_left();
}

/// Kamailio's start_recording() on the 200 OK sends `R`: after the calls,
/// `-r` holds both directions of each call, with nearly all of its media.
#[test]
fn kamailio_start_recording_records_both_directions() {
    let mut run = Run::new("interop-record");
    let recordings = run.path("recordings");
    fs::create_dir(&recordings).expect("create the recording directory");
    let url = format!("udp:127.0.0.1:{}", port());
    let dir = recordings.to_str().expect("utf-8 temp path");
    run.start_relay_with(&url, ports(100), &["-r", dir]);
    run.recording = true;
    let (kamailio, callee, caller) = (port(), Endpoint::new(), Endpoint::new());
    run.start_kamailio(kamailio, callee.sip, caller.sip, &url);
    let calls = single_relay_calls(&mut run, kamailio, callee, caller);
    let names: Vec<String> = fs::read_dir(&recordings)
        .expect("list the recording directory")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .collect();
    for call in &calls {
        for (suffix, who) in [(".o.rtp", "caller"), (".a.rtp", "callee")] {
            let found: Vec<&String> = names
                .iter()
                .filter(|n| n.starts_with(&format!("{call}=")) && n.ends_with(suffix))
                .collect();
            let [name] = found[..] else {
                run.fail(&format!(
                    "{call}: expected one {suffix} recording, found {found:?} in {names:?}"
                ));
            };
            let bytes = fs::read(recordings.join(name)).expect("read a recording");
            let packets = read_recording(&bytes)
                .unwrap_or_else(|e| run.fail(&format!("{name}: unreadable recording: {e}")));
            // sipp plays and echoes PCMA (payload type 8).
            let pcma = packets
                .iter()
                .filter(|p| p.data.len() > 12 && p.data[1] & 0x7f == 8)
                .count() as u64;
            if pcma < MIN_PACKETS_PER_DIRECTION {
                run.fail(&format!(
                    "{name}: {pcma} PCMA packets from the {who} recorded ({} in all), \
                     at least {MIN_PACKETS_PER_DIRECTION} expected",
                    packets.len()
                ));
            }
        }
    }
}

/// The production-shaped example in `contrib/` is a configuration Kamailio
/// accepts: every module, parameter and function it names exists.
#[test]
fn contrib_kamailio_config_is_accepted() {
    let tools = tools();
    let dir = TempDir::new("interop-contrib");
    let cfg = Path::new(env!("CARGO_MANIFEST_DIR")).join("contrib/kamailio/kamailio-rtpproxy.cfg");
    let mut command = Command::new(&tools.kamailio);
    command
        .arg("-c")
        .arg("-L")
        .arg(&tools.module_dir)
        .arg("-f")
        .arg(&cfg)
        .current_dir(dir.path());
    let mut check = Guard::spawn(
        "kamailio -c",
        &mut command,
        dir.path().join("check.log"),
        STOP_GRACE,
        false,
    );
    let status = check.wait(KAMAILIO_START);
    assert!(
        status.is_some_and(|s| s.success()),
        "Kamailio rejects {} ({status:?}):\n{}",
        cfg.display(),
        check.output()
    );
}
