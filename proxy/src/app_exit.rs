//! `--exit-with-app`: a classic (non-native) sidecar in a Job's pod ends when the app does, with
//! no change to the app (otherwise the app must `POST /shutdown`, or the pod never completes).
//!
//! The pod shares one process namespace (`shareProcessNamespace: true`, which the injector sets
//! with this flag), so every container's processes show in this container's `/proc`. A process
//! is the app's when it is not PID 1 (the pod's pause process) and its cgroups are not this
//! process's: the container runtime gives each container cgroups of its own, and what runs in
//! the proxy's own container (exec probes, the `postStart` hook) shares the proxy's. Once such a
//! process has been seen and none is left, the proxy drains and exits 0, as after
//! `POST /shutdown`. `/proc/<pid>/cgroup` is readable by any user, so this needs no privilege.

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How often the process table is looked at: a pod's few processes, read from memory.
pub const EVERY: Duration = Duration::from_millis(500);

/// Processes of `proc` (a procfs mount) that belong to the pod's other containers: not PID 1,
/// not `me`, in cgroups other than `ours` (the content of our own `/proc/<pid>/cgroup`).
/// A process that exits while it is looked at is not counted.
pub fn others(proc: &Path, ours: &[u8], me: u32) -> io::Result<usize> {
    let mut count = 0;
    for entry in std::fs::read_dir(proc)? {
        let entry = entry?;
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == 1 || pid == me {
            continue;
        }
        match std::fs::read(entry.path().join("cgroup")) {
            Ok(cgroups) if cgroups != ours => count += 1,
            _ => {}
        }
    }
    Ok(count)
}

/// What one look at the process table means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// The app has not started yet (the proxy starts first), or is still running.
    Waiting,
    /// The app's processes were there and are all gone.
    Exited,
}

/// The watcher's memory: whether the app has been seen running.
#[derive(Debug, Default)]
pub struct Watch {
    started: bool,
}

impl Watch {
    /// Takes one count of [`others`]; logs the app's start once.
    pub fn saw(&mut self, others: usize) -> Seen {
        if others > 0 {
            if !self.started {
                tracing::info!(
                    processes = others,
                    "the app is running; the proxy exits when its processes have all exited \
                     (--exit-with-app)"
                );
            }
            self.started = true;
            Seen::Waiting
        } else if self.started {
            Seen::Exited
        } else {
            Seen::Waiting
        }
    }
}

/// Completes once the app's processes, seen at least once, have all exited. Never completes
/// where that cannot be told (logged once, with why): the proxy then stops only on a signal or
/// `POST /shutdown`, as without the flag.
pub async fn exited(proc: PathBuf, every: Duration) {
    let me = std::process::id();
    if me == 1 {
        tracing::error!(
            "--exit-with-app: the proxy is PID 1, so this pod does not share its process \
             namespace (shareProcessNamespace: true) and the app's processes cannot be seen; \
             the proxy stops only on a signal or POST /shutdown"
        );
        return std::future::pending().await;
    }
    let ours = match std::fs::read(proc.join("self/cgroup")) {
        Ok(ours) => ours,
        Err(e) => {
            tracing::error!(error = %e, path = %proc.join("self/cgroup").display(),
                "--exit-with-app: cannot read the proxy's own cgroups; the proxy stops only on a \
                 signal or POST /shutdown");
            return std::future::pending().await;
        }
    };
    let mut watch = Watch::default();
    let mut failing = false;
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        match others(&proc, &ours, me) {
            Ok(n) => {
                failing = false;
                if watch.saw(n) == Seen::Exited {
                    tracing::info!("the app's processes have all exited (--exit-with-app)");
                    return;
                }
            }
            // Said once per run of failures; the next look may succeed.
            Err(e) if !failing => {
                failing = true;
                tracing::warn!(error = %e, path = %proc.display(),
                    "--exit-with-app: cannot list the pod's processes");
            }
            Err(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fake procfs: `(pid, cgroup file content)`; a pid without content has no cgroup file,
    /// as a process that exited between the listing and the read.
    fn procfs(entries: &[(&str, Option<&str>)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (name, cgroup) in entries {
            let p = dir.path().join(name);
            std::fs::create_dir(&p).unwrap();
            if let Some(c) = cgroup {
                std::fs::write(p.join("cgroup"), c).unwrap();
            }
        }
        dir
    }

    const OURS: &str = "0::/../cri-containerd-proxy.scope\n";
    const APP: &str = "0::/../cri-containerd-app.scope\n";

    #[test]
    fn counts_only_other_containers_processes() {
        let proc = procfs(&[
            ("1", Some("0::/../cri-containerd-pause.scope\n")), // the pause process
            ("7", Some(OURS)),                                  // the proxy itself
            ("12", Some(OURS)),                                 // an exec probe beside it
            ("20", Some(APP)),
            ("21", Some(APP)),
            ("22", None), // gone while looked at
            ("self", Some(OURS)),
            ("sys", None),
        ]);
        assert_eq!(others(proc.path(), OURS.as_bytes(), 7).unwrap(), 2);

        let alone = procfs(&[("1", Some(APP)), ("7", Some(OURS)), ("12", Some(OURS))]);
        assert_eq!(others(alone.path(), OURS.as_bytes(), 7).unwrap(), 0);
    }

    #[test]
    fn exits_only_after_the_app_was_seen_and_is_gone() {
        let mut watch = Watch::default();
        // The proxy starts first: no app yet is no reason to stop.
        assert_eq!(watch.saw(0), Seen::Waiting);
        assert_eq!(watch.saw(0), Seen::Waiting);
        assert_eq!(watch.saw(2), Seen::Waiting);
        assert_eq!(watch.saw(1), Seen::Waiting);
        assert_eq!(watch.saw(0), Seen::Exited);
    }

    #[test]
    fn an_unreadable_process_table_is_an_error() {
        let missing = std::env::temp_dir().join("gembok-no-such-proc");
        assert!(others(&missing, OURS.as_bytes(), 7).is_err());
    }
}
