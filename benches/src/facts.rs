//! The machine-facts header: CPU and its crypto-relevant flags, kernel, cores, memory, kTLS
//! availability, and the version of every contender.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use serde::{Deserialize, Serialize};

use crate::contender::Kind;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Facts {
    pub cpu: String,
    pub cpu_flags: Vec<String>,
    pub cores: usize,
    pub memory_gib: f64,
    pub kernel: String,
    /// `/proc/sys/net/ipv4/tcp_available_ulp`.
    pub tcp_available_ulp: String,
    /// `/proc/net/tls_stat` exists (the kernel has kTLS loaded).
    pub ktls_stats: bool,
    pub openssl: String,
    pub versions: BTreeMap<String, String>,
    /// The run's network namespace and congestion control (absent in runs before they were
    /// recorded).
    #[serde(default)]
    pub network: Option<crate::netns::Network>,
    /// The cpuidle driver, and the guest's halt-polling window where the driver is `haltpoll`:
    /// with none, a wake-up of an idle vCPU costs a VM exit (tens of µs), which decides the
    /// latency figures (see tuning.md). Empty in runs before it was recorded.
    #[serde(default)]
    pub cpuidle: String,
}

/// CPU flags that decide crypto and copy speed.
const INTERESTING_FLAGS: &[&str] = &[
    "aes",
    "vaes",
    "pclmulqdq",
    "vpclmulqdq",
    "avx2",
    "avx512f",
    "sha_ni",
    "bmi2",
    "adx",
];

pub fn collect(kinds: &[Kind], gembok_bin: &Path) -> Facts {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let field = |name: &str| {
        cpuinfo
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_owned())
            .unwrap_or_default()
    };
    let flags = field("flags");
    let cpu_flags = INTERESTING_FLAGS
        .iter()
        .filter(|f| flags.split_whitespace().any(|x| x == **f))
        .map(|f| (*f).to_owned())
        .collect();
    let memory_gib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        })
        .map_or(0.0, |kib| kib / 1024.0 / 1024.0);
    let mut versions = BTreeMap::new();
    versions.insert(
        "gembok-proxy".to_owned(),
        first_line(gembok_bin.as_os_str(), &["--version"]),
    );
    for k in kinds {
        if let Some((prog, args)) = k.version_command() {
            versions.insert(k.id().to_owned(), first_line(prog.as_ref(), args));
        }
    }
    versions.insert("rustls".into(), "0.23 (workspace Cargo.lock)".into());
    Facts {
        cpu: field("model name"),
        cpu_flags,
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        memory_gib,
        kernel: read("/proc/sys/kernel/osrelease"),
        tcp_available_ulp: read("/proc/sys/net/ipv4/tcp_available_ulp"),
        ktls_stats: Path::new("/proc/net/tls_stat").exists(),
        openssl: first_line("openssl".as_ref(), &["version"]),
        versions,
        network: None,
        cpuidle: cpuidle(),
    }
}

/// `haltpoll (guest_halt_poll_ns = 0)`, `none`, `intel_idle`, ...
fn cpuidle() -> String {
    let driver = read("/sys/devices/system/cpu/cpuidle/current_driver");
    if driver != "haltpoll" {
        return driver;
    }
    match std::fs::read_to_string("/sys/module/haltpoll/parameters/guest_halt_poll_ns") {
        Ok(ns) => format!("{driver} (guest_halt_poll_ns = {})", ns.trim()),
        Err(_) => driver,
    }
}

fn read(p: &str) -> String {
    std::fs::read_to_string(p)
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "(unavailable)".into())
}

/// The version line of a program's output: stdout's, else stderr's (nginx and stunnel print
/// versions there).
fn first_line(program: &std::ffi::OsStr, args: &[&str]) -> String {
    match Command::new(program).args(args).output() {
        Ok(o) => version_line(&String::from_utf8_lossy(&o.stdout))
            .or_else(|| version_line(&String::from_utf8_lossy(&o.stderr)))
            .unwrap_or_else(|| "(no output)".into()),
        Err(e) => format!("(cannot run: {e})"),
    }
}

/// The first line that carries a version number (a word with `digits.digits` in it), else the
/// first non-empty line; log lines (`[ ...`) skipped. `stunnel4 -version` starts with
/// "Initializing inetd mode configuration" before "stunnel 5.68 on x86_64-pc-linux-gnu platform".
fn version_line(text: &str) -> Option<String> {
    let lines = || {
        text.lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('['))
    };
    let has_version = |l: &&str| {
        l.split(|c: char| !(c.is_ascii_digit() || c == '.'))
            .any(|w| {
                let mut parts = w.split('.');
                let major = parts.next().unwrap_or_default();
                let minor = parts.next().unwrap_or_default();
                !major.is_empty() && !minor.is_empty()
            })
    };
    lines()
        .find(has_version)
        .or_else(|| lines().next())
        .map(str::to_owned)
}

/// Total of the kTLS counters in `/proc/net/tls_stat` that count connections moved to the
/// kernel (`TlsTxSw`, `TlsRxSw`, `TlsTxDevice`, `TlsRxDevice`); `None` without kTLS.
pub fn ktls_connections() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/net/tls_stat").ok()?;
    Some(
        text.lines()
            .filter_map(|l| {
                let mut f = l.split_whitespace();
                let name = f.next()?;
                let v: u64 = f.next()?.parse().ok()?;
                matches!(name, "TlsTxSw" | "TlsRxSw" | "TlsTxDevice" | "TlsRxDevice").then_some(v)
            })
            .sum(),
    )
}

#[cfg(test)]
mod tests {
    use super::version_line;

    #[test]
    fn the_version_line_is_the_one_with_a_version() {
        let stunnel = "Initializing inetd mode configuration\n\
                       stunnel 5.68 on x86_64-pc-linux-gnu platform\n\
                       Compiled with OpenSSL 3.0.9 30 May 2023\n";
        assert_eq!(
            version_line(stunnel).as_deref(),
            Some("stunnel 5.68 on x86_64-pc-linux-gnu platform")
        );
        assert_eq!(
            version_line("HAProxy version 2.6.12-1+deb12u3 2025/10/03 - https://haproxy.org/\nStatus: long-term\n")
                .as_deref(),
            Some("HAProxy version 2.6.12-1+deb12u3 2025/10/03 - https://haproxy.org/")
        );
        assert_eq!(
            version_line("\n[ 1.0] log\nnginx version: nginx/1.22.1\n").as_deref(),
            Some("nginx version: nginx/1.22.1")
        );
        assert_eq!(
            version_line("no version here\n").as_deref(),
            Some("no version here")
        );
        assert_eq!(version_line(" \n"), None);
    }
}
