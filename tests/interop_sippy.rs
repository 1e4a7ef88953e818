//! Interoperability with Sippy B2BUA (PyPI `sippy`, the version pinned in
//! `tests/sippy/install.sh`): the B2BUA drives the relay over its control
//! socket while sipp places a call through it with real RTP.
//!
//! Each test starts its own relay through `common::Rtpproxy` (in the
//! foreground with `-d DBUG`, so that its log holds every command and every
//! reply), a B2BUA pointed at it with `--rtp_proxy_clients=` (its own
//! command socket `-c` in the test's directory), a sipp callee behind the
//! B2BUA (`tests/sipp/callee.xml`, echoing RTP back) and a sipp caller
//! (`tests/sipp/b2bua_caller.xml`, playing sipp's `g711a.pcap`), and checks
//! from the outside that the call completed (sipp's exit status and call
//! counters), that both SDP bodies name the relay, and that the relay
//! relayed the media both ways and ended the session (its `-A` accounting
//! record and its `G` counters).
//!
//! What the B2BUA sends, the same over UDP and unix control (Sippy 2.5.0;
//! cookies of UDP control not shown, tags are the B2BUA's own, CALLID is
//! the caller's Call-ID, the relay's replies after `->`):
//!
//! ```text
//! V                                    -> 20040107
//! VF 20071218                          -> 1
//! VF 20080403                          -> 1
//! VF 20081224                          -> 0 (1 with -n)
//! VF 20090810                          -> 1
//! VF 20150617                          -> 0
//! VF 20250523                          -> 0
//! Ib        (about once a second)      -> sessions created: N
//!                                         active sessions: N
//!                                         active streams: N
//!                                         packets received: N
//!                                         packets transmitted: N
//! UR127.0.0.1 CALLID-0 127.0.0.1 CALLER_PORT FTAG       -> PORT 127.0.0.1
//! UR127.0.0.1 CALLID-0 127.0.0.1 CALLEE_PORT TTAG FTAG  -> PORT 127.0.0.1
//! D CALLID-0 FTAG TTAG                                  -> 0
//! ```
//!
//! The `VF` probes go out all at once, so their order varies. Its first `U`
//! carries the INVITE's offer, its second the 200 OK's answer with the tags
//! swapped (it never sends `L`); `R<ip>` (the address the media goes to)
//! only while `VF 20090810` answers `1`, `D` on the BYE. With `-n` naming
//! its command socket (then `VF 20081224` answers `1`), every `U` carries
//! that socket and a notify tag, the offer's without a to-tag (six
//! arguments):
//!
//! ```text
//! UR127.0.0.1 CALLID-0 127.0.0.1 CALLER_PORT FTAG /DIR/b2bua.sock r%201
//! UR127.0.0.1 CALLID-0 127.0.0.1 CALLEE_PORT TTAG FTAG /DIR/b2bua.sock r%201
//! ```
//!
//! The tag is URL-encoded `r <call number>`: the relay writes it decoded to
//! that socket when the media times out, and the B2BUA takes it for its
//! `r` command, which hangs the call up (a BYE to both sides). After such
//! a timeout it sends no `D`.
//!
//! Needs sipp (Debian: `apt-get install sip-tester`), Sippy B2BUA in the
//! venv that `sh tests/sippy/install.sh` makes (`tests/run.sh` runs it),
//! and root, because sipp plays the pcap through raw sockets. When any of
//! these is missing a test fails with one line saying what to install;
//! nothing is skipped.
//!
//! Every port (the B2BUA's SIP port, each sipp's SIP, media and control
//! ports, the relay's control port and media range) comes from
//! `common::ports`, so that the tests run in parallel; a SIP port that is
//! busy (a leftover B2BUA binds with SO_REUSEPORT and would silently take
//! calls) makes the test fail before it starts anything on it. Every child
//! process runs under a deadline and is stopped and reaped by a guard, also
//! when a test fails; a failure message carries the logs of the relay, the
//! B2BUA and sipp.

mod common;
mod sip;

use common::{parse_flat_json, port, ports, Json, PortBlock, Rtpproxy, TempDir};
use sip::{
    expect_media_prerequisites, require_program, section, Endpoint, Guard, Sipps,
    MIN_PACKETS_PER_DIRECTION, PCAP_PACKETS,
};
use std::collections::BTreeMap;
use std::fs;
use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread::sleep;
use std::time::{Duration, Instant};

/// How the tests install the B2BUA.
const INSTALL_B2BUA: &str = "`sh tests/sippy/install.sh` (tests/run.sh runs it)";

/// How long one sipp run may take before it is killed; sipp's own
/// `-timeout` fires a little earlier so that it can still write its logs.
const SIPP_DEADLINE: Duration = Duration::from_secs(30);

/// How long a child process gets between SIGTERM and SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(2);

/// How long the B2BUA gets to start, probe the relay and send its first
/// `Ib` (it sends that once the relay counts as online).
const B2BUA_START: Duration = Duration::from_secs(15);

/// Media ports of the relay for one call (the call takes two pairs).
const CALL_MEDIA_PORTS: u16 = 40;

/// Sessions the heartbeat test creates besides the call, and how long
/// their Call-IDs are: a crowded relay, where a plain `I`, which lists two
/// lines per session, is far larger than a UDP datagram can carry (64 KiB).
const BULK_SESSIONS: u16 = 400;
const BULK_CALL_ID_LEN: usize = 200;

/// The end of the bulk sessions' Call-IDs, which tells the test's own
/// commands from the B2BUA's in the relay's log.
const BULK_DOMAIN: &str = "@interop-sippy.invalid";

/// The installed programs the tests need.
struct Tools {
    sipp: PathBuf,
    b2bua: PathBuf,
}

/// Finds sipp and the B2BUA's entry point in the venv that
/// `tests/sippy/install.sh` makes in the target directory, or fails with
/// one line saying what to install.
fn tools() -> Tools {
    let sipp = require_program("sipp", "sipp", "apt-get install sip-tester");
    // The daemon is TARGET/debug/rtpproxy (or TARGET/TRIPLE/debug/...);
    // the venv is TARGET/sippy-venv.
    let daemon = common::bin_path();
    let b2bua = daemon
        .ancestors()
        .skip(2)
        .take(2)
        .map(|dir| dir.join("sippy-venv/bin/b2bua"))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| {
            let expected = daemon
                .ancestors()
                .nth(2)
                .unwrap_or(Path::new("target"))
                .join("sippy-venv/bin/b2bua");
            panic!(
                "interop tests need Sippy B2BUA: {} is missing: install it with {INSTALL_B2BUA}",
                expected.display()
            )
        });
    Tools { sipp, b2bua }
}

/// Fails unless a UDP socket can be bound on 127.0.0.1:`port`: a program
/// left over from an earlier run still holds it. A B2BUA binds its SIP port
/// with SO_REUSEPORT, so a second one would start fine and silently share
/// the calls with the first.
fn expect_port_free(port: u16, what: &str) {
    if let Err(e) = UdpSocket::bind(("127.0.0.1", port)) {
        panic!("UDP port {port} ({what}) is busy ({e}): refusing to run; is a B2BUA or sipp of an earlier run still there?");
    }
}

/// One command the relay received and the reply it sent, from its log.
#[derive(Debug, Clone)]
struct Exchange {
    command: String,
    reply: String,
}

impl Exchange {
    fn words(&self) -> Vec<&str> {
        self.command.split_whitespace().collect()
    }
}

/// Everything one test started, stopped in field order on drop (sipp, then
/// the B2BUA, then the relay, then the directory).
struct Run {
    sipps: Sipps,
    b2bua: Option<Guard>,
    relay: Option<Rtpproxy>,
    /// The relay's media ports.
    media: PortBlock,
    /// How much of the relay's log was written before the B2BUA started:
    /// what follows are the B2BUA's commands (and the test's own, which
    /// come after the call).
    log_before_b2bua: usize,
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
            b2bua: None,
            relay: None,
            media: PortBlock { first: 0, len: 1 },
            log_before_b2bua: 0,
            tools,
            dir,
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The B2BUA's command socket, `-c`: the target of the relay's timeout
    /// notifications.
    fn b2bua_socket(&self) -> PathBuf {
        self.path("b2bua.sock")
    }

    fn accounting(&self) -> PathBuf {
        self.path("accounting.json")
    }

    fn relay(&self) -> &Rtpproxy {
        self.relay.as_ref().expect("the relay runs")
    }

    /// Starts the relay on 127.0.0.1 with the control socket `control`
    /// and the media ports `media`, logging every command (`-d DBUG`) and
    /// accounting every ended session (`-A`), plus `extra` options (a
    /// repeated option's last value wins).
    fn start_relay(&mut self, control: &str, media: PortBlock, extra: &[&str]) {
        let (min, max) = (media.first.to_string(), media.last().to_string());
        let acct = self.accounting().display().to_string();
        let mut args = vec!["-s", control, "-l", "127.0.0.1", "-m", &min, "-M", &max];
        args.extend(["-d", "DBUG", "-T", "60", "-A", &acct]);
        args.extend_from_slice(extra);
        self.relay = Some(Rtpproxy::start(&args));
        self.media = media;
    }

    /// Starts the B2BUA on 127.0.0.1:`sip_port`, routing every call to the
    /// callee on `callee_port` and its media to the relay at `control`, and
    /// waits until it has probed the relay and sent its first `Ib`.
    fn start_b2bua(&mut self, sip_port: u16, callee_port: u16, control: &str) {
        expect_port_free(sip_port, "the B2BUA's SIP port");
        self.log_before_b2bua = self.relay().log().len();
        let mut command = Command::new(&self.tools.b2bua);
        command
            .args(["-f", "-u", "-A", "0", "-l", "127.0.0.1", "-p"])
            .arg(sip_port.to_string())
            .arg("-s")
            .arg(format!("127.0.0.1:{callee_port}"))
            .arg("-c")
            .arg(self.b2bua_socket())
            .arg(format!("--rtp_proxy_clients={control}"))
            .env("SIPLOG_BEND", "stderr")
            .env("PYTHONUNBUFFERED", "1")
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .current_dir(self.dir.path());
        let guard = Guard::spawn(
            "b2bua",
            &mut command,
            self.path("b2bua.log"),
            STOP_GRACE,
            false,
        );
        self.b2bua = Some(guard);
        let deadline = Instant::now() + B2BUA_START;
        while self.b2bua_exchanges().iter().all(|e| e.command != "Ib") {
            if let Some(status) = self.b2bua.as_mut().and_then(Guard::poll) {
                self.fail(&format!("the B2BUA exited at start-up ({status})"));
            }
            if Instant::now() >= deadline {
                self.fail(&format!(
                    "the B2BUA sent no Ib to the relay within {B2BUA_START:?}"
                ));
            }
            sleep(Duration::from_millis(50));
        }
    }

    /// Starts one sipp for one call; fails if its SIP port is busy.
    fn start_sipp(&mut self, name: &str, scenario: &str, me: Endpoint, extra: &[&str]) -> usize {
        expect_port_free(me.sip, &format!("{name}'s SIP port"));
        self.sipps.start(name, scenario, me, 1, extra)
    }

    /// Starts the callee (echoing RTP) and then the caller, calling the
    /// B2BUA with `scenario`; returns their indexes.
    fn start_call(
        &mut self,
        b2bua: u16,
        callee: Endpoint,
        caller: Endpoint,
        scenario: &str,
    ) -> (usize, usize) {
        let callee = self.start_sipp("callee", "callee.xml", callee, &["-rtp_echo"]);
        let target = format!("127.0.0.1:{b2bua}");
        let caller = self.start_sipp("caller", scenario, caller, &["-s", "service", &target]);
        (callee, caller)
    }

    /// Waits for one sipp to end and checks that its one call succeeded.
    fn expect_call_completed(&mut self, index: usize) {
        if let Err(what) = self.sipps.completed(index) {
            self.fail(&what);
        }
    }

    /// Checks the one SDP body a sipp received (from its `<log>` line:
    /// "OFFER" for the callee, "ANSWER" for the caller): the relay's
    /// address and a port of its range. Returns that port.
    fn expect_sdp_names_relay(&self, index: usize, kind: &str) -> u16 {
        let text = fs::read_to_string(&self.sipps[index].actions).unwrap_or_default();
        let lines: Vec<&str> = text.lines().filter(|l| l.starts_with(kind)).collect();
        let [line] = lines[..] else {
            self.fail(&format!(
                "{}: {} {kind} SDP logged, 1 expected",
                self.sipps[index].name,
                lines.len()
            ));
        };
        let fields: Vec<&str> = line.split(" | ").map(str::trim).collect();
        let port = fields
            .get(2)
            .and_then(|m| m.strip_prefix("m=audio "))
            .and_then(|p| p.parse().ok());
        match (fields.get(1), port) {
            (Some(&"c=IN IP4 127.0.0.1"), Some(port)) if self.media.contains(port) => port,
            _ => self.fail(&format!(
                "{kind}: {line:?} does not name a relay port ({}-{})",
                self.media.first,
                self.media.last()
            )),
        }
    }

    /// Every command the relay received from the B2BUA, with its reply, in
    /// order: what the log shows since the B2BUA started, less the test's
    /// own commands (`G`, the bulk sessions).
    fn b2bua_exchanges(&self) -> Vec<Exchange> {
        let log = self.relay().log();
        let mut all = exchanges(log.get(self.log_before_b2bua..).unwrap_or_default());
        all.retain(|e| !e.command.starts_with('G') && !e.command.contains(BULK_DOMAIN));
        all
    }

    /// The accounting records of the sessions that ended, waiting up to
    /// `limit` for `count` of them.
    fn records(&self, count: usize, limit: Duration) -> Vec<BTreeMap<String, Json>> {
        let deadline = Instant::now() + limit;
        loop {
            let text = fs::read_to_string(self.accounting()).unwrap_or_default();
            let records: Vec<_> = text
                .lines()
                .map(|l| {
                    parse_flat_json(l).unwrap_or_else(|e| {
                        self.fail(&format!("unreadable accounting line {l:?}: {e}"))
                    })
                })
                .collect();
            if records.len() >= count || Instant::now() >= deadline {
                return records;
            }
            sleep(Duration::from_millis(50));
        }
    }

    /// The relay's `G` counters by name.
    fn counters(&self, names: &[&str]) -> BTreeMap<String, u64> {
        let reply = self.relay().command(&format!("Gv {}", names.join(" ")));
        let mut out = BTreeMap::new();
        for pair in reply.split_whitespace() {
            let parsed = pair
                .split_once('=')
                .and_then(|(k, v)| Some((k.to_string(), v.parse().ok()?)));
            match parsed {
                Some((k, v)) => out.insert(k, v),
                None => self.fail(&format!("unreadable G reply {reply:?}")),
            };
        }
        out
    }

    /// The B2BUA's call: the offer's `U` (4 arguments after the letter and
    /// its modifiers, plus the notify socket and tag when `notify`), the
    /// answer's `U` with the tags swapped, and replies that are ports.
    /// Returns the Call-ID, the from-tag (the caller's side) and the to-tag.
    fn expect_call_commands(&self, notify: bool) -> (String, String, String) {
        let exchanges = self.b2bua_exchanges();
        let updates: Vec<&Exchange> = exchanges
            .iter()
            .filter(|e| e.command.starts_with('U'))
            .collect();
        let shown = || format!("{exchanges:#?}");
        let [offer, answer] = updates[..] else {
            self.fail(&format!(
                "the B2BUA sent {} U commands, 2 expected:\n{}",
                updates.len(),
                shown()
            ));
        };
        let (o, a) = (offer.words(), answer.words());
        let extra = if notify { 2 } else { 0 };
        if o.len() != 5 + extra || a.len() != 6 + extra {
            self.fail(&format!(
                "the B2BUA's U commands have {} and {} words, {} and {} expected:\n{}",
                o.len(),
                a.len(),
                5 + extra,
                6 + extra,
                shown()
            ));
        }
        let (call_id, from_tag, to_tag) = (o[1], o[4], a[4]);
        if a[1] != call_id || a[5] != from_tag {
            self.fail(&format!(
                "the answer's U is not the offer's with the tags swapped:\n{}",
                shown()
            ));
        }
        if notify {
            let socket = self.b2bua_socket().display().to_string();
            for words in [&o[5..], &a[6..]] {
                let tag_ok = words[1]
                    .strip_prefix("r%20")
                    .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
                if words[0] != socket || !tag_ok {
                    self.fail(&format!(
                        "a U does not end in the notify socket {socket} and a tag r%20N:\n{}",
                        shown()
                    ));
                }
            }
        }
        for e in [offer, answer] {
            let port = e
                .reply
                .split_whitespace()
                .next()
                .and_then(|p| p.parse().ok());
            if !port.is_some_and(|p| self.media.contains(p)) {
                self.fail(&format!(
                    "{:?} got {:?}, not a relay port",
                    e.command, e.reply
                ));
            }
        }
        (
            call_id.to_string(),
            from_tag.to_string(),
            to_tag.to_string(),
        )
    }

    /// Checks that the B2BUA sent `Ib` heartbeats, at least `min`, and
    /// that each was answered with `sessions created: N` first: the B2BUA
    /// reads the `key: value` lines it knows, a missing key counting as 0,
    /// and skips others. With `all_five`, the reply must be the five
    /// summary lines that `Ib` answers, in order, and nothing else, so that
    /// it fits one datagram however many sessions there are.
    fn expect_heartbeats_answered(&self, min: usize, all_five: bool) {
        const KEYS: [&str; 5] = [
            "sessions created",
            "active sessions",
            "active streams",
            "packets received",
            "packets transmitted",
        ];
        let exchanges = self.b2bua_exchanges();
        let heartbeats: Vec<&Exchange> = exchanges.iter().filter(|e| e.command == "Ib").collect();
        for e in &heartbeats {
            let keys: Vec<Option<&str>> = e
                .reply
                .lines()
                .map(|line| {
                    let (key, value) = line.split_once(": ")?;
                    value.parse::<u64>().ok().map(|_| key)
                })
                .collect();
            let ok = if all_five {
                keys == KEYS.map(Some)
            } else {
                keys.first() == Some(&Some(KEYS[0]))
            };
            if !ok {
                let head: Vec<&str> = e.reply.lines().take(8).collect();
                self.fail(&format!(
                    "Ib was answered with {} lines ({} bytes), not {}; the reply began:\n{}",
                    e.reply.lines().count(),
                    e.reply.len(),
                    if all_five {
                        "the five summary lines alone"
                    } else {
                        "one starting with `sessions created: N`"
                    },
                    head.join("\n")
                ));
            }
        }
        if heartbeats.len() < min {
            self.fail(&format!(
                "the B2BUA sent {} Ib heartbeats, at least {min} expected",
                heartbeats.len()
            ));
        }
    }

    /// Checks that no command of the B2BUA was answered with an error.
    fn expect_no_errors(&self) {
        let exchanges = self.b2bua_exchanges();
        let errors: Vec<&Exchange> = exchanges
            .iter()
            .filter(|e| e.reply.starts_with('E'))
            .collect();
        if !errors.is_empty() {
            self.fail(&format!("the relay answered errors: {errors:#?}"));
        }
    }

    /// The one ended session's accounting record: ended for `reason`, the
    /// B2BUA's Call-ID and tags, and nearly all of the recording relayed
    /// in each direction.
    fn expect_relayed_session(&self, reason: &str, call: &(String, String, String)) {
        let records = self.records(1, Duration::from_secs(5));
        let [record] = &records[..] else {
            self.fail(&format!(
                "{} sessions ended, 1 expected: {records:?}",
                records.len()
            ));
        };
        let text = |name: &str| match record.get(name) {
            Some(Json::Str(s)) => s.clone(),
            other => self.fail(&format!("accounting {name} is {other:?}: {record:?}")),
        };
        let number = |name: &str| match record.get(name) {
            Some(Json::Num(n)) => *n as u64,
            other => self.fail(&format!("accounting {name} is {other:?}: {record:?}")),
        };
        let (call_id, from_tag, to_tag) = call;
        let got = (text("call_id"), text("from_tag"), text("to_tag"));
        if (&got.0, &got.1, &got.2) != (call_id, from_tag, to_tag) {
            self.fail(&format!(
                "the session is accounted as {got:?}, the B2BUA named it {call:?}"
            ));
        }
        if text("reason") != reason {
            self.fail(&format!(
                "the session ended for {:?}, not {reason:?}",
                text("reason")
            ));
        }
        let (caller, callee) = (number("rtp_caller_packets"), number("rtp_callee_packets"));
        let relayed = number("relayed");
        if caller < MIN_PACKETS_PER_DIRECTION
            || callee < MIN_PACKETS_PER_DIRECTION
            || relayed < 2 * MIN_PACKETS_PER_DIRECTION
        {
            self.fail(&format!(
                "RTP from the caller {caller}, from the callee {callee}, relayed {relayed}: at \
                 least {MIN_PACKETS_PER_DIRECTION} of the {PCAP_PACKETS} packets expected each way"
            ));
        }
        println!("accounted: {record:?}");
    }

    /// Checks the relay's counters after the call: `created` sessions, of
    /// which one ended, and media relayed.
    fn expect_counters(&self, created: u64) {
        let names = ["nsess_created", "nsess_destroyed", "npkts_relayed"];
        let g = self.counters(&names);
        if g.get("nsess_created") != Some(&created)
            || g.get("nsess_destroyed") != Some(&1)
            || g.get("npkts_relayed")
                .is_none_or(|&n| n < 2 * MIN_PACKETS_PER_DIRECTION)
        {
            self.fail(&format!(
                "G says {g:?}: {created} sessions created, 1 ended, at least {} packets relayed expected",
                2 * MIN_PACKETS_PER_DIRECTION
            ));
        }
    }

    /// Prints what the B2BUA sent, for the test's output; a reply of more
    /// than 8 lines is cut.
    fn show_commands(&self) {
        for e in self.b2bua_exchanges() {
            let lines = e.reply.lines().count();
            let reply = if lines > 8 {
                let head: Vec<&str> = e.reply.lines().take(8).collect();
                format!(
                    "{} ... ({lines} lines, {} bytes)",
                    head.join("\n"),
                    e.reply.len()
                )
            } else {
                e.reply.clone()
            };
            println!("B2BUA sent {:?}, reply {reply:?}", e.command);
        }
    }

    /// Fails the test with `what` and the logs of everything it started.
    fn fail(&self, what: &str) -> ! {
        let mut report = format!("{what}\n");
        if let Some(relay) = &self.relay {
            section(&mut report, "relay stderr", &relay.log(), 80);
        }
        if let Some(b2bua) = &self.b2bua {
            section(&mut report, "B2BUA output", &b2bua.output(), 80);
        }
        self.sipps.report(&mut report, 10);
        panic!("{report}");
    }
}

/// True for the first line of a log entry: `SECONDS.MILLIS LEVEL:...`.
/// A multi-line reply goes on in lines that are not.
fn starts_entry(line: &str) -> bool {
    let Some((stamp, rest)) = line.split_once(' ') else {
        return false;
    };
    let level = rest.split(':').next().unwrap_or_default();
    stamp.contains('.')
        && stamp.bytes().all(|b| b.is_ascii_digit() || b == b'.')
        && !level.is_empty()
        && level.bytes().all(|b| b.is_ascii_uppercase())
}

/// The commands and replies of a `-d DBUG` log: each `received command
/// "..."` entry with the `sending reply "..."` entry after it (the daemon
/// runs one command at a time).
fn exchanges(log: &str) -> Vec<Exchange> {
    let mut entries: Vec<String> = Vec::new();
    for line in log.lines() {
        match entries.last_mut() {
            Some(last) if !starts_entry(line) => {
                last.push('\n');
                last.push_str(line);
            }
            _ => entries.push(line.to_string()),
        }
    }
    let quoted = |entry: &str, what: &str| -> Option<String> {
        let start = entry.find(what)? + what.len();
        Some(entry[start..].strip_suffix('"')?.to_string())
    };
    let mut out = Vec::new();
    let mut pending: Option<String> = None;
    for entry in &entries {
        if let Some(command) = quoted(entry, ":received command \"") {
            pending = Some(command);
        } else if let Some(reply) = quoted(entry, ":sending reply \"") {
            if let Some(command) = pending.take() {
                out.push(Exchange { command, reply });
            }
        }
    }
    out
}

/// One call through the B2BUA with the relay at `control`: it completes,
/// both sides see the relay in the SDP, the B2BUA sends one offer and one
/// answer `U` and a `D`, and the relay relays the recording both ways.
fn call_through_b2bua(name: &str, control: &str) {
    let mut run = Run::new(name);
    run.start_relay(control, ports(CALL_MEDIA_PORTS), &[]);
    let (b2bua, callee, caller) = (port(), Endpoint::new(), Endpoint::new());
    run.start_b2bua(b2bua, callee.sip, control);
    let (callee, caller) = run.start_call(b2bua, callee, caller, "b2bua_caller.xml");
    run.expect_call_completed(caller);
    run.expect_call_completed(callee);
    run.show_commands();
    run.expect_sdp_names_relay(caller, "ANSWER");
    run.expect_sdp_names_relay(callee, "OFFER");
    let call = run.expect_call_commands(false);
    let deletes: Vec<Exchange> = run
        .b2bua_exchanges()
        .into_iter()
        .filter(|e| e.command.starts_with('D'))
        .collect();
    let want = format!("D {} {} {}", call.0, call.1, call.2);
    if deletes.len() != 1 || deletes[0].command != want || deletes[0].reply != "0" {
        run.fail(&format!(
            "expected one {want:?} answered 0, got {deletes:?}"
        ));
    }
    run.expect_no_errors();
    run.expect_heartbeats_answered(1, false);
    run.expect_relayed_session("deleted", &call);
    run.expect_counters(1);
}

/// The B2BUA reaches the relay over UDP (`udp:127.0.0.1:PORT`, with
/// cookies and retransmissions).
#[test]
fn b2bua_call_over_udp_control() {
    let control = format!("udp:127.0.0.1:{}", port());
    call_through_b2bua("udp", &control);
}

/// The B2BUA reaches the relay over its unix stream socket: it keeps one
/// connection and writes each command on it, reconnecting when the relay
/// has closed it.
#[test]
fn b2bua_call_over_unix_control() {
    let dir = TempDir::new("unix-control");
    let control = format!("unix:{}", dir.join("rtpproxy.sock").display());
    call_through_b2bua("unix", &control);
}

/// The same over a `cunix:` stream socket, which the B2BUA also speaks:
/// one connection kept open, each command ending in a newline, every
/// reply on the same connection.
#[test]
fn b2bua_call_over_cunix_control() {
    let dir = TempDir::new("cunix-control");
    let socket = dir.join("rtpproxy.sock").display().to_string();
    // The relay listens on `cunix:`; the B2BUA is told the same.
    call_through_b2bua("cunix", &format!("cunix:{socket}"));
}

/// The B2BUA's heartbeat is `Ib`, about once a second (over UDP it resends
/// an unanswered one for 10 s), and the B2BUA takes a relay that does not
/// answer it offline: new calls then get 502 "No online RTP proxy client
/// has been found". With many sessions a plain `I`, which lists two lines
/// per session, is too big for one UDP datagram (with 400 sessions of
/// 200-byte Call-IDs it is about 250 KB); `Ib` must answer only the
/// summary lines. The test creates `BULK_SESSIONS` sessions (offered by a
/// `U`, held open) over the same UDP control socket,
/// half before the B2BUA starts and half while it runs, lets a few
/// heartbeats pass (or waits until the B2BUA would have given up on the
/// relay), then places a call, which must succeed; and every `Ib` must have
/// been answered with the five `key: value` summary lines, from `sessions
/// created:` to `packets transmitted:`.
#[test]
fn b2bua_heartbeat_with_many_sessions() {
    let mut run = Run::new("heartbeat");
    let control = format!("udp:127.0.0.1:{}", port());
    // One leg (two ports) per bulk session: offered, never answered.
    let media = ports(2 * BULK_SESSIONS + CALL_MEDIA_PORTS);
    run.start_relay(&control, media, &[]);
    // Where the bulk sessions' media would go; nothing is ever sent there.
    let peers = ports(1);
    let create = |run: &Run, range: std::ops::Range<u16>| {
        for i in range {
            let mut call_id = format!("{i:04}-bulk-{}-", std::process::id());
            while call_id.len() < BULK_CALL_ID_LEN - BULK_DOMAIN.len() {
                call_id.push_str("0123456789abcdef");
            }
            call_id.truncate(BULK_CALL_ID_LEN - BULK_DOMAIN.len());
            call_id.push_str(BULK_DOMAIN);
            let from = format!("bulkfrom{i}");
            let cmd = format!("U {call_id} 127.0.0.1 {} {from}", peers.port(0));
            let reply = run.relay().command(&cmd);
            let port = reply.split_whitespace().next();
            if port.is_none_or(|p| p.parse::<u16>().is_err()) {
                run.fail(&format!("{cmd:?} got {reply:?}"));
            }
        }
    };
    create(&run, 0..BULK_SESSIONS / 2);
    let (b2bua, callee, caller) = (port(), Endpoint::new(), Endpoint::new());
    run.start_b2bua(b2bua, callee.sip, &control);
    create(&run, BULK_SESSIONS / 2..BULK_SESSIONS);
    // A few heartbeats with every session there.
    let heartbeats = |run: &Run| {
        run.b2bua_exchanges()
            .iter()
            .filter(|e| e.command == "Ib")
            .count()
    };
    // A relay whose Ib reply cannot be sent gets it resent for 10 s and is
    // then taken offline: wait a little longer than that unless the
    // heartbeats come back.
    let before = heartbeats(&run);
    let deadline = Instant::now() + Duration::from_secs(13);
    while heartbeats(&run) < before + 3 && Instant::now() < deadline {
        sleep(Duration::from_millis(100));
    }
    let (callee, caller) = run.start_call(b2bua, callee, caller, "b2bua_caller.xml");
    // Both end before the heartbeats are checked, those during the call
    // included; a callee that got no call is stopped after a while.
    let _ = run.sipps[caller].guard.wait(SIPP_DEADLINE);
    let _ = run.sipps[callee].guard.wait(Duration::from_secs(3));
    run.show_commands();

    // The first heartbeat, those while the sessions were created, three
    // after.
    run.expect_heartbeats_answered(4, true);
    run.expect_call_completed(caller);
    run.expect_call_completed(callee);
    run.expect_sdp_names_relay(caller, "ANSWER");
    run.expect_sdp_names_relay(callee, "OFFER");
    let call = run.expect_call_commands(false);
    run.expect_no_errors();
    run.expect_relayed_session("deleted", &call);
    run.expect_counters(u64::from(BULK_SESSIONS) + 1);
}

/// Media timeout: the relay runs with `-n unix:DIR/b2bua.sock` (the
/// B2BUA's own command socket, `-c`) and a short `-T`. The B2BUA sees
/// `VF 20081224` answered `1` and adds that socket and the tag `r%20N` to
/// each `U`, the offer's without a to-tag (six arguments). The caller stops
/// sending RTP after the recording (7 s) and never hangs up; the session
/// times out, the relay writes `r N` to the B2BUA's socket, and the B2BUA
/// sends a BYE to both sides, which the scenarios wait for. The session is
/// accounted with the tags the B2BUA gave it (the offer's notify socket is
/// not a to-tag), ended by the timeout, and the relay logged no error.
#[test]
fn b2bua_hangs_up_on_media_timeout() {
    let mut run = Run::new("timeout");
    let control = format!("udp:127.0.0.1:{}", port());
    let notify = format!("unix:{}", run.b2bua_socket().display());
    run.start_relay(
        &control,
        ports(CALL_MEDIA_PORTS),
        &["-n", &notify, "-T", "2"],
    );
    let (b2bua, callee, caller) = (port(), Endpoint::new(), Endpoint::new());
    run.start_b2bua(b2bua, callee.sip, &control);
    let (callee, caller) = run.start_call(b2bua, callee, caller, "b2bua_caller_timeout.xml");
    run.expect_call_completed(caller);
    run.expect_call_completed(callee);
    run.show_commands();
    run.expect_sdp_names_relay(caller, "ANSWER");
    run.expect_sdp_names_relay(callee, "OFFER");
    let call = run.expect_call_commands(true);
    run.expect_no_errors();
    run.expect_heartbeats_answered(1, false);
    let log = run.relay().log();
    let errors: Vec<&str> = log[run.log_before_b2bua..]
        .lines()
        .filter(|l| l.contains(" ERR:") || l.contains(" CRIT:"))
        .collect();
    if !errors.is_empty() {
        run.fail(&format!("the relay logged errors: {errors:#?}"));
    }
    run.expect_relayed_session("timeout", &call);
}
