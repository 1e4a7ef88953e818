//! `sweep`: `calls` at several call counts, as a CSV and a plot of relay
//! CPU per packet and p99 latency against the number of calls.

use crate::calls::run_calls;
use crate::options::Config;
use crate::report::Value;
use crate::runctl::stop_requested;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The report rows that make the CSV's columns, in order.
const COLUMNS: [&str; 14] = [
    "calls",
    "sent",
    "received",
    "loss_pct",
    "duplicates",
    "latency_p50_us",
    "latency_p99_us",
    "latency_max_us",
    "relay_cpu_pct",
    "relay_us_per_pkt",
    "relay_rss_kib",
    "generator_cpu_pct",
    "generator_saturated",
    "disturbed",
];
/// Longest gnuplot may take to draw one small plot.
const GNUPLOT_LIMIT: Duration = Duration::from_secs(30);

fn csv_cell(value: Option<&Value>) -> String {
    match value {
        Some(Value::Int(v)) => v.to_string(),
        Some(Value::Float(v, d)) => format!("{v:.d$}", d = *d),
        Some(Value::Bool(b)) => u8::from(*b).to_string(),
        Some(Value::Text(t)) => t.replace([',', '\n'], " "),
        Some(Value::Missing) | None => String::new(),
    }
}

/// Runs the sweep, printing each point's report as it completes.
pub fn run_sweep(cfg: &Config, relay_pid: Option<i32>, run: u32) -> Result<(), String> {
    let mut lines = vec![COLUMNS.join(",")];
    let mut failures = Vec::new();
    for (i, &n) in cfg.sweep_calls.iter().enumerate() {
        if stop_requested() {
            break;
        }
        if i > 0 {
            // Lets the relay finish deleting and the sockets close before
            // the next point is measured.
            std::thread::sleep(Duration::from_secs(cfg.sweep_pause_s));
        }
        match run_calls(cfg, n, relay_pid, run.wrapping_add(i as u32)) {
            Ok(report) => {
                report.emit(cfg.json.as_deref())?;
                let row: Vec<String> = COLUMNS
                    .iter()
                    .map(|key| csv_cell(report.value(key)))
                    .collect();
                lines.push(row.join(","));
            }
            Err(e) => {
                eprintln!("rtpp_bench: sweep point {n} calls failed: {e}");
                failures.push(n);
            }
        }
    }
    let mut csv = lines.join("\n");
    csv.push('\n');
    std::fs::write(&cfg.csv, csv).map_err(|e| format!("--csv {}: {e}", cfg.csv.display()))?;
    println!("sweep: wrote {}", cfg.csv.display());
    if lines.len() > 1 {
        match plot(&cfg.csv, &cfg.png, &cfg.label) {
            Ok(true) => println!("sweep: wrote {}", cfg.png.display()),
            Ok(false) => println!("sweep: gnuplot not found, no plot drawn"),
            Err(e) => eprintln!("rtpp_bench: plotting failed: {e}"),
        }
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(format!("sweep points failed: {failures:?} calls"))
    }
}

fn gnuplot_script(csv: &Path, png: &Path, label: &str) -> String {
    let column = |key: &str| COLUMNS.iter().position(|c| *c == key).map_or(0, |i| i + 1);
    let title = if label.is_empty() {
        "rtpp_bench sweep".to_string()
    } else {
        format!("rtpp_bench sweep: {label}")
    };
    format!(
        "set datafile separator ','\n\
         set terminal pngcairo size 900,560 noenhanced\n\
         set output '{png}'\n\
         set title '{title}'\n\
         set key autotitle columnhead top left\n\
         set xlabel 'concurrent calls (50 pps each way)'\n\
         set ylabel 'relay CPU per relayed packet (us)'\n\
         set y2label 'one-way latency p99 (us)'\n\
         set ytics nomirror\n\
         set y2tics\n\
         set yrange [0:*]\n\
         set y2range [0:*]\n\
         set grid\n\
         plot '{csv}' using {x}:{cpu} with linespoints title 'relay CPU per packet (us)' axes x1y1, \
         '' using {x}:{p99} with linespoints title 'p99 latency (us)' axes x1y2\n",
        png = quote(png),
        csv = quote(csv),
        title = title.replace('\'', ""),
        x = column("calls"),
        cpu = column("relay_us_per_pkt"),
        p99 = column("latency_p99_us"),
    )
}

/// A path inside single quotes for gnuplot, which has no escape for them.
fn quote(path: &Path) -> String {
    path.display().to_string().replace('\'', "")
}

/// Draws the plot; `Ok(false)` when gnuplot is not installed.
fn plot(csv: &Path, png: &Path, label: &str) -> Result<bool, String> {
    let spawned = Command::new("gnuplot")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match spawned {
        Ok(c) => c,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(format!("starting gnuplot: {e}")),
    };
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(gnuplot_script(csv, png, label).as_bytes())
            .map_err(|e| format!("feeding gnuplot: {e}"))?;
    }
    let started = Instant::now();
    // Bounded by GNUPLOT_LIMIT, polling every 50 ms.
    loop {
        match child.try_wait() {
            Ok(Some(status)) if status.success() => return Ok(true),
            Ok(Some(status)) => {
                let mut err = String::new();
                if let Some(mut stderr) = child.stderr.take() {
                    let _ = std::io::Read::read_to_string(&mut stderr, &mut err);
                }
                return Err(format!("gnuplot {status}: {}", err.trim()));
            }
            Ok(None) if started.elapsed() > GNUPLOT_LIMIT => {
                let _ = child.kill();
                let _ = child.wait();
                return Err("gnuplot took too long".into());
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(50)),
            Err(e) => return Err(format!("waiting for gnuplot: {e}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_cells_are_plain() {
        assert_eq!(csv_cell(Some(&Value::Int(5))), "5");
        assert_eq!(csv_cell(Some(&Value::Float(1.23456, 2))), "1.23");
        assert_eq!(csv_cell(Some(&Value::Bool(true))), "1");
        assert_eq!(csv_cell(Some(&Value::Text("a,b".into()))), "a b");
        assert_eq!(csv_cell(Some(&Value::Missing)), "");
        assert_eq!(csv_cell(None), "");
    }

    #[test]
    fn script_plots_the_right_columns() {
        let s = gnuplot_script(Path::new("/tmp/a.csv"), Path::new("/tmp/a.png"), "x'y");
        assert!(s.contains("using 1:10"), "{s}");
        assert!(s.contains("using 1:7"), "{s}");
        assert!(s.contains("'/tmp/a.png'"));
        assert!(s.contains("sweep: xy"));
    }
}
