//! Bytes go through the sidecar pair intact, in both directions at once.

use std::process::Command;
use std::time::Duration;

use gembok_tests::traffic::Exchange;
use rand::{Rng, SeedableRng};

use crate::support::{Pair, assert_the_app_is_turned_away, wait_metric};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn carries_256_mib_each_way_at_once_intact() {
    let mut pair = Pair::start().await;
    let x = Exchange {
        id: 1,
        send_len: 256 << 20,
        send_seed: 11,
        reply_len: 256 << 20,
        reply_seed: 22,
    };
    let client = tokio::time::timeout(Duration::from_secs(240), x.run(pair.entry()))
        .await
        .expect("transfer finished")
        .expect("client side");
    let at_app = pair.app.received.recv().await.unwrap().expect("app side");
    assert_eq!(
        at_app.stream,
        x.expected_at_app(),
        "app → peer direction corrupted"
    );
    assert_eq!(
        client.received,
        x.expected_reply(),
        "peer → app direction corrupted"
    );
    assert_eq!(client.sent, x.expected_at_app());

    // The byte counters saw the same: 24-byte header + payload up, reply down.
    let up = (24 + (256u64 << 20)) as f64;
    let down = (256u64 << 20) as f64;
    const BYTES: &str = "gembok_bytes_total";
    wait_metric(&pair.outbound, BYTES, &[("flow", "app_to_peer")], up).await;
    wait_metric(&pair.outbound, BYTES, &[("flow", "peer_to_app")], down).await;
    // On the inbound side our client is the peer and the server is the app.
    wait_metric(&pair.inbound, BYTES, &[("flow", "peer_to_app")], up).await;
    wait_metric(&pair.inbound, BYTES, &[("flow", "app_to_peer")], down).await;
    for proxy in [&pair.outbound, &pair.inbound] {
        wait_metric(
            proxy,
            "gembok_connections_closed_total",
            &[("end", "clean")],
            1.0,
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn carries_200_concurrent_connections_of_random_sizes() {
    let mut pair = Pair::start().await;
    let mut rng = rand::rngs::SmallRng::seed_from_u64(7);
    // Edge sizes first (empty, one byte, around a TLS record), then random up to 8 MiB.
    let edges = [0u64, 1, 16 * 1024 - 1, 16 * 1024, 16 * 1024 + 1];
    let exchanges: Vec<Exchange> = (0..200u64)
        .map(|id| {
            let pick = |rng: &mut rand::rngs::SmallRng| match id as usize {
                i if i < edges.len() => edges[i],
                _ => rng.random_range(0..=8u64 << 20),
            };
            Exchange {
                id,
                send_len: pick(&mut rng),
                send_seed: rng.random(),
                reply_len: pick(&mut rng),
                reply_seed: rng.random(),
            }
        })
        .collect();
    let entry = pair.entry();
    let tasks: Vec<_> = exchanges
        .iter()
        .copied()
        .map(|x| tokio::spawn(async move { (x, x.run(entry).await) }))
        .collect();
    for t in tasks {
        let (x, result) = t.await.unwrap();
        let result =
            result.unwrap_or_else(|e| panic!("connection {} failed: {e}\n{}", x.id, pair.logs()));
        assert_eq!(
            result.received,
            x.expected_reply(),
            "reply of connection {} corrupted",
            x.id
        );
    }
    let mut seen = vec![false; exchanges.len()];
    for _ in 0..exchanges.len() {
        let got = pair.app.received.recv().await.unwrap().expect("app side");
        let x = exchanges[got.id as usize];
        assert_eq!(
            got.stream,
            x.expected_at_app(),
            "upload of connection {} corrupted",
            x.id
        );
        assert!(
            !std::mem::replace(&mut seen[got.id as usize], true),
            "connection {} seen twice",
            x.id
        );
    }
    wait_metric(
        &pair.inbound,
        "gembok_connections_closed_total",
        &[("end", "clean")],
        200.0,
    )
    .await;
    wait_metric(&pair.inbound, "gembok_connections_active", &[], 0.0).await;
    wait_metric(
        &pair.outbound,
        "gembok_connections_closed_total",
        &[("end", "clean")],
        200.0,
    )
    .await;
}

/// The other crypto provider carries traffic just as well (ring has no ML-KEM, so the pair
/// agrees on X25519), and mixed providers interoperate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ring_provider_carries_traffic_intact() {
    for (inbound, outbound) in [
        ("ring", "ring"),
        ("aws-lc-rs", "ring"),
        ("ring", "aws-lc-rs"),
    ] {
        let mut pair = Pair::start_args(
            &["--crypto-provider", inbound],
            &["--crypto-provider", outbound],
        )
        .await;
        pair.exchange_intact(&format!("{inbound}/{outbound}"), 3, 8 << 20)
            .await;
        let m = pair.outbound.metrics().await;
        assert_eq!(
            m.sum(
                "gembok_tls_handshakes_total",
                &[("version", "TLSv1_3"), ("kx", "X25519")]
            ),
            1.0,
            "{inbound}/{outbound}:\n{}",
            m.show("gembok_tls_handshakes_total")
        );
        assert_eq!(m.sum("gembok_build_info", &[("provider", outbound)]), 1.0);
    }
}

/// `--key-exchange` decides the group: an outbound that offers X25519 alone gets it from a
/// default inbound (both count it), and an inbound that accepts post-quantum groups only refuses
/// an outbound on ring (which has no ML-KEM) before any byte reaches the app.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_key_exchange_groups_are_the_ones_configured() {
    let mut pair = Pair::start_args(&[], &["--key-exchange", "X25519"]).await;
    pair.exchange_intact("X25519 only", 1, 1 << 20).await;
    for (side, proxy) in [("inbound", &pair.inbound), ("outbound", &pair.outbound)] {
        let m = proxy.metrics().await;
        let handshakes = |kx| m.sum("gembok_tls_handshakes_total", &[("kx", kx)]);
        assert_eq!(handshakes("X25519"), 1.0, "{side}");
        assert_eq!(handshakes("X25519MLKEM768"), 0.0, "{side}");
    }

    let pair = Pair::start_args(
        &["--key-exchange", "MLKEM1024,X25519MLKEM768"],
        &["--crypto-provider", "ring"],
    )
    .await;
    assert_the_app_is_turned_away(pair.entry()).await;
    wait_metric(
        &pair.inbound,
        "gembok_handshake_failures_total",
        &[("reason", "incompatible")],
        1.0,
    )
    .await;
    wait_metric(
        &pair.outbound,
        "gembok_handshake_failures_total",
        &[("reason", "peer_rejected")],
        1.0,
    )
    .await;
    assert_eq!(
        pair.inbound.metrics().await.sum("gembok_bytes_total", &[]),
        0.0
    );
}

/// `--aead` picks the library that protects records, independently of the provider's key
/// exchange: aws-lc-rs still negotiates X25519MLKEM768 while ring seals the records, and the
/// choice is visible in `gembok_build_info`. Left to `auto`, aws-lc-rs hands records to ring
/// exactly on x86-64 CPUs with VAES and AVX2 but not AVX-512 (read here from /proc/cpuinfo).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_aead_library_is_chosen_apart_from_the_key_exchange() {
    let flags = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let flags: Vec<&str> = flags
        .lines()
        .find(|l| l.starts_with("flags"))
        .map(|l| l.split_whitespace().collect())
        .unwrap_or_default();
    let has = |f: &str| flags.contains(&f);
    let auto = if cfg!(target_arch = "x86_64")
        && has("vaes")
        && has("vpclmulqdq")
        && has("avx2")
        && !["avx512f", "avx512dq", "avx512bw", "avx512vl"]
            .iter()
            .all(|f| has(f))
    {
        "ring"
    } else {
        "aws-lc-rs"
    };
    for (inbound, outbound, expected_in, expected_out) in [
        ("ring", "ring", "ring", "ring"),
        ("aws-lc-rs", "ring", "aws-lc-rs", "ring"),
        ("auto", "aws-lc-rs", auto, "aws-lc-rs"),
    ] {
        let mut pair = Pair::start_args(&["--aead", inbound], &["--aead", outbound]).await;
        pair.exchange_intact(&format!("{inbound}/{outbound}"), 4, 4 << 20)
            .await;
        let out = pair.outbound.metrics().await;
        assert_eq!(
            out.sum(
                "gembok_tls_handshakes_total",
                &[("version", "TLSv1_3"), ("kx", "X25519MLKEM768")]
            ),
            1.0,
            "{inbound}/{outbound}"
        );
        let info = |m: &gembok_tests::admin::Metrics, aead: &str| {
            m.sum(
                "gembok_build_info",
                &[("provider", "aws-lc-rs"), ("aead", aead)],
            )
        };
        assert_eq!(info(&out, expected_out), 1.0, "{inbound}/{outbound}");
        let inb = pair.inbound.metrics().await;
        assert_eq!(info(&inb, expected_in), 1.0, "{inbound}/{outbound}");
    }
}

/// An outbound route to a host name looks it up once per `--dns-cache` period, not for every
/// connection (in a pod each lookup walks the search domains first); `--dns-cache 0` looks up
/// every time.
#[tokio::test]
async fn an_outbound_host_name_is_looked_up_once_per_cache_period() {
    use gembok_tests::pair::Inbound;
    use gembok_tests::pki::{CertDir, TestPki, dns_name};
    use gembok_tests::proxy::Proxy;

    let pki = TestPki::new();
    let Inbound {
        mut app,
        proxy: inbound,
        dir: _server_dir,
    } = Inbound::start(&pki, "", &[]).await;
    let client_dir = CertDir::new(&pki.workload("client"));
    let port = inbound.inbound[0].port();
    for (cache, lookups) in [("5s", 1.0), ("0", 4.0)] {
        let outbound = Proxy::builder()
            .cert_dir(&client_dir)
            .outbound(
                &format!("localhost:{port}"),
                &format!(",server-name={}", dns_name("server")),
            )
            .args(["--dns-cache", cache])
            .start();
        outbound.ready().await;
        for id in 0..4 {
            let x = Exchange {
                id,
                send_len: 100,
                send_seed: 1,
                reply_len: 100,
                reply_seed: 2,
            };
            let got = x.run(outbound.outbound[0]).await.expect("exchange");
            assert_eq!(got.received, x.expected_reply());
            app.received.recv().await.unwrap().unwrap();
        }
        let m = outbound.metrics().await;
        assert_eq!(
            m.sum("gembok_dns_lookups_total", &[("result", "ok")]),
            lookups,
            "--dns-cache {cache}"
        );
        assert_eq!(
            m.sum("gembok_dns_lookups_total", &[("result", "failed")]),
            0.0
        );
    }
}

/// `[::]`, the injector's listen address, serves IPv4 and IPv6 peers alike (single-stack
/// IPv4, single-stack IPv6 and dual-stack pods): mTLS on the inbound and the admin endpoints
/// over both families.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wildcard_ipv6_listener_serves_ipv4_and_ipv6_peers() {
    use gembok_tests::pki::{CertDir, TestPki, dns_name};
    use gembok_tests::traffic::ExchangeApp;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let pki = TestPki::new();
    let app = ExchangeApp::start().await;
    let dir = CertDir::new(&pki.workload("server"));
    let proxy = gembok_tests::proxy::Proxy::builder()
        .cert_dir(&dir)
        .args(["--inbound", &format!("[::]:0={}", app.addr)])
        .args(["--admin", "[::]:0"])
        .start();
    proxy.ready().await;
    let client =
        gembok_tests::tls::Client::new(pki.root_pem(), Some(&pki.workload("client")), false);
    for ip in ["127.0.0.1", "::1"] {
        let ip: std::net::IpAddr = ip.parse().unwrap();
        let admin = std::net::SocketAddr::new(ip, proxy.admin.port());
        let (status, body) = gembok_tests::admin::request(admin, "GET", "/ready")
            .await
            .unwrap();
        assert_eq!(status, 200, "{ip}: {body}");
        let inbound = std::net::SocketAddr::new(ip, proxy.inbound[0].port());
        let mut tls = client.connect(inbound, &dns_name("server")).await.unwrap();
        tls.write_all(&[0u8; 24]).await.unwrap();
        tls.shutdown().await.unwrap();
        let mut rest = Vec::new();
        tls.read_to_end(&mut rest).await.unwrap();
    }
    assert_eq!(
        proxy
            .metrics()
            .await
            .sum("gembok_connections_closed_total", &[("end", "clean")]),
        2.0
    );
}

/// `[::]` stays dual-stack where the host makes IPv6 sockets IPv6-only by default
/// (`net.ipv6.bindv6only = 1`): the proxy clears `IPV6_V6ONLY` itself. Run in a network
/// namespace of its own (root only), reached with `nsenter` and curl over IPv4.
#[test]
fn a_wildcard_ipv6_listener_stays_dual_stack_where_the_host_says_ipv6_only() {
    use gembok_tests::netns;
    if !netns::available() {
        eprintln!("skipped: needs root for a network namespace");
        return;
    }
    use gembok_tests::pki::{CertDir, TestPki};
    let pki = TestPki::new();
    let dir = CertDir::new(&pki.workload("server"));
    let mut proxy = netns::spawn_ipv6_only(
        Command::new(gembok_tests::bins::proxy())
            .args(["--cert-dir", &dir.arg(), "--admin", "[::]:15700"])
            .args(["--inbound", "[::]:8443=127.0.0.1:9"]),
    )
    .unwrap();
    let answer = netns::curl_status(&proxy, "http://127.0.0.1:15700/ready", &[], "200");
    let _ = proxy.kill();
    let out = proxy.wait_with_output().unwrap();
    assert_eq!(
        answer,
        "200",
        "no IPv4 answer on [::]: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
