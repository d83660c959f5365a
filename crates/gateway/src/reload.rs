//! Hot reload triggers: `SIGHUP`, and changes to the files the running policy was built from
//! (the directories that hold them are watched, not the files, so editors that replace a file
//! by rename are seen too). An event in a watched directory reloads when a source now reads
//! differently (another target, size or modification time), whatever the event names: a
//! Kubernetes ConfigMap or Secret is updated by swapping a `..data` symlink, and the events
//! name only that. Other files there (logs, the embedded store, an upstream's database) never
//! trigger a reload, and what is written into them costs nothing beyond the event: a change of
//! contents or attributes that names no source is let go where it arrives, so a log written
//! beside the policy file does not make every line cost a look at the sources. Bursts of
//! events are debounced first and the sources looked at once after.
//!
//! A file the running policy does not use yet (an OpenAPI description a refused edit named
//! before it existed) is picked up at the next change of the policy file, or on `SIGHUP`.

use std::collections::HashSet;
use std::ffi::OsString;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use notify::event::{EventKind, ModifyKind};
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
    // The names of the sources, which a change of contents must name to matter.
    let names = Arc::new(Mutex::new(names_of(&gateway.sources())));
    let watched_names = names.clone();
    let mut watcher = notify::recommended_watcher(move |ev: notify::Result<notify::Event>| {
        let Ok(ev) = ev else { return };
        let wanted = match ev.kind {
            // Written or touched in place: only a source's own change can matter. A swapped
            // symlink or a file replaced by rename arrives as a create, remove or rename.
            EventKind::Modify(ModifyKind::Data(_) | ModifyKind::Metadata(_)) => {
                let names = watched_names.lock().unwrap_or_else(|e| e.into_inner());
                ev.paths
                    .iter()
                    .any(|p| p.file_name().is_some_and(|n| names.contains(n)))
            }
            kind => kind.is_modify() || kind.is_create() || kind.is_remove(),
        };
        if wanted {
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
        while let Some(first) = rx.recv().await {
            // Debounce: editors write in several steps, and a directory may be busy.
            tokio::time::sleep(Duration::from_millis(200)).await;
            let mut signalled = matches!(first, Trigger::Signal);
            while let Ok(t) = rx.try_recv() {
                signalled |= matches!(t, Trigger::Signal);
            }
            let Some(g) = weak.upgrade() else { return };
            // Whatever the events named: a source written, replaced by rename, or reached
            // through a swapped symlink reads differently now.
            if !signalled && prints(&g.sources()) == seen {
                continue;
            }
            // Looked at before the reload reads them: a write that lands during it is a
            // change the next event finds.
            let read = g.sources();
            let before = prints(&read);
            let _ = g.reload();
            let sources = g.sources();
            seen = if sources == read {
                before
            } else {
                prints(&sources)
            };
            *names.lock().unwrap_or_else(|e| e.into_inner()) = names_of(&sources);
        }
    });
    Ok(watcher)
}

/// The names a change of a source's contents may be reported under: its own, and that of
/// the file its symlinks lead to (an edit in place names the target).
fn names_of(sources: &[std::path::PathBuf]) -> HashSet<OsString> {
    sources
        .iter()
        .flat_map(|p| [Some(p.clone()), std::fs::canonicalize(p).ok()])
        .flatten()
        .filter_map(|p| p.file_name().map(OsString::from))
        .collect()
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
