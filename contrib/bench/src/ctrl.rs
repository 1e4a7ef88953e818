//! Talking to the relay over its control socket (see doc/PROTOCOL.md,
//! "Transports" and "Commands"): where it listens, how a request and its
//! reply travel, and what a reply means.

use std::fmt;
use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Where the relay's control socket is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CtrlSpec {
    /// `udp:HOST:PORT`: one datagram per command, cookie first.
    Udp(SocketAddr),
    /// `unix:PATH`: one stream connection per command, no cookie.
    Unix(PathBuf),
}

impl CtrlSpec {
    /// Parses `udp:HOST:PORT`, `udp6:HOST:PORT` or `unix:PATH` (a bare
    /// absolute path means unix too), refusing anything off this machine.
    pub fn parse(text: &str) -> Result<CtrlSpec, String> {
        if let Some(rest) = text
            .strip_prefix("udp:")
            .or_else(|| text.strip_prefix("udp6:"))
        {
            let addr = parse_host_port(rest)
                .ok_or_else(|| format!("--ctrl {text}: expected udp:HOST:PORT"))?;
            require_loopback(addr.ip(), "--ctrl")?;
            return Ok(CtrlSpec::Udp(addr));
        }
        let path = text.strip_prefix("unix:").unwrap_or(text);
        if path.starts_with('/') || text.starts_with("unix:") {
            if path.is_empty() {
                return Err(format!("--ctrl {text}: empty socket path"));
            }
            return Ok(CtrlSpec::Unix(PathBuf::from(path)));
        }
        Err(format!(
            "--ctrl {text}: expected udp:HOST:PORT or unix:PATH"
        ))
    }

    /// The host media goes to when replies carry no address.
    pub fn media_host(&self) -> IpAddr {
        match self {
            CtrlSpec::Udp(addr) => addr.ip(),
            CtrlSpec::Unix(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
        }
    }
}

/// Whether process `pid` holds the control socket `spec`; `None` when it
/// cannot be told (no such socket found, or no access to the process).
pub fn pid_holds_control_socket(pid: i32, spec: &CtrlSpec) -> Option<bool> {
    use crate::procfs::{holds_socket, parse_udp_inodes, parse_unix_inodes};
    let inodes: Vec<u64> = match spec {
        CtrlSpec::Udp(addr) => ["/proc/net/udp", "/proc/net/udp6"]
            .iter()
            .filter_map(|p| std::fs::read_to_string(p).ok())
            .flat_map(|text| parse_udp_inodes(&text, addr.port()))
            .collect(),
        CtrlSpec::Unix(path) => std::fs::read_to_string("/proc/net/unix")
            .map(|text| parse_unix_inodes(&text, &path.to_string_lossy()))
            .unwrap_or_default(),
    };
    if inodes.is_empty() {
        return None;
    }
    holds_socket(pid, &inodes)
}

impl fmt::Display for CtrlSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CtrlSpec::Udp(addr) => write!(f, "udp:{addr}"),
            CtrlSpec::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

/// Parses `HOST:PORT` where HOST is an IP literal (IPv6 with or without
/// brackets: the port is after the last colon) or `localhost`.
pub fn parse_host_port(text: &str) -> Option<SocketAddr> {
    let (host, port) = text.rsplit_once(':')?;
    let port: u16 = port.parse().ok()?;
    let ip = parse_host(host)?;
    Some(SocketAddr::new(ip, port))
}

/// Parses an IP literal or `localhost`; never asks a resolver, so nothing
/// leaves the machine to find out.
pub fn parse_host(host: &str) -> Option<IpAddr> {
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if host.eq_ignore_ascii_case("localhost") {
        return Some(IpAddr::V4(Ipv4Addr::LOCALHOST));
    }
    host.parse().ok()
}

/// Refuses any address outside 127.0.0.0/8 and ::1: the harness floods,
/// and a flood must never leave the machine.
pub fn require_loopback(ip: IpAddr, what: &str) -> Result<(), String> {
    if ip.is_loopback() {
        Ok(())
    } else {
        Err(format!(
            "{what}: {ip} is not a loopback address; only 127.0.0.0/8 and ::1 are allowed"
        ))
    }
}

/// Why a control request did not succeed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CtrlError {
    /// No (matching) reply before the deadline.
    Timeout,
    /// The socket failed.
    Io(String),
    /// The relay answered something this harness cannot read.
    BadReply(String),
    /// The relay answered an error code (`E8`, ...).
    Relay(String),
}

impl CtrlError {
    /// Whether the relay gave no answer at all (as opposed to an error
    /// reply): the sign that it is gone or wedged.
    pub fn is_unanswered(&self) -> bool {
        matches!(self, CtrlError::Timeout | CtrlError::Io(_))
    }
}

impl fmt::Display for CtrlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CtrlError::Timeout => write!(f, "no reply before the timeout"),
            CtrlError::Io(e) => write!(f, "control socket: {e}"),
            CtrlError::BadReply(r) => write!(f, "unreadable reply {r:?}"),
            CtrlError::Relay(code) => write!(f, "relay answered {code}"),
        }
    }
}

/// The answer to `U` or `L`: where the other party must send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortReply {
    /// The relay port; 0 means "no such session" for `L`.
    pub port: u16,
    /// The relay address when the reply names one.
    pub addr: Option<IpAddr>,
}

/// Returns the reply body when `datagram` answers `cookie`: it must start
/// with the cookie followed by whitespace.
pub fn strip_cookie<'a>(datagram: &'a str, cookie: &str) -> Option<&'a str> {
    let rest = datagram.strip_prefix(cookie)?;
    if rest.is_empty() {
        return Some(rest);
    }
    rest.starts_with([' ', '\t', '\r', '\n'])
        .then(|| rest.trim())
}

/// Turns an `E<n>` reply into an error, anything else into itself.
fn reject_error_code(body: &str) -> Result<&str, CtrlError> {
    let body = body.trim();
    let is_error = body.len() > 1
        && body.starts_with(['E', 'e'])
        && body[1..].bytes().all(|b| b.is_ascii_digit());
    if is_error {
        return Err(CtrlError::Relay(body.to_string()));
    }
    Ok(body)
}

/// Parses the reply to `U`/`L`: `PORT [ADDR [6]]`, or `E<n>`.
pub fn parse_port_reply(body: &str) -> Result<PortReply, CtrlError> {
    let body = reject_error_code(body)?;
    let mut tokens = body.split_ascii_whitespace();
    let port = tokens
        .next()
        .and_then(|t| t.parse::<u16>().ok())
        .ok_or_else(|| CtrlError::BadReply(body.to_string()))?;
    let addr = match tokens.next() {
        None => None,
        Some(t) => Some(parse_host(t).ok_or_else(|| CtrlError::BadReply(body.to_string()))?),
    };
    Ok(PortReply { port, addr })
}

/// Parses a reply that must be `0` (`D`), or `E<n>`.
pub fn parse_ok_reply(body: &str) -> Result<(), CtrlError> {
    let body = reject_error_code(body)?;
    if body == "0" {
        Ok(())
    } else {
        Err(CtrlError::BadReply(body.to_string()))
    }
}

/// `Us`: create or update the session; the reply is the port the callee
/// must send to. The media-numbered tag makes other relays accept it too.
pub fn update_command(call_id: &str, ip: IpAddr, port: u16, from_tag: &str) -> String {
    format!("Us {call_id} {ip} {port} {from_tag};1")
}

/// `Ls`: answer an existing session; the reply is the port the caller
/// must send to.
pub fn lookup_command(
    call_id: &str,
    ip: IpAddr,
    port: u16,
    from_tag: &str,
    to_tag: &str,
) -> String {
    format!("Ls {call_id} {ip} {port} {from_tag};1 {to_tag};1")
}

/// `D`: delete every stream of the call (tags without a media number).
pub fn delete_command(call_id: &str, from_tag: &str, to_tag: &str) -> String {
    format!("D {call_id} {from_tag} {to_tag}")
}

/// How long to wait for each reply and how often to resend over UDP.
#[derive(Debug, Clone, Copy)]
pub struct CtrlTiming {
    /// Wait for one reply.
    pub timeout: Duration,
    /// Resends of the same datagram (same cookie) after a timeout.
    pub retries: u32,
}

/// One client of the control socket, used by one thread at a time.
pub struct ControlClient {
    spec: CtrlSpec,
    udp: Option<UdpSocket>,
    cookie_prefix: String,
    counter: u64,
    timing: CtrlTiming,
    buf: Vec<u8>,
}

impl ControlClient {
    /// A client of `spec`; `cookie_prefix` keeps cookies unique across the
    /// clients of one run.
    pub fn new(spec: &CtrlSpec, cookie_prefix: &str, timing: CtrlTiming) -> Result<Self, String> {
        let udp = match spec {
            CtrlSpec::Udp(addr) => Some(open_udp_client(*addr)?),
            CtrlSpec::Unix(_) => None,
        };
        Ok(ControlClient {
            spec: spec.clone(),
            udp,
            cookie_prefix: cookie_prefix.to_string(),
            counter: 0,
            timing,
            buf: vec![0u8; 65_536],
        })
    }

    /// Sends `command` and returns the reply body (without cookie, trimmed).
    pub fn request(&mut self, command: &str) -> Result<String, CtrlError> {
        match &self.spec {
            CtrlSpec::Udp(_) => self.request_udp(command),
            CtrlSpec::Unix(path) => {
                let path = path.clone();
                request_unix(&path, command, self.timing.timeout, &mut self.buf)
            }
        }
    }

    fn request_udp(&mut self, command: &str) -> Result<String, CtrlError> {
        self.counter += 1;
        let cookie = format!("{}_{}", self.cookie_prefix, self.counter);
        let datagram = format!("{cookie} {command}");
        let Some(sock) = self.udp.as_ref() else {
            return Err(CtrlError::Io("UDP client without a socket".into()));
        };
        for _attempt in 0..=self.timing.retries {
            sock.send(datagram.as_bytes())
                .map_err(|e| CtrlError::Io(e.to_string()))?;
            match await_udp_reply(sock, &cookie, self.timing.timeout, &mut self.buf) {
                Err(CtrlError::Timeout) => continue,
                other => return other,
            }
        }
        Err(CtrlError::Timeout)
    }
}

fn open_udp_client(relay: SocketAddr) -> Result<UdpSocket, String> {
    let local: SocketAddr = match relay {
        SocketAddr::V4(_) => (Ipv4Addr::LOCALHOST, 0).into(),
        SocketAddr::V6(_) => (Ipv6Addr::LOCALHOST, 0).into(),
    };
    let sock = UdpSocket::bind(local).map_err(|e| format!("binding a control client: {e}"))?;
    // Connected, so only the relay's replies reach this socket.
    sock.connect(relay)
        .map_err(|e| format!("connecting to {relay}: {e}"))?;
    Ok(sock)
}

/// Waits for the reply carrying `cookie`, skipping late replies to earlier
/// requests of this client.
fn await_udp_reply(
    sock: &UdpSocket,
    cookie: &str,
    timeout: Duration,
    buf: &mut [u8],
) -> Result<String, CtrlError> {
    let deadline = Instant::now() + timeout;
    // Each pass either returns or consumes one datagram; a stale-reply flood
    // still ends at the deadline.
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(CtrlError::Timeout);
        }
        sock.set_read_timeout(Some(left))
            .map_err(|e| CtrlError::Io(e.to_string()))?;
        let n = match sock.recv(buf) {
            Ok(n) => n,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return Err(CtrlError::Timeout)
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            // A refused port means nothing listens: report it at once.
            Err(e) => return Err(CtrlError::Io(e.to_string())),
        };
        let text = String::from_utf8_lossy(&buf[..n]);
        if let Some(body) = strip_cookie(&text, cookie) {
            return Ok(body.trim().to_string());
        }
    }
}

/// One command over a fresh stream connection: write it, read to EOF.
fn request_unix(
    path: &Path,
    command: &str,
    timeout: Duration,
    buf: &mut [u8],
) -> Result<String, CtrlError> {
    let deadline = Instant::now() + timeout;
    let mut stream = connect_unix(path, deadline)?;
    stream
        .set_write_timeout(Some(timeout))
        .map_err(|e| CtrlError::Io(e.to_string()))?;
    stream
        .write_all(command.as_bytes())
        .map_err(|e| CtrlError::Io(format!("writing to {}: {e}", path.display())))?;
    let mut got = 0usize;
    // Each pass reads at least one byte or ends; bounded by the buffer and
    // the deadline.
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(CtrlError::Timeout);
        }
        stream
            .set_read_timeout(Some(left))
            .map_err(|e| CtrlError::Io(e.to_string()))?;
        if got == buf.len() {
            return Err(CtrlError::BadReply("reply longer than 64 KiB".into()));
        }
        match stream.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return Err(CtrlError::Timeout)
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(CtrlError::Io(e.to_string())),
        }
    }
    Ok(String::from_utf8_lossy(&buf[..got]).trim().to_string())
}

/// Connects without ever blocking past `deadline`: a daemon whose listen
/// backlog is full makes a blocking connect wait indefinitely.
fn connect_unix(path: &Path, deadline: Instant) -> Result<UnixStream, CtrlError> {
    use nix::errno::Errno;
    use nix::sys::socket::{connect, socket, AddressFamily, SockFlag, SockType, UnixAddr};

    let addr =
        UnixAddr::new(path).map_err(|e| CtrlError::Io(format!("{}: {e}", path.display())))?;
    // Bounded by the deadline; each pass sleeps a millisecond.
    loop {
        let fd: OwnedFd = socket(
            AddressFamily::Unix,
            SockType::Stream,
            SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
            None,
        )
        .map_err(|e| CtrlError::Io(e.to_string()))?;
        match connect(std::os::fd::AsRawFd::as_raw_fd(&fd), &addr) {
            Ok(()) => {
                let stream = UnixStream::from(fd);
                stream
                    .set_nonblocking(false)
                    .map_err(|e| CtrlError::Io(e.to_string()))?;
                return Ok(stream);
            }
            Err(Errno::EAGAIN) | Err(Errno::EINTR) => {
                if Instant::now() >= deadline {
                    return Err(CtrlError::Timeout);
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(e) => {
                return Err(CtrlError::Io(format!(
                    "connecting to {}: {e}",
                    path.display()
                )))
            }
        }
    }
}

/// Runs `commands` with up to `window` requests outstanding at once (one
/// client per window slot), returning the replies in order.
pub fn run_pipelined(
    spec: &CtrlSpec,
    run_tag: &str,
    commands: &[String],
    window: usize,
    timing: CtrlTiming,
) -> Result<Vec<Result<String, CtrlError>>, String> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;

    let window = window.clamp(1, commands.len().max(1));
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<Result<String, CtrlError>>>> =
        Mutex::new(vec![None; commands.len()]);
    let mut clients = Vec::with_capacity(window);
    for slot in 0..window {
        clients.push(ControlClient::new(
            spec,
            &format!("{run_tag}p{slot}"),
            timing,
        )?);
    }
    // A relay that stopped answering would otherwise cost one timeout per
    // remaining command; after this many unanswered requests in a row the
    // rest are not sent.
    let give_up_after = 2 * window + 2;
    let unanswered_in_a_row = AtomicUsize::new(0);
    std::thread::scope(|scope| {
        for mut client in clients {
            let next = &next;
            let results = &results;
            let unanswered = &unanswered_in_a_row;
            scope.spawn(move || loop {
                if unanswered.load(Ordering::Relaxed) >= give_up_after {
                    break;
                }
                let idx = next.fetch_add(1, Ordering::Relaxed);
                let Some(command) = commands.get(idx) else {
                    break;
                };
                let reply = client.request(command);
                if reply.as_ref().is_err_and(CtrlError::is_unanswered) {
                    unanswered.fetch_add(1, Ordering::Relaxed);
                } else {
                    unanswered.store(0, Ordering::Relaxed);
                }
                if let Ok(mut all) = results.lock() {
                    all[idx] = Some(reply);
                }
            });
        }
    });
    let all = results
        .into_inner()
        .map_err(|_| "a control worker panicked".to_string())?;
    Ok(all
        .into_iter()
        .map(|r| {
            r.unwrap_or(Err(CtrlError::Io(
                "not sent: the relay stopped answering".into(),
            )))
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn udp_spec_parses_ipv4_and_ipv6() {
        assert_eq!(
            CtrlSpec::parse("udp:127.0.0.1:22300"),
            Ok(CtrlSpec::Udp("127.0.0.1:22300".parse().unwrap()))
        );
        assert_eq!(
            CtrlSpec::parse("udp:localhost:22301"),
            Ok(CtrlSpec::Udp("127.0.0.1:22301".parse().unwrap()))
        );
        assert_eq!(
            CtrlSpec::parse("udp6:::1:9000"),
            Ok(CtrlSpec::Udp("[::1]:9000".parse().unwrap()))
        );
        assert_eq!(
            CtrlSpec::parse("udp:[::1]:9000"),
            Ok(CtrlSpec::Udp("[::1]:9000".parse().unwrap()))
        );
    }

    #[test]
    fn unix_spec_parses_with_and_without_prefix() {
        assert_eq!(
            CtrlSpec::parse("unix:/tmp/r.sock"),
            Ok(CtrlSpec::Unix("/tmp/r.sock".into()))
        );
        assert_eq!(
            CtrlSpec::parse("/tmp/r.sock"),
            Ok(CtrlSpec::Unix("/tmp/r.sock".into()))
        );
        assert!(CtrlSpec::parse("unix:").is_err());
    }

    #[test]
    fn non_loopback_control_is_refused() {
        assert!(CtrlSpec::parse("udp:10.0.0.1:22222").is_err());
        assert!(CtrlSpec::parse("udp:0.0.0.0:22222").is_err());
        assert!(CtrlSpec::parse("udp:example.com:22222").is_err());
        assert!(CtrlSpec::parse("udp:127.0.0.1").is_err());
        assert!(CtrlSpec::parse("udp:127.0.0.1:99999").is_err());
        assert!(CtrlSpec::parse("tcp:127.0.0.1:1").is_err());
        assert!(CtrlSpec::parse("udp:127.8.9.10:5").is_ok());
    }

    #[test]
    fn cookie_must_match_whole_token() {
        assert_eq!(strip_cookie("abc_1 35000\n", "abc_1"), Some("35000"));
        assert_eq!(strip_cookie("abc_12 35000\n", "abc_1"), None);
        assert_eq!(strip_cookie("xyz 0", "abc"), None);
        assert_eq!(strip_cookie("abc\t0", "abc"), Some("0"));
        assert_eq!(strip_cookie("abc", "abc"), Some(""));
    }

    #[test]
    fn port_reply_with_and_without_address() {
        assert_eq!(
            parse_port_reply("35000\n"),
            Ok(PortReply {
                port: 35000,
                addr: None
            })
        );
        assert_eq!(
            parse_port_reply("35002 127.0.0.1"),
            Ok(PortReply {
                port: 35002,
                addr: Some("127.0.0.1".parse().unwrap())
            })
        );
        assert_eq!(
            parse_port_reply("35004 ::1 6"),
            Ok(PortReply {
                port: 35004,
                addr: Some("::1".parse().unwrap())
            })
        );
        assert_eq!(
            parse_port_reply("0"),
            Ok(PortReply {
                port: 0,
                addr: None
            })
        );
    }

    #[test]
    fn error_replies_are_errors() {
        assert_eq!(parse_port_reply("E8"), Err(CtrlError::Relay("E8".into())));
        assert_eq!(
            parse_port_reply("E10\n"),
            Err(CtrlError::Relay("E10".into()))
        );
        assert_eq!(parse_ok_reply("E1"), Err(CtrlError::Relay("E1".into())));
        assert_eq!(parse_ok_reply("0\n"), Ok(()));
    }

    #[test]
    fn garbage_replies_are_bad_replies() {
        assert!(matches!(parse_port_reply(""), Err(CtrlError::BadReply(_))));
        assert!(matches!(
            parse_port_reply("70000"),
            Err(CtrlError::BadReply(_))
        ));
        assert!(matches!(
            parse_port_reply("port"),
            Err(CtrlError::BadReply(_))
        ));
        assert!(matches!(
            parse_port_reply("35000 nowhere"),
            Err(CtrlError::BadReply(_))
        ));
        assert!(matches!(parse_port_reply("E"), Err(CtrlError::BadReply(_))));
        assert!(matches!(parse_ok_reply("1"), Err(CtrlError::BadReply(_))));
        assert!(matches!(parse_ok_reply("Ex"), Err(CtrlError::BadReply(_))));
    }

    #[test]
    fn commands_use_media_numbered_tags() {
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        assert_eq!(
            update_command("c1", ip, 4000, "f1"),
            "Us c1 127.0.0.1 4000 f1;1"
        );
        assert_eq!(
            lookup_command("c1", ip, 4002, "f1", "t1"),
            "Ls c1 127.0.0.1 4002 f1;1 t1;1"
        );
        assert_eq!(delete_command("c1", "f1", "t1"), "D c1 f1 t1");
    }

    #[test]
    fn udp_request_matches_cookie_and_retries() {
        let relay = UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = relay.local_addr().unwrap();
        let spec = CtrlSpec::Udp(addr);
        let timing = CtrlTiming {
            timeout: Duration::from_millis(200),
            retries: 1,
        };
        let mut client = ControlClient::new(&spec, "t", timing).unwrap();
        let server = std::thread::spawn(move || {
            let mut buf = [0u8; 512];
            // Ignore the first try so the client has to resend, then answer
            // with a stale cookie first and the right one second.
            let (_, _) = relay.recv_from(&mut buf).unwrap();
            let (n, from) = relay.recv_from(&mut buf).unwrap();
            let text = String::from_utf8_lossy(&buf[..n]).to_string();
            let cookie = text.split_whitespace().next().unwrap().to_string();
            relay.send_to(b"stale 1\n", from).unwrap();
            relay
                .send_to(format!("{cookie} 35000\n").as_bytes(), from)
                .unwrap();
            text
        });
        let reply = client.request("Us c 127.0.0.1 1 f;1").unwrap();
        assert_eq!(reply, "35000");
        let seen = server.join().unwrap();
        assert!(seen.ends_with(" Us c 127.0.0.1 1 f;1"));
    }

    #[test]
    fn unix_request_reads_until_eof() {
        use std::os::unix::net::UnixListener;
        let path =
            std::env::temp_dir().join(format!("rtpp-bench-test-{}.sock", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path).unwrap();
        let server = std::thread::spawn(move || {
            let (mut conn, _) = listener.accept().unwrap();
            let mut buf = [0u8; 128];
            let n = conn.read(&mut buf).unwrap();
            conn.write_all(b"0\n").unwrap();
            String::from_utf8_lossy(&buf[..n]).to_string()
        });
        let timing = CtrlTiming {
            timeout: Duration::from_secs(2),
            retries: 0,
        };
        let mut client = ControlClient::new(&CtrlSpec::Unix(path.clone()), "u", timing).unwrap();
        assert_eq!(client.request("D c f t").unwrap(), "0");
        assert_eq!(server.join().unwrap(), "D c f t");
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn unix_request_to_missing_socket_fails_fast() {
        let timing = CtrlTiming {
            timeout: Duration::from_secs(2),
            retries: 0,
        };
        let path = PathBuf::from("/nonexistent/rtpp-bench.sock");
        let mut client = ControlClient::new(&CtrlSpec::Unix(path), "u", timing).unwrap();
        assert!(matches!(client.request("V"), Err(CtrlError::Io(_))));
    }
}
