//! The forwarding loop (`gembok_proxy::forward::forward`) on in-memory pipes: how much the loop
//! itself costs per byte, with no sockets and no TLS. One direction carries the payload, the
//! other stays idle (the bulk case); a 64 B ping-pong measures the per-message overhead.

use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use gembok_proxy::forward::{self, BufferPolicy, IdleWatch};
use metrics::Counter;
use tokio::io::{AsyncReadExt, AsyncWriteExt, duplex};
use tokio_util::sync::CancellationToken;

const PAYLOAD: usize = 16 * 1024 * 1024;

fn idle() -> IdleWatch {
    IdleWatch::new(Duration::from_secs(60))
}

fn bulk(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut g = c.benchmark_group("forward/bulk");
    g.throughput(Throughput::Bytes(PAYLOAD as u64));
    g.sample_size(20);
    let policies = [
        ("default", BufferPolicy::default()),
        (
            "fixed-16KiB",
            BufferPolicy {
                initial: 16 * 1024,
                large: 16 * 1024,
                grow_after: 0,
            },
        ),
        (
            "256KiB-after-128KiB",
            BufferPolicy {
                large: 256 * 1024,
                ..BufferPolicy::default()
            },
        ),
    ];
    let chunk = vec![0x5au8; 256 * 1024];
    for (name, policy) in policies {
        g.bench_function(BenchmarkId::from_parameter(name), |b| {
            b.iter(|| {
                rt.block_on(async {
                    let (mut app_client, mut app) = duplex(256 * 1024);
                    let (mut peer, mut peer_remote) = duplex(256 * 1024);
                    let fwd = tokio::spawn(async move {
                        let (up, down) = (Counter::noop(), Counter::noop());
                        let abort = CancellationToken::new();
                        forward::forward(&mut app, &mut peer, policy, idle(), &up, &down, &abort)
                            .await
                    });
                    let writer = async {
                        let mut sent = 0;
                        while sent < PAYLOAD {
                            let n = chunk.len().min(PAYLOAD - sent);
                            app_client.write_all(&chunk[..n]).await.unwrap();
                            sent += n;
                        }
                        app_client.shutdown().await.unwrap();
                        app_client
                    };
                    let reader = async {
                        let mut buf = vec![0u8; 256 * 1024];
                        let mut got = 0;
                        loop {
                            let n = peer_remote.read(&mut buf).await.unwrap();
                            if n == 0 {
                                break;
                            }
                            got += n;
                        }
                        peer_remote.shutdown().await.unwrap();
                        got
                    };
                    let (_client, got) = tokio::join!(writer, reader);
                    assert_eq!(got, PAYLOAD);
                    let outcome = fwd.await.unwrap();
                    assert_eq!(outcome.app_to_peer, PAYLOAD as u64);
                });
            });
        });
    }
    g.finish();
}

fn ping_pong(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (mut app_client, mut app) = duplex(64 * 1024);
    let (mut peer, mut peer_remote) = duplex(64 * 1024);
    rt.spawn(async move {
        let (up, down) = (Counter::noop(), Counter::noop());
        forward::forward(
            &mut app,
            &mut peer,
            BufferPolicy::default(),
            idle(),
            &up,
            &down,
            &CancellationToken::new(),
        )
        .await
    });
    // The far end echoes.
    rt.spawn(async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = peer_remote.read(&mut buf).await.unwrap_or(0);
            if n == 0 || peer_remote.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
    });
    let mut g = c.benchmark_group("forward");
    g.bench_function("ping-pong-64B", |b| {
        let msg = [7u8; 64];
        let mut back = [0u8; 64];
        b.iter(|| {
            rt.block_on(async {
                app_client.write_all(&msg).await.unwrap();
                app_client.read_exact(&mut back).await.unwrap();
            })
        });
    });
    g.finish();
}

criterion_group!(benches, bulk, ping_pong);
criterion_main!(benches);
