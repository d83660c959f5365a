//! TLS termination: the gateway serves HTTPS with a certificate from the policy, negotiates
//! HTTP/2 or HTTP/1.1 by ALPN, adds HSTS, and tells the upstream the client spoke https.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use portcullis_test_support::reqwest::StatusCode;
use portcullis_test_support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A gateway serving TLS with `cert` in front of `up`; `tag` keeps the files of concurrent
/// tests apart.
async fn gateway_with_tls(
    up: &Recorder,
    cert: &rcgen::CertifiedKey<rcgen::KeyPair>,
    tag: &str,
    extra: &str,
) -> (Gw, std::path::PathBuf) {
    let dir = std::env::temp_dir().join(format!("portcullis-tls-{}-{tag}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("cert.pem"), cert.cert.pem()).unwrap();
    std::fs::write(dir.join("key.pem"), cert.signing_key.serialize_pem()).unwrap();
    let policy = format!(
        "listen: 127.0.0.1:0\nupstream: http://{}\nroutes: [GET /api/items]\ntls: {{ cert: {}, key: {} }}\n{extra}",
        up.addr,
        dir.join("cert.pem").display(),
        dir.join("key.pem").display()
    );
    let gw = Gw::start(&policy).await;
    (gw, dir)
}

#[tokio::test]
async fn terminates_tls_with_hsts() {
    let up = Recorder::start().await;
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let (gw, dir) = gateway_with_tls(&up, &cert, "h2", "").await;
    let port = gw.base.rsplit(':').next().unwrap().to_owned();
    let root = reqwest::Certificate::from_pem(cert.cert.pem().as_bytes()).unwrap();
    let c = reqwest::Client::builder()
        .no_proxy()
        .tls_certs_only([root])
        .resolve("localhost", format!("127.0.0.1:{port}").parse().unwrap())
        .build()
        .unwrap();
    let r = c
        .get(format!("https://localhost:{port}/api/items"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.version(), reqwest::Version::HTTP_2, "ALPN picks h2");
    assert_eq!(
        r.headers()["strict-transport-security"],
        "max-age=31536000; includeSubDomains"
    );
    assert_eq!(
        up.seen().last().unwrap().headers["x-forwarded-proto"],
        "https"
    );
    // Plain HTTP on the TLS port gets nowhere.
    let plain = client()
        .get(format!("http://127.0.0.1:{port}/api/items"))
        .send()
        .await;
    assert!(plain.is_err() || plain.unwrap().status() != StatusCode::OK);
    let _ = std::fs::remove_dir_all(&dir);
}

/// An HTTP/1.1 client session with the gateway, trusting `cert`.
async fn http1_over_tls(
    gw: &Gw,
    cert: &rcgen::CertifiedKey<rcgen::KeyPair>,
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.cert.der().clone()).unwrap();
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let tcp = tokio::net::TcpStream::connect(gw.base.trim_start_matches("http://"))
        .await
        .unwrap();
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .unwrap()
}

#[tokio::test]
async fn http1_over_tls_keeps_its_connection_across_quiet_spells() {
    let up = Recorder::start().await;
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let (gw, dir) = gateway_with_tls(&up, &cert, "h1", "").await;
    let mut s = http1_over_tls(&gw, &cert).await;
    // Three requests on one connection, each after a pause long enough for the gateway to
    // give the connection's buffers back in between.
    for _ in 0..3 {
        s.write_all(b"GET /api/items HTTP/1.1\r\nHost: localhost\r\n\r\n")
            .await
            .unwrap();
        let head = read_response(&mut s)
            .await
            .expect("answered on the same connection");
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert!(
            head.to_ascii_lowercase()
                .contains("strict-transport-security")
        );
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    assert_eq!(up.seen().len(), 3);
    // The client says goodbye; the gateway closes its side too.
    s.shutdown().await.unwrap();
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut rest)).await;
    assert!(closed.is_ok(), "still open");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A TLS client that says nothing after its handshake is late, not idle: it is closed
/// `header_read_timeout` after it connected (it was kept for `idle_timeout`).
#[tokio::test]
async fn a_tls_client_silent_after_its_handshake_is_closed_at_the_head_deadline() {
    let up = Recorder::start().await;
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let limits = "limits: { header_read_timeout: 1s, idle_timeout: 10s }\n";
    let (gw, dir) = gateway_with_tls(&up, &cert, "silent", limits).await;
    let start = std::time::Instant::now();
    let mut s = http1_over_tls(&gw, &cert).await;
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(8), s.read_to_end(&mut rest)).await;
    assert!(closed.is_ok(), "still open after 8 s");
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "closed after {:?}",
        start.elapsed()
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// The gateway ends a TLS session it closes with `close_notify`: a client reading an answer to
/// the connection's end can tell that end from a cut (rustls reports a cut as an error).
#[tokio::test]
async fn a_tls_session_the_gateway_closes_ends_with_close_notify() {
    let up = Recorder::start().await;
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let (gw, dir) = gateway_with_tls(&up, &cert, "close", "").await;
    let mut s = http1_over_tls(&gw, &cert).await;
    s.write_all(b"GET /api/items HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut all = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut all))
        .await
        .expect("still open after 5 s");
    let text = String::from_utf8_lossy(&all);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    read.expect("the session ended without close_notify");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A client that trusts only `cert`, for `localhost` at `port`, on fresh connections.
fn trusting(cert: &rcgen::CertifiedKey<rcgen::KeyPair>, port: &str) -> reqwest::Client {
    let root = reqwest::Certificate::from_pem(cert.cert.pem().as_bytes()).unwrap();
    reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(0)
        .tls_certs_only([root])
        .resolve("localhost", format!("127.0.0.1:{port}").parse().unwrap())
        .build()
        .unwrap()
}

/// The status of `GET url` from a client that trusts only `cert`.
async fn status_for(
    cert: &rcgen::CertifiedKey<rcgen::KeyPair>,
    port: &str,
    url: &str,
) -> StatusCode {
    trusting(cert, port).get(url).send().await.unwrap().status()
}

/// A renewed certificate written over the old files is served after a reload (the reload
/// used to report success and keep serving the old one); the admin token file is read again
/// too, so a rotated token ends the old one at once.
#[tokio::test]
async fn a_reload_serves_a_renewed_certificate_and_a_rotated_admin_token() {
    let up = Recorder::start().await;
    let old = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let secrets = std::env::temp_dir().join(format!("portcullis-rotate-{}", std::process::id()));
    std::fs::create_dir_all(&secrets).unwrap();
    let token_file = secrets.join("admin.token");
    std::fs::write(&token_file, "old-admin-token-0000000001\n").unwrap();
    let (gw, dir) = gateway_with_tls(
        &up,
        &old,
        "rotate",
        &format!(
            "admin: {{ listen: 127.0.0.1:0, token_file: {} }}\n",
            token_file.display()
        ),
    )
    .await;
    let port = gw.base.rsplit(':').next().unwrap().to_owned();
    let url = format!("https://localhost:{port}/api/items");
    let metrics = format!("{}/metrics", gw.admin.clone().unwrap());
    let admin = |token: &'static str| {
        let metrics = metrics.clone();
        async move {
            send(&client(), reqwest::Method::GET, &metrics, Some(token), None)
                .await
                .status
        }
    };
    assert_eq!(status_for(&old, &port, &url).await, StatusCode::OK);
    assert_eq!(admin("old-admin-token-0000000001").await, StatusCode::OK);

    let new = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    std::fs::write(dir.join("cert.pem"), new.cert.pem()).unwrap();
    std::fs::write(dir.join("key.pem"), new.signing_key.serialize_pem()).unwrap();
    std::fs::write(&token_file, "new-admin-token-0000000002\n").unwrap();
    gw.gateway().reload().unwrap();

    assert_eq!(status_for(&new, &port, &url).await, StatusCode::OK);
    assert!(
        trusting(&old, &port).get(&url).send().await.is_err(),
        "the old certificate is no longer served"
    );
    assert_eq!(
        admin("old-admin-token-0000000001").await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(admin("new-admin-token-0000000002").await, StatusCode::OK);

    // A certificate file that does not load refuses the reload; the running one stays.
    std::fs::write(dir.join("cert.pem"), "not a certificate").unwrap();
    let problems = gw.gateway().reload().unwrap_err().to_string();
    assert!(problems.contains("tls"), "{problems}");
    assert_eq!(status_for(&new, &port, &url).await, StatusCode::OK);
    let _ = std::fs::remove_dir_all(&secrets);
}

/// A TLS client that sends key updates (records that carry no request) every 300 ms does not
/// keep an idle connection open past `idle_timeout`: each used to start the idle limit again.
#[tokio::test]
async fn key_updates_do_not_keep_an_idle_connection_open() {
    let up = Recorder::start().await;
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let (gw, _dir) =
        gateway_with_tls(&up, &cert, "keyupdate", "limits: { idle_timeout: 1s }\n").await;
    let port: u16 = gw.base.rsplit(':').next().unwrap().parse().unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.cert.der().clone()).unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .unwrap();
    tls.write_all(b"GET /api/items HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 4096];
    let n = tls.read(&mut buf).await.unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    let start = std::time::Instant::now();
    let closed_after = loop {
        tokio::time::sleep(Duration::from_millis(300)).await;
        if tls.get_mut().1.refresh_traffic_keys().is_err() || tls.flush().await.is_err() {
            break start.elapsed();
        }
        let read = tokio::time::timeout(Duration::from_millis(10), tls.read(&mut buf)).await;
        if let Ok(Ok(0) | Err(_)) = read {
            break start.elapsed();
        }
        assert!(
            start.elapsed() < Duration::from_secs(4),
            "still open after 4 s"
        );
    };
    assert!(
        closed_after < Duration::from_millis(2500),
        "closed after {closed_after:?}"
    );
}
