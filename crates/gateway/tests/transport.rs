//! The accept and proxy phases against hostile clients and failing upstreams: smuggling,
//! path tricks, slowloris, oversized and chunked bodies, spoofed forwarding headers, a dead
//! upstream, HTTP/2, hot reload, the admin listener.

#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use portcullis_test_support::reqwest::{Method, StatusCode};
use portcullis_test_support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn recorder_policy(up: &Recorder, extra: &str) -> String {
    format!(
        "listen: 127.0.0.1:0\nupstream: http://{}\nroutes:\n  - GET /api/items\n  - GET /api/items/{{id}}\n  - POST /api/items\n  - GET /admin\n{extra}",
        up.addr
    )
}

/// An upstream that answers each request (a GET, in one read) after `delay`.
async fn slow_upstream(delay: Duration) -> std::net::SocketAddr {
    canned_upstream(delay, b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nslow").await
}

/// A raw connection to the gateway.
async fn connect(gw: &Gw) -> TcpStream {
    TcpStream::connect(gw.base.trim_start_matches("http://"))
        .await
        .unwrap()
}

/// Sends raw bytes and reads until the server closes or `wait` passes.
async fn raw(addr: &str, bytes: &[u8], wait: Duration) -> String {
    let mut s = TcpStream::connect(addr.trim_start_matches("http://"))
        .await
        .unwrap();
    s.write_all(bytes).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(wait, s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// The request id on an answer is the gateway's, once: an upstream's own `X-Request-Id` does
/// not go out beside it.
#[tokio::test]
async fn an_answer_carries_one_request_id_the_gateways() {
    let addr = canned_upstream(
        Duration::ZERO,
        b"HTTP/1.1 200 OK\r\nX-Request-Id: upstream-chose-this\r\ncontent-length: 2\r\n\r\n{}",
    )
    .await;
    let gw = Gw::start(&format!(
        "listen: 127.0.0.1:0\nupstream: http://{addr}\nroutes: [GET /api/items]\n"
    ))
    .await;
    let answer = raw(
        &gw.base,
        b"GET /api/items HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        Duration::from_secs(3),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let ids: Vec<&str> = answer
        .lines()
        .filter(|l| l.to_ascii_lowercase().starts_with("x-request-id:"))
        .collect();
    assert_eq!(ids.len(), 1, "{answer}");
    assert!(!ids[0].contains("upstream-chose-this"), "{answer}");
    assert!(ids[0].len() >= "x-request-id: ".len() + 16, "{answer}");
}

#[tokio::test]
async fn smuggling_with_both_lengths_never_reaches_the_upstream_as_two_requests() {
    let up = Recorder::start().await;
    let gw = Gw::start(&recorder_policy(&up, "")).await;
    // CL.TE: a front end reading Content-Length would forward the smuggled GET as part of the
    // body; one reading Transfer-Encoding would see it as a second request. Neither is
    // guessed: the request is refused, and its connection closed.
    let attack = b"POST /api/items HTTP/1.1\r\nHost: x\r\nContent-Length: 45\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /admin HTTP/1.1\r\nHost: x\r\nX: y\r\n\r\n";
    let answer = raw(&gw.base, attack, Duration::from_secs(3)).await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("application/problem+json"), "{answer}");
    assert!(answer.contains("x-request-id: "), "{answer}");
    assert!(
        answer.contains("x-content-type-options: nosniff"),
        "{answer}"
    );
    assert_eq!(
        answer.matches("HTTP/1.1").count(),
        1,
        "one answer, then the connection closes: {answer}"
    );
    // Invalid framings are refused outright: differing lengths, a negative one, chunked over
    // HTTP/1.0, chunked twice, and a transfer coding the gateway does not implement (501).
    for (bad, status) in [
        (
            &b"POST /api/items HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!"[..],
            400,
        ),
        (
            b"POST /api/items HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
            400,
        ),
        (
            b"POST /api/items HTTP/1.0\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            400,
        ),
        (
            b"POST /api/items HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            400,
        ),
        (
            b"POST /api/items HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\nxx",
            501,
        ),
        (
            b"POST /api/items HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
            501,
        ),
    ] {
        let answer = raw(&gw.base, bad, Duration::from_secs(3)).await;
        assert!(
            answer.starts_with(&format!("HTTP/1.1 {status}")),
            "{status}: {answer}"
        );
        assert_eq!(answer.matches("HTTP/1.1").count(), 1, "{answer}");
    }
    assert!(
        up.seen().is_empty(),
        "none of the requests was forwarded: {:?}",
        up.seen()
    );
}

#[tokio::test]
async fn the_normalised_path_is_what_the_upstream_receives() {
    let up = Recorder::start().await;
    let gw = Gw::start(&recorder_policy(&up, "")).await;
    let cases = [
        ("/api//items", 200, Some("/api/items")),
        ("/api/./items/", 200, Some("/api/items")),
        ("/api/x/../items?limit=5", 200, Some("/api/items?limit=5")),
        ("/api/%69tems/42", 200, Some("/api/items/42")),
        ("/api/items/%2e%2e/%2e%2e/admin", 200, Some("/admin")),
        ("/api/items/42%2f..%2f..%2fadmin", 400, None),
        ("/api/items;jsessionid=1", 400, None),
        ("/api/items/..;/..;/admin", 400, None),
        ("/api/items%5c..%5cadmin", 400, None),
        ("/api/../../etc/passwd", 400, None),
        ("/api/items/a%00b", 400, None),
    ];
    for (sent, status, forwarded) in cases {
        let before = up.seen().len();
        let answer = raw(
            &gw.base,
            format!("GET {sent} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
            Duration::from_secs(3),
        )
        .await;
        assert!(
            answer.starts_with(&format!("HTTP/1.1 {status}")),
            "{sent}: {answer}"
        );
        let seen = up.seen();
        match forwarded {
            Some(path) => assert_eq!(seen.last().map(|r| r.target.as_str()), Some(path), "{sent}"),
            None => assert_eq!(seen.len(), before, "{sent} must not be forwarded"),
        }
    }
}

/// A gateway with a 1 s head-read deadline, and a connection to it that has sent `bytes`
/// (ending in an unfinished head).
async fn unfinished_head(up: &Recorder, bytes: &[u8]) -> (Gw, TcpStream) {
    let gw = Gw::start(&recorder_policy(
        up,
        "limits: { header_read_timeout: 1s }\n",
    ))
    .await;
    let mut s = connect(&gw).await;
    s.write_all(bytes).await.unwrap();
    (gw, s)
}

#[tokio::test]
async fn slowloris_connections_are_cut() {
    let up = Recorder::start().await;
    let (_gw, mut s) =
        unfinished_head(&up, b"GET /api/items HTTP/1.1\r\nHost: x\r\nX-Slow: ").await;
    let start = Instant::now();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            // Dribble a byte now and then, as slowloris does.
            if s.write_all(b"a").await.is_err() {
                return;
            }
            let mut chunk = [0u8; 256];
            match tokio::time::timeout(Duration::from_millis(300), s.read(&mut chunk)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return,
                Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
                Err(_) => {}
            }
        }
    })
    .await;
    assert!(read.is_ok(), "the connection was still open after 10 s");
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "cut after {:?}",
        start.elapsed()
    );
    assert!(up.seen().is_empty());
    // Told why, as a problem with a request id, before the close.
    let answer = String::from_utf8_lossy(&buf);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(
        answer.contains("application/problem+json") && answer.contains("\"request_id\""),
        "{answer}"
    );
    assert!(
        answer.to_ascii_lowercase().contains("connection: close"),
        "{answer}"
    );
}

/// The head's deadline runs from the connection's start, through the wait for the HTTP/2
/// preface: a client that sends `P` (the preface's first byte, and `POST`'s) and waits, then
/// trickles the rest of a head, is cut `header_read_timeout` after it connected, not that
/// long after its second byte.
#[tokio::test]
async fn a_head_begun_like_the_http2_preface_has_the_same_deadline() {
    let up = Recorder::start().await;
    let (_gw, mut s) = unfinished_head(&up, b"P").await;
    let start = Instant::now();
    tokio::time::sleep(Duration::from_millis(800)).await;
    s.write_all(b"OST /api/items HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let closed = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if s.write_all(b"X-Slow: a\r\n").await.is_err() {
                return;
            }
            let mut chunk = [0u8; 256];
            match tokio::time::timeout(Duration::from_millis(100), s.read(&mut chunk)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return,
                _ => {}
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the connection was still open after 10 s");
    let waited = start.elapsed();
    assert!(waited < Duration::from_millis(1500), "cut after {waited:?}");
    assert!(up.seen().is_empty());
}

/// The unfinished head arrived with a whole request before it, so no read follows it: the
/// deadline still runs from the bytes already received.
#[tokio::test]
async fn a_head_left_unfinished_behind_a_pipelined_request_is_cut() {
    let up = Recorder::start().await;
    let (_gw, mut s) = unfinished_head(
        &up,
        b"GET /api/items HTTP/1.1\r\nHost: x\r\n\r\nGET /api/items HTTP/1.1\r\nHost: x\r\nX-Slow: ",
    )
    .await;
    let start = Instant::now();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await;
    let waited = start.elapsed();
    let text = String::from_utf8_lossy(&out);
    assert_eq!(text.matches("HTTP/1.1 200").count(), 1, "{text}");
    assert!(waited < Duration::from_secs(5), "cut after {waited:?}");
    assert!(
        waited >= Duration::from_millis(900),
        "cut before the deadline: {waited:?}"
    );
    assert_eq!(up.seen().len(), 1);
}

#[tokio::test]
async fn oversized_bodies_are_refused_declared_or_streamed() {
    let up = Recorder::start().await;
    let gw = Gw::start(&recorder_policy(&up, "limits: { max_body_bytes: 1KiB }\n")).await;
    let c = client();
    let small = c
        .post(gw.url("/api/items"))
        .body(vec![b'a'; 1000])
        .send()
        .await
        .unwrap();
    assert_eq!(small.status(), StatusCode::OK);
    let declared = c
        .post(gw.url("/api/items"))
        .body(vec![b'a'; 5000])
        .send()
        .await
        .unwrap();
    assert_eq!(declared.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(
        declared.headers()["content-type"],
        "application/problem+json"
    );
    // Chunked, no Content-Length: counted while streaming.
    let mut chunked = b"POST /api/items HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n".to_vec();
    for _ in 0..8 {
        chunked.extend_from_slice(b"200\r\n");
        chunked.extend_from_slice(&[b'b'; 512]);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    let answer = raw(&gw.base, &chunked, Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    let bodies: Vec<usize> = up.seen().iter().map(|r| r.body.len()).collect();
    assert!(
        bodies.iter().all(|&n| n <= 1024),
        "no oversized body reached the upstream whole: {bodies:?}"
    );
}

#[tokio::test]
async fn forwarding_headers_cannot_be_spoofed() {
    let up = Recorder::start().await;
    let c = client();
    let spoof = [
        ("x-forwarded-for", "203.0.113.66"),
        ("x-real-ip", "203.0.113.66"),
        ("forwarded", "for=203.0.113.66"),
        ("x-forwarded-host", "evil.example"),
        ("x-forwarded-proto", "https"),
        ("x-request-id", "chosen-by-the-client"),
        // Read as the fields above by servers that map names to CGI-style variables.
        ("x_forwarded_for", "203.0.113.66"),
        ("x_real_ip", "203.0.113.66"),
        // A GET authorised as a GET, a DELETE to frameworks that honour these.
        ("x-http-method-override", "DELETE"),
        ("x-http-method", "DELETE"),
        ("x-method-override", "DELETE"),
    ];
    let send_spoofed = |url: String| {
        let mut req = c.get(url);
        for (k, v) in spoof {
            req = req.header(k, v);
        }
        req.send()
    };
    // Untrusted peer: the gateway's own view wins.
    let gw = Gw::start(&recorder_policy(&up, "")).await;
    send_spoofed(gw.url("/api/items")).await.unwrap();
    let h = up.seen().last().unwrap().headers.clone();
    assert_eq!(h["x-forwarded-for"], "127.0.0.1");
    assert_eq!(h["x-real-ip"], "127.0.0.1");
    assert!(h.get("forwarded").is_none());
    assert_ne!(h["x-forwarded-host"], "evil.example");
    assert!(h["x-request-id"].to_str().unwrap().len() >= 16);
    assert_ne!(h["x-request-id"], "chosen-by-the-client");
    assert_eq!(h["x-forwarded-proto"], "http");
    for name in [
        "x_forwarded_for",
        "x_real_ip",
        "x-http-method-override",
        "x-http-method",
        "x-method-override",
    ] {
        assert!(h.get(name).is_none(), "{name} passed");
    }
    // Each set once: the client's copies are gone, not kept beside the gateway's.
    for name in [
        "x-forwarded-for",
        "x-forwarded-proto",
        "x-forwarded-host",
        "x-real-ip",
        "x-request-id",
        "host",
    ] {
        assert_eq!(h.get_all(name).iter().count(), 1, "{name}");
    }
    // Loopback declared a trusted proxy: its chain is believed and extended.
    let trusting = Gw::start(&recorder_policy(&up, "trusted_proxies: [127.0.0.0/8]\n")).await;
    send_spoofed(trusting.url("/api/items")).await.unwrap();
    let h = up.seen().last().unwrap().headers.clone();
    assert_eq!(h["x-forwarded-for"], "203.0.113.66, 127.0.0.1");
    assert_eq!(h["x-real-ip"], "203.0.113.66");
    assert_eq!(h["x-forwarded-proto"], "https");
    assert_eq!(h["x-forwarded-host"], "evil.example");
}

/// The fields of one hop (RFC 9110, 7.6.1), and those `Connection` names, end at the gateway:
/// a proxy credential or a field a client marks as its own never reaches the upstream.
#[tokio::test]
async fn hop_by_hop_fields_of_a_request_stop_at_the_gateway() {
    let up = Recorder::start().await;
    let gw = Gw::start(&recorder_policy(&up, "")).await;
    let mut s = TcpStream::connect(gw.base.trim_start_matches("http://"))
        .await
        .unwrap();
    s.write_all(
        b"GET /api/items HTTP/1.1\r\nHost: x\r\nConnection: keep-alive, x-hop-secret\r\n\
          X-Hop-Secret: named-by-connection\r\nKeep-Alive: timeout=5\r\nTE: trailers\r\n\
          Trailer: x-checksum\r\nUpgrade: h2c\r\n\
          Proxy-Authorization: Basic cHJveHk6c2VjcmV0\r\nProxy-Connection: keep-alive\r\n\
          X-Kept: yes\r\n\r\n",
    )
    .await
    .unwrap();
    assert!(
        read_response(&mut s)
            .await
            .unwrap()
            .starts_with("HTTP/1.1 200")
    );
    let seen = up.seen().last().unwrap().headers.clone();
    assert_eq!(seen["x-kept"], "yes");
    for name in [
        "x-hop-secret",
        "keep-alive",
        "te",
        "trailer",
        "upgrade",
        "proxy-authorization",
        "proxy-connection",
    ] {
        assert!(seen.get(name).is_none(), "{name} passed: {seen:?}");
    }
    // The gateway's own connection field, if any, names nothing of the client's.
    for v in seen.get_all("connection") {
        assert!(!v.to_str().unwrap().contains("x-hop-secret"), "{v:?}");
    }
}

#[tokio::test]
async fn a_dead_upstream_gets_a_502_problem_and_recovery() {
    // Reserve a port, then free it: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
    let gw = Gw::start(&format!(
        "listen: 127.0.0.1:0\nupstream: http://{addr}\nroutes: [GET /api/items]\n"
    ))
    .await;
    let c = client();
    let r = send(&c, Method::GET, &gw.url("/api/items"), None, None).await;
    assert_eq!(r.status, StatusCode::BAD_GATEWAY);
    assert_eq!(r.header("content-type"), Some("application/problem+json"));
    assert!(
        !r.text.contains(&port.to_string()) && !r.text.contains("refused"),
        "no internal detail: {}",
        r.text
    );
    let up = Recorder::start_on(addr).await;
    let r = send(&c, Method::GET, &gw.url("/api/items"), None, None).await;
    assert_eq!(
        r.status,
        StatusCode::OK,
        "recovered once the upstream is back"
    );
    assert_eq!(up.seen().len(), 1);
}

#[tokio::test]
async fn a_slow_upstream_gets_a_504() {
    // An upstream that accepts and never answers.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = silent.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = silent.accept().await {
            held.push(s);
        }
    });
    let gw = Gw::start(&format!("listen: 127.0.0.1:0\nupstream: http://{addr}\nroutes: [GET /api/items]\nlimits: {{ upstream_timeout: 1s }}\n")).await;
    let r = send(&client(), Method::GET, &gw.url("/api/items"), None, None).await;
    assert_eq!(r.status, StatusCode::GATEWAY_TIMEOUT);
}

/// An upstream whose connections never complete (its accept queue full: the SYN is dropped,
/// so nothing refuses either) is given up after `upstream_connect_timeout`, not after the
/// far longer `upstream_timeout`.
#[tokio::test]
async fn an_upstream_that_never_accepts_is_given_up_at_the_connect_timeout() {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = socket.local_addr().unwrap();
    let full = socket.listen(1).unwrap();
    // Never accepted: these fill the queue, and a further handshake cannot finish.
    let mut fillers = Vec::new();
    for _ in 0..4 {
        if let Ok(Ok(s)) =
            tokio::time::timeout(Duration::from_millis(300), TcpStream::connect(addr)).await
        {
            fillers.push(s);
        }
    }
    let blocked = tokio::time::timeout(Duration::from_millis(500), TcpStream::connect(addr)).await;
    assert!(blocked.is_err(), "the queue is full: a handshake waits");
    let gw = Gw::start(&format!("listen: 127.0.0.1:0\nupstream: http://{addr}\nroutes: [GET /api/items]\nlimits: {{ upstream_connect_timeout: 300ms, upstream_timeout: 30s }}\n")).await;
    let start = Instant::now();
    let r = send(&client(), Method::GET, &gw.url("/api/items"), None, None).await;
    assert_eq!(r.status, StatusCode::BAD_GATEWAY, "{}", r.text);
    assert_eq!(r.header("content-type"), Some("application/problem+json"));
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "{:?}",
        start.elapsed()
    );
    drop((full, fillers));
}

#[tokio::test]
async fn http2_clients_are_served() {
    let up = Recorder::start().await;
    let gw = Gw::start(&recorder_policy(&up, "")).await;
    let h2 = reqwest::Client::builder()
        .no_proxy()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let r = h2.get(gw.url("/api/items/7")).send().await.unwrap();
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(up.seen().last().unwrap().target, "/api/items/7");
}

/// An HTTP/2 connection left idle is closed (`GOAWAY`, then the connection's end) after
/// `idle_timeout` to twice that. hyper's own pings, which every client answers, kept it open
/// for as long as the client liked, holding its connection slot.
#[tokio::test]
async fn idle_http2_connections_are_closed() {
    let up = Recorder::start().await;
    let gw = Gw::start(&recorder_policy(
        &up,
        "limits: { idle_timeout: 1s, workers: 1 }\n",
    ))
    .await;
    let tcp = TcpStream::connect(gw.base.trim_start_matches("http://"))
        .await
        .unwrap();
    let (mut sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tcp),
    )
    .await
    .unwrap();
    let ended = tokio::spawn(conn);
    let req = http::Request::get(gw.url("/api/items/7"))
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    let r = sender.send_request(req).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    drop(r);
    let idle_since = Instant::now();
    tokio::time::timeout(Duration::from_secs(5), ended)
        .await
        .expect("the idle HTTP/2 connection was still open after 5 s")
        .unwrap()
        .unwrap();
    assert!(idle_since.elapsed() >= Duration::from_millis(900));
}

/// An HTTP/2 client that sends no request is closed at the head deadline, as an HTTP/1 one
/// is, not after `idle_timeout`.
#[tokio::test]
async fn an_http2_client_that_asks_nothing_is_closed_at_the_head_deadline() {
    let up = Recorder::start().await;
    let gw = Gw::start(&recorder_policy(
        &up,
        "limits: { header_read_timeout: 1s, idle_timeout: 10s, workers: 1 }\n",
    ))
    .await;
    let start = Instant::now();
    let tcp = TcpStream::connect(gw.base.trim_start_matches("http://"))
        .await
        .unwrap();
    let (_sender, conn) =
        hyper::client::conn::http2::handshake::<_, _, http_body_util::Empty<bytes::Bytes>>(
            hyper_util::rt::TokioExecutor::new(),
            hyper_util::rt::TokioIo::new(tcp),
        )
        .await
        .unwrap();
    let _ = tokio::time::timeout(Duration::from_secs(8), conn)
        .await
        .expect("the silent HTTP/2 connection was still open after 8 s");
    assert!(
        start.elapsed() < Duration::from_secs(4),
        "closed after {:?}",
        start.elapsed()
    );
}

#[tokio::test]
async fn hot_reload_applies_valid_policies_and_keeps_the_old_one_otherwise() {
    let up = Recorder::start().await;
    let gw = Gw::start(&recorder_policy(&up, "")).await;
    let c = client();
    assert_eq!(
        send(&c, Method::GET, &gw.url("/api/other"), None, None)
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    // A valid change: one more route.
    std::fs::write(
        &gw.policy_path,
        recorder_policy(&up, "  - GET /api/other\n"),
    )
    .unwrap();
    gw.gateway().reload().unwrap();
    assert_eq!(
        send(&c, Method::GET, &gw.url("/api/other"), None, None)
            .await
            .status,
        StatusCode::OK
    );
    // An invalid one: refused with its problems, the running policy stays.
    std::fs::write(
        &gw.policy_path,
        "listen: 127.0.0.1:0\nupstream: nope\nroutes: [GET /api/items]\n",
    )
    .unwrap();
    let problems = gw.gateway().reload().unwrap_err();
    assert!(
        problems
            .to_string()
            .contains("portcullis.yaml:2:11: error: upstream"),
        "{problems}"
    );
    assert_eq!(
        send(&c, Method::GET, &gw.url("/api/other"), None, None)
            .await
            .status,
        StatusCode::OK
    );
}

/// Each worker keeps its own view of the policy (with copies of the security fields it
/// writes): a reload reaches every worker's next answer, the upstream's as well as the
/// gateway's own, and the CORS layer with it.
#[tokio::test]
async fn a_reload_reaches_every_workers_security_fields_and_cors() {
    let up = Recorder::start().await;
    let workers = "limits: { workers: 2 }\n";
    let gw = Gw::start(&recorder_policy(&up, workers)).await;
    let c = client();
    let preflight = |c: &reqwest::Client| {
        c.request(Method::OPTIONS, gw.url("/api/items"))
            .header("origin", "https://app.example")
            .header("access-control-request-method", "GET")
            .send()
    };
    let before = preflight(&c).await.unwrap();
    assert!(
        before
            .headers()
            .get("access-control-allow-origin")
            .is_none()
    );
    std::fs::write(
        &gw.policy_path,
        recorder_policy(
            &up,
            &format!(
                "{workers}security_headers:\n  set:\n    x-frame-options: SAMEORIGIN\n\
                 cors:\n  allow_origins: ['https://app.example']\n"
            ),
        ),
    )
    .unwrap();
    gw.gateway().reload().unwrap();
    // Enough connections that both workers answer (each accepts its own).
    for _ in 0..8 {
        let c = client();
        for path in ["/api/items", "/api/nope"] {
            let r = send(&c, Method::GET, &gw.url(path), None, None).await;
            assert_eq!(
                r.headers
                    .get_all("x-frame-options")
                    .iter()
                    .collect::<Vec<_>>(),
                ["SAMEORIGIN"],
                "{path}"
            );
        }
        let after = preflight(&c).await.unwrap();
        assert_eq!(
            after.headers()["access-control-allow-origin"],
            "https://app.example"
        );
    }
}

#[tokio::test]
async fn in_flight_requests_survive_a_reload() {
    // An upstream that answers after a pause, so a reload happens mid-request.
    let addr = slow_upstream(Duration::from_millis(700)).await;
    let policy = |extra: &str| {
        format!("listen: 127.0.0.1:0\nupstream: http://{addr}\nroutes: [GET /slow{extra}]\n")
    };
    let gw = Gw::start(&policy("")).await;
    let url = gw.url("/slow");
    let inflight = tokio::spawn(async move {
        client()
            .get(url)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    std::fs::write(&gw.policy_path, policy(", GET /fast")).unwrap();
    gw.gateway().reload().unwrap();
    assert_eq!(inflight.await.unwrap(), "slow");
}

#[tokio::test]
async fn admin_listener_health_and_guarded_metrics() {
    let up = Recorder::start().await;
    let gw = Gw::start(&recorder_policy(
        &up,
        "admin: { listen: 127.0.0.1:0, token: admin-token-for-tests-0001 }\n",
    ))
    .await;
    let c = client();
    let admin = gw.admin.clone().unwrap();
    send(&c, Method::GET, &gw.url("/api/items"), None, None).await;
    send(&c, Method::GET, &gw.url("/nope"), None, None).await;
    assert_eq!(
        send(&c, Method::GET, &format!("{admin}/healthz"), None, None)
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(
        send(&c, Method::GET, &format!("{admin}/readyz"), None, None)
            .await
            .status,
        StatusCode::OK
    );
    let denied = send(
        &c,
        Method::GET,
        &format!("{admin}/metrics"),
        Some("wrong-token"),
        None,
    )
    .await;
    assert_eq!(denied.status, StatusCode::UNAUTHORIZED);
    let m = send(
        &c,
        Method::GET,
        &format!("{admin}/metrics"),
        Some("admin-token-for-tests-0001"),
        None,
    )
    .await;
    assert_eq!(m.status, StatusCode::OK);
    assert!(
        m.text.contains(
            r#"portcullis_requests_total{route="/api/items",status="200",decision="allowed"} 1"#
        ),
        "{}",
        m.text
    );
    assert!(
        m.text.contains(
            r#"portcullis_requests_total{route="-",status="404",decision="undeclared_route"} 1"#
        ),
        "{}",
        m.text
    );
    assert!(
        m.text
            .contains("portcullis_request_duration_seconds_bucket")
    );
}

#[tokio::test]
async fn the_connection_cap_holds() {
    let up = Recorder::start().await;
    let gw = Gw::start(&recorder_policy(
        &up,
        "limits: { max_connections: 2, workers: 1 }\n",
    ))
    .await;
    let addr = gw.base.trim_start_matches("http://").to_owned();
    let _a = TcpStream::connect(&addr).await.unwrap();
    let _b = TcpStream::connect(&addr).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let answer = raw(
        &gw.base,
        b"GET /api/items HTTP/1.1\r\nHost: x\r\n\r\n",
        Duration::from_secs(2),
    )
    .await;
    assert!(
        answer.is_empty(),
        "a third connection is closed unanswered: {answer}"
    );
    drop((_a, _b));
    tokio::time::sleep(Duration::from_millis(100)).await;
    let answer = raw(
        &gw.base,
        b"GET /api/items HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        Duration::from_secs(2),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

/// Whether the next response on `s` is a 200.
async fn answered_200(s: &mut TcpStream) -> bool {
    read_response(s)
        .await
        .is_some_and(|r| r.starts_with("HTTP/1.1 200"))
}

#[tokio::test]
async fn idle_keep_alive_connections_are_served_again_and_closed_after_idle_timeout() {
    let up = Recorder::start().await;
    let gw = Gw::start(&recorder_policy(
        &up,
        "limits: { idle_timeout: 1s, header_read_timeout: 10s, workers: 1 }\n",
    ))
    .await;
    let mut s = connect(&gw).await;
    let get = |id: u32| format!("GET /api/items/{id} HTTP/1.1\r\nHost: x\r\n\r\n");
    s.write_all(get(1).as_bytes()).await.unwrap();
    assert!(answered_200(&mut s).await);
    // Quiet long enough for the connection to give its buffers back, then used again.
    tokio::time::sleep(Duration::from_millis(200)).await;
    s.write_all(get(2).as_bytes()).await.unwrap();
    assert!(answered_200(&mut s).await);
    // A head that arrives in two parts, with a pause between them.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let third = get(3);
    let (a, b) = third.as_bytes().split_at(9);
    s.write_all(a).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    s.write_all(b).await.unwrap();
    assert!(answered_200(&mut s).await);
    // Two requests in one write.
    tokio::time::sleep(Duration::from_millis(200)).await;
    s.write_all(format!("{}{}", get(4), get(5)).as_bytes())
        .await
        .unwrap();
    let mut both = Vec::new();
    let _ = tokio::time::timeout(Duration::from_millis(500), async {
        let mut chunk = [0u8; 4096];
        while let Ok(n) = s.read(&mut chunk).await {
            if n == 0 {
                break;
            }
            both.extend_from_slice(&chunk[..n]);
        }
    })
    .await;
    assert_eq!(
        String::from_utf8_lossy(&both)
            .matches("HTTP/1.1 200")
            .count(),
        2
    );
    let paths: Vec<String> = up.seen().iter().map(|r| r.target.clone()).collect();
    assert_eq!(
        paths,
        [
            "/api/items/1",
            "/api/items/2",
            "/api/items/3",
            "/api/items/4",
            "/api/items/5"
        ]
    );
    // Then silence: closed after the idle timeout (1 s), not the header-read timeout (10 s).
    let start = Instant::now();
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(8), s.read_to_end(&mut rest)).await;
    assert!(closed.is_ok(), "still open after 8 s");
    assert!(rest.is_empty(), "{}", String::from_utf8_lossy(&rest));
    assert!(
        start.elapsed() < Duration::from_secs(4),
        "closed after {:?}",
        start.elapsed()
    );
}

#[tokio::test]
async fn stopping_closes_idle_connections_and_finishes_busy_ones() {
    let slow = slow_upstream(Duration::from_millis(700)).await;
    let policy = format!(
        "listen: 127.0.0.1:0\nupstream: http://{slow}\nlimits: {{ workers: 1 }}\nroutes:\n  - GET /api/items\nadmin: {{ listen: 127.0.0.1:0 }}\n"
    );
    let mut gw = Gw::start(&policy).await;
    let addr = gw.base.trim_start_matches("http://").to_owned();
    let ready = format!("{}/readyz", gw.admin.clone().unwrap());
    let c = client();
    let r = send(&c, Method::GET, &ready, None, None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        r.json(),
        serde_json::json!({ "status": "ready", "state": "ok" })
    );
    let mut idle = TcpStream::connect(&addr).await.unwrap();
    idle.write_all(b"GET /api/items HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    assert!(
        read_response(&mut idle)
            .await
            .unwrap()
            .starts_with("HTTP/1.1 200")
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut busy = TcpStream::connect(&addr).await.unwrap();
    busy.write_all(b"GET /api/items HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let start = Instant::now();
    let gateway = gw.gateway.take().unwrap();
    let stopped = tokio::spawn(gateway.stop());
    // While it drains, probes are told to send no more.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let r = send(&c, Method::GET, &ready, None, None).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(r.json()["status"], "draining");
    // The request in flight is answered; the idle connection is closed without a word.
    assert!(
        read_response(&mut busy)
            .await
            .unwrap()
            .starts_with("HTTP/1.1 200")
    );
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(2), idle.read_to_end(&mut rest))
        .await
        .expect("the idle connection is closed")
        .unwrap();
    assert!(rest.is_empty());
    tokio::time::timeout(Duration::from_secs(5), stopped)
        .await
        .expect("the gateway stops")
        .unwrap();
    assert!(start.elapsed() < Duration::from_secs(5));
    // Gone with the gateway.
    assert!(c.get(&ready).send().await.is_err());
}

/// Reads one answer (head and `content-length` body) from `s`.
async fn one_answer(s: &mut TcpStream) -> String {
    answer_of(s, false).await
}

/// Reads one answer from `s`: its head, and its body unless it answers a HEAD.
async fn answer_of(s: &mut TcpStream, head_only: bool) -> String {
    let mut got = Vec::new();
    let mut chunk = [0u8; 4096];
    let _ = tokio::time::timeout(Duration::from_secs(3), async {
        loop {
            let text = String::from_utf8_lossy(&got).into_owned();
            if let Some(end) = text.find("\r\n\r\n") {
                let len = text[..end]
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length: "))
                    .map_or(0, |v| v.trim().parse::<usize>().unwrap());
                if head_only || got.len() >= end + 4 + len || text.starts_with("HTTP/1.1 100") {
                    return;
                }
            }
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&chunk[..n]),
            }
        }
    })
    .await;
    String::from_utf8_lossy(&got).into_owned()
}

#[tokio::test]
async fn request_bodies_are_read_when_asked_and_framed_for_the_upstream() {
    let up = Recorder::start().await;
    let gw = Gw::start(&recorder_policy(&up, "")).await;
    let mut s = connect(&gw).await;
    // A client that waits for `100 Continue` gets it when the body is wanted, not before
    // its head is judged.
    s.write_all(b"POST /api/items HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nExpect: 100-continue\r\nContent-Length: 11\r\n\r\n")
        .await
        .unwrap();
    let interim = one_answer(&mut s).await;
    assert!(
        interim.starts_with("HTTP/1.1 100 Continue\r\n\r\n"),
        "{interim}"
    );
    s.write_all(b"{\"a\":\"bcd\"}").await.unwrap();
    let answer = one_answer(&mut s).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    // A chunked body (with an extension and a trailer) and a pipelined GET, in one write.
    s.write_all(b"POST /api/items HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n4;ext=1\r\n{\"b\"\r\n5\r\n:\"cd\"\r\n1\r\n}\r\n0\r\nX-Trailer: t\r\n\r\nGET /api/items HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    assert!(one_answer(&mut s).await.starts_with("HTTP/1.1 200"));
    assert!(one_answer(&mut s).await.starts_with("HTTP/1.1 200"));
    // HEAD: the length, no body; then HTTP/1.0 with keep-alive, kept.
    s.write_all(b"HEAD /api/items HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let head = answer_of(&mut s, true).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.contains("content-length: 11\r\n"), "{head}");
    assert!(
        head.ends_with("\r\n\r\n"),
        "no body after a HEAD answer: {head}"
    );
    s.write_all(b"GET /api/items HTTP/1.0\r\nHost: x\r\nConnection: keep-alive\r\n\r\n")
        .await
        .unwrap();
    let old = one_answer(&mut s).await;
    assert!(old.starts_with("HTTP/1.1 200"), "{old}");
    assert!(old.contains("connection: keep-alive\r\n"), "{old}");
    s.write_all(b"GET /api/items HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    assert!(one_answer(&mut s).await.starts_with("HTTP/1.1 200"));
    let seen = up.seen();
    let bodies: Vec<String> = seen
        .iter()
        .filter(|r| r.method == "POST")
        .map(|r| String::from_utf8_lossy(&r.body).into_owned())
        .collect();
    assert_eq!(bodies, ["{\"a\":\"bcd\"}", "{\"b\":\"cd\"}"]);
    assert_eq!(seen.len(), 6, "{seen:?}");
}

#[tokio::test]
async fn unreadable_requests_get_a_problem_and_the_connection_closes() {
    let up = Recorder::start().await;
    let gw = Gw::start(&recorder_policy(
        &up,
        "limits: { max_header_bytes: 2048 }\n",
    ))
    .await;
    let big = format!(
        "GET /api/items HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\nGET /api/items HTTP/1.1\r\nHost: x\r\n\r\n",
        "a".repeat(4096)
    );
    let answer = raw(&gw.base, big.as_bytes(), Duration::from_secs(3)).await;
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");
    assert!(
        answer.contains("content-type: application/problem+json"),
        "{answer}"
    );
    assert!(answer.contains("\"request_id\""), "{answer}");
    assert!(answer.contains("connection: close"), "{answer}");
    assert_eq!(answer.matches("HTTP/1.1").count(), 1, "{answer}");
    // A body the pipeline refused unread (an undeclared route) leaves the connection at an
    // unknown point: it closes after the answer rather than read the body as a request.
    let smuggle = b"POST /nowhere HTTP/1.1\r\nHost: x\r\nContent-Length: 37\r\n\r\nGET /admin HTTP/1.1\r\nHost: x\r\n\r\n";
    let answer = raw(&gw.base, smuggle, Duration::from_secs(3)).await;
    assert!(answer.starts_with("HTTP/1.1 404"), "{answer}");
    assert_eq!(answer.matches("HTTP/1.1").count(), 1, "{answer}");
    assert!(up.seen().is_empty(), "{:?}", up.seen());
}

/// An admin listener without a token (loopback only) is still reachable from a browser on
/// the same machine: through a name rebound to 127.0.0.1, or by a form or `text/plain` post
/// that needs no preflight. Both are refused; every admin answer says nosniff and no-store.
#[tokio::test]
async fn the_tokenless_admin_listener_refuses_rebound_names_and_simple_posts() {
    let up = Recorder::start().await;
    let gw = Gw::start(&recorder_policy(&up, "admin: { listen: 127.0.0.1:0 }\n")).await;
    let admin = gw.admin.clone().unwrap();
    let rebound = raw(
        &admin,
        b"GET /revocations HTTP/1.1\r\nHost: attacker.example:9901\r\nConnection: close\r\n\r\n",
        Duration::from_secs(3),
    )
    .await;
    assert!(rebound.starts_with("HTTP/1.1 421"), "{rebound}");
    let form = raw(
        &admin,
        b"POST /revocations HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: text/plain\r\nContent-Length: 13\r\nConnection: close\r\n\r\n{\"sub\":\"bob\"}",
        Duration::from_secs(3),
    )
    .await;
    assert!(form.starts_with("HTTP/1.1 415"), "{form}");
    let listed = raw(
        &admin,
        b"GET /revocations HTTP/1.1\r\nHost: localhost:9901\r\nConnection: close\r\n\r\n",
        Duration::from_secs(3),
    )
    .await;
    assert!(listed.starts_with("HTTP/1.1 200"), "{listed}");
    assert!(
        !listed.contains("bob"),
        "the form post revoked nothing: {listed}"
    );
    for answer in [&rebound, &form, &listed] {
        assert!(
            answer.contains("x-content-type-options: nosniff"),
            "{answer}"
        );
        assert!(answer.contains("cache-control: no-store"), "{answer}");
    }
}

/// Line ends and hosts read one way only: a bare LF in a head or in a chunked body's
/// trailers, no `Host`, two of them, or an absolute target naming another host are refused,
/// where a front proxy reading them otherwise would see other requests in the same bytes.
#[tokio::test]
async fn heads_and_trailers_have_one_reading() {
    let up = Recorder::start().await;
    let gw = Gw::start(&recorder_policy(&up, "")).await;
    for bad in [
        &b"GET /api/items HTTP/1.1\nHost: x\r\n\r\n"[..],
        b"GET /api/items HTTP/1.1\r\nHost: x\nX: y\r\n\r\n",
        b"GET /api/items HTTP/1.1\r\n\r\n",
        b"GET /api/items HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n",
        b"GET http://elsewhere.example/api/items HTTP/1.1\r\nHost: x\r\n\r\n",
        b"POST /api/items HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: \r\n\r\n0\r\n\r\n",
    ] {
        let answer = raw(&gw.base, bad, Duration::from_secs(3)).await;
        assert!(answer.starts_with("HTTP/1.1 400"), "{bad:?}: {answer}");
        assert_eq!(answer.matches("HTTP/1.1").count(), 1, "{answer}");
    }
    // A GET hidden after a bare LF in the trailers: refused with the body, never a request.
    let hidden = b"POST /api/items HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\nGET /admin HTTP/1.1\r\nHost: x\r\n\r\n";
    let answer = raw(&gw.base, hidden, Duration::from_secs(3)).await;
    assert_eq!(answer.matches("HTTP/1.1").count(), 1, "{answer}");
    assert!(!answer.starts_with("HTTP/1.1 2"), "{answer}");
    assert!(
        up.seen().iter().all(|r| r.target != "/admin"),
        "{:?}",
        up.seen()
    );
    // HTTP/1.0 is answered without `Host`, and never sent a `100 Continue`.
    let old = raw(
        &gw.base,
        b"POST /api/items HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n{}",
        Duration::from_secs(3),
    )
    .await;
    assert!(old.starts_with("HTTP/1.1 200"), "{old}");
}

/// An answer given before the body was read (here 413, from the declared length) reaches a
/// client that is still sending: the gateway reads and drops the rest for a while after
/// closing, where closing at once made the kernel reset the connection under the answer.
#[tokio::test]
async fn a_refusal_before_the_body_reaches_a_client_still_sending() {
    let up = Recorder::start().await;
    let gw = Gw::start(&recorder_policy(&up, "limits: { max_body_bytes: 1KiB }\n")).await;
    let mut s = connect(&gw).await;
    let body = vec![b'a'; 4 << 20];
    s.write_all(
        format!(
            "POST /api/items HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let sent = s.write_all(&body).await;
    assert!(sent.is_ok(), "the upload was cut: {sent:?}");
    let answer = one_answer(&mut s).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(up.seen().is_empty());
}
