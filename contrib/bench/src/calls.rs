//! `calls`: many concurrent G.711-shaped calls through the relay.
//!
//! Each call has two streams (caller to callee, callee to caller), stream
//! `2 * call + direction`. Stream `k` of `2N` sends at phase `k * 20 ms / 2N`
//! of every 20 ms period, so the load is smooth rather than a burst every
//! 20 ms. Senders own streams round-robin and sleep to absolute deadlines;
//! receivers own calls round-robin and wait on epoll. Arrival times are the
//! kernel's receive timestamps, so the latency is what the relay added, not
//! how long a busy generator took to get round to reading.

use crate::clock::{
    arrival_ns, now_ns, realtime_ns, sleep_until_ns, sleep_until_or_stop, tighten_timer_slack,
    timespec_to_ns, NS_PER_MS, NS_PER_SEC,
};
use crate::ctrl::CtrlSpec;
use crate::options::Config;
use crate::packet::{self, Probe, PACKET_LEN};
use crate::procfs;
use crate::report::{flag_saturation, GeneratorLoad, Report};
use crate::runctl::{ensure_fd_limit, stop_requested, Watchdog};
use crate::session::{set_up_calls, tear_down_calls, Call, Signalling, Teardown};
use crate::stats::{LatencyHistogram, SeqMark, SeqTracker};
use crate::usage::{self, CpuUse};
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use nix::sys::socket::{recvmsg, setsockopt, sockopt, ControlMessageOwned, MsgFlags};
use std::collections::HashSet;
use std::io::IoSliceMut;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU64, Ordering};

/// G.711 at 20 ms per packet.
const PERIOD_NS: u64 = 20 * NS_PER_MS;
const PACKETS_PER_SEC: u64 = NS_PER_SEC / PERIOD_NS;
/// A packet this far behind its deadline shows the sender is not keeping
/// up (half a period: it is about to collide with the next one).
const LATE_NS: u64 = 10 * NS_PER_MS;
/// Senders give up on packets still unsent this long after the last one
/// was due.
const SENDER_GRACE_NS: u64 = NS_PER_SEC;
/// The bitmaps of all streams must fit in this much memory.
const MAX_TRACKER_BYTES: u64 = 512 << 20;

/// The schedule every thread agrees on.
#[derive(Debug, Clone, Copy)]
struct Schedule {
    /// When cycle 0 starts.
    t0: u64,
    /// Cycles sent before measuring.
    warmup_cycles: u64,
    /// Cycles sent in total.
    total_cycles: u64,
    /// Run identifier in every probe.
    run: u32,
}

impl Schedule {
    fn measured(&self, seq: u64) -> bool {
        seq >= self.warmup_cycles && seq < self.total_cycles
    }

    fn measure_start(&self) -> u64 {
        self.t0 + self.warmup_cycles * PERIOD_NS
    }

    fn measure_end(&self) -> u64 {
        self.t0 + self.total_cycles * PERIOD_NS
    }

    fn measured_cycles(&self) -> u64 {
        self.total_cycles - self.warmup_cycles
    }
}

/// Offset of stream `stream` within the period, spreading `streams`
/// streams evenly.
fn phase_ns(stream: u64, streams: u64) -> u64 {
    if streams == 0 {
        return 0;
    }
    stream * PERIOD_NS / streams
}

/// The socket stream `stream` is sent from, and where to.
fn stream_route(calls: &[Call], stream: usize) -> (&UdpSocket, SocketAddr) {
    let call = &calls[stream / 2];
    if stream.is_multiple_of(2) {
        (&call.caller, call.caller_sends_to)
    } else {
        (&call.callee, call.callee_sends_to)
    }
}

/// The socket stream `stream` arrives on.
fn stream_sink(calls: &[Call], stream: usize) -> &UdpSocket {
    let call = &calls[stream / 2];
    if stream.is_multiple_of(2) {
        &call.callee
    } else {
        &call.caller
    }
}

struct SendSlot<'a> {
    phase: u64,
    stream: u32,
    sock: &'a UdpSocket,
    dest: SocketAddr,
    buf: [u8; PACKET_LEN],
}

#[derive(Default, Clone)]
struct SenderStats {
    expected_measured: u64,
    sent_measured: u64,
    late: u64,
    lag: LatencyHistogram,
    send_errors: u64,
}

fn plan_sender<'a>(
    calls: &'a [Call],
    sender: usize,
    senders: usize,
    run: u32,
) -> Vec<SendSlot<'a>> {
    let streams = calls.len() * 2;
    (sender..streams)
        .step_by(senders)
        .map(|stream| {
            let (sock, dest) = stream_route(calls, stream);
            let mut buf = [0u8; PACKET_LEN];
            packet::write_template(&mut buf, run, stream as u32);
            SendSlot {
                phase: phase_ns(stream as u64, streams as u64),
                stream: stream as u32,
                sock,
                dest,
                buf,
            }
        })
        .collect()
}

/// Sends every packet of `slots` on schedule; wakes at most once per
/// `tick_ns` and sends whatever is due, so thousands of streams cost a few
/// thousand wake-ups a second, not one per packet.
fn run_sender(mut slots: Vec<SendSlot>, sched: Schedule, tick_ns: u64) -> SenderStats {
    tighten_timer_slack();
    let mut stats = SenderStats {
        expected_measured: slots.len() as u64 * sched.measured_cycles(),
        ..Default::default()
    };
    let give_up_at = sched.measure_end() + SENDER_GRACE_NS;
    let mut last_wake = 0u64;
    let mut now = now_ns();
    let mut since_check = 0u32;
    'cycles: for cycle in 0..sched.total_cycles {
        let cycle_start = sched.t0 + cycle * PERIOD_NS;
        for slot in slots.iter_mut() {
            let due = cycle_start + slot.phase;
            since_check += 1;
            if due > now || since_check >= 256 {
                since_check = 0;
                if stop_requested() {
                    break 'cycles;
                }
            }
            if due > now {
                let wake = due.max(last_wake + tick_ns);
                sleep_until_ns(wake);
                last_wake = wake;
                now = now_ns();
            }
            if now >= give_up_at {
                break 'cycles;
            }
            let probe = Probe {
                stream: slot.stream,
                seq: cycle as u32,
                sent_ns: now,
            };
            packet::stamp(&mut slot.buf, &probe);
            let ok = slot.sock.send_to(&slot.buf, slot.dest).is_ok();
            if !ok {
                stats.send_errors += 1;
            }
            if sched.measured(cycle) {
                if ok {
                    stats.sent_measured += 1;
                }
                let lag = now.saturating_sub(due);
                stats.lag.record(lag);
                if lag > LATE_NS {
                    stats.late += 1;
                }
            }
            now = now_ns();
        }
    }
    stats
}

#[derive(Default)]
struct ReceiverStats {
    received_measured: u64,
    duplicates: u64,
    misrouted: u64,
    foreign: u64,
    latency: LatencyHistogram,
}

impl ReceiverStats {
    /// Accounts for one datagram that arrived on the socket of `stream`.
    fn count(
        &mut self,
        datagram: &[u8],
        stream: usize,
        tracker: &mut SeqTracker,
        sched: Schedule,
        arrived: u64,
    ) {
        let Ok(probe) = packet::decode(datagram, sched.run) else {
            self.foreign += 1;
            return;
        };
        if probe.stream as usize != stream {
            self.misrouted += 1;
            return;
        }
        let seq = u64::from(probe.seq);
        match tracker.mark(seq) {
            SeqMark::New if sched.measured(seq) => {
                self.received_measured += 1;
                self.latency.record(arrived.saturating_sub(probe.sent_ns));
            }
            SeqMark::Duplicate if sched.measured(seq) => self.duplicates += 1,
            SeqMark::OutOfRange => self.foreign += 1,
            _ => {}
        }
    }
}

/// Receives the streams of the calls `receiver`, `receiver + receivers`, ...
/// until sending is over and the drain time has passed.
fn run_receiver(
    calls: &[Call],
    receiver: usize,
    receivers: usize,
    sched: Schedule,
    sending_over_at: &AtomicU64,
    drain_ns: u64,
    poll_ns: u64,
) -> Result<ReceiverStats, String> {
    let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC).map_err(|e| format!("epoll: {e}"))?;
    let mut trackers: Vec<SeqTracker> = Vec::new();
    for call in (receiver..calls.len()).step_by(receivers) {
        for dir in 0..2 {
            let stream = call * 2 + dir;
            let sock = stream_sink(calls, stream);
            sock.set_nonblocking(true)
                .map_err(|e| format!("making a socket non-blocking: {e}"))?;
            setsockopt(sock, sockopt::ReceiveTimestampns, &true)
                .map_err(|e| format!("SO_TIMESTAMPNS: {e}"))?;
            // epoll rather than poll: its cost follows the ready sockets,
            // where poll would rescan thousands of idle ones on every wake.
            epoll
                .add(sock, EpollEvent::new(EpollFlags::EPOLLIN, stream as u64))
                .map_err(|e| format!("epoll_ctl: {e}"))?;
            trackers.push(SeqTracker::new(sched.total_cycles));
        }
    }
    let local = |stream: usize| (stream / 2 / receivers) * 2 + stream % 2;
    let hard_end = sched.measure_end() + SENDER_GRACE_NS + drain_ns + NS_PER_SEC;
    let mut stats = ReceiverStats::default();
    let mut events = vec![EpollEvent::empty(); 256];
    let mut buf = [0u8; 2048];
    // With poll_ns, look without waiting and sleep in between, so that no
    // relayed packet has a sleeping receiver to wake.
    let timeout = if poll_ns > 0 {
        EpollTimeout::ZERO
    } else {
        EpollTimeout::from(10u16)
    };
    // Bounded by hard_end: every pass waits at most 10 ms.
    loop {
        let n = match epoll.wait(&mut events, timeout) {
            Ok(n) => n,
            Err(nix::errno::Errno::EINTR) => 0,
            Err(e) => return Err(format!("epoll_wait: {e}")),
        };
        for ev in &events[..n] {
            let stream = ev.data() as usize;
            // One read per readiness: at 50 pps a socket rarely holds a
            // second datagram, and level-triggered epoll reports it again
            // if it does, so a read that would only say EAGAIN is saved.
            let Some((len, arrived)) = recv_stamped(stream_sink(calls, stream), &mut buf) else {
                continue;
            };
            stats.count(
                &buf[..len],
                stream,
                &mut trackers[local(stream)],
                sched,
                arrived,
            );
        }
        let now = now_ns();
        if poll_ns > 0 && n == 0 {
            sleep_until_ns(now + poll_ns);
        }
        let over = sending_over_at.load(Ordering::Acquire);
        if (over != 0 && now >= over + drain_ns) || now >= hard_end {
            break;
        }
    }
    Ok(stats)
}

/// Reads one datagram and when it reached the socket, on the monotonic
/// clock (the kernel's timestamp when there is one, else now).
fn recv_stamped(sock: &UdpSocket, buf: &mut [u8]) -> Option<(usize, u64)> {
    let mut cmsg = nix::cmsg_space!(nix::sys::time::TimeSpec);
    let mut iov = [IoSliceMut::new(buf)];
    let msg = recvmsg::<()>(
        sock.as_raw_fd(),
        &mut iov,
        Some(&mut cmsg),
        MsgFlags::MSG_DONTWAIT,
    )
    .ok()?;
    let (now_mono, now_real) = (now_ns(), realtime_ns());
    let mut arrived = now_mono;
    if let Ok(cmsgs) = msg.cmsgs() {
        for c in cmsgs {
            if let ControlMessageOwned::ScmTimestampns(ts) = c {
                arrived = arrival_ns(timespec_to_ns(&ts), now_mono, now_real);
            }
        }
    }
    Some((msg.bytes, arrived))
}

fn check_memory(calls: usize, total_cycles: u64) -> Result<(), String> {
    let bytes = calls as u64 * 2 * total_cycles.div_ceil(8);
    if bytes > MAX_TRACKER_BYTES {
        return Err(format!(
            "{calls} calls over {} s need {} MiB of sequence bitmaps; shorten the run or use fewer calls",
            total_cycles / PACKETS_PER_SEC,
            bytes >> 20
        ));
    }
    Ok(())
}

/// Runs `calls` with `n` calls and returns its report.
pub fn run_calls(
    cfg: &Config,
    n: usize,
    relay_pid: Option<i32>,
    run: u32,
) -> Result<Report, String> {
    let spec = cfg
        .ctrl
        .as_ref()
        .ok_or_else(|| "--ctrl is required".to_string())?;
    let total_cycles = (cfg.warmup_s + cfg.duration_s) * PACKETS_PER_SEC;
    check_memory(n, total_cycles)?;
    ensure_fd_limit(n as u64 * 2 + 256)?;
    let timeout_s = cfg.timing.timeout.as_secs() + 1;
    let setup_bound_s = (n as u64 * 2 / cfg.setup_window as u64 + 1)
        * timeout_s
        * (u64::from(cfg.timing.retries) + 1);
    let _watchdog = Watchdog::arm(
        (cfg.warmup_s + cfg.duration_s + 2 * setup_bound_s + 60) * NS_PER_SEC,
        format!("calls run with {n} calls"),
    );
    let sig = Signalling {
        spec,
        relay_addr: cfg.relay_addr.unwrap_or_else(|| spec.media_host()),
        window: cfg.setup_window,
        timing: cfg.timing,
        run,
    };
    let background = usage::background_load();
    let setup_start = now_ns();
    let calls = set_up_calls(&sig, n)?;
    let setup_s = (now_ns() - setup_start) as f64 / 1e9;

    let sched = Schedule {
        // A short lead so every thread is waiting before the first packet.
        t0: now_ns() + 100 * NS_PER_MS,
        warmup_cycles: cfg.warmup_s * PACKETS_PER_SEC,
        total_cycles,
        run,
    };
    let traffic = drive_traffic(cfg, &calls, sched, relay_pid);
    // Read before tear-down: the counters vanish with the sockets.
    let (relay_ports, generator_ports) = ports_of(&calls);
    let relay_drops = procfs::read_udp_drops(&relay_ports);
    let generator_drops = procfs::read_udp_drops(&generator_ports);
    let teardown = tear_down_calls(&sig, calls);
    let outcome = CallsRun {
        background,
        calls: n,
        setup_s,
        traffic: traffic?,
        relay_drops,
        generator_drops,
        teardown,
    };
    Ok(calls_report(cfg, spec, &outcome, relay_pid))
}

/// What one `calls` run gathered, before it is turned into a report.
struct CallsRun {
    background: Option<f64>,
    calls: usize,
    setup_s: f64,
    traffic: Traffic,
    relay_drops: u64,
    generator_drops: u64,
    teardown: Teardown,
}

fn calls_report(cfg: &Config, spec: &CtrlSpec, run: &CallsRun, relay_pid: Option<i32>) -> Report {
    let traffic = &run.traffic;
    let mut report = Report::new(
        "calls",
        format!(
            "calls: {} calls via {spec}, {} s measured after {} s warm-up{}",
            run.calls,
            cfg.duration_s,
            cfg.warmup_s,
            label_suffix(&cfg.label)
        ),
    );
    report.text("label", "relay under test", &cfg.label);
    report.text("ctrl", "control socket", &spec.to_string());
    report.int("calls", "calls", run.calls as u64, "");
    report.int("duration_s", "measured seconds", cfg.duration_s, "s");
    report.int("warmup_s", "warm-up seconds", cfg.warmup_s, "s");
    report.int(
        "rx_poll_us",
        "receivers look every (0: sleep until a packet)",
        cfg.rx_poll_us,
        "us",
    );
    report.float(
        "setup_s",
        "set-up time (Us + Ls)",
        Some(run.setup_s),
        3,
        "s",
    );
    add_traffic_rows(&mut report, traffic, run.calls, cfg.duration_s);
    report.int(
        "relay_queue_drops",
        "dropped by relay socket queues (whole run)",
        run.relay_drops,
        "pkts",
    );
    report.int(
        "generator_queue_drops",
        "dropped by generator socket queues (whole run)",
        run.generator_drops,
        "pkts",
    );
    usage::add_rows(&mut report, &traffic.cpu, Some(traffic.received), relay_pid);
    usage::add_background_row(&mut report, run.background);
    usage::add_disturbance_rows(&mut report, &traffic.cpu);
    report.int("deleted", "sessions deleted (D)", run.teardown.deleted, "");
    report.int("delete_failed", "deletes failed", run.teardown.failed, "");
    let load = GeneratorLoad {
        cpu_cores: traffic.cpu.generator_cores,
        cpus_busy: traffic.cpu.generator_cpus_busy,
        allowed_cpus: procfs::allowed_cpus(),
        unsent: traffic.expected.saturating_sub(traffic.sent),
        late: traffic.late,
        sent: traffic.sent,
        receive_drops: run.generator_drops,
    };
    // A cut-short window says nothing about saturation.
    if traffic.interrupted {
        report.warn(
            "INTERRUPTED: the run was stopped early; the figures cover a partial window".into(),
        );
    } else {
        flag_saturation(&mut report, &load);
    }
    usage::check_relay_alive(&mut report, relay_pid);
    if run.teardown.failed > 0 {
        report.warn(format!(
            "{} sessions could not be deleted",
            run.teardown.failed
        ));
    }
    report
}

/// A label for titles: empty, or " [label]".
pub fn label_suffix(label: &str) -> String {
    if label.is_empty() {
        String::new()
    } else {
        format!(" [{label}]")
    }
}

fn ports_of(calls: &[Call]) -> (HashSet<u16>, HashSet<u16>) {
    let mut relay = HashSet::new();
    let mut generator = HashSet::new();
    for c in calls {
        relay.insert(c.caller_sends_to.port());
        relay.insert(c.callee_sends_to.port());
        for sock in [&c.caller, &c.callee] {
            if let Ok(a) = sock.local_addr() {
                generator.insert(a.port());
            }
        }
    }
    (relay, generator)
}

struct Traffic {
    expected: u64,
    sent: u64,
    received: u64,
    duplicates: u64,
    misrouted: u64,
    foreign: u64,
    late: u64,
    lag: LatencyHistogram,
    send_errors: u64,
    latency: LatencyHistogram,
    cpu: CpuUse,
    interrupted: bool,
}

/// Starts the receivers and senders, samples CPU at the edges of the
/// measured window, and gathers what every thread counted.
fn drive_traffic(
    cfg: &Config,
    calls: &[Call],
    sched: Schedule,
    relay_pid: Option<i32>,
) -> Result<Traffic, String> {
    let senders = cfg.senders.min(calls.len() * 2).max(1);
    let receivers = cfg.receivers.min(calls.len()).max(1);
    let tick_ns = cfg.tick_us * 1_000;
    let drain_ns = cfg.drain_ms * NS_PER_MS;
    let rx_poll_ns = cfg.rx_poll_us * 1_000;
    let sending_over_at = AtomicU64::new(0);
    std::thread::scope(|scope| {
        let rx: Vec<_> = (0..receivers)
            .map(|r| {
                let over = &sending_over_at;
                scope.spawn(move || {
                    run_receiver(calls, r, receivers, sched, over, drain_ns, rx_poll_ns)
                })
            })
            .collect();
        let tx: Vec<_> = (0..senders)
            .map(|s| {
                let slots = plan_sender(calls, s, senders, sched.run);
                scope.spawn(move || run_sender(slots, sched, tick_ns))
            })
            .collect();

        let stop = || stop_requested();
        let mut interrupted = !sleep_until_or_stop(sched.measure_start(), &stop);
        let start = usage::sample(relay_pid);
        interrupted |= !sleep_until_or_stop(sched.measure_end(), &stop);
        let end = usage::sample(relay_pid);

        let mut sent = SenderStats::default();
        for handle in tx {
            let s = handle
                .join()
                .map_err(|_| "a sender thread panicked".to_string())?;
            sent.expected_measured += s.expected_measured;
            sent.sent_measured += s.sent_measured;
            sent.late += s.late;
            sent.lag.merge(&s.lag);
            sent.send_errors += s.send_errors;
        }
        sending_over_at.store(now_ns(), Ordering::Release);
        let mut got = ReceiverStats::default();
        for handle in rx {
            let r = handle
                .join()
                .map_err(|_| "a receiver thread panicked".to_string())??;
            got.received_measured += r.received_measured;
            got.duplicates += r.duplicates;
            got.misrouted += r.misrouted;
            got.foreign += r.foreign;
            got.latency.merge(&r.latency);
        }
        Ok(Traffic {
            expected: sent.expected_measured,
            sent: sent.sent_measured,
            received: got.received_measured,
            duplicates: got.duplicates,
            misrouted: got.misrouted,
            foreign: got.foreign,
            late: sent.late,
            lag: sent.lag,
            send_errors: sent.send_errors,
            latency: got.latency,
            cpu: usage::between(&start, &end),
            interrupted: interrupted || stop_requested(),
        })
    })
}

fn us(ns: Option<u64>) -> Option<f64> {
    ns.map(|v| v as f64 / 1_000.0)
}

fn add_traffic_rows(report: &mut Report, t: &Traffic, calls: usize, duration_s: u64) {
    report.int(
        "expected",
        "packets due (both directions)",
        t.expected,
        "pkts",
    );
    report.int("sent", "packets sent", t.sent, "pkts");
    report.int("received", "packets received", t.received, "pkts");
    let lost = t.sent.saturating_sub(t.received);
    report.int("lost", "packets lost", lost, "pkts");
    let loss_pct = (t.sent > 0).then(|| 100.0 * lost as f64 / t.sent as f64);
    report.float("loss_pct", "loss", loss_pct, 4, "%");
    report.int("duplicates", "duplicates", t.duplicates, "pkts");
    report.int(
        "misrouted",
        "arrived at the wrong party",
        t.misrouted,
        "pkts",
    );
    report.int("foreign", "unrecognised datagrams", t.foreign, "pkts");
    report.int("send_errors", "send errors", t.send_errors, "");
    let relayed_pps = t.received as f64 / duration_s.max(1) as f64;
    report.float(
        "relayed_pps",
        "relayed packets per second",
        Some(relayed_pps),
        0,
        "pps",
    );
    report.float(
        "offered_pps",
        "offered packets per second (nominal)",
        Some((calls as u64 * 2 * PACKETS_PER_SEC) as f64),
        0,
        "pps",
    );
    report.float(
        "latency_p50_us",
        "one-way latency p50",
        us(t.latency.percentile(50.0)),
        1,
        "us",
    );
    report.float(
        "latency_p99_us",
        "one-way latency p99",
        us(t.latency.percentile(99.0)),
        1,
        "us",
    );
    report.float(
        "latency_max_us",
        "one-way latency max",
        us(t.latency.max()),
        1,
        "us",
    );
    report.float(
        "latency_mean_us",
        "one-way latency mean",
        t.latency.mean().map(|v| v / 1e3),
        1,
        "us",
    );
    report.float(
        "send_lag_p99_us",
        "sender lag behind schedule, p99",
        us(t.lag.percentile(99.0)),
        1,
        "us",
    );
    report.float(
        "send_lag_max_us",
        "sender lag behind schedule, max",
        us(t.lag.max()),
        1,
        "us",
    );
    report.int("late_sends", "packets sent >10 ms late", t.late, "pkts");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_spread_over_the_period() {
        assert_eq!(phase_ns(0, 4), 0);
        assert_eq!(phase_ns(1, 4), 5 * NS_PER_MS);
        assert_eq!(phase_ns(3, 4), 15 * NS_PER_MS);
        assert!(phase_ns(1999, 2000) < PERIOD_NS);
        assert_eq!(phase_ns(0, 0), 0);
    }

    #[test]
    fn measured_window_excludes_warmup() {
        let s = Schedule {
            t0: 1_000,
            warmup_cycles: 150,
            total_cycles: 1150,
            run: 1,
        };
        assert!(!s.measured(149));
        assert!(s.measured(150));
        assert!(s.measured(1149));
        assert!(!s.measured(1150));
        assert_eq!(s.measured_cycles(), 1000);
        assert_eq!(s.measure_end() - s.measure_start(), 20 * NS_PER_SEC);
    }

    #[test]
    fn huge_runs_are_refused_up_front() {
        assert!(check_memory(500, 1150).is_ok());
        assert!(check_memory(20_000, 3_600 * 50 * 4).is_err());
    }
}
