//! Reading one HTTP request of a metrics scraper: pure, no socket, so it
//! is fuzzed (fuzz/fuzz_targets/http.rs). The bytes are kept up to
//! [`REQUEST_LIMIT`]; the request line and headers are parsed with
//! `httparse` (allocation-free, no runtime) each time more arrives, and
//! the first complete head, a syntax error, the limit or end of file
//! decides the answer. A body is never read: only `GET` is served.

use httparse::{Request, Status, EMPTY_HEADER};

/// The most bytes of a request kept: a scraper's request is a few hundred
/// bytes; past this it is answered 431 and not read further.
pub const REQUEST_LIMIT: usize = 8192;
/// Headers one request may have; more is a bad request. Prometheus sends
/// five.
pub const MAX_HEADERS: usize = 32;
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
    /// as soon as the bytes held allow.
    pub fn push(&mut self, data: &[u8]) -> usize {
        let take = data.len().min(self.room());
        if take == 0 {
            return 0;
        }
        self.buf.extend_from_slice(&data[..take]);
        self.decision = judge(&self.buf);
        take
    }

    /// The client sent all it will: a request not complete by now never
    /// will be.
    pub fn end_of_file(&mut self) {
        if self.decision.is_none() {
            self.decision = Some(Decision::BadRequest);
        }
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
