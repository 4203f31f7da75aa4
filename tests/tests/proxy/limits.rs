//! Every wait a peer controls is bounded: handshake, idle, and the number of connections.

use std::time::{Duration, Instant};

use gembok_tests::pki::{CertDir, TestPki};
use gembok_tests::proxy::Proxy;
use gembok_tests::traffic::{Exchange, ExchangeApp};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::{Pair, wait_metric};

#[tokio::test]
async fn a_client_that_never_finishes_its_handshake_is_cut_off() {
    let pki = TestPki::new();
    let app = ExchangeApp::start().await;
    let dir = CertDir::new(&pki.workload("server"));
    let proxy = Proxy::builder()
        .cert_dir(&dir)
        .inbound(app.addr, "")
        .args(["--handshake-timeout", "300ms"])
        .start();
    proxy.ready().await;
    let mut silent = TcpStream::connect(proxy.inbound[0]).await.unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 1];
    let n = tokio::time::timeout(Duration::from_secs(5), silent.read(&mut buf))
        .await
        .expect("closed by the proxy");
    assert!(matches!(n, Ok(0) | Err(_)), "{n:?}");
    assert!(
        started.elapsed() >= Duration::from_millis(250),
        "closed too early: {:?}",
        started.elapsed()
    );
    wait_metric(
        &proxy,
        "gembok_handshake_failures_total",
        &[("reason", "timeout")],
        1.0,
    )
    .await;
}

#[tokio::test]
async fn an_idle_connection_is_closed_after_the_idle_timeout() {
    let pair = Pair::start_args(&["--idle-timeout", "500ms"], &[]).await;
    let mut client = TcpStream::connect(pair.entry()).await.unwrap();
    client.write_all(&[0u8; 24]).await.unwrap(); // a header, then silence
    let mut buf = Vec::new();
    let ended = tokio::time::timeout(Duration::from_secs(10), client.read_to_end(&mut buf)).await;
    assert!(ended.is_ok(), "the idle connection was not closed");
    wait_metric(
        &pair.inbound,
        "gembok_connections_closed_total",
        &[("end", "idle_timeout")],
        1.0,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_limit_wait_for_a_free_slot() {
    let mut pair = Pair::start_args(&["--max-connections", "1"], &[]).await;
    // The first connection holds the only slot until we finish it.
    let mut first = TcpStream::connect(pair.entry()).await.unwrap();
    first.write_all(&[0u8; 24]).await.unwrap();
    wait_metric(&pair.inbound, "gembok_connections_active", &[], 1.0).await;
    // The second is accepted by the kernel but not served: its exchange cannot finish yet.
    let second = Exchange {
        id: 2,
        send_len: 10,
        send_seed: 1,
        reply_len: 10,
        reply_seed: 2,
    };
    let entry = pair.entry();
    let waiting = tokio::spawn(async move { second.run(entry).await });
    // A negative can only be observed over a window: half a second without it being served.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !waiting.is_finished(),
        "the second exchange finished while the limit was reached"
    );
    let opened = pair
        .inbound
        .metrics()
        .await
        .sum("gembok_connections_opened_total", &[]);
    assert_eq!(
        opened, 1.0,
        "a second connection was served while the limit was reached"
    );
    // Freeing the slot lets it through.
    first.shutdown().await.unwrap();
    let mut rest = Vec::new();
    first.read_to_end(&mut rest).await.unwrap();
    let done = tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .expect("served after the slot freed")
        .unwrap()
        .unwrap();
    assert_eq!(done.received, second.expected_reply());
    for _ in 0..2 {
        pair.app.received.recv().await.unwrap().unwrap();
    }
}

/// The limit is per direction: peers that connect to a sidecar's inbound side and stall their
/// handshakes (unauthenticated until it completes) cannot take the app's outbound slots.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_inbound_peers_cannot_take_the_apps_outbound_slots() {
    let pair = Pair::start_args(
        &[],
        &[
            "--max-connections",
            "2",
            "--handshake-timeout",
            "120s",
            "--inbound",
            "127.0.0.1:0=127.0.0.1:9",
        ],
    )
    .await;
    // Two peers hold every inbound slot of the outbound sidecar, saying nothing.
    let mut stalled = Vec::new();
    for _ in 0..2 {
        stalled.push(TcpStream::connect(pair.outbound.inbound[0]).await.unwrap());
    }
    wait_metric(
        &pair.outbound,
        "gembok_connections_active",
        &[("direction", "inbound")],
        2.0,
    )
    .await;
    // The app's own call still goes out (within 30 s, far below the stalled handshakes' 120).
    let call = Exchange {
        id: 1,
        send_len: 1000,
        send_seed: 3,
        reply_len: 1000,
        reply_seed: 4,
    };
    let done = tokio::time::timeout(Duration::from_secs(30), call.run(pair.entry()))
        .await
        .expect("the outbound call waited for the stalled inbound peers")
        .unwrap();
    assert_eq!(done.received, call.expected_reply());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn running_out_of_file_descriptors_backs_off_and_recovers() {
    let pki = TestPki::new();
    let app = ExchangeApp::start().await;
    let dir = CertDir::new(&pki.workload("server"));
    // Few descriptors, and clients that never handshake are cut off after 1 s.
    let proxy = Proxy::builder()
        .cert_dir(&dir)
        .inbound(app.addr, "")
        .args(["--handshake-timeout", "1s"])
        .fd_limit(40)
        .start();
    proxy.ready().await;
    // More silent clients than the proxy has descriptors for: accept() fails with EMFILE.
    let mut silent = Vec::new();
    for _ in 0..60 {
        silent.push(TcpStream::connect(proxy.inbound[0]).await.unwrap());
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while proxy.metrics().await.sum("gembok_accept_errors_total", &[]) == 0.0 {
        assert!(
            Instant::now() < deadline,
            "accept never failed: {}",
            proxy.logs()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Backing off (5 ms doubling to 1 s), not spinning: a handful of failures per second.
    let first = proxy.metrics().await.sum("gembok_accept_errors_total", &[]);
    tokio::time::sleep(Duration::from_millis(1500)).await; // an observation window, not a readiness wait
    let later = proxy.metrics().await.sum("gembok_accept_errors_total", &[]);
    assert!(
        later - first < 30.0,
        "{} accept errors in 1.5 s: the accept loop spins",
        later - first
    );
    assert!(
        proxy.logs().contains("accept failed; backing off"),
        "{}",
        proxy.logs()
    );
    // Once the handshake timeout frees descriptors and the silent clients are gone, real clients
    // are served again.
    drop(silent);
    let client =
        gembok_tests::tls::Client::new(pki.root_pem(), Some(&pki.workload("client")), false);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let attempt = async {
            let mut tls = client
                .connect(proxy.inbound[0], &gembok_tests::pki::dns_name("server"))
                .await?;
            tls.write_all(&[0u8; 24]).await?;
            tls.shutdown().await?;
            let mut rest = Vec::new();
            tls.read_to_end(&mut rest).await?;
            Ok::<_, std::io::Error>(())
        };
        match tokio::time::timeout(Duration::from_secs(5), attempt).await {
            Ok(Ok(())) => break,
            other => assert!(
                Instant::now() < deadline,
                "not served after the descriptors freed up: {other:?}\n{}",
                proxy.logs()
            ),
        }
    }
}

/// A peer that never answers the SYN: the outbound connect gives up after --connect-timeout,
/// resets the app's connection and counts it.
#[tokio::test]
async fn a_connect_that_hangs_gives_up_after_the_connect_timeout() {
    // A listener whose accept queue is full (backlog 0, one connection queued, never accepted):
    // the kernel drops further SYNs, so a connect to it hangs.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let black_hole = socket.listen(0).unwrap();
    let addr = black_hole.local_addr().unwrap();
    let mut fillers = Vec::new();
    for _ in 0..2 {
        if let Ok(s) = std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
            fillers.push(s);
        }
    }
    let hung = std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(300));
    assert!(hung.is_err(), "the accept queue is not full; cannot test");

    let pki = TestPki::new();
    let dir = CertDir::new(&pki.workload("client"));
    let proxy = Proxy::builder()
        .cert_dir(&dir)
        .outbound(
            &addr.to_string(),
            ",server-name=server.test.svc.cluster.local",
        )
        .args(["--connect-timeout", "400ms"])
        .start();
    proxy.ready().await;
    let mut app = TcpStream::connect(proxy.outbound[0]).await.unwrap();
    let started = Instant::now();
    let mut buf = Vec::new();
    let end = tokio::time::timeout(Duration::from_secs(10), app.read_to_end(&mut buf))
        .await
        .expect("the proxy gave up");
    assert_eq!(
        end.map_err(|e| e.kind()).err(),
        Some(std::io::ErrorKind::ConnectionReset)
    );
    assert!(
        started.elapsed() >= Duration::from_millis(350),
        "gave up too early: {:?}",
        started.elapsed()
    );
    wait_metric(
        &proxy,
        "gembok_upstream_connect_failures_total",
        &[("reason", "timeout")],
        1.0,
    )
    .await;
    drop(black_hole);
}

/// Reads at most `chunk` bytes per `every`: a client that takes its reply slowly but steadily.
struct Throttled {
    stream: TcpStream,
    chunk: usize,
    every: Duration,
    next: std::pin::Pin<Box<tokio::time::Sleep>>,
}

impl tokio::io::AsyncRead for Throttled {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::ready!(self.next.as_mut().poll(cx));
        let mut chunk = vec![0; buf.remaining().min(self.chunk)];
        let mut limited = tokio::io::ReadBuf::new(&mut chunk);
        std::task::ready!(std::pin::Pin::new(&mut self.stream).poll_read(cx, &mut limited))?;
        buf.put_slice(limited.filled());
        let deadline = tokio::time::Instant::now() + self.every;
        self.next.as_mut().reset(deadline);
        std::task::Poll::Ready(Ok(()))
    }
}

impl tokio::io::AsyncWrite for Throttled {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        data: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.stream).poll_write(cx, data)
    }
    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.stream).poll_flush(cx)
    }
    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// A client that reads its reply steadily but slower than a sidecar's buffer drains within the
/// idle timeout (32 KiB every 40 ms; a 512 KiB buffer takes 640 ms against a 300 ms timeout) is
/// not idle: writes that make progress count, and the whole reply arrives. Before, only reads
/// counted, and the sidecar closed the stream cleanly part-way (a silent truncation).
#[tokio::test]
async fn a_slow_but_steady_reader_is_not_cut_off_by_the_idle_timeout() {
    let pair = Pair::start_args(
        &[],
        &["--idle-timeout", "300ms", "--record-layer", "rustls"],
    )
    .await;
    let x = Exchange {
        id: 1,
        send_len: 16,
        send_seed: 1,
        reply_len: 6 << 20,
        reply_seed: 2,
    };
    let stream = TcpStream::connect(pair.entry()).await.unwrap();
    let slow = Throttled {
        stream,
        chunk: 32 * 1024,
        every: Duration::from_millis(40),
        next: Box::pin(tokio::time::sleep(Duration::ZERO)),
    };
    let got = tokio::time::timeout(Duration::from_secs(120), x.run_on(slow))
        .await
        .expect("finished")
        .unwrap_or_else(|e| panic!("{e}\n{}", pair.logs()));
    assert!(
        got.received == x.expected_reply(),
        "the reply arrived cut short or altered\n{}",
        pair.logs()
    );
    let closed = pair.outbound.metrics().await.sum(
        "gembok_connections_closed_total",
        &[("end", "idle_timeout")],
    );
    assert_eq!(closed, 0.0, "{}", pair.logs());
}

/// "Max open files" from `/proc/<pid>/limits`: (soft, hard).
fn open_file_limits(pid: i32) -> (u64, u64) {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .expect("a Max open files line");
    let numbers: Vec<u64> = line
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    (numbers[0], numbers[1])
}

/// Container runtimes start processes with a soft limit of 1024 under a far higher hard one;
/// the proxy raises its own, so the soft limit never caps connections below --max-connections.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_low_soft_open_file_limit_is_raised_to_the_hard_one() {
    let (_, hard) = open_file_limits(std::process::id() as i32);
    assert!(
        hard >= 1024,
        "this test needs a hard limit of 1024 or more, not {hard}"
    );
    let pki = TestPki::new();
    let app = ExchangeApp::start().await;
    let dir = CertDir::new(&pki.workload("server"));
    let proxy = Proxy::builder()
        .cert_dir(&dir)
        .inbound(app.addr, "")
        .args(["--max-connections", "300"])
        .soft_fd_limit(128)
        .start();
    proxy.ready().await;
    assert_eq!(open_file_limits(proxy.pid()), (hard, hard));
    assert!(
        proxy.logs().contains("\"open_files\":\"") && proxy.logs().contains("raised from 128"),
        "{}",
        proxy.logs()
    );
    // More connections than the soft limit it started with had descriptors for: all taken.
    let mut held = Vec::new();
    for _ in 0..300 {
        held.push(TcpStream::connect(proxy.inbound[0]).await.unwrap());
    }
    wait_metric(&proxy, "gembok_connections_active", &[], 300.0).await;
    assert_eq!(
        proxy.metrics().await.sum("gembok_accept_errors_total", &[]),
        0.0,
        "{}",
        proxy.logs()
    );
}

/// A hard limit below what the connection limits need is reported at start, with the number of
/// connections it does leave room for.
#[test]
fn an_open_file_limit_below_the_connection_limits_is_reported() {
    let pki = TestPki::new();
    let dir = CertDir::new(&pki.workload("server"));
    let start = |max_connections: &str| {
        Proxy::builder()
            .cert_dir(&dir)
            .inbound("127.0.0.1:9".parse().unwrap(), "")
            .outbound("127.0.0.1:9", "")
            .args(["--max-connections", max_connections])
            .fd_limit(256)
            .start()
    };
    // 2 directions × 100 connections × 2 descriptors + 128 held back (64 of them for the admin
    // listener's connections) > 256.
    let short = start("100");
    assert!(
        short.logs().contains(
            "below what --max-connections needs: beyond about 64 connections new ones will fail"
        ),
        "{}",
        short.logs()
    );
    // 2 × 30 × 2 + 128 = 248 fits.
    let enough = start("30");
    assert!(
        enough.logs().contains("\"message\":\"open-file limit\"")
            && !enough.logs().contains("below what --max-connections needs"),
        "{}",
        enough.logs()
    );
}
