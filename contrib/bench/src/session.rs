//! Setting calls up on the relay (`Us` then `Ls`) and tearing them down
//! (`D`), with the sockets of both parties.

use crate::ctrl::{
    delete_command, lookup_command, parse_ok_reply, parse_port_reply, require_loopback,
    run_pipelined, update_command, CtrlError, CtrlSpec, CtrlTiming, PortReply,
};
use crate::runctl::bind_loopback_udp;
use std::net::{IpAddr, SocketAddr, UdpSocket};

/// One call through the relay: the two parties' sockets and where each
/// must send so the relay forwards to the other.
pub struct Call {
    /// The Call-ID.
    pub call_id: String,
    /// The caller's tag (without the media number).
    pub from_tag: String,
    /// The callee's tag (without the media number).
    pub to_tag: String,
    /// The caller's socket; its address is what `Us` signals.
    pub caller: UdpSocket,
    /// The callee's socket; its address is what `Ls` signals.
    pub callee: UdpSocket,
    /// Relay port the caller sends to (the `Ls` answer).
    pub caller_sends_to: SocketAddr,
    /// Relay port the callee sends to (the `Us` answer).
    pub callee_sends_to: SocketAddr,
}

/// How to reach the relay for set-up and tear-down.
pub struct Signalling<'a> {
    /// The control socket.
    pub spec: &'a CtrlSpec,
    /// Media address used when a reply names none.
    pub relay_addr: IpAddr,
    /// Requests in flight at once.
    pub window: usize,
    /// Reply timeout and resends.
    pub timing: CtrlTiming,
    /// Distinguishes this run's Call-IDs and cookies.
    pub run: u32,
}

struct Parties {
    caller: UdpSocket,
    callee: UdpSocket,
}

fn open_parties(n: usize) -> Result<Vec<Parties>, String> {
    (0..n)
        .map(|_| {
            Ok(Parties {
                caller: bind_loopback_udp()?,
                callee: bind_loopback_udp()?,
            })
        })
        .collect()
}

fn local_port(sock: &UdpSocket) -> Result<u16, String> {
    sock.local_addr()
        .map(|a| a.port())
        .map_err(|e| format!("reading a socket address: {e}"))
}

/// Where media for a reply goes: the reply's address, else the default;
/// never off the machine, and IPv4 because the parties are.
fn media_destination(reply: &PortReply, default: IpAddr) -> Result<SocketAddr, String> {
    let ip = reply.addr.unwrap_or(default);
    require_loopback(ip, "relay media address")?;
    if !ip.is_ipv4() {
        return Err(format!(
            "relay media address {ip} is IPv6; the generator's parties are IPv4 (use -l 127.0.0.1)"
        ));
    }
    if reply.port == 0 {
        return Err("relay answered port 0 (session not found)".into());
    }
    Ok(SocketAddr::new(ip, reply.port))
}

fn describe_failure(what: &str, index: usize, err: &CtrlError) -> String {
    let hint = match err {
        CtrlError::Relay(code) if code == "E10" || code == "E7" => {
            " (the relay ran out of ports: widen its -m/-M range)"
        }
        CtrlError::Timeout => " (is the relay running and is --ctrl right?)",
        _ => "",
    };
    format!("{what} of call {index} failed: {err}{hint}")
}

/// Opens both parties of `n` calls and signals them; on any failure the
/// calls already created are deleted again and the first error returned.
pub fn set_up_calls(sig: &Signalling, n: usize) -> Result<Vec<Call>, String> {
    let parties = open_parties(n)?;
    let ids: Vec<(String, String, String)> = (0..n)
        .map(|i| {
            (
                format!("rtppb-{:08x}-{i}", sig.run),
                format!("f{i}"),
                format!("t{i}"),
            )
        })
        .collect();
    let tag = format!("{:x}", sig.run);
    let localhost: IpAddr = std::net::Ipv4Addr::LOCALHOST.into();

    let callee_dests = signal_updates(sig, &ids, &parties)?;
    let mut failure = None;

    let mut lookups = Vec::with_capacity(n);
    for ((call_id, from_tag, to_tag), p) in ids.iter().zip(&parties) {
        lookups.push(lookup_command(
            call_id,
            localhost,
            local_port(&p.callee)?,
            from_tag,
            to_tag,
        ));
    }
    let lookup_replies = run_pipelined(
        sig.spec,
        &format!("{tag}l"),
        &lookups,
        sig.window,
        sig.timing,
    )?;
    let mut calls = Vec::with_capacity(n);
    for (i, ((reply, (call_id, from_tag, to_tag)), (p, callee_dest))) in lookup_replies
        .iter()
        .zip(ids.iter().cloned())
        .zip(parties.into_iter().zip(callee_dests))
        .enumerate()
    {
        let dest = reply
            .as_ref()
            .map_err(|e| describe_failure("Ls", i, e))
            .and_then(|body| parse_port_reply(body).map_err(|e| describe_failure("Ls", i, &e)))
            .and_then(|r| media_destination(&r, sig.relay_addr));
        match (dest, callee_dest) {
            (Ok(caller_sends_to), Some(callee_sends_to)) => calls.push(Call {
                call_id,
                from_tag,
                to_tag,
                caller: p.caller,
                callee: p.callee,
                caller_sends_to,
                callee_sends_to,
            }),
            (Err(e), _) => {
                failure.get_or_insert(e);
            }
            (Ok(_), None) => {
                failure.get_or_insert(format!("call {i} lost its Us answer"));
            }
        }
    }
    if let Some(e) = failure {
        delete_by_ids(sig, &ids);
        return Err(e);
    }
    Ok(calls)
}

/// Sends `Us` for every call: where each callee must send, or the first
/// error after deleting whatever was created.
fn signal_updates(
    sig: &Signalling,
    ids: &[(String, String, String)],
    parties: &[Parties],
) -> Result<Vec<Option<SocketAddr>>, String> {
    let n = ids.len();
    let tag = format!("{:x}", sig.run);
    let localhost: IpAddr = std::net::Ipv4Addr::LOCALHOST.into();
    let mut updates = Vec::with_capacity(n);
    for ((call_id, from_tag, _), p) in ids.iter().zip(parties) {
        updates.push(update_command(
            call_id,
            localhost,
            local_port(&p.caller)?,
            from_tag,
        ));
    }
    let update_replies = run_pipelined(
        sig.spec,
        &format!("{tag}u"),
        &updates,
        sig.window,
        sig.timing,
    )?;
    let mut callee_dests = Vec::with_capacity(n);
    let mut failure = None;
    for (i, reply) in update_replies.iter().enumerate() {
        let dest = reply
            .as_ref()
            .map_err(|e| describe_failure("Us", i, e))
            .and_then(|body| parse_port_reply(body).map_err(|e| describe_failure("Us", i, &e)))
            .and_then(|r| media_destination(&r, sig.relay_addr));
        match dest {
            Ok(d) => callee_dests.push(Some(d)),
            Err(e) => {
                failure.get_or_insert(e);
                callee_dests.push(None);
            }
        }
    }
    if let Some(e) = failure {
        // A timed-out U may still have created a session: delete them all.
        delete_by_ids(sig, ids);
        return Err(e);
    }
    Ok(callee_dests)
}

fn delete_by_ids(sig: &Signalling, ids: &[(String, String, String)]) {
    let deletes: Vec<String> = ids
        .iter()
        .map(|(c, f, t)| delete_command(c, f, t))
        .collect();
    let tag = format!("{:x}x", sig.run);
    // Best effort on a path that is already failing; the error that got
    // us here is the one worth reporting.
    let _ = run_pipelined(sig.spec, &tag, &deletes, sig.window, sig.timing);
}

/// How the tear-down went.
#[derive(Debug, Default, Clone, Copy)]
pub struct Teardown {
    /// `D` answered 0.
    pub deleted: u64,
    /// `D` answered an error or nothing.
    pub failed: u64,
}

/// Deletes every call (`D`) and closes its sockets.
pub fn tear_down_calls(sig: &Signalling, calls: Vec<Call>) -> Teardown {
    let deletes: Vec<String> = calls
        .iter()
        .map(|c| delete_command(&c.call_id, &c.from_tag, &c.to_tag))
        .collect();
    drop(calls);
    let tag = format!("{:x}d", sig.run);
    let mut result = Teardown::default();
    match run_pipelined(sig.spec, &tag, &deletes, sig.window, sig.timing) {
        Ok(replies) => {
            for reply in replies {
                match reply.and_then(|body| parse_ok_reply(&body)) {
                    Ok(()) => result.deleted += 1,
                    Err(_) => result.failed += 1,
                }
            }
        }
        Err(_) => result.failed = deletes.len() as u64,
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reply_address_wins_over_default() {
        let reply = PortReply {
            port: 30000,
            addr: Some("127.0.0.2".parse().unwrap()),
        };
        let d = media_destination(&reply, "127.0.0.1".parse().unwrap()).unwrap();
        assert_eq!(d, "127.0.0.2:30000".parse().unwrap());
        let bare = PortReply {
            port: 30002,
            addr: None,
        };
        let d = media_destination(&bare, "127.0.0.1".parse().unwrap()).unwrap();
        assert_eq!(d, "127.0.0.1:30002".parse().unwrap());
    }

    #[test]
    fn foreign_or_unusable_media_addresses_are_refused() {
        let default: IpAddr = "127.0.0.1".parse().unwrap();
        let far = PortReply {
            port: 30000,
            addr: Some("192.0.2.1".parse().unwrap()),
        };
        assert!(media_destination(&far, default).is_err());
        let v6 = PortReply {
            port: 30000,
            addr: Some("::1".parse().unwrap()),
        };
        assert!(media_destination(&v6, default).is_err());
        let none = PortReply {
            port: 0,
            addr: None,
        };
        assert!(media_destination(&none, default).is_err());
    }

    #[test]
    fn running_out_of_ports_says_so() {
        let msg = describe_failure("Us", 1250, &CtrlError::Relay("E10".into()));
        assert!(msg.contains("-m/-M"));
    }
}
