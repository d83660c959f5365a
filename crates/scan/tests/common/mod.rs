//! What the scanner's tests against small hand-written APIs share: the API's description
//! written to a folder of its own, and a scan of it as two callers with static tokens.

#![allow(dead_code, clippy::unwrap_used, clippy::print_stdout)]

use portcullis_scan::{Identity, Report, ScanConfig, run};

/// A folder for one test's files, emptied first (`name` and the process id name it).
pub(crate) fn folder(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("portcullis-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A scan of the API at `addr`, described by `dir/api.yaml`, as alice and bob with the static
/// bearer `tokens`, running only `probes`; its summary is printed.
pub(crate) async fn scan(
    addr: std::net::SocketAddr,
    dir: &std::path::Path,
    tokens: [&str; 2],
    probes: &[&str],
) -> Report {
    let identities = vec![
        Identity::bearer("alice", tokens[0]),
        Identity::bearer("bob", tokens[1]),
    ];
    scan_as(addr, dir, identities, probes, false).await
}

/// The same as `identities`, destructive probes allowed or not.
pub(crate) async fn scan_as(
    addr: std::net::SocketAddr,
    dir: &std::path::Path,
    identities: Vec<Identity>,
    probes: &[&str],
    allow_destructive: bool,
) -> Report {
    let mut config = ScanConfig::new(
        format!("http://{addr}").parse().unwrap(),
        dir.join("api.yaml"),
    );
    config.identities = identities;
    config.probes = probes.iter().map(|p| (*p).to_owned()).collect();
    config.allow_destructive = allow_destructive;
    let report = run(config).await.unwrap();
    println!("{}", report.summary());
    report
}
