//! Fixtures shared by the proxy tests (the harness holds the reusable parts).

pub use gembok_tests::pair::{Pair, unused_port};
use gembok_tests::proxy::Proxy;

/// Polls `/metrics` until the sum of `name` over samples matching `labels` equals `want`.
pub async fn wait_metric(proxy: &Proxy, name: &str, labels: &[(&str, &str)], want: f64) {
    proxy.wait_metric(name, labels, want).await;
}
