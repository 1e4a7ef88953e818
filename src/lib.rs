//! rtpproxy: an RTP/RTCP media relay driven by SIP proxies over the classic
//! rtpproxy control protocol.

pub mod rtpp_log;

pub mod rtp;
pub mod rtpp_command;
pub mod rtpp_control;
pub mod rtpp_defines;
pub mod rtpp_network;
pub mod rtpp_proc;
pub mod rtpp_session;
pub mod rtpp_util;
