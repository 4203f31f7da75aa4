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

/// First non-empty line of stdout, else of stderr (nginx and stunnel print versions there).
fn first_line(program: &std::ffi::OsStr, args: &[&str]) -> String {
    match Command::new(program).args(args).output() {
        Ok(o) => {
            let pick = |b: &[u8]| {
                String::from_utf8_lossy(b)
                    .lines()
                    .map(str::trim)
                    .find(|l| !l.is_empty() && !l.starts_with('['))
                    .map(str::to_owned)
            };
            pick(&o.stdout)
                .or_else(|| pick(&o.stderr))
                .unwrap_or_else(|| "(no output)".into())
        }
        Err(e) => format!("(cannot run: {e})"),
    }
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
