//! Real TLS tools against Gembok: curl and `openssl s_client` as clients of an inbound
//! listener, `openssl s_server` as the server behind an outbound route.

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::{Duration, Instant};

use gembok_tests::pki::{CertDir, TestPki, dns_name};
use gembok_tests::proxy::Proxy;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::Command;

use crate::support::wait_metric;

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

/// An app that sends one line, then closes (TCP FIN after the greeting).
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

#[tokio::test]
async fn curl_with_a_client_certificate_gets_through_the_inbound_listener() {
    let pki = TestPki::new();
    let dir = CertDir::new(&pki.workload("server"));
    let inbound = Proxy::builder()
        .cert_dir(&dir)
        .inbound(http_app().await, "")
        .start();
    inbound.ready().await;
    let tmp = tempfile::tempdir().unwrap();
    let client = pki.workload("client");
    let (ca, cert, key) = (
        tmp.path().join("ca.crt"),
        tmp.path().join("tls.crt"),
        tmp.path().join("tls.key"),
    );
    std::fs::write(&ca, pki.root_pem()).unwrap();
    std::fs::write(&cert, &client.chain_pem).unwrap();
    std::fs::write(&key, &client.key_pem).unwrap();
    let port = inbound.inbound[0].port();
    let host = dns_name("server");
    let curl = |with_cert: bool| {
        let mut c = Command::new("curl");
        c.args(["--silent", "--show-error", "--max-time", "10", "--tlsv1.3"])
            .arg("--cacert")
            .arg(&ca)
            .args(["--resolve", &format!("{host}:{port}:127.0.0.1")])
            .arg(format!("https://{host}:{port}/"));
        if with_cert {
            c.arg("--cert").arg(&cert).arg("--key").arg(&key);
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
    let inbound = Proxy::builder()
        .cert_dir(&dir)
        .inbound(greeting_app().await, "")
        .start();
    inbound.ready().await;
    let tmp = tempfile::tempdir().unwrap();
    let client = pki.workload("client");
    std::fs::write(tmp.path().join("ca.crt"), pki.root_pem()).unwrap();
    std::fs::write(tmp.path().join("tls.crt"), &client.chain_pem).unwrap();
    std::fs::write(tmp.path().join("tls.key"), &client.key_pem).unwrap();
    std::fs::write(
        tmp.path().join("intermediate.crt"),
        pki.intermediate.cert_pem(),
    )
    .unwrap();
    let mut child = Command::new("openssl")
        .current_dir(tmp.path())
        .args(["s_client", "-brief", "-ign_eof", "-verify_return_error"])
        .args([
            "-connect",
            &inbound.inbound[0].to_string(),
            "-servername",
            &dns_name("server"),
        ])
        .args([
            "-CAfile",
            "ca.crt",
            "-cert",
            "tls.crt",
            "-cert_chain",
            "intermediate.crt",
            "-key",
            "tls.key",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"ping\n")
        .await
        .unwrap();
    let out = tokio::time::timeout(Duration::from_secs(20), child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
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
    let tmp = tempfile::tempdir().unwrap();
    let server = pki.workload("server");
    std::fs::write(tmp.path().join("ca.crt"), pki.root_pem()).unwrap();
    std::fs::write(tmp.path().join("tls.crt"), &server.chain_pem).unwrap();
    std::fs::write(tmp.path().join("tls.key"), &server.key_pem).unwrap();
    std::fs::write(
        tmp.path().join("intermediate.crt"),
        pki.intermediate.cert_pem(),
    )
    .unwrap();

    // s_server cannot report a port it picked: pick a free one, retry if it was taken meanwhile,
    // and wait until it accepts TCP connections (a bare probe does not stop it serving).
    let (mut s_server, addr) = loop {
        let addr = crate::support::unused_port();
        let mut child = Command::new("openssl")
            .current_dir(tmp.path())
            .args([
                "s_server",
                "-rev",
                "-tls1_3",
                "-Verify",
                "2",
                "-verify_return_error",
            ])
            .args([
                "-accept",
                &addr.to_string(),
                "-cert",
                "tls.crt",
                "-cert_chain",
                "intermediate.crt",
            ])
            .args(["-key", "tls.key", "-CAfile", "ca.crt"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        let listening = loop {
            if TcpStream::connect(addr).await.is_ok() {
                break true;
            }
            if child.try_wait().unwrap().is_some() || Instant::now() > deadline {
                break false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        if listening {
            break (child, addr);
        }
        let _ = child.kill().await;
    };

    let client_dir = CertDir::new(&pki.workload("client"));
    let outbound = Proxy::builder()
        .cert_dir(&client_dir)
        .outbound(
            &addr.to_string(),
            &format!(",server-name={}", dns_name("server")),
        )
        .start();
    outbound.ready().await;

    let mut app = TcpStream::connect(outbound.outbound[0]).await.unwrap();
    app.write_all(b"hello gembok\n").await.unwrap();
    let mut reply = String::new();
    tokio::time::timeout(
        Duration::from_secs(10),
        BufReader::new(&mut app).read_line(&mut reply),
    )
    .await
    .expect("s_server answered")
    .unwrap();
    assert_eq!(reply.trim_end(), "kobmeg olleh");
    wait_metric(
        &outbound,
        "gembok_handshake_duration_seconds_count",
        &[],
        1.0,
    )
    .await;
    let _ = s_server.kill().await;
    let out = s_server.wait_with_output().await.unwrap();
    let log = String::from_utf8_lossy(&out.stdout);
    assert!(!log.contains("verify error"), "{log}");
}

#[tokio::test]
async fn alpn_h2_is_negotiated_for_grpc_clients() {
    let pki = TestPki::new();
    let dir = CertDir::new(&pki.workload("server"));
    let inbound = Proxy::builder()
        .cert_dir(&dir)
        .inbound(greeting_app().await, ",alpn=h2,alpn=http/1.1")
        .start();
    inbound.ready().await;
    let tmp = tempfile::tempdir().unwrap();
    let client = pki.workload("client");
    std::fs::write(tmp.path().join("ca.crt"), pki.root_pem()).unwrap();
    std::fs::write(tmp.path().join("tls.crt"), &client.chain_pem).unwrap();
    std::fs::write(tmp.path().join("tls.key"), &client.key_pem).unwrap();
    std::fs::write(
        tmp.path().join("intermediate.crt"),
        pki.intermediate.cert_pem(),
    )
    .unwrap();
    let out = Command::new("openssl")
        .current_dir(tmp.path())
        .args([
            "s_client",
            "-alpn",
            "h2",
            "-connect",
            &inbound.inbound[0].to_string(),
        ])
        .args([
            "-CAfile",
            "ca.crt",
            "-cert",
            "tls.crt",
            "-cert_chain",
            "intermediate.crt",
            "-key",
            "tls.key",
        ])
        .stdin(Stdio::null())
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("ALPN protocol: h2"),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
