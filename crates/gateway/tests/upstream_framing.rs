//! How the gateway reads its upstream's answers and frames what it sends there (RFC 9112):
//! every framing an upstream may use is passed on, an ambiguous one is refused rather than
//! guessed at, and a connection is reused only when both sides agree where each answer ended.

#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use portcullis_test_support::reqwest::{Method, StatusCode};
use portcullis_test_support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// What the upstream does for a request: bytes to write, with a pause before each, then
/// whether to close the connection.
struct Script {
    parts: Vec<(u64, Vec<u8>)>,
    close: bool,
}

fn answer(bytes: &[u8]) -> Script {
    Script {
        parts: vec![(0, bytes.to_vec())],
        close: false,
    }
}

/// A raw upstream: reads each request whole (by its `Content-Length` or chunked framing),
/// records it, and follows the script its path selects.
struct Upstream {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    seen: Arc<Mutex<Vec<String>>>,
}

impl Upstream {
    async fn start(script: fn(&str) -> Script) -> Upstream {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (count, log) = (accepted.clone(), seen.clone());
        tokio::spawn(async move {
            while let Ok((s, _)) = l.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(serve(s, script, log.clone()));
            }
        });
        Upstream {
            addr,
            accepted,
            seen,
        }
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    fn seen(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }
}

async fn serve(mut s: TcpStream, script: fn(&str) -> Script, seen: Arc<Mutex<Vec<String>>>) {
    let mut buf = Vec::new();
    loop {
        let Some(request) = read_request(&mut s, &mut buf).await else {
            return;
        };
        let path = request.split(' ').nth(1).unwrap_or("/").to_owned();
        seen.lock().unwrap().push(request.clone());
        if path == "/hints" && !hints(&mut s, &mut buf, &request).await {
            return;
        }
        if path == "/answers-early" && !answers_early(&mut s, &mut buf, &request).await {
            return;
        }
        if path == "/hints" || path == "/answers-early" {
            continue;
        }
        let plan = script(&path);
        for (pause, bytes) in plan.parts {
            tokio::time::sleep(Duration::from_millis(pause)).await;
            if s.write_all(&bytes).await.is_err() {
                return;
            }
        }
        if plan.close {
            return;
        }
    }
}

/// An interim answer on a request's head alone, then its body read whole, then the answer
/// (the body's length); false when the connection ended.
async fn hints(s: &mut TcpStream, buf: &mut Vec<u8>, head: &str) -> bool {
    let early = b"HTTP/1.1 103 Early Hints\r\nlink: </a.css>\r\n\r\n";
    if s.write_all(early).await.is_err() {
        return false;
    }
    let Some(text) = take_body(s, buf, head).await else {
        return false;
    };
    let reply = format!(
        "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{text}",
        text.len()
    );
    s.write_all(reply.as_bytes()).await.is_ok()
}

/// A final answer's head on a request's head alone (as a server streaming its answer to an
/// upload does), then the body read whole, then the answer's body: the body's length, one
/// chunk; false when the connection ended.
async fn answers_early(s: &mut TcpStream, buf: &mut Vec<u8>, head: &str) -> bool {
    let early = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n";
    if s.write_all(early).await.is_err() {
        return false;
    }
    let Some(text) = take_body(s, buf, head).await else {
        return false;
    };
    let rest = format!("{:x}\r\n{text}\r\n0\r\n\r\n", text.len());
    s.write_all(rest.as_bytes()).await.is_ok()
}

/// Reads the body of the request whose head is `head` (by its `Content-Length`) off the front
/// of `buf` and the socket; its length as text.
async fn take_body(s: &mut TcpStream, buf: &mut Vec<u8>, head: &str) -> Option<String> {
    let want: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length: "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    let mut chunk = [0u8; 8192];
    while buf.len() < want {
        match s.read(&mut chunk).await {
            Ok(n @ 1..) => buf.extend_from_slice(&chunk[..n]),
            _ => return None,
        }
    }
    buf.drain(..want);
    Some(want.to_string())
}

/// One request, head and body, as text; `None` at the connection's end.
async fn read_request(s: &mut TcpStream, buf: &mut Vec<u8>) -> Option<String> {
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = s.read(&mut chunk).await.ok().filter(|&n| n > 0)?;
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_lowercase();
    if head.starts_with("post /early ")
        || head.starts_with("post /hints ")
        || head.starts_with("post /answers-early ")
    {
        // Answered on its head alone; its body is never read.
        return Some(head);
    }
    let length = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length: "))
        .and_then(|v| v.trim().parse::<usize>().ok());
    let chunked = head.contains("transfer-encoding: chunked");
    let end = loop {
        match (length, chunked) {
            (Some(n), _) if buf.len() >= head_end + n => break head_end + n,
            (None, true) => {
                if let Some(i) = buf[head_end..].windows(5).position(|w| w == b"0\r\n\r\n") {
                    break head_end + i + 5;
                }
            }
            (None, false) => break head_end,
            _ => {}
        }
        let n = s.read(&mut chunk).await.ok().filter(|&n| n > 0)?;
        buf.extend_from_slice(&chunk[..n]);
    };
    let request = String::from_utf8_lossy(&buf[..end]).into_owned();
    buf.drain(..end);
    Some(request)
}

fn policy(up: &Upstream, extra: &str) -> String {
    // One worker: every request meets the same pool.
    format!(
        "listen: 127.0.0.1:0\nupstream: http://{}\nroutes: [\"GET /{{what}}\", \"POST /{{what}}\"]\nlimits: {{ workers: 1{extra} }}\n",
        up.addr
    )
}

async fn get(gw: &Gw, path: &str) -> Reply {
    send(&client(), Method::GET, &gw.url(path), None, None).await
}

async fn get_text(url: &str) -> String {
    send(&client(), Method::GET, url, None, None).await.text
}

fn refused(r: &Reply) {
    assert_eq!(r.status, StatusCode::BAD_GATEWAY, "{}", r.text);
    assert_eq!(
        r.header("content-type"),
        Some("application/problem+json"),
        "{}",
        r.text
    );
    assert!(r.json()["request_id"].is_string(), "{}", r.text);
}

fn by_path(path: &str) -> Script {
    match path {
        "/chunked" => answer(
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nx-trailer: dropped\r\n\r\n",
        ),
        "/length" => answer(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"),
        // For a HEAD request: the length of the body it does not carry.
        "/head" => answer(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n"),
        "/until-close" => Script {
            parts: vec![
                (0, b"HTTP/1.1 200 OK\r\n\r\nread ".to_vec()),
                (50, b"to the end".to_vec()),
            ],
            close: true,
        },
        "/both" => answer(
            b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\n\r\n",
        ),
        "/two-lengths" => {
            answer(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-length: 3\r\n\r\nokk")
        }
        "/signed-length" => answer(b"HTTP/1.1 200 OK\r\ncontent-length: +2\r\n\r\nok"),
        // gzip bytes the gateway would pass on as if they were the answer itself.
        "/gzip-chunked" => answer(
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
        ),
        "/gzip-to-close" => Script {
            parts: vec![(0, b"HTTP/1.1 200 OK\r\ntransfer-encoding: gzip\r\n\r\nok".to_vec())],
            close: true,
        },
        "/garbage" => answer(b"HTTP/1.1 two hundred\r\n\r\n"),
        "/huge-head" => {
            let mut a = b"HTTP/1.1 200 OK\r\nx-big: ".to_vec();
            a.extend(std::iter::repeat_n(b'a', 70 * 1024));
            a.extend_from_slice(b"\r\ncontent-length: 2\r\n\r\nok");
            answer(&a)
        }
        "/extra" => answer(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nokHTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nextra"),
        "/continue" => answer(
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nlink: </a.css>\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok",
        ),
        "/stall" => Script {
            parts: vec![
                (0, b"HTTP/1.1 200 OK\r\ncontent-length: 8\r\n\r\nhalf".to_vec()),
                (10_000, b"done".to_vec()),
            ],
            close: false,
        },
        "/bad-chunk" => answer(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n"),
        "/early" => Script {
            parts: vec![(0, b"HTTP/1.1 403 Forbidden\r\ncontent-length: 0\r\n\r\n".to_vec())],
            close: false,
        },
        "/empty-chunk-size" => answer(
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n\r\n\r\nHTTP/1.1 200 OK\r\n\r\n",
        ),
        "/repeated-length" => answer(
            b"HTTP/1.1 200 OK\r\ncontent-length: 2, 2\r\ncontent-length: 2\r\n\r\nok",
        ),
        "/undoes-hardening" => answer(
            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nConnection: x-frame-options, X-Content-Type-Options, x-hop\r\nX-Frame-Options: ALLOWALL\r\nx-hop: 1\r\nServer: up/1.0\r\nAccess-Control-Allow-Origin: *\r\nx-kept: yes\r\n\r\nok",
        ),
        "/closes" => answer(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok"),
        "/large" => {
            let mut a = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n", LARGE).into_bytes();
            a.extend(large_body());
            answer(&a)
        }
        "/large-chunked" => {
            let mut a = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n".to_vec();
            for piece in large_body().chunks(100_003) {
                a.extend(format!("{:x}\r\n", piece.len()).into_bytes());
                a.extend_from_slice(piece);
                a.extend_from_slice(b"\r\n");
            }
            a.extend_from_slice(b"0\r\n\r\n");
            answer(&a)
        }
        _ => answer(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"),
    }
}

#[tokio::test]
async fn chunked_and_length_framed_answers_pass_and_keep_their_connection() {
    let up = Upstream::start(by_path).await;
    let gw = Gw::start(&policy(&up, "")).await;
    let r = get(&gw, "/chunked").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.text, "hello world");
    assert_eq!(r.header("x-trailer"), None);
    assert_eq!(get(&gw, "/length").await.text, "ok");
    assert_eq!(get(&gw, "/chunked").await.text, "hello world");
    let head = client().head(gw.url("/head")).send().await.unwrap();
    assert_eq!(head.status(), StatusCode::OK);
    assert_eq!(get(&gw, "/length").await.text, "ok");
    assert_eq!(up.accepted(), 1, "one connection carries them all");
}

const LARGE: usize = 3 << 20;

/// 3 MiB that no two offsets of a misread would agree on.
fn large_body() -> Vec<u8> {
    (0..LARGE as u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect()
}

#[tokio::test]
async fn large_answers_stream_whole_in_either_framing() {
    let up = Upstream::start(by_path).await;
    let gw = Gw::start(&policy(&up, "")).await;
    for path in ["/large", "/large-chunked", "/large"] {
        let resp = client().get(gw.url(path)).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        let body = resp.bytes().await.unwrap();
        assert!(body[..] == large_body()[..], "{path}: {} bytes", body.len());
    }
    assert_eq!(up.accepted(), 1);
}

#[tokio::test]
async fn an_answer_read_to_the_connections_end_passes_and_the_connection_is_not_reused() {
    let up = Upstream::start(by_path).await;
    let gw = Gw::start(&policy(&up, "")).await;
    for _ in 0..2 {
        let r = get(&gw, "/until-close").await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(r.text, "read to the end");
    }
    assert_eq!(get(&gw, "/closes").await.text, "ok");
    assert_eq!(get(&gw, "/length").await.text, "ok");
    assert_eq!(up.accepted(), 4);
}

/// Response smuggling: an answer whose length two parsers could read differently is refused,
/// and nothing after it is read from its connection.
#[tokio::test]
async fn ambiguous_or_malformed_answers_are_refused_with_a_problem() {
    let up = Upstream::start(by_path).await;
    let gw = Gw::start(&(policy(&up, "") + "admin: { listen: 127.0.0.1:0 }\n")).await;
    for path in [
        "/both",
        "/two-lengths",
        "/signed-length",
        "/garbage",
        "/huge-head",
        "/gzip-chunked",
        "/gzip-to-close",
    ] {
        refused(&get(&gw, path).await);
        let r = get(&gw, "/length").await;
        assert_eq!((r.status, &*r.text), (StatusCode::OK, "ok"), "after {path}");
    }
    assert!(
        !up.seen().iter().any(|r| r.contains("/smuggled")),
        "the smuggled request went nowhere"
    );
    // Each refused answer cost its connection: the first request opened one, and each good
    // request after a refusal another, which the next refusal then closed.
    assert_eq!(up.accepted(), 8);
    // Counted apart from other upstream failures, for an operator to see.
    let metrics = get_text(&format!("{}/metrics", gw.admin.clone().unwrap())).await;
    let line = "portcullis_upstream_errors_total{kind=\"malformed\"} 7";
    assert!(metrics.contains(line), "missing `{line}` in\n{metrics}");
}

#[tokio::test]
async fn bytes_beyond_an_answers_end_close_its_connection() {
    let up = Upstream::start(by_path).await;
    let gw = Gw::start(&policy(&up, "")).await;
    for _ in 0..3 {
        let r = get(&gw, "/extra").await;
        assert_eq!((r.status, &*r.text), (StatusCode::OK, "ok"));
    }
    assert_eq!(up.accepted(), 3, "no answer was taken from the extra bytes");
}

#[tokio::test]
async fn interim_answers_are_skipped() {
    let up = Upstream::start(by_path).await;
    let gw = Gw::start(&policy(&up, "")).await;
    let r = get(&gw, "/continue").await;
    assert_eq!((r.status, &*r.text), (StatusCode::OK, "ok"));
    assert_eq!(r.header("link"), None);
}

/// An interim answer that comes while the client's body is still on its way does not stop
/// the upload: the upstream reads the whole body before its final answer.
#[tokio::test]
async fn an_interim_answer_during_an_upload_does_not_stop_it() {
    let up = Upstream::start(by_path).await;
    let gw = Gw::start(&policy(&up, ", upstream_timeout: 3s")).await;
    let mut raw = TcpStream::connect(gw.url("").trim_start_matches("http://"))
        .await
        .unwrap();
    let head =
        "POST /hints HTTP/1.1\r\nhost: gw\r\ncontent-length: 200000\r\nconnection: close\r\n\r\n";
    raw.write_all(head.as_bytes()).await.unwrap();
    raw.write_all(&[b'x'; 100_000]).await.unwrap();
    // The 103 reaches the gateway while it waits for the rest.
    tokio::time::sleep(Duration::from_millis(300)).await;
    raw.write_all(&[b'x'; 100_000]).await.unwrap();
    let mut reply = String::new();
    tokio::time::timeout(Duration::from_secs(10), raw.read_to_string(&mut reply))
        .await
        .unwrap()
        .unwrap();
    assert!(reply.starts_with("HTTP/1.1 200 "), "{reply}");
    assert!(reply.ends_with("\r\n\r\n200000"), "{reply}");
}

/// A final answer that is not a refusal, sent before the request body's end (a server
/// streaming its answer to an upload), does not stop the upload: RFC 9112 (9.5) has a client
/// stop only when the server does not want the body and is closing. The upstream reads the
/// whole body, then ends its answer with the body's length; the connection is kept.
#[tokio::test]
async fn an_early_answer_that_is_no_refusal_lets_the_upload_finish() {
    let up = Upstream::start(by_path).await;
    let gw = Gw::start(&policy(
        &up,
        ", max_body_bytes: 67108864, upstream_timeout: 3s",
    ))
    .await;
    // Larger than the socket buffers between the gateway and the upstream: the answer's head
    // comes while the gateway is still writing.
    let size = 16 << 20;
    let r = client()
        .post(gw.url("/answers-early"))
        .body(vec![b'x'; size])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.text().await.unwrap(), size.to_string());
    // Kept: the next request goes on the same connection.
    assert_eq!(get(&gw, "/length").await.text, "ok");
    assert_eq!(up.accepted(), 1);
}

/// The answer's time limit counts from the end of the upload, as nginx's does: a client that
/// sends its body steadily for longer than `upstream_timeout` gets the upstream's answer, and
/// the upstream gets the whole body. (Each pause is well inside `body_read_timeout`.)
#[tokio::test]
async fn a_steady_upload_longer_than_the_upstream_timeout_is_answered() {
    let up = Upstream::start(by_path).await;
    let gw = Gw::start(&policy(&up, ", upstream_timeout: 1s")).await;
    let mut raw = TcpStream::connect(gw.url("").trim_start_matches("http://"))
        .await
        .unwrap();
    let head =
        "POST /length HTTP/1.1\r\nhost: gw\r\ncontent-length: 10000\r\nconnection: close\r\n\r\n";
    raw.write_all(head.as_bytes()).await.unwrap();
    let started = Instant::now();
    for _ in 0..10 {
        raw.write_all(&[b'x'; 1000]).await.unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut reply = String::new();
    tokio::time::timeout(Duration::from_secs(10), raw.read_to_string(&mut reply))
        .await
        .unwrap()
        .unwrap();
    assert!(started.elapsed() > Duration::from_secs(2));
    assert!(reply.starts_with("HTTP/1.1 200 "), "{reply}");
    assert!(reply.ends_with("\r\n\r\nok"), "{reply}");
    let seen = up.seen();
    let upload = seen
        .iter()
        .find(|r| r.starts_with("POST /length "))
        .unwrap();
    assert!(upload.ends_with(&"x".repeat(10_000)), "{}", upload.len());
}

/// `body_read_timeout` bounds the whole body, as `header_read_timeout` bounds the head: a
/// client that trickles its body, every pause short, is cut with a 408 problem once the
/// body is not all in by then (it held the upstream connection until `upstream_timeout`
/// passed, and with a limit on each pause alone it would hold it for as long as it likes).
#[tokio::test]
async fn a_body_trickled_past_the_body_read_timeout_is_cut_with_408() {
    let up = Upstream::start(by_path).await;
    let gw = Gw::start(&policy(
        &up,
        ", body_read_timeout: 1s, upstream_timeout: 5s",
    ))
    .await;
    let mut raw = TcpStream::connect(gw.url("").trim_start_matches("http://"))
        .await
        .unwrap();
    let head =
        "POST /length HTTP/1.1\r\nhost: gw\r\ncontent-length: 100\r\nconnection: close\r\n\r\n";
    raw.write_all(head.as_bytes()).await.unwrap();
    let started = Instant::now();
    let (mut rd, mut wr) = raw.into_split();
    let trickle = tokio::spawn(async move {
        for _ in 0..100 {
            if wr.write_all(b"x").await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    });
    let mut reply = String::new();
    tokio::time::timeout(Duration::from_secs(10), rd.read_to_string(&mut reply))
        .await
        .unwrap()
        .unwrap();
    trickle.abort();
    assert!(reply.starts_with("HTTP/1.1 408 "), "{reply}");
    assert!(reply.contains("application/problem+json"), "{reply}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
}

/// A client that asks for a large answer and never reads it (a slow-read attack) is cut off
/// once it has taken nothing for `idle_timeout`: hyper, its socket full, polls neither the
/// answer nor a timer, and the client held its connection slot (and an upstream connection)
/// for as long as it stayed.
#[tokio::test]
async fn a_client_that_never_reads_its_answer_is_cut_off() {
    let up = Upstream::start(by_path).await;
    let gw = Gw::start(&policy(&up, ", max_connections: 1, idle_timeout: 1s")).await;
    let addr: SocketAddr = gw.url("").trim_start_matches("http://").parse().unwrap();
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    let mut stuck = sock.connect(addr).await.unwrap();
    stuck
        .write_all(b"GET /large HTTP/1.1\r\nhost: gw\r\n\r\n")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    // The only slot is free again: a new client is answered.
    let mut next = TcpStream::connect(addr).await.unwrap();
    next.write_all(b"GET /length HTTP/1.1\r\nhost: gw\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut reply = String::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), next.read_to_string(&mut reply)).await;
    assert!(reply.starts_with("HTTP/1.1 200 "), "{reply:?}");
    // And the stuck one was closed short of its answer's end.
    let mut got = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stuck.read_to_end(&mut got))
        .await
        .unwrap();
    assert!(got.len() < LARGE, "{}", got.len());
}

/// The same over HTTP/2, where a client that does not read stops the answer by flow control:
/// hyper then polls nothing for it, and the connection is dropped once no request on it has
/// moved for longer than any can legitimately wait (`body_read_timeout` and
/// `upstream_timeout` together, here 2 s).
#[tokio::test]
async fn an_http2_client_that_never_reads_its_answer_is_cut_off() {
    let up = Upstream::start(by_path).await;
    let gw = Gw::start(&policy(
        &up,
        ", idle_timeout: 1s, body_read_timeout: 1s, upstream_timeout: 1s",
    ))
    .await;
    let tcp = TcpStream::connect(gw.url("").trim_start_matches("http://"))
        .await
        .unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
            .initial_stream_window_size(65_535)
            .handshake(hyper_util::rt::TokioIo::new(tcp))
            .await
            .unwrap();
    let ended = tokio::spawn(conn);
    let req = http::Request::get(gw.url("/large"))
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    let answer = sender.send_request(req).await.unwrap();
    assert_eq!(answer.status(), StatusCode::OK);
    // Its body is never read.
    let _ = tokio::time::timeout(Duration::from_secs(8), ended)
        .await
        .expect("the connection of a client not reading was still open after 8 s");
    drop(answer);
}

/// An answer's own fields cannot weaken its hardening: not by setting a security field to
/// something else, not by naming security fields in `Connection` (which removes the fields it
/// names), and not with a banner or a CORS field of its own.
#[tokio::test]
async fn an_answers_own_fields_cannot_undo_its_hardening() {
    let up = Upstream::start(by_path).await;
    let gw = Gw::start(&policy(&up, "")).await;
    let r = get(&gw, "/undoes-hardening").await;
    assert_eq!((r.status, &*r.text), (StatusCode::OK, "ok"));
    let all = |n: &str| -> Vec<&str> {
        r.headers
            .get_all(n)
            .iter()
            .map(|v| v.to_str().unwrap())
            .collect()
    };
    assert_eq!(all("x-frame-options"), ["DENY"]);
    assert_eq!(all("x-content-type-options"), ["nosniff"]);
    assert_eq!(all("x-kept"), ["yes"]);
    for gone in ["x-hop", "server", "access-control-allow-origin"] {
        assert!(all(gone).is_empty(), "{gone}: {:?}", r.headers);
    }
}

/// Repeats of one length (RFC 9110, 8.6) are accepted and passed on as one.
#[tokio::test]
async fn a_repeated_length_goes_on_once() {
    let up = Upstream::start(by_path).await;
    let gw = Gw::start(&policy(&up, "")).await;
    let r = get(&gw, "/repeated-length").await;
    assert_eq!((r.status, &*r.text), (StatusCode::OK, "ok"));
    let lengths: Vec<_> = r.headers.get_all("content-length").iter().collect();
    assert_eq!(lengths, ["2"]);
}

/// A body that stops coming is cut after `upstream_timeout` of silence, and a malformed chunk
/// ends the body: the client sees a broken answer, never a wrong one.
#[tokio::test]
async fn a_stalled_or_malformed_body_is_cut() {
    let up = Upstream::start(by_path).await;
    let gw = Gw::start(&policy(&up, ", upstream_timeout: 1s")).await;
    let started = Instant::now();
    let resp = client().get(gw.url("/stall")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(resp.text().await.is_err(), "the body was not cut");
    assert!(started.elapsed() < Duration::from_secs(5));
    // Cut before or after the head went out, as the chunk came with it or after. An empty
    // size line is not the last chunk (httparse alone would read it as one).
    for path in ["/bad-chunk", "/empty-chunk-size"] {
        if let Ok(resp) = client().get(gw.url(path)).send().await {
            assert!(
                resp.text().await.is_err(),
                "{path}: the malformed chunk was passed on"
            );
        }
    }
    assert_eq!(get(&gw, "/length").await.text, "ok");
}

/// The gateway frames what it sends: a length when it knows it, chunked otherwise; a client's
/// own framing headers are not passed on.
#[tokio::test]
async fn request_bodies_are_framed_by_the_gateway() {
    let up = Upstream::start(by_path).await;
    let gw = Gw::start(&policy(&up, "")).await;
    let c = client();
    let r = c
        .post(gw.url("/json"))
        .header("content-type", "application/json")
        .body("{\"a\":1}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    // A chunked upload, written raw: three chunks, the middle one large.
    let mut raw = TcpStream::connect(gw.url("").trim_start_matches("http://"))
        .await
        .unwrap();
    let mut upload =
        b"POST /streamed HTTP/1.1\r\nhost: gw\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n5\r\n{\"b\":\r\n4e20\r\n".to_vec();
    upload.extend(std::iter::repeat_n(b'2', 20_000));
    upload.extend_from_slice(b"\r\n1\r\n}\r\n0\r\n\r\n");
    raw.write_all(&upload).await.unwrap();
    let mut reply = String::new();
    raw.read_to_string(&mut reply).await.unwrap();
    assert!(reply.starts_with("HTTP/1.1 200 "), "{reply}");
    let seen = up.seen();
    let json = seen.iter().find(|r| r.starts_with("POST /json ")).unwrap();
    assert!(json.contains("\r\ncontent-length: 7\r\n"), "{json}");
    assert!(json.ends_with("\r\n\r\n{\"a\":1}"), "{json}");
    let streamed = seen
        .iter()
        .find(|r| r.starts_with("POST /streamed "))
        .unwrap();
    assert!(
        streamed.contains("\r\ntransfer-encoding: chunked\r\n"),
        "{}",
        &streamed[..streamed.find("\r\n\r\n").unwrap()]
    );
    assert!(!streamed.contains("content-length"));
    let body = dechunk(&streamed[streamed.find("\r\n\r\n").unwrap() + 4..]);
    assert_eq!(body, format!("{{\"b\":{}}}", "2".repeat(20_000)));
    assert_eq!(up.accepted(), 1);
}

/// An upstream that refuses an upload on its head alone, without reading the body, is heard:
/// the gateway stops sending the body and passes the refusal on.
#[tokio::test]
async fn an_answer_before_the_request_body_ends_is_passed_on() {
    let up = Upstream::start(by_path).await;
    // A body larger than every socket buffer between the client and the upstream.
    let gw = Gw::start(&policy(&up, ", max_body_bytes: 67108864")).await;
    let raw = TcpStream::connect(gw.url("").trim_start_matches("http://"))
        .await
        .unwrap();
    let (mut rd, mut wr) = raw.into_split();
    let size = 48 << 20;
    let upload = tokio::spawn(async move {
        let head = format!("POST /early HTTP/1.1\r\nhost: gw\r\ncontent-length: {size}\r\n\r\n");
        let _ = wr.write_all(head.as_bytes()).await;
        let _ = wr.write_all(&vec![b'x'; size]).await;
        // Kept open: a client that half-closes has given up on its answer.
        wr
    });
    let mut reply = vec![0u8; 1024];
    let n = tokio::time::timeout(Duration::from_secs(5), rd.read(&mut reply))
        .await
        .expect("no answer while the body was still being sent")
        .unwrap();
    let reply = String::from_utf8_lossy(&reply[..n]);
    assert!(reply.starts_with("HTTP/1.1 403 "), "{reply}");
    upload.abort();
    // The connection that answered early is not reused.
    assert_eq!(get(&gw, "/length").await.text, "ok");
    assert_eq!(up.accepted(), 2);
}

/// The data of a chunked body (sizes without extensions, no trailers).
fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    loop {
        let (size, rest) = body.split_once("\r\n").unwrap();
        let size = usize::from_str_radix(size, 16).unwrap();
        if size == 0 {
            assert_eq!(rest, "\r\n");
            return out;
        }
        out.push_str(&rest[..size]);
        body = rest[size..].strip_prefix("\r\n").unwrap();
    }
}
