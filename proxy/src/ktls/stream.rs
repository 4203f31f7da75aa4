//! A kTLS socket as an async byte stream.
//!
//! Reads use `recvmsg` with room for the record-type control message, so non-data records are
//! seen: a close_notify alert is EOF; any other alert ends the connection with an error; a record
//! the kernel cannot open (`EBADMSG`, `EMSGSIZE`) ends it with the fatal alert gembok's record
//! layer would send (bad_record_mac, record_overflow); a NewSessionTicket is skipped (there is
//! no rustls left to store it: resumption is lost, not correctness); handshake messages split
//! across records are joined first ([`Joiner`]). A KeyUpdate is followed in the kernel when it
//! can be rekeyed (Linux 6.14 and later; see [`super::keys`]): the next receiving key is
//! installed at once and, when the peer asks for it, our own KeyUpdate goes out before our next
//! record. On an older kernel a KeyUpdate ends the connection with a fatal internal_error alert
//! ([`KtlsStream::abort`]), counted; a handshake message that cannot be followed ends it with
//! the alert the record layer would send ([`ControlError::alert`]). A TCP EOF without
//! close_notify is reported as `UnexpectedEof`, as rustls does, so the forwarder treats it as a
//! truncation.
//!
//! Writes are plain `send`s (the kernel encrypts). `poll_shutdown` sends close_notify, then FIN.
//! Every write counts an upper bound of the records it produced; before a write would pass the
//! per-key budget, the sending key is rotated (a KeyUpdate, then the next key), or, where the
//! kernel cannot be rekeyed, the stream refuses to write and the connection is closed rather
//! than weakened.

use std::future::Future;
use std::io::{self, IoSliceMut};
use std::net::Shutdown;
use std::os::fd::{AsFd, AsRawFd};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use metrics::Counter;
use nix::sys::socket::{ControlMessageOwned, MsgFlags, TlsGetRecordType, recvmsg};
use nix::sys::socket::{setsockopt, sockopt};
use socket2::SockRef;
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf, Ready};
use tokio::net::TcpStream;

use super::keys::Rekey;
use super::sys;
use crate::post_handshake::{
    ALERT, BAD_RECORD_MAC, CLOSE_NOTIFY, CLOSE_NOTIFY_ALERT, HANDSHAKE, INTERNAL_ERROR, Joiner,
    KEY_UPDATE_NOT_REQUESTED, Message, RECORD_OVERFLOW, Refused, UNEXPECTED_MESSAGE, USER_CANCELED,
    fatal_alert,
};

/// The largest plaintext a TLS record carries.
const MAX_RECORD: u64 = 16 * 1024;

/// Why a kTLS connection ended on a control record.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("peer sent TLS alert {level}/{description}")]
    Alert { level: u8, description: u8 },
    #[error("peer sent a TLS 1.3 KeyUpdate and this kernel cannot be rekeyed; closing")]
    KeyUpdate,
    #[error("the kernel refused the next {0} key: {1}")]
    Rekey(&'static str, io::Error),
    #[error(transparent)]
    Handshake(#[from] Refused),
    #[error("unexpected TLS record type {0:?} on a kTLS socket")]
    Unexpected(TlsGetRecordType),
    #[error("a TLS record failed authentication in the kernel (bad_record_mac)")]
    BadRecordMac,
    #[error("a TLS record over the size limit arrived (record_overflow)")]
    Overflow,
    #[error(
        "per-key record limit of {0} records reached and the kernel cannot be rekeyed; closing instead"
    )]
    RecordLimit(u64),
}

impl ControlError {
    /// A short label for metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            ControlError::Alert { .. } => "alert",
            ControlError::KeyUpdate => "key_update",
            ControlError::Rekey(..) => "rekey_failed",
            ControlError::Handshake(refused) => refused.reason(),
            ControlError::Unexpected(_) => "unexpected_record",
            ControlError::RecordLimit(_) => "record_limit",
            // The labels of the record layer's same failures.
            ControlError::BadRecordMac => "bad_record_mac",
            ControlError::Overflow => "bad_record",
        }
    }

    /// The fatal alert to send the peer, where one is due and our sending key is still good:
    /// not after the peer's own alert, nor when the kernel refused a key.
    pub fn alert(&self) -> Option<u8> {
        match self {
            ControlError::Alert { .. } | ControlError::Rekey(..) => None,
            ControlError::Handshake(refused) => Some(refused.alert()),
            ControlError::Unexpected(_) => Some(UNEXPECTED_MESSAGE),
            ControlError::KeyUpdate | ControlError::RecordLimit(_) => Some(INTERNAL_ERROR),
            ControlError::BadRecordMac => Some(BAD_RECORD_MAC),
            ControlError::Overflow => Some(RECORD_OVERFLOW),
        }
    }
}

fn control(e: impl Into<ControlError>) -> io::Error {
    io::Error::other(e.into())
}

/// The kernel reports a record it could not open as an errno: `EBADMSG` for one that failed
/// authentication (or, TLS 1.3, had no content type), `EMSGSIZE` for one over the size limit,
/// known from its header. Each becomes the error, and so the alert, of the record layer.
fn record_error(e: io::Error) -> io::Error {
    match e.raw_os_error() {
        Some(libc::EBADMSG) => control(ControlError::BadRecordMac),
        Some(libc::EMSGSIZE) => control(ControlError::Overflow),
        _ => e,
    }
}

/// Live counts of key updates the kernel took (`gembok_ktls_key_updates_total`).
#[derive(Debug, Clone)]
pub struct KeyUpdates {
    /// The peer's KeyUpdates followed (new receiving key).
    pub rx: Counter,
    /// Our own KeyUpdates (new sending key): answers to the peer's requests and rotations at
    /// the record budget.
    pub tx: Counter,
}

impl Default for KeyUpdates {
    fn default() -> Self {
        Self {
            rx: Counter::noop(),
            tx: Counter::noop(),
        }
    }
}

#[derive(Debug)]
pub struct KtlsStream {
    /// Shared only with [`ErrorWatch`]'s future.
    tcp: Arc<TcpStream>,
    errors: ErrorWatch,
    /// Plaintext rustls had decrypted before the hand-over, served first.
    early: Vec<u8>,
    early_pos: usize,
    /// Upper bound of records sent with the current key.
    records_sent: u64,
    /// Records one sending key may protect here.
    record_budget: u64,
    close_notify_sent: bool,
    /// Key schedules (TLS 1.3 on a kernel that can be rekeyed).
    rekey: Option<Box<Rekey>>,
    /// The peer asked for our KeyUpdate; it goes out before our next record.
    key_update_owed: bool,
    key_updates: KeyUpdates,
    /// Post-handshake messages, joined when split across records.
    handshake: Joiner,
}

/// Records a send of `bytes` can produce at most: the kernel closes a record at the end of each
/// `send` or `splice`, and fills records up to 16 KiB.
fn records_for(bytes: usize) -> u64 {
    (bytes as u64).div_ceil(MAX_RECORD).max(1)
}

impl KtlsStream {
    pub(super) fn new(
        tcp: TcpStream,
        early: Vec<u8>,
        record_budget: u64,
        rekey: Option<Rekey>,
        key_updates: KeyUpdates,
        is_server: bool,
    ) -> Self {
        Self {
            tcp: Arc::new(tcp),
            errors: ErrorWatch::default(),
            early,
            early_pos: 0,
            records_sent: 0,
            record_budget,
            close_notify_sent: false,
            rekey: rekey.map(Box::new),
            key_update_owed: false,
            key_updates,
            handshake: Joiner::new(is_server),
        }
    }

    pub fn tcp(&self) -> &TcpStream {
        &self.tcp
    }

    /// Sends one control record (a whole TLS record of `record_type`) under the current key.
    fn poll_send_control(
        &mut self,
        cx: &mut Context<'_>,
        record_type: u8,
        payload: &[u8],
    ) -> Poll<io::Result<()>> {
        loop {
            ready!(self.tcp.poll_write_ready(cx))?;
            let fd = self.tcp.as_fd();
            match self.tcp.try_io(Interest::WRITABLE, || {
                sys::send_control_record(fd, record_type, payload)
            }) {
                Ok(_) => return Poll::Ready(Ok(())),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }

    /// Ends the session with the fatal alert `description`, then FIN: the connection failed on
    /// our side (a KeyUpdate this kernel cannot follow, the record limit) or the peer broke the
    /// protocol, and the peer must not take that for the end of our data, as it would a
    /// close_notify.
    pub async fn abort(&mut self, description: u8) -> io::Result<()> {
        // A record the kernel could not open leaves its error pending on the socket, and a
        // pending error fails the next send: take it (`SO_ERROR` clears it) so the alert goes.
        // (Without this the peer saw only a reset: checked in the VM, Linux 6.1.)
        let _ = self.tcp.take_error();
        std::future::poll_fn(|cx| self.poll_send_control(cx, ALERT, &fatal_alert(description)))
            .await?;
        self.close_notify_sent = true; // nothing may follow a fatal alert
        SockRef::from(&*self.tcp).shutdown(Shutdown::Write)
    }

    /// Readies the socket for a send of up to `bytes`: pays a KeyUpdate the peer asked for, and
    /// rotates the sending key first when the send could pass the per-key budget (or fails,
    /// where the kernel cannot be rekeyed).
    pub(super) fn poll_send_ready(
        &mut self,
        cx: &mut Context<'_>,
        bytes: usize,
    ) -> Poll<io::Result<()>> {
        let over_budget = self.records_sent.saturating_add(records_for(bytes)) > self.record_budget;
        if !self.key_update_owed && !over_budget {
            return Poll::Ready(Ok(()));
        }
        if self.rekey.is_none() {
            return Poll::Ready(Err(control(ControlError::RecordLimit(self.record_budget))));
        }
        // Our KeyUpdate leaves under the current key; every record after it under the next.
        ready!(self.poll_send_control(cx, HANDSHAKE, &KEY_UPDATE_NOT_REQUESTED))?;
        let next = self.rekey.as_mut().expect("checked above").tx.advance();
        setsockopt(&self.tcp, sockopt::TcpTlsTx, &next)
            .map_err(|e| control(ControlError::Rekey("sending", e.into())))?;
        self.records_sent = 0;
        self.key_update_owed = false;
        self.key_updates.tx.increment(1);
        tracing::debug!("kTLS sending key rotated (KeyUpdate sent)");
        Poll::Ready(Ok(()))
    }

    /// Accounts for `bytes` the kernel accepted in one send.
    pub(super) fn sent(&mut self, bytes: usize) {
        self.records_sent += records_for(bytes);
    }

    /// Handles the handshake messages of one post-handshake record.
    fn on_handshake(&mut self, record: &[u8]) -> io::Result<()> {
        let messages = self.handshake.feed(record).map_err(control)?;
        for message in messages {
            if let Message::KeyUpdate { requested } = message {
                self.on_key_update(requested)?;
            }
        }
        Ok(())
    }

    /// The peer rotated its sending key: install the next receiving key before the kernel
    /// decrypts another record (it holds them back until then).
    fn on_key_update(&mut self, requested: bool) -> io::Result<()> {
        let Some(rekey) = self.rekey.as_mut() else {
            return Err(control(ControlError::KeyUpdate));
        };
        let next = rekey.rx.advance();
        setsockopt(&self.tcp, sockopt::TcpTlsRx, &next)
            .map_err(|e| control(ControlError::Rekey("receiving", e.into())))?;
        self.key_updates.rx.increment(1);
        self.key_update_owed |= requested;
        tracing::debug!(requested, "kTLS receiving key rotated (peer's KeyUpdate)");
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

/// Wakes a waiting reader on a socket error alone. The kernel's TLS record parser reports a
/// record it refuses at its header (over the size limit) as a pending socket error and nothing
/// else: no record became readable, so the socket polls `EPOLLERR` without `EPOLLIN`, and
/// tokio's read readiness does not wake on that. Without this watch such a connection sat until
/// the idle timeout (seen on Linux 7.3; 6.1 woke the reader anyway). The future is made at
/// the first wait and again only after it fired: one allocation per connection, one more
/// readiness poll per wait.
#[derive(Default)]
struct ErrorWatch(Option<Pin<Box<dyn Future<Output = io::Result<Ready>> + Send>>>);

impl ErrorWatch {
    /// Ready once tokio saw an error event on `tcp` (since the last time this was ready).
    fn poll(&mut self, cx: &mut Context<'_>, tcp: &Arc<TcpStream>) -> Poll<io::Result<Ready>> {
        let watch = self.0.get_or_insert_with(|| {
            let tcp = Arc::clone(tcp);
            Box::pin(async move { tcp.ready(Interest::ERROR).await })
        });
        let fired = ready!(watch.as_mut().poll(cx));
        self.0 = None;
        Poll::Ready(fired)
    }
}

impl std::fmt::Debug for ErrorWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "ErrorWatch(waiting)"
        } else {
            "ErrorWatch(idle)"
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
            let interest = match this.tcp.poll_read_ready(cx) {
                Poll::Ready(ready) => ready.map(|()| Interest::READABLE)?,
                // Nothing to read yet, but the kernel may have refused a record: try the read
                // on the error alone (see [`ErrorWatch`]).
                Poll::Pending => {
                    ready!(this.errors.poll(cx, &this.tcp)).map(|_| Interest::ERROR)?
                }
            };
            let got = {
                let unfilled = buf.initialize_unfilled();
                this.tcp.try_io(interest, || this.recv(unfilled))
            };
            let got = match got {
                Ok(got) => got,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Poll::Ready(Err(record_error(e))),
            };
            if got.record != Some(TlsGetRecordType::Handshake) {
                this.handshake.expect_none().map_err(control)?;
            }
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
                    if body.get(1) == Some(&CLOSE_NOTIFY) {
                        return Poll::Ready(Ok(())); // EOF
                    }
                    if body.get(1) == Some(&USER_CANCELED) {
                        continue; // a warning; the close_notify follows (as in `records`)
                    }
                    let (level, description) = (
                        body.first().copied().unwrap_or(0),
                        body.get(1).copied().unwrap_or(0),
                    );
                    return Poll::Ready(Err(control(ControlError::Alert { level, description })));
                }
                Some(TlsGetRecordType::Handshake) => {
                    this.on_handshake(&buf.initialize_unfilled()[..got.len])?;
                    continue;
                }
                Some(other) => {
                    return Poll::Ready(Err(control(ControlError::Unexpected(other))));
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
        let this = &mut *self;
        ready!(this.poll_send_ready(cx, buf.len()))?;
        loop {
            ready!(this.tcp.poll_write_ready(cx))?;
            match this.tcp.try_write(buf) {
                Ok(n) => {
                    this.sent(n);
                    return Poll::Ready(Ok(n));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if !this.close_notify_sent {
            ready!(this.poll_send_control(cx, ALERT, &CLOSE_NOTIFY_ALERT))?;
            this.close_notify_sent = true;
        }
        Poll::Ready(SockRef::from(&*this.tcp).shutdown(Shutdown::Write))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::post_handshake::DECODE_ERROR;
    use crate::records::key::RecordError;
    use crate::records::stream::ControlError as RecordsError;

    /// Both holders of the record keys tell the peer the same thing for the same failure: the
    /// kernel path used to send internal_error for every one.
    #[test]
    fn the_kernel_path_sends_the_same_alerts_as_the_record_layer() {
        let refusals = || {
            [
                Refused::Malformed,
                Refused::TooLarge(0x1_0000),
                Refused::Unexpected(1),
                Refused::Misaligned,
                Refused::Interrupted,
            ]
        };
        for (ours, theirs) in refusals().into_iter().zip(refusals()) {
            let expected = ours.alert();
            assert_eq!(ControlError::Handshake(ours).alert(), Some(expected));
            assert_eq!(RecordsError::Handshake(theirs).alert(), Some(expected));
        }
        assert_eq!(Refused::Malformed.alert(), DECODE_ERROR);
        assert_eq!(Refused::Misaligned.alert(), UNEXPECTED_MESSAGE);
        let limit = ControlError::RecordLimit(7).alert();
        assert_eq!(limit, Some(INTERNAL_ERROR));
        assert_eq!(limit, RecordsError::RecordLimit(7).alert());
        assert_eq!(ControlError::KeyUpdate.alert(), Some(INTERNAL_ERROR));
        assert_eq!(
            ControlError::Unexpected(TlsGetRecordType::ChangeCipherSpec).alert(),
            Some(UNEXPECTED_MESSAGE)
        );
        // A record that cannot be opened: the same alert and label whoever holds the keys.
        for (kernel, user_space) in [
            (libc::EBADMSG, RecordError::BadRecordMac),
            (libc::EMSGSIZE, RecordError::Overflow(0x5000)),
        ] {
            let error = record_error(io::Error::from_raw_os_error(kernel));
            let kernel = error
                .get_ref()
                .and_then(|e| e.downcast_ref::<ControlError>());
            let kernel = kernel.expect("a record error the kernel reports is a control error");
            let user_space = RecordsError::Record(user_space);
            assert_eq!(kernel.alert(), user_space.alert());
            assert_eq!(kernel.reason(), user_space.reason());
        }
        let other = record_error(io::Error::from_raw_os_error(libc::ECONNRESET));
        assert_eq!(other.kind(), io::ErrorKind::ConnectionReset);
        // The peer's own alert ends it without one of ours.
        let peer = ControlError::Alert {
            level: 2,
            description: BAD_RECORD_MAC,
        };
        assert_eq!(peer.alert(), None);
        assert_eq!(
            RecordsError::Alert {
                level: 2,
                description: BAD_RECORD_MAC
            }
            .alert(),
            None
        );
    }
}
