//! `--crl`: certificate revocation lists (a mounted ConfigMap, say), read and reloaded with the
//! certificates, swapped the way the kubelet swaps a volume. A revoked peer is refused on either
//! side and counted as `revoked`; a new list takes effect without a restart; a list the CA did
//! not sign keeps the last good one; the root revoking an intermediate cuts off every leaf under
//! it.

use std::time::Duration;

use gembok_certwatch::testing::SecretDir;
use gembok_tests::openssl::{Identity, SServer};
use gembok_tests::pair::Inbound;
use gembok_tests::pki::{CertDir, TestPki};
use gembok_tests::tls::Client;

use crate::rejections::try_exchange;
use crate::support::{outbound_to, reply_through, wait_metric};

const REVOKED: [(&str, &str); 2] = [("direction", "inbound"), ("reason", "revoked")];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_client_is_refused_and_a_new_list_takes_effect_without_a_restart() {
    let pki = TestPki::new();
    let volume = tempfile::tempdir().unwrap();
    let crls = SecretDir::new(volume.path());
    let publish = |pem: String| {
        crls.swap(&[("ca.crl", pem.as_bytes())])
            .expect("kubelet-style swap")
    };
    let (client_leaf, other_leaf) = (pki.workload("client"), pki.workload("other"));
    publish(
        pki.intermediate
            .crl_pem(&[other_leaf.serial_hex()], 1)
            .unwrap(),
    );
    let crl = volume.path().join("ca.crl");
    let Inbound {
        proxy,
        app: _app,
        dir: _dir,
    } = Inbound::start(&pki, "", &["--crl", crl.to_str().unwrap()]).await;
    let client = Client::new(pki.root_pem(), Some(&client_leaf), false);
    let other = Client::new(pki.root_pem(), Some(&other_leaf), false);

    try_exchange(&proxy, &client).await.unwrap();
    try_exchange(&proxy, &client).await.unwrap(); // resumed
    try_exchange(&proxy, &other).await.unwrap_err();
    wait_metric(&proxy, "gembok_handshake_failures_total", &REVOKED, 1.0).await;

    // The next list revokes `client` instead: refused at once, its session notwithstanding
    // (a reload starts new session and verification caches); `other` is admitted again.
    publish(
        pki.intermediate
            .crl_pem(&[client_leaf.serial_hex()], 2)
            .unwrap(),
    );
    let loaded = [("result", "success")];
    wait_metric(&proxy, "gembok_cert_reloads_total", &loaded, 2.0).await;
    try_exchange(&proxy, &client).await.unwrap_err();
    wait_metric(&proxy, "gembok_handshake_failures_total", &REVOKED, 2.0).await;
    try_exchange(&proxy, &other).await.unwrap();

    // A list under the intermediate's name that its key did not sign is refused with its
    // reason; the last good list stays.
    let impostor = TestPki::new();
    publish(
        impostor
            .intermediate
            .crl_pem(&[other_leaf.serial_hex()], 3)
            .unwrap(),
    );
    let refused = [("result", "failure")];
    wait_metric(&proxy, "gembok_cert_reloads_total", &refused, 1.0).await;
    proxy.wait_log("bad_crl", Duration::from_secs(10)).await;
    try_exchange(&proxy, &other).await.unwrap();
    try_exchange(&proxy, &client).await.unwrap_err();
    wait_metric(&proxy, "gembok_handshake_failures_total", &REVOKED, 3.0).await;
    assert_eq!(proxy.get("/ready").await.0, 200, "still serving");

    // The root revokes the intermediate: every leaf under it is refused, and the proxy says that
    // its own certificate is among them.
    let root_list = pki
        .root
        .crl_pem(&[pki.intermediate.serial_hex()], 1)
        .unwrap();
    publish(root_list);
    wait_metric(&proxy, "gembok_cert_reloads_total", &loaded, 3.0).await;
    try_exchange(&proxy, &other).await.unwrap_err();
    wait_metric(&proxy, "gembok_handshake_failures_total", &REVOKED, 4.0).await;
    assert!(
        proxy
            .logs()
            .contains("is revoked by a configured revocation list"),
        "{}",
        proxy.logs()
    );
}

/// An outbound route refuses a server whose certificate a list revokes, and reaches one that no
/// list names.
#[tokio::test]
async fn an_outbound_refuses_a_revoked_server() {
    let pki = TestPki::new();
    let (revoked, fine) = (pki.workload("server"), pki.workload("server"));
    let volume = tempfile::tempdir().unwrap();
    let crl = volume.path().join("ca.crl");
    std::fs::write(
        &crl,
        pki.intermediate
            .crl_pem(&[revoked.serial_hex()], 1)
            .unwrap(),
    )
    .unwrap();
    let client_dir = CertDir::new(&pki.workload("client"));
    let with_crl = ["--crl", crl.to_str().unwrap()];

    let server = SServer::reversing_as(&Identity::new(&pki, &fine), &["-tls1_3"]).await;
    let outbound = outbound_to(&client_dir, server.addr, &with_crl).await;
    let reply = reply_through(&outbound, "hello gembok").await;
    assert_eq!(
        reply.as_deref(),
        Some("kobmeg olleh"),
        "a server no list names is reached"
    );

    let server = SServer::reversing_as(&Identity::new(&pki, &revoked), &["-tls1_3"]).await;
    let outbound = outbound_to(&client_dir, server.addr, &with_crl).await;
    let reply = reply_through(&outbound, "hello gembok").await;
    assert_eq!(reply, None, "a revoked server is refused");
    let labels = [("direction", "outbound"), ("reason", "revoked")];
    wait_metric(&outbound, "gembok_handshake_failures_total", &labels, 1.0).await;
}

/// The development overlay's own fixtures, as a sidecar there is given them: product-catalog's
/// Secret as its certificate directory, the ConfigMap `gembok-crl`'s `ca.crl` as `--crl`, and
/// the overlay's SPIFFE ID for the developers' client admitted. `dev-client/` gets through;
/// `dev-client-revoked/`, the same identity, is refused as revoked (openssl s_client for both).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_development_overlay_admits_its_client_and_refuses_the_revoked_twin() {
    use gembok_tests::proxy::Proxy;
    use gembok_tests::repo;
    use gembok_tests::traffic::ExchangeApp;

    let dev = repo::root().join("manifests/overlays/development");
    let manifest = |file: &str| -> serde_json::Value {
        let text = std::fs::read_to_string(dev.join("certs").join(file)).unwrap();
        serde_yaml_ng::from_str(&text).unwrap()
    };
    let volume = tempfile::tempdir().unwrap();
    let secret = manifest("product-catalog-gembok-tls.yaml");
    let certs = volume.path().join("certs");
    std::fs::create_dir(&certs).unwrap();
    for key in ["tls.crt", "tls.key", "ca.crt"] {
        std::fs::write(certs.join(key), repo::secret_data(&secret, key)).unwrap();
    }
    let lists = manifest("gembok-crl.ecommerce.yaml");
    let crl = volume.path().join("ca.crl");
    std::fs::write(&crl, lists["data"]["ca.crl"].as_str().unwrap()).unwrap();

    let app = ExchangeApp::start().await;
    let proxy = Proxy::builder()
        .args(["--cert-dir", certs.to_str().unwrap()])
        .args(["--crl", crl.to_str().unwrap()])
        .inbound(
            app.addr,
            ",allow-san=spiffe://cluster.local/ns/ecommerce/sa/dev-client",
        )
        .start();
    proxy.ready().await;

    let handshake = |client: &str| {
        let dir = dev.join(client);
        let [cert, key, ca] = ["tls.crt", "tls.key", "ca.crt"]
            .map(|name| dir.join(name).to_str().unwrap().to_owned());
        let addr = proxy.inbound[0].to_string();
        async move {
            tokio::process::Command::new("openssl")
                .args(["s_client", "-connect", &addr, "-verify_return_error"])
                .args(["-servername", "product-catalog.ecommerce.svc.cluster.local"])
                .args([
                    "-cert",
                    &cert,
                    "-cert_chain",
                    &cert,
                    "-key",
                    &key,
                    "-CAfile",
                    &ca,
                ])
                .stdin(std::process::Stdio::null())
                .output()
                .await
                .expect("run openssl s_client")
        }
    };
    let inbound = [("direction", "inbound")];
    let revoked = handshake("dev-client-revoked").await;
    wait_metric(&proxy, "gembok_handshake_failures_total", &REVOKED, 1.0).await;
    let text = String::from_utf8_lossy(&revoked.stdout);
    assert!(
        text.contains("Verify return code: 0"),
        "the client verified the sidecar:\n{text}"
    );
    let good = handshake("dev-client").await;
    wait_metric(&proxy, "gembok_tls_handshakes_total", &inbound, 1.0).await;
    let text = String::from_utf8_lossy(&good.stdout);
    assert!(text.contains("Verify return code: 0"), "{text}");
    let metrics = proxy.metrics().await;
    assert_eq!(
        metrics.sum("gembok_handshake_failures_total", &inbound),
        1.0,
        "only the revoked twin refused:\n{}",
        metrics.show("gembok_handshake_failures_total")
    );
}
