//! Where the processes of a latency measurement run.
//!
//! A 64 B ping-pong through a pair wakes six threads per round trip (client, outbound,
//! inbound, app, inbound, outbound). Left to itself the kernel puts a woken thread on an idle
//! CPU when there is one, and on a virtual machine whose idle vCPUs halt at once (no
//! `guest_halt_poll_ns` window) each such wake-up costs an exit and an interrupt: 40–45 µs on
//! the host of `tuning.md`, more than a proxy's own work per hop. The figure then says more
//! about where the scheduler happened to put four processes than about the proxies.
//!
//! So the latency scenario is also measured with placements fixed by CPU affinity:
//! - [`Placement::OneCpu`]: every process on one CPU. No wake-up crosses CPUs; what a proxy
//!   adds is its own work per hop and the context switches it causes.
//! - [`Placement::PerPod`]: the load client and the outbound sidecar on one CPU, the inbound
//!   sidecar and the app on another, as two pods with a CPU each (the kubelet's static CPU
//!   manager). Only the hops between the pods cross CPUs, in direct runs as in pair runs.
//!
//! The default, [`Placement::Shared`], pins nothing. A pinning is undone when its [`Pinned`]
//! guard drops: every thread of the pinned processes gets back the harness's own CPU set. The
//! threads stay on the CPUs they were pinned to until the scheduler moves them, so the placed
//! variants run after all the other timed measurements, as a precaution: run inside each
//! repetition, the next repetition's single-stream bulk through the pair looked slower (two
//! interleaved quick runs of each, 2026-11-30 11:49Z), but a full run with them after showed
//! the same decline after its first repetition (`tuning.md`).

use std::fmt;

use anyhow::{Context, Result, bail};
use nix::sched::{CpuSet, sched_getaffinity, sched_setaffinity};
use nix::unistd::Pid;
use serde::Serialize;

use crate::procs;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Placement {
    /// The kernel places every process (no affinity set).
    Shared,
    /// Every process on one CPU.
    OneCpu,
    /// Client and outbound on one CPU, inbound and app on another.
    PerPod,
}

impl Placement {
    /// The 64 B ping-pong's variant name under this placement, as results.json and the
    /// report name it: "64 B" where the kernel places the processes, else "64 B, one CPU"...
    pub fn variant_64b(self) -> String {
        match self {
            Placement::Shared => "64 B".to_owned(),
            placed => format!("64 B, {placed}"),
        }
    }

    /// Its part of a file name.
    pub fn slug(self) -> &'static str {
        match self {
            Placement::Shared => "shared",
            Placement::OneCpu => "one-cpu",
            Placement::PerPod => "per-pod",
        }
    }

    /// CPUs it needs.
    pub fn cpus_needed(self) -> usize {
        match self {
            Placement::Shared => 0,
            Placement::OneCpu => 1,
            Placement::PerPod => 2,
        }
    }
}

impl fmt::Display for Placement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Placement::Shared => "shared",
            Placement::OneCpu => "one CPU",
            Placement::PerPod => "a CPU per pod",
        })
    }
}

/// The CPUs each side of a round trip runs on under a placement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sides {
    /// The load client and the outbound sidecar.
    pub client: usize,
    /// The inbound sidecar and the app.
    pub server: usize,
}

/// The CPUs the harness may use, in order.
pub fn allowed() -> Result<Vec<usize>> {
    let set = sched_getaffinity(Pid::from_raw(0)).context("sched_getaffinity")?;
    Ok((0..CpuSet::count())
        .filter(|&c| set.is_set(c).unwrap_or(false))
        .collect())
}

/// Which CPUs `placement` uses out of `allowed`; `None` for [`Placement::Shared`].
pub fn sides(placement: Placement, allowed: &[usize]) -> Result<Option<Sides>> {
    if allowed.len() < placement.cpus_needed() {
        bail!(
            "placement {placement} needs {} CPUs; the harness may use {}",
            placement.cpus_needed(),
            allowed.len()
        );
    }
    Ok(match placement {
        Placement::Shared => None,
        Placement::OneCpu => Some(Sides {
            client: allowed[0],
            server: allowed[0],
        }),
        Placement::PerPod => Some(Sides {
            client: allowed[0],
            server: allowed[1],
        }),
    })
}

fn set_of(cpus: &[usize]) -> Result<CpuSet> {
    let mut set = CpuSet::new();
    for &c in cpus {
        set.set(c).with_context(|| format!("CPU {c}"))?;
    }
    Ok(set)
}

/// Every thread of `pid` and of its descendants (a forking proxy's workers).
fn threads(pid: u32) -> Vec<i32> {
    procs::tree(pid)
        .into_iter()
        .flat_map(|p| {
            std::fs::read_dir(format!("/proc/{p}/task"))
                .into_iter()
                .flatten()
                .flatten()
                .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        })
        .collect()
}

fn pin_threads(tids: &[i32], set: &CpuSet) -> Result<()> {
    for &tid in tids {
        match sched_setaffinity(Pid::from_raw(tid), set) {
            // A thread that exited since /proc was read.
            Err(nix::errno::Errno::ESRCH) => {}
            r => r.with_context(|| format!("sched_setaffinity({tid})"))?,
        }
    }
    Ok(())
}

/// Pinned processes; dropping it gives them back `restore`.
pub struct Pinned {
    pids: Vec<u32>,
    restore: CpuSet,
}

/// Pins each `(pid, cpu)`'s process tree, every thread, to that CPU.
pub fn pin(processes: &[(u32, usize)], restore: &[usize]) -> Result<Pinned> {
    let guard = Pinned {
        pids: processes.iter().map(|&(p, _)| p).collect(),
        restore: set_of(restore)?,
    };
    for &(pid, cpu) in processes {
        pin_threads(&threads(pid), &set_of(&[cpu])?)?;
    }
    Ok(guard)
}

impl Drop for Pinned {
    fn drop(&mut self) {
        for &pid in &self.pids {
            if let Err(e) = pin_threads(&threads(pid), &self.restore) {
                eprintln!("warning: could not unpin pid {pid}: {e:#}");
            }
        }
    }
}

/// Runs `f` with the calling thread pinned to `cpu` (when there is one), then gives the thread
/// back `restore`.
pub fn on_cpu<T>(
    cpu: Option<usize>,
    restore: &[usize],
    f: impl FnOnce() -> Result<T>,
) -> Result<T> {
    let Some(cpu) = cpu else { return f() };
    let me = Pid::from_raw(0);
    sched_setaffinity(me, &set_of(&[cpu])?).context("pin the load client")?;
    let out = f();
    sched_setaffinity(me, &set_of(restore)?).context("unpin the load client")?;
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placements_take_the_first_allowed_cpus() {
        let cpus = [2, 5, 7];
        assert_eq!(sides(Placement::Shared, &cpus).unwrap(), None);
        assert_eq!(
            sides(Placement::OneCpu, &cpus).unwrap(),
            Some(Sides {
                client: 2,
                server: 2
            })
        );
        assert_eq!(
            sides(Placement::PerPod, &cpus).unwrap(),
            Some(Sides {
                client: 2,
                server: 5
            })
        );
    }

    #[test]
    fn a_cpu_per_pod_needs_two_cpus() {
        let e = sides(Placement::PerPod, &[3]).unwrap_err().to_string();
        assert!(e.contains("needs 2 CPUs"), "{e}");
        assert!(sides(Placement::OneCpu, &[3]).is_ok());
    }

    #[test]
    fn pinning_a_process_moves_every_thread_and_dropping_restores_them() {
        let cpus = allowed().unwrap();
        let child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let pid = child.id();
        let affinity = |tid: i32| sched_getaffinity(Pid::from_raw(tid)).unwrap();
        {
            let _p = pin(&[(pid, cpus[0])], &cpus).unwrap();
            for tid in threads(pid) {
                let set = affinity(tid);
                assert!(set.is_set(cpus[0]).unwrap());
                assert_eq!(
                    (0..CpuSet::count())
                        .filter(|&c| set.is_set(c).unwrap())
                        .count(),
                    1
                );
            }
        }
        let set = affinity(pid as i32);
        for &c in &cpus {
            assert!(set.is_set(c).unwrap(), "CPU {c} not restored");
        }
        let mut child = child;
        let _ = child.kill();
        let _ = child.wait();
    }
}
