//! README command 1: the demo runs end to end and reports what it did.

use std::process::Command;

#[test]
fn the_demo_moves_verified_traffic_and_reports_it() {
    let out = Command::new(env!("CARGO_BIN_EXE_gembok-demo"))
        .args(["--mib", "4"])
        .output()
        .expect("run gembok-demo");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "demo failed:\n{stdout}\n{stderr}");
    for needle in [
        "1. development PKI",
        "2. app stand-in",
        "4 connections x 4 MiB each way at once = 32 MiB",
        "SHA-256 verified both ways",
        "4. negotiated             TLSv1_3 TLS13_AES_128_GCM_SHA256 with key exchange X25519MLKEM768",
        // 24-byte header + 4 MiB per connection, 4 connections.
        "outbound app->peer 16777312 / peer->app 16777216",
        "/metrics (outbound)",
    ] {
        assert!(stdout.contains(needle), "no `{needle}` in:\n{stdout}");
    }
}

#[test]
fn the_demo_refuses_bad_arguments_with_64() {
    for args in [&["--mib", "lots"][..], &["--frobnicate"], &["--mib"]] {
        let out = Command::new(env!("CARGO_BIN_EXE_gembok-demo"))
            .args(args)
            .output()
            .expect("run gembok-demo");
        assert_eq!(out.status.code(), Some(64), "{args:?}");
        assert!(String::from_utf8_lossy(&out.stderr).starts_with("gembok-demo: "));
    }
}
