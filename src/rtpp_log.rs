//! Logging: stderr in the foreground, syslog in the background.
//!
//! The relay loop must never wait for a log line, so the syslog socket is
//! non-blocking: a line syslog cannot take right now is dropped and counted,
//! and the count is logged once syslog takes lines again.

use std::cell::RefCell;
use std::fmt;
use std::io::{self, ErrorKind, Write};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::time::{Duration, Instant};

use syslog::{Facility, Formatter3164, LogFormat, Severity};

/// Severity of a log line, most verbose first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Crit = 2,
    Err = 3,
    Warn = 4,
    Info = 6,
    Dbug = 7,
}

impl Level {
    /// Parses the names `-d` takes (`DBUG`, `INFO`, `WARN`, `ERR`, `CRIT`).
    pub fn parse(name: &str) -> Option<Level> {
        match name.to_ascii_uppercase().as_str() {
            "DBUG" | "DEBUG" => Some(Level::Dbug),
            "INFO" => Some(Level::Info),
            "WARN" | "WARNING" => Some(Level::Warn),
            "ERR" | "ERROR" => Some(Level::Err),
            "CRIT" => Some(Level::Crit),
            _ => None,
        }
    }

    fn severity(self) -> Severity {
        match self {
            Level::Dbug => Severity::LOG_DEBUG,
            Level::Info => Severity::LOG_INFO,
            Level::Warn => Severity::LOG_WARNING,
            Level::Err => Severity::LOG_ERR,
            Level::Crit => Severity::LOG_CRIT,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Level::Dbug => "DBUG",
            Level::Info => "INFO",
            Level::Warn => "WARN",
            Level::Err => "ERR",
            Level::Crit => "CRIT",
        }
    }
}

/// Parses a syslog facility name as `-d level:facility` takes it.
pub fn parse_facility(name: &str) -> Option<Facility> {
    let upper = name.to_ascii_uppercase();
    let bare = upper.strip_prefix("LOG_").unwrap_or(&upper);
    Some(match bare {
        "KERN" => Facility::LOG_KERN,
        "USER" => Facility::LOG_USER,
        "MAIL" => Facility::LOG_MAIL,
        "DAEMON" => Facility::LOG_DAEMON,
        "AUTH" => Facility::LOG_AUTH,
        "SYSLOG" => Facility::LOG_SYSLOG,
        "LPR" => Facility::LOG_LPR,
        "NEWS" => Facility::LOG_NEWS,
        "UUCP" => Facility::LOG_UUCP,
        "CRON" => Facility::LOG_CRON,
        "AUTHPRIV" => Facility::LOG_AUTHPRIV,
        "FTP" => Facility::LOG_FTP,
        "LOCAL0" => Facility::LOG_LOCAL0,
        "LOCAL1" => Facility::LOG_LOCAL1,
        "LOCAL2" => Facility::LOG_LOCAL2,
        "LOCAL3" => Facility::LOG_LOCAL3,
        "LOCAL4" => Facility::LOG_LOCAL4,
        "LOCAL5" => Facility::LOG_LOCAL5,
        "LOCAL6" => Facility::LOG_LOCAL6,
        "LOCAL7" => Facility::LOG_LOCAL7,
        _ => return None,
    })
}

/// The local syslog socket.
pub const SYSLOG_PATH: &str = "/dev/log";
/// How long a syslog socket that refused a line (syslog restarted, or not
/// up yet) is left alone before reconnecting: one attempt per line would
/// cost a few system calls each while syslog is away.
const RECONNECT_DELAY: Duration = Duration::from_secs(1);

/// A syslog connection that never waits: a line the socket cannot take at
/// once is dropped, and the number dropped is logged as soon as a line
/// gets through again.
struct Syslog {
    formatter: Formatter3164,
    path: PathBuf,
    sock: Option<UnixDatagram>,
    retry_at: Instant,
    /// Lines dropped since the last one syslog took.
    unreported: u64,
    buf: Vec<u8>,
}

impl Syslog {
    fn write(&mut self, level: Level, args: fmt::Arguments<'_>) {
        if self.unreported > 0 {
            let n = self.unreported;
            let notice = format_args!("{}:{n} log lines dropped", Level::Warn.name());
            if !self.send(Severity::LOG_WARNING, notice) {
                self.dropped();
                return;
            }
            self.unreported = 0;
        }
        let line = format_args!("{}:{}", level.name(), args);
        if !self.send(level.severity(), line) {
            self.dropped();
        }
    }

    fn dropped(&mut self) {
        self.unreported += 1;
        DROPPED.fetch_add(1, Ordering::Relaxed);
    }

    fn send(&mut self, severity: Severity, msg: fmt::Arguments<'_>) -> bool {
        if self.sock.is_none() {
            let now = Instant::now();
            if now < self.retry_at {
                return false;
            }
            match connect_syslog(&self.path) {
                Ok(sock) => self.sock = Some(sock),
                Err(_) => {
                    self.retry_at = now + RECONNECT_DELAY;
                    return false;
                }
            }
        }
        let Some(sock) = &self.sock else {
            return false;
        };
        self.buf.clear();
        if self.formatter.format(&mut self.buf, severity, msg).is_err() {
            return false;
        }
        match sock.send(&self.buf) {
            Ok(_) => true,
            // Syslog is busy (its queue is full) or the line is too big:
            // drop the line, keep the connection.
            Err(e)
                if e.kind() == ErrorKind::WouldBlock
                    || e.kind() == ErrorKind::Interrupted
                    || e.raw_os_error() == Some(nix::libc::ENOBUFS)
                    || e.raw_os_error() == Some(nix::libc::EMSGSIZE) =>
            {
                false
            }
            // Refused or gone: syslog was restarted and listens on a new
            // socket at the same path.
            Err(_) => {
                self.sock = None;
                self.retry_at = Instant::now() + RECONNECT_DELAY;
                false
            }
        }
    }
}

fn connect_syslog(path: &Path) -> io::Result<UnixDatagram> {
    let sock = UnixDatagram::unbound()?;
    sock.connect(path)?;
    sock.set_nonblocking(true)?;
    Ok(sock)
}

enum Sink {
    Stderr,
    Syslog(Box<Syslog>),
}

static LEVEL: AtomicU8 = AtomicU8::new(Level::Dbug as u8);
static DROPPED: AtomicU64 = AtomicU64::new(0);

thread_local! {
    static SINK: RefCell<Sink> = const { RefCell::new(Sink::Stderr) };
}

/// Sends log lines to stderr from now on, at `level` and above.
pub fn open_stderr(level: Level) {
    LEVEL.store(level as u8, Ordering::Relaxed);
    SINK.with(|s| *s.borrow_mut() = Sink::Stderr);
}

/// Sends log lines to the local syslog daemon (`/dev/log`) from now on.
pub fn open_syslog(level: Level, facility: Facility) {
    open_syslog_at(level, facility, Path::new(SYSLOG_PATH));
}

/// Like `open_syslog`, with the syslog datagram socket at `path`. A syslog
/// that is not up yet is connected to once it is; the lines logged until
/// then are counted as dropped.
pub fn open_syslog_at(level: Level, facility: Facility, path: &Path) {
    LEVEL.store(level as u8, Ordering::Relaxed);
    let sink = Syslog {
        formatter: Formatter3164 {
            facility,
            hostname: None,
            process: "rtpproxy".into(),
            pid: std::process::id(),
        },
        path: path.to_path_buf(),
        sock: connect_syslog(path).ok(),
        retry_at: Instant::now() + RECONNECT_DELAY,
        unreported: 0,
        buf: Vec::with_capacity(512),
    };
    SINK.with(|s| *s.borrow_mut() = Sink::Syslog(Box::new(sink)));
}

/// True when lines of `level` are written; lets callers skip formatting.
pub fn enabled(level: Level) -> bool {
    (level as u8) <= LEVEL.load(Ordering::Relaxed)
}

/// How many lines were dropped because syslog could not take them.
pub fn dropped_lines() -> u64 {
    DROPPED.load(Ordering::Relaxed)
}

/// Writes one line; use the `rtpp_log!` macro instead of calling this.
pub fn write(level: Level, args: fmt::Arguments<'_>) {
    if !enabled(level) {
        return;
    }
    SINK.with(|s| match &mut *s.borrow_mut() {
        Sink::Stderr => {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default();
            let line = format!(
                "{}.{:03} {}:rtpproxy:{}\n",
                now.as_secs(),
                now.subsec_millis(),
                level.name(),
                args
            );
            let _ = std::io::stderr().write_all(line.as_bytes());
        }
        Sink::Syslog(syslog) => syslog.write(level, args),
    });
}

/// Logs a formatted line at a level: `rtpp_log!(Info, "x {}", y)`.
#[macro_export]
macro_rules! rtpp_log {
    ($level:ident, $($arg:tt)*) => {
        if $crate::rtpp_log::enabled($crate::rtpp_log::Level::$level) {
            $crate::rtpp_log::write($crate::rtpp_log::Level::$level, format_args!($($arg)*));
        }
    };
}

/// Bytes from the wire (Call-IDs, tags, commands) as text for logs and
/// replies: invalid UTF-8 becomes U+FFFD.
pub fn show(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Bytes from a client (a whole command) quoted for one log line: at most
/// `max` bytes shown, and nothing a client sends can forge a second line or
/// a terminal escape, since every byte outside printable ASCII, the quote
/// and the backslash are escaped.
pub fn escape(bytes: &[u8], max: usize) -> String {
    let mut out = String::with_capacity(bytes.len().min(max) + 2);
    out.push('"');
    for &b in bytes.iter().take(max) {
        match b {
            b'"' => out.push_str("\\\""),
            b'\\' => out.push_str("\\\\"),
            b'\n' => out.push_str("\\n"),
            b'\r' => out.push_str("\\r"),
            b'\t' => out.push_str("\\t"),
            0x20..=0x7e => out.push(char::from(b)),
            _ => out.push_str(&format!("\\x{b:02x}")),
        }
    }
    out.push('"');
    if bytes.len() > max {
        out.push_str(&format!("... ({} bytes)", bytes.len()));
    }
    out
}

/// Whether a syslog daemon listens at `path` now. Lines logged while none
/// does are dropped, so start-up says so where someone still reads.
pub fn syslog_listening(path: &Path) -> bool {
    connect_syslog(path).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_quotes_bounds_and_neutralises_control_bytes() {
        assert_eq!(escape(b"U c1 1.2.3.4 5 t", 100), "\"U c1 1.2.3.4 5 t\"");
        assert_eq!(
            escape(b"V\n\x1b[2J\"\\\xff", 100),
            "\"V\\n\\x1b[2J\\\"\\\\\\xff\""
        );
        assert_eq!(escape(b"abcdef", 3), "\"abc\"... (6 bytes)");
        assert_eq!(escape(b"", 3), "\"\"");
    }

    #[test]
    fn level_names_parse() {
        assert_eq!(Level::parse("dbug"), Some(Level::Dbug));
        assert_eq!(Level::parse("ERR"), Some(Level::Err));
        assert_eq!(Level::parse("LOUD"), None);
        assert!(Level::Dbug > Level::Info);
    }

    #[test]
    fn facility_names_parse() {
        assert!(parse_facility("LOG_LOCAL3").is_some());
        assert!(parse_facility("daemon").is_some());
        assert!(parse_facility("LOG_NOPE").is_none());
    }

    struct FakeSyslog {
        /// Removed with the socket when the test ends.
        _dir: crate::test_support::TempDir,
        path: PathBuf,
    }

    impl FakeSyslog {
        fn new(name: &str) -> FakeSyslog {
            let dir = crate::test_support::TempDir::new(name);
            let path = dir.join("log.sock");
            FakeSyslog { _dir: dir, path }
        }

        fn listen(&self) -> UnixDatagram {
            let _ = std::fs::remove_file(&self.path);
            let rx = UnixDatagram::bind(&self.path).unwrap();
            rx.set_nonblocking(true).unwrap();
            rx
        }
    }

    fn received(rx: &UnixDatagram) -> Vec<String> {
        let mut buf = vec![0u8; 4096];
        let mut lines = Vec::new();
        while let Ok(n) = rx.recv(&mut buf) {
            lines.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
        lines
    }

    fn dropped_notice(line: &str) -> Option<u64> {
        let rest = line.split("WARN:").nth(1)?;
        rest.strip_suffix(" log lines dropped")?.parse().ok()
    }

    #[test]
    fn stalled_syslog_never_blocks_and_reports_drops() {
        let fake = FakeSyslog::new("stall");
        let rx = fake.listen();
        open_syslog_at(Level::Info, Facility::LOG_LOCAL0, &fake.path);
        let before = dropped_lines();
        let lines = 5000;
        let start = Instant::now();
        for i in 0..lines {
            crate::rtpp_log!(Info, "line {i}");
        }
        // Blocking on a full queue would hang here for good.
        assert!(start.elapsed() < Duration::from_secs(5));
        assert!(
            dropped_lines() > before,
            "nothing dropped: the queue never filled"
        );
        let got = received(&rx);
        assert!(
            got[0].starts_with("<134>"),
            "LOG_LOCAL0 + LOG_INFO: {}",
            got[0]
        );
        assert!(got[0].ends_with("]: INFO:line 0"), "{}", got[0]);
        crate::rtpp_log!(Warn, "syslog is back");
        let after = received(&rx);
        assert_eq!(after.len(), 2, "{after:?}");
        let n = dropped_notice(&after[0]).unwrap_or_else(|| panic!("{after:?}"));
        assert_eq!(got.len() as u64 + n, lines);
        assert!(after[1].ends_with("WARN:syslog is back"), "{after:?}");
        assert!(dropped_lines() - before >= n);
        open_stderr(Level::Dbug);
    }

    #[test]
    fn syslog_restart_is_reconnected() {
        let fake = FakeSyslog::new("restart");
        let rx = fake.listen();
        open_syslog_at(Level::Dbug, Facility::LOG_DAEMON, &fake.path);
        crate::rtpp_log!(Info, "one");
        assert_eq!(received(&rx).len(), 1);
        drop(rx);
        crate::rtpp_log!(Info, "lost: nobody listens");
        let rx = fake.listen();
        crate::rtpp_log!(Info, "lost: reconnecting waits a moment");
        assert!(received(&rx).is_empty());
        std::thread::sleep(RECONNECT_DELAY + Duration::from_millis(100));
        crate::rtpp_log!(Info, "two");
        let got = received(&rx);
        assert_eq!(got.len(), 2, "{got:?}");
        assert_eq!(dropped_notice(&got[0]), Some(2), "{got:?}");
        assert!(got[1].ends_with("INFO:two"), "{got:?}");
        open_stderr(Level::Dbug);
    }

    #[test]
    fn syslog_not_up_yet_is_connected_later() {
        let fake = FakeSyslog::new("late");
        open_syslog_at(Level::Dbug, Facility::LOG_DAEMON, &fake.path);
        crate::rtpp_log!(Info, "before syslog");
        let rx = fake.listen();
        std::thread::sleep(RECONNECT_DELAY + Duration::from_millis(100));
        crate::rtpp_log!(Info, "after syslog");
        let got = received(&rx);
        assert_eq!(dropped_notice(&got[0]), Some(1), "{got:?}");
        assert!(got[1].ends_with("INFO:after syslog"), "{got:?}");
        open_stderr(Level::Dbug);
    }
}
