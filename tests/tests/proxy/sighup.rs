//! SIGHUP re-reads the certificate files at once, but files identical to those served are not
//! a reload: no "certificate loaded", no `gembok_cert_reloads_total{result="success"}`, and the
//! TLS configurations (with their session caches) stay.

use std::time::{Duration, Instant};

use gembok_tests::pki::{CertDir, TestPki};
use gembok_tests::proxy::Proxy;
use gembok_tests::traffic::ExchangeApp;

use crate::support::wait_metric;

const UNCHANGED: &str = "certificate files unchanged since they were loaded; not reloading";

/// Polls the logs until `needle` has appeared `times` times.
async fn wait_log(proxy: &Proxy, needle: &str, times: usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while proxy.logs().matches(needle).count() < times {
        assert!(
            Instant::now() < deadline,
            "`{needle}` not logged {times} times:\n{}",
            proxy.logs()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn sighup_with_unchanged_files_is_not_a_reload() {
    let pki = TestPki::new();
    let app = ExchangeApp::start().await;
    let dir = CertDir::new(&pki.workload("server"));
    let proxy = Proxy::builder()
        .cert_dir(&dir)
        .inbound(app.addr, "")
        .args(["--log", "gembok_certwatch=debug,info"])
        .start();
    proxy.ready().await;
    let success = [("result", "success")];
    wait_metric(&proxy, "gembok_cert_reloads_total", &success, 1.0).await;

    for sent in 1..=2 {
        proxy.signal(libc::SIGHUP);
        wait_log(&proxy, UNCHANGED, sent).await;
    }
    let metrics = proxy.metrics().await;
    assert_eq!(metrics.sum("gembok_cert_reloads_total", &success), 1.0);
    assert_eq!(proxy.logs().matches("certificate loaded").count(), 1);

    // New content is still loaded (here through the directory events).
    dir.swap(&pki.workload("server"));
    wait_metric(&proxy, "gembok_cert_reloads_total", &success, 2.0).await;
}
