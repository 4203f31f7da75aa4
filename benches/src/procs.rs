//! Child processes (proxies, the echo/sink server, strace) and what `/proc` says about them.
//!
//! Every child is spawned through [`spawn`]: its own process group, SIGKILL if the harness dies,
//! and an entry in a global registry. [`cleanup`] kills every registered group; it runs on
//! normal exit, on error, from the panic hook and on Ctrl-C/SIGTERM, so no proxy outlives a run.

use std::fs;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::sys;

static CHILDREN: Mutex<Vec<Child>> = Mutex::new(Vec::new());

/// A running child: its pid (also its process group) and where its stderr goes.
#[derive(Debug, Clone)]
pub struct Proc {
    pub name: String,
    pub pid: u32,
    pub log: PathBuf,
}

/// Spawns `cmd` with stdout/stderr into `log` (stdout piped instead when `stdout_pipe`).
pub fn spawn(name: &str, mut cmd: Command, log: &Path) -> Result<Proc> {
    let file = fs::File::create(log).with_context(|| format!("create {}", log.display()))?;
    cmd.stdin(Stdio::null())
        .stdout(file.try_clone()?)
        .stderr(file);
    // Own process group, so a forking proxy's workers die with it.
    cmd.process_group(0);
    let child = cmd
        .spawn()
        .with_context(|| format!("spawn {name} ({:?})", cmd.get_program()))?;
    let pid = child.id();
    CHILDREN
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(child);
    Ok(Proc {
        name: name.to_owned(),
        pid,
        log: log.to_owned(),
    })
}

/// A command whose process gets SIGKILL when the harness dies, even by SIGKILL (which no
/// handler sees): `setpriv --pdeathsig KILL` sets it and execs `program` (same pid).
pub fn command(program: impl AsRef<std::ffi::OsStr>) -> Command {
    if Path::new("/usr/bin/setpriv").exists() {
        let mut c = Command::new("/usr/bin/setpriv");
        c.arg("--pdeathsig").arg("KILL").arg("--").arg(program);
        c
    } else {
        Command::new(program)
    }
}

/// Kills one child's process group and reaps it.
pub fn stop(proc: &Proc) {
    sys::kill_group(proc.pid, sys::Sig::KILL);
    let mut children = CHILDREN.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(i) = children.iter().position(|c| c.id() == proc.pid) {
        let mut child = children.swap_remove(i);
        let _ = child.wait();
    }
}

/// Asks a child to stop with `signal` (e.g. SIGINT for strace to print its summary) and waits
/// up to `timeout` for it to exit.
pub fn signal_and_wait(proc: &Proc, signal: sys::Sig, timeout: Duration) -> Result<()> {
    sys::kill(proc.pid, signal);
    let deadline = Instant::now() + timeout;
    loop {
        {
            let mut children = CHILDREN.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(i) = children.iter().position(|c| c.id() == proc.pid) {
                if children[i].try_wait()?.is_some() {
                    // Already reaped by try_wait; wait() returns the cached status.
                    let _ = children.swap_remove(i).wait();
                    return Ok(());
                }
            } else {
                return Ok(());
            }
        }
        if Instant::now() > deadline {
            stop(proc);
            bail!(
                "{} did not exit within {timeout:?} after {signal:?}",
                proc.name
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Whether the child has exited (and its status).
pub fn exited(proc: &Proc) -> Option<String> {
    let mut children = CHILDREN.lock().unwrap_or_else(|e| e.into_inner());
    let child = children.iter_mut().find(|c| c.id() == proc.pid)?;
    match child.try_wait() {
        Ok(Some(status)) => Some(status.to_string()),
        _ => None,
    }
}

/// Kills every child still registered. Safe to call more than once and from a panic hook.
pub fn cleanup() {
    let mut children = match CHILDREN.try_lock() {
        Ok(c) => c,
        Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
        Err(std::sync::TryLockError::WouldBlock) => {
            // Another thread holds the lock (panicking mid-operation); signal without it.
            return;
        }
    };
    for child in children.iter() {
        sys::kill_group(child.id(), sys::Sig::KILL);
    }
    for mut child in children.drain(..) {
        let _ = child.wait();
    }
}

/// The last `lines` lines of a child's log, for error messages.
pub fn log_tail(proc: &Proc, lines: usize) -> String {
    let text = fs::read_to_string(&proc.log).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// `pid` and all its descendants (a forking proxy's workers).
pub fn tree(pid: u32) -> Vec<u32> {
    let mut parents: Vec<(u32, u32)> = Vec::new();
    if let Ok(entries) = fs::read_dir("/proc") {
        for e in entries.flatten() {
            let Some(p) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            if let Some(stat) = read_stat(p) {
                parents.push((p, stat.ppid));
            }
        }
    }
    let mut out = vec![pid];
    let mut i = 0;
    while i < out.len() {
        let cur = out[i];
        out.extend(parents.iter().filter(|(_, pp)| *pp == cur).map(|(p, _)| *p));
        i += 1;
    }
    out
}

struct Stat {
    ppid: u32,
    ticks: u64,
}

fn read_stat(pid: u32) -> Option<Stat> {
    let s = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces and parentheses: fields start after the last ')'.
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest[0] is field 3 (state): ppid is field 4, utime 14, stime 15.
    Some(Stat {
        ppid: f.get(1)?.parse().ok()?,
        ticks: f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?,
    })
}

/// CPU seconds (user + system, all threads, live descendants included) used so far by `pid`'s
/// process tree.
pub fn cpu_seconds(pid: u32) -> f64 {
    let ticks: u64 = tree(pid)
        .into_iter()
        .filter_map(read_stat)
        .map(|s| s.ticks)
        .sum();
    ticks as f64 / sys::clock_ticks()
}

/// Resident memory of a process tree, in KiB.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Rss {
    /// `VmRSS`: everything resident.
    pub total_kib: u64,
    /// `RssAnon`: heap, stacks and other private memory, without the program's and libraries'
    /// pages, which every sidecar started from the same files shares through the page cache.
    pub anon_kib: u64,
}

/// Resident memory of `pid`'s process tree: one walk of the tree, one read of each process's
/// `/proc/<pid>/status`.
pub fn rss(pid: u32) -> Rss {
    let kib = |status: &str, field: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    };
    tree(pid)
        .into_iter()
        .filter_map(|p| fs::read_to_string(format!("/proc/{p}/status")).ok())
        .fold(Rss::default(), |sum, status| Rss {
            total_kib: sum.total_kib + kib(&status, "VmRSS:"),
            anon_kib: sum.anon_kib + kib(&status, "RssAnon:"),
        })
}

/// Installs the panic hook and the Ctrl-C/SIGTERM watcher that clean up children.
pub fn install_cleanup_handlers() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        cleanup();
        previous(info);
    }));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rss_reads_both_fields_of_the_tree_in_one_pass() {
        // A process without children of its own (this test binary may have some: other tests
        // spawn them), and which touches no more memory while it is read.
        let mut child = Command::new("sleep").arg("30").spawn().unwrap();
        let pid = child.id();
        // Ready once it has exec'd sleep and sleeps in it (its memory no longer moves).
        let deadline = Instant::now() + Duration::from_secs(10);
        let status = loop {
            let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
            let is = |prefix: &str| status.lines().any(|l| l.starts_with(prefix));
            if is("Name:\tsleep") && is("State:\tS") {
                break status;
            }
            assert!(
                Instant::now() < deadline,
                "sleep never went to sleep:\n{status}"
            );
            std::thread::yield_now();
        };
        let field = |name: &str| -> u64 {
            let line = status.lines().find(|l| l.starts_with(name)).unwrap();
            line.split_whitespace().nth(1).unwrap().parse().unwrap()
        };
        let r = rss(pid);
        let _ = child.kill();
        let _ = child.wait();
        assert_eq!(r.total_kib, field("VmRSS:"), "{r:?}");
        assert_eq!(r.anon_kib, field("RssAnon:"), "{r:?}");
        assert!(0 < r.anon_kib && r.anon_kib < r.total_kib, "{r:?}");
    }
}
