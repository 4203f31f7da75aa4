//! Tests' own TCP sockets: a connected loopback pair, and what the kernel reports about a
//! socket (`TCP_INFO`), for tests that check what went on the wire without capturing packets.

use std::os::fd::AsRawFd;

use tokio::net::{TcpListener, TcpStream};

/// A connected pair on loopback: (the connecting end, the accepted end).
pub async fn connected() -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let connecting = TcpStream::connect(listener.local_addr().unwrap())
        .await
        .unwrap();
    let (accepted, _) = listener.accept().await.unwrap();
    (connecting, accepted)
}

/// The socket's `tcp_info`, as far as `tcpi_notsent_bytes` at least (Linux 4.6 and later).
pub fn info(tcp: &impl AsRawFd) -> libc::tcp_info {
    crate::tcp_info::info(tcp.as_raw_fd()).expect("TCP_INFO")
}
