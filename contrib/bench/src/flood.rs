//! `flood` and `baseline`: one stream as fast as the generator can send,
//! through the relay under test or through the harness's own minimal relay.

use crate::calls::label_suffix;
use crate::clock::{now_ns, sleep_until_ns, sleep_until_or_stop, NS_PER_MS, NS_PER_SEC};
use crate::options::Config;
use crate::packet::{self, Probe, PACKET_LEN};
use crate::procfs;
use crate::report::{flag_saturation, GeneratorLoad, Report};
use crate::runctl::{bind_loopback_udp, enlarge_receive_buffer, stop_requested, Watchdog};
use crate::session::{set_up_calls, tear_down_calls, Signalling};
use crate::stats::{LatencyHistogram, SeqMark, SeqTracker};
use crate::usage::{self, CpuUse};
use nix::errno::Errno;
use nix::sys::socket::{recvmmsg, sendmmsg, MsgFlags, MultiHeaders, SockaddrIn};
use std::collections::HashSet;
use std::io::{BufRead, BufReader, IoSlice, IoSliceMut};
use std::net::{SocketAddr, SocketAddrV4, UdpSocket};
use std::os::fd::AsRawFd;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Stream number of the few packets the callee sends first, so relays
/// that learn addresses from media know where the callee is.
const PRIMING_STREAM: u32 = u32::MAX;
/// The flood stream.
const FLOOD_STREAM: u32 = 0;
/// Socket receive queue for the generator's receiving side.
const GENERATOR_RCVBUF: usize = 8 << 20;
/// Below this share of a core the relay's CPU figure is too coarse (clock
/// ticks of 10 ms) to project its capacity from.
const MIN_CORES_FOR_ESTIMATE: f64 = 0.05;
/// A relay busier than this share of a core is taken to be saturated.
const RELAY_BUSY: f64 = 0.90;
/// How long a blocking receive waits before re-checking the clock.
const RECV_WAKE: Duration = Duration::from_millis(20);

/// Where the flood goes and who relays it.
struct FloodPath<'a> {
    sender: &'a UdpSocket,
    receiver: &'a UdpSocket,
    relay_in: SocketAddr,
    relay_pid: Option<i32>,
}

#[derive(Default)]
struct Flow {
    background: Option<f64>,
    sent_measured: u64,
    sent_total: u64,
    send_errors: u64,
    received_measured: u64,
    duplicates: u64,
    foreign: u64,
    latency: LatencyHistogram,
    cpu: CpuUse,
    interrupted: bool,
}

/// The measured window, in CLOCK_MONOTONIC ns.
#[derive(Clone, Copy)]
struct Window {
    start: u64,
    end: u64,
    run: u32,
}

impl Window {
    fn contains(&self, t: u64) -> bool {
        t >= self.start && t < self.end
    }
}

fn to_v4(addr: SocketAddr) -> Result<SockaddrIn, String> {
    match addr {
        SocketAddr::V4(v4) => Ok(SockaddrIn::from(v4)),
        SocketAddr::V6(_) => Err(format!("{addr}: the flood runs over IPv4 loopback only")),
    }
}

/// Sends batches with sendmmsg until the window ends: one system call per
/// `batch` datagrams, so the generator out-sends a relay that pays one
/// system call per datagram. `rate` 0 means no pacing at all.
fn flood_sender(
    path: &FloodPath,
    window: Window,
    batch: usize,
    rate: u64,
) -> Result<(u64, u64, u64), String> {
    let dest = to_v4(path.relay_in)?;
    let fd = path.sender.as_raw_fd();
    let mut bufs = vec![[0u8; PACKET_LEN]; batch];
    for buf in bufs.iter_mut() {
        packet::write_template(buf, window.run, FLOOD_STREAM);
    }
    let addrs = vec![Some(dest); batch];
    let mut headers = MultiHeaders::<SockaddrIn>::preallocate(batch, None);
    let (mut seq, mut measured, mut errors) = (0u64, 0u64, 0u64);
    let t_begin = now_ns();
    // Bounded by window.end: every pass reads the clock.
    loop {
        let now = now_ns();
        if now >= window.end || stop_requested() {
            break;
        }
        // checked_div: a rate of 0 means unpaced.
        if let Some(offset) = seq.saturating_mul(NS_PER_SEC).checked_div(rate) {
            let due = t_begin + offset;
            if due > now {
                sleep_until_ns(due.min(window.end));
                continue;
            }
        }
        for (i, buf) in bufs.iter_mut().enumerate() {
            let probe = Probe {
                stream: FLOOD_STREAM,
                seq: (seq + i as u64) as u32,
                sent_ns: now,
                burst: packet::Burst::None,
            };
            packet::stamp(buf, &probe);
        }
        let slices: Vec<[IoSlice; 1]> = bufs.iter().map(|b| [IoSlice::new(b)]).collect();
        match sendmmsg(fd, &mut headers, &slices, &addrs, [], MsgFlags::empty()) {
            Ok(results) => {
                let n = results.count() as u64;
                seq += n;
                if window.contains(now) {
                    measured += n;
                }
                if n == 0 {
                    errors += 1;
                }
            }
            Err(Errno::EINTR) => {}
            // ENOBUFS/EAGAIN: the kernel could not queue; count and retry.
            Err(_) => errors += 1,
        }
    }
    Ok((seq, measured, errors))
}

/// Receives with recvmmsg until sending is over and stragglers had
/// `drain_ns` to arrive.
fn flood_receiver(
    path: &FloodPath,
    window: Window,
    batch: usize,
    sending_over_at: &AtomicU64,
    drain_ns: u64,
) -> Result<Flow, String> {
    path.receiver
        .set_read_timeout(Some(RECV_WAKE))
        .map_err(|e| format!("setting a receive timeout: {e}"))?;
    let fd = path.receiver.as_raw_fd();
    let mut bufs = vec![[0u8; 2048]; batch];
    let mut headers = MultiHeaders::<SockaddrIn>::preallocate(batch, None);
    let mut flow = Flow::default();
    let mut tracker = SeqTracker::new(1 << 32);
    let hard_end = window.end + 2 * NS_PER_SEC + drain_ns;
    let mut lengths = vec![0usize; batch];
    // Bounded by hard_end: each blocking receive wakes within RECV_WAKE.
    loop {
        let got = recv_batch(fd, &mut headers, &mut bufs, &mut lengths)?;
        let arrived = now_ns();
        for (buf, &len) in bufs.iter().zip(&lengths).take(got) {
            count_flood_packet(&mut flow, &mut tracker, &buf[..len], window, arrived);
        }
        let over = sending_over_at.load(Ordering::Acquire);
        if (over != 0 && arrived >= over + drain_ns) || arrived >= hard_end {
            break;
        }
    }
    Ok(flow)
}

fn count_flood_packet(
    flow: &mut Flow,
    tracker: &mut SeqTracker,
    datagram: &[u8],
    window: Window,
    arrived: u64,
) {
    let probe = match packet::decode(datagram, window.run, PACKET_LEN) {
        Ok(p) if p.stream == FLOOD_STREAM => p,
        _ => {
            flow.foreign += 1;
            return;
        }
    };
    let measured = window.contains(probe.sent_ns);
    match tracker.mark(u64::from(probe.seq)) {
        SeqMark::New if measured => {
            flow.received_measured += 1;
            flow.latency.record(arrived.saturating_sub(probe.sent_ns));
        }
        SeqMark::Duplicate if measured => flow.duplicates += 1,
        _ => {}
    }
}

/// Sends a few packets from the callee first: relays that latch on the
/// first packet then know where to forward the flood.
fn prime_callee(receiver: &UdpSocket, relay_out: SocketAddr, run: u32) {
    let mut buf = [0u8; PACKET_LEN];
    packet::write_template(&mut buf, run, PRIMING_STREAM);
    for seq in 0..3 {
        let probe = Probe {
            stream: PRIMING_STREAM,
            seq,
            sent_ns: now_ns(),
            burst: packet::Burst::None,
        };
        packet::stamp(&mut buf, &probe);
        // A lost priming packet only matters to relays that need it, and
        // the flood's loss figure shows it.
        let _ = receiver.send_to(&buf, relay_out);
    }
    std::thread::sleep(Duration::from_millis(50));
}

/// Floods `path` for warm-up + duration and gathers the counts.
fn drive_flood(cfg: &Config, path: &FloodPath, run: u32) -> Result<Flow, String> {
    let background = usage::background_load();
    let t0 = now_ns() + 50 * NS_PER_MS;
    let window = Window {
        start: t0 + cfg.warmup_s * NS_PER_SEC,
        end: t0 + (cfg.warmup_s + cfg.duration_s) * NS_PER_SEC,
        run,
    };
    let sending_over_at = AtomicU64::new(0);
    let drain_ns = cfg.drain_ms * NS_PER_MS;
    std::thread::scope(|scope| {
        let over = &sending_over_at;
        let rx = scope.spawn(move || flood_receiver(path, window, cfg.batch, over, drain_ns));
        let tx = scope.spawn(move || {
            sleep_until_ns(t0);
            flood_sender(path, window, cfg.batch, cfg.rate)
        });
        let stop = || stop_requested();
        let mut interrupted = !sleep_until_or_stop(window.start, &stop);
        let start = usage::sample(path.relay_pid);
        interrupted |= !sleep_until_or_stop(window.end, &stop);
        let end = usage::sample(path.relay_pid);
        let sent = tx
            .join()
            .map_err(|_| "the sender thread panicked".to_string());
        sending_over_at.store(now_ns(), Ordering::Release);
        let (sent_total, sent_measured, send_errors) = sent??;
        let mut flow = rx
            .join()
            .map_err(|_| "the receiver thread panicked".to_string())??;
        flow.sent_total = sent_total;
        flow.sent_measured = sent_measured;
        flow.send_errors = send_errors;
        flow.cpu = usage::between(&start, &end);
        flow.interrupted = interrupted || stop_requested();
        flow.background = background;
        Ok(flow)
    })
}

/// Datagrams the kernel dropped at each end's socket queue.
#[derive(Clone, Copy)]
struct QueueDrops {
    relay: u64,
    generator: u64,
}

/// Reads the drop counters of the relay's input socket and the
/// generator's receiving socket; must run before either is closed.
fn queue_drops(relay_port: u16, generator: &UdpSocket) -> QueueDrops {
    QueueDrops {
        relay: procfs::read_udp_drops(&HashSet::from([relay_port])),
        generator: procfs::read_udp_drops(&HashSet::from([port_of(generator)])),
    }
}

fn flood_report(
    mode: &'static str,
    cfg: &Config,
    title: String,
    flow: &Flow,
    drops: QueueDrops,
    relay_pid: Option<i32>,
) -> Report {
    let mut report = Report::new(mode, title);
    report.text("label", "relay under test", &cfg.label);
    report.int("duration_s", "measured seconds", cfg.duration_s, "s");
    report.int("batch", "datagrams per sendmmsg", cfg.batch as u64, "");
    report.int(
        "rate_limit_pps",
        "send rate limit (0 = none)",
        cfg.rate,
        "pps",
    );
    let secs = cfg.duration_s.max(1) as f64;
    add_flow_rows(&mut report, flow, secs);
    report.int(
        "relay_queue_drops",
        "dropped by the relay's input queue",
        drops.relay,
        "pkts",
    );
    report.int(
        "generator_queue_drops",
        "dropped by the generator's receive queue",
        drops.generator,
        "pkts",
    );
    usage::add_rows(
        &mut report,
        &flow.cpu,
        Some(flow.received_measured),
        relay_pid,
    );
    let relayed_pps = flow.received_measured as f64 / secs;
    let (capacity, basis) = capacity_estimate(flow, relayed_pps);
    report.float(
        "relay_capacity_pps_est",
        "relay capacity at a full core (estimate)",
        capacity,
        0,
        "pps",
    );
    report.text("relay_capacity_basis", "capacity estimated from", basis);
    add_limit_row(&mut report, flow, drops);
    usage::add_background_row(&mut report, flow.background);
    usage::add_disturbance_rows(&mut report, &flow.cpu);
    // A flood saturates the sender by design; what must not saturate is
    // the generator's receive side, or the relayed rate is understated.
    let load = GeneratorLoad {
        allowed_cpus: procfs::allowed_cpus(),
        receive_drops: drops.generator,
        ..Default::default()
    };
    // A cut-short window says nothing about saturation.
    if !flow.interrupted {
        flag_saturation(&mut report, &load);
    }
    usage::check_relay_alive(&mut report, relay_pid);
    if flow.interrupted {
        report.warn(
            "INTERRUPTED: the run was stopped early; the figures cover a partial window".into(),
        );
    }
    report
}

/// What was sent, what came back, and how long it took.
fn add_flow_rows(report: &mut Report, flow: &Flow, secs: f64) {
    report.int("sent", "packets sent", flow.sent_measured, "pkts");
    report.int(
        "received",
        "packets received",
        flow.received_measured,
        "pkts",
    );
    let lost = flow.sent_measured.saturating_sub(flow.received_measured);
    report.int("lost", "packets lost", lost, "pkts");
    let loss_pct =
        (flow.sent_measured > 0).then(|| 100.0 * lost as f64 / flow.sent_measured as f64);
    report.float("loss_pct", "loss", loss_pct, 2, "%");
    report.int("duplicates", "duplicates", flow.duplicates, "pkts");
    report.int("foreign", "unrecognised datagrams", flow.foreign, "pkts");
    report.int("send_errors", "send errors", flow.send_errors, "");
    report.float(
        "offered_pps",
        "offered packets per second",
        Some(flow.sent_measured as f64 / secs),
        0,
        "pps",
    );
    report.float(
        "relayed_pps",
        "relayed packets per second",
        Some(flow.received_measured as f64 / secs),
        0,
        "pps",
    );
    let us = |ns: Option<u64>| ns.map(|v| v as f64 / 1e3);
    report.float(
        "latency_p50_us",
        "one-way latency p50 (queueing)",
        us(flow.latency.percentile(50.0)),
        1,
        "us",
    );
    report.float(
        "latency_p99_us",
        "one-way latency p99 (queueing)",
        us(flow.latency.percentile(99.0)),
        1,
        "us",
    );
    report.float(
        "latency_max_us",
        "one-way latency max",
        us(flow.latency.max()),
        1,
        "us",
    );
}

/// The relay's rate scaled to a full core. When the relay has a CPU of
/// its own, that CPU's whole load is its cost (softirq delivery included);
/// otherwise only its process time is known.
fn capacity_estimate(flow: &Flow, relayed_pps: f64) -> (Option<f64>, &'static str) {
    let cpu = &flow.cpu;
    if cpu.relay_core_exclusive {
        if let Some(busy) = cpu.relay_cpus_busy.filter(|&b| b > MIN_CORES_FOR_ESTIMATE) {
            return (Some(relayed_pps / busy), "its own CPU, softirq included");
        }
    }
    match cpu.relay_cores.filter(|&c| c > MIN_CORES_FOR_ESTIMATE) {
        Some(cores) => (Some(relayed_pps / cores), "its process time only"),
        None => (None, "-"),
    }
}

/// Names what set the relayed rate, and warns when it was not the relay's
/// CPU: with drops at its input queue and CPU to spare the relay refused
/// the load (its own pacing); without drops the generator never offered
/// more.
fn add_limit_row(report: &mut Report, flow: &Flow, drops: QueueDrops) {
    let cpu = &flow.cpu;
    let process = cpu.relay_cores.unwrap_or(0.0);
    let core = cpu
        .relay_cpus_busy
        .filter(|_| cpu.relay_core_exclusive)
        .unwrap_or(0.0);
    let generator_busy = cpu
        .generator_cores
        .max(cpu.generator_cpus_busy.unwrap_or(0.0));
    let limit = if cpu.relay_cores.is_none() {
        "unknown (no relay pid)"
    } else if process >= RELAY_BUSY {
        "relay process CPU"
    } else if core >= RELAY_BUSY {
        "relay's CPU, softirq included"
    } else if drops.relay > 0 {
        report.warn(format!(
            "the relay dropped {} packets at its input queue while its CPU was {:.0}% busy \
             (its process {:.0}%): its own pacing, not CPU, limits the rate",
            drops.relay,
            core.max(process) * 100.0,
            process * 100.0
        ));
        "relay pacing"
    } else if generator_busy >= RELAY_BUSY {
        report.warn(format!(
            "the relay used only {:.0}% of a core and dropped nothing while the generator was \
             busy: the relayed rate is the generator's limit; see the capacity estimate",
            process * 100.0
        ));
        "generator"
    } else {
        "not found"
    };
    report.text("limited_by", "rate limited by", limit);
}

fn port_of(sock: &UdpSocket) -> u16 {
    sock.local_addr().map(|a| a.port()).unwrap_or(0)
}

/// `flood`: one call through the relay under test.
pub fn run_flood(cfg: &Config, relay_pid: Option<i32>, run: u32) -> Result<Report, String> {
    let spec = cfg
        .ctrl
        .as_ref()
        .ok_or_else(|| "--ctrl is required".to_string())?;
    let _watchdog = Watchdog::arm(
        (cfg.warmup_s + cfg.duration_s + 60) * NS_PER_SEC,
        "flood run".into(),
    );
    let sig = Signalling {
        spec,
        relay_addr: cfg.relay_addr.unwrap_or_else(|| spec.media_host()),
        window: 1,
        timing: cfg.timing,
        run,
    };
    let calls = set_up_calls(&sig, 1)?;
    let call = &calls[0];
    enlarge_receive_buffer(&call.callee, GENERATOR_RCVBUF);
    prime_callee(&call.callee, call.callee_sends_to, run);
    drain_socket(&call.caller);
    let path = FloodPath {
        sender: &call.caller,
        receiver: &call.callee,
        relay_in: call.caller_sends_to,
        relay_pid,
    };
    let flow = drive_flood(cfg, &path, run);
    let drops = queue_drops(call.caller_sends_to.port(), &call.callee);
    let teardown = tear_down_calls(&sig, calls);
    let flow = flow?;
    let title = format!(
        "flood via {spec}, {} s measured after {} s warm-up{}",
        cfg.duration_s,
        cfg.warmup_s,
        label_suffix(&cfg.label)
    );
    let mut report = flood_report("flood", cfg, title, &flow, drops, relay_pid);
    report.text("ctrl", "control socket", &spec.to_string());
    report.int("deleted", "sessions deleted (D)", teardown.deleted, "");
    if teardown.failed > 0 {
        report.warn(format!("{} sessions could not be deleted", teardown.failed));
    }
    Ok(report)
}

/// Reads and discards whatever waits on `sock` (the priming packets).
fn drain_socket(sock: &UdpSocket) {
    let mut buf = [0u8; 2048];
    if sock.set_nonblocking(true).is_err() {
        return;
    }
    for _ in 0..64 {
        if sock.recv(&mut buf).is_err() {
            break;
        }
    }
    let _ = sock.set_nonblocking(false);
}

/// The minimal relay, as a child process so its CPU is measured like the
/// relay under test's and the generator's own figures exclude it.
struct BaselineRelay {
    child: Child,
    port: u16,
}

impl BaselineRelay {
    fn start(cfg: &Config, forward_to: SocketAddr) -> Result<BaselineRelay, String> {
        let exe = std::env::current_exe().map_err(|e| format!("finding this program: {e}"))?;
        let lifetime = cfg.warmup_s + cfg.duration_s + 10;
        let mut cmd = Command::new(exe);
        cmd.arg("baseline-relay")
            .arg("--forward-to")
            .arg(forward_to.to_string())
            .arg("--duration")
            .arg(lifetime.to_string())
            .arg("--warmup")
            .arg("0")
            .arg("--batch")
            .arg(cfg.batch.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped());
        if let Some(cpu) = cfg.baseline_cpu {
            cmd.arg("--baseline-cpu").arg(cpu.to_string());
        }
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("starting the baseline relay: {e}"))?;
        let port = read_announced_port(&mut child);
        match port {
            Ok(port) => Ok(BaselineRelay { child, port }),
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                Err(e)
            }
        }
    }

    fn pid(&self) -> i32 {
        self.child.id() as i32
    }
}

impl Drop for BaselineRelay {
    fn drop(&mut self) {
        // Our own child, ended by its handle; it would also exit by itself
        // at the end of its lifetime.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Reads the `PORT n` line the baseline relay prints once it listens.
fn read_announced_port(child: &mut Child) -> Result<u16, String> {
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| "the baseline relay has no stdout".to_string())?;
    let mut line = String::new();
    // The child prints at once or exits (EOF), so this read is bounded by
    // the child's own start-up.
    BufReader::new(stdout)
        .read_line(&mut line)
        .map_err(|e| format!("reading the baseline relay's port: {e}"))?;
    line.trim()
        .strip_prefix("PORT ")
        .and_then(|p| p.parse().ok())
        .ok_or_else(|| format!("the baseline relay did not start (said {:?})", line.trim()))
}

/// `baseline`: the same flood through the minimal relay.
pub fn run_baseline(cfg: &Config, run: u32) -> Result<Report, String> {
    let _watchdog = Watchdog::arm(
        (cfg.warmup_s + cfg.duration_s + 60) * NS_PER_SEC,
        "baseline run".into(),
    );
    let sender = bind_loopback_udp()?;
    let receiver = bind_loopback_udp()?;
    enlarge_receive_buffer(&receiver, GENERATOR_RCVBUF);
    let forward_to = receiver
        .local_addr()
        .map_err(|e| format!("reading a socket address: {e}"))?;
    let relay = BaselineRelay::start(cfg, forward_to)?;
    let relay_in: SocketAddr = SocketAddrV4::new(std::net::Ipv4Addr::LOCALHOST, relay.port).into();
    let path = FloodPath {
        sender: &sender,
        receiver: &receiver,
        relay_in,
        relay_pid: Some(relay.pid()),
    };
    let flow = drive_flood(cfg, &path, run)?;
    let drops = queue_drops(relay.port, &receiver);
    let title = format!(
        "baseline (minimal recvmmsg/sendmmsg relay{}), {} s measured after {} s warm-up",
        cfg.baseline_cpu
            .map(|c| format!(" on CPU {c}"))
            .unwrap_or_default(),
        cfg.duration_s,
        cfg.warmup_s
    );
    let mut report = flood_report("baseline", cfg, title, &flow, drops, Some(relay.pid()));
    report.text(
        "baseline_cpu",
        "baseline relay pinned to CPU",
        &cfg.baseline_cpu
            .map(|c| c.to_string())
            .unwrap_or_else(|| "none".into()),
    );
    drop(relay);
    Ok(report)
}

/// The comparison the relay under test must pass: at least 80 % of the
/// minimal relay's rate.
pub fn compare_with_baseline(flood: &Report, baseline: &Report) -> Report {
    const BAR: f64 = 0.80;
    let mut report = Report::new("flood_vs_baseline", "flood compared with baseline".into());
    let ours = flood.number("relayed_pps");
    let theirs = baseline.number("relayed_pps");
    report.float(
        "flood_relayed_pps",
        "relay under test, relayed pps",
        ours,
        0,
        "pps",
    );
    report.float(
        "baseline_relayed_pps",
        "minimal relay, relayed pps",
        theirs,
        0,
        "pps",
    );
    let ratio = match (ours, theirs) {
        (Some(a), Some(b)) if b > 0.0 => Some(a / b),
        _ => None,
    };
    report.float(
        "ratio_pct",
        "relay under test / minimal relay",
        ratio.map(|r| r * 100.0),
        1,
        "%",
    );
    let pass = ratio.is_some_and(|r| r >= BAR);
    report.flag("meets_80pct_bar", "meets the 80% bar", pass);
    if !pass {
        report.warn("the relay under test relays less than 80% of the minimal relay's rate".into());
    }
    report
}

/// The minimal relay's body (mode `baseline-relay`): forward everything
/// that arrives on one socket to `--forward-to` from a second socket,
/// until its lifetime ends.
pub fn serve_baseline_relay(cfg: &Config) -> Result<(), String> {
    let forward_to = cfg
        .forward_to
        .ok_or_else(|| "baseline-relay needs --forward-to".to_string())?;
    // Ends with its parent even if the parent is killed outright.
    let _ = nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGTERM);
    if let Some(cpu) = cfg.baseline_cpu {
        pin_to_cpu(cpu)?;
    }
    let inbound = bind_loopback_udp()?;
    let outbound = bind_loopback_udp()?;
    inbound
        .set_read_timeout(Some(Duration::from_millis(100)))
        .map_err(|e| format!("setting a receive timeout: {e}"))?;
    let port = port_of(&inbound);
    println!("PORT {port}");
    use std::io::Write;
    let _ = std::io::stdout().flush();
    let deadline = now_ns() + cfg.duration_s * NS_PER_SEC;
    relay_until(&inbound, &outbound, to_v4(forward_to)?, cfg.batch, deadline)
}

fn pin_to_cpu(cpu: usize) -> Result<(), String> {
    use nix::sched::{sched_setaffinity, CpuSet};
    use nix::unistd::Pid;
    let mut set = CpuSet::new();
    set.set(cpu)
        .map_err(|e| format!("--baseline-cpu {cpu}: {e}"))?;
    sched_setaffinity(Pid::from_raw(0), &set).map_err(|e| format!("--baseline-cpu {cpu}: {e}"))
}

fn relay_until(
    inbound: &UdpSocket,
    outbound: &UdpSocket,
    dest: SockaddrIn,
    batch: usize,
    deadline: u64,
) -> Result<(), String> {
    let mut bufs = vec![[0u8; 2048]; batch];
    let mut lengths = vec![0usize; batch];
    let mut rx_headers = MultiHeaders::<SockaddrIn>::preallocate(batch, None);
    let mut tx_headers = MultiHeaders::<SockaddrIn>::preallocate(batch, None);
    let addrs = vec![Some(dest); batch];
    // Bounded by the deadline: a receive wakes at least every 100 ms.
    while now_ns() < deadline {
        let got = recv_batch(
            inbound.as_raw_fd(),
            &mut rx_headers,
            &mut bufs,
            &mut lengths,
        )?;
        if got == 0 {
            continue;
        }
        let slices: Vec<[IoSlice; 1]> = bufs
            .iter()
            .zip(&lengths)
            .take(got)
            .map(|(b, &len)| [IoSlice::new(&b[..len])])
            .collect();
        // A failed send drops the batch, as a relay under overload would.
        let _ = sendmmsg(
            outbound.as_raw_fd(),
            &mut tx_headers,
            &slices,
            &addrs[..got],
            [],
            MsgFlags::empty(),
        );
    }
    Ok(())
}

/// One `recvmmsg(2)` that waits for the first datagram and takes what else
/// is queued, up to `bufs.len()`; their lengths go to `lengths`. A timeout
/// or a signal is 0 datagrams.
fn recv_batch<const N: usize>(
    fd: std::os::fd::RawFd,
    headers: &mut MultiHeaders<SockaddrIn>,
    bufs: &mut [[u8; N]],
    lengths: &mut [usize],
) -> Result<usize, String> {
    let mut slices: Vec<[IoSliceMut; 1]> = bufs.iter_mut().map(|b| [IoSliceMut::new(b)]).collect();
    match recvmmsg(
        fd,
        headers,
        slices.iter_mut(),
        MsgFlags::MSG_WAITFORONE,
        None,
    ) {
        Ok(results) => {
            let mut n = 0;
            for (len, msg) in lengths.iter_mut().zip(results) {
                *len = msg.bytes;
                n += 1;
            }
            Ok(n)
        }
        Err(Errno::EAGAIN) | Err(Errno::EINTR) => Ok(0),
        Err(e) => Err(format!("recvmmsg: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::Value;

    fn flow_with(cpu: CpuUse) -> Flow {
        Flow {
            cpu,
            ..Flow::default()
        }
    }

    #[test]
    fn capacity_uses_the_relays_own_core_when_pinned() {
        let pinned = flow_with(CpuUse {
            relay_cores: Some(0.5),
            relay_cpus_busy: Some(0.8),
            relay_core_exclusive: true,
            ..CpuUse::default()
        });
        assert_eq!(capacity_estimate(&pinned, 80_000.0).0, Some(100_000.0));
        let shared = flow_with(CpuUse {
            relay_cores: Some(0.5),
            relay_cpus_busy: Some(0.8),
            relay_core_exclusive: false,
            ..CpuUse::default()
        });
        assert_eq!(capacity_estimate(&shared, 80_000.0).0, Some(160_000.0));
        assert_eq!(
            capacity_estimate(&flow_with(CpuUse::default()), 1.0).0,
            None
        );
    }

    #[test]
    fn limit_is_named() {
        let drops = QueueDrops {
            relay: 10,
            generator: 0,
        };
        let idle_dropping = flow_with(CpuUse {
            relay_cores: Some(0.02),
            relay_cpus_busy: Some(0.3),
            relay_core_exclusive: true,
            ..CpuUse::default()
        });
        let mut r = Report::new("flood", "t".into());
        add_limit_row(&mut r, &idle_dropping, drops);
        assert_eq!(
            r.value("limited_by"),
            Some(&Value::Text("relay pacing".into()))
        );
        let softirq_bound = flow_with(CpuUse {
            relay_cores: Some(0.5),
            relay_cpus_busy: Some(0.99),
            relay_core_exclusive: true,
            ..CpuUse::default()
        });
        let mut r = Report::new("flood", "t".into());
        add_limit_row(&mut r, &softirq_bound, drops);
        assert_eq!(
            r.value("limited_by"),
            Some(&Value::Text("relay's CPU, softirq included".into()))
        );
    }

    #[test]
    fn window_is_half_open() {
        let w = Window {
            start: 10,
            end: 20,
            run: 0,
        };
        assert!(!w.contains(9));
        assert!(w.contains(10));
        assert!(w.contains(19));
        assert!(!w.contains(20));
    }

    #[test]
    fn comparison_applies_the_bar() {
        let mut flood = Report::new("flood", "f".into());
        flood.float("relayed_pps", "r", Some(85.0), 0, "pps");
        let mut base = Report::new("baseline", "b".into());
        base.float("relayed_pps", "r", Some(100.0), 0, "pps");
        let cmp = compare_with_baseline(&flood, &base);
        assert_eq!(cmp.value("meets_80pct_bar"), Some(&Value::Bool(true)));
        let mut slow = Report::new("flood", "f".into());
        slow.float("relayed_pps", "r", Some(70.0), 0, "pps");
        let cmp = compare_with_baseline(&slow, &base);
        assert_eq!(cmp.value("meets_80pct_bar"), Some(&Value::Bool(false)));
    }

    #[test]
    fn flood_packets_are_counted_once_inside_the_window() {
        let w = Window {
            start: 100,
            end: 200,
            run: 9,
        };
        let mut flow = Flow::default();
        let mut tracker = SeqTracker::new(1 << 20);
        let mut buf = [0u8; PACKET_LEN];
        packet::write_template(&mut buf, 9, FLOOD_STREAM);
        for (seq, sent) in [(0u32, 50u64), (1, 150), (1, 150), (2, 250)] {
            packet::stamp(
                &mut buf,
                &Probe {
                    stream: FLOOD_STREAM,
                    seq,
                    sent_ns: sent,
                    burst: packet::Burst::None,
                },
            );
            count_flood_packet(&mut flow, &mut tracker, &buf, w, 300);
        }
        assert_eq!(flow.received_measured, 1);
        assert_eq!(flow.duplicates, 1);
        assert_eq!(flow.latency.max(), Some(150));
    }
}
