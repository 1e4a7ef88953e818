//! Hand-over: SIGUSR2 makes the running daemon start the installed binary
//! again and give it everything it serves with, so an upgrade or restart
//! drops no call (doc/PROTOCOL.md, "Hand-over").
//!
//! The conversation runs over a unix `SOCK_SEQPACKET` pair, one message
//! per datagram, its first byte saying what it is:
//!
//! | from | message | meaning |
//! |---|---|---|
//! | new | `H` version (u32) | "I started and read this state version" |
//! | old | `S` bytes (u64) fds (u32) | what follows, in all |
//! | old | `B` bytes | a piece of the state |
//! | old | `F` + SCM_RIGHTS | up to [`FDS_PER_MESSAGE`] descriptors |
//! | new | `R` | "pidfile written, serving: go" |
//! | new | `X` reason | "refused", with why |
//!
//! The old process keeps relaying while the new one starts (the pair is in
//! its poll set); it stops only when the hello comes, and from then until
//! `R` media waits in the kernel's socket buffers, which both processes
//! share. On `R` it exits at once, releasing nothing: the new process owns
//! it all. On anything else it logs why and serves on as before.

pub mod state;
pub mod wire;

use std::io::IoSlice;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags};
use nix::sys::socket::{
    recvmsg, sendmsg, socketpair, AddressFamily, ControlMessage, ControlMessageOwned, MsgFlags,
    SockFlag, SockType,
};

use crate::rtpp_log;
pub use state::STATE_VERSION;

/// The internal option that names the inherited end of the pair; not in
/// `-h`: only a daemon handing over passes it.
pub const HANDOVER_FD_OPTION: &str = "handover-fd";
/// Descriptors per message: Linux refuses more than 253 in one
/// SCM_RIGHTS message (SCM_MAX_FD).
pub const FDS_PER_MESSAGE: usize = 250;
/// State bytes per message, well inside the default socket buffer.
const BYTES_PER_MESSAGE: usize = 60 * 1024;
/// How long the new binary may take to start and say hello.
pub const HELLO_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the transfer and the new process's confirmation may take.
pub const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// Most state bytes a new process accepts.
const STATE_BYTES_MAX: u64 = 1 << 30;
/// Longest refusal reason read from the new process.
const REASON_MAX: usize = 512;

/// How this daemon was started, taken before anything could change it:
/// what a hand-over starts again.
#[derive(Debug, Clone)]
pub struct Relaunch {
    /// The binary by the path it was started from (not /proc/self/exe,
    /// which names the replaced file after a package upgrade).
    pub exe: PathBuf,
    /// The command line, without the program name.
    pub args: Vec<std::ffi::OsString>,
    /// Where it was started: relative paths are relative to that.
    pub cwd: Option<PathBuf>,
}

impl Relaunch {
    /// The binary and arguments of this process, the binary's path made
    /// absolute now; the arguments run again from the same directory (the
    /// daemon itself later works in `/`).
    pub fn of_this_process() -> Relaunch {
        let mut argv = std::env::args_os();
        let argv0 = argv.next().map(PathBuf::from).unwrap_or_default();
        let cwd = std::env::current_dir().ok();
        let exe = if argv0.components().count() > 1 {
            match &cwd {
                Some(dir) if argv0.is_relative() => dir.join(&argv0),
                _ => argv0,
            }
        } else {
            // Found on $PATH: the same lookup again, so a symlink there
            // (to a versioned file) is followed afresh at the hand-over.
            on_path(&argv0)
                .or_else(|| std::env::current_exe().ok())
                .unwrap_or(argv0)
        };
        let internal = format!("--{HANDOVER_FD_OPTION}");
        let args = argv
            .filter(|a| !a.to_string_lossy().starts_with(&internal))
            .collect();
        Relaunch { exe, args, cwd }
    }
}

/// Where the shell found `name` on $PATH: the first executable file.
fn on_path(name: &std::path::Path) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .filter(|dir| dir.is_absolute())
        .map(|dir| dir.join(name))
        .find(|p| {
            std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// A hand-over under way, seen from the old process.
pub struct Pending {
    child: Child,
    sock: OwnedFd,
    pub deadline: Instant,
}

/// What the new process said first.
pub enum Hello {
    /// Nothing yet.
    Waiting,
    /// It reads this state version.
    Version(u32),
}

impl Pending {
    /// Starts the binary again with the other end of a fresh pair.
    pub fn start(relaunch: &Relaunch, now: Instant) -> Result<Pending, String> {
        let (mine, theirs) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        )
        .map_err(|e| format!("can't create the hand-over socket pair: {e}"))?;
        // The child's end alone survives the exec; it blocks there.
        let inherit = nix::fcntl::FdFlag::empty();
        nix::fcntl::fcntl(theirs.as_raw_fd(), nix::fcntl::F_SETFD(inherit))
            .and_then(|_| set_blocking(&theirs, true))
            .map_err(|e| format!("can't prepare the hand-over socket: {e}"))?;
        let mut cmd = Command::new(&relaunch.exe);
        cmd.args(&relaunch.args)
            .arg(format!("--{HANDOVER_FD_OPTION}={}", theirs.as_raw_fd()));
        if let Some(dir) = relaunch.cwd.as_ref().filter(|d| d.is_dir()) {
            cmd.current_dir(dir);
        }
        let child = cmd
            .spawn()
            .map_err(|e| format!("can't start {}: {e}", relaunch.exe.display()))?;
        drop(theirs);
        Ok(Pending {
            child,
            sock: mine,
            deadline: now + HELLO_TIMEOUT,
        })
    }

    /// The descriptor the loop polls.
    pub fn fd(&self) -> RawFd {
        self.sock.as_raw_fd()
    }

    /// The new process's pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Reads the hello if it came; an error when the new process went
    /// away or is late.
    pub fn hello(&mut self, now: Instant) -> Result<Hello, String> {
        let mut buf = [0u8; 64];
        match nix::sys::socket::recv(self.sock.as_raw_fd(), &mut buf, MsgFlags::empty()) {
            Ok(5) if buf[0] == b'H' => {
                let v = u32::from_le_bytes([buf[1], buf[2], buf[3], buf[4]]);
                Ok(Hello::Version(v))
            }
            Ok(0) => Err(self.gone()),
            Ok(n) => Err(format!("the new process said {n} bytes of nonsense")),
            Err(Errno::EAGAIN) | Err(Errno::EINTR) if now < self.deadline => Ok(Hello::Waiting),
            Err(Errno::EAGAIN) | Err(Errno::EINTR) => Err(format!(
                "the new process did not start within {} s",
                HELLO_TIMEOUT.as_secs()
            )),
            Err(e) => Err(format!("reading the new process's hello: {e}")),
        }
    }

    /// Why the new process's end closed: its exit status when it is known.
    fn gone(&mut self) -> String {
        let deadline = Instant::now() + Duration::from_millis(200);
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => return format!("the new process exited ({status})"),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(5));
                }
                _ => return "the new process closed the hand-over socket".into(),
            }
        }
    }

    /// Sends the state and waits for the new process's word.
    pub fn transfer(&mut self, bytes: &[u8], fds: &[RawFd]) -> Result<(), String> {
        let deadline = Instant::now() + READY_TIMEOUT;
        let mut head = vec![b'S'];
        head.extend_from_slice(&(bytes.len() as u64).to_le_bytes());
        head.extend_from_slice(&(fds.len() as u32).to_le_bytes());
        send_message(&self.sock, &head, &[], deadline)?;
        for chunk in fds.chunks(FDS_PER_MESSAGE) {
            send_message(&self.sock, b"F", chunk, deadline)?;
        }
        let mut piece = Vec::with_capacity(BYTES_PER_MESSAGE + 1);
        for chunk in bytes.chunks(BYTES_PER_MESSAGE) {
            piece.clear();
            piece.push(b'B');
            piece.extend_from_slice(chunk);
            send_message(&self.sock, &piece, &[], deadline)?;
        }
        let mut buf = [0u8; REASON_MAX + 1];
        let n = recv_message(&self.sock, &mut buf, None, deadline)
            .map_err(|e| format!("waiting for the new process: {e}"))?;
        match buf.get(..n) {
            Some([b'R']) => Ok(()),
            Some([b'X', why @ ..]) => Err(format!(
                "the new process refused the state: {}",
                String::from_utf8_lossy(why)
            )),
            Some([]) => Err(self.gone()),
            _ => Err("the new process answered nonsense".into()),
        }
    }

    /// Ends a failed hand-over: the new process is stopped if still there
    /// and reaped.
    pub fn abandon(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn set_blocking(fd: &OwnedFd, blocking: bool) -> nix::Result<()> {
    use nix::fcntl::{fcntl, OFlag, F_GETFL, F_SETFL};
    let flags = OFlag::from_bits_truncate(fcntl(fd.as_raw_fd(), F_GETFL)?);
    let flags = if blocking {
        flags - OFlag::O_NONBLOCK
    } else {
        flags | OFlag::O_NONBLOCK
    };
    fcntl(fd.as_raw_fd(), F_SETFL(flags)).map(|_| ())
}

/// Waits until `fd` is ready for `flags` or `deadline` passes.
fn wait_for(fd: &OwnedFd, flags: PollFlags, deadline: Instant) -> Result<(), String> {
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err("timed out".into());
        }
        let ms = u16::try_from(left.as_millis().max(1)).unwrap_or(u16::MAX);
        let mut p = [PollFd::new(fd.as_fd(), flags)];
        match poll(&mut p, ms) {
            Ok(0) | Err(Errno::EINTR) => continue,
            Ok(_) => return Ok(()),
            Err(e) => return Err(e.to_string()),
        }
    }
}

/// Sends one message with `fds` attached, waiting (bounded) for room.
fn send_message(
    sock: &OwnedFd,
    bytes: &[u8],
    fds: &[RawFd],
    deadline: Instant,
) -> Result<(), String> {
    let iov = [IoSlice::new(bytes)];
    let rights = [ControlMessage::ScmRights(fds)];
    let cmsgs: &[ControlMessage] = if fds.is_empty() { &[] } else { &rights };
    loop {
        match sendmsg::<()>(sock.as_raw_fd(), &iov, cmsgs, MsgFlags::empty(), None) {
            Ok(n) if n == bytes.len() => return Ok(()),
            Ok(n) => return Err(format!("short send ({n} of {} bytes)", bytes.len())),
            Err(Errno::EAGAIN) | Err(Errno::EINTR) => {
                wait_for(sock, PollFlags::POLLOUT, deadline)
                    .map_err(|e| format!("sending the state: {e}"))?;
            }
            Err(e) => return Err(format!("sending the state: {e}")),
        }
    }
}

/// Receives one message (0 bytes: the peer closed); descriptors that came
/// with it go to `fds`, refused when no list is given.
fn recv_message(
    sock: &OwnedFd,
    buf: &mut [u8],
    mut fds: Option<&mut Vec<OwnedFd>>,
    deadline: Instant,
) -> Result<usize, String> {
    loop {
        let mut iov = [std::io::IoSliceMut::new(buf)];
        let mut space = nix::cmsg_space!([RawFd; FDS_PER_MESSAGE]);
        let flags = MsgFlags::MSG_CMSG_CLOEXEC;
        match recvmsg::<()>(sock.as_raw_fd(), &mut iov, Some(&mut space), flags) {
            Ok(msg) => {
                let mut got = Vec::new();
                for c in msg.cmsgs().map_err(|e| e.to_string())? {
                    if let ControlMessageOwned::ScmRights(raw) = c {
                        // SAFETY: the kernel just installed these
                        // descriptors in this process; nothing else owns them.
                        got.extend(
                            raw.into_iter()
                                .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
                        );
                    }
                }
                let truncated = msg
                    .flags
                    .intersects(MsgFlags::MSG_TRUNC | MsgFlags::MSG_CTRUNC);
                let n = msg.bytes;
                if truncated {
                    return Err("message truncated".into());
                }
                match fds.as_mut() {
                    Some(list) => list.append(&mut got),
                    None if got.is_empty() => {}
                    None => return Err("descriptors where none belong".into()),
                }
                return Ok(n);
            }
            Err(Errno::EAGAIN) | Err(Errno::EINTR) => wait_for(sock, PollFlags::POLLIN, deadline)?,
            Err(e) => return Err(e.to_string()),
        }
    }
}

/// The new process's end of the conversation.
pub struct Successor {
    sock: OwnedFd,
}

impl Successor {
    /// Takes the inherited descriptor and says hello with the state
    /// version this build reads.
    pub fn connect(fd: RawFd) -> Result<Successor, String> {
        use nix::sys::socket::{getsockopt, sockopt};
        // SAFETY: the option names the descriptor the old process left
        // open for us; checked below to be a seqpacket socket.
        let sock = unsafe { OwnedFd::from_raw_fd(fd) };
        match getsockopt(&sock, sockopt::SockType) {
            Ok(SockType::SeqPacket) => {}
            _ => {
                return Err(format!(
                    "--{HANDOVER_FD_OPTION}={fd} is not a hand-over socket"
                ))
            }
        }
        let cloexec = nix::fcntl::FdFlag::FD_CLOEXEC;
        let _ = nix::fcntl::fcntl(fd, nix::fcntl::F_SETFD(cloexec));
        let mut hello = vec![b'H'];
        hello.extend_from_slice(&STATE_VERSION.to_le_bytes());
        send_message(&sock, &hello, &[], Instant::now() + READY_TIMEOUT)?;
        Ok(Successor { sock })
    }

    /// Receives the state bytes and the descriptors.
    pub fn receive(&self) -> Result<(Vec<u8>, Vec<OwnedFd>), String> {
        let deadline = Instant::now() + READY_TIMEOUT;
        let mut buf = vec![0u8; BYTES_PER_MESSAGE + 1];
        let mut fds = Vec::new();
        let n = recv_message(&self.sock, &mut buf, Some(&mut fds), deadline)?;
        let head = buf.get(..n).unwrap_or_default();
        let (want_bytes, want_fds) = match head {
            [b'S', rest @ ..] if rest.len() == 12 => (
                u64::from_le_bytes(rest[..8].try_into().unwrap_or_default()),
                u32::from_le_bytes(rest[8..].try_into().unwrap_or_default()) as usize,
            ),
            _ => return Err("the old process sent no state header".into()),
        };
        let limit = crate::rtpp_util::nofile_limit();
        if want_bytes > STATE_BYTES_MAX || want_fds as u64 > limit || !fds.is_empty() {
            return Err(format!(
                "a state of {want_bytes} bytes and {want_fds} descriptors refused"
            ));
        }
        // Grown as the pieces come: the announced size alone buys little.
        let mut bytes = Vec::with_capacity((want_bytes as usize).min(16 << 20));
        while bytes.len() < want_bytes as usize || fds.len() < want_fds {
            let n = recv_message(&self.sock, &mut buf, Some(&mut fds), deadline)?;
            match buf.get(..n) {
                Some([b'B', piece @ ..]) => bytes.extend_from_slice(piece),
                Some([b'F']) => {}
                _ => return Err("the old process broke off".into()),
            }
            if bytes.len() > want_bytes as usize || fds.len() > want_fds {
                return Err("the old process sent more than it announced".into());
            }
        }
        Ok((bytes, fds))
    }

    /// Tells the old process to go.
    pub fn ready(&self) -> Result<(), String> {
        send_message(&self.sock, b"R", &[], Instant::now() + READY_TIMEOUT)
    }

    /// Tells the old process why the state was refused.
    pub fn refuse(&self, why: &str) {
        let mut msg = vec![b'X'];
        msg.extend(why.bytes().take(REASON_MAX));
        let _ = send_message(&self.sock, &msg, &[], Instant::now() + READY_TIMEOUT);
    }
}

/// CPU time (user and system) this process has used so far.
pub fn cpu_used() -> Duration {
    use nix::sys::resource::{getrusage, UsageWho};
    let Ok(u) = getrusage(UsageWho::RUSAGE_SELF) else {
        return Duration::ZERO;
    };
    let of = |t: nix::sys::time::TimeVal| {
        Duration::new(t.tv_sec().max(0) as u64, (t.tv_usec().max(0) as u32) * 1000)
    };
    of(u.user_time()) + of(u.system_time())
}

/// Logs a hand-over that failed; the daemon serves on.
pub fn log_failure(pid: Option<u32>, why: &str) {
    match pid {
        Some(pid) => rtpp_log!(
            Err,
            "hand-over to a new process (pid {pid}) failed, serving on: {why}"
        ),
        None => rtpp_log!(Err, "hand-over to a new process failed, serving on: {why}"),
    }
}
