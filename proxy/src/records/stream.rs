//! A TLS 1.3 connection whose records gembok protects itself, as an async stream.
//!
//! Receiving: one `read` fills a buffer with as many records as the socket holds (up to the
//! forwarding buffer size); each whole record is opened in place and its content stays where it
//! is, so [`RecordStream::readable`] hands the writer slices of that buffer (one `writev` to the
//! app, no copy in user space). Control records are handled like the kTLS stream does: a
//! close_notify is EOF, any other alert (but user_canceled) ends the connection with an error, a
//! NewSessionTicket is skipped (handshake messages split across records are joined first:
//! [`Joiner`]), a KeyUpdate switches to the next receiving key before the next
//! record is opened and, when the peer asks, makes our own KeyUpdate go out before our next
//! record. A TCP EOF without close_notify is `UnexpectedEof` (a truncation).
//!
//! Sending: plaintext is copied into record-shaped room in one output buffer, sealed in place and
//! written with one `write` per batch (up to 16 records). Before the sending key would pass its
//! record budget it is rotated with a KeyUpdate. `poll_shutdown` sends close_notify and FIN in
//! one packet.

use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::ops::Range;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use super::key::{
    APPLICATION_DATA, HEADER, MAX_CIPHERTEXT, MAX_PLAINTEXT, MAX_SEALED, RecordError, RecordKey,
    TAG, record_len,
};
use crate::config::Provider;
use crate::forward::BufferPolicy;
use crate::ktls::Cipher;
use crate::ktls::keys::Rekey;
use crate::ktls::record::poll_send_more;
use crate::ktls::stream::KeyUpdates;
use crate::post_handshake::{
    ALERT, CLOSE_NOTIFY, CLOSE_NOTIFY_ALERT, DECODE_ERROR, HANDSHAKE, INTERNAL_ERROR, Joiner,
    KEY_UPDATE_NOT_REQUESTED, Message, Refused, UNEXPECTED_MESSAGE, USER_CANCELED, fatal_alert,
};

/// Records sealed per batch at most: the forwarding buffer's large size in plaintext (32
/// records of 16 KiB), one `write`.
pub const BATCH: usize = crate::forward::LARGE_BUFFER / MAX_PLAINTEXT;
/// Sealed bytes we hold before a write waits for the socket (as rustls' send queue).
const SEND_QUEUE: usize = BATCH * MAX_SEALED;

/// Why the connection ended on something the peer sent or on our key budget.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error(transparent)]
    Record(#[from] RecordError),
    #[error("peer sent TLS alert {level}/{description}")]
    Alert { level: u8, description: u8 },
    #[error("malformed TLS alert")]
    Malformed,
    #[error(transparent)]
    Handshake(#[from] Refused),
    #[error("unexpected TLS {0} after the handshake")]
    Unexpected(&'static str),
    #[error("a KeyUpdate arrived but this connection's traffic secrets were not kept")]
    NoKeySchedule,
    #[error("per-key record limit of {0} records reached and the key cannot be rotated")]
    RecordLimit(u64),
}

impl ControlError {
    /// The fatal alert to send the peer, where one is due (not after the peer's own alert).
    pub fn alert(&self) -> Option<u8> {
        match self {
            ControlError::Record(e) => Some(e.alert()),
            ControlError::Alert { .. } => None,
            ControlError::Malformed => Some(DECODE_ERROR),
            ControlError::Handshake(refused) => Some(refused.alert()),
            ControlError::Unexpected(_) => Some(UNEXPECTED_MESSAGE),
            ControlError::NoKeySchedule | ControlError::RecordLimit(_) => Some(INTERNAL_ERROR),
        }
    }

    /// A short label for metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            ControlError::Record(RecordError::BadRecordMac) => "bad_record_mac",
            ControlError::Record(_) => "bad_record",
            ControlError::Alert { .. } => "alert",
            ControlError::Malformed => "malformed",
            ControlError::Handshake(refused) => refused.reason(),
            ControlError::Unexpected(_) => "unexpected_record",
            ControlError::NoKeySchedule => "key_update",
            ControlError::RecordLimit(_) => "record_limit",
        }
    }
}

fn control(e: impl Into<ControlError>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e.into())
}

/// What a [`RecordStream`] starts from: the keys rustls negotiated, and what it left unread.
pub struct Start {
    pub tcp: TcpStream,
    pub library: Provider,
    pub cipher: Cipher,
    pub tx: RecordKey,
    pub rx: RecordKey,
    /// Plaintext rustls had already decrypted, served first.
    pub early: Vec<u8>,
    /// Bytes read from the socket that rustls never saw (whole or partial records).
    pub unread: BytesMut,
    pub rekey: Option<Rekey>,
    pub record_budget: u64,
    pub buffers: BufferPolicy,
    pub key_updates: KeyUpdates,
    /// Whether this end is the server (its peer may not send session tickets).
    pub is_server: bool,
}

#[derive(Debug)]
pub struct RecordStream {
    tcp: TcpStream,
    library: Provider,
    cipher: Cipher,
    rekey: Option<Box<Rekey>>,
    key_updates: KeyUpdates,
    buffers: BufferPolicy,
    rx: Rx,
    tx: Tx,
}

#[derive(Debug)]
struct Rx {
    key: RecordKey,
    early: Vec<u8>,
    early_pos: usize,
    /// Bytes from the socket: records opened in place up to `opened`, then unopened bytes.
    buf: BytesMut,
    opened: usize,
    /// Where the content of opened application-data records lies in `buf`, not yet consumed.
    ready: VecDeque<Range<usize>>,
    /// Post-handshake messages, joined when split across records.
    handshake: Joiner,
    close_notify: bool,
    /// Ciphertext bytes read so far (sizes the buffer).
    carried: u64,
}

#[derive(Debug)]
struct Tx {
    key: RecordKey,
    /// Sealed records not yet written, from `written` on.
    out: BytesMut,
    records: u64,
    budget: u64,
    key_update_owed: bool,
    close_notify_sent: bool,
}

impl RecordStream {
    pub fn new(start: Start) -> Self {
        Self {
            tcp: start.tcp,
            library: start.library,
            cipher: start.cipher,
            rekey: start.rekey.map(Box::new),
            key_updates: start.key_updates,
            buffers: start.buffers,
            rx: Rx {
                key: start.rx,
                early: start.early,
                early_pos: 0,
                buf: start.unread,
                opened: 0,
                ready: VecDeque::new(),
                handshake: Joiner::new(start.is_server),
                close_notify: false,
                carried: 0,
            },
            tx: Tx {
                key: start.tx,
                out: BytesMut::new(),
                records: 0,
                budget: start.record_budget,
                key_update_owed: false,
                close_notify_sent: false,
            },
        }
    }

    pub fn tcp(&self) -> &TcpStream {
        &self.tcp
    }

    // ---- receiving ----------------------------------------------------------------------

    /// Waits until [`readable`](Self::readable) has plaintext (`true`) or the peer's
    /// close_notify has been read (`false`).
    pub fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<bool>> {
        loop {
            let rx = &mut self.rx;
            if rx.early_pos < rx.early.len() || !rx.ready.is_empty() {
                return Poll::Ready(Ok(true));
            }
            if rx.close_notify {
                return Poll::Ready(Ok(false));
            }
            if rx.opened > 0 {
                rx.buf.advance(rx.opened); // all of it consumed
                rx.opened = 0;
            }
            if rx.ready.capacity() > 64 {
                rx.ready = VecDeque::new(); // a burst of tiny records is not kept for good
            }
            if self.open_records()? {
                continue;
            }
            ready!(self.poll_read_more(cx))?;
        }
    }

    /// Plaintext ready to be written, in order, as up to `out.len()` slices; how many.
    pub fn readable<'a>(&'a self, out: &mut [IoSlice<'a>]) -> usize {
        let rx = &self.rx;
        let early = (rx.early_pos < rx.early.len()).then(|| &rx.early[rx.early_pos..]);
        let ranges = rx.ready.iter().map(|r| &rx.buf[r.clone()]);
        let mut n = 0;
        for (slot, bytes) in out.iter_mut().zip(early.into_iter().chain(ranges)) {
            *slot = IoSlice::new(bytes);
            n += 1;
        }
        n
    }

    /// Marks `n` bytes of [`readable`](Self::readable) as written.
    pub fn consume(&mut self, mut n: usize) {
        let rx = &mut self.rx;
        if rx.early_pos < rx.early.len() {
            let take = n.min(rx.early.len() - rx.early_pos);
            rx.early_pos += take;
            n -= take;
            if rx.early_pos == rx.early.len() {
                rx.early = Vec::new();
                rx.early_pos = 0;
            }
        }
        while n > 0 {
            let first = rx
                .ready
                .front_mut()
                .expect("consumed no more than readable");
            let take = n.min(first.len());
            first.start += take;
            n -= take;
            if first.start == first.end {
                rx.ready.pop_front();
            }
        }
    }

    /// Opens every whole record in the buffer; whether one was (data or control).
    fn open_records(&mut self) -> io::Result<bool> {
        let mut any = false;
        while !self.rx.close_notify {
            let wire = &self.rx.buf[self.rx.opened..];
            let Some(len) = record_len(wire) else { break };
            if wire[0] != APPLICATION_DATA {
                return Err(control(RecordError::Unprotected(wire[0])));
            }
            if len - HEADER > MAX_CIPHERTEXT {
                return Err(control(RecordError::Overflow(len - HEADER)));
            }
            if wire.len() < len {
                break;
            }
            let at = self.rx.opened;
            let (content_type, content) = self
                .rx
                .key
                .open(&mut self.rx.buf[at..at + len])
                .map_err(control)?;
            self.rx.opened += len;
            any = true;
            let content = at + content.start..at + content.end;
            if content_type != HANDSHAKE {
                self.rx.handshake.expect_none().map_err(control)?;
            }
            match content_type {
                APPLICATION_DATA if !content.is_empty() => self.rx.ready.push_back(content),
                APPLICATION_DATA => {}
                ALERT => self.on_alert(&content)?,
                HANDSHAKE => {
                    let messages = self.rx.buf[content].to_vec(); // rare and small
                    self.on_handshake(&messages)?;
                }
                _ => return Err(control(ControlError::Unexpected("record type"))),
            }
        }
        Ok(any)
    }

    fn on_alert(&mut self, content: &Range<usize>) -> io::Result<()> {
        let &[level, description] = &self.rx.buf[content.clone()] else {
            return Err(control(ControlError::Malformed));
        };
        match description {
            CLOSE_NOTIFY => {
                self.rx.close_notify = true;
                Ok(())
            }
            USER_CANCELED => Ok(()), // a warning; the close_notify follows
            _ => Err(control(ControlError::Alert { level, description })),
        }
    }

    /// Handles the handshake messages of one post-handshake record.
    fn on_handshake(&mut self, record: &[u8]) -> io::Result<()> {
        for message in self.rx.handshake.feed(record).map_err(control)? {
            if let Message::KeyUpdate { requested } = message {
                self.on_key_update(requested)?;
            }
        }
        Ok(())
    }

    /// The peer rotated its sending key: the next record is opened with the next key.
    fn on_key_update(&mut self, requested: bool) -> io::Result<()> {
        let Some(rekey) = self.rekey.as_mut() else {
            return Err(control(ControlError::NoKeySchedule));
        };
        let next = rekey.rx.next_key();
        self.rx.key = RecordKey::new(self.library, self.cipher, next.key(), &next.iv, 0)
            .map_err(io::Error::other)?;
        self.key_updates.rx.increment(1);
        self.tx.key_update_owed |= requested;
        tracing::debug!(requested, "receiving key rotated (peer's KeyUpdate)");
        Ok(())
    }

    /// Reads more ciphertext into the buffer.
    fn poll_read_more(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let rx = &mut self.rx;
        let size = self
            .buffers
            .size_for(rx.carried)
            .max(HEADER + MAX_CIPHERTEXT);
        if rx.buf.capacity() < size {
            rx.buf.reserve(size - rx.buf.len());
        }
        // Through `AsyncRead`: after a short read tokio takes the socket as drained and waits
        // for the next edge, which saves the read that would only find nothing. Whenever this
        // waits with nothing buffered, the buffer goes (below). The handshake's read-ahead
        // buffer, handed over holding the first records, used to stay with an idle connection
        // when the socket was not readable on the first try (gembok-bench, 9,872 idle
        // connections: 11.7 KiB of RSS per connection on the inbound side before, 5.5 after).
        match tokio_util::io::poll_read_buf(Pin::new(&mut self.tcp), cx, &mut rx.buf) {
            Poll::Ready(Ok(0)) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "peer closed the connection without sending TLS close_notify",
            ))),
            Poll::Ready(Ok(n)) => {
                rx.carried += n as u64;
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => {
                if rx.buf.is_empty() {
                    rx.buf = BytesMut::new(); // nothing pending: hold no buffer meanwhile
                }
                Poll::Pending
            }
        }
    }

    // ---- sending ------------------------------------------------------------------------

    /// Seals `plain` as records of `content_type` at the end of the output buffer.
    fn seal(&mut self, content_type: u8, plain: &[u8]) {
        let tx = &mut self.tx;
        let chunks = plain.chunks(MAX_PLAINTEXT);
        tx.out
            .reserve(plain.len() + chunks.len() * (HEADER + 1 + TAG));
        for chunk in chunks {
            let at = tx.out.len();
            tx.out.extend_from_slice(&[0; HEADER]);
            tx.out.extend_from_slice(chunk);
            tx.out.extend_from_slice(&[0; 1 + TAG]);
            tx.key.seal(content_type, &mut tx.out[at..]);
            tx.records += 1;
        }
    }

    /// Readies the key for `records` more records: pays a KeyUpdate the peer asked for, and
    /// rotates first when they would pass the per-key budget (a caller then seals at most
    /// `budget - records` records).
    fn rotate_if_due(&mut self, records: u64) -> io::Result<()> {
        let over_budget = self.tx.records.saturating_add(records) > self.tx.budget;
        if !self.tx.key_update_owed && !over_budget {
            return Ok(());
        }
        if self.rekey.is_none() {
            return Err(control(ControlError::RecordLimit(self.tx.budget)));
        }
        // Our KeyUpdate leaves under the current key; every record after it under the next.
        self.seal(HANDSHAKE, &KEY_UPDATE_NOT_REQUESTED);
        let next = self.rekey.as_mut().expect("checked above").tx.next_key();
        self.tx.key = RecordKey::new(self.library, self.cipher, next.key(), &next.iv, 0)
            .map_err(io::Error::other)?;
        self.tx.records = 0;
        self.tx.key_update_owed = false;
        self.key_updates.tx.increment(1);
        tracing::debug!("sending key rotated (KeyUpdate sent)");
        Ok(())
    }

    /// Seals one application-data record laid out in place (see [`RecordKey::seal`]); the
    /// caller has asked [`records_left`](Self::records_left) first.
    pub fn seal_in_place(&mut self, record: &mut [u8]) {
        self.tx.key.seal(APPLICATION_DATA, record);
        self.tx.records += 1;
    }

    /// How many records the sending key may still seal, rotating it first (a KeyUpdate queued,
    /// see [`has_queued`](Self::has_queued)) when it has none left or the peer asked.
    pub fn records_left(&mut self) -> io::Result<usize> {
        self.rotate_if_due(1)?;
        Ok(usize::try_from(self.tx.budget - self.tx.records).unwrap_or(usize::MAX))
    }

    /// Buffer capacity the stream holds (an idle connection should hold none).
    #[cfg(test)]
    pub fn held(&self) -> usize {
        self.rx.buf.capacity() + self.tx.out.capacity() + self.rx.early.capacity()
    }

    /// Whether records the stream sealed itself wait to be written (they go first).
    pub fn has_queued(&self) -> bool {
        !self.tx.out.is_empty()
    }

    /// Writes records sealed in the caller's buffer.
    pub fn poll_write_sealed(
        &mut self,
        cx: &mut Context<'_>,
        sealed: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.tcp).poll_write(cx, sealed)
    }

    /// Writes sealed records until none are left.
    pub fn poll_write_out(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.poll_drain(cx, false)
    }

    /// Writes sealed records until none are left; with `more`, flagged `MSG_MORE`.
    fn poll_drain(&mut self, cx: &mut Context<'_>, more: bool) -> Poll<io::Result<()>> {
        while !self.tx.out.is_empty() {
            let n = if more {
                ready!(poll_send_more(&self.tcp, cx, &[IoSlice::new(&self.tx.out)]))?
            } else {
                ready!(Pin::new(&mut self.tcp).poll_write(cx, &self.tx.out))?
            };
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.tx.out.advance(n);
        }
        self.tx.out = BytesMut::new(); // hold no buffer while idle
        Poll::Ready(Ok(()))
    }

    /// Writes sealed records until none are left, each write flagged `MSG_MORE`, then FIN: the
    /// kernel holds back the last partial segment for the FIN to join it, so a closing alert and
    /// the FIN leave in one packet (one segment, one wake-up of the peer, instead of two).
    fn poll_write_out_and_fin(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_drain(cx, true))?;
        Pin::new(&mut self.tcp).poll_shutdown(cx)
    }

    /// Sends a fatal alert (best effort, our key still good), then FIN: the peer must not take
    /// the end of a failed connection for the end of our data.
    pub async fn abort(&mut self, description: u8) -> io::Result<()> {
        if !self.tx.close_notify_sent {
            self.seal(ALERT, &fatal_alert(description));
            self.tx.close_notify_sent = true; // nothing may follow a fatal alert
        }
        std::future::poll_fn(|cx| self.poll_write_out_and_fin(cx)).await
    }
}

impl AsyncRead for RecordStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if !ready!(this.poll_fill(cx))? {
            return Poll::Ready(Ok(())); // close_notify: EOF
        }
        let mut slices = [IoSlice::new(&[]); 16];
        let count = this.readable(&mut slices);
        let mut n = 0;
        for slice in &slices[..count] {
            let take = slice.len().min(buf.remaining());
            buf.put_slice(&slice[..take]);
            n += take;
        }
        this.consume(n);
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for RecordStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if this.tx.out.len() >= SEND_QUEUE {
            ready!(this.poll_write_out(cx))?;
        }
        // No more records than the key has left (rotated first when none).
        let room = this.records_left()?;
        let n = buf
            .len()
            .min(SEND_QUEUE)
            .min(room.saturating_mul(MAX_PLAINTEXT));
        this.seal(APPLICATION_DATA, &buf[..n]);
        // Start the write now; what the socket does not take waits for the next call or flush.
        match this.poll_write_out(cx) {
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            _ => Poll::Ready(Ok(n)),
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.poll_write_out(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if !this.tx.close_notify_sent {
            this.seal(ALERT, &CLOSE_NOTIFY_ALERT);
            this.tx.close_notify_sent = true;
        }
        this.poll_write_out_and_fin(cx)
    }
}
