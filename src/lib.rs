//! rtpproxy: an RTP/RTCP media relay driven by SIP proxies over the classic
//! rtpproxy control protocol (doc/PROTOCOL.md).
//!
//! The modules follow the classic daemon's layout; doc/MODULES.md has one
//! line per module. In short: `rtpp_options` turns the command line into a
//! `Config`, `rtpp_daemon` runs the daemon's life (background, pidfile,
//! signals, privileges), `rtpp_state` is the daemon-wide state `main`
//! owns, `rtpp_poll` the poll sets and who owns each entry,
//! `rtpp_control` the control sockets, `rtpp_command` parses and executes
//! commands, `rtpp_session` keeps the session table and each session's
//! life, `rtpp_proc` relays packets, `rtpp_network`/`rtpp_util` hold
//! socket and system helpers, `rtpp_record` writes recordings,
//! `rtpp_record_reader` reads them back for `extractaudio`, `rtpp_copy`
//! sends the remote copies of `C`, `rtp_server` plays prompts, `rtp`
//! parses RTP, `rtp_resizer` re-packetizes it for the `z` modifier,
//! `rtpp_analyzer` counts what each party sends by sequence number,
//! `rtpp_dtmf` catches telephone-events, `rtpp_quality` measures each
//! direction's call quality (with `rtpp_rtcp` reading RTCP and `rtpp_mos`
//! scoring it), `rtpp_notify` sends timeout and DTMF notifications,
//! `rtpp_account` writes per-call accounting, `rtpp_hep` sends quality
//! reports and RTCP to a Homer collector, `rtpp_metrics` serves the
//! Prometheus metrics, `rtpp_handover` hands the running state to a new
//! process (SIGUSR2), and
//! `g711`/`wav` and the optional codec modules serve `makeann` and
//! `extractaudio`.

// Declared first: the logging macro is used by the modules below.
pub mod rtpp_log;

#[cfg(feature = "g729")]
pub mod codec_g729;
#[cfg(feature = "gsm")]
pub mod codec_gsm;
pub mod g711;
pub mod rtp;
pub mod rtp_resizer;
pub(crate) mod rtp_server;
pub mod rtpp_account;
pub mod rtpp_analyzer;
pub mod rtpp_command;
pub mod rtpp_control;
pub(crate) mod rtpp_copy;
pub mod rtpp_daemon;
pub mod rtpp_defines;
pub mod rtpp_dtmf;
pub mod rtpp_handover;
pub mod rtpp_hep;
pub mod rtpp_metrics;
pub mod rtpp_mos;
pub mod rtpp_network;
pub mod rtpp_notify;
pub mod rtpp_options;
pub mod rtpp_pacing;
pub mod rtpp_poll;
pub mod rtpp_proc;
pub mod rtpp_quality;
pub mod rtpp_record;
pub mod rtpp_record_reader;
pub mod rtpp_rtcp;
pub mod rtpp_session;
pub mod rtpp_state;
pub mod rtpp_util;
pub mod wav;

#[cfg(test)]
mod test_support;
