//! `gembok-proxy wait-ready`: polls a proxy's `/ready` (or `/live`, with `--path`) until it
//! answers 200.
//!
//! Used as a postStart hook when the sidecar runs as a classic container, so the kubelet holds
//! the app's containers until the proxy can serve, and as the sidecar's exec probes in pods
//! Istio injects (Istio rewrites every HTTP, TCP and gRPC probe to go through its own agent,
//! which may not run yet). Plain blocking HTTP/1.0: no runtime needed.
//!
//! The flags are checked before the first attempt ([`Target::parse`]; `main` lists their problems
//! with clap's and exits 64): a typo in `--admin` must not pass for a proxy that is not ready yet. `--timeout` is a hard
//! deadline, and each attempt (connect, request, status line) is bounded by [`ATTEMPT_LIMIT`], as
//! docs/contracts.md promises: the kubelet runs the hook with no timeout of its own, so a proxy
//! that accepts but never answers must not stretch the wait.

use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// Longest one attempt may take (less when the overall deadline is nearer).
pub const ATTEMPT_LIMIT: Duration = Duration::from_secs(1);

/// Pause between attempts.
const PAUSE: Duration = Duration::from_millis(100);

/// What wait-ready probes and for how long, from its flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Target {
    /// The admin address, a wildcard already turned into loopback.
    pub admin: SocketAddr,
    pub timeout: Duration,
    /// `/ready` or `/live`.
    pub path: &'static str,
}

/// The endpoints `--path` may name.
pub const PATHS: [&str; 2] = ["/ready", "/live"];

impl Target {
    /// Every problem with the flags at once, one line each, starting with the flag.
    pub fn parse(admin: &str, timeout: &str, path: &str) -> Result<Self, Vec<String>> {
        let admin = parse_admin(admin).map_err(|e| format!("--admin: {e}"));
        let timeout = crate::config::parse_duration(timeout).map_err(|e| format!("--timeout: {e}"));
        let path = PATHS
            .into_iter()
            .find(|p| *p == path)
            .ok_or_else(|| format!("--path: `{path}` is not one of {}", PATHS.join(", ")));
        match (admin, timeout, path) {
            (Ok(admin), Ok(timeout), Ok(path)) => Ok(Self {
                admin,
                timeout,
                path,
            }),
            (admin, timeout, path) => Err(admin
                .err()
                .into_iter()
                .chain(timeout.err())
                .chain(path.err())
                .collect()),
        }
    }
}

/// Returns `Ok` once `/ready` answers 200, or the last answer (or error) when the timeout
/// passes. Never returns later than the timeout after it was called (give or take a scheduling
/// tick).
pub fn wait(target: Target) -> Result<(), String> {
    let deadline = Instant::now() + target.timeout;
    let mut last = String::from("no attempt was made");
    loop {
        let Some(left) = time_left(deadline) else {
            return Err(last);
        };
        last = match probe(target.admin, target.path, left.min(ATTEMPT_LIMIT)) {
            Ok(200) => return Ok(()),
            Ok(status) => format!("{} answered {status}", target.path),
            Err(e) => e,
        };
        let Some(left) = time_left(deadline) else {
            return Err(last);
        };
        std::thread::sleep(PAUSE.min(left));
    }
}

/// What is left until `deadline`, `None` once nothing is.
fn time_left(deadline: Instant) -> Option<Duration> {
    deadline
        .checked_duration_since(Instant::now())
        .filter(|left| !left.is_zero())
}

/// The address to probe: an IP address and port, `localhost:PORT`, or `:PORT`, as `--admin` of
/// the proxy itself takes (no other names: resolving one could block past the deadline). A
/// wildcard address is reached through loopback.
fn parse_admin(admin: &str) -> Result<SocketAddr, String> {
    let addr = crate::config::parse_addr(admin)?;
    if addr.port() == 0 {
        return Err(format!("`{admin}`: port 0 cannot be probed"));
    }
    Ok(if addr.ip().is_unspecified() {
        SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), addr.port())
    } else {
        addr
    })
}

/// One `GET path`, all of it within `limit`: the status code of the answer.
fn probe(addr: SocketAddr, path: &str, limit: Duration) -> Result<u16, String> {
    let until = Instant::now() + limit;
    let late = || format!("{addr}: no answer within {} ms", limit.as_millis());
    let left = || time_left(until).ok_or_else(late);
    let mut s = TcpStream::connect_timeout(&addr, left()?).map_err(|e| match e.kind() {
        ErrorKind::TimedOut | ErrorKind::WouldBlock => late(),
        _ => format!("{addr}: {e}"),
    })?;
    s.set_write_timeout(Some(left()?))
        .map_err(|e| format!("{addr}: {e}"))?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").as_bytes())
        .map_err(|e| format!("{addr}: {e}"))?;
    // `HTTP/1.x NNN`; each read gets only what is left of the attempt, so a peer that trickles
    // bytes cannot stretch it.
    let mut head = [0u8; 12];
    let mut got = 0;
    while got < head.len() {
        s.set_read_timeout(Some(left()?))
            .map_err(|e| format!("{addr}: {e}"))?;
        match s.read(&mut head[got..]) {
            Ok(0) => return Err(format!("{addr}: closed before answering")),
            Ok(n) => got += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return Err(late());
            }
            Err(e) => return Err(format!("{addr}: {e}")),
        }
    }
    std::str::from_utf8(&head[9..12])
        .ok()
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| format!("{addr}: not an HTTP answer"))
}

#[cfg(test)]
mod tests {
    use std::net::TcpListener;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[test]
    fn admin_takes_what_the_proxys_admin_flag_takes() {
        let loopback = |port| SocketAddr::from(([127, 0, 0, 1], port));
        assert_eq!(parse_admin("127.0.0.1:15700"), Ok(loopback(15700)));
        assert_eq!(parse_admin("0.0.0.0:15700"), Ok(loopback(15700)));
        assert_eq!(parse_admin("localhost:1"), Ok(loopback(1)));
        assert_eq!(parse_admin(":2"), Ok(loopback(2)));
        assert_eq!(
            parse_admin("[::1]:3"),
            Ok(SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, 3)))
        );
        for bad in ["nope", "nope:15700", "127.0.0.1:x", "127.0.0.1:0", ""] {
            assert!(parse_admin(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn every_bad_flag_is_reported_at_once() {
        assert_eq!(
            Target::parse("0.0.0.0:15700", "2m", "/live"),
            Ok(Target {
                admin: SocketAddr::from(([127, 0, 0, 1], 15700)),
                timeout: Duration::from_secs(120),
                path: "/live",
            })
        );
        let problems = Target::parse("nope", "0s", "/metrics").unwrap_err();
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert_eq!(
            problems[2],
            "--path: `/metrics` is not one of /ready, /live"
        );
        assert!(problems[0].starts_with("--admin: `nope`"), "{problems:?}");
        assert!(
            problems[1].starts_with("--timeout: `0s` must be longer than zero"),
            "{problems:?}"
        );
        let problems = Target::parse("127.0.0.1:1", "soon", "/ready").unwrap_err();
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].starts_with("--timeout: `soon`"), "{problems:?}");
    }

    /// Listens, lets the kernel accept, and never answers; counts the connections.
    fn silent_server() -> (SocketAddr, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        std::thread::spawn(move || {
            let mut held = Vec::new();
            for stream in listener.incoming().flatten() {
                count.fetch_add(1, Ordering::SeqCst);
                held.push(stream);
            }
        });
        (addr, accepted)
    }

    #[test]
    fn the_timeout_is_a_hard_deadline_and_attempts_are_bounded() {
        let (addr, accepted) = silent_server();
        // 1.2 s: an attempt not bounded by the deadline (the old 2 s read timeout) would end
        // at 2 s or later, 800 ms over, far beyond the 500 ms allowed here for a busy machine.
        let timeout = Duration::from_millis(1200);
        let started = Instant::now();
        let err = wait(Target {
            admin: addr,
            timeout,
            path: "/ready",
        })
        .unwrap_err();
        let took = started.elapsed();
        assert!(took >= timeout, "gave up early, after {took:?}");
        assert!(
            took < timeout + Duration::from_millis(500),
            "overran the deadline: {took:?}"
        );
        assert!(err.contains("no answer within"), "{err}");
        // The first attempt gives up after 1 s, so a second one fits before the deadline.
        assert!(accepted.load(Ordering::SeqCst) >= 2, "one attempt only");
    }

    #[test]
    fn a_ready_answer_ends_the_wait_and_the_path_is_the_one_asked_for() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        // 200 for /live only: /ready keeps answering 503.
        std::thread::spawn(move || {
            for mut stream in listener.incoming().flatten() {
                let mut request = [0u8; 64];
                let n = stream.read(&mut request).unwrap_or(0);
                let answer: &[u8] = match request[..n].starts_with(b"GET /live ") {
                    true => b"HTTP/1.0 200 OK\r\n\r\nlive",
                    false => b"HTTP/1.0 503 Service Unavailable\r\n\r\nnot ready",
                };
                let _ = stream.write_all(answer);
            }
        });
        let target = |path| Target {
            admin: addr,
            timeout: Duration::from_millis(300),
            path,
        };
        assert_eq!(wait(target("/live")), Ok(()));
        assert_eq!(
            wait(target("/ready")),
            Err("/ready answered 503".to_owned())
        );
    }
}
