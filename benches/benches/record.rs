//! TLS 1.3 record protection in memory: 16 MiB of application data through an established
//! rustls connection pair per iteration (encrypt on one side, decrypt on the other), with the
//! suite gembok negotiates (AES-128-GCM) under each provider. This is the user-space crypto
//! cost of the data path, without sockets; compare with the pair's CPU s/GiB in RESULTS.md.

use std::io::{Read, Write};
use std::sync::Arc;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use gembok_certs_dev::{Ca, LeafSpec, Validity};
use gembok_proxy::config::Provider;
use rustls::{ClientConfig, ClientConnection, RootCertStore, ServerConfig, ServerConnection};
use rustls_pki_types::ServerName;

const PAYLOAD: usize = 16 * 1024 * 1024;

fn connected(kind: Provider) -> (ClientConnection, ServerConnection) {
    let root = Ca::root("bench root", Validity::days(2)).unwrap();
    let leaf = root
        .issue(&LeafSpec::workload(
            "payment",
            "ecommerce",
            "cluster.local",
            "cluster.local",
        ))
        .unwrap();
    let mut roots = RootCertStore::empty();
    roots.add(leaf.ca_der()).unwrap();
    let provider = Arc::new(gembok_proxy::tls::provider(kind, kind, false));
    let versions = gembok_proxy::tls::versions(false);
    let server = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions)
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(leaf.chain_der(), leaf.key_der())
        .unwrap();
    let client = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = ServerName::try_from("payment.ecommerce.svc.cluster.local").unwrap();
    let mut c = ClientConnection::new(Arc::new(client), name).unwrap();
    let mut s = ServerConnection::new(Arc::new(server)).unwrap();
    while c.is_handshaking() || s.is_handshaking() || c.wants_write() || s.wants_write() {
        transfer(&mut c, &mut s);
        transfer_back(&mut s, &mut c);
    }
    (c, s)
}

fn transfer(c: &mut ClientConnection, s: &mut ServerConnection) -> usize {
    let mut wire = Vec::with_capacity(80 * 1024);
    while c.wants_write() {
        c.write_tls(&mut wire).unwrap();
    }
    let mut slice = &wire[..];
    while !slice.is_empty() {
        s.read_tls(&mut slice).unwrap();
        s.process_new_packets().unwrap();
    }
    wire.len()
}

fn transfer_back(s: &mut ServerConnection, c: &mut ClientConnection) {
    let mut wire = Vec::new();
    while s.wants_write() {
        s.write_tls(&mut wire).unwrap();
    }
    let mut slice = &wire[..];
    while !slice.is_empty() {
        c.read_tls(&mut slice).unwrap();
        c.process_new_packets().unwrap();
    }
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("record/aes-128-gcm-seal+open");
    g.throughput(Throughput::Bytes(PAYLOAD as u64));
    g.sample_size(10);
    for (kind, name) in [(Provider::AwsLcRs, "aws-lc-rs"), (Provider::Ring, "ring")] {
        let (mut client, mut server) = connected(kind);
        // One record per round: rustls refuses more than 16 KiB of unread plaintext.
        let chunk = vec![0x42u8; 16 * 1024];
        let mut out = vec![0u8; 64 * 1024];
        g.bench_function(BenchmarkId::from_parameter(name), |b| {
            b.iter(|| {
                let mut moved = 0;
                while moved < PAYLOAD {
                    client.writer().write_all(&chunk).unwrap();
                    transfer(&mut client, &mut server);
                    let mut got = 0;
                    while got < chunk.len() {
                        got += server.reader().read(&mut out).unwrap();
                    }
                    moved += chunk.len();
                }
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
