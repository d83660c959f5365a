//! The worker's upstream connections: reused while they last, replaced when the upstream
//! closes them, never shared by two answers at once, and left behind when a reload points the
//! gateway elsewhere.

#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use portcullis_test_support::reqwest::{Method, StatusCode};
use portcullis_test_support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A raw HTTP/1.1 upstream that counts the connections it accepts. Each GET (one read) is
/// answered with its path (and the upstream's port in `x-upstream`); `/slow` sends half its body, then the rest a second later. With
/// `close_after_answer`, the upstream closes each connection right after its first answer
/// without saying so, as one whose keep-alive timeout just ran out.
async fn counting_upstream(close_after_answer: bool) -> (SocketAddr, Arc<AtomicUsize>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                while let Ok(n @ 1..) = s.read(&mut buf).await {
                    let head = String::from_utf8_lossy(&buf[..n]).into_owned();
                    let path = head.split(' ').nth(1).unwrap_or("/").to_owned();
                    if path == "/slow" {
                        let first = b"HTTP/1.1 200 OK\r\ncontent-length: 8\r\n\r\nslow";
                        if s.write_all(first).await.is_err() {
                            return;
                        }
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        if s.write_all(b"body").await.is_err() {
                            return;
                        }
                    } else {
                        let reply = format!(
                            "HTTP/1.1 200 OK\r\nx-upstream: {}\r\ncontent-length: {}\r\n\r\n{path}",
                            addr.port(),
                            path.len()
                        );
                        if s.write_all(reply.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                    if close_after_answer {
                        return;
                    }
                }
            });
        }
    });
    (addr, accepted)
}

fn policy(up: SocketAddr) -> String {
    // One worker, so every request below meets the same pool.
    format!(
        "listen: 127.0.0.1:0\nupstream: http://{up}\nroutes: [GET /fast, GET /slow]\nlimits: {{ workers: 1 }}\n"
    )
}

#[tokio::test]
async fn one_upstream_connection_carries_consecutive_requests() {
    let (up, accepted) = counting_upstream(false).await;
    let gw = Gw::start(&policy(up)).await;
    // A new client each time: reuse upstream does not depend on the client's connection.
    for _ in 0..5 {
        let r = send(&client(), Method::GET, &gw.url("/fast"), None, None).await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(r.text, "/fast");
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_connection_the_upstream_closed_is_replaced_without_an_error() {
    let (up, accepted) = counting_upstream(true).await;
    let gw = Gw::start(&policy(up)).await;
    let c = client();
    for i in 0..5 {
        let r = send(&c, Method::GET, &gw.url("/fast"), None, None).await;
        assert_eq!(r.status, StatusCode::OK, "request {i}: {}", r.text);
        assert_eq!(r.text, "/fast");
        // Half the time straight on, half after the close had time to be seen.
        if i % 2 == 1 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 5);
}

#[tokio::test]
async fn a_slow_answer_does_not_hold_up_the_next_request() {
    let (up, accepted) = counting_upstream(false).await;
    let gw = Gw::start(&policy(up)).await;
    let slow = {
        let url = gw.url("/slow");
        tokio::spawn(async move { send(&client(), Method::GET, &url, None, None).await })
    };
    // The slow answer's head is in (its connection is back in the pool, still busy) before
    // the fast request is sent.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    let r = send(&client(), Method::GET, &gw.url("/fast"), None, None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "the fast request waited {:?} behind the slow body",
        started.elapsed()
    );
    let slow = slow.await.unwrap();
    assert_eq!(slow.text, "slowbody");
    assert_eq!(accepted.load(Ordering::SeqCst), 2);
    // Both connections are pooled again once their answers are read.
    for _ in 0..3 {
        assert_eq!(
            send(&client(), Method::GET, &gw.url("/fast"), None, None)
                .await
                .status,
            StatusCode::OK
        );
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_reload_to_another_upstream_leaves_the_old_connections() {
    let (first, first_accepted) = counting_upstream(false).await;
    let (second, second_accepted) = counting_upstream(false).await;
    let gw = Gw::start(&policy(first)).await;
    let c = client();
    assert_eq!(
        send(&c, Method::GET, &gw.url("/fast"), None, None)
            .await
            .status,
        StatusCode::OK
    );
    std::fs::write(&gw.policy_path, policy(second)).unwrap();
    gw.gateway().reload().unwrap();
    for _ in 0..3 {
        let r = send(&c, Method::GET, &gw.url("/fast"), None, None).await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(r.header("x-upstream"), Some(&*second.port().to_string()));
    }
    assert_eq!(first_accepted.load(Ordering::SeqCst), 1);
    assert_eq!(second_accepted.load(Ordering::SeqCst), 1);
}
