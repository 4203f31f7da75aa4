//! Test harness for Gembok's black-box tests: it starts the real binaries, real app stand-ins
//! and real TLS clients, and reads the binaries' own answers (`/ready`, `/metrics`, logs).
//!
//! - [`bins`]: where the built binaries are;
//! - [`pki`]: certificates for a test (a root, an intermediate, leaves; broken ones on demand);
//! - [`proxy`]: a running `gembok-proxy` (addresses read from its JSON start-up log);
//! - [`pair`]: an outbound and an inbound proxy in front of an app stand-in;
//! - [`admin`]: a tiny HTTP client for admin endpoints and a Prometheus text parser;
//! - [`traffic`]: app stand-ins and clients that move seeded random bytes and check SHA-256;
//! - [`tls`]: a rustls client for driving inbound listeners directly;
//! - [`openssl`]: `openssl s_client` and `s_server` as real TLS peers;
//! - [`netns`]: a network namespace of a test's own, for host settings such as `bindv6only`;
//! - [`repo`]: the repository's top directory and its committed Kubernetes fixtures.

#![forbid(unsafe_code)]

pub mod admin;
pub mod bins;
pub mod netns;
pub mod openssl;
pub mod pair;
pub mod pki;
pub mod proxy;
pub mod repo;
pub mod tls;
pub mod traffic;

use std::time::{Duration, Instant};

/// One thread's seccomp state, from `/proc/PID/task/TID/status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThreadSeccomp {
    pub name: String,
    /// 0 none, 2 filtered.
    pub mode: u32,
    /// Filters in force (Linux 5.9 and later; `None` before).
    pub filters: Option<usize>,
}

/// The seccomp state of every thread of process `pid` (`"self"` for this one).
pub fn seccomp_of(pid: &str) -> Vec<ThreadSeccomp> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).expect("/proc/PID/task");
    let mut threads = Vec::new();
    for task in tasks.flatten() {
        let Ok(status) = std::fs::read_to_string(task.path().join("status")) else {
            continue; // a thread that has just exited
        };
        let field = |key: &str| {
            let line = status.lines().find(|l| l.starts_with(key))?;
            Some(line[key.len()..].trim().to_owned())
        };
        threads.push(ThreadSeccomp {
            name: field("Name:").unwrap_or_default(),
            mode: field("Seccomp:").and_then(|v| v.parse().ok()).unwrap_or(0),
            filters: field("Seccomp_filters:").and_then(|v| v.parse().ok()),
        });
    }
    threads
}

/// Polls `check` every 20 ms until it returns `Some`, or fails after `within`.
pub async fn eventually<T>(
    within: Duration,
    what: &str,
    mut check: impl FnMut() -> Option<T>,
) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {within:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
