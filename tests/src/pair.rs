//! A sidecar pair in front of an app stand-in: client → outbound gembok-proxy (as `client`) →
//! mTLS → inbound gembok-proxy (as `server`) → app.

use std::net::SocketAddr;
use std::time::Duration;

use crate::pki::{CertDir, TestPki, dns_name};
use crate::proxy::{Proxy, ProxyBuilder};
use crate::tls::Client;
use crate::traffic::{Exchange, ExchangeApp};

pub struct Pair {
    pub pki: TestPki,
    pub app: ExchangeApp,
    pub inbound: Proxy,
    pub outbound: Proxy,
    _dirs: (CertDir, CertDir),
}

impl Pair {
    /// A TLS client of the mesh (the PKI's `client` workload), to talk straight to the inbound.
    pub fn mesh_client(&self) -> Client {
        Client::new(
            self.pki.root_pem(),
            Some(&self.pki.workload("client")),
            false,
        )
    }

    /// A pair in front of an [`ExchangeApp`].
    pub async fn start() -> Self {
        Self::start_args(&[], &[]).await
    }

    /// A pair in front of an [`ExchangeApp`], with extra flags for each proxy.
    pub async fn start_args(inbound_args: &[&str], outbound_args: &[&str]) -> Self {
        let app = ExchangeApp::start().await;
        Self::launch(app.addr, app, inbound_args, outbound_args).await
    }

    /// A pair of `program` (another build of `gembok-proxy`: the FIPS one) in front of an
    /// [`ExchangeApp`], with extra flags for each proxy.
    pub async fn start_program(
        program: &std::path::Path,
        inbound_args: &[&str],
        outbound_args: &[&str],
    ) -> Self {
        let app = ExchangeApp::start().await;
        let args = |args: &[&str]| Proxy::builder().program(program).args(args);
        Self::launch_builders(app.addr, app, args(inbound_args), args(outbound_args)).await
    }

    /// A pair whose inbound forwards to `target` (which need not be `app`), with extra inbound flags.
    pub async fn start_with(target: SocketAddr, app: ExchangeApp, inbound_args: &[&str]) -> Self {
        Self::launch(target, app, inbound_args, &[]).await
    }

    async fn launch(
        target: SocketAddr,
        app: ExchangeApp,
        inbound_args: &[&str],
        outbound_args: &[&str],
    ) -> Self {
        let (inbound, outbound) = (Proxy::builder(), Proxy::builder());
        let (inbound, outbound) = (inbound.args(inbound_args), outbound.args(outbound_args));
        Self::launch_builders(target, app, inbound, outbound).await
    }

    async fn launch_builders(
        target: SocketAddr,
        app: ExchangeApp,
        inbound: ProxyBuilder,
        outbound: ProxyBuilder,
    ) -> Self {
        let pki = TestPki::new();
        let server_dir = CertDir::new(&pki.workload("server"));
        let client_dir = CertDir::new(&pki.workload("client"));
        let inbound = inbound.cert_dir(&server_dir).inbound(target, "").start();
        let outbound = outbound
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

    /// Both sidecars' logs, for a failure message.
    pub fn logs(&self) -> String {
        format!(
            "--- outbound:\n{}\n--- inbound:\n{}",
            self.outbound.logs(),
            self.inbound.logs()
        )
    }

    /// Where the app's client connects: the outbound listener.
    pub fn entry(&self) -> SocketAddr {
        self.outbound.outbound[0]
    }

    /// Sends `each_way` bytes to the app and back through the pair (seeded by `id`) and asserts
    /// both directions arrived intact; `what` names the case in a failure.
    pub async fn exchange_intact(&mut self, what: &str, id: u64, each_way: u64) {
        let x = Exchange::both_ways(id, each_way);
        let got = tokio::time::timeout(Duration::from_secs(300), x.run(self.entry()))
            .await
            .expect("transfer finished")
            .unwrap_or_else(|e| panic!("{what}: client side: {e}\n{}", self.logs()));
        assert_eq!(
            got.received,
            x.expected_reply(),
            "{what}: peer → app corrupted"
        );
        let at_app = self.app.received.recv().await.unwrap().expect("app side");
        assert_eq!(
            at_app.stream,
            x.expected_at_app(),
            "{what}: app → peer corrupted"
        );
    }
}

/// Binds a free loopback port and releases it: nothing listens there afterwards.
pub fn unused_port() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("local addr")
}

/// An inbound gembok-proxy alone, for `server` of `pki`, in front of an [`ExchangeApp`]: for tests
/// whose client speaks TLS to the inbound listener itself.
pub struct Inbound {
    pub app: ExchangeApp,
    pub proxy: Proxy,
    /// The certificate directory, to swap certificates the way the kubelet does.
    pub dir: CertDir,
}

impl Inbound {
    /// `options` follow the route (e.g. `,allow-san=...`); `args` are extra flags. Returns once
    /// the proxy is ready.
    pub async fn start(pki: &TestPki, options: &str, args: &[&str]) -> Self {
        let app = ExchangeApp::start().await;
        let dir = CertDir::new(&pki.workload("server"));
        let proxy = Proxy::builder()
            .cert_dir(&dir)
            .inbound(app.addr, options)
            .args(args)
            .start();
        proxy.ready().await;
        Self { app, proxy, dir }
    }

    /// The inbound listener.
    pub fn addr(&self) -> SocketAddr {
        self.proxy.inbound[0]
    }
}
