//! Tests' own TCP sockets: a connected loopback pair, and what the kernel reports about a
//! socket (`TCP_INFO`), for tests that check what went on the wire without capturing packets.

// nix has no binding for TCP_INFO: one `getsockopt` into libc's struct, tests only.
#![allow(unsafe_code)]

use std::io;
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
    // SAFETY: `tcp_info` is plain integers, valid zeroed; the kernel writes at most `len`
    // bytes into it, and `len` is its size.
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    let rc = unsafe {
        libc::getsockopt(
            tcp.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&raw mut info).cast(),
            &mut len,
        )
    };
    assert_eq!(rc, 0, "TCP_INFO: {}", io::Error::last_os_error());
    let needed = std::mem::offset_of!(libc::tcp_info, tcpi_notsent_bytes) + 4;
    assert!(
        len as usize >= needed,
        "this kernel's TCP_INFO stops before tcpi_notsent_bytes"
    );
    info
}
