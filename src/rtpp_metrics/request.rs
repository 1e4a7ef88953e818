//! Reading one HTTP request of a metrics scraper: pure, no socket, so it
//! is fuzzed (fuzz/fuzz_targets/http.rs). The bytes are kept up to
//! [`REQUEST_LIMIT`]; the request line and headers are parsed with
//! `httparse` (allocation-free, no runtime), and the first complete head,
//! a syntax error, the limit or end of file decides the answer. A body is
//! never read: only `GET` is served.
//!
//! What is held is parsed again as each of the first [`EARLY_BYTES`]
//! arrives (junk, such as a TLS hello, is refused at once), then only
//! when a line ends (or at the limit, or at end of file); and a head
//! holds few lines: a partial one has at most [`MAX_EMPTY_LINE_BYTES`]
//! empty lines, the request line and [`MAX_HEADERS`] headers, or parsing
//! fails. So a client that trickles its request a byte at a time costs at
//! most [`MAX_PARSES`] parses of at most [`REQUEST_LIMIT`] bytes, not one
//! per byte.

use httparse::{Request, Status, EMPTY_HEADER};

/// The most bytes of a request kept: a scraper's request is a few hundred
/// bytes; past this it is answered 431 and not read further.
pub const REQUEST_LIMIT: usize = 8192;
/// Headers one request may have; more is a bad request. Prometheus sends
/// five.
pub const MAX_HEADERS: usize = 32;
/// CR and LF bytes allowed before the request line (RFC 9112 has servers
/// skip at least one empty line there); more is a bad request, so a
/// stream of line ends cannot make the reader parse once per byte.
pub const MAX_EMPTY_LINE_BYTES: usize = 16;
/// Bytes parsed as they come, whether a line ended or not.
pub const EARLY_BYTES: usize = 64;
/// The most times one request is parsed (see the module's comment).
pub const MAX_PARSES: usize = EARLY_BYTES + MAX_EMPTY_LINE_BYTES + MAX_HEADERS + 4;
/// Where the metrics are.
pub const METRICS_PATH: &str = "/metrics";

/// What a request gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// `GET /metrics`: 200 and the exposition text.
    Metrics,
    /// Another path: 404.
    NotFound,
    /// `/metrics` with a method other than `GET`: 405.
    MethodNotAllowed,
    /// Not HTTP/1.x, or cut short by end of file: 400.
    BadRequest,
    /// No end of the head within [`REQUEST_LIMIT`] bytes: 431.
    TooLarge,
}

impl Decision {
    /// The status line's code and reason.
    pub fn status(self) -> (u16, &'static str) {
        match self {
            Decision::Metrics => (200, "OK"),
            Decision::NotFound => (404, "Not Found"),
            Decision::MethodNotAllowed => (405, "Method Not Allowed"),
            Decision::BadRequest => (400, "Bad Request"),
            Decision::TooLarge => (431, "Request Header Fields Too Large"),
        }
    }
}

/// The bytes of one request as they arrive, and the answer once known.
#[derive(Debug, Default)]
pub struct RequestReader {
    buf: Vec<u8>,
    decision: Option<Decision>,
    /// Times `buf` was parsed.
    parses: usize,
}

impl RequestReader {
    /// How many more bytes the reader takes: 0 once decided or full, so
    /// the caller stops reading the socket.
    pub fn room(&self) -> usize {
        if self.decision.is_some() {
            0
        } else {
            REQUEST_LIMIT - self.buf.len()
        }
    }

    /// Takes what fits of `data` and returns how much that was; decides
    /// as soon as the bytes held allow: past the first few bytes, the head
    /// can only complete, and the lines parsed so far only fail, once a
    /// line ends.
    pub fn push(&mut self, data: &[u8]) -> usize {
        let take = data.len().min(self.room());
        let Some(new) = data.get(..take).filter(|n| !n.is_empty()) else {
            return 0;
        };
        let early = self.buf.len() < EARLY_BYTES;
        self.buf.extend_from_slice(new);
        let full = self.buf.len() >= REQUEST_LIMIT;
        if early || full || new.contains(&b'\n') {
            self.judge();
        }
        take
    }

    /// The client sent all it will: a request not complete by now never
    /// will be.
    pub fn end_of_file(&mut self) {
        if self.decision.is_none() {
            self.judge();
        }
        if self.decision.is_none() {
            self.decision = Some(Decision::BadRequest);
        }
    }

    /// Times the bytes were parsed so far (at most [`MAX_PARSES`]).
    pub fn parses(&self) -> usize {
        self.parses
    }

    fn judge(&mut self) {
        self.parses += 1;
        self.decision = judge(&self.buf);
    }

    /// The answer, once the bytes held decide it.
    pub fn decision(&self) -> Option<Decision> {
        self.decision
    }

    /// Bytes held.
    pub fn held(&self) -> usize {
        self.buf.len()
    }
}

/// The answer the bytes of a request give so far; None while the head
/// may still complete.
fn judge(buf: &[u8]) -> Option<Decision> {
    let empty = buf.iter().take_while(|b| matches!(b, b'\r' | b'\n'));
    if empty.count() > MAX_EMPTY_LINE_BYTES {
        return Some(Decision::BadRequest);
    }
    let mut headers = [EMPTY_HEADER; MAX_HEADERS];
    let mut req = Request::new(&mut headers);
    match req.parse(buf) {
        Ok(Status::Complete(_)) => Some(route(req.method, req.path)),
        Ok(Status::Partial) if buf.len() >= REQUEST_LIMIT => Some(Decision::TooLarge),
        Ok(Status::Partial) => None,
        Err(_) => Some(Decision::BadRequest),
    }
}

/// Which answer a complete request gets. A query string is ignored, as
/// Prometheus may add one.
fn route(method: Option<&str>, path: Option<&str>) -> Decision {
    let path = path.unwrap_or("");
    let path = path.split_once('?').map_or(path, |(p, _)| p);
    if path != METRICS_PATH {
        return Decision::NotFound;
    }
    if method == Some("GET") {
        Decision::Metrics
    } else {
        Decision::MethodNotAllowed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decide(bytes: &[u8]) -> Option<Decision> {
        let mut r = RequestReader::default();
        r.push(bytes);
        r.decision()
    }

    #[test]
    fn a_scrape_is_served_and_everything_else_refused() {
        let scrape = b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1:9099\r\nUser-Agent: Prometheus/2.42.0\r\nAccept: text/plain\r\nX-Prometheus-Scrape-Timeout-Seconds: 1\r\n\r\n";
        assert_eq!(decide(scrape), Some(Decision::Metrics));
        assert_eq!(
            decide(b"GET /metrics?x=1 HTTP/1.0\r\n\r\n"),
            Some(Decision::Metrics)
        );
        assert_eq!(decide(b"GET / HTTP/1.0\r\n\r\n"), Some(Decision::NotFound));
        assert_eq!(
            decide(b"POST /metrics HTTP/1.1\r\nContent-Length: 2\r\n\r\nab"),
            Some(Decision::MethodNotAllowed)
        );
        assert_eq!(
            decide(b"HEAD /metrics HTTP/1.1\r\n\r\n"),
            Some(Decision::MethodNotAllowed)
        );
        assert_eq!(decide(b"\x16\x03\x01junk"), Some(Decision::BadRequest));
        let mut hello = b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03".to_vec();
        hello.resize(517, 7);
        assert_eq!(decide(&hello), Some(Decision::BadRequest));
        assert_eq!(
            decide(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"),
            Some(Decision::BadRequest)
        );
        assert_eq!(decide(b"GET /metrics HTTP/1.1\r\nHost: x\r\n"), None);
    }

    #[test]
    fn the_reader_is_bounded_and_decides_once() {
        let mut r = RequestReader::default();
        let mut long = b"GET /metrics HTTP/1.1\r\nX-Junk: ".to_vec();
        long.resize(3 * REQUEST_LIMIT, b'a');
        assert_eq!(r.push(&long), REQUEST_LIMIT);
        assert_eq!(r.decision(), Some(Decision::TooLarge));
        assert_eq!((r.room(), r.push(b"more"), r.held()), (0, 0, REQUEST_LIMIT));

        let mut r = RequestReader::default();
        r.push(b"GET /metr");
        assert_eq!(r.decision(), None);
        r.end_of_file();
        assert_eq!(r.decision(), Some(Decision::BadRequest));

        // Too many headers is a bad request, not a crash or a wait.
        let mut many = b"GET /metrics HTTP/1.1\r\n".to_vec();
        for i in 0..=MAX_HEADERS {
            many.extend_from_slice(format!("H{i}: v\r\n").as_bytes());
        }
        many.extend_from_slice(b"\r\n");
        assert_eq!(decide(&many), Some(Decision::BadRequest));
    }

    #[test]
    fn a_trickled_request_is_parsed_a_bounded_number_of_times() {
        let mut head = b"GET /metrics HTTP/1.1\r\n".to_vec();
        for i in 0..MAX_HEADERS {
            head.extend_from_slice(format!("H{i}: v\r\n").as_bytes());
        }
        let trickles: [&[u8]; 3] = [&head, &[b'\n'; 100], &[b'a'; REQUEST_LIMIT + 10]];
        for input in trickles {
            let mut r = RequestReader::default();
            for b in input.iter().chain(b"x\n".iter()) {
                r.push(std::slice::from_ref(b));
            }
            r.end_of_file();
            assert!(r.decision().is_some());
            assert!(r.parses() <= MAX_PARSES, "{} parses", r.parses());
        }
        // A few empty lines first are allowed.
        assert_eq!(
            decide(b"\r\n\r\n\nGET /metrics HTTP/1.1\r\n\r\n"),
            Some(Decision::Metrics)
        );
        assert_eq!(
            decide(&[b'\n'; MAX_EMPTY_LINE_BYTES + 1]),
            Some(Decision::BadRequest)
        );
    }

    #[test]
    fn byte_by_byte_decides_as_whole() {
        let inputs: [&[u8]; 4] = [
            b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\n\r\n",
            b"GET /nope HTTP/1.1\r\n\r\n",
            b"GET /metrics HTTP/1.1\r\nBad Header\r\n\r\n",
            b"\r\n\r\nGET /metrics HTTP/1.0\r\n\r\n",
        ];
        for input in inputs {
            let mut r = RequestReader::default();
            for b in input {
                r.push(std::slice::from_ref(b));
            }
            assert_eq!(r.decision(), decide(input), "{input:?}");
        }
    }
}
