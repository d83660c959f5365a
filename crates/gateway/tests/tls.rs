//! TLS termination: the gateway serves HTTPS with a certificate from the policy, negotiates
//! HTTP/2 or HTTP/1.1 by ALPN, adds HSTS, and tells the upstream the client spoke https.

#![allow(clippy::unwrap_used)]

use portcullis_test_support::reqwest::StatusCode;
use portcullis_test_support::*;

#[tokio::test]
async fn terminates_tls_with_hsts() {
    let up = Recorder::start().await;
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let dir = std::env::temp_dir().join(format!("portcullis-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("cert.pem"), cert.cert.pem()).unwrap();
    std::fs::write(dir.join("key.pem"), cert.signing_key.serialize_pem()).unwrap();
    let policy = format!(
        "listen: 127.0.0.1:0\nupstream: http://{}\nroutes: [GET /api/items]\ntls: {{ cert: {}, key: {} }}\n",
        up.addr,
        dir.join("cert.pem").display(),
        dir.join("key.pem").display()
    );
    let gw = Gw::start(&policy).await;
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
