//! The harness the interoperability tests with SIP clients share
//! (`interop_kamailio`, `interop_sippy`, which include it with `mod sip;`):
//! finding the installed programs, child processes stopped and reaped by a
//! guard, the ports of one sipp, sipp runs with their files and their call
//! counters, and the tails of logs a failure report carries.
//!
//! What differs between the two files comes in as a parameter: how long a
//! sipp run may take, how long a child gets between SIGTERM and SIGKILL,
//! how many lines of a log a report shows.

use std::fs::{self, File};
use std::ops::{Deref, DerefMut};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;

use crate::common::ports;

/// Where Debian's sip-tester package puts the recording the callers play
/// (named in the caller scenarios of `tests/sipp`).
pub const G711A_PCAP: &str = "/usr/share/sip-tester/g711a.pcap";

/// RTP packets in `g711a.pcap` (7.05 s of 30 ms A-law frames).
pub const PCAP_PACKETS: u64 = 236;

/// The fewest packets a finished call must have relayed in each direction:
/// nearly the whole recording, so that a relay losing media in the middle
/// of a call is noticed.
pub const MIN_PACKETS_PER_DIRECTION: u64 = PCAP_PACKETS * 85 / 100;

/// How much earlier than the harness's deadline sipp's own `-timeout`
/// fires, so that it can still write its logs.
const SIPP_TIMEOUT_MARGIN: Duration = Duration::from_secs(5);

/// Finds the installed program `name` (`what` in the message), or fails
/// with one line saying that `install` installs it.
pub fn require_program(name: &str, what: &str, install: &str) -> PathBuf {
    find_program(name).unwrap_or_else(|| {
        panic!("interop tests need {what}: `{name}` is not installed ({install})")
    })
}

/// Looks a program up in `PATH` and in the sbin directories a non-root
/// `PATH` tends to lack.
fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/local/sbin", "/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

/// Fails unless sipp can play the recording: `g711a.pcap` is installed and
/// the test runs as root (sipp sends it through raw sockets).
pub fn expect_media_prerequisites() {
    if !Path::new(G711A_PCAP).is_file() {
        panic!("interop tests need sipp's {G711A_PCAP} (apt-get install sip-tester)");
    }
    if !nix::unistd::geteuid().is_root() {
        panic!("interop tests need root: sipp plays {G711A_PCAP} through raw sockets");
    }
}

/// A child process started by a test, in a process group of its own.
/// Dropping the guard stops it and reaps it: SIGTERM, a bounded grace
/// period, then SIGKILL to the process and to what is left of its group.
/// For a program with workers (Kamailio) the whole group is killed in any
/// case, which also catches workers that outlived their parent.
pub struct Guard {
    child: Child,
    status: Option<ExitStatus>,
    /// How long SIGTERM gets before SIGKILL.
    grace: Duration,
    /// Kill the process group too when stopping, however the process ended.
    workers: bool,
    /// Where stdout and stderr go.
    output: PathBuf,
}

impl Guard {
    /// Starts `command` (`name` in messages) with stdin from /dev/null and
    /// stdout and stderr into the file `output`, stopped as described
    /// above with `grace` and `workers`.
    pub fn spawn(
        name: &str,
        command: &mut Command,
        output: PathBuf,
        grace: Duration,
        workers: bool,
    ) -> Guard {
        let out = File::create(&output).expect("create output file");
        let err = out.try_clone().expect("clone output file");
        let child = command
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        Guard {
            child,
            status: None,
            grace,
            workers,
            output,
        }
    }

    fn pid(&self) -> Pid {
        Pid::from_raw(self.child.id() as i32)
    }

    /// The exit status, once the process has ended.
    pub fn poll(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().ok().flatten();
        }
        self.status
    }

    /// Waits at most `limit` for the process to end.
    pub fn wait(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.poll() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM, the grace period (a B2BUA may ignore SIGTERM while a call
    /// is stuck), SIGKILL, and reap. The pid and its group are signalled
    /// only while the child is unreaped, so neither can have been reused;
    /// only the group of a program with workers is killed after that.
    fn stop(&mut self) {
        if self.poll().is_none() {
            let _ = kill(self.pid(), Signal::SIGTERM);
            if self.wait(self.grace).is_none() {
                let _ = killpg(self.pid(), Signal::SIGKILL);
                let _ = kill(self.pid(), Signal::SIGKILL);
            }
        }
        if self.workers {
            let _ = killpg(self.pid(), Signal::SIGKILL);
        }
        if self.status.is_none() {
            self.status = self.child.wait().ok();
        }
    }

    /// What the process wrote to stdout and stderr so far.
    pub fn output(&self) -> String {
        fs::read_to_string(&self.output).unwrap_or_default()
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.stop();
    }
}

/// SIP and media ports of one sipp instance.
#[derive(Clone, Copy)]
pub struct Endpoint {
    pub sip: u16,
    /// `-mp`: the RTP port written into its SDP (and echoed on, for the
    /// callee; sipp also takes `media + 2` for video).
    pub media: u16,
    /// `-cp`: sipp's control socket, else it would take 8888 and up.
    pub control: u16,
}

impl Endpoint {
    /// Fresh ports for one sipp: SIP, control, and ten media ports from
    /// `media` on (RTP and RTCP for audio and video, and `media + 4`, which
    /// `caller_prompt.xml` names in its SDP for the test's own socket).
    pub fn new() -> Endpoint {
        let block = ports(12);
        Endpoint {
            sip: block.port(0),
            control: block.port(1),
            media: block.port(2),
        }
    }
}

/// One sipp run and the files it writes.
pub struct Sipp {
    pub name: String,
    pub guard: Guard,
    /// The calls it places or takes (`-m`).
    pub calls: u64,
    /// Its statistics screens (`-trace_screen`).
    pub screen: PathBuf,
    /// Its errors (`-trace_err`).
    pub errors: PathBuf,
    /// What its scenario's `<log>` actions wrote (`-trace_logs`): the SDP
    /// it received.
    pub actions: PathBuf,
    /// Every SIP message it sent and received (`-trace_msg`).
    pub messages: PathBuf,
}

/// The sipp runs of one test, in the order they started (index them like a
/// slice), and how they are started: the program, the directory their
/// files go to, and how long each may take.
pub struct Sipps {
    program: PathBuf,
    dir: PathBuf,
    /// How long one sipp run may take before it is killed.
    deadline: Duration,
    /// What each run's guard gives SIGTERM before SIGKILL.
    grace: Duration,
    runs: Vec<Sipp>,
}

impl Sipps {
    /// No runs yet; each will run `program` in `dir` and be killed after
    /// `deadline` (sipp's own `-timeout` fires a few seconds earlier).
    pub fn new(program: PathBuf, dir: &Path, deadline: Duration, grace: Duration) -> Sipps {
        Sipps {
            program,
            dir: dir.to_path_buf(),
            deadline,
            grace,
            runs: Vec::new(),
        }
    }

    /// Starts sipp as `name` with the scenario `tests/sipp/SCENARIO` on the
    /// ports `me`, for `calls` calls, with `extra` arguments (the remote
    /// party, `-rtp_echo`, ...), tracing its screen, errors, logs and
    /// messages into `NAME-*.log` files. Returns its index.
    pub fn start(
        &mut self,
        name: &str,
        scenario: &str,
        me: Endpoint,
        calls: u64,
        extra: &[&str],
    ) -> usize {
        let scenario = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/sipp")
            .join(scenario);
        let file = |suffix: &str| self.dir.join(format!("{name}-{suffix}"));
        let (screen, errors, actions, messages) = (
            file("screen.log"),
            file("errors.log"),
            file("actions.log"),
            file("messages.log"),
        );
        let timeout = self.deadline.saturating_sub(SIPP_TIMEOUT_MARGIN);
        let mut command = Command::new(&self.program);
        command
            .arg("-sf")
            .arg(&scenario)
            .args([
                "-i",
                "127.0.0.1",
                "-nostdin",
                "-timeout",
                &format!("{}s", timeout.as_secs()),
                "-timeout_error",
            ])
            .args([
                "-p",
                &me.sip.to_string(),
                "-mp",
                &me.media.to_string(),
                "-cp",
                &me.control.to_string(),
            ])
            .args(["-m", &calls.to_string()])
            .arg("-trace_screen")
            .arg("-screen_file")
            .arg(&screen)
            .arg("-trace_err")
            .arg("-error_file")
            .arg(&errors)
            .arg("-trace_logs")
            .arg("-log_file")
            .arg(&actions)
            .arg("-trace_msg")
            .arg("-message_file")
            .arg(&messages)
            .args(extra)
            .current_dir(&self.dir);
        let guard = Guard::spawn(name, &mut command, file("stdout.log"), self.grace, false);
        self.runs.push(Sipp {
            name: name.to_string(),
            guard,
            calls,
            screen,
            errors,
            actions,
            messages,
        });
        self.runs.len() - 1
    }

    /// Waits for sipp `index` to end (until the deadline) and checks that
    /// it completed all its calls: its exit status and the counters of its
    /// last statistics screen. The error says what went wrong.
    pub fn completed(&mut self, index: usize) -> Result<(), String> {
        let deadline = self.deadline;
        let status = self.runs[index].guard.wait(deadline);
        let sipp = &self.runs[index];
        let Some(status) = status else {
            return Err(format!("{} did not end within {deadline:?}", sipp.name));
        };
        let screen = fs::read_to_string(&sipp.screen).unwrap_or_default();
        let successful = screen_counter(&screen, "Successful call");
        let failed = screen_counter(&screen, "Failed call");
        if !status.success() || successful != Some(sipp.calls) || failed != Some(0) {
            return Err(format!(
                "{}: {status}, {successful:?} successful and {failed:?} failed calls, {} expected to succeed",
                sipp.name, sipp.calls
            ));
        }
        Ok(())
    }

    /// Appends the tails of every run's output and files to a failure
    /// report, the SDP its scenario logged in `sdp_lines` lines.
    pub fn report(&self, report: &mut String, sdp_lines: usize) {
        for sipp in &self.runs {
            let read = |p: &PathBuf| fs::read_to_string(p).unwrap_or_default();
            let name = &sipp.name;
            section(report, &format!("{name} stdout"), &sipp.guard.output(), 15);
            section(report, &format!("{name} screen"), &read(&sipp.screen), 45);
            section(report, &format!("{name} errors"), &read(&sipp.errors), 30);
            section(
                report,
                &format!("{name} logged SDP"),
                &read(&sipp.actions),
                sdp_lines,
            );
            section(
                report,
                &format!("{name} messages"),
                &read(&sipp.messages),
                80,
            );
        }
    }
}

impl Deref for Sipps {
    type Target = [Sipp];

    fn deref(&self) -> &[Sipp] {
        &self.runs
    }
}

impl DerefMut for Sipps {
    fn deref_mut(&mut self) -> &mut [Sipp] {
        &mut self.runs
    }
}

/// Appends the last `lines` lines of `text` to a failure report under a
/// heading that says how many of how many lines it shows.
pub fn section(report: &mut String, title: &str, text: &str, lines: usize) {
    let all: Vec<&str> = text.lines().collect();
    let from = all.len().saturating_sub(lines);
    report.push_str(&format!(
        "\n===== {title} (last {} of {} lines) =====\n",
        all.len() - from,
        all.len()
    ));
    for line in &all[from..] {
        report.push_str(line);
        report.push('\n');
    }
}

/// The cumulative value of a counter on sipp's statistics screen (the last
/// screen written wins).
fn screen_counter(screen: &str, name: &str) -> Option<u64> {
    screen
        .lines()
        .rfind(|l| l.trim_start().starts_with(name))
        .and_then(|l| l.rsplit('|').next())
        .and_then(|v| v.trim().parse().ok())
}
