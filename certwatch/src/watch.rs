//! Deciding *when* to reload: directory events (debounced), a periodic re-read, and on demand.
//!
//! Directory events are the fast path: the kubelet's `..data` rename shows up within
//! milliseconds. They can be missed (inotify queue overflow, a directory that did not exist yet,
//! exotic volume drivers), so a periodic re-read compares a digest of the files as a safety net.
//! [`ReloadHandle::reload_now`] (wired to SIGHUP by the binaries) forces a full reload.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

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
            watch_directories: true,
        }
    }
}

/// Asks the watcher for a reload, bypassing the "files unchanged" shortcut.
#[derive(Debug, Clone)]
pub struct ReloadHandle {
    forced: Arc<Notify>,
}

impl ReloadHandle {
    pub fn reload_now(&self) {
        self.forced.notify_one();
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
        source.watch_dirs()
    } else {
        Vec::new()
    };
    let watch = DirWatch::new(dirs, changed.clone());
    let mut reloader = Reloader::new(
        source,
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
            _ = poll.tick() => {
                watch.retry_missing();
                false
            }
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
        // Small files, but still blocking I/O and parsing: keep it off the async workers.
        let result = tokio::task::spawn_blocking(move || {
            let outcome = reloader.attempt(force);
            (reloader, outcome)
        })
        .await;
        match result {
            Ok((back, outcome)) => {
                reloader = back;
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
struct DirWatch {
    watcher: Option<RecommendedWatcher>,
    pending: Vec<PathBuf>,
}

impl DirWatch {
    fn new(dirs: Vec<PathBuf>, changed: Arc<Notify>) -> Self {
        let watcher = notify::recommended_watcher(move |res: notify::Result<Event>| match res {
            // Our own reads show up as access events; only changes matter.
            Ok(event) if matches!(event.kind, EventKind::Access(_)) => {}
            Ok(_) => changed.notify_one(),
            // An overflowed queue means we lost events: reload to be safe.
            Err(_) => changed.notify_one(),
        });
        let mut this = match watcher {
            Ok(w) => Self {
                watcher: Some(w),
                pending: dirs,
            },
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch certificate directories; relying on periodic re-reads");
                Self {
                    watcher: None,
                    pending: Vec::new(),
                }
            }
        };
        this.retry_missing();
        this
    }

    /// Starts watching directories that could not be watched before (they may appear later).
    fn retry_missing(&mut self) {
        let Some(watcher) = self.watcher.as_mut() else {
            return;
        };
        self.pending
            .retain(|dir| match watcher.watch(dir, RecursiveMode::NonRecursive) {
                Ok(()) => {
                    tracing::debug!(dir = %dir.display(), "watching certificate directory");
                    false
                }
                Err(e) => {
                    tracing::debug!(dir = %dir.display(), error = %e, "cannot watch certificate directory yet");
                    true
                }
            });
    }
}

#[cfg(test)]
mod tests;
