//! The kTLS data path of the real `gembok-proxy`.
//!
//! Two kinds of tests:
//! - on any machine: `--ktls auto` falls back cleanly where the kernel has no kTLS (this CI
//!   host: `/proc/sys/net/ipv4/tcp_available_ulp` lacks `tls`) and `--ktls require` refuses to
//!   start there;
//! - `#[ignore]`d ones that need a kernel with kTLS. `scripts/ktls-vm.sh` boots a Debian kernel
//!   under qemu and runs them with `--ignored`; each first asserts that kTLS is really there, so
//!   none can pass by silently falling back.

use std::process::Stdio;
use std::time::Duration;

use gembok_tests::openssl::{Identity, SServer, s_client};
use gembok_tests::pair::Pair;
use gembok_tests::pki::{CertDir, TestPki, dns_name};
use gembok_tests::proxy::Proxy;
use gembok_tests::tls::Client;
use gembok_tests::traffic::{Exchange, ExchangeApp};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

fn kernel_lists_tls_ulp() -> bool {
    std::fs::read_to_string("/proc/sys/net/ipv4/tcp_available_ulp")
        .map(|s| s.split_whitespace().any(|u| u == "tls"))
        .unwrap_or(false)
}

/// Counters from `/proc/net/tls_stat` (empty where the tls module is not loaded).
fn tls_stat() -> std::collections::HashMap<String, u64> {
    std::fs::read_to_string("/proc/net/tls_stat")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            Some((it.next()?.to_owned(), it.next()?.parse().ok()?))
        })
        .collect()
}

/// Waits until the proxy's one connection has a data path, and asserts it is in user space
/// (gembok's record layer or rustls), not the kernel.
async fn wait_in_user_space(proxy: &Proxy) {
    proxy.wait_metric("gembok_data_path_total", &[], 1.0).await;
    let m = proxy.metrics().await;
    assert_eq!(m.sum("gembok_data_path_total", &[("path", "ktls")]), 0.0);
}

async fn data_path(proxy: &Proxy) -> String {
    let (status, body) = proxy.get("/ready").await;
    assert_eq!(status, 200, "{body}");
    body.lines()
        .find_map(|l| l.strip_prefix("data path: "))
        .unwrap_or_else(|| panic!("/ready does not name the data path: {body}"))
        .to_owned()
}

// === any machine ===

#[tokio::test]
async fn auto_uses_the_kernel_only_where_it_can_and_traffic_is_intact_either_way() {
    let mut pair = Pair::start().await;
    let path = data_path(&pair.inbound).await;
    let kernel = kernel_lists_tls_ulp() || path.starts_with("kTLS");
    if !kernel_lists_tls_ulp() {
        // No tls ULP registered means the module is absent or not loaded; the probe loads it if
        // it exists, so either the proxy found kTLS or it says why not.
        assert!(
            path.starts_with("kTLS") || path.starts_with("user space (kTLS unavailable"),
            "{path}"
        );
    }
    pair.exchange_intact(&path, 1, 4 << 20).await;
    for proxy in [&pair.inbound, &pair.outbound] {
        if kernel {
            proxy
                .wait_metric("gembok_data_path_total", &[("path", "ktls")], 1.0)
                .await;
        } else {
            wait_in_user_space(proxy).await;
        }
        let available = if kernel { 1.0 } else { 0.0 };
        assert_eq!(
            proxy.metrics().await.sum("gembok_ktls_available", &[]),
            available
        );
    }
}

#[tokio::test]
async fn off_keeps_every_connection_in_user_space() {
    let mut pair = Pair::start_args(&["--ktls", "off"], &["--ktls", "off"]).await;
    assert_eq!(data_path(&pair.inbound).await, "user space (--ktls off)");
    pair.exchange_intact("--ktls off", 1, 1 << 20).await;
    wait_in_user_space(&pair.inbound).await;
    wait_in_user_space(&pair.outbound).await;
    assert_eq!(
        pair.inbound
            .metrics()
            .await
            .sum("gembok_ktls_fallbacks_total", &[]),
        0.0
    );
}

#[tokio::test]
async fn require_refuses_to_start_without_kernel_support() {
    let pki = TestPki::new();
    let dir = CertDir::new(&pki.workload("server"));
    if kernel_lists_tls_ulp() {
        // A kTLS kernel satisfies `require`.
        let proxy = Proxy::builder()
            .cert_dir(&dir)
            .inbound(line_app().await, "")
            .args(["--ktls", "require"])
            .start();
        proxy.ready().await;
        assert_ktls(&proxy).await;
        return;
    }
    // With another problem on the command line, both are reported at once.
    let out = tokio::process::Command::new(gembok_tests::bins::proxy())
        .args([
            "--ktls",
            "require",
            "--cert-dir",
            &dir.arg(),
            "--inbound",
            "127.0.0.1:0=127.0.0.1:9",
            "--idle-timeout",
            "soon",
        ])
        .args(["--admin", "127.0.0.1:0"])
        .stdin(Stdio::null())
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{stderr}");
    assert!(
        stderr.contains("--ktls: require, but this kernel cannot do it"),
        "{stderr}"
    );
    assert!(stderr.contains("--idle-timeout"), "{stderr}");
    assert!(
        stderr.contains("TCP_ULP"),
        "the message names the failed step: {stderr}"
    );
}

// === a kernel with kTLS (scripts/ktls-vm.sh) ===

/// Fails the test unless the kernel has kTLS: these tests must never pass by falling back.
async fn assert_ktls(proxy: &Proxy) {
    let path = data_path(proxy).await;
    assert!(
        path.starts_with("kTLS ("),
        "this test needs a kernel with kTLS; the proxy says: {path}"
    );
}

/// The Landlock sandbox (`proxy/src/sandbox.rs`) on the VM's Debian kernels, where kTLS runs:
/// set up, and covering every thread (jemalloc's purge thread, started before it, included)
/// from Linux 7.0 on, whose Landlock can restrict a whole process. The host's kernel checks the
/// sandbox's effect (`tests/tests/proxy/sandbox.rs`); this checks it on the kernels we ship kTLS for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs kTLS: run by scripts/ktls-vm.sh"]
async fn the_ktls_sidecars_run_sandboxed() {
    let mut pair = Pair::start().await;
    assert_ktls(&pair.inbound).await;
    pair.exchange_intact("sandboxed kTLS pair", 1, 1 << 20)
        .await;
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let major: u32 = release
        .split('.')
        .next()
        .and_then(|m| m.parse().ok())
        .unwrap_or(0);
    for proxy in [&pair.inbound, &pair.outbound] {
        let logs = proxy.logs();
        assert!(logs.contains("sandboxed (Landlock)"), "{logs}");
        let every_thread = !logs.contains("but jemalloc's purge thread");
        assert_eq!(every_thread, major >= 7, "kernel {release}: {logs}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs kTLS: run by scripts/ktls-vm.sh"]
async fn a_ktls_pair_carries_large_transfers_both_ways_intact() {
    let before = tls_stat();
    let mut pair = Pair::start().await;
    assert_ktls(&pair.inbound).await;
    pair.exchange_intact("kTLS pair", 1, 32 << 20).await;
    for proxy in [&pair.inbound, &pair.outbound] {
        proxy
            .wait_metric("gembok_data_path_total", &[("path", "ktls")], 1.0)
            .await;
        proxy
            .wait_metric("gembok_connections_closed_total", &[("end", "clean")], 1.0)
            .await;
    }
    // The kernel carried it: two sockets (one per sidecar) got TX and RX keys.
    let after = tls_stat();
    let grew = |k: &str| after.get(k).copied().unwrap_or(0) - before.get(k).copied().unwrap_or(0);
    assert!(
        grew("TlsTxSw") >= 2 && grew("TlsRxSw") >= 2,
        "tls_stat before {before:?} after {after:?}"
    );
    assert_eq!(grew("TlsDecryptError"), 0, "{after:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs kTLS: run by scripts/ktls-vm.sh"]
async fn many_concurrent_ktls_connections_stay_intact() {
    let mut pair = Pair::start().await;
    assert_ktls(&pair.inbound).await;
    let exchanges: Vec<Exchange> = (0..40u64)
        .map(|id| Exchange {
            id,
            send_len: (id * 37_813) % (1 << 20),
            send_seed: id,
            reply_len: (id * 91_121) % (1 << 20),
            reply_seed: id + 1000,
        })
        .collect();
    let entry = pair.entry();
    let tasks: Vec<_> = exchanges
        .iter()
        .copied()
        .map(|x| tokio::spawn(async move { (x, x.run(entry).await) }))
        .collect();
    for t in tasks {
        let (x, got) = t.await.unwrap();
        let got =
            got.unwrap_or_else(|e| panic!("connection {} failed: {e}\n{}", x.id, pair.logs()));
        assert_eq!(got.received, x.expected_reply(), "connection {}", x.id);
    }
    for _ in &exchanges {
        let got = pair.app.received.recv().await.unwrap().unwrap();
        assert_eq!(
            got.stream,
            exchanges[got.id as usize].expected_at_app(),
            "connection {}",
            got.id
        );
    }
    // Every connection is counted on some path; each one on the kernel's, or say why not.
    let metrics = pair
        .inbound
        .wait_metric("gembok_data_path_total", &[], 40.0)
        .await;
    assert_eq!(
        metrics.sum("gembok_data_path_total", &[("path", "ktls")]),
        40.0,
        "\n{}\n{}\nlogs:\n{}",
        metrics.show("gembok_data_path_total"),
        metrics.show("gembok_ktls_fallbacks_total"),
        pair.logs()
    );
}

#[tokio::test]
#[ignore = "needs kTLS: run by scripts/ktls-vm.sh"]
async fn ktls_half_closes_exactly_in_both_orders() {
    // The app answers after the client's FIN: FIN → close_notify through the kernel → FIN.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let target = listener.local_addr().unwrap();
    let app = tokio::spawn(async move {
        let mut seen = Vec::new();
        for _ in 0..2 {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut first = [0u8; 1];
            s.read_exact(&mut first).await.unwrap();
            if first[0] == b'a' {
                let mut rest = Vec::new();
                s.read_to_end(&mut rest).await.unwrap();
                s.write_all(b"reply after your FIN").await.unwrap();
                s.shutdown().await.unwrap();
                seen.push(rest);
            } else {
                s.write_all(b"greeting").await.unwrap();
                s.shutdown().await.unwrap();
                let mut rest = Vec::new();
                s.read_to_end(&mut rest).await.unwrap();
                seen.push(rest);
            }
        }
        seen
    });
    let pair = Pair::start_with(target, ExchangeApp::start().await, &[]).await;
    assert_ktls(&pair.inbound).await;

    let mut c = TcpStream::connect(pair.entry()).await.unwrap();
    c.write_all(b"a: request").await.unwrap();
    c.shutdown().await.unwrap();
    let mut reply = Vec::new();
    c.read_to_end(&mut reply).await.unwrap();
    assert_eq!(reply, b"reply after your FIN");

    let mut c = TcpStream::connect(pair.entry()).await.unwrap();
    c.write_all(b"b").await.unwrap();
    let mut greeting = Vec::new();
    c.read_to_end(&mut greeting).await.unwrap();
    assert_eq!(greeting, b"greeting");
    c.write_all(b"data after the server's FIN").await.unwrap();
    c.shutdown().await.unwrap();

    assert_eq!(
        app.await.unwrap(),
        vec![
            b": request".to_vec(),
            b"data after the server's FIN".to_vec()
        ]
    );
    pair.inbound
        .wait_metric("gembok_connections_closed_total", &[("end", "clean")], 2.0)
        .await;
    pair.inbound
        .wait_metric("gembok_data_path_total", &[("path", "ktls")], 2.0)
        .await;
}

#[tokio::test]
#[ignore = "needs kTLS: run by scripts/ktls-vm.sh"]
async fn a_fin_without_close_notify_on_a_ktls_socket_is_a_truncation() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let target = listener.local_addr().unwrap();
    let app = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 1024];
        loop {
            match s.read(&mut buf).await {
                Ok(0) => return Ok(got),
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) => return Err((e.kind(), got)),
            }
        }
    });
    let pair = Pair::start_with(target, ExchangeApp::start().await, &[]).await;
    assert_ktls(&pair.inbound).await;
    let client = Client::new(
        pair.pki.root_pem(),
        Some(&pair.pki.workload("client")),
        false,
    );
    let mut tls = client
        .connect(pair.inbound.inbound[0], &dns_name("server"))
        .await
        .unwrap();
    tls.write_all(b"half").await.unwrap();
    tls.flush().await.unwrap();
    pair.inbound
        .wait_metric("gembok_bytes_total", &[("flow", "peer_to_app")], 4.0)
        .await;
    let (mut tcp, _) = tls.into_inner();
    tcp.shutdown().await.unwrap(); // FIN, no close_notify
    match app.await.unwrap() {
        Err((std::io::ErrorKind::ConnectionReset, got)) => assert_eq!(got, b"half"),
        other => panic!("the app must see a reset: {other:?}"),
    }
    pair.inbound
        .wait_metric("gembok_truncations_total", &[], 1.0)
        .await;
}

/// A record the kernel cannot open ends the connection with the alert gembok's record layer
/// would send (the same test runs on the user-space paths in `proxy/records.rs`), and the app
/// sees a reset. Before, the kernel's `EBADMSG` ended it with no alert at all, uncounted; and on
/// Linux 7.3, which signals an oversized header as a socket error alone (no readable record),
/// the connection sat until the idle timeout (the proxy's `ErrorWatch` wakes the reader now).
#[tokio::test]
#[ignore = "needs kTLS: run by scripts/ktls-vm.sh"]
async fn a_forged_record_on_a_ktls_socket_gets_a_fatal_alert() {
    use gembok_tests::tls::{forged_record, send_forged};
    use rustls::AlertDescription;

    let pki = TestPki::new();
    let dir = CertDir::new(&pki.workload("server"));
    let app = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let proxy = Proxy::builder()
        .cert_dir(&dir)
        .inbound(app.local_addr().unwrap(), "")
        .start();
    assert_ktls(&proxy).await;
    let client = Client::new(pki.root_pem(), Some(&pki.workload("client")), false);
    let cases = [
        (
            forged_record(40, &[0x5a; 40]),
            AlertDescription::BadRecordMac,
            "bad_record_mac",
        ),
        (
            forged_record(0x5000, &[]),
            AlertDescription::RecordOverflow,
            "bad_record",
        ),
    ];
    for (i, (forged, alert, reason)) in cases.iter().cloned().enumerate() {
        let got = send_forged(
            &client,
            proxy.inbound[0],
            &dns_name("server"),
            &app,
            &forged,
        )
        .await;
        proxy
            .wait_metric(
                "gembok_data_path_total",
                &[("path", "ktls")],
                i as f64 + 1.0,
            )
            .await;
        got.assert_refused(alert, "kTLS");
        proxy
            .wait_metric(
                "gembok_ktls_control_closes_total",
                &[("reason", reason)],
                1.0,
            )
            .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs kTLS: run by scripts/ktls-vm.sh"]
async fn a_ktls_sidecar_talks_to_a_user_space_peer_both_ways_round() {
    for (inbound, outbound) in [
        (["--ktls", "auto"], ["--ktls", "off"]),
        (["--ktls", "off"], ["--ktls", "auto"]),
    ] {
        let mut pair = Pair::start_args(&inbound, &outbound).await;
        pair.exchange_intact(&format!("{inbound:?}/{outbound:?}"), 7, 8 << 20)
            .await;
        let (kernel_side, user_side) = if inbound[1] == "auto" {
            (&pair.inbound, &pair.outbound)
        } else {
            (&pair.outbound, &pair.inbound)
        };
        assert_ktls(kernel_side).await;
        kernel_side
            .wait_metric("gembok_data_path_total", &[("path", "ktls")], 1.0)
            .await;
        wait_in_user_space(user_side).await;
    }
}

/// An app that reads one line and answers it, then closes.
async fn line_app() -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut line = Vec::new();
                let mut b = [0u8; 1];
                while s.read_exact(&mut b).await.is_ok() && b[0] != b'\n' {
                    line.push(b[0]);
                }
                let _ = s
                    .write_all(format!("app got: {}\n", String::from_utf8_lossy(&line)).as_bytes())
                    .await;
                let _ = s.shutdown().await;
            });
        }
    });
    addr
}

#[tokio::test]
#[ignore = "needs kTLS: run by scripts/ktls-vm.sh"]
async fn openssl_s_client_reaches_a_ktls_inbound_with_every_cipher_and_tls12() {
    let pki = TestPki::new();
    let dir = CertDir::new(&pki.workload("server"));
    let proxy = Proxy::builder()
        .cert_dir(&dir)
        .inbound(line_app().await, "")
        .args(["--tls12"])
        .start();
    proxy.ready().await;
    assert_ktls(&proxy).await;
    let cases: [(&[&str], &str); 4] = [
        (
            &["-tls1_3", "-ciphersuites", "TLS_AES_128_GCM_SHA256"],
            "TLS_AES_128_GCM_SHA256",
        ),
        (
            &["-tls1_3", "-ciphersuites", "TLS_AES_256_GCM_SHA384"],
            "TLS_AES_256_GCM_SHA384",
        ),
        (
            &["-tls1_3", "-ciphersuites", "TLS_CHACHA20_POLY1305_SHA256"],
            "TLS_CHACHA20_POLY1305_SHA256",
        ),
        (
            &["-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-GCM-SHA256"],
            "ECDHE-ECDSA-AES128-GCM-SHA256",
        ),
    ];
    let id = Identity::new(&pki, &pki.workload("client"));
    for (n, (flags, suite)) in cases.iter().enumerate() {
        let flags: Vec<&str> = ["-brief"].iter().chain(flags.iter()).copied().collect();
        let out = s_client(
            &id,
            proxy.inbound[0],
            &dns_name("server"),
            &flags,
            b"ping\n",
        )
        .await;
        let (stdout, stderr) = (
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
        );
        assert!(
            stdout.contains("app got: ping"),
            "{suite}: stdout {stdout:?}\nstderr {stderr}"
        );
        assert!(stderr.contains(suite), "{suite}: {stderr}");
        proxy
            .wait_metric(
                "gembok_data_path_total",
                &[("path", "ktls")],
                (n + 1) as f64,
            )
            .await;
    }
    assert_eq!(
        proxy
            .metrics()
            .await
            .sum("gembok_ktls_fallbacks_total", &[]),
        0.0
    );
}

#[tokio::test]
#[ignore = "needs kTLS: run by scripts/ktls-vm.sh"]
async fn a_ktls_outbound_reaches_openssl_s_server() {
    let pki = TestPki::new();
    let server = SServer::reversing(&pki, "-tls1_3").await;
    let addr = server.addr;
    let client_dir = CertDir::new(&pki.workload("client"));
    let outbound = Proxy::builder()
        .cert_dir(&client_dir)
        .outbound(
            &addr.to_string(),
            &format!(",server-name={}", dns_name("server")),
        )
        .start();
    outbound.ready().await;
    assert_ktls(&outbound).await;
    let mut app = TcpStream::connect(outbound.outbound[0]).await.unwrap();
    app.write_all(b"hello kernel\n").await.unwrap();
    let mut reply = vec![0u8; 13];
    tokio::time::timeout(Duration::from_secs(30), app.read_exact(&mut reply))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(reply, b"lenrek olleh\n");
    outbound
        .wait_metric("gembok_data_path_total", &[("path", "ktls")], 1.0)
        .await;
}

/// Whether the kernel under test can rekey a kTLS socket (Linux 6.14 and later).
/// `scripts/ktls-vm.sh` knows which kernel it booted and says so in `GEMBOK_EXPECT_KTLS_REKEY`;
/// the proxy's probe must agree, so neither branch below can be taken by mistake.
async fn kernel_rekeys(proxy: &Proxy) -> bool {
    let probed = proxy
        .metrics()
        .await
        .sum("gembok_ktls_rekey_available", &[])
        == 1.0;
    match std::env::var("GEMBOK_EXPECT_KTLS_REKEY").as_deref() {
        Ok("1") => assert!(probed, "this kernel should rekey, the probe says it cannot"),
        Ok("0") => assert!(
            !probed,
            "this kernel should not rekey, the probe says it can"
        ),
        _ => {}
    }
    let path = data_path(proxy).await;
    assert_eq!(
        path.contains("KeyUpdate followed in the kernel"),
        probed,
        "{path}"
    );
    probed
}

/// An app that answers every line it reads with `app got: LINE`, until EOF.
async fn line_echo_app() -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (r, mut w) = s.into_split();
                let mut lines = tokio::io::BufReader::new(r);
                let mut line = String::new();
                while tokio::io::AsyncBufReadExt::read_line(&mut lines, &mut line)
                    .await
                    .is_ok_and(|n| n > 0)
                {
                    let reply = format!("app got: {line}");
                    if w.write_all(reply.as_bytes()).await.is_err() {
                        return;
                    }
                    line.clear();
                }
                let _ = w.shutdown().await;
            });
        }
    });
    addr
}

/// Reads one line from a TLS stream.
async fn read_line<S: AsyncReadExt + Unpin>(s: &mut S) -> std::io::Result<String> {
    let mut line = Vec::new();
    let mut b = [0u8; 1];
    while line.last() != Some(&b'\n') {
        s.read_exact(&mut b).await?;
        line.push(b[0]);
    }
    Ok(String::from_utf8_lossy(&line).into_owned())
}

/// A peer's KeyUpdate (rustls' `refresh_traffic_keys`, which also asks us to update): a kernel
/// that can be rekeyed follows it and answers with our own KeyUpdate, and traffic continues both
/// ways under the new keys; an older kernel cannot, and the session ends with a fatal alert
/// (not a close_notify that would pass for the end of the data), counted.
#[tokio::test]
#[ignore = "needs kTLS: run by scripts/ktls-vm.sh"]
async fn a_key_update_rekeys_the_kernel_or_closes_cleanly() {
    let before = tls_stat();
    let pki = TestPki::new();
    let dir = CertDir::new(&pki.workload("server"));
    let proxy = Proxy::builder()
        .cert_dir(&dir)
        .inbound(line_echo_app().await, "")
        .start();
    proxy.ready().await;
    assert_ktls(&proxy).await;
    let rekeys = kernel_rekeys(&proxy).await;
    let client = Client::new(pki.root_pem(), Some(&pki.workload("client")), false);
    let mut tls = client
        .connect(proxy.inbound[0], &dns_name("server"))
        .await
        .unwrap();
    tls.write_all(b"before\n").await.unwrap();
    tls.flush().await.unwrap();
    assert_eq!(read_line(&mut tls).await.unwrap(), "app got: before\n");
    proxy
        .wait_metric("gembok_data_path_total", &[("path", "ktls")], 1.0)
        .await;

    // KeyUpdate(update_requested), then more data under the client's new key.
    tls.get_mut().1.refresh_traffic_keys().unwrap();
    tls.write_all(b"after\n").await.unwrap();
    tls.flush().await.unwrap();

    if rekeys {
        // The reply was encrypted under the proxy's next key, after its own KeyUpdate: the
        // client only reads it if both directions were rotated correctly.
        let reply = tokio::time::timeout(Duration::from_secs(30), read_line(&mut tls))
            .await
            .expect("a reply after the key update")
            .expect("the reply decrypts under the rotated keys");
        assert_eq!(reply, "app got: after\n");
        // A second round, to be sure the new keys stay in use.
        tls.get_mut().1.refresh_traffic_keys().unwrap();
        tls.write_all(b"again\n").await.unwrap();
        tls.flush().await.unwrap();
        assert_eq!(read_line(&mut tls).await.unwrap(), "app got: again\n");
        tls.shutdown().await.unwrap();
        let mut rest = Vec::new();
        tls.read_to_end(&mut rest).await.unwrap();
        for key in ["receive", "send"] {
            proxy
                .wait_metric("gembok_ktls_key_updates_total", &[("key", key)], 2.0)
                .await;
        }
        proxy
            .wait_metric("gembok_connections_closed_total", &[("end", "clean")], 1.0)
            .await;
        let after = tls_stat();
        let grew =
            |k: &str| after.get(k).copied().unwrap_or(0) - before.get(k).copied().unwrap_or(0);
        assert!(
            grew("TlsRxRekeyOk") >= 2 && grew("TlsTxRekeyOk") >= 2,
            "the kernel's rekey counters did not move: before {before:?} after {after:?}"
        );
        assert_eq!(grew("TlsDecryptError"), 0, "{after:?}");
    } else {
        // The proxy ends the session with a fatal alert: an explicit failure, neither a silent
        // truncation nor a close_notify.
        let mut rest = Vec::new();
        let ended = tokio::time::timeout(Duration::from_secs(30), tls.read_to_end(&mut rest))
            .await
            .unwrap();
        let err = ended.expect_err("the session must fail, not end cleanly");
        assert!(
            err.to_string().contains("InternalError"),
            "the client must get the proxy's internal_error alert: {err}"
        );
        assert!(
            rest.is_empty(),
            "nothing after the KeyUpdate reached the app: {rest:?}"
        );
        proxy
            .wait_metric(
                "gembok_ktls_control_closes_total",
                &[("reason", "key_update")],
                1.0,
            )
            .await;
    }
}

/// Our own sending key reaches its record budget (`--record-limit`, lowered here so that
/// a few MiB pass it many times): a kernel that can be rekeyed rotates it with a KeyUpdate and
/// the traffic continues intact, against a kTLS peer and a user-space (rustls) one alike; an
/// older kernel fails the connection at the limit (alert, then resets down the line) instead of
/// weakening it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs kTLS: run by scripts/ktls-vm.sh"]
async fn the_sending_key_is_rotated_at_the_record_budget() {
    let limit = ["--record-limit", "64"];
    for (inbound_extra, outbound_extra) in [(&[][..], &[][..]), (&[][..], &["--ktls", "off"][..])] {
        let inbound_args: Vec<&str> = limit.iter().chain(inbound_extra).copied().collect();
        let outbound_args: Vec<&str> = limit.iter().chain(outbound_extra).copied().collect();
        let mut pair = Pair::start_args(&inbound_args, &outbound_args).await;
        assert_ktls(&pair.inbound).await;
        if !kernel_rekeys(&pair.inbound).await {
            // 64 records of 16 KiB: a 4 MiB reply cannot fit under one key.
            let x = Exchange {
                id: 1,
                send_len: 1024,
                send_seed: 1,
                reply_len: 4 << 20,
                reply_seed: 2,
            };
            let result = tokio::time::timeout(Duration::from_secs(60), x.run(pair.entry()))
                .await
                .expect("the connection ended");
            let err = result.expect_err("the reply cannot complete past the record limit");
            assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset, "{err}");
            pair.inbound
                .wait_metric(
                    "gembok_ktls_control_closes_total",
                    &[("reason", "record_limit")],
                    1.0,
                )
                .await;
            return;
        }
        // 5 MiB each way is at least 320 records (at most 16 KiB each) each way. A key seals
        // 64 records and is rotated before the 65th, so that is four rotations or more per
        // side. (4 MiB could be exactly 256 full records: only three rotations.)
        pair.exchange_intact("record budget", 5, 5 << 20).await;
        pair.inbound
            .wait_metric("gembok_connections_closed_total", &[("end", "clean")], 1.0)
            .await;
        let m = pair.inbound.metrics().await;
        let sent = m.sum("gembok_ktls_key_updates_total", &[("key", "send")]);
        assert!(sent >= 4.0, "inbound rotated its key {sent} times");
        if outbound_extra.is_empty() {
            // The kTLS outbound rotated too, and the inbound followed each of its KeyUpdates.
            let m = pair.outbound.metrics().await;
            let sent = m.sum("gembok_ktls_key_updates_total", &[("key", "send")]);
            assert!(sent >= 4.0, "outbound rotated its key {sent} times");
            let followed = pair
                .inbound
                .metrics()
                .await
                .sum("gembok_ktls_key_updates_total", &[("key", "receive")]);
            assert_eq!(
                followed, sent,
                "every KeyUpdate of the outbound was followed"
            );
        }
    }
}
