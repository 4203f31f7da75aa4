//! What gembok-proxy and gembok-injector do the same way at the process's edge: open listening
//! sockets ([`listen`]), treat `accept`'s errors ([`accept`]), serve the plaintext admin
//! listener with a bounded number of connections ([`admin`]), take the signals that stop them
//! ([`signals`]) and sandbox themselves with Landlock ([`sandbox`]) and seccomp ([`seccomp`]).
//!
//! `[::]` listens on IPv6 and IPv4 alike (`IPV6_V6ONLY` off, whatever the host's
//! `net.ipv6.bindv6only`), so one address serves single-stack IPv4, single-stack IPv6 and
//! dual-stack pods and clusters; where the kernel has no IPv6 at all (booted with
//! `ipv6.disable=1`) it listens on `0.0.0.0` instead, with a warning.

#![forbid(unsafe_code)]

pub mod accept;
pub mod admin;
pub mod sandbox;
pub mod seccomp;
pub mod signals;

use std::io;
use std::net::SocketAddr;

use tokio::net::{TcpListener, TcpSocket};

/// Binds and listens on `addr` with SO_REUSEADDR (as tokio does) and a queue of `backlog`
/// connections; `nodelay` sets TCP_NODELAY on the listener, which Linux copies to every socket
/// it accepts.
pub fn listen(addr: SocketAddr, backlog: u32, nodelay: bool) -> io::Result<TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(v6) => match TcpSocket::new_v6() {
            Ok(socket) => {
                if v6.ip().is_unspecified() {
                    socket2::SockRef::from(&socket).set_only_v6(false)?;
                }
                socket
            }
            Err(e) if v6.ip().is_unspecified() && e.raw_os_error() == Some(libc::EAFNOSUPPORT) => {
                tracing::warn!(listen = %addr, "this kernel has no IPv6; listening on IPv4 only");
                return listen(
                    SocketAddr::from(([0, 0, 0, 0], addr.port())),
                    backlog,
                    nodelay,
                );
            }
            Err(e) => return Err(e),
        },
    };
    socket.set_reuseaddr(true)?;
    if nodelay {
        socket.set_nodelay(true)?;
    }
    socket.bind(addr)?;
    socket.listen(backlog)
}
