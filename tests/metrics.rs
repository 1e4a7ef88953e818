//! `--metrics`: the real daemon serves `GET /metrics` in the Prometheus
//! text format from its poll loop. A scrape agrees with `G`; wrong
//! requests are refused with the right status; a silent client and one
//! that sends 1 MiB of junk delay neither the media nor a normal scrape;
//! no more than four clients are served at once and the rest are answered
//! in turn; and a real Prometheus server (Debian's `prometheus`) scrapes
//! the relay every second during a call and its HTTP API returns the
//! series.
//!
//! The HTTP clients are plain `TcpStream`s. Every port comes from
//! `common::ports`; Prometheus is started by the test and killed by its
//! pid when the test ends, also when it fails.

mod common;

use std::collections::BTreeMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{port, ports, setup_call, Call, Rtpproxy, TempDir};

/// A scrape's request, as Prometheus sends it (less a few headers).
const SCRAPE: &[u8] = b"GET /metrics HTTP/1.1\r\nHost: rtpproxy\r\nUser-Agent: test\r\nAccept: text/plain;version=0.0.4\r\n\r\n";

/// The daemon with UDP control and `--metrics` on loopback; the metrics
/// address.
fn daemon(extra: &[&str]) -> (Rtpproxy, SocketAddr) {
    let metrics: SocketAddr = format!("127.0.0.1:{}", port()).parse().expect("addr");
    let m = metrics.to_string();
    let mut args = vec!["--metrics", m.as_str()];
    args.extend_from_slice(extra);
    let rp = common::udp(port(), ports(12).range(), &args);
    (rp, metrics)
}

/// An HTTP answer.
struct Answer {
    status: u16,
    head: String,
    body: String,
}

impl Answer {
    /// A header's value (names compared in any case).
    fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().skip(1).find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.eq_ignore_ascii_case(name).then_some(v.trim())
        })
    }
}

fn parse_answer(raw: &[u8]) -> Answer {
    let text = String::from_utf8_lossy(raw).into_owned();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no end of head in {text:?}"));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head:?}"));
    Answer {
        status,
        head: head.to_string(),
        body: body.to_string(),
    }
}

/// Sends `raw` on a new connection and reads the answer to its end.
fn ask(addr: SocketAddr, raw: &[u8]) -> Answer {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    s.write_all(raw).expect("send the request");
    let mut got = Vec::new();
    s.read_to_end(&mut got).expect("read the answer");
    parse_answer(&got)
}

/// The series of a scrape and their values, checking the answer's head.
fn scrape(addr: SocketAddr) -> BTreeMap<String, f64> {
    let a = ask(addr, SCRAPE);
    assert_eq!(a.status, 200, "{}", a.head);
    assert_eq!(
        a.header("Content-Type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    assert_eq!(a.header("Connection"), Some("close"));
    assert_eq!(a.header("Content-Length"), Some(&*a.body.len().to_string()));
    exposition(&a.body)
}

/// Every sample line of an exposition text; HELP and TYPE come before a
/// family's samples.
fn exposition(text: &str) -> BTreeMap<String, f64> {
    let mut typed = Vec::new();
    let mut series = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            typed.push(rest.split(' ').next().unwrap_or("").to_string());
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        let (key, value) = line.rsplit_once(' ').expect("a value");
        let name = key.split('{').next().unwrap_or(key);
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| {
                name.strip_suffix(s)
                    .filter(|f| typed.iter().any(|t| t == f))
            })
            .unwrap_or(name);
        assert!(typed.iter().any(|t| t == family), "no TYPE for {line}");
        let v = match value {
            "+Inf" => f64::INFINITY,
            v => v.parse().unwrap_or_else(|_| panic!("not a value: {line}")),
        };
        assert!(series.insert(key.to_string(), v).is_none(), "twice: {key}");
    }
    series
}

/// Every `G` counter.
fn g(rp: &Rtpproxy) -> BTreeMap<String, f64> {
    rp.command("G")
        .split_whitespace()
        .map(|kv| {
            let (k, v) = kv.split_once('=').expect("name=value");
            (k.to_string(), v.parse().expect("a number"))
        })
        .collect()
}

/// Sends one packet from the caller through the relay to the callee and
/// back; returns the round trip, or panics naming the packet lost.
fn round_trip(call: &Call, seq: u16) -> Duration {
    let p = common::rtp_packet(seq, 0);
    let sent = Instant::now();
    call.caller.send(call.to_caller_leg, &p);
    let (got, _) = call
        .callee
        .recv_within(2000)
        .unwrap_or_else(|| panic!("packet {seq} lost on the way out"));
    assert_eq!(got, p);
    call.callee.send(call.to_callee_leg, &got);
    let (back, _) = call
        .caller
        .recv_within(2000)
        .unwrap_or_else(|| panic!("packet {seq} lost on the way back"));
    assert_eq!(back, p);
    sent.elapsed()
}

/// The `G` counter each metric shows.
const SAME_AS_G: &[(&str, &str)] = &[
    ("nsess_created", "rtpproxy_sessions_created_total"),
    ("nsess_destroyed", "rtpproxy_sessions_destroyed_total"),
    ("nsess_timeout", "rtpproxy_sessions_timeout_total"),
    ("nsess_active", "rtpproxy_sessions_active"),
    ("nsess_complete", "rtpproxy_sessions_complete_total"),
    ("nplrs_created", "rtpproxy_players_created_total"),
    ("npkts_rcvd", "rtpproxy_packets_received_total"),
    ("npkts_played", "rtpproxy_packets_played_total"),
    ("npkts_relayed", "rtpproxy_packets_relayed_total"),
    ("npkts_discard", "rtpproxy_packets_dropped_total"),
    ("total_duration", "rtpproxy_sessions_duration_seconds_total"),
    ("ncmds_rcvd_ndups", "rtpproxy_commands_repeated_total"),
    ("nlog_dropped", "rtpproxy_log_lines_dropped_total"),
    ("nhep_sent", "rtpproxy_hep_packets_sent_total"),
    ("nhep_dropped", "rtpproxy_hep_packets_dropped_total"),
    ("rtpa_nsent", "rtpproxy_rtpa_packets_sent_total"),
    ("rtpa_nrcvd", "rtpproxy_rtpa_packets_received_total"),
    ("rtpa_nlost", "rtpproxy_rtpa_packets_lost_total"),
];

#[test]
fn a_scrape_shows_what_g_shows_after_relaying() {
    let (rp, addr) = daemon(&[]);
    let ended = setup_call(&rp, "ended");
    for seq in 0..10 {
        round_trip(&ended, seq);
    }
    assert_eq!(rp.command("D ended ftag;1"), "0");
    let call = setup_call(&rp, "live");
    for seq in 0..40 {
        round_trip(&call, seq);
    }
    assert_eq!(rp.command("D nosuch ftag"), "E8");
    let counters = g(&rp);
    let s = scrape(addr);
    for (gname, metric) in SAME_AS_G {
        let (want, got) = (counters[*gname], s[*metric]);
        assert!(
            (want - got).abs() < 1e-5,
            "{metric} {got}, G {gname}={want}"
        );
    }
    // The live session's packets are counted, as G counts them.
    assert_eq!(s["rtpproxy_packets_relayed_total"], 100.0);
    assert_eq!(s["rtpproxy_packets_received_total"], 100.0);
    assert_eq!(s["rtpproxy_sessions_active"], 1.0);
    // G's reply was counted after G answered.
    assert_eq!(
        s["rtpproxy_replies_sent_total"],
        counters["ncmds_repld"] + 1.0
    );
    let commands = |verb: &str, result: &str| {
        s.get(&format!(
            "rtpproxy_commands_total{{verb=\"{verb}\",result=\"{result}\"}}"
        ))
        .copied()
    };
    assert_eq!(commands("U", "ok"), Some(2.0));
    assert_eq!(commands("L", "ok"), Some(2.0));
    assert_eq!(commands("D", "ok"), Some(1.0));
    assert_eq!(commands("D", "E8"), Some(1.0));
    assert_eq!(commands("G", "ok"), Some(1.0));
    assert!(commands("V", "ok").is_some_and(|n| n >= 1.0));
    let total: f64 = s
        .iter()
        .filter(|(k, _)| k.starts_with("rtpproxy_commands_total{"))
        .map(|(_, v)| v)
        .sum();
    assert_eq!(total, counters["ncmds_rcvd"]);
    assert_eq!(s["rtpproxy_draining"], 0.0);
    let build = format!(
        "rtpproxy_build_info{{version=\"{}\"}}",
        env!("CARGO_PKG_VERSION")
    );
    assert_eq!(s[&build], 1.0);
    // The ended call's two directions are in the quality histograms (the
    // live one is not yet): no loss, a MOS each, a jitter each; and in the
    // MOS bands of G.
    assert_eq!(s["rtpproxy_stream_mos_bucket{le=\"+Inf\"}"], 2.0);
    let mos = s["rtpproxy_stream_mos_sum"];
    assert!((2.0..=9.0).contains(&mos), "{mos}");
    assert_eq!(s["rtpproxy_stream_loss_ratio_count"], 2.0);
    assert_eq!(s["rtpproxy_stream_loss_ratio_sum"], 0.0);
    assert_eq!(s["rtpproxy_stream_jitter_seconds_count"], 2.0);
    let bands: f64 = ["good", "fair", "poor", "bad"]
        .iter()
        .map(|b| s[&format!("rtpproxy_streams_mos_{b}_total")])
        .sum();
    assert_eq!(bands, 2.0);
    // The start line says where the metrics are.
    assert!(rp.log().contains(&format!("metrics http://{addr}/metrics")));
}

#[test]
fn anything_but_get_metrics_is_refused() {
    let (_rp, addr) = daemon(&[]);
    let cases: [(&[u8], u16); 8] = [
        (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", 404),
        (b"GET /metricsx HTTP/1.1\r\n\r\n", 404),
        (
            b"POST /metrics HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello",
            405,
        ),
        (b"HEAD /metrics HTTP/1.1\r\n\r\n", 405),
        (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03junk", 400),
        (b"GET /metrics HTTP/9.9\r\n\r\n", 400),
        (b"GET /metrics?x=1 HTTP/1.0\r\n\r\n", 200),
        (b"\r\nGET /metrics HTTP/1.0\r\n\r\n", 200),
    ];
    for (request, status) in cases {
        let a = ask(addr, request);
        assert_eq!(
            a.status,
            status,
            "{:?}: {}",
            String::from_utf8_lossy(request),
            a.head
        );
        assert_eq!(a.header("Connection"), Some("close"));
        if status == 405 {
            assert_eq!(a.header("Allow"), Some("GET"));
        }
    }
    // A request cut short by the client's end of file.
    let mut s = TcpStream::connect(addr).expect("connect");
    s.write_all(b"GET /metr").expect("send");
    s.shutdown(std::net::Shutdown::Write).expect("shutdown");
    let mut got = Vec::new();
    s.read_to_end(&mut got).expect("read");
    assert_eq!(parse_answer(&got).status, 400);
    // A head past the limit.
    let mut long = b"GET /metrics HTTP/1.1\r\nX-Junk: ".to_vec();
    long.resize(20_000, b'a');
    long.extend_from_slice(b"\r\n\r\n");
    assert_eq!(ask(addr, &long).status, 431);
    // And the daemon still serves.
    assert!(scrape(addr).contains_key("rtpproxy_sessions_active"));
}

/// Connects, sends `total` bytes of a never-ending header as fast as the
/// daemon takes them, and reads what comes back until the daemon closes;
/// returns the status if an answer came, and when the connection ended.
fn junk_client(addr: SocketAddr, total: usize) -> std::thread::JoinHandle<(Option<u16>, Duration)> {
    std::thread::spawn(move || {
        let start = Instant::now();
        let mut s = TcpStream::connect(addr).expect("connect");
        let mut reader = s.try_clone().expect("clone");
        reader
            .set_read_timeout(Some(Duration::from_secs(15)))
            .expect("timeout");
        let writer = std::thread::spawn(move || {
            let mut junk = b"GET /metrics HTTP/1.1\r\nX-Junk: ".to_vec();
            junk.resize(total, b'j');
            // Cut off by the daemon: an error here is the point.
            let _ = s.write_all(&junk);
        });
        let mut got = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            match reader.read(&mut chunk) {
                Ok(0) => break,
                Ok(n) => got.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == ErrorKind::ConnectionReset => break,
                Err(e) => panic!("the daemon did not close the junk client: {e}"),
            }
        }
        let ended = start.elapsed();
        let _ = writer.join();
        let status = (!got.is_empty()).then(|| parse_answer(&got).status);
        (status, ended)
    })
}

#[test]
fn silent_and_junk_clients_delay_neither_media_nor_scrapes() {
    let (rp, addr) = daemon(&[]);
    let realtime = common::make_realtime(rp.pid()) && common::make_realtime(0);
    let call = setup_call(&rp, "media");
    let mut seq = 0u16;
    let mut baseline = Duration::ZERO;
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(1) {
        baseline = baseline.max(round_trip(&call, seq));
        seq += 1;
        std::thread::sleep(Duration::from_millis(20));
    }

    let connected = Instant::now();
    let mut silent = TcpStream::connect(addr).expect("connect");
    let junk = junk_client(addr, 1 << 20);
    let mut worst = Duration::ZERO;
    let mut scrapes = 0;
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(3) {
        worst = worst.max(round_trip(&call, seq));
        seq += 1;
        if seq.is_multiple_of(25) {
            let t = Instant::now();
            assert!(scrape(addr)["rtpproxy_packets_relayed_total"] > 0.0);
            worst = worst.max(t.elapsed());
            scrapes += 1;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    println!(
        "worst round trip or scrape: {worst:?} with a silent and a junk client, {baseline:?} before (real-time: {realtime})"
    );
    assert!(scrapes >= 3);
    assert!(
        worst < Duration::from_millis(250),
        "media or a scrape waited for a metrics client: {worst:?}"
    );
    let (status, ended) = junk.join().expect("junk client");
    println!("junk client: answer {status:?}, closed after {ended:?}");
    // Answered once its head passed 8 KiB, then cut off.
    assert!(matches!(status, Some(431) | None), "{status:?}");
    assert!(
        ended < Duration::from_secs(8),
        "junk client kept for {ended:?}"
    );
    // The silent one is cut off at its deadline, unanswered.
    silent
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut buf = [0u8; 64];
    assert_eq!(silent.read(&mut buf).expect("closed"), 0);
    let held = connected.elapsed();
    assert!(
        held > Duration::from_millis(4500) && held < Duration::from_millis(7500),
        "silent client held {held:?}"
    );
    // Every packet sent was relayed, both ways.
    assert_eq!(g(&rp)["npkts_relayed"], 2.0 * f64::from(seq));
}

#[test]
fn four_clients_are_served_at_once_and_the_rest_in_turn() {
    let (_rp, addr) = daemon(&[]);
    let mut silent: Vec<TcpStream> = (0..4)
        .map(|_| TcpStream::connect(addr).expect("connect"))
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    // The fifth waits in the backlog: no answer while the four hold on.
    let mut fifth = TcpStream::connect(addr).expect("connect");
    fifth.write_all(SCRAPE).expect("send");
    fifth
        .set_read_timeout(Some(Duration::from_millis(1000)))
        .expect("timeout");
    let mut buf = [0u8; 256];
    match fifth.read(&mut buf) {
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
        other => panic!("a fifth client was served: {other:?}"),
    }
    // One leaves: the fifth is answered at once.
    drop(silent.pop());
    fifth
        .set_read_timeout(Some(Duration::from_secs(2)))
        .expect("timeout");
    let t = Instant::now();
    let mut got = Vec::new();
    fifth.read_to_end(&mut got).expect("answer");
    assert_eq!(parse_answer(&got).status, 200);
    assert!(
        t.elapsed() < Duration::from_millis(1000),
        "{:?}",
        t.elapsed()
    );
    drop(silent);

    // Ten at once: all answered, four at a time.
    let clients: Vec<_> = (0..10)
        .map(|_| std::thread::spawn(move || ask(addr, SCRAPE).status))
        .collect();
    for c in clients {
        assert_eq!(c.join().expect("client"), 200);
    }
}

/// A Prometheus server on loopback, killed by its pid when dropped.
struct Prometheus {
    child: Child,
    addr: SocketAddr,
    dir: TempDir,
}

impl Prometheus {
    /// Starts `prometheus` scraping `target` every second.
    fn start(target: SocketAddr) -> Prometheus {
        let bin = Path::new("/usr/bin/prometheus");
        assert!(
            bin.exists(),
            "{} missing: apt-get install prometheus (tests/run.sh installs it)",
            bin.display()
        );
        let dir = TempDir::new("prometheus");
        let config = dir.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n  - job_name: rtpproxy\n    static_configs:\n      - targets: ['{target}']\n"
            ),
        )
        .expect("write prometheus.yml");
        let addr: SocketAddr = format!("127.0.0.1:{}", port()).parse().expect("addr");
        let log = std::fs::File::create(dir.join("prometheus.log")).expect("log");
        let child = Command::new(bin)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn prometheus");
        let p = Prometheus { child, addr, dir };
        let deadline = Instant::now() + Duration::from_secs(30);
        while get(p.addr, "/-/ready").map(|a| a.status) != Some(200) {
            assert!(
                Instant::now() < deadline,
                "prometheus not ready:\n{}",
                p.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        p
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("prometheus.log")).unwrap_or_default()
    }

    /// The value of the one series an instant query returns, if any.
    fn query(&self, promql: &str) -> Option<f64> {
        let encoded: String = promql
            .bytes()
            .map(|b| match b {
                b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' => (b as char).to_string(),
                _ => format!("%{b:02X}"),
            })
            .collect();
        let a = get(self.addr, &format!("/api/v1/query?query={encoded}"))?;
        if a.status != 200 || !a.body.contains("\"status\":\"success\"") {
            return None;
        }
        // {"status":"success","data":{"resultType":"vector","result":[{"metric":{...},"value":[1.7e9,"123"]}]}}
        let value = a.body.split("\"value\":[").nth(1)?;
        let text = value.split('"').nth(1)?;
        text.parse().ok()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `GET path` over HTTP/1.0; None when the server does not answer.
fn get(addr: SocketAddr, path: &str) -> Option<Answer> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
        .ok()?;
    let mut got = Vec::new();
    s.read_to_end(&mut got).ok()?;
    got.windows(4)
        .any(|w| w == b"\r\n\r\n")
        .then(|| parse_answer(&got))
}

#[test]
fn prometheus_scrapes_the_relay_during_a_call() {
    let (rp, addr) = daemon(&[]);
    let prometheus = Prometheus::start(addr);
    let call = setup_call(&rp, "scraped");
    let start = Instant::now();
    let mut seq = 0u16;
    while start.elapsed() < Duration::from_secs(4) {
        round_trip(&call, seq);
        seq += 1;
        std::thread::sleep(Duration::from_millis(20));
    }
    let relayed = g(&rp)["npkts_relayed"];
    assert_eq!(relayed, 2.0 * f64::from(seq));
    // Scraped every second: the last scrape after the call's packets
    // shows them all, and the target is up.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let seen = prometheus.query("rtpproxy_packets_relayed_total");
        let up = prometheus.query("up{job=\"rtpproxy\"}");
        let active = prometheus.query("rtpproxy_sessions_active");
        if seen == Some(relayed) && up == Some(1.0) && active == Some(1.0) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "prometheus has relayed={seen:?} (want {relayed}), up={up:?}, active={active:?}\n{}",
            prometheus.log()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    // The histograms and the labelled counters came through too.
    let q = "sum(rtpproxy_commands_total{verb=\"U\",result=\"ok\"})";
    assert_eq!(prometheus.query(q), Some(1.0));
    let q = "rtpproxy_stream_mos_bucket{le=\"+Inf\"}";
    assert_eq!(prometheus.query(q), Some(0.0));
}
