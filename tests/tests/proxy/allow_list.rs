//! An `allow-san-file` (a mounted ConfigMap, say) changes who may call without a restart: it is
//! reloaded with the certificates, swapped the way the kubelet swaps the volume, and a bad edit
//! keeps the last good list.

use std::time::Duration;

use gembok_certwatch::testing::SecretDir;
use gembok_tests::pair::Inbound;
use gembok_tests::pki::{TestPki, spiffe};
use gembok_tests::tls::Client;

use crate::rejections::try_exchange;
use crate::support::wait_metric;

const REFUSED: [(&str, &str); 2] = [("direction", "inbound"), ("reason", "san_not_allowed")];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_allow_san_file_is_reloaded_and_a_bad_edit_keeps_the_last_good_list() {
    let pki = TestPki::new();
    let volume = tempfile::tempdir().unwrap();
    let lists = SecretDir::new(volume.path());
    let list = |text: String| {
        lists
            .swap(&[("allow-san", text.as_bytes())])
            .expect("kubelet-style swap")
    };
    list(format!("# who may call\n{}\n", spiffe("client")));
    let options = format!(
        ",allow-san-file={}",
        volume.path().join("allow-san").display()
    );
    let Inbound {
        proxy,
        app: _app,
        dir: _dir,
    } = Inbound::start(&pki, &options, &[]).await;
    let client = Client::new(pki.root_pem(), Some(&pki.workload("client")), false);
    let other = Client::new(pki.root_pem(), Some(&pki.workload("other")), false);

    // `client` is admitted, the second time by resuming its session; `other` is not.
    try_exchange(&proxy, &client).await.unwrap();
    try_exchange(&proxy, &client).await.unwrap();
    let resumed = [("direction", "inbound"), ("kind", "resumed")];
    wait_metric(&proxy, "gembok_tls_handshakes_total", &resumed, 1.0).await;
    try_exchange(&proxy, &other).await.unwrap_err();
    wait_metric(&proxy, "gembok_handshake_failures_total", &REFUSED, 1.0).await;
    // The refusal says whom it refused.
    proxy
        .wait_log("no SAN in the allow list", Duration::from_secs(10))
        .await;
    let refusal = proxy
        .logs()
        .lines()
        .find(|l| l.contains("no SAN in the allow list"))
        .map(str::to_owned);
    assert!(
        refusal
            .as_deref()
            .is_some_and(|l| l.contains(&spiffe("other"))),
        "{refusal:?}"
    );

    // The list now names `other` only: `other` is admitted, and `client` is refused even though
    // it offers the session it resumed before (a reload starts a new session cache).
    list(format!("{}\n", spiffe("other")));
    let loaded = [("result", "success")];
    wait_metric(&proxy, "gembok_cert_reloads_total", &loaded, 2.0).await;
    try_exchange(&proxy, &other).await.unwrap();
    try_exchange(&proxy, &client).await.unwrap_err();
    wait_metric(&proxy, "gembok_handshake_failures_total", &REFUSED, 2.0).await;
    let m = proxy.metrics().await;
    assert_eq!(m.sum("gembok_tls_handshakes_total", &resumed), 1.0);

    // An edit that does not parse is refused with its reason; the last good list stays.
    list(format!("{}\n*.com\n", spiffe("client")));
    let refused = [("result", "failure")];
    wait_metric(&proxy, "gembok_cert_reloads_total", &refused, 1.0).await;
    proxy
        .wait_log("bad_allow_san", Duration::from_secs(10))
        .await;
    assert!(
        proxy.logs().contains("line 2: `*.com` admits too much"),
        "{}",
        proxy.logs()
    );
    try_exchange(&proxy, &other).await.unwrap();
    try_exchange(&proxy, &client).await.unwrap_err();
    wait_metric(&proxy, "gembok_handshake_failures_total", &REFUSED, 3.0).await;
    assert_eq!(proxy.get("/ready").await.0, 200, "still serving");

    // Emptied, the list cuts everyone off at once (the refused edit above is not kept).
    list("# nobody for now\n".to_owned());
    wait_metric(&proxy, "gembok_cert_reloads_total", &loaded, 3.0).await;
    proxy
        .wait_log("every client is refused", Duration::from_secs(10))
        .await;
    try_exchange(&proxy, &other).await.unwrap_err();
    wait_metric(&proxy, "gembok_handshake_failures_total", &REFUSED, 4.0).await;
}
