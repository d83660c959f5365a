//! The `portcullis-shop` binary as an operator meets it: help, bad flags, a real process on a
//! loopback port, a database file that survives a restart.

#![allow(clippy::unwrap_used)]

use std::process::Stdio;
use std::time::Duration;

use portcullis_shop::Vuln;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

const BIN: &str = env!("CARGO_BIN_EXE_portcullis-shop");

#[test]
fn help_lists_every_weakness() {
    let out = std::process::Command::new(BIN)
        .arg("--help")
        .output()
        .unwrap();
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    for v in Vuln::ALL {
        let line = help
            .lines()
            .find(|l| l.trim_start().starts_with(v.name()))
            .unwrap_or_else(|| panic!("{v} not in help"));
        assert!(line.contains(v.describe()), "{line}");
    }
}

#[test]
fn bad_flags_exit_64_with_a_reason() {
    let out = std::process::Command::new(BIN)
        .args(["--vuln", "bola,nope"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown weakness `nope`"));
    let out = std::process::Command::new(BIN)
        .args(["--vuln", "all", "--listen", "0.0.0.0:0"])
        .env("SHOP_ADMIN_PASSWORD", "correct horse battery staple")
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(64),
        "weaknesses are never served beyond loopback by accident"
    );
    let out = std::process::Command::new(BIN)
        .args(["--listen", "127.0.0.1:0"])
        .env("SHOP_ADMIN_PASSWORD", "short")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("at least 12 characters"));
}

/// Starts the binary and waits for its "listening" line; returns the child and base URL.
async fn start(args: &[&str]) -> (Child, String) {
    let mut child = Command::new(BIN)
        .args(["--listen", "127.0.0.1:0"])
        .args(args)
        .env("SHOP_ADMIN_PASSWORD", "correct horse battery staple")
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let addr = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Some(rest) = line.split("listen=").nth(1) {
                return rest.split_whitespace().next().unwrap().to_owned();
            }
        }
        panic!("the shop exited before listening");
    })
    .await
    .unwrap();
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (child, format!("http://{addr}"))
}

#[tokio::test]
async fn serves_on_loopback_and_keeps_its_database() {
    let dir = std::env::temp_dir().join(format!("portcullis-shop-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let db = dir.join("shop.db");
    let db_arg = db.to_str().unwrap();
    let c = portcullis_test_support::client();

    let (mut child, base) = start(&["--db", db_arg]).await;
    let health = c.get(format!("{base}/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    let reg = c
        .post(format!("{base}/v2/auth/register"))
        .json(&serde_json::json!({ "email": "keep@example.com", "password": portcullis_test_support::PASSWORD, "name": "Keep" }))
        .send()
        .await
        .unwrap();
    assert_eq!(reg.status(), 201);
    child.kill().await.unwrap();

    let (mut child, base) = start(&["--db", db_arg]).await;
    let login = c
        .post(format!("{base}/v2/auth/login"))
        .json(&serde_json::json!({ "email": "keep@example.com", "password": portcullis_test_support::PASSWORD }))
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), 200, "the account survived the restart");
    child.kill().await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}
