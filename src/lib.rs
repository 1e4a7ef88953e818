//! rtpproxy: an RTP/RTCP media relay driven by SIP proxies over the classic
//! rtpproxy control protocol.
