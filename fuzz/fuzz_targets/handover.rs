//! The hand-over state decoder (`rtpp_handover::state::decode`): a new
//! process must never trust the old one's bytes blindly. Arbitrary bytes,
//! with a few real descriptors beside them, must give a state or a
//! refusal, never a panic, a hang or an allocation the bytes did not pay
//! for. The descriptors are those the seed `one-session`
//! (`fuzz/make_corpus.py`) names: UDP sockets on 127.0.0.1:21960 and
//! 21961, a UDP socket, a TCP listener on 127.0.0.1:21962, a regular file;
//! the ports are the target's reserved ones (tests/common/mod.rs).
#![no_main]

use std::net::{TcpListener, UdpSocket};
use std::os::fd::{BorrowedFd, IntoRawFd, OwnedFd, RawFd};
use std::sync::OnceLock;
use std::time::Instant;

use libfuzzer_sys::fuzz_target;
use rtpproxy::rtpp_defines::Config;
use rtpproxy::rtpp_handover::state::decode;

/// Media ports reserved for this target (tests/common/mod.rs, RESERVED).
const PORT_MIN: u16 = 21960;
const PORT_MAX: u16 = 21999;

/// The descriptors each input may name, opened once; every run gets dups.
fn originals() -> &'static Vec<RawFd> {
    static FDS: OnceLock<Vec<RawFd>> = OnceLock::new();
    FDS.get_or_init(|| {
        let mut fds = Vec::new();
        for port in [PORT_MIN, PORT_MIN + 1] {
            if let Ok(s) = UdpSocket::bind(("127.0.0.1", port)) {
                fds.push(OwnedFd::from(s));
            }
        }
        if let Ok(s) = UdpSocket::bind("127.0.0.1:0") {
            fds.push(OwnedFd::from(s));
        }
        if let Ok(l) = TcpListener::bind(("127.0.0.1", PORT_MIN + 2)) {
            fds.push(OwnedFd::from(l));
        }
        let acct = std::env::temp_dir().join("rtpp-fuzz-handover.acct");
        if let Ok(f) = std::fs::File::create(acct) {
            fds.push(OwnedFd::from(f));
        }
        // Kept open for the whole run: only their numbers are kept.
        fds.into_iter().map(IntoRawFd::into_raw_fd).collect()
    })
}

fuzz_target!(|data: &[u8]| {
    let cfg = Config {
        port_min: PORT_MIN,
        port_max: PORT_MAX,
        ..Config::default()
    };
    let fds: Vec<OwnedFd> = originals()
        .iter()
        // SAFETY: the originals stay open for the whole run.
        .filter_map(|&fd| unsafe { BorrowedFd::borrow_raw(fd) }.try_clone_to_owned().ok())
        .collect();
    // Whatever comes back is dropped: a decoded state acts on nothing
    // until it is adopted.
    let _ = decode(data, fds, &cfg, Instant::now());
});
