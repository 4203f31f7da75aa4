//! Moving verifiable bytes: an app stand-in and a client that exchange seeded random streams and
//! compare SHA-256 digests on both ends, in both directions at once.
//!
//! Wire format (plaintext, between client and app): a 24-byte header `[id][reply_len][reply_seed]`
//! (big-endian u64s) followed by the client's payload until its FIN. The app answers with
//! `reply_len` bytes from `reply_seed`, then FIN, while it hashes what it receives.

use std::io;
use std::net::SocketAddr;

use rand::rngs::SmallRng;
use rand::{RngCore, SeedableRng};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

const CHUNK: usize = 64 * 1024;

/// The length and digest of a byte stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Digested {
    pub len: u64,
    pub sha256: [u8; 32],
}

/// What the app received on one connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Received {
    pub id: u64,
    pub stream: Digested,
}

/// The digest of `len` bytes from `seed`, without sending them.
pub fn expected(len: u64, seed: u64) -> Digested {
    let mut hasher = Sha256::new();
    generate(len, seed, |chunk| hasher.update(chunk));
    Digested {
        len,
        sha256: hasher.finalize().into(),
    }
}

fn generate(mut len: u64, seed: u64, mut f: impl FnMut(&[u8])) {
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut buf = vec![0u8; CHUNK];
    while len > 0 {
        let n = len.min(CHUNK as u64) as usize;
        rng.fill_bytes(&mut buf[..n]);
        f(&buf[..n]);
        len -= n as u64;
    }
}

/// Writes `len` seeded bytes, returning their digest.
pub async fn send<W: AsyncWrite + Unpin>(w: &mut W, len: u64, seed: u64) -> io::Result<Digested> {
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; CHUNK];
    let mut left = len;
    while left > 0 {
        let n = left.min(CHUNK as u64) as usize;
        rng.fill_bytes(&mut buf[..n]);
        hasher.update(&buf[..n]);
        w.write_all(&buf[..n]).await?;
        left -= n as u64;
    }
    Ok(Digested {
        len,
        sha256: hasher.finalize().into(),
    })
}

/// Reads to EOF, returning the digest of everything read.
pub async fn digest<R: AsyncRead + Unpin>(r: &mut R) -> io::Result<Digested> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; CHUNK];
    let mut len = 0u64;
    loop {
        let n = r.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        len += n as u64;
    }
    Ok(Digested {
        len,
        sha256: hasher.finalize().into(),
    })
}

/// The app stand-in. Every connection reports what it received on [`ExchangeApp::received`].
pub struct ExchangeApp {
    pub addr: SocketAddr,
    pub received: mpsc::UnboundedReceiver<io::Result<Received>>,
    task: tokio::task::JoinHandle<()>,
}

impl ExchangeApp {
    pub async fn start() -> Self {
        let listener = listen_loopback();
        let addr = listener.local_addr().expect("app addr");
        let (tx, received) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let tx = tx.clone();
                tokio::spawn(async move {
                    let _ = tx.send(serve(stream).await);
                });
            }
        });
        Self {
            addr,
            received,
            task,
        }
    }
}

/// A loopback listener with a long accept queue: the test process is busy hashing, and the
/// default 128 overflows when 200 connections arrive at once.
pub fn listen_loopback() -> TcpListener {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket
        .bind("127.0.0.1:0".parse().expect("addr"))
        .expect("bind app");
    socket.listen(4096).expect("listen")
}

impl Drop for ExchangeApp {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(stream: TcpStream) -> io::Result<Received> {
    let _ = stream.set_nodelay(true);
    let (mut r, mut w) = stream.into_split();
    let mut header = [0u8; 24];
    r.read_exact(&mut header).await?;
    let word = |i: usize| u64::from_be_bytes(header[i * 8..i * 8 + 8].try_into().expect("8 bytes"));
    let (id, reply_len, reply_seed) = (word(0), word(1), word(2));
    let reply = async {
        send(&mut w, reply_len, reply_seed).await?;
        w.shutdown().await
    };
    let (got, sent) = tokio::join!(digest(&mut r), reply);
    sent?;
    Ok(Received { id, stream: got? })
}

/// One exchange as seen by the client.
#[derive(Debug, Clone, Copy)]
pub struct Exchange {
    pub id: u64,
    pub send_len: u64,
    pub send_seed: u64,
    pub reply_len: u64,
    pub reply_seed: u64,
}

/// What the client sent and received.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientResult {
    pub sent: Digested,
    pub received: Digested,
}

impl Exchange {
    /// `len` bytes each way, seeded by `id` (so concurrent exchanges carry different bytes).
    pub fn both_ways(id: u64, len: u64) -> Self {
        Self {
            id,
            send_len: len,
            send_seed: 2 * id + 1,
            reply_len: len,
            reply_seed: 2 * id + 2,
        }
    }

    /// Connects to `addr` (plaintext: an outbound listener or the app itself), sends the header
    /// and payload, then FIN, while reading the reply to EOF.
    pub async fn run(&self, addr: SocketAddr) -> io::Result<ClientResult> {
        let stream = TcpStream::connect(addr).await?;
        let _ = stream.set_nodelay(true);
        self.run_on(stream).await
    }

    /// The same over an already connected stream (e.g. a TLS client).
    pub async fn run_on<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        stream: S,
    ) -> io::Result<ClientResult> {
        let (mut r, mut w) = tokio::io::split(stream);
        let mut header = [0u8; 24];
        header[..8].copy_from_slice(&self.id.to_be_bytes());
        header[8..16].copy_from_slice(&self.reply_len.to_be_bytes());
        header[16..].copy_from_slice(&self.reply_seed.to_be_bytes());
        let upload = async {
            w.write_all(&header).await?;
            let sent = send(&mut w, self.send_len, self.send_seed).await?;
            w.shutdown().await?;
            Ok::<_, io::Error>(sent)
        };
        let (sent, received) = tokio::join!(upload, digest(&mut r));
        Ok(ClientResult {
            sent: sent?,
            received: received?,
        })
    }

    /// What the app should have received.
    pub fn expected_at_app(&self) -> Digested {
        expected(self.send_len, self.send_seed)
    }

    /// What the client should have received.
    pub fn expected_reply(&self) -> Digested {
        expected(self.reply_len, self.reply_seed)
    }
}
