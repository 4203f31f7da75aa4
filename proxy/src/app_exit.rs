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
use std::path::PathBuf;
use std::time::Duration;

/// How often the process table is looked at.
#[derive(Debug, Clone, Copy)]
pub struct Every {
    /// Until the app is seen. An app whose processes start and end between two looks goes
    /// unseen, and the proxy then waits for a signal or `POST /shutdown` as without the flag, so
    /// this is short: a container's first process lives from the runtime's set-up on, which takes
    /// milliseconds, and until the app starts the table holds only the pause process and the
    /// proxy's own (a look is a directory listing and a file read or two).
    pub waiting: Duration,
    /// While the app runs: one file read per look ([`Table::app`]).
    pub running: Duration,
}

pub const EVERY: Every = Every {
    waiting: Duration::from_millis(25),
    running: Duration::from_millis(100),
};

/// The pod's process table as the proxy sees it.
#[derive(Debug)]
pub struct Table {
    /// A procfs mount.
    proc: PathBuf,
    /// The content of the proxy's own `/proc/<pid>/cgroup`.
    ours: Vec<u8>,
    me: u32,
    /// The app process found last time.
    known: Option<u32>,
}

impl Table {
    pub fn new(proc: PathBuf, ours: Vec<u8>, me: u32) -> Table {
        Table {
            proc,
            ours,
            me,
            known: None,
        }
    }

    /// A process of the pod's other containers, if one is running: the one found last time
    /// while it still is (one file read per look), else the first a scan of the table finds.
    pub fn app(&mut self) -> io::Result<Option<u32>> {
        if let Some(pid) = self.known
            && self.is_app(pid)
        {
            return Ok(Some(pid));
        }
        self.known = self.scan()?;
        Ok(self.known)
    }

    fn scan(&self) -> io::Result<Option<u32>> {
        for entry in std::fs::read_dir(&self.proc)? {
            let name = entry?.file_name();
            if let Some(pid) = name.to_str().and_then(|s| s.parse::<u32>().ok())
                && self.is_app(pid)
            {
                return Ok(Some(pid));
            }
        }
        Ok(None)
    }

    /// Not PID 1 (the pause process), not the proxy, in cgroups other than the proxy's. A
    /// process that exits while it is looked at is not the app's.
    fn is_app(&self, pid: u32) -> bool {
        if pid == 1 || pid == self.me {
            return false;
        }
        let path = self.proc.join(pid.to_string()).join("cgroup");
        matches!(std::fs::read(path), Ok(cgroups) if cgroups != self.ours)
    }
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
    /// Takes one look's app process ([`Table::app`]); logs the app's start once.
    pub fn saw(&mut self, app: Option<u32>) -> Seen {
        if let Some(pid) = app {
            if !self.started {
                tracing::info!(
                    pid,
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
pub async fn exited(proc: PathBuf, every: Every) {
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
    let mut table = Table::new(proc.clone(), ours, me);
    let mut watch = Watch::default();
    let mut failing = false;
    loop {
        match table.app() {
            Ok(app) => {
                failing = false;
                if watch.saw(app) == Seen::Exited {
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
        let wait = if watch.started {
            every.running
        } else {
            every.waiting
        };
        tokio::time::sleep(wait).await;
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
    fn finds_only_other_containers_processes() {
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
        let mut table = Table::new(proc.path().to_owned(), OURS.into(), 7);
        let first = table.app().unwrap().expect("an app process");
        assert!([20, 21].contains(&first), "{first}");
        assert_eq!(table.app().unwrap(), Some(first), "the same while it runs");
        // It exits: the other one is found.
        std::fs::remove_dir_all(proc.path().join(first.to_string())).unwrap();
        let second = table.app().unwrap().expect("the other app process");
        assert!([20, 21].contains(&second) && second != first, "{second}");
        std::fs::remove_dir_all(proc.path().join(second.to_string())).unwrap();
        assert_eq!(table.app().unwrap(), None);

        // The same cgroups as PID 1 count as the app's: only the proxy's own are left out.
        let alone = procfs(&[("1", Some(APP)), ("7", Some(OURS)), ("12", Some(OURS))]);
        let mut table = Table::new(alone.path().to_owned(), OURS.into(), 7);
        assert_eq!(table.app().unwrap(), None);
    }

    #[test]
    fn exits_only_after_the_app_was_seen_and_is_gone() {
        let mut watch = Watch::default();
        // The proxy starts first: no app yet is no reason to stop.
        assert_eq!(watch.saw(None), Seen::Waiting);
        assert_eq!(watch.saw(None), Seen::Waiting);
        assert_eq!(watch.saw(Some(20)), Seen::Waiting);
        assert_eq!(watch.saw(Some(21)), Seen::Waiting);
        assert_eq!(watch.saw(None), Seen::Exited);
    }

    #[test]
    fn an_unreadable_process_table_is_an_error() {
        let missing = std::env::temp_dir().join("gembok-no-such-proc");
        assert!(Table::new(missing, OURS.into(), 7).app().is_err());
    }
}
