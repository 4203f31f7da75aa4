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
//!
//! Native sidecars (init containers with `restartPolicy: Always`: a log shipper, Istio's
//! `istio-proxy` under `ENABLE_NATIVE_SIDECARS`) are not the app: the kubelet stops them only
//! after every regular container has ended, the proxy among them, so waiting for them would keep
//! the Job running for ever. The kubelet starts them all before the first regular container, and
//! the classic proxy is that container (its `postStart` hook holds the app until it is ready), so
//! the cgroups that have processes when the proxy starts are theirs: [`Table::at_start`] notes
//! them, and their processes never count as the app's.

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
    /// The cgroups that had processes when the proxy started: native sidecars'.
    before: Vec<Vec<u8>>,
}

impl Table {
    pub fn new(proc: PathBuf, ours: Vec<u8>, me: u32) -> Table {
        Table {
            proc,
            ours,
            me,
            known: None,
            before: Vec::new(),
        }
    }

    /// The table at the proxy's start, before the app can run: the cgroups other containers'
    /// processes are in now are native sidecars', left out from then on.
    pub fn at_start(proc: PathBuf, ours: Vec<u8>, me: u32) -> io::Result<Table> {
        let mut table = Table::new(proc, ours, me);
        let mut before: Vec<Vec<u8>> = table.pids()?.filter_map(|pid| table.others(pid)).collect();
        before.sort();
        before.dedup();
        table.before = before;
        Ok(table)
    }

    /// How many containers' processes were running at the start ([`at_start`](Self::at_start)).
    pub fn sidecars(&self) -> usize {
        self.before.len()
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
        Ok(self.pids()?.find(|&pid| self.is_app(pid)))
    }

    /// The process ids in the table (a listing error is the table's; an entry's, skipped).
    fn pids(&self) -> io::Result<impl Iterator<Item = u32>> {
        Ok(std::fs::read_dir(&self.proc)?.filter_map(|entry| {
            entry
                .ok()?
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<u32>().ok())
        }))
    }

    /// The cgroups of a process of another container: not PID 1 (the pause process), not the
    /// proxy, in cgroups other than the proxy's. A process that exits while it is looked at is
    /// none.
    fn others(&self, pid: u32) -> Option<Vec<u8>> {
        if pid == 1 || pid == self.me {
            return None;
        }
        let path = self.proc.join(pid.to_string()).join("cgroup");
        std::fs::read(path)
            .ok()
            .filter(|cgroups| *cgroups != self.ours)
    }

    /// Another container's process, and not a native sidecar's.
    fn is_app(&self, pid: u32) -> bool {
        self.others(pid)
            .is_some_and(|cgroups| !self.before.contains(&cgroups))
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

/// Where `--exit-with-app` looks, set up at the proxy's start (before it can be ready, so
/// before the kubelet starts the app: see the module's doc); `None` where the app cannot be told
/// (logged, with why): the proxy then stops only on a signal or `POST /shutdown`, as without the
/// flag.
pub fn start() -> Option<Table> {
    let me = std::process::id();
    if me == 1 {
        tracing::error!(
            "--exit-with-app: the proxy is PID 1, so this pod does not share its process \
             namespace (shareProcessNamespace: true) and the app's processes cannot be seen; \
             the proxy stops only on a signal or POST /shutdown"
        );
        return None;
    }
    let proc = PathBuf::from(PROC);
    let own = proc.join("self/cgroup");
    let ours = match std::fs::read(&own) {
        Ok(ours) => ours,
        Err(e) => {
            tracing::error!(error = %e, path = %own.display(),
                "--exit-with-app: cannot read the proxy's own cgroups; the proxy stops only on a \
                 signal or POST /shutdown");
            return None;
        }
    };
    match Table::at_start(proc.clone(), ours.clone(), me) {
        Ok(table) => {
            if table.sidecars() > 0 {
                tracing::info!(
                    containers = table.sidecars(),
                    "--exit-with-app: other containers' processes were running before the proxy \
                     started: native sidecars, which the kubelet stops after the app; not waited for"
                );
            }
            Some(table)
        }
        Err(e) => {
            // Nothing known to leave out; the looks below report their own failures.
            tracing::warn!(error = %e, path = PROC,
                "--exit-with-app: cannot list the pod's processes at start");
            Some(Table::new(proc, ours, me))
        }
    }
}

/// Completes once the app's processes, seen at least once, have all exited; never without a
/// table ([`start`]).
pub async fn exited(table: Option<Table>) {
    let Some(mut table) = table else {
        return std::future::pending().await;
    };
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

    /// A native sidecar runs before the proxy starts and after the app ends: not the app.
    #[test]
    fn containers_running_at_the_proxys_start_are_not_the_app() {
        const SIDECAR: &str = "0::/../cri-containerd-istio-proxy.scope\n";
        let proc = procfs(&[
            ("1", Some("0::/../cri-containerd-pause.scope\n")),
            ("3", Some(SIDECAR)),
            ("4", Some(SIDECAR)),
            ("7", Some(OURS)),
        ]);
        let mut table = Table::at_start(proc.path().to_owned(), OURS.into(), 7).unwrap();
        assert_eq!(table.sidecars(), 1);
        assert_eq!(table.app().unwrap(), None, "only the sidecar runs");
        // The app starts after the proxy is ready, runs, and ends; the sidecar runs on.
        std::fs::create_dir(proc.path().join("30")).unwrap();
        std::fs::write(proc.path().join("30/cgroup"), APP).unwrap();
        assert_eq!(table.app().unwrap(), Some(30));
        std::fs::remove_dir_all(proc.path().join("30")).unwrap();
        assert_eq!(table.app().unwrap(), None, "the sidecar is still running");
        // Without the snapshot, the sidecar would be taken for the app.
        let mut plain = Table::new(proc.path().to_owned(), OURS.into(), 7);
        assert!(matches!(plain.app().unwrap(), Some(3 | 4)));
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
