//! How the inbound opens its connection to the app. The client's first bytes nearly always
//! arrive with its handshake's last flight; the inbound then writes them as soon as it is
//! connected, and the ACK that completes TCP's handshake rides on them: the app's socket
//! receives SYN and data, nothing in between, and the app wakes once. An app that speaks first
//! (the client sends nothing) is not kept waiting for that ACK.

use std::net::SocketAddr;
use std::process::Command;
use std::time::Instant;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::support::{Pair, assert_not_held_by_a_kernel_timer};
use gembok_tests::pki::dns_name;
use gembok_tests::traffic::ExchangeApp;

/// Segments the app's end of a connection (`local` ← `peer`) has received, from `ss`.
fn segments_in(local: SocketAddr, peer: SocketAddr) -> u32 {
    let out = Command::new("ss")
        .args(["-tinH", "state", "established"])
        .arg(format!(
            "( sport = :{} and dport = :{} )",
            local.port(),
            peer.port()
        ))
        .output()
        .expect("ss (iproute2) runs");
    let text = String::from_utf8_lossy(&out.stdout);
    let field = text
        .split_whitespace()
        .find_map(|f| f.strip_prefix("segs_in:"))
        .unwrap_or_else(|| panic!("no segs_in for {local} <- {peer} in: {text}"));
    field.parse().unwrap()
}

#[tokio::test]
async fn the_app_gets_its_connection_with_the_clients_first_bytes() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let app = listener.local_addr().unwrap();
    let pair = Pair::start_with(app, ExchangeApp::start().await, &[]).await;
    // A TLS client straight to the inbound whose request leaves with its Finished (as from an
    // outbound sidecar): full handshake first, then resumed ones.
    let client = pair.mesh_client();
    let inbound = pair.inbound.inbound[0];
    for round in 0..3 {
        let client = client.clone();
        let handshake = tokio::task::spawn_blocking(move || {
            client.handshake_sending(inbound, &dns_name("server"), b"request")
        });
        let (mut s, from) = listener.accept().await.unwrap();
        let (_tls, _tcp) = handshake.await.unwrap().unwrap();
        let mut got = [0u8; 7];
        s.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"request");
        assert_eq!(
            segments_in(app, from),
            2,
            "round {round}: the app's socket received more than SYN and the request\n{}",
            pair.logs()
        );
    }
}

#[tokio::test]
async fn an_app_that_speaks_first_greets_without_delay() {
    // Were the ACK held for a first write that never comes, each connection would wait for
    // the kernel's delayed-ACK timer (200 ms) before the app even accepted it.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let app = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let _ = s.write_all(b"220 hello\r\n").await;
                let mut rest = Vec::new();
                let _ = s.read_to_end(&mut rest).await;
            });
        }
    });
    let pair = Pair::start_with(app, ExchangeApp::start().await, &[]).await;
    let mut greeted_after = Vec::new();
    for _ in 0..20 {
        let began = Instant::now();
        let mut client = TcpStream::connect(pair.entry()).await.unwrap();
        let mut greeting = [0u8; 11];
        client.read_exact(&mut greeting).await.unwrap();
        assert_eq!(&greeting, b"220 hello\r\n");
        greeted_after.push(began.elapsed());
    }
    assert_not_held_by_a_kernel_timer(greeted_after, "server-first greetings", pair.logs());
}
