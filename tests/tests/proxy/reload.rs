//! Certificate rotation the way the kubelet does it, under load.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use gembok_tests::pair::Inbound;
use gembok_tests::pki::{CertDir, TestPki, dns_name};
use gembok_tests::proxy::Proxy;
use gembok_tests::tls::Client;
use gembok_tests::traffic::{self, Exchange, ExchangeApp};
use tokio::io::AsyncWriteExt;
use tokio::sync::Mutex;

use crate::support::wait_metric;

/// Serial (lower-case hex) of the certificate the server presented.
fn served_serial(tls: &tokio_rustls::client::TlsStream<tokio::net::TcpStream>) -> String {
    let der = &tls
        .get_ref()
        .1
        .peer_certificates()
        .expect("server certificate")[0];
    let (_, cert) = x509_parser::parse_x509_certificate(der).expect("x509");
    cert.tbs_certificate
        .raw_serial()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Serial of a leaf, encoded the same way.
fn serial(leaf: &gembok_certs_dev::Leaf) -> String {
    let der = leaf.cert_der();
    let (_, cert) = x509_parser::parse_x509_certificate(&der).expect("x509");
    cert.tbs_certificate
        .raw_serial()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Handshakes continuously until stopped; records every serial seen (in order) and failures.
struct Prober {
    stop: Arc<AtomicBool>,
    failures: Arc<AtomicU64>,
    handshakes: Arc<AtomicU64>,
    seen: Arc<Mutex<Vec<(Instant, String)>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Prober {
    fn start(proxy: &Proxy, client: Client) -> Self {
        let (stop, failures, handshakes) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicU64::new(0)),
            Arc::new(AtomicU64::new(0)),
        );
        let seen = Arc::new(Mutex::new(Vec::new()));
        let addr = proxy.inbound[0];
        let (s, f, h, v) = (
            stop.clone(),
            failures.clone(),
            handshakes.clone(),
            seen.clone(),
        );
        let task = tokio::spawn(async move {
            while !s.load(Ordering::Relaxed) {
                match client.connect(addr, &dns_name("server")).await {
                    Ok(tls) => {
                        h.fetch_add(1, Ordering::Relaxed);
                        let serial = served_serial(&tls);
                        let mut v = v.lock().await;
                        if v.last().map(|(_, s)| s) != Some(&serial) {
                            v.push((Instant::now(), serial));
                        }
                    }
                    Err(e) => {
                        eprintln!("handshake failed during reload: {e}");
                        f.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        });
        Self {
            stop,
            failures,
            handshakes,
            seen,
            task,
        }
    }

    /// Waits until `serial` has been served; returns when it was first seen.
    async fn wait_for(&self, serial: &str, within: Duration) -> Instant {
        let deadline = Instant::now() + within;
        loop {
            if let Some((at, _)) = self.seen.lock().await.iter().find(|(_, s)| s == serial) {
                return *at;
            }
            assert!(
                Instant::now() < deadline,
                "serial {serial} not served within {within:?}: {:?}",
                self.seen.lock().await
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    async fn finish(self) -> (u64, u64, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.unwrap();
        let seen = self
            .seen
            .lock()
            .await
            .iter()
            .map(|(_, s)| s.clone())
            .collect();
        (
            self.handshakes.load(Ordering::Relaxed),
            self.failures.load(Ordering::Relaxed),
            seen,
        )
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_serves_the_new_certificate_within_2s_without_a_failed_handshake() {
    let pki = TestPki::new();
    let first = pki.workload("server");
    let second = pki.workload("server");
    let mut app = ExchangeApp::start().await;
    let dir = CertDir::new(&first);
    let proxy = Proxy::builder()
        .cert_dir(&dir)
        .inbound(app.addr, "")
        .start();
    proxy.ready().await;
    let client = Client::new(pki.root_pem(), Some(&pki.workload("client")), false);

    // A connection opened before the swap, still transferring after it: it uploads now, but
    // its 64 MiB reply is read only after the swap (until then it is stuck in socket buffers).
    let long = Exchange {
        id: 1,
        send_len: 64 << 20,
        send_seed: 1,
        reply_len: 64 << 20,
        reply_seed: 2,
    };
    let early = client
        .connect(proxy.inbound[0], &dns_name("server"))
        .await
        .unwrap();
    assert_eq!(served_serial(&early), serial(&first));
    let (mut early_r, mut early_w) = tokio::io::split(early);
    let upload = tokio::spawn(async move {
        let mut header = [0u8; 24];
        header[..8].copy_from_slice(&long.id.to_be_bytes());
        header[8..16].copy_from_slice(&long.reply_len.to_be_bytes());
        header[16..].copy_from_slice(&long.reply_seed.to_be_bytes());
        early_w.write_all(&header).await?;
        let sent = traffic::send(&mut early_w, long.send_len, long.send_seed).await?;
        early_w.shutdown().await?;
        Ok::<_, std::io::Error>(sent)
    });

    let prober = Prober::start(
        &proxy,
        Client::new(pki.root_pem(), Some(&pki.workload("client")), false),
    );
    prober
        .wait_for(&serial(&first), Duration::from_secs(5))
        .await;
    let swapped_at = Instant::now();
    dir.swap(&second);
    let seen_at = prober
        .wait_for(&serial(&second), Duration::from_secs(2))
        .await;
    assert!(seen_at - swapped_at < Duration::from_secs(2));
    // Keep handshaking a little after the swap, then stop.
    let after = prober.handshakes.load(Ordering::Relaxed) + 20;
    while prober.handshakes.load(Ordering::Relaxed) < after {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let (handshakes, failures, seen) = prober.finish().await;
    assert_eq!(
        failures, 0,
        "{failures} of {handshakes} handshakes failed during the rotation"
    );
    // In TLS 1.3 the client is done before the server has checked its certificate: the
    // server's own count must be zero too.
    let m = proxy.metrics().await;
    assert_eq!(m.sum("gembok_handshake_failures_total", &[]), 0.0);
    assert_eq!(
        m.sum(
            "gembok_connections_closed_total",
            &[("end", "handshake_failed")]
        ),
        0.0
    );
    assert_eq!(
        seen,
        vec![serial(&first), serial(&second)],
        "the serial must switch once, and for good"
    );

    // The early connection: its reply has not been read yet, so it is still open; now it
    // finishes, byte for byte.
    let received = traffic::digest(&mut early_r).await.unwrap_or_else(|e| {
        panic!(
            "the connection opened before the swap failed: {e}\n{}",
            proxy.logs()
        )
    });
    assert_eq!(received, long.expected_reply());
    assert_eq!(upload.await.unwrap().unwrap(), long.expected_at_app());
    // The prober's connections reach the app too (and end without a request): find ours.
    let at_app = loop {
        match app.received.recv().await.unwrap() {
            Ok(r) if r.id == long.id => break r,
            _ => continue,
        }
    };
    assert_eq!(at_app.stream, long.expected_at_app());
    wait_metric(
        &proxy,
        "gembok_cert_reloads_total",
        &[("result", "success")],
        2.0,
    )
    .await;
}

#[tokio::test]
async fn broken_rotations_keep_the_last_good_certificate_and_are_counted() {
    let pki = TestPki::new();
    let good = pki.workload("server");
    let app = ExchangeApp::start().await;
    let dir = CertDir::new(&good);
    let proxy = Proxy::builder()
        .cert_dir(&dir)
        .inbound(app.addr, "")
        .start();
    proxy.ready().await;
    let client = Client::new(pki.root_pem(), Some(&pki.workload("client")), false);
    let serial_now = || async {
        served_serial(
            &client
                .connect(proxy.inbound[0], &dns_name("server"))
                .await
                .unwrap(),
        )
    };

    let other = pki.workload("server");
    let expired = pki.expired("server");
    let broken: [(&str, Vec<u8>, Vec<u8>); 3] = [
        (
            "key from another certificate",
            good.chain_pem.clone().into(),
            other.key_pem.clone().into(),
        ),
        (
            "garbage PEM",
            b"-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n".to_vec(),
            good.key_pem.clone().into(),
        ),
        (
            "expired certificate",
            expired.chain_pem.clone().into(),
            expired.key_pem.clone().into(),
        ),
    ];
    for (n, (what, cert, key)) in broken.iter().enumerate() {
        dir.swap_raw(cert, key, pki.root_pem().as_bytes());
        wait_metric(
            &proxy,
            "gembok_cert_reloads_total",
            &[("result", "failure")],
            (n + 1) as f64,
        )
        .await;
        assert_eq!(
            serial_now().await,
            serial(&good),
            "after a swap to a {what}"
        );
        let (status, _) = proxy.get("/ready").await;
        assert_eq!(
            status, 200,
            "a refused reload must not make the proxy unready ({what})"
        );
    }
    assert!(
        proxy.logs().contains("keeping the last good certificate"),
        "{}",
        proxy.logs()
    );

    let next = pki.workload("server");
    dir.swap(&next);
    wait_metric(
        &proxy,
        "gembok_cert_reloads_total",
        &[("result", "success")],
        2.0,
    )
    .await;
    assert_eq!(serial_now().await, serial(&next));
}

/// A rotation may change the CA bundle too (a new root): handshakes verify against the new
/// bundle at once, peers of the old CA are refused, and the proxy trusts the new one.
#[tokio::test]
async fn rotation_to_a_new_ca_trusts_the_new_one_only() {
    let (old, new) = (TestPki::new(), TestPki::new());
    let Inbound {
        mut app,
        proxy,
        dir,
    } = Inbound::start(&old, "", &[]).await;
    let old_client = Client::new(old.root_pem(), Some(&old.workload("client")), false);
    let new_client = Client::new(new.root_pem(), Some(&new.workload("client")), false);
    let exchange = Exchange {
        id: 7,
        send_len: 1000,
        send_seed: 3,
        reply_len: 1000,
        reply_seed: 4,
    };
    let through = |client: &Client| {
        let client = client.clone();
        let addr = proxy.inbound[0];
        async move {
            let tls = client.connect(addr, &dns_name("server")).await?;
            exchange.run_on(tls).await
        }
    };
    through(&old_client)
        .await
        .expect("old CA before the rotation");
    app.received.recv().await.unwrap().unwrap();

    let next = new.workload("server");
    dir.swap(&next);
    wait_metric(
        &proxy,
        "gembok_cert_reloads_total",
        &[("result", "success")],
        2.0,
    )
    .await;
    let result = through(&new_client)
        .await
        .expect("new CA after the rotation");
    assert_eq!(result.received, exchange.expected_reply());
    // A client that knows the new server but still holds a certificate of the retired CA.
    let stale = Client::new(new.root_pem(), Some(&old.workload("client")), false);
    assert!(
        through(&stale).await.is_err(),
        "a peer of the retired CA must be refused"
    );
    wait_metric(
        &proxy,
        "gembok_handshake_failures_total",
        &[("reason", "unknown_ca")],
        1.0,
    )
    .await;
}
