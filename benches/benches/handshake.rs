//! TLS 1.3 mutual-auth handshakes in memory (no sockets): full and resumed, for both
//! providers, with and without post-quantum key exchange. The configs are built the way
//! `proxy/src/tls.rs` builds them (its provider and suite policy, a client-certificate
//! verifier, one ticket per connection, the server's suite order) from an ECDSA P-256 chain.
//! Each iteration is one complete handshake: client and server CPU together.

use std::sync::Arc;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use gembok_certs_dev::{Ca, LeafSpec, Validity};
use gembok_proxy::config::{KxGroup, Provider};
use rustls::client::Resumption;
use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, ClientConnection, RootCertStore, ServerConfig, ServerConnection};
use rustls_pki_types::ServerName;

struct Pair {
    client: Arc<ClientConfig>,
    server: Arc<ServerConfig>,
}

fn configs(kind: Provider, post_quantum: bool, resume: bool) -> Pair {
    let root = Ca::root("bench root", Validity::days(2)).unwrap();
    let mid = root
        .intermediate("bench intermediate", Validity::days(2))
        .unwrap();
    let spec = |n: &str| LeafSpec::workload(n, "ecommerce", "cluster.local", "cluster.local");
    let server_leaf = mid.issue(&spec("payment")).unwrap();
    let client_leaf = mid.issue(&spec("product-catalog")).unwrap();
    let mut roots = RootCertStore::empty();
    roots.add(server_leaf.ca_der()).unwrap();
    let roots = Arc::new(roots);

    let mut provider: CryptoProvider = gembok_proxy::tls::provider(kind, kind, false);
    if !post_quantum {
        // What `--key-exchange X25519` configures.
        provider.kx_groups = gembok_proxy::tls::key_exchange(kind, &[KxGroup::X25519]);
    }
    let provider = Arc::new(provider);
    let versions = gembok_proxy::tls::versions(false);

    let verifier = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
        .build()
        .unwrap();
    let mut server = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions)
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(server_leaf.chain_der(), server_leaf.key_der())
        .unwrap();
    server.ignore_client_order = true;
    server.send_tls13_tickets = 1;

    let mut client = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(client_leaf.chain_der(), client_leaf.key_der())
        .unwrap();
    client.resumption = if resume {
        Resumption::in_memory_sessions(64)
    } else {
        Resumption::disabled()
    };
    Pair {
        client: Arc::new(client),
        server: Arc::new(server),
    }
}

/// Moves TLS bytes between the two until neither has anything to say.
fn pump(client: &mut ClientConnection, server: &mut ServerConnection) {
    let mut buf = Vec::with_capacity(16 * 1024);
    loop {
        let mut moved = false;
        while client.wants_write() {
            buf.clear();
            client.write_tls(&mut buf).unwrap();
            let mut slice = &buf[..];
            while !slice.is_empty() {
                server.read_tls(&mut slice).unwrap();
            }
            server.process_new_packets().unwrap();
            moved = true;
        }
        while server.wants_write() {
            buf.clear();
            server.write_tls(&mut buf).unwrap();
            let mut slice = &buf[..];
            while !slice.is_empty() {
                client.read_tls(&mut slice).unwrap();
            }
            client.process_new_packets().unwrap();
            moved = true;
        }
        if !moved {
            return;
        }
    }
}

fn handshake(pair: &Pair) -> bool {
    let name = ServerName::try_from("payment.ecommerce.svc.cluster.local").unwrap();
    let mut client = ClientConnection::new(pair.client.clone(), name).unwrap();
    let mut server = ServerConnection::new(pair.server.clone()).unwrap();
    pump(&mut client, &mut server);
    assert!(!client.is_handshaking() && !server.is_handshaking());
    assert!(server.peer_certificates().is_some());
    client.handshake_kind() == Some(rustls::HandshakeKind::Resumed)
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("handshake");
    g.sample_size(50);
    let cases = [
        (Provider::AwsLcRs, true, "aws-lc-rs/X25519MLKEM768"),
        (Provider::AwsLcRs, false, "aws-lc-rs/X25519"),
        // ring has no ML-KEM: its default groups are classical only.
        (Provider::Ring, true, "ring/X25519"),
    ];
    for (kind, pq, label) in cases {
        let full = configs(kind, pq, false);
        g.bench_function(BenchmarkId::new("full", label), |b| {
            b.iter(|| assert!(!handshake(&full)))
        });
        let resumed = configs(kind, pq, true);
        handshake(&resumed); // the first one stores a ticket
        g.bench_function(BenchmarkId::new("resumed", label), |b| {
            b.iter(|| assert!(handshake(&resumed), "did not resume"))
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
