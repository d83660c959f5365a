//! HTTP/1.1 message framing shared by the server (client requests) and the upstream client
//! (answers): comma-separated field values, `Content-Length` values, and the decoding of a
//! body by its length or its chunks (RFC 9112, sections 6 and 7).

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderName};

/// A field's name. The names nearly every request or answer carries, in the two spellings
/// clients and servers use (lowercase, and capitalised words), are matched as constants (a
/// length and a few word compares); any other goes through the general parse, which lowercases
/// the name into a buffer and then looks it up among all the standard names, several times
/// the cost, for each field of each message.
pub fn field_name(raw: &[u8]) -> Option<HeaderName> {
    let name = match raw {
        b"host" | b"Host" => header::HOST,
        b"content-length" | b"Content-Length" => header::CONTENT_LENGTH,
        b"content-type" | b"Content-Type" => header::CONTENT_TYPE,
        b"date" | b"Date" => header::DATE,
        b"server" | b"Server" => header::SERVER,
        b"connection" | b"Connection" => header::CONNECTION,
        b"transfer-encoding" | b"Transfer-Encoding" => header::TRANSFER_ENCODING,
        b"user-agent" | b"User-Agent" => header::USER_AGENT,
        b"accept" | b"Accept" => header::ACCEPT,
        b"accept-encoding" | b"Accept-Encoding" => header::ACCEPT_ENCODING,
        b"authorization" | b"Authorization" => header::AUTHORIZATION,
        b"cookie" | b"Cookie" => header::COOKIE,
        b"cache-control" | b"Cache-Control" => header::CACHE_CONTROL,
        b"etag" | b"ETag" => header::ETAG,
        _ => return HeaderName::from_bytes(raw).ok(),
    };
    Some(name)
}

/// Trailer bytes a chunked body may carry (they are read and dropped).
const MAX_TRAILERS: usize = 16 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// This many bytes to go.
    Length(u64),
    /// A chunk-size line is next.
    ChunkSize,
    /// This many bytes of a chunk to go.
    ChunkData(u64),
    /// The CRLF after a chunk's data.
    ChunkEnd,
    /// Trailer lines, up to an empty one.
    Trailers,
    /// Until the peer closes.
    Close,
    Done,
}

/// A trailer line `name: value`: a token, a colon, visible characters, spaces and tabs.
fn trailer_field(line: &[u8]) -> bool {
    let Some(colon) = line.iter().position(|&b| b == b':') else {
        return false;
    };
    colon > 0
        && line[..colon]
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
        && line[colon + 1..]
            .iter()
            .all(|&b| b == b'\t' || (b' '..=b'~').contains(&b) || b >= 0x80)
}

/// The line just taken was `\r\n` alone.
fn line_was_empty(lf: usize) -> bool {
    lf == 1
}

/// What the buffer holds next.
#[derive(Debug)]
pub enum Step {
    /// Nothing yet: read more.
    More,
    Data(Bytes),
    End,
}

/// The next step of a body from what is buffered.
pub fn decode(
    state: &mut State,
    buf: &mut BytesMut,
    trailers: &mut usize,
) -> Result<Step, &'static str> {
    loop {
        match *state {
            State::Done | State::Length(0) => return Ok(Step::End),
            State::Length(n) | State::ChunkData(n) => {
                if buf.is_empty() {
                    return Ok(Step::More);
                }
                let take = usize::try_from(n).unwrap_or(usize::MAX).min(buf.len());
                let data = buf.split_to(take).freeze();
                let left = n - take as u64;
                *state = match *state {
                    State::Length(_) => State::Length(left),
                    _ if left == 0 => State::ChunkEnd,
                    _ => State::ChunkData(left),
                };
                return Ok(Step::Data(data));
            }
            // RFC 9112, 7.1: at least one hex digit, then extensions up to CRLF, no bare CR
            // or LF (httparse also takes an empty size as 0, and a bare LF in an extension).
            State::ChunkSize if buf.first().is_some_and(|b| !b.is_ascii_hexdigit()) => {
                return Err("a chunk size is invalid");
            }
            State::ChunkSize => match httparse::parse_chunk_size(buf) {
                Ok(httparse::Status::Complete((used, _)))
                    if used < 2
                        || &buf[used - 2..used] != b"\r\n"
                        || buf[..used - 2].iter().any(|&b| b == b'\r' || b == b'\n') =>
                {
                    return Err("a chunk size line is malformed");
                }
                Ok(httparse::Status::Complete((used, size))) => {
                    let _ = buf.split_to(used);
                    *state = if size == 0 {
                        State::Trailers
                    } else {
                        State::ChunkData(size)
                    };
                }
                // A size line is short; a long partial one is garbage.
                Ok(httparse::Status::Partial) if buf.len() < 1024 => return Ok(Step::More),
                _ => return Err("a chunk size is invalid"),
            },
            State::ChunkEnd => {
                if buf.len() < 2 {
                    return Ok(Step::More);
                }
                if &buf[..2] != b"\r\n" {
                    return Err("a chunk does not end with CRLF");
                }
                let _ = buf.split_to(2);
                *state = State::ChunkSize;
            }
            // Each line ends at its first LF, which must follow a CR, with no other CR in the
            // line: a bare LF read as data here and as a line's end by another server would
            // let a request hide inside the trailers of the one before it.
            State::Trailers => {
                let Some(lf) = buf.iter().position(|&b| b == b'\n') else {
                    if *trailers + buf.len() > MAX_TRAILERS {
                        return Err("the trailers are too large");
                    }
                    return Ok(Step::More);
                };
                if lf == 0 || buf[lf - 1] != b'\r' || buf[..lf - 1].contains(&b'\r') {
                    return Err("a trailer line does not end with CRLF");
                }
                let line = &buf[..lf - 1];
                if !line.is_empty() && !trailer_field(line) {
                    return Err("a trailer line is not a field");
                }
                *trailers += lf + 1;
                if *trailers > MAX_TRAILERS {
                    return Err("the trailers are too large");
                }
                let _ = buf.split_to(lf + 1);
                if line_was_empty(lf) {
                    return Ok(Step::End);
                }
            }
            State::Close => {
                if buf.is_empty() {
                    return Ok(Step::More);
                }
                let n = buf.len();
                return Ok(Step::Data(buf.split_to(n).freeze()));
            }
        }
    }
}

/// The items of a comma-separated field value, trimmed.
pub fn tokens(v: &[u8]) -> impl Iterator<Item = &[u8]> {
    v.split(|&b| b == b',').map(<[u8]>::trim_ascii)
}

/// A `Content-Length` value: digits only (no sign, no spaces), within `u64`.
pub fn content_length(v: &[u8]) -> Option<u64> {
    if v.is_empty() || v.len() > 19 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(v).ok()?.parse().ok()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn field_names_read_as_the_general_parse_reads_them() {
        for raw in [
            "host",
            "Host",
            "HOST",
            "content-length",
            "Content-Length",
            "content-type",
            "Content-Type",
            "CONTENT-type",
            "date",
            "Date",
            "DATE",
            "server",
            "Server",
            "connection",
            "Connection",
            "transfer-encoding",
            "Transfer-Encoding",
            "user-agent",
            "User-Agent",
            "accept",
            "Accept",
            "accept-encoding",
            "Accept-Encoding",
            "authorization",
            "Authorization",
            "cookie",
            "Cookie",
            "cache-control",
            "Cache-Control",
            "etag",
            "ETag",
            "Etag",
            "X-Custom",
            "x-request-id",
            "hosts",
        ] {
            let general = HeaderName::from_bytes(raw.as_bytes()).ok();
            assert!(general.is_some(), "{raw}");
            assert_eq!(field_name(raw.as_bytes()), general, "{raw}");
        }
        for bad in ["content type", "dat\0", "", "d\u{e9}te", "host:", " Host"] {
            assert_eq!(field_name(bad.as_bytes()), None, "{bad:?}");
        }
    }

    /// The whole body, or the decoder's refusal.
    fn body(bytes: &str) -> Result<Vec<u8>, &'static str> {
        let (mut state, mut buf, mut trailers) = (State::ChunkSize, BytesMut::from(bytes), 0);
        let mut out = Vec::new();
        loop {
            match decode(&mut state, &mut buf, &mut trailers)? {
                Step::Data(d) => out.extend_from_slice(&d),
                Step::End => return Ok(out),
                Step::More => return Err("short"),
            }
        }
    }

    #[test]
    fn trailers_end_lines_with_crlf_only() {
        assert_eq!(body("2\r\nab\r\n0\r\n\r\n").unwrap(), b"ab");
        assert_eq!(body("2\r\nab\r\n0\r\nX-T: 1\r\n\r\n").unwrap(), b"ab");
        for bad in [
            "2\r\nab\r\n0\r\n\nGET / HTTP/1.1\r\n\r\n",
            "2\r\nab\r\n0\r\nX-T: 1\n\r\n",
            "2\r\nab\r\n0\r\nX-T: a\rb\r\n\r\n",
            "2\r\nab\r\n0\r\nGET / HTTP/1.1\r\n\r\n",
        ] {
            assert!(body(bad).is_err(), "{bad:?}");
        }
    }
}
