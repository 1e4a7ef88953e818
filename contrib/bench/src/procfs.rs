//! What the kernel says about the relay and about the harness itself: CPU
//! time, memory, and UDP receive-queue drops.

use nix::sys::resource::{getrusage, UsageWho};
use nix::unistd::{sysconf, SysconfVar};
use std::collections::HashSet;
use std::path::Path;

/// Reads the relay's pid from `--pid` or a pidfile, and checks it is alive.
pub fn resolve_pid(pid: Option<i32>, pidfile: Option<&Path>) -> Result<Option<i32>, String> {
    let pid = match (pid, pidfile) {
        (Some(p), _) => Some(p),
        (None, Some(path)) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("--pidfile {}: {e}", path.display()))?;
            let p = text.trim().parse::<i32>().map_err(|_| {
                format!("--pidfile {}: no pid in {:?}", path.display(), text.trim())
            })?;
            Some(p)
        }
        (None, None) => None,
    };
    if let Some(p) = pid {
        if p <= 0 {
            return Err(format!("relay pid {p} is not a process id"));
        }
        read_cpu_ticks(p).map_err(|e| format!("relay pid {p}: {e}"))?;
    }
    Ok(pid)
}

/// Whether process `pid` still exists (and is not a zombie).
pub fn is_alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(text) => parse_stat_state(&text).is_some_and(|s| s != 'Z' && s != 'X'),
        Err(_) => false,
    }
}

/// utime + stime of process `pid` in clock ticks, all threads included.
pub fn read_cpu_ticks(pid: i32) -> Result<u64, String> {
    let path = format!("/proc/{pid}/stat");
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{path}: {e}"))?;
    parse_stat_cpu_ticks(&text).ok_or_else(|| format!("{path}: unexpected format"))
}

/// The fields after the command name, which may itself hold spaces and
/// parentheses; only the last `)` ends it.
fn stat_fields_after_comm(text: &str) -> Option<Vec<&str>> {
    let end = text.rfind(')')?;
    Some(text[end + 1..].split_ascii_whitespace().collect())
}

/// utime (field 14) + stime (field 15) of a `/proc/PID/stat` line.
pub fn parse_stat_cpu_ticks(text: &str) -> Option<u64> {
    let fields = stat_fields_after_comm(text)?;
    // fields[0] is field 3 (state), so field N is fields[N - 3].
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

fn parse_stat_state(text: &str) -> Option<char> {
    stat_fields_after_comm(text)?.first()?.chars().next()
}

/// Clock ticks per second, the unit of `/proc/PID/stat` times.
pub fn ticks_per_second() -> u64 {
    match sysconf(SysconfVar::CLK_TCK) {
        Ok(Some(t)) if t > 0 => t as u64,
        // Linux has used 100 on every architecture for user space.
        _ => 100,
    }
}

/// Resident memory of `pid`: (current VmRSS, peak VmHWM) in KiB.
pub fn read_rss_kib(pid: i32) -> Result<(u64, u64), String> {
    let path = format!("/proc/{pid}/status");
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{path}: {e}"))?;
    let rss = parse_status_kib(&text, "VmRSS").ok_or_else(|| format!("{path}: no VmRSS"))?;
    let hwm = parse_status_kib(&text, "VmHWM").unwrap_or(rss);
    Ok((rss, hwm))
}

/// The value of a `Key:   1234 kB` line of `/proc/PID/status`.
pub fn parse_status_kib(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let rest = line.strip_prefix(key)?.strip_prefix(':')?;
        rest.split_ascii_whitespace().next()?.parse().ok()
    })
}

/// CPU time (user + system) this process has used, in nanoseconds.
pub fn self_cpu_ns() -> u64 {
    match getrusage(UsageWho::RUSAGE_SELF) {
        Ok(usage) => timeval_ns(usage.user_time()) + timeval_ns(usage.system_time()),
        // getrusage(RUSAGE_SELF) cannot fail; zero makes the figure absent.
        Err(_) => 0,
    }
}

fn timeval_ns(tv: nix::sys::time::TimeVal) -> u64 {
    let secs = u64::try_from(tv.tv_sec()).unwrap_or(0);
    let micros = u64::try_from(tv.tv_usec()).unwrap_or(0);
    secs * 1_000_000_000 + micros * 1_000
}

/// How many CPUs this process may run on (its affinity mask), which is the
/// ceiling of its own CPU use.
pub fn allowed_cpus() -> usize {
    affinity_of(0).len().max(1)
}

/// Busy and total clock ticks of one CPU since boot.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CpuTicks {
    /// Ticks spent on anything but idle and iowait: processes of every
    /// owner, interrupts and softirqs.
    pub busy: u64,
    /// Ticks spent running processes (user, nice, system), plus ticks the
    /// hypervisor gave to someone else (steal): what other work can take.
    pub tasks: u64,
    /// All ticks.
    pub total: u64,
}

/// Per-CPU tick counters from `/proc/stat`, indexed by CPU number; empty
/// when it cannot be read.
pub fn read_cpu_times() -> Vec<CpuTicks> {
    std::fs::read_to_string("/proc/stat")
        .map(|text| parse_cpu_times(&text))
        .unwrap_or_default()
}

/// Parses the `cpuN ...` lines of `/proc/stat`. Softirq time gets its own
/// column there and is charged to no process, which is why a relay's own
/// utime+stime understates what its core did for it.
pub fn parse_cpu_times(text: &str) -> Vec<CpuTicks> {
    let mut cpus = Vec::new();
    for line in text.lines() {
        let mut fields = line.split_ascii_whitespace();
        let Some(name) = fields.next() else { continue };
        let Some(index) = name
            .strip_prefix("cpu")
            .and_then(|n| n.parse::<usize>().ok())
        else {
            continue;
        };
        // user nice system idle iowait irq softirq steal; guest time is
        // already inside user and nice.
        let v: Vec<u64> = fields.take(8).filter_map(|f| f.parse().ok()).collect();
        if v.len() < 8 {
            continue;
        }
        let total: u64 = v.iter().sum();
        let idle = v[3] + v[4];
        if cpus.len() <= index {
            cpus.resize(index + 1, CpuTicks::default());
        }
        cpus[index] = CpuTicks {
            busy: total - idle,
            tasks: v[0] + v[1] + v[2] + v[7],
            total,
        };
    }
    cpus
}

/// The CPUs process `pid` may run on (0 = this process).
pub fn affinity_of(pid: i32) -> Vec<usize> {
    use nix::sched::{sched_getaffinity, CpuSet};
    use nix::unistd::Pid;
    match sched_getaffinity(Pid::from_raw(pid)) {
        Ok(set) => (0..CpuSet::count())
            .filter(|&cpu| set.is_set(cpu).unwrap_or(false))
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// Socket inodes of the UDP sockets bound to `port`, from the text of
/// `/proc/net/udp` or `/proc/net/udp6` (the inode is the tenth column).
pub fn parse_udp_inodes(text: &str, port: u16) -> Vec<u64> {
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_ascii_whitespace().collect();
            let (_, port_hex) = fields.get(1)?.rsplit_once(':')?;
            if u16::from_str_radix(port_hex, 16).ok()? != port {
                return None;
            }
            fields.get(9)?.parse().ok()
        })
        .collect()
}

/// Socket inodes of the unix sockets bound to `path`, from the text of
/// `/proc/net/unix` (inode in the seventh column, path in the eighth).
pub fn parse_unix_inodes(text: &str, path: &str) -> Vec<u64> {
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_ascii_whitespace().collect();
            if fields.get(7) != Some(&path) {
                return None;
            }
            fields.get(6)?.parse().ok()
        })
        .collect()
}

/// Whether process `pid` holds one of the sockets `inodes`; `None` when
/// its descriptors cannot be read.
pub fn holds_socket(pid: i32, inodes: &[u64]) -> Option<bool> {
    let entries = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?;
    let held = entries.filter_map(|e| e.ok()).any(|entry| {
        std::fs::read_link(entry.path())
            .ok()
            .and_then(|target| {
                let t = target.to_string_lossy().into_owned();
                t.strip_prefix("socket:[")?
                    .strip_suffix(']')?
                    .parse::<u64>()
                    .ok()
            })
            .is_some_and(|inode| inodes.contains(&inode))
    });
    Some(held)
}

/// Sum of the `drops` column of `/proc/net/udp` and `/proc/net/udp6` over
/// the sockets bound to one of `ports`: datagrams the kernel threw away
/// because that socket's receive queue was full.
pub fn read_udp_drops(ports: &HashSet<u16>) -> u64 {
    ["/proc/net/udp", "/proc/net/udp6"]
        .iter()
        .filter_map(|path| std::fs::read_to_string(path).ok())
        .map(|text| parse_udp_drops(&text, ports))
        .sum()
}

/// The drops of the sockets whose local port is in `ports`, from the text
/// of `/proc/net/udp` (header line first, the drops count last).
pub fn parse_udp_drops(text: &str, ports: &HashSet<u16>) -> u64 {
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let mut fields = line.split_ascii_whitespace();
            let local = fields.nth(1)?;
            let (_, port_hex) = local.rsplit_once(':')?;
            let port = u16::from_str_radix(port_hex, 16).ok()?;
            if !ports.contains(&port) {
                return None;
            }
            line.split_ascii_whitespace().last()?.parse::<u64>().ok()
        })
        .sum()
}

/// The machine in one line: CPU model, CPUs online, kernel release.
pub fn machine_description() -> String {
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|text| parse_cpu_model(&text))
        .unwrap_or_else(|| "unknown CPU".into());
    let cpus = sysconf(SysconfVar::_NPROCESSORS_ONLN)
        .ok()
        .flatten()
        .unwrap_or(0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|k| k.trim().to_string())
        .unwrap_or_else(|_| "unknown".into());
    format!("{model}, {cpus} CPUs online, Linux {kernel}")
}

/// The first `model name` of `/proc/cpuinfo` (some architectures call it
/// `Processor` or `cpu model`).
fn parse_cpu_model(text: &str) -> Option<String> {
    ["model name", "Processor", "cpu model"]
        .iter()
        .find_map(|key| {
            text.lines().find_map(|line| {
                let (k, v) = line.split_once(':')?;
                (k.trim() == *key && !v.trim().is_empty()).then(|| v.trim().to_string())
            })
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    const STAT: &str = "4242 (rtp proxy) (x)) S 1 4242 4242 0 -1 4194560 120 0 0 0 \
                        731 269 0 0 20 0 1 0 12345 10000000 300 18446744073709551615";

    #[test]
    fn stat_cpu_survives_odd_command_names() {
        assert_eq!(parse_stat_cpu_ticks(STAT), Some(1000));
        assert_eq!(parse_stat_state(STAT), Some('S'));
    }

    #[test]
    fn stat_cpu_rejects_truncated_lines() {
        assert_eq!(parse_stat_cpu_ticks("12 (x) S 1 2 3"), None);
        assert_eq!(parse_stat_cpu_ticks("garbage"), None);
    }

    #[test]
    fn own_stat_is_readable() {
        let pid = std::process::id() as i32;
        assert!(read_cpu_ticks(pid).is_ok());
        assert!(is_alive(pid));
        assert!(read_rss_kib(pid).is_ok_and(|(rss, hwm)| rss > 0 && hwm >= rss));
    }

    #[test]
    fn status_values_are_found_by_key() {
        let text = "Name:\trtpproxy\nVmHWM:\t   9000 kB\nVmRSS:\t    8123 kB\n";
        assert_eq!(parse_status_kib(text, "VmRSS"), Some(8123));
        assert_eq!(parse_status_kib(text, "VmHWM"), Some(9000));
        assert_eq!(parse_status_kib(text, "VmSwap"), None);
    }

    #[test]
    fn udp_drops_are_summed_for_our_ports() {
        let text = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops\n\
  1: 0100007F:7530 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 1 2 0000000000000000 17\n\
  2: 0100007F:7532 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 1 2 0000000000000000 0\n\
  3: 00000000:7534 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 1 2 0000000000000000 5\n\
  4: 0100007F:0050 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 1 2 0000000000000000 99\n";
        let ports: HashSet<u16> = [30000, 30002, 30004].into_iter().collect();
        assert_eq!(parse_udp_drops(text, &ports), 22);
        assert_eq!(parse_udp_drops("header only\n", &ports), 0);
    }

    #[test]
    fn cpu_times_count_softirq_as_busy() {
        let text = "cpu  10 0 10 100 0 0 5 0 0 0\n\
                    cpu0 4 0 6 50 2 0 5 0 3 0\n\
                    cpu1 6 0 4 48 0 0 0 0 0 0\n\
                    intr 12345\n";
        let cpus = parse_cpu_times(text);
        assert_eq!(cpus.len(), 2);
        assert_eq!(
            cpus[0],
            CpuTicks {
                busy: 15,
                tasks: 10,
                total: 67
            }
        );
        assert_eq!(
            cpus[1],
            CpuTicks {
                busy: 10,
                tasks: 10,
                total: 58
            }
        );
        assert!(parse_cpu_times("cpu0 1 2\n").is_empty());
    }

    #[test]
    fn own_affinity_is_not_empty() {
        assert!(!affinity_of(0).is_empty());
        assert!(allowed_cpus() >= 1);
    }

    #[test]
    fn socket_inodes_are_found_by_port_and_path() {
        let udp = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops\n\
  1: 0100007F:56FC 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 4242 2 0000000000000000 0\n\
  2: 0100007F:7530 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 4343 2 0000000000000000 0\n";
        assert_eq!(parse_udp_inodes(udp, 22268), vec![4242]);
        assert!(parse_udp_inodes(udp, 1).is_empty());
        let unix = "Num       RefCount Protocol Flags    Type St Inode Path\n\
0000000000000000: 00000002 00000000 00010000 0001 01 5151 /tmp/rtpp.sock\n\
0000000000000000: 00000002 00000000 00000000 0001 03 5252\n";
        assert_eq!(parse_unix_inodes(unix, "/tmp/rtpp.sock"), vec![5151]);
        assert!(parse_unix_inodes(unix, "/tmp/other.sock").is_empty());
    }

    #[test]
    fn a_process_holding_a_socket_is_recognised() {
        let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = sock.local_addr().unwrap().port();
        let text = std::fs::read_to_string("/proc/net/udp").unwrap();
        let inodes = parse_udp_inodes(&text, port);
        assert_eq!(holds_socket(std::process::id() as i32, &inodes), Some(true));
        assert_eq!(holds_socket(std::process::id() as i32, &[0]), Some(false));
    }

    #[test]
    fn cpu_model_is_found() {
        let text = "processor\t: 0\nvendor_id\t: X\nmodel name\t: Some CPU @ 2.80GHz\n";
        assert_eq!(parse_cpu_model(text), Some("Some CPU @ 2.80GHz".into()));
        assert_eq!(parse_cpu_model("nothing\n"), None);
        assert!(machine_description().contains("Linux"));
    }

    #[test]
    fn missing_pid_is_an_error() {
        assert!(resolve_pid(Some(-5), None).is_err());
        assert!(resolve_pid(None, Some(Path::new("/nonexistent/pidfile"))).is_err());
        assert_eq!(resolve_pid(None, None), Ok(None));
    }
}
