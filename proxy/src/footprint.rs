//! What one connection's task costs in memory before it allocates anything: the size of the
//! inbound and outbound handlers' futures, which every connection's task holds for its whole
//! life (idle ones included). Checked here because a change that looks harmless (a local that
//! keeps a slot for the unboxed TLS stream across later awaits) made every idle connection
//! 1.6 KiB heavier, which only a memory benchmark had shown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use gembok_certwatch::{BuildError, CertSource, Material};
use rustls::pki_types::ServerName;
use tokio_util::sync::CancellationToken;

use crate::Direction;
use crate::config::{InboundRoute, Limits, OutboundRoute, Provider};
use crate::forward::{BufferPolicy, Settings};
use crate::inbound::Inbound;
use crate::metrics::ListenerMetrics;
use crate::outbound::Outbound;
use crate::records;
use crate::resolve::Resolver;
use crate::serve::Handler;
use crate::test_tcp::connected;
use crate::tls::TlsConfigs;

/// Most a handler's future may take. Both are about 2.2 KiB (2224 and 2296 B on x86-64 when
/// this was written); kept inline, the TLS stream alone adds over a kilobyte (3.5 KiB then), so
/// this budget fails as soon as one is.
const BUDGET: usize = 2560;

fn limits() -> Limits {
    Limits {
        handshake_timeout: Duration::from_secs(10),
        connect_timeout: Duration::from_secs(5),
        idle_timeout: Duration::from_secs(3600),
        max_connections: 1,
    }
}

#[tokio::test]
async fn a_connection_task_holds_little_before_it_allocates() {
    // A directory that does not exist: no certificate ever loads, which is all this needs.
    let nowhere = std::env::temp_dir().join(format!("gembok-footprint-{}", std::process::id()));
    let (certs, _reload) = gembok_certwatch::start(
        CertSource::Dir(nowhere),
        Arc::new(rustls::crypto::aws_lc_rs::default_provider()),
        gembok_certwatch::Options {
            watch_directories: false,
            ..Default::default()
        },
        |_: &Material| -> Result<TlsConfigs, BuildError> { unreachable!("no certificates here") },
        CancellationToken::new(),
    );
    let forward = Settings {
        idle_timeout: Duration::from_secs(3600),
        buffers: BufferPolicy::default(),
    };
    let layer = Arc::new(records::Layer {
        library: Provider::AwsLcRs,
        record_limit: None,
        buffers: forward.buffers,
    });
    let local: SocketAddr = "127.0.0.1:1".parse().unwrap();
    let inbound = Inbound {
        route: InboundRoute {
            listen: local,
            target: local,
            allow_san: Vec::new(),
            allow_san_files: Vec::new(),
            alpn: Vec::new(),
            proxy_protocol: false,
        },
        index: 0,
        certs: certs.clone(),
        limits: limits(),
        forward,
        metrics: ListenerMetrics::new(Direction::Inbound, "test".to_owned()),
        ktls: None,
        records: Some(layer.clone()),
        app: Resolver::fixed(local),
    };
    let outbound = Outbound {
        route: OutboundRoute {
            listen: local,
            host: "peer.test".to_owned(),
            port: 1,
            server_name: ServerName::try_from("peer.test").unwrap(),
            alpn: Vec::new(),
        },
        index: 0,
        certs,
        limits: limits(),
        forward,
        metrics: ListenerMetrics::new(Direction::Outbound, "test".to_owned()),
        ktls: None,
        records: Some(layer),
        peer: Resolver::fixed(local),
    };
    let inbound_size =
        std::mem::size_of_val(&inbound.proxy(connected().await.0, CancellationToken::new()));
    let outbound_size =
        std::mem::size_of_val(&outbound.proxy(connected().await.0, CancellationToken::new()));
    assert!(
        inbound_size <= BUDGET,
        "inbound's future is {inbound_size} B"
    );
    assert!(
        outbound_size <= BUDGET,
        "outbound's future is {outbound_size} B"
    );
}
