//! One result, two renderings: a table for people and a JSON line for
//! scripts, built from the same rows so they never disagree.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::Path;

/// A value in a report row.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// Free text.
    Text(String),
    /// A count.
    Int(u64),
    /// A measurement, printed with this many decimals.
    Float(f64, usize),
    /// A yes/no verdict.
    Bool(bool),
    /// Not measured (for example no relay pid was given).
    Missing,
}

struct Row {
    key: &'static str,
    label: &'static str,
    value: Value,
    unit: &'static str,
}

/// The result of one run.
pub struct Report {
    mode: &'static str,
    title: String,
    rows: Vec<Row>,
    warnings: Vec<String>,
}

impl Report {
    /// An empty report for `mode`, headed by `title` in the table.
    pub fn new(mode: &'static str, title: String) -> Self {
        Report {
            mode,
            title,
            rows: Vec::new(),
            warnings: Vec::new(),
        }
    }

    fn push(&mut self, key: &'static str, label: &'static str, value: Value, unit: &'static str) {
        self.rows.push(Row {
            key,
            label,
            value,
            unit,
        });
    }

    /// Adds a text row.
    pub fn text(&mut self, key: &'static str, label: &'static str, value: &str) {
        self.push(key, label, Value::Text(value.to_string()), "");
    }

    /// Adds a count row.
    pub fn int(&mut self, key: &'static str, label: &'static str, value: u64, unit: &'static str) {
        self.push(key, label, Value::Int(value), unit);
    }

    /// Adds a measurement row; `None` is shown as not measured.
    pub fn float(
        &mut self,
        key: &'static str,
        label: &'static str,
        value: Option<f64>,
        decimals: usize,
        unit: &'static str,
    ) {
        let value = match value {
            Some(v) if v.is_finite() => Value::Float(v, decimals),
            _ => Value::Missing,
        };
        self.push(key, label, value, unit);
    }

    /// Adds a yes/no row.
    pub fn flag(&mut self, key: &'static str, label: &'static str, value: bool) {
        self.push(key, label, Value::Bool(value), "");
    }

    /// Adds a warning, printed loudly under the table and listed in JSON.
    pub fn warn(&mut self, text: String) {
        self.warnings.push(text);
    }

    /// The value of row `key`, for runs that compare reports.
    pub fn value(&self, key: &str) -> Option<&Value> {
        self.rows.iter().find(|r| r.key == key).map(|r| &r.value)
    }

    /// The value of row `key` as a number.
    pub fn number(&self, key: &str) -> Option<f64> {
        match self.value(key)? {
            Value::Int(v) => Some(*v as f64),
            Value::Float(v, _) => Some(*v),
            _ => None,
        }
    }

    /// The human-readable table.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "== {} ==", self.title);
        let width = self.rows.iter().map(|r| r.label.len()).max().unwrap_or(0);
        for row in &self.rows {
            let value = match &row.value {
                Value::Text(t) if t.is_empty() => "-".to_string(),
                Value::Text(t) => t.clone(),
                Value::Int(v) => v.to_string(),
                Value::Float(v, d) => format!("{v:.d$}", d = *d),
                Value::Bool(b) => if *b { "yes" } else { "no" }.to_string(),
                Value::Missing => "-".to_string(),
            };
            let _ = writeln!(out, "  {:<width$}  {} {}", row.label, value, row.unit);
        }
        for w in &self.warnings {
            let _ = writeln!(out, "  !!! {w}");
        }
        out
    }

    /// The same figures as one JSON object on one line.
    pub fn json_line(&self) -> String {
        let mut out = String::from("{");
        let _ = write!(out, "\"mode\":{}", json_string(self.mode));
        for row in &self.rows {
            let value = match &row.value {
                Value::Text(t) => json_string(t),
                Value::Int(v) => v.to_string(),
                Value::Float(v, d) => json_number(*v, *d),
                Value::Bool(b) => b.to_string(),
                Value::Missing => "null".to_string(),
            };
            let _ = write!(out, ",{}:{}", json_string(row.key), value);
        }
        out.push_str(",\"warnings\":[");
        let warnings: Vec<String> = self.warnings.iter().map(|w| json_string(w)).collect();
        out.push_str(&warnings.join(","));
        out.push_str("]}");
        out
    }

    /// Prints the table and the JSON line, and appends the JSON line to
    /// `json_file` when one is given.
    pub fn emit(&self, json_file: Option<&Path>) -> Result<(), String> {
        let line = self.json_line();
        let mut stdout = std::io::stdout().lock();
        let _ = write!(stdout, "{}", self.table());
        let _ = writeln!(stdout, "{line}");
        let _ = stdout.flush();
        match json_file {
            Some(path) => self.append_json(path),
            None => Ok(()),
        }
    }

    /// Appends the JSON line to `path`.
    pub fn append_json(&self, path: &Path) -> Result<(), String> {
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| format!("--json {}: {e}", path.display()))?;
        writeln!(file, "{}", self.json_line())
            .map_err(|e| format!("--json {}: {e}", path.display()))
    }
}

/// A JSON string literal with the escapes RFC 8259 requires.
pub fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A JSON number; NaN and infinities have no JSON form and become null.
pub fn json_number(v: f64, decimals: usize) -> String {
    if v.is_finite() {
        format!("{v:.decimals$}")
    } else {
        "null".to_string()
    }
}

/// What the generator's own figures say about whether it kept up.
#[derive(Debug, Clone, Copy, Default)]
pub struct GeneratorLoad {
    /// CPU the harness used over the measured window, in cores.
    pub cpu_cores: f64,
    /// How busy the harness's CPUs were by anyone, softirq included.
    pub cpus_busy: Option<f64>,
    /// CPUs the harness may run on.
    pub allowed_cpus: usize,
    /// Packets that were due in the measured window but never sent.
    pub unsent: u64,
    /// Packets sent more than the lateness threshold behind schedule.
    pub late: u64,
    /// Packets sent in the measured window.
    pub sent: u64,
    /// Datagrams dropped by the generator's own receive queues.
    pub receive_drops: u64,
}

/// Share of one CPU above which the generator is taken to be saturated.
const SATURATED_SHARE: f64 = 0.90;
/// Share of late packets above which sending fell behind.
const LATE_SHARE: f64 = 0.01;

/// Why the generator, not the relay, may have set the limit; empty when it
/// kept up.
pub fn saturation_reasons(load: &GeneratorLoad) -> Vec<String> {
    let mut reasons = Vec::new();
    let ceiling = load.allowed_cpus.max(1) as f64;
    if load.cpu_cores >= SATURATED_SHARE * ceiling {
        reasons.push(format!(
            "the generator used {:.0}% of the {} CPU(s) it may run on",
            100.0 * load.cpu_cores / ceiling,
            load.allowed_cpus
        ));
    }
    if let Some(busy) = load.cpus_busy.filter(|&b| b >= SATURATED_SHARE) {
        reasons.push(format!(
            "the CPU(s) the generator runs on were {:.0}% busy (softirq and other processes included)",
            100.0 * busy
        ));
    }
    if load.unsent > 0 {
        reasons.push(format!(
            "sending fell behind schedule: {} packets due were never sent",
            load.unsent
        ));
    }
    if load.sent > 0 && load.late as f64 > LATE_SHARE * load.sent as f64 {
        reasons.push(format!(
            "sending fell behind schedule: {:.1}% of packets went out late",
            100.0 * load.late as f64 / load.sent as f64
        ));
    }
    if load.receive_drops > 0 {
        reasons.push(format!(
            "the generator's own sockets dropped {} datagrams (receive queue full)",
            load.receive_drops
        ));
    }
    reasons
}

/// Adds the saturation warning to `report` when the generator did not keep
/// up, so the figures are not read as the relay's limit.
pub fn flag_saturation(report: &mut Report, load: &GeneratorLoad) {
    let reasons = saturation_reasons(load);
    report.flag(
        "generator_saturated",
        "generator saturated",
        !reasons.is_empty(),
    );
    for reason in reasons {
        report.warn(format!(
            "GENERATOR SATURATED: {reason}; these figures show the generator's limit, not the relay's"
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_strings_are_escaped() {
        assert_eq!(json_string("a\"b\\c\n\u{1}"), "\"a\\\"b\\\\c\\n\\u0001\"");
        assert_eq!(json_string("é"), "\"é\"");
    }

    #[test]
    fn json_numbers_have_no_nan() {
        assert_eq!(json_number(1.23456, 2), "1.23");
        assert_eq!(json_number(f64::NAN, 2), "null");
        assert_eq!(json_number(f64::INFINITY, 2), "null");
    }

    #[test]
    fn json_line_holds_every_row() {
        let mut r = Report::new("calls", "t".into());
        r.text("label", "label", "c \"1.2\"");
        r.int("calls", "calls", 500, "");
        r.float("p99_us", "p99", Some(12.345), 1, "us");
        r.float("relay_cpu", "cpu", None, 1, "%");
        r.flag("ok", "ok", true);
        r.warn("careful".into());
        assert_eq!(
            r.json_line(),
            "{\"mode\":\"calls\",\"label\":\"c \\\"1.2\\\"\",\"calls\":500,\"p99_us\":12.3,\
             \"relay_cpu\":null,\"ok\":true,\"warnings\":[\"careful\"]}"
        );
        assert_eq!(r.number("calls"), Some(500.0));
        assert_eq!(r.number("relay_cpu"), None);
        let table = r.table();
        assert!(table.contains("!!! careful"));
        assert!(table.contains("12.3 us"));
    }

    #[test]
    fn idle_generator_is_not_saturated() {
        let load = GeneratorLoad {
            cpu_cores: 0.3,
            allowed_cpus: 1,
            sent: 1000,
            late: 5,
            ..Default::default()
        };
        assert!(saturation_reasons(&load).is_empty());
    }

    #[test]
    fn each_sign_of_saturation_is_named() {
        let load = GeneratorLoad {
            cpu_cores: 0.95,
            cpus_busy: Some(0.97),
            allowed_cpus: 1,
            unsent: 3,
            late: 50,
            sent: 1000,
            receive_drops: 7,
        };
        let reasons = saturation_reasons(&load);
        assert_eq!(reasons.len(), 5);
        assert!(reasons[0].contains("95%"));
    }

    #[test]
    fn two_cpus_raise_the_ceiling() {
        let load = GeneratorLoad {
            cpu_cores: 1.0,
            allowed_cpus: 2,
            ..Default::default()
        };
        assert!(saturation_reasons(&load).is_empty());
    }
}
