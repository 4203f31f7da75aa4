//! A certificate reload as the proxy does it: the kubelet-style `..data` swap of a Secret
//! directory, then `gembok_certwatch` reads, validates and builds every rustls config
//! (`gembok_proxy::tls::build`) and swaps the published pointer. Each iteration is one reload
//! between two certificate generations, timed until a reader sees the new one.

use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use criterion::{Criterion, criterion_group, criterion_main};
use gembok_certs_dev::{Ca, Leaf, LeafSpec, Validity};
use gembok_certwatch::testing::SecretDir;
use gembok_certwatch::{CertSource, Options, Requirements, Usage};
use gembok_proxy::cli::Cli;
use gembok_proxy::config::{Config, Provider};
use tokio_util::sync::CancellationToken;

fn swap(secret: &SecretDir, leaf: &Leaf) {
    secret
        .swap(&[
            ("tls.crt", leaf.chain_pem.as_bytes()),
            ("tls.key", leaf.key_pem.as_bytes()),
            ("ca.crt", leaf.ca_pem.as_bytes()),
        ])
        .unwrap();
}

fn bench(c: &mut Criterion) {
    // The watcher task runs on this runtime's worker; the benchmark loop polls from outside.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let root = Ca::root("bench root", Validity::days(2)).unwrap();
    let mid = root
        .intermediate("bench intermediate", Validity::days(2))
        .unwrap();
    let spec = LeafSpec::workload("payment", "ecommerce", "cluster.local", "cluster.local");
    let generations = [mid.issue(&spec).unwrap(), mid.issue(&spec).unwrap()];

    let tmp = tempfile::tempdir().unwrap();
    let secret = SecretDir::new(tmp.path());
    swap(&secret, &generations[0]);

    // A sidecar with one inbound and one outbound route, configured like the real binary.
    let dir = tmp.path().display().to_string();
    let cli = Cli::try_parse_from([
        "gembok-proxy",
        "--cert-dir",
        &dir,
        "--inbound",
        "127.0.0.1:8443=127.0.0.1:8080",
        "--outbound",
        "127.0.0.1:15701=payment.ecommerce.svc.cluster.local:8443",
    ])
    .unwrap();
    let config = Arc::new(Config::from_cli(&cli.proxy).unwrap());
    let provider = Arc::new(gembok_proxy::tls::provider(
        Provider::AwsLcRs,
        Provider::AwsLcRs,
        false,
    ));
    let stop = CancellationToken::new();
    let (current, handle) = rt.block_on(async {
        let build_config = config.clone();
        let build_provider = provider.clone();
        gembok_certwatch::start(
            CertSource::Dir(tmp.path().to_owned()),
            provider.clone(),
            Options {
                poll_interval: Duration::from_secs(3600),
                watch_directories: false,
                requirements: Requirements {
                    ca_required: true,
                    usages: vec![Usage::Server, Usage::Client],
                },
                ..Options::default()
            },
            move |m| gembok_proxy::tls::build(m, &build_provider, &build_config),
            stop.child_token(),
        )
    });
    assert!(current.current().is_some(), "initial load failed");

    let mut next = 1;
    c.bench_function("reload/swap-validate-build-publish", |b| {
        b.iter(|| {
            let leaf = &generations[next % 2];
            next += 1;
            swap(&secret, leaf);
            let want = leaf.serial_hex();
            handle.reload_now();
            let deadline = Instant::now() + Duration::from_secs(5);
            while current
                .current()
                .is_none_or(|l| l.material.leaf.serial != want)
            {
                assert!(Instant::now() < deadline, "reload not published");
                std::thread::yield_now();
            }
        })
    });
    stop.cancel();
}

criterion_group!(benches, bench);
criterion_main!(benches);
