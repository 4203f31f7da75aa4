//! A kTLS socket as an async byte stream.
//!
//! Reads use `recvmsg` with room for the record-type control message, so non-data records are
//! seen: a close_notify alert is EOF; any other alert ends the connection with an error; a
//! NewSessionTicket is skipped (there is no rustls left to store it: resumption is lost, not
//! correctness); a KeyUpdate ends the connection, because without rustls' key schedule the
//! kernel cannot be rekeyed. A TCP EOF without close_notify is reported as `UnexpectedEof`, as
//! rustls does, so the forwarder treats it as a truncation.
//!
//! Writes are plain `send`s (the kernel encrypts). `poll_shutdown` sends close_notify, then FIN.
//! Every write counts an upper bound of the records it produced; past the cipher's per-key
//! limit the stream refuses to write, and the connection is closed rather than weakened.

use std::io::{self, IoSliceMut};
use std::os::fd::{AsFd, AsRawFd};
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use nix::sys::socket::{ControlMessageOwned, MsgFlags, TlsGetRecordType, recvmsg};
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::net::TcpStream;

use super::{Cipher, sys};

const ALERT: u8 = 21;
const CLOSE_NOTIFY: [u8; 2] = [1, 0];
const NEW_SESSION_TICKET: u8 = 4;
const KEY_UPDATE: u8 = 24;
/// The largest plaintext a TLS record carries.
const MAX_RECORD: u64 = 16 * 1024;

/// Why a kTLS connection ended on a control record.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("peer sent TLS alert {level}/{description}")]
    Alert { level: u8, description: u8 },
    #[error("peer sent a TLS 1.3 KeyUpdate; the kernel cannot be rekeyed without rustls, closing")]
    KeyUpdate,
    #[error("unexpected TLS record type {0:?} on a kTLS socket")]
    Unexpected(TlsGetRecordType),
    #[error("per-key record limit of {0} records reached; closing instead of rekeying")]
    RecordLimit(u64),
}

impl ControlError {
    /// A short label for metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            ControlError::Alert { .. } => "alert",
            ControlError::KeyUpdate => "key_update",
            ControlError::Unexpected(_) => "unexpected_record",
            ControlError::RecordLimit(_) => "record_limit",
        }
    }
}

#[derive(Debug)]
pub struct KtlsStream {
    tcp: TcpStream,
    /// Plaintext rustls had decrypted before the hand-over, served first.
    early: Vec<u8>,
    early_pos: usize,
    cipher: Cipher,
    /// Upper bound of records sent with the current key.
    records_sent: u64,
    close_notify_sent: bool,
}

impl KtlsStream {
    pub(super) fn new(tcp: TcpStream, early: Vec<u8>, cipher: Cipher) -> Self {
        Self {
            tcp,
            early,
            early_pos: 0,
            cipher,
            records_sent: 0,
            close_notify_sent: false,
        }
    }

    pub fn tcp(&self) -> &TcpStream {
        &self.tcp
    }

    /// Accounts for `bytes` about to be sent; fails once the cipher's limit would be passed.
    pub(super) fn reserve_records(&mut self, bytes: usize) -> io::Result<()> {
        let records = (bytes as u64).div_ceil(MAX_RECORD).max(1);
        let limit = self.cipher.record_limit();
        if self.records_sent.saturating_add(records) > limit.saturating_sub(1024) {
            return Err(io::Error::other(ControlError::RecordLimit(limit)));
        }
        self.records_sent += records;
        Ok(())
    }

    fn recv(&self, buf: &mut [u8]) -> io::Result<Received> {
        let mut cmsg = nix::cmsg_space!(u8);
        let mut iov = [IoSliceMut::new(buf)];
        let msg = recvmsg::<()>(
            self.tcp.as_raw_fd(),
            &mut iov,
            Some(&mut cmsg),
            MsgFlags::empty(),
        )?;
        let record = msg.cmsgs()?.find_map(|c| match c {
            ControlMessageOwned::TlsGetRecordType(t) => Some(t),
            _ => None,
        });
        Ok(Received {
            len: msg.bytes,
            record,
        })
    }
}

struct Received {
    len: usize,
    /// `None` for application data (the kernel only adds the cmsg for other types).
    record: Option<TlsGetRecordType>,
}

impl AsyncRead for KtlsStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.early_pos < this.early.len() {
            let n = buf.remaining().min(this.early.len() - this.early_pos);
            buf.put_slice(&this.early[this.early_pos..this.early_pos + n]);
            this.early_pos += n;
            if this.early_pos == this.early.len() {
                this.early = Vec::new();
                this.early_pos = 0;
            }
            return Poll::Ready(Ok(()));
        }
        loop {
            ready!(this.tcp.poll_read_ready(cx))?;
            let got = {
                let unfilled = buf.initialize_unfilled();
                this.tcp.try_io(Interest::READABLE, || this.recv(unfilled))
            };
            let got = match got {
                Ok(got) => got,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Poll::Ready(Err(e)),
            };
            match got.record {
                None | Some(TlsGetRecordType::ApplicationData) if got.len > 0 => {
                    buf.advance(got.len);
                    return Poll::Ready(Ok(()));
                }
                None => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "peer closed the connection without sending TLS close_notify",
                    )));
                }
                Some(TlsGetRecordType::Alert) => {
                    let body = &buf.initialize_unfilled()[..got.len];
                    if body.get(1) == Some(&CLOSE_NOTIFY[1]) {
                        return Poll::Ready(Ok(())); // EOF
                    }
                    let (level, description) = (
                        body.first().copied().unwrap_or(0),
                        body.get(1).copied().unwrap_or(0),
                    );
                    return Poll::Ready(Err(io::Error::other(ControlError::Alert {
                        level,
                        description,
                    })));
                }
                Some(TlsGetRecordType::Handshake) => match buf.initialize_unfilled().first() {
                    Some(&NEW_SESSION_TICKET) => continue,
                    Some(&KEY_UPDATE) => {
                        return Poll::Ready(Err(io::Error::other(ControlError::KeyUpdate)));
                    }
                    _ => {
                        return Poll::Ready(Err(io::Error::other(ControlError::Unexpected(
                            TlsGetRecordType::Handshake,
                        ))));
                    }
                },
                Some(other) => {
                    return Poll::Ready(Err(io::Error::other(ControlError::Unexpected(other))));
                }
            }
        }
    }
}

impl AsyncWrite for KtlsStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.reserve_records(buf.len())?;
        Pin::new(&mut self.tcp).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        while !this.close_notify_sent {
            ready!(this.tcp.poll_write_ready(cx))?;
            let fd = this.tcp.as_fd();
            match this.tcp.try_io(Interest::WRITABLE, || {
                sys::send_control_record(fd, ALERT, &CLOSE_NOTIFY)
            }) {
                Ok(_) => this.close_notify_sent = true,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
        Pin::new(&mut this.tcp).poll_shutdown(cx)
    }
}
