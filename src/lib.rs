//! rtpproxy: an RTP/RTCP media relay driven by SIP proxies over the classic
//! rtpproxy control protocol.
//!
//! The modules follow the classic daemon's layout: `rtpp_command` parses
//! and executes control commands, `rtpp_session` keeps the session table,
//! `rtpp_proc` relays packets, `rtpp_control` serves the control socket,
//! `rtpp_network`/`rtpp_util` hold socket and system helpers, `rtpp_record`
//! writes recordings, `rtp_server` plays prompts, `rtp` parses RTP,
//! `rtp_resizer` re-packetizes it for the `z` modifier, `rtpp_notify` sends
//! timeout notifications, `rtpp_account` writes per-call accounting, `g711`/`wav` and the optional codec modules serve
//! `makeann` and `extractaudio`.
//!
//! The daemon's start-up is here too, so that `main.rs` keeps only its
//! order and the poll loop: `rtpp_options` turns the command line into a
//! `Config`, `rtpp_daemon` checks who may run, detaches from the shell,
//! writes the pidfile and catches the signals that end the daemon.

// Declared first: the logging macro is used by the modules below.
pub mod rtpp_log;

#[cfg(feature = "g729")]
pub mod codec_g729;
#[cfg(feature = "gsm")]
pub mod codec_gsm;
pub mod g711;
pub mod rtp;
pub mod rtp_resizer;
pub mod rtp_server;
pub mod rtpp_account;
pub mod rtpp_command;
pub mod rtpp_control;
pub mod rtpp_daemon;
pub mod rtpp_defines;
pub mod rtpp_network;
pub mod rtpp_notify;
pub mod rtpp_options;
pub mod rtpp_proc;
pub mod rtpp_record;
pub mod rtpp_session;
pub mod rtpp_util;
pub mod wav;
