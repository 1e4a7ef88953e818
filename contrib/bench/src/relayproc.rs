//! The relays `compare` starts itself: their command lines, their CPU and
//! priority, waiting until they answer, and stopping them again.

use crate::clock::{now_ns, sleep_until_or_stop, NS_PER_MS, NS_PER_SEC};
use crate::ctrl::{ControlClient, CtrlSpec, CtrlTiming};
use crate::runctl::stop_requested;
use crate::scenario::{CompareConfig, RelayKind, RelaySpec};
use nix::sched::{sched_setaffinity, CpuSet};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// How long a relay may take to answer its first command.
const START_LIMIT_NS: u64 = 10 * NS_PER_SEC;
/// How long a relay may take to exit after SIGTERM before it is killed.
const STOP_LIMIT_NS: u64 = 5 * NS_PER_SEC;
/// The priority both the relays and the generator get when the bench may
/// raise it, so other work on a shared machine yields to them.
const NICE: i32 = -10;

/// Whether this process may raise priorities (it runs as root).
pub fn may_renice() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Pins the calling thread, and so every thread it starts later, to
/// `cpu`, and raises its priority when running as root.
pub fn place_self(cpu: usize) -> Result<(), String> {
    let mut set = CpuSet::new();
    set.set(cpu).map_err(|e| format!("--gen-cpu {cpu}: {e}"))?;
    sched_setaffinity(Pid::from_raw(0), &set).map_err(|e| format!("--gen-cpu {cpu}: {e}"))?;
    if may_renice() {
        // SAFETY: setpriority only reads its arguments.
        let rc = unsafe { nix::libc::setpriority(nix::libc::PRIO_PROCESS, 0, NICE) };
        if rc != 0 {
            return Err(format!("setpriority: {}", std::io::Error::last_os_error()));
        }
    }
    Ok(())
}

/// Finds `rtpengine` in PATH.
pub fn find_in_path(program: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|p| {
            std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// The `rtpproxy` built beside this program (target/release/rtpproxy for
/// target/release/rtpp_bench).
pub fn rtpproxy_beside_me() -> Option<PathBuf> {
    let me = std::env::current_exe().ok()?;
    let candidate = me.parent()?.join("rtpproxy");
    candidate.is_file().then_some(candidate)
}

/// A free UDP port on loopback for a relay's control socket. Another
/// process could take it before the relay binds it; the relay then fails
/// to start and says so.
fn free_control_port() -> Result<u16, String> {
    let any: SocketAddr = (Ipv4Addr::LOCALHOST, 0).into();
    let sock = UdpSocket::bind(any).map_err(|e| format!("finding a free port: {e}"))?;
    sock.local_addr()
        .map(|a| a.port())
        .map_err(|e| format!("finding a free port: {e}"))
}

/// The program and arguments that start `kind` with its control socket
/// on `port`; `None` for a relay given by address.
fn command_line(
    kind: &RelayKind,
    port: u16,
    cmp: &CompareConfig,
) -> Option<(PathBuf, Vec<String>)> {
    let (low, high) = cmp.ports;
    match kind {
        RelayKind::Rtpproxy(path) => Some((
            path.clone(),
            [
                "-f",
                "-F",
                "-s",
                &format!("udp:127.0.0.1:{port}"),
                "-l",
                "127.0.0.1",
                "-m",
                &low.to_string(),
                "-M",
                &high.to_string(),
                "-d",
                "WARN",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect(),
        )),
        RelayKind::Rtpengine(path) => {
            // --config-file=none: the packaged /etc/rtpengine/rtpengine.conf
            // would add listeners, an interface and a kernel table.
            let mut args: Vec<String> = vec![
                "--config-file=none".into(),
                "--foreground".into(),
                "--log-stderr".into(),
                "--log-level=3".into(),
                "--interface=127.0.0.1".into(),
                format!("--listen-udp=127.0.0.1:{port}"),
                "--table=-1".into(),
                format!("--port-min={low}"),
                format!("--port-max={high}"),
                "--delete-delay=0".into(),
            ];
            args.extend(cmp.rtpengine_opts.iter().cloned());
            Some((path.clone(), args))
        }
        RelayKind::Addressed { .. } => None,
    }
}

/// A relay process this bench started; stopped (SIGTERM, then SIGKILL)
/// when dropped.
pub struct StartedRelay {
    child: Child,
    ctrl: CtrlSpec,
    log: PathBuf,
}

impl StartedRelay {
    /// Starts `spec` pinned to the relay CPU (at raised priority when
    /// running as root) and waits until it answers `V`.
    pub fn start(
        spec: &RelaySpec,
        cmp: &CompareConfig,
        timing: CtrlTiming,
    ) -> Result<StartedRelay, String> {
        let port = free_control_port()?;
        let (program, args) = command_line(&spec.kind, port, cmp)
            .ok_or_else(|| format!("{}: a relay given by address is not started", spec.label))?;
        let log = std::env::temp_dir().join(format!("rtpp_bench-{}.log", spec.label));
        let out = std::fs::File::create(&log).map_err(|e| format!("{}: {e}", log.display()))?;
        let err = out
            .try_clone()
            .map_err(|e| format!("{}: {e}", log.display()))?;
        let mut cmd = Command::new(&program);
        cmd.args(&args).stdin(Stdio::null()).stdout(out).stderr(err);
        pin_child(&mut cmd, cmp.relay_cpu)?;
        let child = cmd
            .spawn()
            .map_err(|e| format!("starting {}: {e}", program.display()))?;
        let relay = StartedRelay {
            child,
            ctrl: CtrlSpec::Udp((Ipv4Addr::LOCALHOST, port).into()),
            log,
        };
        relay.await_answer(timing)?;
        Ok(relay)
    }

    /// Its pid, for its CPU.
    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Its control socket.
    pub fn ctrl(&self) -> &CtrlSpec {
        &self.ctrl
    }

    /// Asks `V` until the relay answers, it exits, or the start limit
    /// passes.
    fn await_answer(&self, timing: CtrlTiming) -> Result<(), String> {
        let quick = CtrlTiming {
            timeout: Duration::from_millis(200).min(timing.timeout),
            retries: 0,
        };
        let mut client = ControlClient::new(&self.ctrl, "start", quick)?;
        let deadline = now_ns() + START_LIMIT_NS;
        // Bounded by the deadline: each pass waits at most 200 ms plus 50.
        while now_ns() < deadline && !stop_requested() {
            if !crate::procfs::is_alive(self.pid()) {
                return Err(format!("the relay exited at start{}", self.log_tail()));
            }
            if client.request("V").is_ok() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(format!(
            "the relay did not answer on {} within {} s{}",
            self.ctrl,
            START_LIMIT_NS / NS_PER_SEC,
            self.log_tail()
        ))
    }

    /// The last lines of the relay's output, to say why it failed.
    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().rev().take(5).collect();
        let tail: Vec<&str> = lines.into_iter().rev().collect();
        format!(" (see {}: {})", self.log.display(), tail.join(" | "))
    }
}

impl Drop for StartedRelay {
    fn drop(&mut self) {
        // Our own child, by its pid: first politely, so it can close its
        // sockets and sessions, then for good.
        let _ = kill(Pid::from_raw(self.pid()), Signal::SIGTERM);
        let deadline = now_ns() + STOP_LIMIT_NS;
        while now_ns() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Makes the child run on `cpu` only, at raised priority when running as
/// root, and end when this process ends: set between fork and exec, so
/// every thread the relay ever starts inherits it.
fn pin_child(cmd: &mut Command, cpu: usize) -> Result<(), String> {
    let mut set = CpuSet::new();
    set.set(cpu)
        .map_err(|e| format!("--relay-cpu {cpu}: {e}"))?;
    let renice = may_renice();
    // SAFETY: the closure runs in the forked child before exec and only
    // makes system calls (sched_setaffinity, setpriority, prctl), which
    // are async-signal-safe; it allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            sched_setaffinity(Pid::from_raw(0), &set).map_err(std::io::Error::from)?;
            if renice && nix::libc::setpriority(nix::libc::PRIO_PROCESS, 0, NICE) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            nix::sys::prctl::set_pdeathsig(Signal::SIGTERM).map_err(std::io::Error::from)?;
            Ok(())
        });
    }
    Ok(())
}

/// Sleeps `seconds` unless the run is being stopped.
pub fn settle(seconds: u64) {
    let stop = || stop_requested();
    sleep_until_or_stop(now_ns() + seconds * NS_PER_SEC + NS_PER_MS, &stop);
}

/// A short description of where and how a relay runs, for the summary.
pub fn describe(spec: &RelaySpec, cmp: &CompareConfig) -> String {
    let nice = if may_renice() {
        format!(", nice {NICE}")
    } else {
        String::new()
    };
    match &spec.kind {
        RelayKind::Rtpproxy(path) | RelayKind::Rtpengine(path) => {
            let args = command_line(&spec.kind, 0, cmp)
                .map(|(_, args)| args.join(" "))
                .unwrap_or_default();
            format!(
                "{}: {} {} (control port chosen per run), started for every run, pinned to CPU {}{nice}",
                spec.label,
                display(path),
                args.replace("127.0.0.1:0", "127.0.0.1:PORT"),
                cmp.relay_cpu
            )
        }
        RelayKind::Addressed { ctrl, pid } => format!(
            "{}: given by address, {ctrl}{}; not started, restarted nor pinned by the bench",
            spec.label,
            pid.map(|p| format!(", pid {p}"))
                .unwrap_or_else(|| ", no pid: its CPU is not measured".into())
        ),
    }
}

fn display(path: &Path) -> String {
    path.display().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmp() -> CompareConfig {
        let args: Vec<String> = vec![
            "compare".into(),
            "--rtpengine-opt".into(),
            "--num-threads=1".into(),
        ];
        match crate::options::parse(&args) {
            Ok(crate::options::Parsed::Run(c)) => c.compare,
            _ => panic!("compare options did not parse"),
        }
    }

    #[test]
    fn relays_get_loopback_only_command_lines() {
        let c = cmp();
        let (_, args) =
            command_line(&RelayKind::Rtpproxy("/x/rtpproxy".into()), 22000, &c).unwrap();
        assert_eq!(
            args.join(" "),
            "-f -F -s udp:127.0.0.1:22000 -l 127.0.0.1 -m 16384 -M 32767 -d WARN"
        );
        let (_, args) = command_line(
            &RelayKind::Rtpengine("/usr/bin/rtpengine".into()),
            22001,
            &c,
        )
        .unwrap();
        let line = args.join(" ");
        assert!(line.contains("--listen-udp=127.0.0.1:22001"), "{line}");
        assert!(line.contains("--interface=127.0.0.1"));
        assert!(line.contains("--table=-1"));
        assert!(line.ends_with("--num-threads=1"));
        let addressed = RelayKind::Addressed {
            ctrl: CtrlSpec::parse("udp:127.0.0.1:1").unwrap(),
            pid: None,
        };
        assert!(command_line(&addressed, 1, &c).is_none());
    }

    #[test]
    fn a_missing_program_fails_to_start() {
        let label = format!("missing-{}", std::process::id());
        let spec = RelaySpec {
            label: label.clone(),
            kind: RelayKind::Rtpproxy("/nonexistent/rtpproxy".into()),
        };
        let timing = CtrlTiming {
            timeout: Duration::from_millis(100),
            retries: 0,
        };
        assert!(StartedRelay::start(&spec, &cmp(), timing).is_err());
        let _ = std::fs::remove_file(std::env::temp_dir().join(format!("rtpp_bench-{label}.log")));
    }
}
