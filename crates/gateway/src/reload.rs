//! Hot reload triggers: `SIGHUP`, and changes to the files the running policy was built from.
//!
//! The sources are looked at once a second: where each path leads (through symlinks), that
//! file's size and modification time and, on Unix, its inode and change time. A source
//! written in place, replaced by rename, or reached through a swapped symlink (a Kubernetes
//! ConfigMap or Secret is updated by swapping a `..data` symlink) reads differently at the
//! next look; a change is reloaded once it has held still for 200 ms. A file written in steps
//! further apart can be read half written: it is refused if it does not load, but a cut that
//! still loads (a section missing from its end) is served until the next look. Write the new
//! file beside the old and rename it into place.
//!
//! Why looking and not a file-system watch (inotify): a watch has to be put on the directories
//! that hold the sources, not the files, to see a rename or a swapped symlink, and it is then
//! told of every write and open of every other file there. A log written beside the policy
//! file cost the gateway a wake-up per line (over one context switch per proxied request
//! under load, measured with the access log on). A look costs a few `stat`s a second whatever
//! else the directory holds, needs no watch descriptors, and also sees changes made where no
//! watch reports them (a network file system written from another machine). Looks and reloads
//! run on the blocking pool: a file system that hangs holds a thread of it, not the runtime.
//!
//! A file the running policy does not use yet (an OpenAPI description a refused edit named
//! before it existed) is picked up at the next change of the policy file, or on `SIGHUP`.

use std::path::PathBuf;
use std::sync::{Arc, Weak};
use std::time::Duration;

use crate::Gateway;

/// How often the sources are looked at.
const LOOK: Duration = Duration::from_secs(1);
/// How long a change must hold still before it is read.
const SETTLE: Duration = Duration::from_millis(200);

/// Reloads `gateway` on SIGHUP and when a file its policy is built from changes, until the
/// gateway is dropped. SIGHUP is caught from this call on.
pub fn watch(gateway: &Arc<Gateway>) {
    let weak = Arc::downgrade(gateway);
    let mut seen = prints(&gateway.sources());
    let mut hup = Hangups::new();
    tokio::spawn(async move {
        let mut look = tokio::time::interval(LOOK);
        look.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let signalled = tokio::select! {
                _ = look.tick() => false,
                () = hup.next() => true,
            };
            if !signalled {
                let Some(now) = look_at(&weak).await else {
                    return;
                };
                if now == seen {
                    continue;
                }
                tokio::time::sleep(SETTLE).await;
                // Still being written: looked at again at the next tick.
                if look_at(&weak).await.is_none_or(|again| again != now) {
                    continue;
                }
            }
            let Some(g) = weak.upgrade() else { return };
            // Looked at before the reload reads them: a write that lands during it is a
            // change the next look finds. A source the reload adds is looked at after it.
            let reloaded = tokio::task::spawn_blocking(move || {
                let read = g.sources();
                let before = prints(&read);
                let _ = g.reload();
                g.sources()
                    .iter()
                    .map(|p| match read.iter().position(|q| q == p) {
                        Some(i) => before[i].clone(),
                        None => print(p),
                    })
                    .collect()
            })
            .await;
            if let Ok(prints) = reloaded {
                seen = prints;
            }
        }
    });
}

/// How the running policy's sources read now, looked at on the blocking pool without holding
/// the gateway (a stop must not wait for a look); `None` once the gateway is gone.
async fn look_at(gateway: &Weak<Gateway>) -> Option<Vec<Option<Print>>> {
    let sources = gateway.upgrade()?.sources();
    tokio::task::spawn_blocking(move || prints(&sources))
        .await
        .ok()
}

/// `SIGHUP`s, where there are signals; a source of none where they cannot be had.
struct Hangups {
    #[cfg(unix)]
    signal: Option<tokio::signal::unix::Signal>,
}

impl Hangups {
    fn new() -> Self {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            let signal = signal(SignalKind::hangup())
                .inspect_err(|e| {
                    tracing::warn!(target: "portcullis::reload", error = %e, "SIGHUP cannot be caught; file changes still reload");
                })
                .ok();
            Self { signal }
        }
        #[cfg(not(unix))]
        Self {}
    }

    /// The next `SIGHUP`; never, without them.
    async fn next(&mut self) {
        #[cfg(unix)]
        if let Some(s) = self.signal.as_mut()
            && s.recv().await.is_some()
        {
            return;
        }
        std::future::pending::<()>().await;
    }
}

/// How a source reads: the file its path leads to (through symlinks), its size and
/// modification time and, on Unix, its inode and change time (which no copy that keeps the
/// modification time, `rsync -a` say, can keep).
#[derive(Clone, PartialEq)]
struct Print {
    target: PathBuf,
    len: u64,
    modified: Option<std::time::SystemTime>,
    #[cfg(unix)]
    inode: (u64, u64, i64, i64),
}

fn prints(sources: &[PathBuf]) -> Vec<Option<Print>> {
    sources.iter().map(|p| print(p)).collect()
}

/// `None` for a source that cannot be read.
fn print(path: &std::path::Path) -> Option<Print> {
    let target = std::fs::canonicalize(path).ok()?;
    let meta = std::fs::metadata(&target).ok()?;
    #[cfg(unix)]
    let inode = {
        use std::os::unix::fs::MetadataExt;
        (meta.dev(), meta.ino(), meta.ctime(), meta.ctime_nsec())
    };
    Some(Print {
        target,
        len: meta.len(),
        modified: meta.modified().ok(),
        #[cfg(unix)]
        inode,
    })
}
