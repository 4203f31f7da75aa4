//! The app behind the inbound sidecar: one port, the first byte picks the mode.
//! - `S` (sink): a u64 length (little endian) follows; read that many bytes (or to EOF), then
//!   answer with the count received (u64, little endian). The count proves every byte crossed
//!   the proxies; the length means no half-close is needed (hitch cannot forward one).
//! - `E` (echo): send back everything read; on EOF, close the write side.
//!
//! It runs as its own process (`gembok-bench serve`), so its CPU and file descriptors are not
//! the load client's.

use std::net::SocketAddr;

use anyhow::{Context, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

pub const SINK: u8 = b'S';
pub const ECHO: u8 = b'E';

pub fn run(listen: SocketAddr) -> Result<()> {
    crate::sys::raise_nofile(65_536);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async {
        let listener = TcpListener::bind(listen)
            .await
            .with_context(|| format!("bind {listen}"))?;
        loop {
            let (stream, _) = match listener.accept().await {
                Ok(c) => c,
                // EMFILE and friends: keep serving the connections we have.
                Err(_) => {
                    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                    continue;
                }
            };
            tokio::spawn(handle(stream));
        }
    })
}

async fn handle(mut s: TcpStream) {
    let _ = s.set_nodelay(true);
    let mut mode = [0u8; 1];
    if s.read_exact(&mut mode).await.is_err() {
        return;
    }
    let _ = match mode[0] {
        SINK => sink(&mut s).await,
        ECHO => echo(&mut s).await,
        _ => Ok(()),
    };
}

async fn sink(s: &mut TcpStream) -> std::io::Result<()> {
    let mut len = [0u8; 8];
    s.read_exact(&mut len).await?;
    let len = u64::from_le_bytes(len);
    let mut buf = vec![0u8; 256 * 1024];
    let mut count: u64 = 0;
    while count < len {
        let want = buf.len().min((len - count) as usize);
        let n = s.read(&mut buf[..want]).await?;
        if n == 0 {
            break;
        }
        count += n as u64;
    }
    s.write_all(&count.to_le_bytes()).await?;
    s.shutdown().await
}

async fn echo(s: &mut TcpStream) -> std::io::Result<()> {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = s.read(&mut buf).await?;
        if n == 0 {
            return s.shutdown().await;
        }
        s.write_all(&buf[..n]).await?;
    }
}
