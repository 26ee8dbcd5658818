//! What a metrics connection is answered, from the bytes it sent: sans-IO,
//! like the codecs. One request per connection; its head is bounded (a head
//! longer than that gets 431), and every answer closes the connection.

use super::text::MetricsText;
use crate::codec::http::{HeadError, decode_request_head};

/// The longest request head taken, request line and headers.
const MAX_REQUEST: usize = 8 << 10;

/// The answer to a request whose head is whole (or refused).
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Answer {
    /// A whole HTTP/1.1 response that closes its connection.
    pub(crate) response: Vec<u8>,
    /// The client may have sent more than the head: what still comes is to
    /// be read and dropped before the close (closing with unread input would
    /// send RST, and the RST would destroy the answer in flight).
    pub(crate) more: bool,
}

/// What the bytes received so far are answered, `None` until the head is
/// whole. `page` writes the metrics page, and is called only for a request
/// for it.
pub(crate) fn answer(input: &[u8], page: impl FnOnce(&mut MetricsText)) -> Option<Answer> {
    let (request, more) = request(input)?;
    let response = match request {
        Request::Metrics { head_only } => {
            let mut text = MetricsText::default();
            page(&mut text);
            let kind = "text/plain; version=0.0.4; charset=utf-8";
            response("200 OK", kind, text.as_str(), head_only)
        }
        Request::NotFound { head_only } => {
            response("404 Not Found", "text/plain", "try /metrics\n", head_only)
        }
        Request::NotAllowed => {
            response("405 Method Not Allowed", "text/plain", "GET only\n", false)
        }
        Request::Refused(status) => response(status, "text/plain", "", false),
    };
    Some(Answer { response, more })
}

/// What a request asks for, once its head is whole (or refused).
#[derive(Debug, PartialEq, Eq)]
enum Request {
    Metrics {
        head_only: bool,
    },
    /// Another path.
    NotFound {
        head_only: bool,
    },
    /// Another method.
    NotAllowed,
    /// Not HTTP/1.x, or a head longer than [`MAX_REQUEST`]: the status.
    Refused(&'static str),
}

/// What the bytes received so far ask for, `None` until that is known;
/// with it, whether the client may have sent more than the head.
fn request(input: &[u8]) -> Option<(Request, bool)> {
    let head = match decode_request_head(input, MAX_REQUEST) {
        Ok(None) => return None,
        Ok(Some(head)) => head,
        Err(HeadError::TooLarge) => {
            return Some((
                Request::Refused("431 Request Header Fields Too Large"),
                true,
            ));
        }
        Err(HeadError::BadRequestLine) => return Some((Request::Refused("400 Bad Request"), true)),
    };
    let head_only = head.method == b"HEAD";
    let request = match (head.method, head.path()) {
        (b"GET" | b"HEAD", b"/metrics") => Request::Metrics { head_only },
        (b"GET" | b"HEAD", _) => Request::NotFound { head_only },
        _ => Request::NotAllowed,
    };
    Some((request, input.len() > head.len))
}

/// A whole HTTP/1.1 response that closes its connection.
fn response(status: &str, content_type: &str, body: &str, head_only: bool) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    if !head_only {
        out.extend_from_slice(body.as_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::MetricKind;

    #[test]
    fn the_request_line_decides_once_the_head_is_whole() {
        assert_eq!(request(b"GET /metrics HTTP/1.1\r\nHost: x\r\n"), None);
        let metrics = Request::Metrics { head_only: false };
        assert_eq!(
            request(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"),
            Some((metrics, false))
        );
        assert_eq!(
            request(b"HEAD /metrics?x=1 HTTP/1.0\n\nmore"),
            Some((Request::Metrics { head_only: true }, true))
        );
        let not_found = Request::NotFound { head_only: false };
        assert_eq!(request(b"GET / HTTP/1.1\r\n\r\n"), Some((not_found, false)));
        assert_eq!(
            request(b"POST /metrics HTTP/1.1\r\n\r\n"),
            Some((Request::NotAllowed, false))
        );
        let bad = Some((Request::Refused("400 Bad Request"), true));
        assert_eq!(request(b"GET /metrics SPDY/3\r\n\r\n"), bad);
        assert_eq!(request(b"hello\r\n\r\n"), bad);
    }

    /// A head past the bound is refused whether it arrived in one read or
    /// in many: what counts is the bytes received, not the read.
    #[test]
    fn a_head_over_the_bound_gets_431_even_when_whole() {
        let whole = format!("GET /metrics HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(9000));
        let unfinished = vec![b'a'; MAX_REQUEST];
        for input in [whole.as_bytes(), unfinished.as_slice()] {
            let (refused, more) = request(input).expect("decided");
            assert!(matches!(refused, Request::Refused(s) if s.starts_with("431")));
            assert!(more, "what follows is read and dropped before the close");
        }
    }

    #[test]
    fn only_a_request_for_the_page_has_it_written() {
        let page = |text: &mut MetricsText| text.single("x", MetricKind::Gauge, "One.", 1);
        let response = |request: &[u8]| {
            let answer = answer(request, page).expect("a whole head");
            String::from_utf8(answer.response).expect("text")
        };
        let get = response(b"GET /metrics HTTP/1.1\r\n\r\n");
        assert!(get.starts_with("HTTP/1.1 200 OK\r\n"), "{get}");
        assert!(
            get.ends_with("\r\n\r\n# HELP x One.\n# TYPE x gauge\nx 1\n"),
            "{get}"
        );
        let head = response(b"HEAD /metrics HTTP/1.1\r\n\r\n");
        assert!(head.contains("Content-Length: 33\r\n"), "{head}");
        assert!(
            head.ends_with("\r\n\r\n"),
            "the length, not the body: {head}"
        );

        let unwritten = |_: &mut MetricsText| panic!("the page written for another request");
        let other = answer(b"GET / HTTP/1.1\r\n\r\n", unwritten).expect("a whole head");
        assert!(other.response.starts_with(b"HTTP/1.1 404 Not Found\r\n"));
        assert_eq!(answer(b"GET /metrics HTTP/1.1\r\n", unwritten), None);
    }
}
