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

/// The pod's process table (the sandbox opens it to the proxy only with the flag).
pub const PROC: &str = "/proc";

/// How often the table is looked at until the app is seen. An app whose processes start and end
/// between two looks goes unseen, and the proxy then waits for a signal or `POST /shutdown` as
/// without the flag, so this is short: a container's first process lives from the runtime's
/// set-up on, which takes milliseconds, and until the app starts the table holds only the pause
/// process and the proxy's own (a look is a directory listing and a file read or two).
pub const WAITING_EVERY: Duration = Duration::from_millis(25);

/// How often while the app runs: one file read per look ([`Table::app`]).
pub const RUNNING_EVERY: Duration = Duration::from_millis(100);

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

/// Where the app is, as the looks so far tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// Not started yet (the proxy starts first).
    NotYet,
    Running,
    /// Its processes were there and are all gone.
    Exited,
}

impl Seen {
    /// What a look that found `app` (one of its processes, or none) makes of it.
    pub fn then(self, app: Option<u32>) -> Seen {
        match (self, app) {
            (_, Some(_)) => Seen::Running,
            (Seen::NotYet, None) => Seen::NotYet,
            (_, None) => Seen::Exited,
        }
    }

    /// How long until the next look.
    fn next_look(self) -> Duration {
        match self {
            Seen::NotYet => WAITING_EVERY,
            Seen::Running | Seen::Exited => RUNNING_EVERY,
        }
    }
}

/// Completes once the app's processes, seen at least once, have all exited. Never completes
/// where that cannot be told (logged once, with why): the proxy then stops only on a signal or
/// `POST /shutdown`, as without the flag.
pub async fn exited() {
    let me = std::process::id();
    if me == 1 {
        tracing::error!(
            "--exit-with-app: the proxy is PID 1, so this pod does not share its process \
             namespace (shareProcessNamespace: true) and the app's processes cannot be seen; \
             the proxy stops only on a signal or POST /shutdown"
        );
        return std::future::pending().await;
    }
    let proc = PathBuf::from(PROC);
    let own = proc.join("self/cgroup");
    let ours = match std::fs::read(&own) {
        Ok(ours) => ours,
        Err(e) => {
            tracing::error!(error = %e, path = %own.display(),
                "--exit-with-app: cannot read the proxy's own cgroups; the proxy stops only on a \
                 signal or POST /shutdown");
            return std::future::pending().await;
        }
    };
    let mut table = Table::new(proc, ours, me);
    let mut seen = Seen::NotYet;
    let mut failing = false;
    loop {
        match table.app() {
            Ok(app) => {
                failing = false;
                let now = seen.then(app);
                if let (Seen::NotYet, Seen::Running, Some(pid)) = (seen, now, app) {
                    tracing::info!(
                        pid,
                        "the app is running; the proxy exits when its processes have all exited \
                         (--exit-with-app)"
                    );
                }
                seen = now;
                if seen == Seen::Exited {
                    tracing::info!("the app's processes have all exited (--exit-with-app)");
                    return;
                }
            }
            // Said once per run of failures; the next look may succeed.
            Err(e) if !failing => {
                failing = true;
                tracing::warn!(error = %e, path = PROC,
                    "--exit-with-app: cannot list the pod's processes");
            }
            Err(_) => {}
        }
        tokio::time::sleep(seen.next_look()).await;
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
        // The proxy starts first: no app yet is no reason to stop.
        let seen = Seen::NotYet.then(None);
        assert_eq!(seen, Seen::NotYet);
        assert_eq!(seen.then(None), Seen::NotYet);
        let seen = seen.then(Some(20));
        assert_eq!(seen, Seen::Running);
        let seen = seen.then(Some(21));
        assert_eq!(seen, Seen::Running);
        assert_eq!(seen.then(None), Seen::Exited);
    }

    #[test]
    fn an_unreadable_process_table_is_an_error() {
        let missing = std::env::temp_dir().join("gembok-no-such-proc");
        assert!(Table::new(missing, OURS.into(), 7).app().is_err());
    }
}
