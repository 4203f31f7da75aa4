//! The few OS calls the harness needs, through rustix's safe wrappers (no `unsafe` here):
//! raising the open-file limit for 10,000-connection runs, signalling children's process
//! groups, and the clock-tick rate of `/proc` CPU times.

use rustix::process::{Pid, Resource, Rlimit, Signal};

/// Raises RLIMIT_NOFILE (soft and, when permitted, hard) to at least `want`; returns the soft
/// limit now in force. Children inherit it.
pub fn raise_nofile(want: u64) -> u64 {
    let lim = rustix::process::getrlimit(Resource::Nofile);
    let current = lim.current.unwrap_or(u64::MAX);
    if current >= want {
        return current;
    }
    let max = lim.maximum.unwrap_or(u64::MAX);
    // Raising the hard limit needs CAP_SYS_RESOURCE; without it, settle for the hard limit.
    let raised = Rlimit {
        current: Some(want),
        maximum: Some(max.max(want)),
    };
    if rustix::process::setrlimit(Resource::Nofile, raised).is_ok() {
        return want;
    }
    let soft = Rlimit {
        current: Some(max),
        maximum: Some(max),
    };
    if rustix::process::setrlimit(Resource::Nofile, soft).is_ok() {
        max
    } else {
        current
    }
}

/// Signals every process in group `pgid` (a child spawned in its own group). Errors (already
/// gone) are ignored.
pub fn kill_group(pgid: u32, signal: Signal) {
    if let Some(pid) = Pid::from_raw(pgid as i32) {
        let _ = rustix::process::kill_process_group(pid, signal);
    }
}

/// Signals one process.
pub fn kill(pid: u32, signal: Signal) {
    if let Some(pid) = Pid::from_raw(pid as i32) {
        let _ = rustix::process::kill_process(pid, signal);
    }
}

/// Clock ticks per second of the utime/stime fields in `/proc/<pid>/stat`.
pub fn clock_ticks() -> f64 {
    rustix::param::clock_ticks_per_second() as f64
}

pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

pub use rustix::process::Signal as Sig;
