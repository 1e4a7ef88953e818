//! Per-call accounting: what a session did, taken when it ends, written as
//! one INFO log line and, with `-A FILE`, as one JSON line per call
//! appended to FILE (rtpproxy(8), "ACCOUNTING").
//!
//! Formatting is pure (`CallRecord::log_line`, `CallRecord::json_line`);
//! `AccountFile` only appends finished lines.

use std::fmt::Write as _;
use std::fs::{File, OpenOptions};
use std::io::{self, ErrorKind, Write as _};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::rtpp_defines::{ByParty, Party};
use crate::rtpp_log;
use crate::rtpp_quality::{DirectionQuality, QualityReport};

/// Why a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndReason {
    /// `D`.
    Deleted,
    /// `X`.
    DeletedAll,
    /// Idle for `-T` seconds.
    Timeout,
    /// The daemon exited on a signal.
    Shutdown,
}

impl EndReason {
    /// The `reason` value of the JSON record.
    pub fn name(self) -> &'static str {
        match self {
            EndReason::Deleted => "deleted",
            EndReason::DeletedAll => "deleted_all",
            EndReason::Timeout => "timeout",
            EndReason::Shutdown => "shutdown",
        }
    }
}

/// Packets and bytes one party sent on one stream (strangers' packets,
/// dropped by latching, are not counted).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sent {
    pub packets: u64,
    pub bytes: u64,
}

/// The accounting record of one ended session, built by the session module
/// when the session ends.
#[derive(Debug, Clone, PartialEq)]
pub struct CallRecord<'a> {
    pub call_id: &'a [u8],
    /// The creating from-tag, media number included.
    pub from_tag: &'a [u8],
    /// The other party's tag, when a command named it.
    pub to_tag: Option<&'a [u8]>,
    pub reason: EndReason,
    /// When the session was created, since the Unix epoch.
    pub start: Duration,
    pub duration: Duration,
    /// The relay ports of the two legs; 0 for a leg never opened.
    pub ports: ByParty<u16>,
    pub rtp: ByParty<Sent>,
    pub rtcp: ByParty<Sent>,
    /// RTP and RTCP packets relayed, both directions.
    pub relayed: u64,
    /// RTP and RTCP packets dropped, both directions.
    pub dropped: u64,
    /// RTP packets each party sent that never reached the relay, estimated
    /// from the sequence numbers (RFC 3550: duplicates offset losses).
    pub lost: ByParty<u64>,
    /// The quality of each direction, written after the fields above.
    pub quality: QualityReport,
}

impl<'a> CallRecord<'a> {
    /// The INFO line logged when the session ends.
    pub fn log_line(&self) -> String {
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        let mut line = format!(
            "session ended ({:?}): call_id={} from_tag={} to_tag={} start={} duration={}s \
             ports={}/{} rtp_caller={}p/{}b rtp_callee={}p/{}b rtcp_caller={}p/{}b \
             rtcp_callee={}p/{}b relayed={} dropped={} lost_caller={} lost_callee={}",
            self.reason,
            text(self.call_id),
            text(self.from_tag),
            self.to_tag.map_or("NONE".into(), text),
            seconds(self.start),
            seconds(self.duration),
            self.ports[Party::Caller],
            self.ports[Party::Callee],
            self.rtp[Party::Caller].packets,
            self.rtp[Party::Caller].bytes,
            self.rtp[Party::Callee].packets,
            self.rtp[Party::Callee].bytes,
            self.rtcp[Party::Caller].packets,
            self.rtcp[Party::Caller].bytes,
            self.rtcp[Party::Callee].packets,
            self.rtcp[Party::Callee].bytes,
            self.relayed,
            self.dropped,
            self.lost[Party::Caller],
            self.lost[Party::Callee],
        );
        for party in Party::BOTH {
            for (name, value) in quality_fields(self.quality.direction(party)) {
                let _ = write!(line, " {name}_{party}=");
                value.write_text(&mut line);
            }
        }
        line
    }

    /// The same record as one JSON object on one line, newline included.
    pub fn json_line(&self) -> String {
        let mut out = String::with_capacity(512);
        out.push_str("{\"call_id\":");
        json_string(&mut out, self.call_id);
        out.push_str(",\"from_tag\":");
        json_string(&mut out, self.from_tag);
        out.push_str(",\"to_tag\":");
        match self.to_tag {
            Some(t) => json_string(&mut out, t),
            None => out.push_str("null"),
        }
        let _ = write!(
            out,
            ",\"reason\":\"{}\",\"start\":{},\"duration\":{}",
            self.reason.name(),
            seconds(self.start),
            seconds(self.duration)
        );
        let numbers = [
            ("port_caller", u64::from(self.ports[Party::Caller])),
            ("port_callee", u64::from(self.ports[Party::Callee])),
            ("rtp_caller_packets", self.rtp[Party::Caller].packets),
            ("rtp_caller_bytes", self.rtp[Party::Caller].bytes),
            ("rtp_callee_packets", self.rtp[Party::Callee].packets),
            ("rtp_callee_bytes", self.rtp[Party::Callee].bytes),
            ("rtcp_caller_packets", self.rtcp[Party::Caller].packets),
            ("rtcp_caller_bytes", self.rtcp[Party::Caller].bytes),
            ("rtcp_callee_packets", self.rtcp[Party::Callee].packets),
            ("rtcp_callee_bytes", self.rtcp[Party::Callee].bytes),
            ("relayed", self.relayed),
            ("dropped", self.dropped),
            ("lost_caller", self.lost[Party::Caller]),
            ("lost_callee", self.lost[Party::Callee]),
        ];
        for (name, value) in numbers {
            let _ = write!(out, ",\"{name}\":{value}");
        }
        for party in Party::BOTH {
            for (name, value) in quality_fields(self.quality.direction(party)) {
                let _ = write!(out, ",\"{name}_{party}\":");
                value.write_json(&mut out);
            }
        }
        out.push_str("}\n");
        out
    }
}

/// A quality figure as the record writes it.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Figure {
    Count(u64),
    Signed(i64),
    /// A value with its decimals and, in the log line, its unit.
    Measure(f64, usize, &'static str),
    Word(&'static str),
    /// Not measured: `NONE` in the log line, `null` in JSON.
    Missing,
}

impl Figure {
    fn write_text(&self, out: &mut String) {
        let _ = match *self {
            Figure::Count(v) => write!(out, "{v}"),
            Figure::Signed(v) => write!(out, "{v}"),
            Figure::Measure(v, decimals, unit) => write!(out, "{v:.decimals$}{unit}"),
            Figure::Word(w) => write!(out, "{w}"),
            Figure::Missing => write!(out, "NONE"),
        };
    }

    fn write_json(&self, out: &mut String) {
        let _ = match *self {
            // NaN and infinities are not JSON; the meters make none.
            Figure::Measure(v, _, _) if !v.is_finite() => {
                write!(out, "null")
            }
            Figure::Measure(v, decimals, _) => write!(out, "{v:.decimals$}"),
            Figure::Word(w) => write!(out, "\"{w}\""),
            Figure::Missing => write!(out, "null"),
            Figure::Count(_) | Figure::Signed(_) => {
                self.write_text(out);
                Ok(())
            }
        };
    }
}

/// The quality figures of one direction, by name (the record appends
/// `_caller` or `_callee`); doc/PROTOCOL.md, "Accounting", says what
/// each means.
fn quality_fields(q: &DirectionQuality) -> [(&'static str, Figure); 18] {
    let measure = |v: Option<f64>, decimals, unit| {
        v.map_or(Figure::Missing, |v| Figure::Measure(v, decimals, unit))
    };
    [
        ("mos", measure(q.mos, 2, "")),
        ("r", measure(q.r_factor, 1, "")),
        (
            "pt",
            q.payload_type
                .map_or(Figure::Missing, |pt| Figure::Count(u64::from(pt))),
        ),
        ("expected", Figure::Count(q.expected)),
        ("received", Figure::Count(q.received)),
        ("loss", Figure::Measure(q.loss_pct, 2, "%")),
        ("dups", Figure::Count(q.dups)),
        ("reordered", Figure::Count(q.reordered)),
        ("ssrc_changes", Figure::Count(q.ssrc_changes)),
        ("jitter", measure(q.jitter_ms, 2, "ms")),
        ("jitter_max", measure(q.jitter_max_ms, 2, "ms")),
        ("jitter_clock", Figure::Word(q.clock.name())),
        ("max_gap", Figure::Measure(q.max_gap_ms, 1, "ms")),
        ("rtt", measure(q.rtt_ms, 1, "ms")),
        ("rtcp_loss", measure(q.rtcp_loss_pct, 2, "%")),
        (
            "rtcp_lost",
            q.rtcp_cumulative_lost
                .map_or(Figure::Missing, Figure::Signed),
        ),
        ("rtcp_jitter", measure(q.rtcp_jitter_ms, 2, "ms")),
        ("rtcp_errs", Figure::Count(q.rtcp_errors)),
    ]
}

/// Seconds with millisecond precision: `12.345`.
fn seconds(d: Duration) -> String {
    format!("{}.{:03}", d.as_secs(), d.subsec_millis())
}

/// Appends `bytes` as a JSON string. Call-IDs and tags are whatever bytes
/// the SIP proxy sent: valid UTF-8 is kept, `"` and `\` are escaped,
/// control characters become `\u00XX`, and every byte that is not part of
/// valid UTF-8 becomes `\u00XX` of that byte, so the line is always valid
/// JSON and one line.
pub fn json_string(out: &mut String, bytes: &[u8]) {
    out.push('"');
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                c if c.is_control() && (c as u32) < 0x80 => {
                    let _ = write!(out, "\\u{:04x}", c as u32);
                }
                c => out.push(c),
            }
        }
        for b in chunk.invalid() {
            let _ = write!(out, "\\u{b:04x}");
        }
    }
    out.push('"');
}

/// Mode of a newly created `-A` file (less the umask): call records name
/// who called whom, not for every local account.
const ACCOUNT_FILE_MODE: u32 = 0o640;

/// The `-A` file, kept open for appending. After the first failed write
/// it is given up: one ERR line says so and later records go only to the
/// log, so a full disk costs no more than a log line.
pub struct AccountFile {
    file: Option<File>,
    path: PathBuf,
}

impl AccountFile {
    /// Opens (creating it when missing) `path` for appending. Non-blocking,
    /// so that neither opening a FIFO nobody reads nor writing to a full
    /// pipe can stall the daemon; a regular file is not affected.
    pub fn open(path: &Path) -> io::Result<AccountFile> {
        use std::os::unix::fs::OpenOptionsExt;
        let file = OpenOptions::new()
            .append(true)
            .create(true)
            .mode(ACCOUNT_FILE_MODE)
            .custom_flags(nix::fcntl::OFlag::O_NONBLOCK.bits())
            .open(path)?;
        Ok(AccountFile {
            file: Some(file),
            path: path.to_path_buf(),
        })
    }

    /// True until a write failed.
    pub fn is_open(&self) -> bool {
        self.file.is_some()
    }

    /// Appends one finished line with a single write(2), so that lines of
    /// concurrent writers (or a copy-and-truncate rotation) never interleave
    /// within a line.
    pub fn append(&mut self, line: &str) {
        let Some(file) = &mut self.file else {
            return;
        };
        // Bounded: a write to a local file is interrupted rarely, if ever.
        let mut result = file.write(line.as_bytes());
        for _ in 0..3 {
            match &result {
                Err(e) if e.kind() == ErrorKind::Interrupted => {
                    result = file.write(line.as_bytes());
                }
                _ => break,
            }
        }
        let failure = match result {
            Ok(n) if n == line.len() => return,
            Ok(n) => format!("short write ({n} of {} bytes)", line.len()),
            Err(e) => e.to_string(),
        };
        rtpp_log!(
            Err,
            "accounting file {}: {failure}; no more call records are written to it",
            self.path.display()
        );
        self.file = None;
    }
}

// Carried across a hand-over (doc/PROTOCOL.md, "Hand-over"): the open
// file, so records go on into the same file even when its directory is
// no longer writable by the daemon's account.
impl crate::rtpp_handover::wire::Carry for AccountFile {
    fn put(&self, w: &mut crate::rtpp_handover::wire::Writer) {
        match &self.file {
            Some(f) => {
                w.u8(1);
                w.fd(f);
            }
            None => w.u8(0),
        }
        w.put(&self.path);
    }
    fn take(
        r: &mut crate::rtpp_handover::wire::Reader<'_>,
    ) -> crate::rtpp_handover::wire::WireResult<Self> {
        let file = match r.u8()? {
            0 => None,
            1 => {
                let fd = r.fd()?;
                crate::rtpp_handover::wire::check_file(&fd)?;
                Some(File::from(fd))
            }
            v => return crate::rtpp_handover::wire::refuse(format!("bad accounting tag {v}")),
        };
        Ok(AccountFile {
            file,
            path: r.take()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rtpp_quality::ClockSource;

    fn json(bytes: &[u8]) -> String {
        let mut out = String::new();
        json_string(&mut out, bytes);
        out
    }

    #[test]
    fn plain_text_is_quoted() {
        assert_eq!(json(b"1-2345@127.0.0.1"), r#""1-2345@127.0.0.1""#);
        assert_eq!(json(b""), r#""""#);
    }

    #[test]
    fn quote_and_backslash_are_escaped() {
        assert_eq!(json(br#"a"b\c"#), r#""a\"b\\c""#);
    }

    #[test]
    fn control_characters_become_u_escapes() {
        assert_eq!(
            json(b"a\nb\tc\rd\0e\x1f\x7f"),
            r#""a\u000ab\u0009c\u000dd\u0000e\u001f\u007f""#
        );
    }

    #[test]
    fn utf8_is_kept() {
        assert_eq!(
            json("caf\u{e9} \u{2603}".as_bytes()),
            "\"caf\u{e9} \u{2603}\""
        );
    }

    #[test]
    fn bytes_outside_utf8_become_u_escapes_of_the_byte() {
        assert_eq!(json(b"a\xffb\xc3"), r#""a\u00ffb\u00c3""#);
        // A truncated sequence followed by valid text.
        assert_eq!(json(b"\xe2\x98x"), r#""\u00e2\u0098x""#);
    }

    fn record<'a>() -> CallRecord<'a> {
        CallRecord {
            call_id: b"c\"1",
            from_tag: b"ft;1",
            to_tag: Some(b"tt;1"),
            reason: EndReason::Deleted,
            start: Duration::from_millis(1_700_000_000_123),
            duration: Duration::from_millis(12_045),
            ports: ByParty::from_fn(|p| if p == Party::Caller { 35000 } else { 35002 }),
            rtp: ByParty::from_fn(|p| match p {
                Party::Caller => Sent {
                    packets: 5,
                    bytes: 860,
                },
                Party::Callee => Sent {
                    packets: 4,
                    bytes: 688,
                },
            }),
            rtcp: ByParty::from_fn(|p| match p {
                Party::Caller => Sent {
                    packets: 1,
                    bytes: 28,
                },
                Party::Callee => Sent::default(),
            }),
            relayed: 10,
            dropped: 0,
            lost: ByParty::from_fn(|p| u64::from(p == Party::Callee)),
            quality: QualityReport::default(),
        }
    }

    /// A caller's direction with every figure measured; the callee sent
    /// nothing.
    fn measured() -> QualityReport {
        let caller = DirectionQuality {
            payload_type: Some(0),
            codec: "G.711",
            expected: 250,
            received: 226,
            lost: 25,
            loss_pct: 10.0,
            dups: 1,
            reordered: 2,
            ssrc_changes: 0,
            jitter_ms: Some(1.234),
            jitter_max_ms: Some(2.5),
            clock_rate: Some(8000),
            clock: ClockSource::Static,
            max_gap_ms: 40.04,
            rtcp_packets: 3,
            rtcp_errors: 1,
            rtcp_reports: 2,
            rtcp_loss_pct: Some(9.765625),
            rtcp_cumulative_lost: Some(-2),
            rtcp_jitter_ms: Some(0.5),
            rtt_ms: Some(20.06),
            r_factor: Some(70.123),
            mos: Some(3.6049),
        };
        QualityReport {
            caller,
            callee: DirectionQuality::default(),
        }
    }

    const CALLER_QUALITY_JSON: &str = "\"mos_caller\":3.60,\"r_caller\":70.1,\"pt_caller\":0,\
        \"expected_caller\":250,\"received_caller\":226,\"loss_caller\":10.00,\
        \"dups_caller\":1,\"reordered_caller\":2,\"ssrc_changes_caller\":0,\
        \"jitter_caller\":1.23,\"jitter_max_caller\":2.50,\"jitter_clock_caller\":\"static\",\
        \"max_gap_caller\":40.0,\"rtt_caller\":20.1,\"rtcp_loss_caller\":9.77,\
        \"rtcp_lost_caller\":-2,\"rtcp_jitter_caller\":0.50,\"rtcp_errs_caller\":1";

    const CALLEE_NOTHING_JSON: &str = "\"mos_callee\":null,\"r_callee\":null,\"pt_callee\":null,\
        \"expected_callee\":0,\"received_callee\":0,\"loss_callee\":0.00,\
        \"dups_callee\":0,\"reordered_callee\":0,\"ssrc_changes_callee\":0,\
        \"jitter_callee\":null,\"jitter_max_callee\":null,\"jitter_clock_callee\":\"none\",\
        \"max_gap_callee\":0.0,\"rtt_callee\":null,\"rtcp_loss_callee\":null,\
        \"rtcp_lost_callee\":null,\"rtcp_jitter_callee\":null,\"rtcp_errs_callee\":0";

    #[test]
    fn json_line_holds_every_field_on_one_line() {
        let r = CallRecord {
            quality: measured(),
            ..record()
        };
        assert_eq!(
            r.json_line(),
            format!(
                "{{\"call_id\":\"c\\\"1\",\"from_tag\":\"ft;1\",\"to_tag\":\"tt;1\",\
                 \"reason\":\"deleted\",\"start\":1700000000.123,\"duration\":12.045,\
                 \"port_caller\":35000,\"port_callee\":35002,\
                 \"rtp_caller_packets\":5,\"rtp_caller_bytes\":860,\
                 \"rtp_callee_packets\":4,\"rtp_callee_bytes\":688,\
                 \"rtcp_caller_packets\":1,\"rtcp_caller_bytes\":28,\
                 \"rtcp_callee_packets\":0,\"rtcp_callee_bytes\":0,\
                 \"relayed\":10,\"dropped\":0,\"lost_caller\":0,\"lost_callee\":1,\
                 {CALLER_QUALITY_JSON},{CALLEE_NOTHING_JSON}}}\n"
            )
        );
    }

    #[test]
    fn missing_to_tag_is_null() {
        let r = CallRecord {
            to_tag: None,
            reason: EndReason::Timeout,
            ..record()
        };
        let line = r.json_line();
        assert!(
            line.contains(",\"to_tag\":null,\"reason\":\"timeout\","),
            "{line}"
        );
        assert_eq!(line.matches('\n').count(), 1);
    }

    #[test]
    fn log_line_names_the_same_fields() {
        let r = CallRecord {
            quality: measured(),
            ..record()
        };
        let line = r.log_line();
        assert!(line.starts_with("session ended (Deleted): call_id=c\"1 from_tag=ft;1 to_tag=tt;1 start=1700000000.123 duration=12.045s ports=35000/35002 "), "{line}");
        assert!(
            line.contains(" relayed=10 dropped=0 lost_caller=0 lost_callee=1 mos_caller=3.60 "),
            "{line}"
        );
        assert!(
            line.contains(
                " mos_caller=3.60 r_caller=70.1 pt_caller=0 expected_caller=250 \
                 received_caller=226 loss_caller=10.00% dups_caller=1 reordered_caller=2 \
                 ssrc_changes_caller=0 jitter_caller=1.23ms jitter_max_caller=2.50ms \
                 jitter_clock_caller=static max_gap_caller=40.0ms rtt_caller=20.1ms \
                 rtcp_loss_caller=9.77% rtcp_lost_caller=-2 rtcp_jitter_caller=0.50ms \
                 rtcp_errs_caller=1 mos_callee=NONE r_callee=NONE pt_callee=NONE "
            ),
            "{line}"
        );
        assert!(
            line.ends_with(" rtcp_jitter_callee=NONE rtcp_errs_callee=0"),
            "{line}"
        );
        // Every field of the JSON record is in the line, by the same name.
        let json = r.json_line();
        for pair in json.trim_end().trim_matches(['{', '}']).split(',') {
            let name = pair.split(':').next().unwrap().trim_matches('"');
            let spelled = match name {
                "duration" | "start" | "reason" | "call_id" | "from_tag" | "to_tag" => continue,
                n if n.starts_with("port_") || n.starts_with("rtp_") || n.starts_with("rtcp_c") => {
                    continue
                }
                n => format!(" {n}="),
            };
            assert!(line.contains(&spelled), "{spelled} not in {line}");
        }
    }

    #[test]
    fn reasons_have_json_names() {
        let names: Vec<&str> = [
            EndReason::Deleted,
            EndReason::DeletedAll,
            EndReason::Timeout,
            EndReason::Shutdown,
        ]
        .iter()
        .map(|r| r.name())
        .collect();
        assert_eq!(names, ["deleted", "deleted_all", "timeout", "shutdown"]);
    }

    #[test]
    fn account_file_appends_lines() {
        let dir = crate::test_support::TempDir::new("acct");
        let path = dir.join("acct.json");
        std::fs::write(&path, "earlier\n").unwrap();
        let mut f = AccountFile::open(&path).unwrap();
        f.append("one\n");
        f.append("two\n");
        assert!(f.is_open());
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "earlier\none\ntwo\n"
        );
    }

    #[test]
    fn account_file_gives_up_after_a_failed_write() {
        // Every write to /dev/full fails with ENOSPC.
        let mut f = AccountFile::open(Path::new("/dev/full")).unwrap();
        f.append("one\n");
        assert!(!f.is_open());
        f.append("two\n");
        assert!(!f.is_open());
    }

    #[test]
    fn account_file_open_fails_on_a_missing_directory() {
        assert!(AccountFile::open(Path::new("/nonexistent-rtpp-dir/acct.json")).is_err());
    }
}
