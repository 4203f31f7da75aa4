//! Gembok's own TLS 1.3 record layer (`--record-layer`, default gembok) through a real pair: the
//! inbound side takes every TLS 1.3 connection from rustls after the handshake, the outbound side
//! once the server's session ticket is in (so the next connection still resumes), busy or not;
//! bytes cross intact either way, with rustls on the other end, and keys rotate at
//! `--record-limit`.

use gembok_tests::pair::Pair;

/// (records, userspace) data-path counts of a proxy.
async fn paths(proxy: &gembok_tests::proxy::Proxy) -> (f64, f64) {
    let m = proxy.metrics().await;
    (
        m.sum("gembok_data_path_total", &[("path", "records")]),
        m.sum("gembok_data_path_total", &[("path", "userspace")]),
    )
}

#[tokio::test]
async fn records_carry_both_ways_and_the_outbound_still_resumes() {
    let mut pair = Pair::start().await;
    for id in 1..=3 {
        pair.exchange_intact(&format!("connection {id}"), id, 1 << 20)
            .await;
    }
    // Every connection reached a data path (the outbound decides as late as its ticket).
    pair.outbound
        .wait_metric("gembok_data_path_total", &[], 3.0)
        .await;
    assert_eq!(
        paths(&pair.inbound).await,
        (3.0, 0.0),
        "the server side switches at once"
    );
    // Each connection stored the ticket the next one resumed with.
    for proxy in [&pair.outbound, &pair.inbound] {
        let m = proxy.metrics().await;
        let kind = |k| m.sum("gembok_tls_handshakes_total", &[("kind", k)]);
        assert_eq!((kind("full"), kind("resumed")), (1.0, 2.0));
    }
    // A busy outbound connection (16 MiB each way, more than the sockets can buffer) stops both
    // directions at their next boundary once its ticket is in, and switches mid-transfer.
    let (before, rustls) = paths(&pair.outbound).await;
    pair.exchange_intact("busy", 4, 16 << 20).await;
    pair.outbound
        .wait_metric("gembok_data_path_total", &[], before + rustls + 1.0)
        .await;
    assert_eq!(
        paths(&pair.outbound).await,
        (before + 1.0, rustls),
        "the busy connection stayed with rustls"
    );
    // An idle one switches as soon as its ticket is in.
    let _idle = tokio::net::TcpStream::connect(pair.entry()).await.unwrap();
    pair.outbound
        .wait_metric(
            "gembok_data_path_total",
            &[("path", "records")],
            before + 2.0,
        )
        .await;
}

#[tokio::test]
async fn rustls_alone_and_mixed_pairs_carry_every_byte() {
    for (inbound, outbound) in [
        ("rustls", "rustls"),
        ("gembok", "rustls"),
        ("rustls", "gembok"),
    ] {
        let what = format!("inbound {inbound}, outbound {outbound}");
        let mut pair =
            Pair::start_args(&["--record-layer", inbound], &["--record-layer", outbound]).await;
        pair.exchange_intact(&what, 1, 2 << 20).await;
        pair.exchange_intact(&what, 2, 2 << 20).await;
        pair.outbound
            .wait_metric("gembok_data_path_total", &[], 2.0)
            .await;
        let (records, userspace) = paths(&pair.inbound).await;
        match inbound {
            "rustls" => assert_eq!((records, userspace), (0.0, 2.0), "{what}"),
            _ => assert_eq!((records, userspace), (2.0, 0.0), "{what}"),
        }
        if outbound == "rustls" {
            assert_eq!(paths(&pair.outbound).await, (0.0, 2.0), "{what}");
        }
        let resumed = pair
            .outbound
            .metrics()
            .await
            .sum("gembok_tls_handshakes_total", &[("kind", "resumed")]);
        assert_eq!(resumed, 1.0, "{what}");
    }
}

/// Every TLS 1.3 suite `--cipher-suites` can pick, with either library sealing the records
/// (`--aead`), carries bytes intact both ways through gembok's record layer on both sides.
/// (The layer itself is checked against rustls for every suite in `proxy/src/records/`.)
#[tokio::test]
async fn every_tls13_suite_carries_every_byte_through_the_record_layer() {
    for suite in [
        "TLS13_AES_128_GCM_SHA256",
        "TLS13_AES_256_GCM_SHA384",
        "TLS13_CHACHA20_POLY1305_SHA256",
    ] {
        for aead in ["aws-lc-rs", "ring"] {
            let what = format!("{suite} sealed by {aead}");
            let args = ["--cipher-suites", suite, "--aead", aead];
            let mut pair = Pair::start_args(&args, &args).await;
            // More than the sockets buffer: the outbound switches mid-transfer, once its
            // ticket is in (see above), so both sides' record layers carry this suite.
            pair.exchange_intact(&what, 1, 16 << 20).await;
            pair.outbound
                .wait_metric("gembok_data_path_total", &[], 1.0)
                .await;
            assert_eq!(paths(&pair.outbound).await, (1.0, 0.0), "{what}");
            assert_eq!(paths(&pair.inbound).await, (1.0, 0.0), "{what}");
            for proxy in [&pair.outbound, &pair.inbound] {
                let m = proxy.metrics().await;
                let count = m.sum("gembok_tls_handshakes_total", &[("suite", suite)]);
                assert_eq!(count, 1.0, "{what}");
            }
        }
    }
}

/// A low `--record-limit` makes the inbound side rotate its sending key every 8 records; the
/// outbound side (gembok or rustls) must follow each KeyUpdate for the reply to arrive intact.
#[tokio::test]
async fn sending_keys_rotate_at_the_record_limit_and_the_peer_follows() {
    for outbound in ["gembok", "rustls"] {
        let mut pair = Pair::start_args(
            &["--record-limit", "8"],
            &["--record-limit", "8", "--record-layer", outbound],
        )
        .await;
        pair.exchange_intact(outbound, 1, 4 << 20).await;
        let m = pair.inbound.metrics().await;
        let sent = m.sum("gembok_record_key_updates_total", &[("key", "send")]);
        // 4 MiB is at least 256 records: a rotation before every 9th.
        assert!(sent >= 31.0, "{outbound}: {sent} rotations");
    }
}

/// A forged record (random bytes that cannot authenticate) ends the connection with a fatal
/// bad_record_mac alert to the peer and a reset to the app, so neither takes it for a clean end;
/// one over every stack's size limit (20 KiB: rustls takes up to 2^14 + 2048 bytes) ends it with
/// record_overflow as soon as its header is in. Both user-space data paths (the kernel's is
/// checked by the kTLS VM tests).
#[tokio::test]
async fn a_forged_record_gets_a_fatal_alert_and_resets_the_app() {
    use gembok_tests::pki::{CertDir, TestPki, dns_name};
    use gembok_tests::proxy::Proxy;
    use gembok_tests::tls::{Client, forged_record, send_forged};
    use rustls::AlertDescription;

    let pki = TestPki::new();
    let dir = CertDir::new(&pki.workload("server"));
    let client = Client::new(pki.root_pem(), Some(&pki.workload("client")), false);
    for layer in ["gembok", "rustls"] {
        let app = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let proxy = Proxy::builder()
            .cert_dir(&dir)
            .inbound(app.local_addr().unwrap(), "")
            .args(["--record-layer", layer])
            .start();
        // rustls answers an oversized record with decode_error (RFC 8446 §5.1 asks for
        // record_overflow, which gembok's record layer and the kernel path send).
        let overflow = match layer {
            "gembok" => AlertDescription::RecordOverflow,
            _ => AlertDescription::DecodeError,
        };
        let cases = [
            (
                forged_record(40, &[0x5a; 40]),
                AlertDescription::BadRecordMac,
            ),
            (forged_record(0x5000, &[]), overflow),
        ];
        for (forged, alert) in cases {
            let got = send_forged(
                &client,
                proxy.inbound[0],
                &dns_name("server"),
                &app,
                &forged,
            )
            .await;
            got.assert_refused(alert, &format!("{layer}\n{}", proxy.logs()));
        }
        if layer == "gembok" {
            for reason in ["bad_record_mac", "bad_record"] {
                proxy
                    .wait_metric(
                        "gembok_record_control_closes_total",
                        &[("reason", reason)],
                        1.0,
                    )
                    .await;
            }
        }
    }
}
