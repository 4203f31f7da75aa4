//! Real TLS tools against Gembok: curl and `openssl s_client` as clients of an inbound
//! listener, `openssl s_server` as the server behind an outbound route.

use std::net::SocketAddr;
use std::time::Duration;

use gembok_tests::openssl::{Identity, SServer, s_client};
use gembok_tests::pki::{CertDir, TestPki, dns_name};
use gembok_tests::proxy::Proxy;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::Command;

use crate::support::{assert_not_held_by_a_kernel_timer, outbound_to, reply_through, wait_metric};

/// An HTTP/1.1 app that answers every request with `hello from the app`.
async fn http_app() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let body = "hello from the app";
                let reply = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = s.write_all(reply.as_bytes()).await;
                let _ = s.shutdown().await;
            });
        }
    });
    addr
}

/// An app that reads one line, answers `app got: <line>`, then closes.
async fn greeting_app() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut line = String::new();
                let mut reader = BufReader::new(&mut s);
                let _ = reader.read_line(&mut line).await;
                let _ = s.write_all(format!("app got: {line}").as_bytes()).await;
                let _ = s.shutdown().await;
            });
        }
    });
    addr
}

async fn inbound_for(dir: &CertDir, app: SocketAddr, options: &str, args: &[&str]) -> Proxy {
    let inbound = Proxy::builder()
        .cert_dir(dir)
        .inbound(app, options)
        .args(args)
        .start();
    inbound.ready().await;
    inbound
}

#[tokio::test]
async fn curl_with_a_client_certificate_gets_through_the_inbound_listener() {
    let pki = TestPki::new();
    let dir = CertDir::new(&pki.workload("server"));
    let inbound = inbound_for(&dir, http_app().await, "", &[]).await;
    let id = Identity::new(&pki, &pki.workload("client"));
    let (port, host) = (inbound.inbound[0].port(), dns_name("server"));
    let curl = |with_cert: bool| {
        let mut c = Command::new("curl");
        c.args([
            "--silent",
            "--show-error",
            "--max-time",
            "10",
            "--tlsv1.3",
            "--cacert",
        ])
        .arg(id.path("ca.crt"))
        .args(["--resolve", &format!("{host}:{port}:127.0.0.1")])
        .arg(format!("https://{host}:{port}/"));
        if with_cert {
            c.arg("--cert")
                .arg(id.path("full.crt"))
                .arg("--key")
                .arg(id.path("tls.key"));
        }
        c.output()
    };
    let ok = curl(true).await.unwrap();
    assert!(
        ok.status.success(),
        "curl failed: {}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&ok.stdout), "hello from the app");

    let refused = curl(false).await.unwrap();
    assert!(
        !refused.status.success(),
        "curl without a client certificate must fail"
    );
    wait_metric(
        &inbound,
        "gembok_handshake_failures_total",
        &[("reason", "no_client_cert")],
        1.0,
    )
    .await;
}

#[tokio::test]
async fn openssl_s_client_negotiates_tls13_with_an_aead_suite() {
    let pki = TestPki::new();
    let dir = CertDir::new(&pki.workload("server"));
    let inbound = inbound_for(&dir, greeting_app().await, "", &[]).await;
    let id = Identity::new(&pki, &pki.workload("client"));
    let out = s_client(
        &id,
        inbound.inbound[0],
        &dns_name("server"),
        &["-brief"],
        b"ping\n",
    )
    .await;
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(
        stdout.contains("app got: ping"),
        "stdout: {stdout}\nstderr: {stderr}"
    );
    assert!(stderr.contains("Protocol version: TLSv1.3"), "{stderr}");
    assert!(
        stderr.contains("Ciphersuite: TLS_AES_128_GCM_SHA256"),
        "server order must win: {stderr}"
    );
    assert!(stderr.contains("Verification: OK"), "{stderr}");
}

#[tokio::test]
async fn an_outbound_route_reaches_openssl_s_server_with_mtls() {
    let pki = TestPki::new();
    let server = SServer::reversing(&pki, "-tls1_3").await;
    let client_dir = CertDir::new(&pki.workload("client"));
    let outbound = outbound_to(&client_dir, server.addr, &[]).await;
    let reply = reply_through(&outbound, "hello gembok").await;
    assert_eq!(reply.as_deref(), Some("kobmeg olleh"));
    wait_metric(
        &outbound,
        "gembok_handshake_duration_seconds_count",
        &[],
        1.0,
    )
    .await;
}

/// An outbound route to a TLS 1.2-only server (`--tls12`). Our last handshake flight is held for
/// the app's first bytes only in TLS 1.3: here nothing may be held, neither the handshake nor,
/// later, any record of the app's (a held write waits for the kernel's probe timer, which fires
/// no sooner than the minimum retransmission timeout, 200 ms).
#[tokio::test]
async fn an_outbound_route_speaks_tls12_to_a_tls12_only_server_without_holding_writes() {
    let pki = TestPki::new();
    let server = SServer::reversing(&pki, "-tls1_2").await;
    let client_dir = CertDir::new(&pki.workload("client"));
    let outbound = outbound_to(&client_dir, server.addr, &["--tls12"]).await;
    let app = TcpStream::connect(outbound.outbound[0]).await.unwrap();
    let mut app = BufReader::new(app);
    // The handshake is over before the app writes (s_server's -rev mode only answers lines):
    // wait for the outbound to count it, as TLS 1.2.
    wait_metric(
        &outbound,
        "gembok_tls_handshakes_total",
        &[("version", "TLSv1_2")],
        1.0,
    )
    .await;
    let mut round_trips = Vec::new();
    for i in 0..20 {
        let line = format!("request {i}\n");
        let started = std::time::Instant::now();
        app.get_mut().write_all(line.as_bytes()).await.unwrap();
        let mut reply = String::new();
        tokio::time::timeout(Duration::from_secs(10), app.read_line(&mut reply))
            .await
            .expect("s_server answered")
            .unwrap();
        round_trips.push(started.elapsed());
        let want: String = line.trim_end().chars().rev().collect();
        assert_eq!(reply.trim_end(), want);
    }
    assert_not_held_by_a_kernel_timer(round_trips, "round trips", "");
}

#[tokio::test]
async fn alpn_h2_is_negotiated_for_grpc_clients() {
    let pki = TestPki::new();
    let dir = CertDir::new(&pki.workload("server"));
    let inbound = inbound_for(&dir, greeting_app().await, ",alpn=h2,alpn=http/1.1", &[]).await;
    let id = Identity::new(&pki, &pki.workload("client"));
    let out = s_client(
        &id,
        inbound.inbound[0],
        &dns_name("server"),
        &["-alpn", "h2"],
        b"ping\n",
    )
    .await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("ALPN protocol: h2"),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `--key-exchange` with post-quantum groups only refuses a peer that cannot do post-quantum key
/// exchange: OpenSSL 3.0's s_client (no ML-KEM) fails with a valid client certificate and is
/// counted as `incompatible`, while rustls with aws-lc-rs negotiates X25519MLKEM768. The same
/// s_client gets through an inbound whose list names a group it has.
#[tokio::test]
async fn a_post_quantum_only_inbound_refuses_classical_clients() {
    let pki = TestPki::new();
    let dir = CertDir::new(&pki.workload("server"));
    let app = greeting_app().await;
    let inbound_with = async |groups| inbound_for(&dir, app, "", &["--key-exchange", groups]).await;
    let id = Identity::new(&pki, &pki.workload("client"));
    let server_name = dns_name("server");
    // s_client's exit status and what it printed, for one line through `proxy`.
    let ping = async |proxy: &Proxy| {
        let out = s_client(&id, proxy.inbound[0], &server_name, &["-brief"], b"ping\n").await;
        let printed = format!(
            "stdout: {}\nstderr: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), printed)
    };
    let handshake_with = async |proxy: &Proxy, kx: &str| {
        let labels = [("direction", "inbound"), ("kx", kx)];
        wait_metric(proxy, "gembok_tls_handshakes_total", &labels, 1.0).await;
    };

    let pq_only = inbound_with("X25519MLKEM768,MLKEM1024").await;
    let (ok, printed) = ping(&pq_only).await;
    assert!(!ok && !printed.contains("app got"), "{printed}");
    wait_metric(
        &pq_only,
        "gembok_handshake_failures_total",
        &[("direction", "inbound"), ("reason", "incompatible")],
        1.0,
    )
    .await;
    let client =
        gembok_tests::tls::Client::new(pki.root_pem(), Some(&pki.workload("client")), false);
    let mut tls = client
        .connect(pq_only.inbound[0], &server_name)
        .await
        .unwrap();
    tls.write_all(b"ping\n").await.unwrap();
    let mut reply = String::new();
    tls.read_to_string(&mut reply).await.unwrap();
    assert_eq!(reply, "app got: ping\n");
    handshake_with(&pq_only, "X25519MLKEM768").await;

    let p384 = inbound_with("secp384r1").await;
    let (ok, printed) = ping(&p384).await;
    assert!(ok && printed.contains("app got: ping"), "{printed}");
    handshake_with(&p384, "secp384r1").await;
}

/// `--cipher-suites` on an inbound: its order wins over the client's (OpenSSL offers AES-256-GCM
/// first), a client offering none of its suites is refused and counted as `incompatible`.
#[tokio::test]
async fn an_inbound_negotiates_only_the_cipher_suites_it_names_in_its_order() {
    let pki = TestPki::new();
    let dir = CertDir::new(&pki.workload("server"));
    let suites = [
        "--cipher-suites",
        "tls13_chacha20_poly1305_sha256,TLS_AES_256_GCM_SHA384",
    ];
    let inbound = inbound_for(&dir, greeting_app().await, "", &suites).await;
    let id = Identity::new(&pki, &pki.workload("client"));
    let ping = async |extra: &[&str]| {
        let args = [&["-brief"], extra].concat();
        let out = s_client(
            &id,
            inbound.inbound[0],
            &dns_name("server"),
            &args,
            b"ping\n",
        )
        .await;
        let printed = format!(
            "stdout: {}\nstderr: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), printed)
    };

    let (ok, printed) = ping(&[]).await;
    assert!(ok && printed.contains("app got: ping"), "{printed}");
    assert!(
        printed.contains("Ciphersuite: TLS_CHACHA20_POLY1305_SHA256"),
        "the inbound's first choice: {printed}"
    );
    let labels = [
        ("direction", "inbound"),
        ("suite", "TLS13_CHACHA20_POLY1305_SHA256"),
    ];
    wait_metric(&inbound, "gembok_tls_handshakes_total", &labels, 1.0).await;

    let (ok, printed) = ping(&[
        "-ciphersuites",
        "TLS_AES_256_GCM_SHA384:TLS_AES_128_GCM_SHA256",
    ])
    .await;
    assert!(
        ok && printed.contains("Ciphersuite: TLS_AES_256_GCM_SHA384"),
        "{printed}"
    );

    let (ok, printed) = ping(&["-ciphersuites", "TLS_AES_128_GCM_SHA256"]).await;
    assert!(!ok && !printed.contains("app got"), "{printed}");
    wait_metric(
        &inbound,
        "gembok_handshake_failures_total",
        &[("direction", "inbound"), ("reason", "incompatible")],
        1.0,
    )
    .await;
}

/// `--cipher-suites` on an outbound: it offers only those, so `openssl s_server` picks from them,
/// and a server with none of them refuses the handshake (its alert counts as `peer_rejected`).
#[tokio::test]
async fn an_outbound_offers_only_the_cipher_suites_it_names() {
    let pki = TestPki::new();
    let client_dir = CertDir::new(&pki.workload("client"));
    let suites = ["--cipher-suites", "TLS13_AES_256_GCM_SHA384"];
    // s_server prefers AES-128-GCM (the client's order is OpenSSL's default rule).
    let server = SServer::reversing(&pki, "-tls1_3").await;
    let outbound = outbound_to(&client_dir, server.addr, &suites).await;
    let reply = reply_through(&outbound, "hello gembok").await;
    assert_eq!(reply.as_deref(), Some("kobmeg olleh"));
    let labels = [
        ("direction", "outbound"),
        ("suite", "TLS13_AES_256_GCM_SHA384"),
    ];
    wait_metric(&outbound, "gembok_tls_handshakes_total", &labels, 1.0).await;

    let id = Identity::new(&pki, &pki.workload("server"));
    let aes128_only = ["-tls1_3", "-ciphersuites", "TLS_AES_128_GCM_SHA256"];
    let server = SServer::reversing_as(&id, &aes128_only).await;
    let outbound = outbound_to(&client_dir, server.addr, &suites).await;
    let reply = reply_through(&outbound, "hello gembok").await;
    assert_eq!(reply, None, "no suite in common, no answer");
    wait_metric(
        &outbound,
        "gembok_handshake_failures_total",
        &[("direction", "outbound"), ("reason", "peer_rejected")],
        1.0,
    )
    .await;
}
