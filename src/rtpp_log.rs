//! Logging: stderr in the foreground, syslog in the background.
//!
//! The relay loop must never wait for a log line, so the syslog socket is
//! non-blocking: a line syslog cannot take right now is dropped and counted.

use std::cell::RefCell;
use std::fmt;
use std::io::Write;
use std::os::unix::net::UnixDatagram;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};

use syslog::{Facility, Formatter3164, Logger, LoggerBackend};

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

enum Sink {
    Stderr,
    Syslog(Box<Logger<LoggerBackend, Formatter3164>>),
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

/// Sends log lines to the local syslog daemon from now on. When /dev/log
/// cannot be reached the lines go to stderr (which is /dev/null once
/// daemonized), so a missing syslog never stops the relay.
pub fn open_syslog(level: Level, facility: Facility) {
    LEVEL.store(level as u8, Ordering::Relaxed);
    let socket = UnixDatagram::unbound().and_then(|s| {
        s.connect("/dev/log")?;
        s.set_nonblocking(true)?;
        Ok(s)
    });
    let sink = match socket {
        Ok(sock) => Sink::Syslog(Box::new(Logger {
            formatter: Formatter3164 {
                facility,
                hostname: None,
                process: "rtpproxy".into(),
                pid: std::process::id(),
            },
            backend: LoggerBackend::Unix(sock),
        })),
        Err(_) => Sink::Stderr,
    };
    SINK.with(|s| *s.borrow_mut() = sink);
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
        Sink::Syslog(logger) => {
            let msg = format!("{}:{}", level.name(), args);
            let sent = match level {
                Level::Dbug => logger.debug(msg),
                Level::Info => logger.info(msg),
                Level::Warn => logger.warning(msg),
                Level::Err => logger.err(msg),
                Level::Crit => logger.crit(msg),
            };
            if sent.is_err() {
                DROPPED.fetch_add(1, Ordering::Relaxed);
            }
        }
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
