//! The FIPS build of `gembok-proxy` (`--features fips`, `proxy/src/config/fips.rs`): it refuses
//! every choice outside AWS-LC's FIPS module at start, runs a pair in FIPS mode with what it
//! allows, and refuses TLS clients that offer only what FIPS does not approve.
//!
//! The test command builds it into `target/fips/` and sets `GEMBOK_TEST_FIPS=1`, which makes
//! a missing build a failure; without either (a plain `cargo test`), these tests say so and
//! pass (`bins::fips_proxy`).

use std::process::Command;

use gembok_tests::bins;
use gembok_tests::openssl::{Identity, s_client};
use gembok_tests::pki::dns_name;

use crate::support::{Pair, wait_metric};

#[test]
fn the_fips_build_refuses_every_choice_outside_the_module_listing_each() {
    let Some(fips) = bins::fips_proxy() else {
        return;
    };
    let refused = [
        "--cert-dir",
        "/nonexistent",
        "--inbound",
        "127.0.0.1:0=127.0.0.1:9",
        "--crypto-provider",
        "ring",
        "--aead",
        "ring",
        "--cipher-suites",
        "TLS_AES_256_GCM_SHA384,TLS_CHACHA20_POLY1305_SHA256",
        "--key-exchange",
        "secp384r1,X25519",
        "--record-layer",
        "gembok",
    ];
    let out = Command::new(fips).args(refused).output().unwrap();
    assert_eq!(out.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&out.stderr);
    for line in [
        "--crypto-provider: ring: this is the FIPS build",
        "--aead: ring: this is the FIPS build",
        "--cipher-suites: TLS13_CHACHA20_POLY1305_SHA256 is not FIPS-approved",
        "--key-exchange: X25519 is not FIPS-approved",
        "--record-layer: gembok: this is the FIPS build",
    ] {
        assert!(stderr.contains(line), "{line:?} in\n{stderr}");
    }
    // The workspace's build takes the same flags (it is not the FIPS build): its configuration
    // check, stopped by one bad value of another flag, names none of them.
    let out = Command::new(bins::proxy())
        .args(refused)
        .arg("--max-connections=-3")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("invalid configuration (1 problem)")
            && stderr.contains("--max-connections"),
        "{stderr}"
    );
}

/// A pair of FIPS builds, each given every suite and group the FIPS tables allow (so rustls,
/// which the proxy asks at start whether its provider is FIPS throughout, agrees with them:
/// the proxy does not start otherwise), carries data both ways over rustls' records with
/// X25519MLKEM768, and says it is the FIPS build.
#[tokio::test]
async fn a_fips_pair_runs_in_fips_mode_with_everything_it_allows() {
    let Some(fips) = bins::fips_proxy() else {
        return;
    };
    let approved = [
        "--tls12",
        "true",
        "--cipher-suites",
        "TLS13_AES_128_GCM_SHA256,TLS13_AES_256_GCM_SHA384,\
         TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,\
         TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
        "--key-exchange",
        "X25519MLKEM768,secp256r1MLKEM768,MLKEM768,MLKEM1024,secp256r1,secp384r1",
    ];
    let mut pair = Pair::start_program(&fips, &approved, &[]).await;
    pair.exchange_intact("through a FIPS pair", 1, 4 << 20)
        .await;
    for (proxy, direction) in [(&pair.outbound, "outbound"), (&pair.inbound, "inbound")] {
        let m = proxy.metrics().await;
        let build = [
            ("fips", "true"),
            ("provider", "aws-lc-rs"),
            ("aead", "aws-lc-rs"),
        ];
        assert_eq!(m.sum("gembok_build_info", &build), 1.0, "{}", pair.logs());
        let labels = [
            ("direction", direction),
            ("kx", "X25519MLKEM768"),
            ("suite", "TLS13_AES_128_GCM_SHA256"),
        ];
        wait_metric(proxy, "gembok_tls_handshakes_total", &labels, 1.0).await;
        // rustls' record layer (user space), not gembok's and not the kernel's.
        let path = [("direction", direction), ("path", "userspace")];
        wait_metric(proxy, "gembok_data_path_total", &path, 1.0).await;
    }
    assert!(pair.inbound.logs().contains("FIPS mode"), "{}", pair.logs());
}

/// OpenSSL clients against a FIPS inbound: one offering only ChaCha20-Poly1305, or only X25519,
/// is refused and counted as `incompatible`; OpenSSL's defaults get through (AES-GCM, and P-256
/// after a HelloRetryRequest for its X25519 key share).
#[tokio::test]
async fn a_fips_inbound_refuses_clients_that_offer_only_what_fips_does_not_approve() {
    let Some(fips) = bins::fips_proxy() else {
        return;
    };
    let pair = Pair::start_program(&fips, &[], &[]).await;
    let id = Identity::new(&pair.pki, &pair.pki.workload("client"));
    let inbound = pair.inbound.inbound[0];
    // The app (an `ExchangeApp`) reads a 24-byte header; all zeros asks for no reply, and it
    // closes its side at once, so s_client ends.
    let ping = async |extra: &[&str]| {
        let args = [&["-brief"], extra].concat();
        let out = s_client(&id, inbound, &dns_name("server"), &args, &[0; 24]).await;
        let printed = format!(
            "stdout: {}\nstderr: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), printed)
    };
    let refused = [("direction", "inbound"), ("reason", "incompatible")];

    let only_what_fips_does_not_approve = [
        ["-ciphersuites", "TLS_CHACHA20_POLY1305_SHA256"],
        ["-groups", "X25519"],
    ];
    for (n, offer) in (1..).zip(only_what_fips_does_not_approve) {
        let (ok, printed) = ping(&offer).await;
        assert!(
            !ok && !printed.contains("CONNECTION ESTABLISHED"),
            "{offer:?}: {printed}"
        );
        let failures = "gembok_handshake_failures_total";
        wait_metric(&pair.inbound, failures, &refused, f64::from(n)).await;
    }

    let (ok, printed) = ping(&[]).await;
    assert!(
        ok && printed.contains("Ciphersuite: TLS_AES_128_GCM_SHA256"),
        "{printed}"
    );
    let labels = [("direction", "inbound"), ("kx", "secp256r1")];
    wait_metric(&pair.inbound, "gembok_tls_handshakes_total", &labels, 1.0).await;
}
