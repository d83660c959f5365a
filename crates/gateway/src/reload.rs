//! Hot reload triggers: `SIGHUP`, and changes to the files the running policy was built from
//! (the directories that hold them are watched, not the files, so editors that replace a file
//! by rename are seen too). An event in a watched directory reloads when a source now reads
//! differently (another target, size or modification time), whatever the event names: a
//! Kubernetes ConfigMap or Secret is updated by swapping a `..data` symlink, and the events
//! name only that. Other files there (logs, the embedded store, an upstream's database) never
//! trigger a reload. Bursts of events are debounced into one reload.
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
    /// Files changed in a watched directory.
    Files,
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
            let _ = file_tx.send(Trigger::Files);
        }
    })?;
    let dir_of = |p: &std::path::Path| -> std::path::PathBuf {
        match p.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => std::path::PathBuf::from("."),
        }
    };
    let mut dirs: Vec<std::path::PathBuf> = std::iter::once(gateway.policy_file().to_path_buf())
        .chain(gateway.sources())
        .map(|p| dir_of(&p))
        .collect();
    dirs.sort();
    dirs.dedup();
    // The policy file's directory must be watched; another that cannot be (gone since the
    // policy loaded) is left to SIGHUP.
    watcher.watch(&dir_of(gateway.policy_file()), RecursiveMode::NonRecursive)?;
    for d in dirs.iter().filter(|d| **d != dir_of(gateway.policy_file())) {
        if let Err(e) = watcher.watch(d, RecursiveMode::NonRecursive) {
            tracing::warn!(target: "portcullis::reload", dir = %d.display(), error = %e, "not watched; SIGHUP reloads its files");
        }
    }
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
    let mut seen = prints(&gateway.sources());
    drop(gateway);
    tokio::spawn(async move {
        while let Some(trigger) = rx.recv().await {
            let Some(g) = weak.upgrade() else { return };
            let wanted = match trigger {
                Trigger::Signal => true,
                // Whatever the event names: a source written, replaced by rename, or reached
                // through a swapped symlink reads differently now.
                Trigger::Files => prints(&g.sources()) != seen,
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
            seen = prints(&g.sources());
        }
    });
    Ok(watcher)
}

/// How each source reads now: the file a path leads to (through symlinks), its size and
/// modification time; `None` for one that cannot be read.
type Print = Option<(std::path::PathBuf, u64, std::time::SystemTime)>;

fn prints(sources: &[std::path::PathBuf]) -> Vec<Print> {
    sources
        .iter()
        .map(|p| {
            let target = std::fs::canonicalize(p).ok()?;
            let meta = std::fs::metadata(&target).ok()?;
            Some((target, meta.len(), meta.modified().ok()?))
        })
        .collect()
}
