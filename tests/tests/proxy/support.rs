//! Fixtures shared by the proxy tests: a sidecar pair in front of an app stand-in.

use std::net::SocketAddr;

use gembok_tests::pki::{CertDir, TestPki, dns_name};
use gembok_tests::proxy::Proxy;
use gembok_tests::traffic::ExchangeApp;

/// client → outbound gembok (as `client`) → inbound gembok (as `server`) → app.
pub struct Pair {
    pub pki: TestPki,
    pub app: ExchangeApp,
    pub inbound: Proxy,
    pub outbound: Proxy,
    pub _dirs: (CertDir, CertDir),
}

impl Pair {
    pub async fn start() -> Self {
        let app = ExchangeApp::start().await;
        Self::start_with(app.addr, app, &[]).await
    }

    /// A pair whose inbound forwards to `target`, with extra inbound proxy flags.
    pub async fn start_with(target: SocketAddr, app: ExchangeApp, inbound_args: &[&str]) -> Self {
        let pki = TestPki::new();
        let server_dir = CertDir::new(&pki.workload("server"));
        let client_dir = CertDir::new(&pki.workload("client"));
        let inbound = Proxy::builder()
            .cert_dir(&server_dir)
            .inbound(target, "")
            .args(inbound_args)
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
        Self {
            pki,
            app,
            inbound,
            outbound,
            _dirs: (server_dir, client_dir),
        }
    }

    /// Where the app connects: the outbound listener.
    pub fn entry(&self) -> SocketAddr {
        self.outbound.outbound[0]
    }
}

/// Binds a free loopback port and releases it: nothing listens there afterwards.
pub fn unused_port() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

/// Polls `/metrics` until the sum of `name` over samples matching `labels` equals `want`.
pub async fn wait_metric(proxy: &Proxy, name: &str, labels: &[(&str, &str)], want: f64) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let got = proxy.metrics().await.sum(name, labels);
        if got == want {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{name}{labels:?} is {got}, want {want}\nlogs:\n{}",
            proxy.logs()
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

impl Pair {
    /// A pair in front of an [`ExchangeApp`], with extra inbound proxy flags.
    pub async fn start_with_app_args(inbound_args: &[&str]) -> Self {
        let app = ExchangeApp::start().await;
        Self::start_with(app.addr, app, inbound_args).await
    }
}
