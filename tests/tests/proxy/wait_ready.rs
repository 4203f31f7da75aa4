//! `gembok-proxy wait-ready` as the kubelet runs it: every bad flag at once (exit 64, before any
//! attempt), and `--timeout` as a hard deadline against a proxy that accepts but never answers.

use std::process::Command;
use std::time::{Duration, Instant};

use gembok_tests::bins;

fn wait_ready(args: &[&str]) -> (Option<i32>, String, Duration) {
    let started = Instant::now();
    let out = Command::new(bins::proxy())
        .arg("wait-ready")
        .args(args)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    (out.status.code(), stderr, started.elapsed())
}

#[test]
fn bad_values_are_usage_errors_listed_with_unknown_flags() {
    // Refused before any attempt: a bad --admin used to be found only by probing, and reported
    // as a failure (exit 1) after the whole timeout.
    let (code, stderr, _) = wait_ready(&["--admin", "nope", "--timeout", "1s", "--bogus"]);
    assert_eq!(code, Some(64), "{stderr}");
    assert!(stderr.contains("--bogus: unknown flag"), "{stderr}");
    assert!(stderr.contains("--admin: `nope`"), "{stderr}");
    assert!(stderr.contains("(2 problems)"), "{stderr}");

    let (code, stderr, _) = wait_ready(&["--timeout", "0s"]);
    assert_eq!(code, Some(64), "{stderr}");
    assert!(
        stderr.contains("--timeout: `0s` must be longer than zero"),
        "{stderr}"
    );
}

#[test]
fn the_timeout_holds_against_a_peer_that_never_answers() {
    // The kernel completes the handshakes; nothing ever reads or writes.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let admin = silent.local_addr().unwrap().to_string();
    // An attempt not bounded by the deadline (the old 2 s read timeout) would end 800 ms past
    // a 1.2 s deadline or later: allow 500 ms over, for the process start on a busy machine.
    let (code, stderr, took) = wait_ready(&["--admin", &admin, "--timeout", "1200ms"]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("no answer within"), "{stderr}");
    assert!(
        took < Duration::from_millis(1700),
        "took {took:?} for --timeout 1200ms"
    );
}
