//! The program a notification goes to: a listener (unix or TCP) that
//! accepts the daemon's connections and splits what they bring into
//! lines, without ever blocking the test.

use std::io::{ErrorKind, Read};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

enum Socket {
    Unix(UnixListener, PathBuf),
    Tcp(TcpListener),
}

enum Conn {
    Unix(UnixStream),
    Tcp(TcpStream, SocketAddr),
}

impl Conn {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Conn::Unix(s) => s.read(buf),
            Conn::Tcp(s, _) => s.read(buf),
        }
    }
}

/// A notification listener.
pub struct LineListener {
    socket: Socket,
    conns: Vec<Conn>,
    /// Bytes read, not yet split into lines.
    pending: Vec<u8>,
}

impl LineListener {
    /// Listens on a unix stream socket at `path` (a stale file is replaced).
    pub fn unix(path: &Path) -> LineListener {
        let _ = std::fs::remove_file(path);
        let listener = UnixListener::bind(path).expect("bind notification socket");
        listener.set_nonblocking(true).expect("non-blocking");
        LineListener::on(Socket::Unix(listener, path.to_path_buf()))
    }

    /// Listens on TCP at `addr` (`IP:PORT`).
    pub fn tcp(addr: &str) -> LineListener {
        let listener = TcpListener::bind(addr).expect("bind notification listener");
        listener.set_nonblocking(true).expect("non-blocking");
        LineListener::on(Socket::Tcp(listener))
    }

    fn on(socket: Socket) -> LineListener {
        LineListener {
            socket,
            conns: Vec::new(),
            pending: Vec::new(),
        }
    }

    /// Accepts the connections that have come, without waiting; true when
    /// the daemon is connected.
    pub fn try_accept(&mut self) -> bool {
        loop {
            let conn = match &self.socket {
                Socket::Unix(l, _) => l.accept().map(|(s, _)| {
                    s.set_nonblocking(true).expect("non-blocking");
                    Conn::Unix(s)
                }),
                Socket::Tcp(l) => l.accept().map(|(s, from)| {
                    s.set_nonblocking(true).expect("non-blocking");
                    Conn::Tcp(s, from)
                }),
            };
            match conn {
                Ok(c) => self.conns.push(c),
                Err(_) => return !self.conns.is_empty(),
            }
        }
    }

    /// The next whole line (with its '\n') within `limit`, from any of the
    /// daemon's connections.
    pub fn line_within(&mut self, limit: Duration) -> Option<String> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(end) = self.pending.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.pending.drain(..=end).collect();
                return Some(String::from_utf8(line).expect("UTF-8 notification"));
            }
            if Instant::now() >= deadline {
                return None;
            }
            self.try_accept();
            if !self.read_some() {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }

    /// Reads what the connections hold; true when something came.
    fn read_some(&mut self) -> bool {
        let mut buf = [0u8; 65536];
        let mut got = false;
        self.conns.retain_mut(|c| match c.read(&mut buf) {
            Ok(0) => false,
            Ok(n) => {
                self.pending.extend_from_slice(&buf[..n]);
                got = true;
                true
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => true,
            Err(e) => panic!("reading notifications: {e}"),
        });
        got
    }

    /// The addresses the daemon connected from (TCP), so far.
    pub fn peers(&self) -> Vec<SocketAddr> {
        self.conns
            .iter()
            .filter_map(|c| match c {
                Conn::Tcp(_, from) => Some(*from),
                Conn::Unix(_) => None,
            })
            .collect()
    }

    /// Closes the connections and the listener and removes a unix socket's
    /// file, as a listening program does when it exits; returns its path.
    pub fn close(self) -> Option<PathBuf> {
        let path = match &self.socket {
            Socket::Unix(_, p) => Some(p.clone()),
            Socket::Tcp(_) => None,
        };
        drop(self);
        if let Some(p) = &path {
            let _ = std::fs::remove_file(p);
        }
        path
    }
}
