//! `calls`: many concurrent G.711-shaped calls through the relay.
//!
//! Each call has two streams (caller to callee, callee to caller), stream
//! `2 * call + direction`. Stream `k` of `2N` sends at phase `k * P / 2N`
//! of every packet period P (`--ptime`, 20 ms by default), so the load is
//! smooth rather than a burst every period. Senders own streams
//! round-robin and sleep to absolute deadlines; receivers own calls
//! round-robin and wait on epoll. Arrival times are the kernel's receive
//! timestamps, so the latency is what the relay added, not how long a busy
//! generator took to get round to reading.
//!
//! With `--silence EVERY:LENGTH` each stream holds back the packets due
//! during a silence of LENGTH ms once every EVERY ms and sends them back to
//! back when the silence ends, just before the packet due then; stream `k`'s
//! silences are shifted by `k * EVERY / 2N`, so the bursts of different
//! streams spread over the period.

use crate::clock::{
    arrival_ns, now_ns, realtime_ns, sleep_until_ns, sleep_until_or_stop, tighten_timer_slack,
    timespec_to_ns, NS_PER_MS, NS_PER_SEC,
};
use crate::ctrl::CtrlSpec;
use crate::options::Config;
use crate::packet::{self, Burst, Probe};
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

/// Senders give up on packets still unsent this long after the last one
/// was due.
const SENDER_GRACE_NS: u64 = NS_PER_SEC;
/// The bitmaps of all streams must fit in this much memory.
const MAX_TRACKER_BYTES: u64 = 512 << 20;

/// The silences of every stream, in packet periods.
#[derive(Debug, Clone, Copy)]
struct SilenceCycles {
    /// Length of one silence-and-speech cycle.
    every: u64,
    /// Periods of silence at the end of each cycle.
    silent: u64,
}

/// The schedule every thread agrees on.
#[derive(Debug, Clone, Copy)]
struct Schedule {
    /// When cycle 0 starts.
    t0: u64,
    /// Time between two packets of a stream.
    period_ns: u64,
    /// Cycles sent before measuring.
    warmup_cycles: u64,
    /// Cycles sent in total.
    total_cycles: u64,
    /// Streams in the run (two per active call).
    streams: u64,
    /// Silences and bursts, if any.
    silence: Option<SilenceCycles>,
    /// Length of every packet.
    packet_len: usize,
    /// Run identifier in every probe.
    run: u32,
}

impl Schedule {
    fn measured(&self, seq: u64) -> bool {
        seq >= self.warmup_cycles && seq < self.total_cycles
    }

    fn measure_start(&self) -> u64 {
        self.t0 + self.warmup_cycles * self.period_ns
    }

    fn measure_end(&self) -> u64 {
        self.t0 + self.total_cycles * self.period_ns
    }

    fn measured_cycles(&self) -> u64 {
        self.total_cycles - self.warmup_cycles
    }

    /// Whether stream `stream` holds back its packet of `cycle`.
    fn silent(&self, stream: u64, cycle: u64) -> bool {
        let Some(s) = self.silence else {
            return false;
        };
        // Shifted per stream so the bursts of all streams do not coincide.
        let offset = stream * s.every / self.streams.max(1);
        (cycle + offset) % s.every >= s.every - s.silent
    }

    /// A packet this far behind its deadline shows the sender is not
    /// keeping up: half a period, about to collide with the next one.
    fn late_ns(&self) -> u64 {
        self.period_ns / 2
    }
}

/// Offset of stream `stream` within the period, spreading `streams`
/// streams evenly.
fn phase_ns(stream: u64, streams: u64, period_ns: u64) -> u64 {
    if streams == 0 {
        return 0;
    }
    stream * period_ns / streams
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
    buf: Vec<u8>,
    /// The first cycle of a silence in progress: its packets are owed.
    held_from: Option<u64>,
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
    sched: &Schedule,
) -> Vec<SendSlot<'a>> {
    let streams = calls.len() * 2;
    (sender..streams)
        .step_by(senders)
        .map(|stream| {
            let (sock, dest) = stream_route(calls, stream);
            let mut buf = vec![0u8; sched.packet_len];
            packet::write_template(&mut buf, sched.run, stream as u32);
            SendSlot {
                phase: phase_ns(stream as u64, streams as u64, sched.period_ns),
                stream: stream as u32,
                sock,
                dest,
                buf,
                held_from: None,
            }
        })
        .collect()
}

/// Sends packet `seq` of `slot` now; `due` is its deadline when it goes
/// out on schedule, `None` for the owed packets of a burst, which are late
/// on purpose and would only blur the sender's lag figures.
fn send_packet(
    slot: &mut SendSlot,
    seq: u64,
    burst: Burst,
    due: Option<u64>,
    sched: &Schedule,
    stats: &mut SenderStats,
) {
    let now = now_ns();
    let probe = Probe {
        stream: slot.stream,
        seq: seq as u32,
        sent_ns: now,
        burst,
    };
    packet::stamp(&mut slot.buf, &probe);
    let ok = slot.sock.send_to(&slot.buf, slot.dest).is_ok();
    if !ok {
        stats.send_errors += 1;
    }
    if !sched.measured(seq) {
        return;
    }
    if ok {
        stats.sent_measured += 1;
    }
    if let Some(due) = due {
        let lag = now.saturating_sub(due);
        stats.lag.record(lag);
        if lag > sched.late_ns() {
            stats.late += 1;
        }
    }
}

/// Sends the packets owed since `from`, up to (not including) `until`,
/// back to back.
fn send_owed(
    slot: &mut SendSlot,
    from: u64,
    until: u64,
    sched: &Schedule,
    stats: &mut SenderStats,
) {
    for seq in from..until {
        let mark = if seq == from {
            Burst::First
        } else {
            Burst::Rest
        };
        send_packet(slot, seq, mark, None, sched, stats);
    }
}

/// When to wake, and when to look for a stop request.
struct Pacer {
    tick_ns: u64,
    last_wake: u64,
    now: u64,
    since_check: u32,
}

impl Pacer {
    /// Whether the run is being stopped; asked at most every 256 packets
    /// and before every sleep, since the atomic costs little but not nothing.
    fn stop(&mut self, due: u64) -> bool {
        self.since_check += 1;
        if due > self.now || self.since_check >= 256 {
            self.since_check = 0;
            return stop_requested();
        }
        false
    }

    /// Sleeps until `due`, but never wakes more often than once a tick.
    fn wait_for(&mut self, due: u64) {
        if due > self.now {
            let wake = due.max(self.last_wake + self.tick_ns);
            sleep_until_ns(wake);
            self.last_wake = wake;
            self.now = now_ns();
        }
    }
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
    let mut pacer = Pacer {
        tick_ns,
        last_wake: 0,
        now: now_ns(),
        since_check: 0,
    };
    'cycles: for cycle in 0..sched.total_cycles {
        let cycle_start = sched.t0 + cycle * sched.period_ns;
        for slot in slots.iter_mut() {
            let due = cycle_start + slot.phase;
            if pacer.stop(due) {
                break 'cycles;
            }
            if sched.silent(u64::from(slot.stream), cycle) {
                slot.held_from.get_or_insert(cycle);
                continue;
            }
            pacer.wait_for(due);
            if pacer.now >= give_up_at {
                break 'cycles;
            }
            let mark = match slot.held_from.take() {
                Some(from) => {
                    send_owed(slot, from, cycle, &sched, &mut stats);
                    Burst::Rest
                }
                None => Burst::None,
            };
            send_packet(slot, cycle, mark, Some(due), &sched, &mut stats);
            pacer.now = now_ns();
        }
    }
    // A silence still running at the end owes its packets too.
    if !stop_requested() && now_ns() < give_up_at {
        for slot in slots.iter_mut() {
            if let Some(from) = slot.held_from.take() {
                send_owed(slot, from, sched.total_cycles, &sched, &mut stats);
            }
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
    /// Latency of the first packet of each burst.
    burst_first: LatencyHistogram,
    /// Latency of every packet sent in a burst, the first included.
    burst_all: LatencyHistogram,
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
        let Ok(probe) = packet::decode(datagram, sched.run, sched.packet_len) else {
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
                let latency = arrived.saturating_sub(probe.sent_ns);
                self.latency.record(latency);
                if probe.burst != Burst::None {
                    self.burst_all.record(latency);
                }
                if probe.burst == Burst::First {
                    self.burst_first.record(latency);
                }
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

fn check_memory(calls: usize, total_cycles: u64, seconds: u64) -> Result<(), String> {
    let bytes = calls as u64 * 2 * total_cycles.div_ceil(8);
    if bytes > MAX_TRACKER_BYTES {
        return Err(format!(
            "{calls} calls over {seconds} s need {} MiB of sequence bitmaps; shorten the run or use fewer calls",
            bytes >> 20
        ));
    }
    Ok(())
}

/// The schedule of a run of `streams` streams starting shortly from now.
fn schedule(cfg: &Config, streams: u64, run: u32) -> Schedule {
    let period_ns = cfg.ptime_ms * NS_PER_MS;
    let cycles = |s: u64| s * NS_PER_SEC / period_ns;
    Schedule {
        // A short lead so every thread is waiting before the first packet.
        t0: now_ns() + 100 * NS_PER_MS,
        period_ns,
        warmup_cycles: cycles(cfg.warmup_s),
        total_cycles: cycles(cfg.warmup_s + cfg.duration_s),
        streams,
        silence: cfg.silence.map(|s| SilenceCycles {
            every: (s.every_ms / cfg.ptime_ms).max(1),
            silent: s.length_ms / cfg.ptime_ms,
        }),
        packet_len: packet::packet_len(cfg.ptime_ms),
        run,
    }
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
    let seconds = cfg.warmup_s + cfg.duration_s;
    check_memory(n, schedule(cfg, 0, run).total_cycles, seconds)?;
    let sessions = n + cfg.idle_calls;
    ensure_fd_limit(sessions as u64 * 2 + 256)?;
    let timeout_s = cfg.timing.timeout.as_secs() + 1;
    let setup_bound_s = (sessions as u64 * 2 / cfg.setup_window as u64 + 1)
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
    // The active calls come first; the idle ones keep their sockets open
    // (and so their ports) until the end.
    let mut calls = set_up_calls(&sig, sessions)?;
    let idle = calls.split_off(n);
    let setup_s = (now_ns() - setup_start) as f64 / 1e9;

    let sched = schedule(cfg, calls.len() as u64 * 2, run);
    let traffic = drive_traffic(cfg, &calls, sched, relay_pid);
    // Read before tear-down: the counters vanish with the sockets.
    let (relay_ports, generator_ports) = ports_of(&calls);
    let relay_drops = procfs::read_udp_drops(&relay_ports);
    let generator_drops = procfs::read_udp_drops(&generator_ports);
    calls.extend(idle);
    let teardown = tear_down_calls(&sig, calls);
    let outcome = CallsRun {
        background,
        calls: n,
        window_s: sched.measured_cycles() as f64 * sched.period_ns as f64 / 1e9,
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
    /// The measured window's length by the schedule.
    window_s: f64,
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
            "calls: {} calls{}{} via {spec}, {} s measured after {} s warm-up{}",
            run.calls,
            idle_suffix(cfg.idle_calls),
            traffic_suffix(cfg),
            cfg.duration_s,
            cfg.warmup_s,
            label_suffix(&cfg.label)
        ),
    );
    report.text("label", "relay under test", &cfg.label);
    report.text("ctrl", "control socket", &spec.to_string());
    report.int("calls", "calls", run.calls as u64, "");
    add_shape_rows(&mut report, cfg);
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
    add_traffic_rows(&mut report, traffic, run.calls, cfg.ptime_ms, run.window_s);
    if cfg.silence.is_some() {
        add_burst_rows(&mut report, traffic);
    }
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

/// The rows that say what the traffic looked like beyond the call count.
fn add_shape_rows(report: &mut Report, cfg: &Config) {
    report.int(
        "idle_calls",
        "idle sessions (never send)",
        cfg.idle_calls as u64,
        "",
    );
    report.int("ptime_ms", "packet time", cfg.ptime_ms, "ms");
    report.int(
        "packet_bytes",
        "packet size (RTP header + payload)",
        packet::packet_len(cfg.ptime_ms) as u64,
        "B",
    );
    report.int(
        "silence_every_ms",
        "silence period (0: none)",
        cfg.silence.map_or(0, |s| s.every_ms),
        "ms",
    );
    report.int(
        "silence_ms",
        "silence length",
        cfg.silence.map_or(0, |s| s.length_ms),
        "ms",
    );
}

fn idle_suffix(idle: usize) -> String {
    if idle == 0 {
        String::new()
    } else {
        format!(" (+{idle} idle)")
    }
}

fn traffic_suffix(cfg: &Config) -> String {
    let mut out = String::new();
    if cfg.ptime_ms != 20 {
        out.push_str(&format!(", ptime {} ms", cfg.ptime_ms));
    }
    if let Some(s) = cfg.silence {
        out.push_str(&format!(
            ", {} ms silent every {} ms then a burst",
            s.length_ms, s.every_ms
        ));
    }
    out
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
    burst_first: LatencyHistogram,
    burst_all: LatencyHistogram,
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
                let slots = plan_sender(calls, s, senders, &sched);
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
            got.burst_first.merge(&r.burst_first);
            got.burst_all.merge(&r.burst_all);
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
            burst_first: got.burst_first,
            burst_all: got.burst_all,
            cpu: usage::between(&start, &end),
            interrupted: interrupted || stop_requested(),
        })
    })
}

fn us(ns: Option<u64>) -> Option<f64> {
    ns.map(|v| v as f64 / 1_000.0)
}

fn add_burst_rows(report: &mut Report, t: &Traffic) {
    let rows = [
        (
            &t.burst_first,
            [
                "burst_first_count",
                "bursts (first packets received)",
                "burst_first_p50_us",
                "first packet after silence, latency p50",
                "burst_first_p99_us",
                "first packet after silence, latency p99",
                "burst_first_max_us",
                "first packet after silence, latency max",
            ],
        ),
        (
            &t.burst_all,
            [
                "burst_count",
                "packets received from bursts",
                "burst_p50_us",
                "burst packets, latency p50",
                "burst_p99_us",
                "burst packets, latency p99",
                "burst_max_us",
                "burst packets, latency max",
            ],
        ),
    ];
    for (h, [count, count_label, p50, p50_label, p99, p99_label, max, max_label]) in rows {
        report.int(count, count_label, h.count(), "pkts");
        report.float(p50, p50_label, us(h.percentile(50.0)), 1, "us");
        report.float(p99, p99_label, us(h.percentile(99.0)), 1, "us");
        report.float(max, max_label, us(h.max()), 1, "us");
    }
}

fn add_traffic_rows(report: &mut Report, t: &Traffic, calls: usize, ptime_ms: u64, window_s: f64) {
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
    let relayed_pps = (window_s > 0.0).then(|| t.received as f64 / window_s);
    report.float(
        "relayed_pps",
        "relayed packets per second",
        relayed_pps,
        0,
        "pps",
    );
    report.float(
        "offered_pps",
        "offered packets per second (nominal)",
        Some(calls as f64 * 2.0 * 1000.0 / ptime_ms.max(1) as f64),
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
    add_lag_rows(report, t);
}

/// How far the senders fell behind their schedule.
fn add_lag_rows(report: &mut Report, t: &Traffic) {
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
    report.int(
        "late_sends",
        "packets sent over half a period late",
        t.late,
        "pkts",
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_spread_over_the_period() {
        let period = 20 * NS_PER_MS;
        assert_eq!(phase_ns(0, 4, period), 0);
        assert_eq!(phase_ns(1, 4, period), 5 * NS_PER_MS);
        assert_eq!(phase_ns(3, 4, period), 15 * NS_PER_MS);
        assert!(phase_ns(1999, 2000, period) < period);
        assert_eq!(phase_ns(0, 0, period), 0);
    }

    #[test]
    fn measured_window_excludes_warmup() {
        let s = test_schedule(None);
        assert!(!s.measured(149));
        assert!(s.measured(150));
        assert!(s.measured(1149));
        assert!(!s.measured(1150));
        assert_eq!(s.measured_cycles(), 1000);
        assert_eq!(s.measure_end() - s.measure_start(), 20 * NS_PER_SEC);
    }

    #[test]
    fn huge_runs_are_refused_up_front() {
        assert!(check_memory(500, 1150, 23).is_ok());
        assert!(check_memory(20_000, 3_600 * 50 * 4, 3600).is_err());
    }

    fn test_schedule(silence: Option<SilenceCycles>) -> Schedule {
        Schedule {
            t0: 1_000,
            period_ns: 20 * NS_PER_MS,
            warmup_cycles: 150,
            total_cycles: 1150,
            streams: 4,
            silence,
            packet_len: packet::PACKET_LEN,
            run: 1,
        }
    }

    #[test]
    fn silences_are_staggered_and_as_long_as_asked() {
        let s = test_schedule(Some(SilenceCycles {
            every: 100,
            silent: 10,
        }));
        for stream in 0..4 {
            let silent: Vec<u64> = (0..200).filter(|&c| s.silent(stream, c)).collect();
            assert_eq!(silent.len(), 20, "stream {stream}");
            // Two silences of 10 consecutive periods each.
            assert_eq!(silent[9] - silent[0], 9);
            assert_eq!(silent[10] - silent[0], 100);
        }
        let first = |stream| (0..200).find(|&c| s.silent(stream, c));
        assert_eq!(first(0), Some(90));
        assert_eq!(first(1), Some(65));
        assert!(!test_schedule(None).silent(0, 99));
    }

    #[test]
    fn owed_packets_go_out_in_a_burst_after_each_silence() {
        let tx = crate::runctl::bind_loopback_udp().unwrap();
        let rx = crate::runctl::bind_loopback_udp().unwrap();
        let mut sched = test_schedule(Some(SilenceCycles {
            every: 10,
            silent: 3,
        }));
        sched.t0 = now_ns();
        sched.period_ns = NS_PER_MS;
        sched.warmup_cycles = 0;
        sched.total_cycles = 20;
        sched.streams = 1;
        let mut buf = vec![0u8; sched.packet_len];
        packet::write_template(&mut buf, sched.run, 0);
        let slot = SendSlot {
            phase: 0,
            stream: 0,
            sock: &tx,
            dest: rx.local_addr().unwrap(),
            buf,
            held_from: None,
        };
        let stats = run_sender(vec![slot], sched, 20_000);
        assert_eq!((stats.sent_measured, stats.expected_measured), (20, 20));
        // Only the packets sent when due count in the lag figures.
        assert_eq!(stats.lag.count(), 14);
        rx.set_nonblocking(true).unwrap();
        let mut got = Vec::new();
        let mut datagram = [0u8; 2048];
        while let Ok(n) = rx.recv(&mut datagram) {
            let p = packet::decode(&datagram[..n], sched.run, sched.packet_len).unwrap();
            got.push((p.seq, p.burst));
        }
        let seqs: Vec<u32> = got.iter().map(|g| g.0).collect();
        assert_eq!(seqs, (0..20).collect::<Vec<u32>>());
        let marks = |range: std::ops::Range<usize>| -> Vec<Burst> {
            got[range].iter().map(|g| g.1).collect()
        };
        use Burst::{First, Rest};
        assert_eq!(marks(6..11), [Burst::None, First, Rest, Rest, Rest]);
        assert_eq!(marks(16..20), [Burst::None, First, Rest, Rest]);
    }

    #[test]
    fn the_schedule_follows_ptime_and_silence_options() {
        let mut cfg = crate::options::parse(&[
            "--ctrl".to_string(),
            "udp:127.0.0.1:1".to_string(),
            "--ptime".to_string(),
            "10".to_string(),
            "--silence".to_string(),
            "1000:100".to_string(),
        ])
        .map(|p| match p {
            crate::options::Parsed::Run(c) => *c,
            crate::options::Parsed::Help => unreachable!(),
        })
        .unwrap();
        cfg.warmup_s = 3;
        cfg.duration_s = 15;
        let s = schedule(&cfg, 10, 7);
        assert_eq!(s.period_ns, 10 * NS_PER_MS);
        assert_eq!((s.warmup_cycles, s.total_cycles), (300, 1800));
        assert_eq!(s.packet_len, 92);
        assert_eq!(s.late_ns(), 5 * NS_PER_MS);
        assert!(matches!(
            s.silence,
            Some(SilenceCycles {
                every: 100,
                silent: 10
            })
        ));
    }
}
