//! Handshakes Gembok must refuse, each counted under the right `reason`.

use std::process::Stdio;
use std::time::Duration;

use gembok_tests::pair::Inbound;
use gembok_tests::pki::{CertDir, TestPki, dns_name, spiffe};
use gembok_tests::proxy::Proxy;
use gembok_tests::tls::Client;
use gembok_tests::traffic::ExchangeApp;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::process::Command;

use crate::support::{assert_the_app_is_turned_away, wait_metric};

/// An inbound proxy for `server`, allowing only `client`'s SPIFFE ID when `allow` is set.
async fn inbound(pki: &TestPki, allow: bool) -> (Proxy, CertDir, ExchangeApp) {
    let options = if allow {
        format!(",allow-san={}", spiffe("client"))
    } else {
        String::new()
    };
    let Inbound { app, proxy, dir } = Inbound::start(pki, &options, &[]).await;
    (proxy, dir, app)
}

/// Connects as `client` and tries to use the connection. In TLS 1.3 the client finishes its
/// handshake before the server has checked the client certificate, so a refusal may only show
/// on the first read.
pub(crate) async fn try_exchange(proxy: &Proxy, client: &Client) -> Result<(), String> {
    let mut tls = client
        .connect(proxy.inbound[0], &dns_name("server"))
        .await
        .map_err(|e| e.to_string())?;
    tls.write_all(&[0u8; 24]).await.map_err(|e| e.to_string())?;
    tls.shutdown().await.map_err(|e| e.to_string())?; // close_notify + FIN: a clean end
    let mut buf = Vec::new();
    tls.read_to_end(&mut buf).await.map_err(|e| e.to_string())?;
    Ok(())
}

async fn assert_refused(proxy: &Proxy, client: Client, reason: &str) {
    let err = try_exchange(proxy, &client)
        .await
        .expect_err("the handshake must be refused");
    wait_metric(
        proxy,
        "gembok_handshake_failures_total",
        &[("direction", "inbound"), ("reason", reason)],
        1.0,
    )
    .await;
    wait_metric(
        proxy,
        "gembok_connections_closed_total",
        &[("end", "handshake_failed")],
        1.0,
    )
    .await;
    assert_eq!(
        proxy.metrics().await.sum("gembok_bytes_total", &[]),
        0.0,
        "nothing may reach the app ({err})"
    );
}

#[tokio::test]
async fn the_allowed_client_gets_through() {
    let pki = TestPki::new();
    let (proxy, _dir, mut app) = inbound(&pki, true).await;
    try_exchange(
        &proxy,
        &Client::new(pki.root_pem(), Some(&pki.workload("client")), false),
    )
    .await
    .unwrap();
    app.received.recv().await.unwrap().unwrap();
}

#[tokio::test]
async fn refuses_a_client_without_a_certificate() {
    let pki = TestPki::new();
    let (proxy, _dir, _app) = inbound(&pki, false).await;
    assert_refused(
        &proxy,
        Client::new(pki.root_pem(), None, false),
        "no_client_cert",
    )
    .await;
}

#[tokio::test]
async fn refuses_a_certificate_from_another_ca() {
    let pki = TestPki::new();
    let other = TestPki::new();
    let (proxy, _dir, _app) = inbound(&pki, false).await;
    assert_refused(
        &proxy,
        Client::new(pki.root_pem(), Some(&other.workload("client")), false),
        "unknown_ca",
    )
    .await;
}

#[tokio::test]
async fn refuses_an_expired_certificate() {
    let pki = TestPki::new();
    let (proxy, _dir, _app) = inbound(&pki, false).await;
    assert_refused(
        &proxy,
        Client::new(pki.root_pem(), Some(&pki.expired("client")), false),
        "expired",
    )
    .await;
}

#[tokio::test]
async fn refuses_a_san_outside_the_allow_list() {
    let pki = TestPki::new();
    let (proxy, _dir, _app) = inbound(&pki, true).await;
    assert_refused(
        &proxy,
        Client::new(pki.root_pem(), Some(&pki.workload("intruder")), false),
        "san_not_allowed",
    )
    .await;
}

#[tokio::test]
async fn refuses_a_tls12_only_client_when_tls13_only() {
    let pki = TestPki::new();
    let (proxy, _dir, _app) = inbound(&pki, false).await;
    // A real TLS 1.2-only client.
    let out = Command::new("openssl")
        .args([
            "s_client",
            "-tls1_2",
            "-connect",
            &proxy.inbound[0].to_string(),
        ])
        .stdin(Stdio::null())
        .output()
        .await
        .unwrap();
    assert!(
        !out.status.success(),
        "openssl -tls1_2 must fail: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    wait_metric(
        &proxy,
        "gembok_handshake_failures_total",
        &[("reason", "protocol_version")],
        1.0,
    )
    .await;
    // And with --tls12 the same client gets through (mTLS still required).
    let app = ExchangeApp::start().await;
    let dir = CertDir::new(&pki.workload("server"));
    let tls12 = Proxy::builder()
        .cert_dir(&dir)
        .inbound(app.addr, "")
        .args(["--tls12"])
        .start();
    tls12.ready().await;
    try_exchange(
        &tls12,
        &Client::new(pki.root_pem(), Some(&pki.workload("client")), true),
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn accepts_rsa_certificates_too() {
    let pki = TestPki::new();
    let app = ExchangeApp::start().await;
    let dir = CertDir::new(&pki.rsa("server"));
    let proxy = Proxy::builder()
        .cert_dir(&dir)
        .inbound(app.addr, "")
        .start();
    proxy.ready().await;
    try_exchange(
        &proxy,
        &Client::new(pki.root_pem(), Some(&pki.rsa("client")), false),
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn outbound_refuses_a_server_with_the_wrong_name() {
    let pki = TestPki::new();
    let (server, _dir, _app) = inbound(&pki, false).await;
    let client_dir = CertDir::new(&pki.workload("client"));
    let outbound = Proxy::builder()
        .cert_dir(&client_dir)
        .outbound(
            &server.inbound[0].to_string(),
            ",server-name=payment.test.svc.cluster.local",
        )
        .start();
    outbound.ready().await;
    let mut app = TcpStream::connect(outbound.outbound[0]).await.unwrap();
    let _ = app.write_all(b"secret").await;
    let mut buf = Vec::new();
    let result = tokio::time::timeout(Duration::from_secs(10), app.read_to_end(&mut buf))
        .await
        .unwrap();
    assert!(
        result.is_err() && buf.is_empty(),
        "the app must see its connection reset: {result:?}"
    );
    wait_metric(
        &outbound,
        "gembok_handshake_failures_total",
        &[("direction", "outbound"), ("reason", "name_mismatch")],
        1.0,
    )
    .await;
}

/// `--inbound-client-auth optional|none` lets a client without a certificate in, and says so in
/// a warning at start-up; with `optional` a certificate that is presented is still verified.
#[tokio::test]
async fn relaxed_client_auth_lets_certificate_less_clients_in_and_warns() {
    for mode in ["optional", "none"] {
        let pki = TestPki::new();
        let Inbound {
            mut app,
            proxy,
            dir: _dir,
        } = Inbound::start(&pki, "", &["--inbound-client-auth", mode]).await;
        let warning = proxy
            .logs()
            .lines()
            .find(|l| l.contains(&format!("--inbound-client-auth {mode}")))
            .map(str::to_owned);
        let warning = warning.unwrap_or_else(|| panic!("no warning for {mode}:\n{}", proxy.logs()));
        assert!(warning.contains("\"WARN\""), "{warning}");

        try_exchange(&proxy, &Client::new(pki.root_pem(), None, false))
            .await
            .unwrap_or_else(|e| panic!("{mode}: a client without a certificate was refused: {e}"));
        app.received.recv().await.unwrap().unwrap();

        if mode == "optional" {
            let other = TestPki::new();
            let client = Client::new(pki.root_pem(), Some(&other.workload("client")), false);
            try_exchange(&proxy, &client)
                .await
                .expect_err("a certificate from another CA must still be refused");
            wait_metric(
                &proxy,
                "gembok_handshake_failures_total",
                &[("reason", "unknown_ca")],
                1.0,
            )
            .await;
        }
    }
}

/// Bytes that cannot be TLS (a plaintext HTTP request, a record header claiming more than any
/// record may hold) are answered with an alert at once, for every record layer, instead of the
/// connection being held, silently, until the handshake timeout (set far beyond the test's
/// own wait here, so only an immediate answer passes).
#[tokio::test]
async fn answers_what_is_not_tls_with_an_alert_at_once() {
    let pki = TestPki::new();
    for layer in ["gembok", "rustls"] {
        let Inbound {
            proxy,
            dir: _dir,
            app: _app,
        } = Inbound::start(
            &pki,
            "",
            &["--record-layer", layer, "--handshake-timeout", "120s"],
        )
        .await;
        let overlong = [&[22u8, 3, 1, 0xff, 0xff][..], &[b'A'; 1000]].concat();
        for wire in [b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(), overlong] {
            let mut tcp = TcpStream::connect(proxy.inbound[0]).await.unwrap();
            tcp.write_all(&wire).await.unwrap();
            let mut answer = Vec::new();
            tokio::time::timeout(Duration::from_secs(30), tcp.read_to_end(&mut answer))
                .await
                .unwrap_or_else(|_| panic!("{layer}: no answer to {wire:?} within 30 s"))
                .ok(); // a reset after the alert is fine
            assert_eq!(
                answer.first(),
                Some(&21),
                "{layer}: want an alert record for {wire:?}, got {answer:?}"
            );
        }
        wait_metric(
            &proxy,
            "gembok_handshake_failures_total",
            &[("direction", "inbound"), ("reason", "malformed")],
            2.0,
        )
        .await;
        // Counted once each, and under no other reason.
        let failures = proxy.metrics().await.sum(
            "gembok_handshake_failures_total",
            &[("direction", "inbound")],
        );
        assert_eq!(failures, 2.0, "{layer}: counted under other reasons too");
    }
}

/// A TLS 1.3 server refuses a client's certificate only after the client's handshake is done,
/// so the outbound first counts a handshake and then reads the refusal: it counts the failed
/// handshake too (`peer_rejected`), or a certificate every peer refuses would show only as
/// resets. The app gets a reset and nothing reaches the far app.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outbound_whose_certificate_the_peer_refuses_counts_a_failed_handshake() {
    let pki = TestPki::new();
    let app = ExchangeApp::start().await;
    let server_dir = CertDir::new(&pki.workload("server"));
    let client_dir = CertDir::new(&pki.workload("client"));
    let inbound = Proxy::builder()
        .cert_dir(&server_dir)
        .inbound(
            app.addr,
            ",allow-san=spiffe://cluster.local/ns/test/sa/somebody-else",
        )
        .start();
    let outbound = Proxy::builder()
        .cert_dir(&client_dir)
        .outbound(
            &inbound.inbound[0].to_string(),
            &format!(",server-name={}", dns_name("server")),
        )
        .start();
    inbound.ready().await;
    outbound.ready().await;
    assert_the_app_is_turned_away(outbound.outbound[0]).await;
    wait_metric(
        &inbound,
        "gembok_handshake_failures_total",
        &[("reason", "san_not_allowed")],
        1.0,
    )
    .await;
    wait_metric(
        &outbound,
        "gembok_handshake_failures_total",
        &[("reason", "peer_rejected")],
        1.0,
    )
    .await;
    outbound
        .wait_log("the peer refused our certificate", Duration::from_secs(10))
        .await;
    assert_eq!(inbound.metrics().await.sum("gembok_bytes_total", &[]), 0.0);
}
