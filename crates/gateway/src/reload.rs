//! Hot reload triggers: `SIGHUP`, and changes to the files the running policy was built from
//! that sit in the policy file's directory (the directory is watched, not the files, so
//! editors that replace a file by rename are seen too). Other files there (logs, the embedded
//! store, an upstream's database) never trigger a reload. Bursts of events are debounced into
//! one reload.
//!
//! A file the running policy does not use yet (an OpenAPI description a refused edit named
//! before it existed) is picked up at the next change of the policy file, or on `SIGHUP`.

use std::sync::Arc;
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use tokio::sync::mpsc;

use crate::Gateway;

/// What asked for a reload.
enum Trigger {
    Signal,
    /// Files changed in the watched directory.
    Files(Vec<std::path::PathBuf>),
}

/// Reloads `gateway` on SIGHUP and on changes to the files its policy is built from, until
/// the gateway is dropped. Returns the watcher, which must be kept alive.
pub fn watch(gateway: Arc<Gateway>) -> notify::Result<notify::RecommendedWatcher> {
    let (tx, mut rx) = mpsc::unbounded_channel::<Trigger>();
    let file_tx = tx.clone();
    let mut watcher = notify::recommended_watcher(move |ev: notify::Result<notify::Event>| {
        if let Ok(ev) = ev
            && (ev.kind.is_modify() || ev.kind.is_create() || ev.kind.is_remove())
        {
            let _ = file_tx.send(Trigger::Files(ev.paths));
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
                if tx.send(Trigger::Signal).is_err() {
                    return;
                }
            }
        });
    }
    let weak = Arc::downgrade(&gateway);
    drop(gateway);
    tokio::spawn(async move {
        while let Some(trigger) = rx.recv().await {
            let Some(g) = weak.upgrade() else { return };
            let wanted = match trigger {
                Trigger::Signal => true,
                Trigger::Files(paths) => paths
                    .iter()
                    .filter_map(|p| p.file_name())
                    .any(|name| g.reads_file_named(name)),
            };
            drop(g);
            if !wanted {
                continue;
            }
            // Debounce: editors write in several steps.
            tokio::time::sleep(Duration::from_millis(200)).await;
            while rx.try_recv().is_ok() {}
            let Some(g) = weak.upgrade() else { return };
            let _ = g.reload();
        }
    });
    Ok(watcher)
}
