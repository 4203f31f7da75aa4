//! Start-up, readiness, metrics, configuration errors and the SIGTERM drain.

use std::process::Command;
use std::time::{Duration, Instant};

use gembok_tests::bins;
use gembok_tests::pair::Inbound;
use gembok_tests::pki::{CertDir, TestPki, workload_spec};
use gembok_tests::proxy::Proxy;
use gembok_tests::traffic::{Exchange, ExchangeApp};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::{Pair, wait_metric};

async fn wait_status(proxy: &Proxy, path: &str, want: u16, within: Duration) -> String {
    let deadline = Instant::now() + within;
    loop {
        let (status, body) = proxy.get(path).await;
        if status == want {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "{path} still {status} ({body}) after {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn ready_only_once_certificates_load_and_live_all_along() {
    let pki = TestPki::new();
    let app = ExchangeApp::start().await;
    let dir = CertDir::empty(); // the Secret is not there yet
    let proxy = Proxy::builder()
        .cert_dir(&dir)
        .inbound(app.addr, "")
        .start();
    assert_eq!(proxy.get("/live").await.0, 200);
    let (status, body) = proxy.get("/ready").await;
    assert_eq!(
        (status, body.trim()),
        (503, "not ready: no certificate loaded")
    );
    dir.swap(&pki.workload("server"));
    wait_status(&proxy, "/ready", 200, Duration::from_secs(5)).await;
    assert_eq!(proxy.get("/nope").await.0, 404);
}

#[tokio::test]
async fn not_ready_when_the_certificate_expires_within_the_margin() {
    use gembok_certs_dev::Validity;
    use gembok_certs_dev::time::{Duration as Span, OffsetDateTime};
    let pki = TestPki::new();
    let now = OffsetDateTime::now_utc();
    let short = pki.issue(workload_spec("server").validity(Validity::between(
        now - Span::hours(1),
        now + Span::hours(2),
    )));
    let dir = CertDir::new(&short);
    let app = ExchangeApp::start().await;
    let proxy = Proxy::builder()
        .cert_dir(&dir)
        .inbound(app.addr, "")
        .args(["--cert-expiry-margin", "3h"])
        .start();
    let (status, body) = proxy.get("/ready").await;
    assert_eq!(status, 503);
    assert!(body.contains("within the 10800s margin"), "{body}");
    // The operator hears it from the logs too, once, not at every probe. The proxy writes a
    // probe's line before it answers; SIGHUP's line, asked for after the second probe's answer,
    // marks where everything the probes logged has reached the harness.
    proxy.get("/ready").await;
    proxy.signal(libc::SIGHUP);
    proxy
        .wait_log(
            "SIGHUP: re-reading the certificate files",
            Duration::from_secs(10),
        )
        .await;
    let warnings: Vec<_> = proxy
        .logs()
        .lines()
        .filter(|l| l.contains("\"WARN\"") && l.contains("\"message\":\"not ready\""))
        .map(str::to_owned)
        .collect();
    assert_eq!(warnings.len(), 1, "{}", proxy.logs());
    assert!(
        warnings[0].contains("within the 10800s margin"),
        "{}",
        warnings[0]
    );
    let m = proxy.metrics().await;
    let left = m.sum("gembok_cert_not_after_timestamp_seconds", &[]) - now.unix_timestamp() as f64;
    assert!(
        (7100.0..7300.0).contains(&left),
        "not_after gauge is {left}s from now"
    );
}

#[tokio::test]
async fn metrics_follow_prometheus_conventions() {
    let mut pair = Pair::start().await;
    let x = Exchange {
        id: 0,
        send_len: 1000,
        send_seed: 1,
        reply_len: 2000,
        reply_seed: 2,
    };
    x.run(pair.entry()).await.unwrap();
    pair.app.received.recv().await.unwrap().unwrap();
    wait_metric(
        &pair.outbound,
        "gembok_connections_closed_total",
        &[("end", "clean")],
        1.0,
    )
    .await;
    let m = pair.outbound.metrics().await;
    for (name, kind) in [
        ("gembok_connections_opened_total", "counter"),
        ("gembok_connections_closed_total", "counter"),
        ("gembok_connections_active", "gauge"),
        ("gembok_bytes_total", "counter"),
        ("gembok_handshake_duration_seconds", "histogram"),
        ("gembok_cert_reloads_total", "counter"),
        ("gembok_cert_not_after_timestamp_seconds", "gauge"),
        ("gembok_build_info", "gauge"),
    ] {
        assert_eq!(m.types.get(name).map(String::as_str), Some(kind), "{name}");
    }
    // The listener label is the bound address, not the configured port 0.
    let listener = pair.entry().to_string();
    let labels = [("direction", "outbound"), ("listener", listener.as_str())];
    assert_eq!(m.sum("gembok_connections_opened_total", &labels), 1.0);
    assert_eq!(
        m.sum("gembok_bytes_total", &[("flow", "app_to_peer")]),
        1024.0
    );
    assert_eq!(
        m.sum("gembok_bytes_total", &[("flow", "peer_to_app")]),
        2000.0
    );
    assert_eq!(
        m.sum("gembok_handshake_duration_seconds_count", &labels),
        1.0
    );
    assert_eq!(
        m.sum("gembok_build_info", &[("provider", "aws-lc-rs")]),
        1.0
    );
    // Failure series exist at zero before the first failure, so alerts and rate() see them.
    for (name, label) in [
        ("gembok_handshake_failures_total", ("reason", "unknown_ca")),
        ("gembok_connections_closed_total", ("end", "truncated")),
        (
            "gembok_upstream_connect_failures_total",
            ("reason", "refused"),
        ),
    ] {
        let sample = m
            .samples
            .iter()
            .find(|s| s.name == name && s.labels.get(label.0).map(String::as_str) == Some(label.1));
        assert!(
            sample.is_some_and(|s| s.value == 0.0),
            "{name}{{{label:?}}} at 0"
        );
    }
    assert!(m.has("gembok_truncations_total"));
    // Every sample name is gembok_-prefixed.
    assert!(
        m.samples.iter().all(|s| s.name.starts_with("gembok_")),
        "{:?}",
        m.samples.iter().map(|s| &s.name).collect::<Vec<_>>()
    );
    // The C math functions the exporter and tokio call come from `gembok_proxy::math`: even
    // after traffic and a scrape, glibc's libm (and the RSS it costs) is not mapped.
    let maps = std::fs::read_to_string(format!("/proc/{}/maps", pair.outbound.pid())).unwrap();
    assert!(!maps.contains("/libm."), "libm is mapped:\n{maps}");
}

/// jemalloc is built with one arena (`.cargo/config.toml`): an idle sidecar's threads then share
/// one instead of taking one each; and with a background thread that purges freed memory.
#[test]
fn jemalloc_runs_with_one_arena_and_a_purging_thread() {
    let out = Command::new(bins::proxy())
        .arg("--version")
        .env("_RJEM_MALLOC_CONF", "stats_print:true")
        .output()
        .unwrap();
    let stats = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success());
    assert!(stats.contains("opt.narenas: 1\n"), "{stats}");
    assert!(stats.contains("opt.background_thread: true"), "{stats}");
}

/// After a burst of bulk transfers, the memory the sidecars used for it goes back to the system
/// while they sit idle (jemalloc's background thread, `.cargo/config.toml`). Without that
/// thread jemalloc purges only when the program allocates again, and an idle sidecar kept its
/// peak for as long as it stayed idle.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_used_by_a_burst_returns_to_the_system_while_idle() {
    let mut pair = Pair::start().await;
    pair.exchange_intact("warm-up", 0, 64 * 1024).await;
    let pids = [pair.outbound.pid(), pair.inbound.pid()];
    let rss = || pids.map(rss_kib);
    let before = rss();

    const STREAMS: u64 = 32;
    let entry = pair.entry();
    let burst: Vec<_> = (1..=STREAMS)
        .map(|id| {
            let x = Exchange::both_ways(id, 8 << 20);
            tokio::spawn(async move { (x, x.run(entry).await) })
        })
        .collect();
    for task in burst {
        let (x, got) = task.await.unwrap();
        let got = got.unwrap_or_else(|e| panic!("stream {}: {e}", x.id));
        assert_eq!(got.received, x.expected_reply(), "stream {}", x.id);
    }
    for _ in 0..STREAMS {
        pair.app.received.recv().await.unwrap().expect("app side");
    }
    let peak = rss();
    for side in 0..2 {
        assert!(
            peak[side] > before[side] + 8 * 1024,
            "the burst should have grown each sidecar by over 8 MiB: {before:?} -> {peak:?} KiB"
        );
    }

    // Nothing more is sent: within jemalloc's decay time (10 s) and a margin, each sidecar gives
    // back at least half of what it grew by.
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let now = rss();
        if (0..2).all(|side| now[side] <= before[side] + (peak[side] - before[side]) / 2) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "RSS stayed up after the burst: before {before:?}, peak {peak:?}, now {now:?} KiB"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn rss_kib(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/<pid>/status")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_turns_unready_stops_accepting_and_lets_transfers_finish() {
    let mut pair = Pair::start_args(&["--drain-grace", "60s"], &[]).await;
    // A transfer slow enough to be in flight when SIGTERM arrives: the client paces its upload.
    let entry = pair.entry();
    let (go_tx, go_rx) = tokio::sync::oneshot::channel::<()>();
    let transfer = tokio::spawn(async move {
        let mut s = tokio::net::TcpStream::connect(entry).await.unwrap();
        let mut header = [0u8; 24];
        header[8..16].copy_from_slice(&(1u64 << 20).to_be_bytes()); // ask for 1 MiB back
        s.write_all(&header).await.unwrap();
        s.write_all(&[1u8; 4096]).await.unwrap();
        go_rx.await.unwrap(); // ...finish only after the drain has begun
        s.write_all(&[2u8; 4096]).await.unwrap();
        s.shutdown().await.unwrap();
        let mut reply = Vec::new();
        s.read_to_end(&mut reply).await.unwrap();
        reply.len()
    });
    wait_metric(&pair.inbound, "gembok_connections_active", &[], 1.0).await;
    pair.inbound.signal(libc::SIGTERM);
    let (status, body) = {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let got = pair.inbound.get("/ready").await;
            if got.0 == 503 || Instant::now() > deadline {
                break got;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    assert_eq!(status, 503);
    assert!(body.contains("draining"), "{body}");
    // New connections are refused once the listener is gone.
    let listener = pair.inbound.inbound[0];
    let deadline = Instant::now() + Duration::from_secs(5);
    while tokio::net::TcpStream::connect(listener).await.is_ok() {
        assert!(
            Instant::now() < deadline,
            "the inbound listener still accepts after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(pair.inbound.get("/live").await.0, 200);
    go_tx.send(()).unwrap();
    assert_eq!(
        transfer.await.unwrap(),
        1 << 20,
        "the in-flight transfer finished intact"
    );
    let at_app = pair.app.received.recv().await.unwrap().unwrap();
    assert_eq!(at_app.stream.len, 8192);
    let status = pair.inbound.wait_exit(Duration::from_secs(10)).await;
    assert!(status.success(), "exit status {status}");
}

/// With a drain delay (classic-mode sidecars, stopped together with their app), the outbound
/// still serves new connections after SIGTERM while `/ready` says 503, then stops accepting,
/// and the whole stop stays within the grace period.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_delay_keeps_serving_new_connections_for_a_while_after_sigterm() {
    let mut pair = Pair::start_args(&[], &["--drain-delay", "3s", "--drain-grace", "8s"]).await;
    let signalled = Instant::now();
    pair.outbound.signal(libc::SIGTERM);
    let deadline = Instant::now() + Duration::from_secs(5);
    while pair.outbound.get("/ready").await.0 != 503 {
        assert!(Instant::now() < deadline, "/ready never turned 503");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Unready, and still carrying the app's new calls (it began after /ready turned 503, so
    // after SIGTERM: its connection was accepted during the delay).
    pair.exchange_intact("during the drain delay", 1, 64 * 1024)
        .await;
    // Then the listener goes.
    let deadline = Instant::now() + Duration::from_secs(5);
    while tokio::net::TcpStream::connect(pair.entry()).await.is_ok() {
        assert!(Instant::now() < deadline, "still accepting after the delay");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        signalled.elapsed() >= Duration::from_millis(2900),
        "stopped accepting after {:?}, before the 3 s delay\n{}",
        signalled.elapsed(),
        pair.logs()
    );
    let status = pair.outbound.wait_exit(Duration::from_secs(10)).await;
    assert!(status.success(), "exit status {status}");
    assert!(
        signalled.elapsed() < Duration::from_secs(8),
        "the stop took {:?}, beyond the 8 s grace it is part of",
        signalled.elapsed()
    );
    assert!(
        pair.outbound
            .logs()
            .contains("still accepting for the drain delay")
    );
}

/// A connection still in its handshake when the grace period ends is closed then, like one
/// that forwards: the drain does not wait on past the grace period for its handshake timeout
/// (set far beyond the test's own wait here).
#[tokio::test]
async fn drain_ends_at_the_grace_period_for_connections_in_their_handshake_too() {
    let Inbound {
        mut proxy,
        app: _app,
        dir: _dir,
    } = Inbound::start(
        &TestPki::new(),
        "",
        &["--drain-grace", "1s", "--handshake-timeout", "120s"],
    )
    .await;
    let silent = tokio::net::TcpStream::connect(proxy.inbound[0])
        .await
        .unwrap();
    wait_metric(&proxy, "gembok_connections_active", &[], 1.0).await;
    proxy.signal(libc::SIGTERM);
    let status = proxy.wait_exit(Duration::from_secs(60)).await;
    assert!(status.success(), "exit status {status}");
    assert!(
        proxy
            .logs()
            .contains("drain grace period over during the TLS handshake"),
        "{}",
        proxy.logs()
    );
    drop(silent); // held open, silent, until the proxy had exited
}

/// A connection through the pair that never finishes by itself: the app waits for the rest of
/// the upload and is stuck sending a 1 GiB reply that nobody reads.
async fn stuck_connection(pair: &Pair) -> tokio::net::TcpStream {
    let mut open = tokio::net::TcpStream::connect(pair.entry()).await.unwrap();
    let mut header = [0u8; 24];
    header[8..16].copy_from_slice(&(1u64 << 30).to_be_bytes());
    open.write_all(&header).await.unwrap();
    // Carried, so connected to the app: a connection the inbound has only accepted is still in
    // its handshake or connecting to the app, and a cut then never reaches the app at all.
    wait_metric(&pair.inbound, "gembok_data_path_total", &[], 1.0).await;
    open
}

/// Cut, and cut visibly: the app gets a reset instead of a clean end of its upload, and so does
/// the client on the far side (its sidecar saw the peer vanish without close_notify).
async fn assert_cut_visibly(pair: &mut Pair, mut open: tokio::net::TcpStream) {
    let ends = Duration::from_secs(10);
    let at_app = tokio::time::timeout(ends, pair.app.received.recv())
        .await
        .unwrap_or_else(|_| panic!("the app's connection did not end\n{}", pair.logs()))
        .unwrap();
    assert!(at_app.is_err(), "the app saw a clean end: {at_app:?}");
    let mut rest = Vec::new();
    let at_client = tokio::time::timeout(ends, open.read_to_end(&mut rest))
        .await
        .unwrap_or_else(|_| {
            panic!(
                "the client's connection did not end ({} bytes read)\n{}",
                rest.len(),
                pair.logs()
            )
        });
    assert_eq!(
        at_client.map_err(|e| e.kind()).err(),
        Some(std::io::ErrorKind::ConnectionReset),
        "the client saw a clean end"
    );
    assert!(
        pair.inbound.logs().contains("resetting both sides"),
        "{}",
        pair.inbound.logs()
    );
}

#[tokio::test]
async fn drain_ends_at_the_grace_period_resets_what_is_left_and_still_exits_zero() {
    let mut pair = Pair::start_args(&["--drain-grace", "1s"], &[]).await;
    let open = stuck_connection(&pair).await;
    let started = Instant::now();
    pair.inbound.signal(libc::SIGTERM);
    let status = pair.inbound.wait_exit(Duration::from_secs(10)).await;
    assert!(status.success(), "exit status {status}");
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "exited before the grace period: {:?}",
        started.elapsed()
    );
    assert!(
        pair.inbound.logs().contains("drain grace period over"),
        "{}",
        pair.inbound.logs()
    );
    assert_cut_visibly(&mut pair, open).await;
}

/// A second signal (an operator's second Ctrl-C) cuts the drain short: what is left is reset
/// at once, visibly, instead of at the end of the grace period.
#[tokio::test]
async fn a_second_signal_cuts_the_drain_short() {
    let mut pair = Pair::start_args(&["--drain-grace", "120s"], &[]).await;
    let open = stuck_connection(&pair).await;
    pair.inbound.signal(libc::SIGTERM);
    pair.inbound
        .wait_log("\"message\":\"draining\"", Duration::from_secs(5))
        .await;
    // The one connection, not the listener's accept loop too.
    let draining = pair.inbound.logs();
    let draining = draining
        .lines()
        .find(|l| l.contains("\"message\":\"draining\""))
        .unwrap();
    assert!(draining.contains("\"open\":1"), "{draining}");
    pair.inbound.signal(libc::SIGINT);
    let status = pair.inbound.wait_exit(Duration::from_secs(10)).await;
    assert!(status.success(), "exit status {status}");
    assert!(
        pair.inbound
            .logs()
            .contains("second signal: closing the remaining connections now"),
        "{}",
        pair.inbound.logs()
    );
    assert_cut_visibly(&mut pair, open).await;
}

/// The kubelet's SIGTERM during a drain the app began (`POST /shutdown`) is no second signal:
/// the drain goes on; a signal after it cuts.
#[tokio::test]
async fn a_sigterm_after_post_shutdown_keeps_draining_and_another_cuts() {
    let mut pair = Pair::start_args(&["--drain-grace", "120s"], &[]).await;
    let open = stuck_connection(&pair).await;
    let (status, _) = gembok_tests::admin::request(pair.inbound.admin, "POST", "/shutdown")
        .await
        .unwrap();
    assert_eq!(status, 202);
    pair.inbound
        .wait_log("\"message\":\"draining\"", Duration::from_secs(5))
        .await;
    pair.inbound.signal(libc::SIGTERM);
    pair.inbound
        .wait_log("already draining (POST /shutdown)", Duration::from_secs(5))
        .await;
    // Still there, still draining: the admin endpoint answers until the process ends.
    assert_eq!(
        pair.inbound.get("/live").await.0,
        200,
        "{}",
        pair.inbound.logs()
    );
    assert!(
        !pair.inbound.logs().contains("second signal"),
        "{}",
        pair.inbound.logs()
    );
    pair.inbound.signal(libc::SIGTERM);
    let status = pair.inbound.wait_exit(Duration::from_secs(10)).await;
    assert!(status.success(), "exit status {status}");
    assert!(
        pair.inbound.logs().contains("second signal"),
        "{}",
        pair.inbound.logs()
    );
    assert_cut_visibly(&mut pair, open).await;
}

/// An inbound proxy that got SIGTERM and is in a 60 s drain delay (`/ready` 503 says so).
async fn in_a_long_drain_delay() -> Inbound {
    let inbound = Inbound::start(
        &TestPki::new(),
        "",
        &["--drain-delay", "60s", "--drain-grace", "120s"],
    )
    .await;
    inbound.proxy.signal(libc::SIGTERM);
    wait_status(&inbound.proxy, "/ready", 503, Duration::from_secs(5)).await;
    inbound
}

/// A second signal during the drain delay ends the delay and the drain together.
#[tokio::test]
async fn a_second_signal_during_the_drain_delay_stops_at_once() {
    let mut delaying = in_a_long_drain_delay().await;
    let proxy = &mut delaying.proxy;
    proxy.signal(libc::SIGTERM);
    let status = proxy.wait_exit(Duration::from_secs(10)).await;
    assert!(status.success(), "exit status {status}");
    assert!(proxy.logs().contains("second signal"), "{}", proxy.logs());
}

/// The app is done calling out: `POST /shutdown` ends a drain delay that SIGTERM began (a
/// classic sidecar's Job ends its app and the kubelet's SIGTERM may have come first).
#[tokio::test]
async fn post_shutdown_ends_a_drain_delay_that_a_signal_began() {
    let mut delaying = in_a_long_drain_delay().await;
    let proxy = &mut delaying.proxy;
    let (status, _) = gembok_tests::admin::request(proxy.admin, "POST", "/shutdown")
        .await
        .unwrap();
    assert_eq!(status, 202);
    let status = proxy.wait_exit(Duration::from_secs(10)).await;
    assert!(status.success(), "exit status {status}");
    assert!(
        proxy.logs().contains("the drain delay ends"),
        "{}",
        proxy.logs()
    );
}

#[test]
fn bad_flags_exit_64_listing_every_problem() {
    let out = Command::new(bins::proxy())
        .args([
            "--inbound",
            "0.0.0.0:8443=10.0.0.1:80",
            "--outbound",
            "bad",
            "--idle-timeout",
            "forever",
        ])
        .args(["--crypto-provider", "openssl", "--max-connections=-3"])
        .args([
            "--aead",
            "chacha",
            "--record-layer",
            "openssl",
            "--record-limit",
            "0",
            "--key-exchange",
            "X448",
            "--cipher-suites",
            "TLS_AES_128_CCM_SHA256",
            "--crl",
            "/a.crl,,/b.crl",
        ])
        .args(["--frobnicate", "--tls-12"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&out.stderr);
    for flag in [
        "--inbound",
        "--outbound",
        "--idle-timeout",
        "--crypto-provider",
        "--aead",
        "--record-layer",
        "--record-limit",
        "--key-exchange",
        "--cipher-suites",
        "--crl",
        "--max-connections",
        "--cert-dir",
        "--frobnicate",
        "--tls-12",
    ] {
        assert!(
            stderr.lines().any(|l| l.trim_start().starts_with(flag)),
            "no line for {flag}:\n{stderr}"
        );
    }
    assert!(stderr.contains("did you mean --tls12?"), "{stderr}");
    assert!(stderr.contains("(14 problems)"), "{stderr}");
    // A lone unknown flag is a usage error too, and so is one given to the subcommand.
    for args in [&["--frobnicate"][..], &["wait-ready", "--frobnicate"]] {
        let out = Command::new(bins::proxy()).args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(64), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("--frobnicate: unknown flag"), "{stderr}");
    }
    // --help documents the defaults and the environment variables.
    let help = Command::new(bins::proxy()).arg("--help").output().unwrap();
    assert!(help.status.success());
    let help = String::from_utf8_lossy(&help.stdout)
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    for needle in [
        "GEMBOK_INBOUND",
        "GEMBOK_CERT_DIR",
        "[default: 10s]",
        "[default: aws-lc-rs]",
        "[default: 127.0.0.1:15700]",
    ] {
        assert!(help.contains(needle), "--help lacks {needle}");
    }
}

#[test]
fn a_value_with_a_dash_or_from_the_environment_is_named_where_it_came_from() {
    let out = Command::new(bins::proxy())
        .args(["--drain-grace", "-5s", "--workers", "0", "--frobnicate"])
        .env("GEMBOK_IDLE_TIMEOUT", "soon")
        .env_remove("GEMBOK_WORKERS")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&out.stderr);
    for line in [
        "--drain-grace: `-5s` is not a duration",
        "--workers: `0`",
        "--frobnicate: unknown flag",
        "GEMBOK_IDLE_TIMEOUT (--idle-timeout): `soon` is not a duration",
    ] {
        assert!(
            stderr.lines().any(|l| l.trim_start().starts_with(line)),
            "no line {line:?}:\n{stderr}"
        );
    }
}

#[tokio::test]
async fn environment_variables_configure_it_like_flags() {
    let pki = TestPki::new();
    let app = ExchangeApp::start().await;
    let dir = CertDir::new(&pki.workload("server"));
    let proxy = gembok_tests::proxy::ProxyBuilder::default()
        .env("GEMBOK_CERT_DIR", &dir.arg())
        .env(
            "GEMBOK_INBOUND",
            &format!("127.0.0.1:0={};127.0.0.1:0={}", app.addr, app.addr),
        )
        .env("GEMBOK_ADMIN", "127.0.0.1:0")
        .env("GEMBOK_LOG_FORMAT", "json")
        .env("GEMBOK_CRYPTO_PROVIDER", "ring")
        .start();
    proxy.ready().await;
    assert_eq!(proxy.inbound.len(), 2);
    assert_eq!(
        proxy
            .metrics()
            .await
            .sum("gembok_build_info", &[("provider", "ring")]),
        1.0
    );
}

/// A non-loopback address of this host, if it has one.
fn host_address() -> Option<std::net::IpAddr> {
    // Connecting a UDP socket sends nothing; it only picks the outgoing interface's address.
    let probe = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
    probe.connect("192.0.2.254:9").ok()?;
    probe
        .local_addr()
        .ok()
        .map(|a| a.ip())
        .filter(|ip| !ip.is_loopback() && !ip.is_unspecified())
}

#[tokio::test]
async fn post_shutdown_is_loopback_only_and_drains_like_sigterm() {
    let pki = TestPki::new();
    let app = ExchangeApp::start().await;
    let dir = CertDir::new(&pki.workload("server"));
    let mut proxy = Proxy::builder()
        .cert_dir(&dir)
        .inbound(app.addr, "")
        // The app asked to stop: a drain delay (meant for SIGTERM) does not hold the exit.
        .args([
            "--admin",
            "0.0.0.0:0",
            "--drain-delay",
            "60s",
            "--drain-grace",
            "120s",
        ])
        .start();
    proxy.ready().await;
    let port = proxy.admin.port();
    match host_address() {
        Some(ip) => {
            let (status, body) =
                gembok_tests::admin::request((ip, port).into(), "POST", "/shutdown")
                    .await
                    .unwrap();
            assert_eq!(status, 403, "{body}");
            assert_eq!(
                proxy.get("/ready").await.0,
                200,
                "a refused /shutdown must change nothing"
            );
        }
        None => eprintln!("this host has no non-loopback address: the 403 case is not exercised"),
    }
    let loopback = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    assert_eq!(
        gembok_tests::admin::request(loopback, "GET", "/shutdown")
            .await
            .unwrap()
            .0,
        405
    );
    let (status, _) = gembok_tests::admin::request(loopback, "POST", "/shutdown")
        .await
        .unwrap();
    assert_eq!(status, 202);
    let status = proxy.wait_exit(Duration::from_secs(10)).await;
    assert!(status.success(), "exit status {status}");
    assert!(proxy.logs().contains("POST /shutdown"), "{}", proxy.logs());
}

#[tokio::test]
async fn wait_ready_returns_once_the_proxy_is_ready() {
    let pki = TestPki::new();
    let app = ExchangeApp::start().await;
    let dir = CertDir::empty();
    let proxy = Proxy::builder()
        .cert_dir(&dir)
        .inbound(app.addr, "")
        .start();
    let wait = |timeout: &str| {
        tokio::process::Command::new(bins::proxy())
            .args([
                "wait-ready",
                "--admin",
                &proxy.admin.to_string(),
                "--timeout",
                timeout,
            ])
            .output()
    };
    // Not ready (no certificate): a short wait fails with the reason.
    let out = wait("300ms").await.unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("503"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A longer wait succeeds as soon as the certificate arrives.
    let waiting = tokio::spawn(wait("20s"));
    dir.swap(&pki.workload("server"));
    let out = waiting.await.unwrap().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Bad flags are a usage error.
    let out = wait("soon").await.unwrap();
    assert_eq!(out.status.code(), Some(64));
}
