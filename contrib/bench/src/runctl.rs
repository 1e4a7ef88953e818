//! What bounds a run: early stop on SIGINT/SIGTERM, a hard deadline that
//! ends the process even if something hangs, and the resources a run needs.

use crate::clock::{now_ns, sleep_until_ns, NS_PER_MS};
use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn request_stop(_signal: nix::libc::c_int) {
    // Only an atomic store: the one thing a signal handler may safely do
    // here.
    STOP.store(true, Ordering::SeqCst);
}

/// Makes SIGINT and SIGTERM end the measurement early instead of killing
/// the harness, so the sessions are still deleted and sockets closed.
pub fn install_stop_handlers() -> Result<(), String> {
    let action = SigAction::new(
        SigHandler::Handler(request_stop),
        SaFlags::empty(),
        SigSet::empty(),
    );
    for signal in [Signal::SIGINT, Signal::SIGTERM] {
        // SAFETY: the handler only stores to an atomic, which is
        // async-signal-safe, and it replaces no handler anyone relies on.
        unsafe { sigaction(signal, &action) }
            .map_err(|e| format!("installing {signal} handler: {e}"))?;
    }
    Ok(())
}

/// Whether a signal asked the run to end.
pub fn stop_requested() -> bool {
    STOP.load(Ordering::Relaxed)
}

/// Ends the process if the run is still going at its hard deadline; the
/// relay's session timeout then removes whatever was left.
pub struct Watchdog {
    done: Arc<AtomicBool>,
}

impl Watchdog {
    /// Arms a deadline `limit_ns` from now for the run called `what`.
    pub fn arm(limit_ns: u64, what: String) -> Watchdog {
        let done = Arc::new(AtomicBool::new(false));
        let seen = Arc::clone(&done);
        let deadline = now_ns().saturating_add(limit_ns);
        std::thread::spawn(move || {
            // Wakes every 100 ms until disarmed or the deadline passes.
            while now_ns() < deadline {
                if seen.load(Ordering::Relaxed) {
                    return;
                }
                sleep_until_ns((now_ns() + 100 * NS_PER_MS).min(deadline));
            }
            if !seen.load(Ordering::Relaxed) {
                eprintln!(
                    "rtpp_bench: {what} passed its hard deadline of {} s; exiting \
                     (sessions left behind expire by the relay's TTL)",
                    limit_ns / 1_000_000_000
                );
                std::process::exit(3);
            }
        });
        Watchdog { done }
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.done.store(true, Ordering::Relaxed);
    }
}

/// A number that tells this run's packets and Call-IDs from any other's.
pub fn new_run_id() -> u32 {
    let t = now_ns();
    let pid = u64::from(std::process::id());
    let mixed = (t ^ (pid << 32) ^ (pid.wrapping_mul(0x9E37_79B9_7F4A_7C15)))
        .wrapping_mul(0xBF58_476D_1CE4_E5B9);
    (mixed >> 32) as u32 ^ mixed as u32
}

/// Raises the soft open-file limit to the hard one when `needed` files
/// would not fit: two sockets per call add up quickly.
pub fn ensure_fd_limit(needed: u64) -> Result<(), String> {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (soft, hard) =
        getrlimit(Resource::RLIMIT_NOFILE).map_err(|e| format!("reading RLIMIT_NOFILE: {e}"))?;
    if soft >= needed {
        return Ok(());
    }
    if hard < needed {
        return Err(format!(
            "this run needs about {needed} open files but the hard limit is {hard}; raise it (ulimit -Hn)"
        ));
    }
    setrlimit(Resource::RLIMIT_NOFILE, hard, hard)
        .map_err(|e| format!("raising RLIMIT_NOFILE: {e}"))
}

/// A UDP socket on an ephemeral loopback port: the only kind of media
/// socket the harness opens.
pub fn bind_loopback_udp() -> Result<UdpSocket, String> {
    let any_port: SocketAddr = (Ipv4Addr::LOCALHOST, 0).into();
    UdpSocket::bind(any_port).map_err(|e| format!("binding a loopback UDP socket: {e}"))
}

/// Makes a socket's receive queue as large as the kernel allows, so a
/// burst is absorbed by the generator instead of dropped there.
pub fn enlarge_receive_buffer(sock: &UdpSocket, bytes: usize) {
    use nix::sys::socket::{setsockopt, sockopt};
    // RcvBufForce passes net.core.rmem_max when running as root; otherwise
    // the plain option is capped at rmem_max. Either way a failure only
    // leaves the default size, which the drop counters then reveal.
    if setsockopt(sock, sockopt::RcvBufForce, &bytes).is_err() {
        let _ = setsockopt(sock, sockopt::RcvBuf, &bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_ids_differ() {
        let a = new_run_id();
        std::thread::sleep(std::time::Duration::from_millis(1));
        assert_ne!(a, new_run_id());
    }

    #[test]
    fn fd_limit_already_met_is_fine() {
        assert!(ensure_fd_limit(16).is_ok());
        assert!(ensure_fd_limit(u64::MAX).is_err());
    }

    #[test]
    fn loopback_socket_is_loopback() {
        let s = bind_loopback_udp().unwrap();
        assert!(s.local_addr().unwrap().ip().is_loopback());
    }
}
