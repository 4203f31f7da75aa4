//! Opening connections the way each topology needs: plaintext to an outbound sidecar or to the
//! app (direct), or mTLS straight to an inbound sidecar. Async (tokio) for the load scenarios,
//! blocking (std + rustls) for the latency client, which runs on its own thread so that a
//! ping-pong costs no executor wake-ups.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream as StdTcp};
use std::sync::Arc;
use std::time::Duration;

use rustls::ClientConfig;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::tlsconf::server_name;

/// Where a scenario connects, and whether it speaks TLS itself.
#[derive(Clone)]
pub struct Target {
    pub addr: SocketAddr,
    pub tls: Option<Arc<ClientConfig>>,
}

impl Target {
    pub fn plain(addr: SocketAddr) -> Self {
        Self { addr, tls: None }
    }
}

pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

pub async fn connect(t: &Target) -> io::Result<Box<dyn Io>> {
    let tcp = TcpStream::connect(t.addr).await?;
    tcp.set_nodelay(true)?;
    match &t.tls {
        None => Ok(Box::new(tcp)),
        Some(config) => {
            let tls = TlsConnector::from(config.clone())
                .connect(server_name(), tcp)
                .await?;
            Ok(Box::new(tls))
        }
    }
}

pub trait Rw: Read + Write + Send {}
impl<T: Read + Write + Send> Rw for T {}

/// A blocking connection with the handshake (if any) already done.
pub fn connect_blocking(t: &Target, timeout: Duration) -> io::Result<Box<dyn Rw>> {
    let tcp = StdTcp::connect_timeout(&t.addr, timeout)?;
    tcp.set_nodelay(true)?;
    tcp.set_read_timeout(Some(timeout))?;
    tcp.set_write_timeout(Some(timeout))?;
    match &t.tls {
        None => Ok(Box::new(tcp)),
        Some(config) => {
            let conn = rustls::ClientConnection::new(config.clone(), server_name())
                .map_err(io::Error::other)?;
            let mut tls = rustls::StreamOwned::new(conn, tcp);
            while tls.conn.is_handshaking() {
                tls.conn.complete_io(&mut tls.sock)?;
            }
            Ok(Box::new(tls))
        }
    }
}
