//! Hot reload triggers: `SIGHUP`, and changes to the policy file (the directory is watched,
//! not the file, so editors that replace the file by rename are seen too). Bursts of events
//! are debounced into one reload.

use std::sync::Arc;
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use tokio::sync::mpsc;

use crate::Gateway;

/// Reloads `gateway` on SIGHUP and on changes to its policy file (and the files beside it,
/// such as the OpenAPI description) until the gateway is dropped. Returns the watcher, which
/// must be kept alive.
pub fn watch(gateway: Arc<Gateway>) -> notify::Result<notify::RecommendedWatcher> {
    let (tx, mut rx) = mpsc::unbounded_channel::<()>();
    let file_tx = tx.clone();
    let mut watcher = notify::recommended_watcher(move |ev: notify::Result<notify::Event>| {
        if let Ok(ev) = ev
            && (ev.kind.is_modify() || ev.kind.is_create() || ev.kind.is_remove())
        {
            let _ = file_tx.send(());
        }
    })?;
    let dir = gateway
        .policy_file()
        .parent()
        .map(|d| {
            if d.as_os_str().is_empty() {
                std::path::Path::new(".")
            } else {
                d
            }
        })
        .unwrap_or(std::path::Path::new("."));
    watcher.watch(dir, RecursiveMode::NonRecursive)?;
    #[cfg(unix)]
    {
        let tx = tx.clone();
        tokio::spawn(async move {
            use tokio::signal::unix::{SignalKind, signal};
            let Ok(mut hup) = signal(SignalKind::hangup()) else {
                return;
            };
            while hup.recv().await.is_some() {
                if tx.send(()).is_err() {
                    return;
                }
            }
        });
    }
    let weak = Arc::downgrade(&gateway);
    drop(gateway);
    tokio::spawn(async move {
        while rx.recv().await.is_some() {
            // Debounce: editors write in several steps.
            tokio::time::sleep(Duration::from_millis(200)).await;
            while rx.try_recv().is_ok() {}
            let Some(g) = weak.upgrade() else { return };
            let _ = g.reload();
        }
    });
    Ok(watcher)
}
