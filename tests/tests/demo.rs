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
    // --version, like every other Gembok binary.
    let out = Command::new(env!("CARGO_BIN_EXE_gembok-demo"))
        .arg("--version")
        .output()
        .expect("run gembok-demo");
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("gembok-demo "));
}

/// Ctrl-C or SIGTERM at any point, --hold included, stops the sidecars and removes the PKI
/// (private keys) it wrote, as a normal exit does.
#[test]
fn the_demo_interrupted_leaves_no_sidecar_and_no_keys_behind() {
    use std::io::{BufRead as _, BufReader};
    /// Kills the demo if the test fails before it stops it (`Child` does not on drop).
    struct Held(std::process::Child);
    impl Drop for Held {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut demo = Held(
        Command::new(env!("CARGO_BIN_EXE_gembok-demo"))
            .args(["--hold", "--mib", "1"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("run gembok-demo"),
    );
    let mut pki = None;
    let mut admins = Vec::new();
    for line in BufReader::new(demo.0.stdout.take().unwrap()).lines() {
        let line = line.unwrap();
        if let Some(rest) = line.strip_prefix("1. development PKI") {
            pki = rest.split_whitespace().next().map(std::path::PathBuf::from);
        }
        if let Some(rest) = line.trim_start().strip_prefix("metrics") {
            admins.extend(
                rest.split_whitespace()
                    .filter_map(|w| w.strip_prefix("http://"))
                    .filter_map(|w| w.strip_suffix("/metrics"))
                    .map(str::to_owned),
            );
        }
        if line.contains("Running until Ctrl-C") {
            break;
        }
    }
    let pki = pki.expect("the demo names its PKI");
    assert!(pki.join("root/ca.key").is_file(), "{}", pki.display());
    assert_eq!(admins.len(), 2, "{admins:?}");
    for admin in &admins {
        assert!(
            std::net::TcpStream::connect(admin.as_str()).is_ok(),
            "{admin}"
        );
    }
    let pid = i32::try_from(demo.0.id()).unwrap();
    assert_eq!(gembok_tests::proxy::send_signal(pid, 15), 0);
    let status = demo.0.wait().unwrap();
    assert_eq!(status.code(), Some(143));
    assert!(!pki.exists(), "{} left behind", pki.display());
    for admin in &admins {
        assert!(
            std::net::TcpStream::connect(admin.as_str()).is_err(),
            "a sidecar still answers on {admin}"
        );
    }
}
