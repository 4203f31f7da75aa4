//! Scenario 5: system calls per GiB. `strace -c -f` attaches to every thread of each side
//! (readiness: every thread's TracerPid is set), one bulk stream runs through the pair, then
//! SIGINT makes strace detach and write its summary, which is parsed here.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::procs::{self, Proc};

/// An attached strace.
pub struct Tracer {
    proc: Proc,
    output: std::path::PathBuf,
}

pub fn attach(name: &str, pid: u32, dir: &Path) -> Result<Tracer> {
    let output = dir.join(format!("strace-{name}.txt"));
    // Every thread of every process of the side, named explicitly.
    let pids = procs::tree(pid);
    let tids: Vec<u32> = pids
        .iter()
        .flat_map(|p| {
            std::fs::read_dir(format!("/proc/{p}/task"))
                .into_iter()
                .flatten()
                .flatten()
                .filter_map(|t| t.file_name().to_str().and_then(|s| s.parse().ok()))
        })
        .collect();
    let mut cmd = procs::command("strace");
    cmd.arg("-c").arg("-f").arg("-qq").arg("-o").arg(&output);
    for t in &tids {
        cmd.arg("-p").arg(t.to_string());
    }
    let proc = procs::spawn(
        &format!("strace-{name}"),
        cmd_with_path(cmd),
        &dir.join(format!("strace-{name}.log")),
    )?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !pids.iter().all(|p| all_threads_traced(*p)) {
        if let Some(status) = procs::exited(&proc) {
            bail!("strace exited ({status}): {}", procs::log_tail(&proc, 5));
        }
        if Instant::now() > deadline {
            procs::stop(&proc);
            bail!("strace did not attach to every thread of {name} within 10 s");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(Tracer { proc, output })
}

fn cmd_with_path(mut c: Command) -> Command {
    c.env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin");
    c
}

fn all_threads_traced(pid: u32) -> bool {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return false;
    };
    tasks.flatten().all(|t| {
        std::fs::read_to_string(t.path().join("status"))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("TracerPid:"))
                    .map(|v| v.trim() != "0")
            })
            .unwrap_or(true) // the thread exited meanwhile
    })
}

impl Tracer {
    /// Detaches and returns call counts by syscall name.
    pub fn finish(self) -> Result<BTreeMap<String, u64>> {
        procs::signal_and_wait(&self.proc, crate::sys::Sig::INT, Duration::from_secs(20))?;
        let text = std::fs::read_to_string(&self.output)
            .with_context(|| format!("read {}", self.output.display()))?;
        Ok(parse(&text))
    }
}

/// Parses `strace -c` output: `% time seconds usecs/call calls [errors] syscall`.
pub fn parse(text: &str) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 5 || f[0].starts_with('%') || f[0].starts_with('-') {
            continue;
        }
        let name = f[f.len() - 1];
        if name == "total" {
            continue;
        }
        if let Ok(calls) = f[3].parse::<u64>() {
            out.insert(name.to_owned(), calls);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn parses_strace_summary_with_and_without_errors() {
        let text = "% time     seconds  usecs/call     calls    errors syscall
------ ----------- ----------- --------- --------- ----------------
 52.10    0.512000          27     18432           writev
 40.00    0.400000           6     65921      1203 recvfrom
  0.01    0.000100          10        10           epoll_wait
------ ----------- ----------- --------- --------- ----------------
100.00    0.912100                 84363      1203 total
";
        let m = super::parse(text);
        assert_eq!(m["writev"], 18432);
        assert_eq!(m["recvfrom"], 65921);
        assert_eq!(m["epoll_wait"], 10);
        assert!(!m.contains_key("total"));
    }
}
