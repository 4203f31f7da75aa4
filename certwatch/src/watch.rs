//! Deciding *when* to reload: directory events (debounced), a periodic re-read, and on demand.
//!
//! Directory events are the fast path: the kubelet's `..data` rename shows up within
//! milliseconds. They can be missed (inotify queue overflow, a directory whose parent does not
//! exist either, exotic volume drivers), so a periodic re-read compares a digest of the files as a
//! safety net.
//! [`ReloadHandle::reload_now`] (wired to SIGHUP by the binaries) re-reads at once, and checks
//! again files that were refused before; files identical to those served are never reloaded.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use notify::event::{ModifyKind, RenameMode};
use notify::{Event, EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use rustls::crypto::CryptoProvider;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::material::{Material, Requirements, Usage};
use crate::reload::{BuildError, Outcome, Reloadable, Reloader};
use crate::source::CertSource;

/// How the watcher behaves. [`Options::default`] suits a sidecar.
#[derive(Debug, Clone)]
pub struct Options {
    /// Quiet time after the last directory event before reloading (a swap is several events).
    pub debounce: Duration,
    /// Safety-net re-read interval.
    pub poll_interval: Duration,
    /// Checks the material must pass before it is published.
    pub requirements: Requirements,
    /// Metric name prefix, e.g. `gembok_` or `gembok_injector_`.
    pub metric_prefix: String,
    /// Allow-san list files (the proxy's `allow-san-file=`): read, checked and watched with the
    /// certificates, handed to `build` in [`Material::allow_san`]. A bad list is refused like a
    /// bad certificate: the last good files stay.
    pub allow_san_files: Vec<PathBuf>,
    /// Certificate revocation list files (the proxy's `--crl`): read, checked and watched with
    /// the certificates, handed to `build` in [`Material::crls`]; a bad one is refused like a
    /// bad certificate.
    pub crl_files: Vec<PathBuf>,
    /// Watch the directories for changes (inotify). Without it only the periodic re-read and
    /// forced reloads notice changes, e.g. where inotify watches are exhausted.
    pub watch_directories: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            debounce: Duration::from_millis(100),
            poll_interval: Duration::from_secs(30),
            requirements: Requirements {
                ca_required: true,
                usages: vec![Usage::Server, Usage::Client],
            },
            metric_prefix: "gembok_".to_owned(),
            allow_san_files: Vec::new(),
            crl_files: Vec::new(),
            watch_directories: true,
        }
    }
}

/// Asks the watcher to re-read the files now. Files refused before are validated (and reported)
/// again; files identical to those served are left alone, so that a SIGHUP with nothing new
/// neither counts a reload nor rebuilds the TLS configurations (dropping their session caches).
#[derive(Debug, Clone)]
pub struct ReloadHandle {
    forced: Arc<Notify>,
}

impl ReloadHandle {
    pub fn reload_now(&self) {
        self.forced.notify_one();
    }

    /// Installs a SIGHUP handler now and calls [`reload_now`](Self::reload_now) on every
    /// SIGHUP until `stop` is cancelled (in a task of its own; call inside the runtime). Where
    /// no handler can be installed, says so: reloads then rely on file events and re-reads.
    pub fn reload_on_sighup(self, stop: CancellationToken) {
        use tokio::signal::unix::{SignalKind, signal};
        let Ok(mut hup) = signal(SignalKind::hangup()) else {
            tracing::warn!(
                "cannot install a SIGHUP handler; reloads rely on file events and re-reads"
            );
            return;
        };
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = stop.cancelled() => return,
                    Some(()) = hup.recv() => {
                        tracing::info!("SIGHUP: re-reading the certificate files");
                        self.reload_now();
                    }
                }
            }
        });
    }
}

/// Loads once now (so a process with good certificates is ready at once), then keeps the
/// material current in a background task until `shutdown` is cancelled. Must be called inside a
/// tokio runtime. `build` turns validated material into what the caller serves.
pub fn start<T, F>(
    source: CertSource,
    provider: Arc<CryptoProvider>,
    options: Options,
    build: F,
    shutdown: CancellationToken,
) -> (Reloadable<T>, ReloadHandle)
where
    T: Send + Sync + 'static,
    F: Fn(&Material) -> Result<T, BuildError> + Send + Sync + 'static,
{
    // Watch first, load second: a change landing between the two is then seen, not lost.
    let changed = Arc::new(Notify::new());
    let dirs = if options.watch_directories {
        let mut dirs = source.watch_dirs();
        dirs.extend(
            options
                .allow_san_files
                .iter()
                .chain(&options.crl_files)
                .map(|f| crate::source::parent_dir(f)),
        );
        dirs.sort();
        dirs.dedup();
        dirs
    } else {
        Vec::new()
    };
    let watch = DirWatch::new(dirs, changed.clone());
    let mut reloader = Reloader::new(
        source,
        options.allow_san_files.clone(),
        options.crl_files.clone(),
        provider,
        options.requirements.clone(),
        Box::new(build),
        &options.metric_prefix,
    );
    reloader.attempt(true);
    let reloadable = reloader.reloadable();
    let forced = Arc::new(Notify::new());
    let handle = ReloadHandle {
        forced: forced.clone(),
    };
    tokio::spawn(run(reloader, watch, changed, options, forced, shutdown));
    (reloadable, handle)
}

async fn run<T: Send + Sync + 'static>(
    mut reloader: Reloader<T>,
    mut watch: DirWatch,
    changed: Arc<Notify>,
    options: Options,
    forced: Arc<Notify>,
    shutdown: CancellationToken,
) {
    let mut poll = tokio::time::interval(options.poll_interval);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    poll.tick().await; // the first tick is immediate; we loaded in `start`

    loop {
        let force = tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = forced.notified() => true,
            _ = poll.tick() => false,
            _ = changed.notified() => {
                // Wait for the burst of events of one swap to end.
                loop {
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = changed.notified() => continue,
                        _ = tokio::time::sleep(options.debounce) => break,
                    }
                }
                false
            }
        };
        // Small files, but still blocking I/O and parsing, and the watch calls wait on notify's
        // thread: keep them all off the async workers.
        let result = tokio::task::spawn_blocking(move || {
            // Watch again what went away before reading: a change after the read is then an event.
            watch.rearm();
            let outcome = reloader.attempt(force);
            (reloader, watch, outcome)
        })
        .await;
        match result {
            Ok((back, back_watch, outcome)) => {
                (reloader, watch) = (back, back_watch);
                if let Outcome::Unchanged = outcome {
                    tracing::trace!("certificate files unchanged");
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "certificate reload task failed; stopping the watcher");
                return;
            }
        }
    }
}

/// Watches directories (never files: the kubelet replaces them through a symlink swap).
///
/// An inotify watch belongs to an inode, not a name: a watched directory that is deleted (or
/// renamed away) takes its watch with it, and one created later under the same name is not
/// watched. So a directory that goes is put back to pending, its parent is watched until it
/// returns, and [`Self::rearm`] watches it again; without this, every change after the first
/// would wait for the periodic re-read.
struct DirWatch {
    watcher: Option<RecommendedWatcher>,
    /// Every directory to watch, absolute (notify reports absolute paths).
    dirs: Arc<[PathBuf]>,
    /// Directories not watched now: not created yet, or gone since.
    pending: Vec<PathBuf>,
    /// Parents watched so that a pending directory's (re)appearance is an event too.
    parents: Vec<PathBuf>,
    /// Directories the event handler saw go away, for [`Self::rearm`].
    gone: Arc<Mutex<Vec<PathBuf>>>,
}

impl DirWatch {
    fn new(dirs: Vec<PathBuf>, changed: Arc<Notify>) -> Self {
        let dirs: Arc<[PathBuf]> = dirs
            .into_iter()
            .map(|dir| std::path::absolute(&dir).unwrap_or(dir))
            .collect();
        let gone = Arc::new(Mutex::new(Vec::new()));
        let watcher = notify::recommended_watcher({
            let (dirs, gone) = (dirs.clone(), gone.clone());
            move |res: notify::Result<Event>| match res {
                Ok(event) => {
                    if on_event(&event, &dirs, &gone) {
                        changed.notify_one();
                    }
                }
                // The watcher failed to read its events: reload to be safe.
                Err(_) => changed.notify_one(),
            }
        });
        let watcher = watcher
            .inspect_err(|e| {
                tracing::warn!(error = %e, "cannot watch certificate directories; relying on periodic re-reads");
            })
            .ok();
        let mut this = Self {
            // Without a watcher nothing is pending: there is nothing to arm.
            pending: if watcher.is_some() {
                dirs.to_vec()
            } else {
                Vec::new()
            },
            watcher,
            dirs,
            parents: Vec::new(),
            gone,
        };
        this.rearm();
        this
    }

    /// Brings the watches in line with the directories: those that went away are unwatched, and
    /// pending ones are watched if they exist now (their parents meanwhile, so that their
    /// return is noticed). Called before every reload attempt, so that a change landing after
    /// the attempt's read is an event.
    fn rearm(&mut self) {
        let Self {
            watcher: Some(watcher),
            dirs,
            pending,
            parents,
            gone,
        } = self
        else {
            return;
        };
        let mut lost = std::mem::take(&mut *gone.lock().unwrap_or_else(PoisonError::into_inner));
        // Events can be lost (queue overflow): a watched directory that is not there is gone too.
        lost.extend(
            dirs.iter()
                .filter(|dir| !pending.contains(dir) && !dir.is_dir())
                .cloned(),
        );
        for dir in lost {
            if !pending.contains(&dir) {
                // notify drops the watch of a deleted directory itself; this one may be stale.
                let _ = watcher.unwatch(&dir);
                tracing::debug!(dir = %dir.display(), "certificate directory went away; watching for its return");
                pending.push(dir);
            }
        }
        // Parents first: a directory created between the two steps is then still an event.
        for dir in pending.iter() {
            let Some(parent) = dir.parent() else { continue };
            if dirs.iter().any(|d| d == parent) || parents.iter().any(|p| p == parent) {
                continue;
            }
            match watcher.watch(parent, RecursiveMode::NonRecursive) {
                Ok(()) => parents.push(parent.to_path_buf()),
                Err(e) => {
                    tracing::debug!(dir = %parent.display(), error = %e, "cannot watch the parent of a missing certificate directory");
                }
            }
        }
        pending.retain(|dir| match watcher.watch(dir, RecursiveMode::NonRecursive) {
            Ok(()) => {
                tracing::debug!(dir = %dir.display(), "watching certificate directory");
                false
            }
            Err(e) => {
                tracing::debug!(dir = %dir.display(), error = %e, "cannot watch certificate directory yet");
                true
            }
        });
        parents.retain(|parent| {
            let needed = pending
                .iter()
                .any(|dir| dir.parent() == Some(parent.as_path()));
            if !needed {
                let _ = watcher.unwatch(parent);
            }
            needed
        });
    }
}

/// Runs on notify's thread: whether to wake the watch task, for changes inside a watched
/// directory and for a watched directory itself appearing or going (the latter also recorded in
/// `gone`). Everything else a watched parent reports is noise.
fn on_event(event: &Event, dirs: &[PathBuf], gone: &Mutex<Vec<PathBuf>>) -> bool {
    // Our own reads show up as access events; only changes matter.
    if matches!(event.kind, EventKind::Access(_)) {
        return false;
    }
    // An overflowed inotify queue: notify reports it as an event with no paths and the Rescan
    // flag (not as an error). Events were lost, so reload, and watch every directory afresh (one
    // may have been replaced unseen; re-watching one that stayed costs nothing).
    if event.need_rescan() {
        gone.lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend(dirs.iter().cloned());
        return true;
    }
    let mut relevant = false;
    for (index, path) in event.paths.iter().enumerate() {
        if let Some(dir) = dirs.iter().find(|dir| *dir == path) {
            if departs(&event.kind, index) {
                gone.lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push(dir.clone());
            }
            relevant = true;
        } else if path
            .parent()
            .is_some_and(|parent| dirs.iter().any(|dir| dir == parent))
        {
            relevant = true;
        }
    }
    relevant
}

/// Whether the `index`th path of an event of this kind no longer names what was there: deleted
/// (`IN_DELETE_SELF`, or `IN_DELETE` seen by the parent) or renamed away (`IN_MOVE_SELF`,
/// `IN_MOVED_FROM`). Unclear kinds count as gone: re-watching a directory that stayed costs
/// nothing.
fn departs(kind: &EventKind, index: usize) -> bool {
    match kind {
        EventKind::Remove(_) => true,
        EventKind::Modify(ModifyKind::Name(RenameMode::To)) => false,
        EventKind::Modify(ModifyKind::Name(RenameMode::Both)) => index == 0,
        EventKind::Modify(ModifyKind::Name(_)) => true,
        _ => false,
    }
}

#[cfg(test)]
mod tests;
