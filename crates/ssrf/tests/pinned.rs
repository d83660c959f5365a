//! `PinnedResolver` (feature `reqwest`): the connect-time resolver refuses forbidden addresses.

#![cfg(feature = "reqwest")]
#![allow(clippy::unwrap_used)]

mod common;

use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use common::{ip, open};
use portcullis_ssrf::{Blocked, Checker, Policy, StaticResolver};
use reqwest::dns::{Name, Resolve as _};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;

async fn resolve(
    c: &Checker<StaticResolver>,
    name: &str,
) -> Result<Vec<std::net::SocketAddr>, String> {
    c.pinned_resolver()
        .resolve(Name::from_str(name).unwrap())
        .await
        .map(Iterator::collect)
        .map_err(|e| e.to_string())
}

#[tokio::test]
async fn pinned_resolver_filters_like_check() {
    let c = open();
    let ok = resolve(&c, "public.example").await.unwrap();
    assert_eq!(ok.len(), 2);
    assert!(
        ok.iter().all(|a| a.port() == 0),
        "reqwest fills in the port"
    );
    for (name, want) in [
        ("mixed.example", Blocked::ForbiddenAddress(ip("10.0.0.7"))),
        (
            "metadata.google.internal",
            Blocked::ForbiddenAddress(ip("169.254.169.254")),
        ),
        ("localhost", Blocked::ForbiddenAddress(ip("127.0.0.1"))),
        ("empty.example", Blocked::Unresolvable),
        ("nowhere.example", Blocked::Unresolvable),
    ] {
        assert_eq!(
            resolve(&c, name).await.unwrap_err(),
            want.to_string(),
            "{name}"
        );
    }
}

/// DNS rebinding: the name resolved to a public address when it was checked, and to loopback
/// when the client connects. The pinned client refuses; the canary on loopback sees nothing.
#[tokio::test]
async fn a_rebound_name_is_not_connected_to() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let hits = Arc::new(AtomicUsize::new(0));
    let seen = hits.clone();
    let canary = tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            seen.fetch_add(1, Ordering::SeqCst);
            let _ = s
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                .await;
        }
    });

    let policy = Policy {
        schemes: vec!["http".into()],
        ..Policy::default()
    };
    let url = format!("http://rebind.example:{port}/");
    let at_check = Checker::with_resolver(
        &policy,
        StaticResolver::new().with("rebind.example", [ip("93.184.215.14")]),
    );
    let checked = at_check.check(&url).await.unwrap();

    let at_connect = Checker::with_resolver(
        &policy,
        StaticResolver::new().with("rebind.example", [ip("127.0.0.1")]),
    );
    let client = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .dns_resolver(at_connect.pinned_resolver())
        .build()
        .unwrap();
    let err = client.get(checked.url).send().await.unwrap_err();
    assert!(err.is_connect(), "{err:?}");
    assert_eq!(hits.load(Ordering::SeqCst), 0, "nothing reached the canary");
    canary.abort();
}
