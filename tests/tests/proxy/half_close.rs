//! Half-close is exact in both orders; truncations and failures never look like a clean end.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use gembok_tests::pki::dns_name;
use gembok_tests::proxy::Proxy;
use gembok_tests::traffic::ExchangeApp;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

use crate::support::{Pair, unused_port, wait_metric};

/// How the app's read side ended.
#[derive(Debug, PartialEq)]
enum AppSaw {
    Eof(Vec<u8>),
    Error(io::ErrorKind, Vec<u8>),
}

/// An app that runs `behaviour` on its first connection and reports the result.
async fn one_shot_app<F, Fut, T>(behaviour: F) -> (SocketAddr, oneshot::Receiver<T>)
where
    F: FnOnce(TcpStream) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = T> + Send,
    T: Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = oneshot::channel();
    tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        let _ = tx.send(behaviour(stream).await);
    });
    (addr, rx)
}

async fn read_until_end(stream: &mut (impl AsyncReadExt + Unpin)) -> AppSaw {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) => return AppSaw::Eof(got),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) => return AppSaw::Error(e.kind(), got),
        }
    }
}

async fn pair_to(target: SocketAddr) -> Pair {
    Pair::start_with(target, ExchangeApp::start().await, &[]).await
}

/// Waits until `side` has closed a connection the way `end` says.
async fn closed(side: &Proxy, end: &str) {
    wait_metric(
        side,
        "gembok_connections_closed_total",
        &[("end", end)],
        1.0,
    )
    .await;
}

/// Waits until `side` has counted a truncation and closed the connection as one.
async fn truncated(side: &Proxy) {
    wait_metric(side, "gembok_truncations_total", &[], 1.0).await;
    closed(side, "truncated").await;
}

#[tokio::test]
async fn client_fin_first_keeps_the_reply_flowing() {
    // The app answers only after it has seen the whole request (EOF), like a batch upload.
    let (app, saw) = one_shot_app(|mut s| async move {
        let request = read_until_end(&mut s).await;
        s.write_all(b"reply after your FIN").await.unwrap();
        s.shutdown().await.unwrap();
        request
    })
    .await;
    let pair = pair_to(app).await;
    let mut client = TcpStream::connect(pair.entry()).await.unwrap();
    client.write_all(b"request").await.unwrap();
    client.shutdown().await.unwrap();
    let mut reply = Vec::new();
    client.read_to_end(&mut reply).await.unwrap();
    assert_eq!(reply, b"reply after your FIN");
    assert_eq!(saw.await.unwrap(), AppSaw::Eof(b"request".to_vec()));
    closed(&pair.inbound, "clean").await;
    closed(&pair.outbound, "clean").await;
}

#[tokio::test]
async fn server_fin_first_keeps_the_request_flowing() {
    // The app speaks first and closes its side at once, then keeps reading (server-speaks-first).
    let (app, saw) = one_shot_app(|mut s| async move {
        s.write_all(b"greeting").await.unwrap();
        s.shutdown().await.unwrap();
        read_until_end(&mut s).await
    })
    .await;
    let pair = pair_to(app).await;
    let mut client = TcpStream::connect(pair.entry()).await.unwrap();
    let mut greeting = Vec::new();
    client.read_to_end(&mut greeting).await.unwrap(); // the app's FIN arrived as our EOF
    assert_eq!(greeting, b"greeting");
    client
        .write_all(b"data after the server's FIN")
        .await
        .unwrap();
    client.shutdown().await.unwrap();
    assert_eq!(
        saw.await.unwrap(),
        AppSaw::Eof(b"data after the server's FIN".to_vec())
    );
    closed(&pair.inbound, "clean").await;
}

#[tokio::test]
async fn a_peer_fin_without_close_notify_resets_the_app() {
    let (app, saw) = one_shot_app(|mut s| async move { read_until_end(&mut s).await }).await;
    let pair = pair_to(app).await;
    // A TLS client straight to the inbound listener that drops TCP without close_notify.
    let client = pair.mesh_client();
    let mut tls = client
        .connect(pair.inbound.inbound[0], &dns_name("server"))
        .await
        .unwrap();
    tls.write_all(b"half a request").await.unwrap();
    tls.flush().await.unwrap();
    wait_metric(
        &pair.inbound,
        "gembok_bytes_total",
        &[("flow", "peer_to_app")],
        14.0,
    )
    .await;
    let (mut tcp, _) = tls.into_inner();
    tcp.shutdown().await.unwrap(); // FIN, no close_notify (the socket stays open)
    match saw.await.unwrap() {
        AppSaw::Error(io::ErrorKind::ConnectionReset, got) => assert_eq!(got, b"half a request"),
        other => panic!("the app must see a reset, not {other:?}"),
    }
    truncated(&pair.inbound).await;
}

#[tokio::test]
async fn a_refused_upstream_resets_the_client() {
    let pair = pair_to(unused_port()).await;
    let mut client = TcpStream::connect(pair.entry()).await.unwrap();
    client.write_all(b"anyone there?").await.unwrap();
    let saw = read_until_end(&mut client).await;
    assert!(
        matches!(saw, AppSaw::Error(io::ErrorKind::ConnectionReset, _)),
        "client saw {saw:?}"
    );
    wait_metric(
        &pair.inbound,
        "gembok_upstream_connect_failures_total",
        &[("reason", "refused")],
        1.0,
    )
    .await;
    closed(&pair.inbound, "upstream_failed").await;
    closed(&pair.outbound, "reset").await;
}

#[tokio::test]
async fn an_upstream_reset_mid_stream_reaches_the_client() {
    // The app reads 1 MiB of an upload, then resets the connection.
    let (app, _saw) = one_shot_app(|mut s| async move {
        let mut buf = vec![0u8; 1 << 20];
        s.read_exact(&mut buf).await.unwrap();
        s.set_zero_linger().unwrap();
        drop(s);
    })
    .await;
    let pair = pair_to(app).await;
    let client = TcpStream::connect(pair.entry()).await.unwrap();
    let (mut r, mut w) = client.into_split();
    let upload = tokio::spawn(async move {
        let chunk = vec![7u8; 64 * 1024];
        for _ in 0..(64 * 16) {
            w.write_all(&chunk).await?; // 64 MiB: far more than the app will read
        }
        Ok::<_, io::Error>(())
    });
    let saw = tokio::time::timeout(Duration::from_secs(30), read_until_end(&mut r))
        .await
        .unwrap();
    let upload = upload.await.unwrap();
    // A socket reports its reset to one call only: the read, or the upload's write if that came
    // first (the read then finds the end). Either way no byte of a reply arrived.
    let reset = |k: io::ErrorKind| k == io::ErrorKind::ConnectionReset;
    let read_reset = matches!(saw, AppSaw::Error(k, _) if reset(k));
    let write_reset = matches!(&upload, Err(e) if reset(e.kind()));
    assert!(
        read_reset || (write_reset && matches!(&saw, AppSaw::Eof(d) if d.is_empty())),
        "client saw {saw:?}, upload {upload:?}"
    );
    assert!(upload.is_err(), "the upload must fail, not complete");
    closed(&pair.inbound, "reset").await;
    closed(&pair.outbound, "reset").await;
}

#[tokio::test]
async fn a_peer_sidecar_that_dies_mid_stream_resets_the_client() {
    // The app waits for an upload that never ends; the inbound sidecar is killed meanwhile, so
    // the outbound sees the TCP stream end without close_notify: a truncation.
    let (app, _saw) = one_shot_app(|mut s| async move { read_until_end(&mut s).await }).await;
    let pair = pair_to(app).await;
    let mut client = TcpStream::connect(pair.entry()).await.unwrap();
    client.write_all(b"the start of a request").await.unwrap();
    wait_metric(
        &pair.inbound,
        "gembok_bytes_total",
        &[("flow", "peer_to_app")],
        22.0,
    )
    .await;
    pair.inbound.signal(libc::SIGKILL);
    let saw = tokio::time::timeout(Duration::from_secs(10), read_until_end(&mut client))
        .await
        .unwrap();
    assert!(
        matches!(saw, AppSaw::Error(io::ErrorKind::ConnectionReset, _)),
        "the client must see a reset, not {saw:?}"
    );
    truncated(&pair.outbound).await;
}

#[tokio::test]
async fn a_close_notify_that_comes_with_the_finished_is_a_clean_end() {
    // The client's Finished and close_notify in one segment, then FIN: the inbound reads the
    // close_notify while it completes the handshake, before the connection leaves rustls for the
    // record layer (or the kernel), which must still learn of it.
    let (app, saw) = one_shot_app(|mut s| async move { read_until_end(&mut s).await }).await;
    let pair = pair_to(app).await;
    let client = pair.mesh_client();
    let inbound = pair.inbound.inbound[0];
    let answer = tokio::task::spawn_blocking(move || {
        let (mut tls, mut tcp) = client
            .handshake_then_fin(inbound, &dns_name("server"), true)
            .unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        // Everything the inbound sends until its FIN: its close_notify, not a reset.
        loop {
            match tls.read_tls(&mut tcp) {
                Ok(0) => return Ok(tls.process_new_packets().unwrap().peer_has_closed()),
                Ok(_) => {
                    tls.process_new_packets().unwrap();
                }
                Err(e) => return Err(e.kind()),
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(answer, Ok(true), "the inbound's answer (close_notify seen)");
    assert_eq!(saw.await.unwrap(), AppSaw::Eof(Vec::new()));
    closed(&pair.inbound, "clean").await;
}

#[tokio::test]
async fn a_fin_that_comes_with_the_finished_is_a_truncation() {
    // The client's Finished, then FIN with no close_notify: rustls may see that FIN while it
    // completes the handshake. The connection is a truncation (the app reset), not a failed
    // hand-over.
    let (app, saw) = one_shot_app(|mut s| async move { read_until_end(&mut s).await }).await;
    let pair = pair_to(app).await;
    let client = pair.mesh_client();
    let inbound = pair.inbound.inbound[0];
    let _client = tokio::task::spawn_blocking(move || {
        client
            .handshake_then_fin(inbound, &dns_name("server"), false)
            .unwrap()
    })
    .await
    .unwrap();
    match saw.await.unwrap() {
        AppSaw::Error(io::ErrorKind::ConnectionReset, got) => assert_eq!(got, b""),
        other => panic!("the app must see a reset, not {other:?}"),
    }
    truncated(&pair.inbound).await;
}

#[tokio::test]
async fn a_connection_closed_before_any_data_ends_cleanly_on_both_sides() {
    // The client connects and closes at once; through the pair, the outbound's Finished and
    // close_notify can reach the inbound together (the deterministic case is above).
    let (app, saw) = one_shot_app(|mut s| async move { read_until_end(&mut s).await }).await;
    let pair = pair_to(app).await;
    let mut client = TcpStream::connect(pair.entry()).await.unwrap();
    client.shutdown().await.unwrap();
    let mut reply = Vec::new();
    client.read_to_end(&mut reply).await.unwrap();
    assert_eq!(reply, b"");
    assert_eq!(saw.await.unwrap(), AppSaw::Eof(Vec::new()));
    for side in [&pair.inbound, &pair.outbound] {
        closed(side, "clean").await;
    }
}
