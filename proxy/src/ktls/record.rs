//! Record-aligned reads for the handshake.
//!
//! rustls reads whatever the socket has. If the peer's first application records arrive in the
//! same segment as its last handshake record, rustls would read (and decrypt) them too, and
//! whoever takes the record layer over afterwards (the kernel, or gembok's own record layer in
//! `crate::records`) would never see them. So rustls is handed one TLS record at a time, and when
//! the handshake completes it holds no partial record. Three modes:
//!
//! - [`Mode::Aligned`] (kTLS): nothing beyond the current record is even read from the socket
//!   (the 5-byte header, then exactly the body), since the kernel must find the rest there. It
//!   costs two reads per handshake record.
//! - [`Mode::Bounded`] (user-space record layer): reads ahead, but serves rustls only whole
//!   records, one per read (a plaintext handshake record together with the whole records of
//!   its flight read along with it), never part of the next; what was read beyond them is
//!   handed over with the socket ([`RecordAligned::into_parts`]). No extra system calls.
//! - [`Mode::Free`]: reads ahead and serves rustls whatever it asks for. rustls asks for at most
//!   one record (about 16 KiB) per read, so without read-ahead a bulk transfer would cost one
//!   `recvfrom` per record; one read of [`READ_AHEAD`] serves several.
//!
//! [`RecordAligned::release`] turns either bounded mode into `Free` once the connection stays
//! with rustls. The read-ahead buffer is released whenever the socket has nothing more to give
//! and nothing is left in it, so an idle connection holds none.

use std::io;
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, BytesMut};
use nix::sys::socket::{MsgFlags, sendmsg, setsockopt, sockopt};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use crate::post_handshake::{APPLICATION_DATA, CHANGE_CIPHER_SPEC, HANDSHAKE};
use crate::records::key::MAX_PLAINTEXT;

/// The record header: outer type, legacy version, length.
pub const HEADER: usize = 5;

/// The whole length (header included) of the record starting at `wire`, once its header is
/// there.
pub fn record_len(wire: &[u8]) -> Option<usize> {
    let h = wire.get(..HEADER)?;
    Some(HEADER + usize::from(u16::from_be_bytes([h[3], h[4]])))
}

/// The longest record body a TLS peer may send: 2^14 bytes of plaintext plus 2048 of
/// expansion (RFC 5246 6.2.3; TLS 1.3 allows only 256). rustls refuses anything longer.
const MAX_BODY: usize = MAX_PLAINTEXT + 2048;

/// Whether `header` can start a TLS record: a known content type (change_cipher_spec, alert,
/// handshake, application_data), legacy version 3.x and a length within [`MAX_BODY`]. rustls
/// refuses anything else with an alert, so nothing is gained by waiting for more of it.
fn plausible(header: &[u8]) -> bool {
    let Some(h) = header.get(..HEADER) else {
        return true; // not whole yet: nothing to judge
    };
    (CHANGE_CIPHER_SPEC..=APPLICATION_DATA).contains(&h[0])
        && h[1] == 3
        && record_len(h).is_some_and(|len| len - HEADER <= MAX_BODY)
}

/// How much one read asks of the socket on behalf of rustls (user space only).
pub const READ_AHEAD: usize = 64 * 1024;

/// How reads are served to rustls (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Aligned,
    Bounded,
    Free,
}

#[derive(Debug)]
pub struct RecordAligned<S> {
    inner: S,
    mode: Mode,
    header: [u8; HEADER],
    /// Header bytes seen of the current record (5 once its body is being read). `Aligned` only.
    header_seen: usize,
    /// Body bytes of the current record still to hand out (`Aligned`); bytes of the current
    /// record, header included, still to hand out (`Bounded`).
    body_left: usize,
    /// Bytes read ahead of rustls (never while `Aligned`).
    ahead: BytesMut,
    /// Client side: whether the last handshake flight waits for the app's first bytes.
    hold: Hold,
}

/// A client's last handshake flight, held back so that the app's first bytes can join it.
///
/// In TLS 1.3 the client's first encrypted record opens its last flight ((Certificate,
/// CertificateVerify,) Finished): a write that starts one is sent with `MSG_MORE`, so the kernel
/// keeps it until the connection's owner ends the hold ([`RecordAligned::end_hold`]), having found the
/// app's first request waiting (its record, written next, takes the flight along) or not (the
/// flight is pushed alone). The Finished and the request then leave in one packet, and the
/// server's sidecar wakes once for both. TLS 1.2 handshakes write no such record and are never
/// held. Should the owner never call it, the kernel's probe timer sends held bytes after 200 ms
/// (`TCP_RTO_MIN`).
#[derive(Debug, Default)]
enum Hold {
    #[default]
    Off,
    /// Looking for the first encrypted record in what rustls writes.
    Armed(Scan),
    /// The flight went with `MSG_MORE`: the kernel keeps it.
    Held,
}

/// Where records start in a byte stream written in pieces.
#[derive(Debug, Default, Clone)]
struct Scan {
    header: [u8; HEADER],
    seen: usize,
    body_left: usize,
}

impl Scan {
    /// Follows `bytes` (the next ones written); whether a record of type `kind` starts in them.
    fn starts(&mut self, mut bytes: &[u8], kind: u8) -> bool {
        let mut found = false;
        while !bytes.is_empty() {
            if self.body_left > 0 {
                let n = self.body_left.min(bytes.len());
                self.body_left -= n;
                bytes = &bytes[n..];
                continue;
            }
            if self.seen == 0 {
                found |= bytes[0] == kind;
            }
            let n = (HEADER - self.seen).min(bytes.len());
            self.header[self.seen..self.seen + n].copy_from_slice(&bytes[..n]);
            self.seen += n;
            bytes = &bytes[n..];
            if self.seen == HEADER {
                self.body_left = record_len(&self.header).unwrap_or(HEADER) - HEADER;
                self.seen = 0;
            }
        }
        found
    }
}

impl<S> RecordAligned<S> {
    pub fn new(inner: S, mode: Mode) -> Self {
        Self {
            inner,
            mode,
            header: [0; HEADER],
            header_seen: 0,
            body_left: 0,
            ahead: BytesMut::new(),
            hold: Hold::Off,
        }
    }

    /// Whether reads are (still) aligned for the kernel.
    pub fn aligned(&self) -> bool {
        self.mode == Mode::Aligned
    }

    /// Whether rustls has been served whole records only (tracked while `Aligned` or
    /// `Bounded`; `Free` reads may stop anywhere).
    pub fn at_boundary(&self) -> bool {
        self.mode != Mode::Free && self.header_seen == 0 && self.body_left == 0
    }

    /// Whether rustls was served part of a record whose rest is still in the socket or on its
    /// way (tracked while `Aligned` or `Bounded`).
    pub fn mid_record(&self) -> bool {
        self.mode != Mode::Free && !self.at_boundary()
    }

    /// Serves rustls freely from now on.
    pub fn release(&mut self) {
        self.mode = Mode::Free;
    }

    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// How many bytes were read from the socket beyond what rustls was served.
    pub fn read_ahead(&self) -> usize {
        self.ahead.len()
    }

    /// The socket and what was read from it beyond what rustls was served.
    pub fn into_parts(self) -> (S, BytesMut) {
        (self.inner, self.ahead)
    }
}

impl RecordAligned<TcpStream> {
    pub fn tcp(&self) -> &TcpStream {
        &self.inner
    }

    /// Holds the client's last handshake flight back for the app's first bytes (see [`Hold`]).
    pub fn hold_last_flight(&mut self) {
        self.hold = Hold::Armed(Scan::default());
    }

    /// Whether the last handshake flight is held back (written with `MSG_MORE`).
    #[cfg(test)]
    pub fn holding(&self) -> bool {
        matches!(self.hold, Hold::Held)
    }

    /// Ends the hold: later writes go out as written. Returns whether a flight is held back;
    /// the caller's next write then takes it along, or [`Self::push_held`] sends it alone.
    pub fn end_hold(&mut self) -> bool {
        matches!(std::mem::take(&mut self.hold), Hold::Held)
    }

    /// Sends a held flight alone, now: setting `TCP_NODELAY` (which the socket has anyway)
    /// pushes what the kernel keeps.
    pub fn push_held(&self) -> io::Result<()> {
        setsockopt(&self.inner, sockopt::TcpNoDelay, &true).map_err(io::Error::from)
    }

    /// Whether this write starts the client's first encrypted record (then held from here on).
    fn starts_last_flight(&mut self, bufs: &[io::IoSlice<'_>]) -> bool {
        let Hold::Armed(scan) = &self.hold else {
            return false;
        };
        let mut ahead = scan.clone();
        if bufs.iter().any(|b| ahead.starts(b, APPLICATION_DATA)) {
            self.hold = Hold::Held;
            return true;
        }
        false
    }

    /// Follows the bytes the socket took while looking for that record.
    fn wrote(&mut self, bufs: &[io::IoSlice<'_>], mut n: usize) {
        if let Hold::Armed(scan) = &mut self.hold {
            for b in bufs {
                let take = n.min(b.len());
                scan.starts(&b[..take], APPLICATION_DATA);
                n -= take;
            }
        }
    }
}

/// A [`RecordAligned`] read from within a poll, for rustls's `read_tls`: `WouldBlock` stands for
/// `Pending` (the context's waker is registered).
pub struct PollReader<'a, 'b, S> {
    pub io: &'a mut RecordAligned<S>,
    pub cx: &'a mut Context<'b>,
}

impl<S: AsyncRead + Unpin> io::Read for PollReader<'_, '_, S> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut buf = ReadBuf::new(buf);
        match Pin::new(&mut *self.io).poll_read(self.cx, &mut buf) {
            Poll::Ready(Ok(())) => Ok(buf.filled().len()),
            Poll::Ready(Err(e)) => Err(e),
            Poll::Pending => Err(io::ErrorKind::WouldBlock.into()),
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for RecordAligned<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        match this.mode {
            Mode::Aligned => this.poll_read_aligned(cx, buf),
            Mode::Bounded => this.poll_read_bounded(cx, buf),
            Mode::Free => this.poll_read_ahead(cx, buf),
        }
    }
}

impl<S: AsyncRead + Unpin> RecordAligned<S> {
    fn poll_read_aligned(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let want = if self.header_seen < HEADER {
            HEADER - self.header_seen
        } else {
            self.body_left
        };
        // A small bounce buffer keeps this free of `unsafe`; it only serves handshake records.
        let mut bounce = [0u8; 4096];
        let want = want.min(buf.remaining()).min(bounce.len());
        let mut limited = ReadBuf::new(&mut bounce[..want]);
        ready!(Pin::new(&mut self.inner).poll_read(cx, &mut limited))?;
        let got = limited.filled().len();
        buf.put_slice(limited.filled());
        if self.header_seen < HEADER {
            self.header[self.header_seen..self.header_seen + got].copy_from_slice(limited.filled());
            self.header_seen += got;
            if self.header_seen == HEADER {
                self.body_left = record_len(&self.header).expect("a whole header") - HEADER;
            }
        } else {
            self.body_left -= got;
        }
        if self.header_seen == HEADER && self.body_left == 0 {
            self.header_seen = 0;
        }
        Poll::Ready(Ok(()))
    }

    fn poll_read_bounded(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        // Between records, wait for the whole next record (its header says how long), so rustls
        // is never left holding part of one when the socket runs dry; within one, serve the rest.
        // Bytes that cannot be a record (a plaintext HTTP request, a length beyond any record's)
        // go to rustls at once, so it answers with an alert instead of the connection waiting
        // out the handshake timeout with up to 64 KiB buffered.
        while self.body_left == 0
            && plausible(&self.ahead)
            && self.ahead.len() < record_len(&self.ahead).unwrap_or(HEADER)
        {
            self.ahead.reserve(READ_AHEAD);
            match tokio_util::io::poll_read_buf(Pin::new(&mut self.inner), cx, &mut self.ahead) {
                Poll::Pending => {
                    if self.ahead.is_empty() {
                        self.ahead = BytesMut::new(); // nothing to read: hold no buffer
                    }
                    return Poll::Pending;
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Ready(Ok(0)) => break, // EOF: serve what is left (rustls sees the cut)
                Poll::Ready(Ok(_)) => {}
            }
        }
        // A plaintext handshake record opens a flight: ServerHello (or HelloRetryRequest), then
        // ChangeCipherSpec and the encrypted rest, which rustls takes in the same read (below).
        let flight = self.body_left == 0 && self.ahead.first() == Some(&HANDSHAKE);
        if self.body_left == 0
            && let Some(len) = record_len(&self.ahead)
        {
            self.body_left = len;
        }
        // (`body_left` is 0 here only at EOF with a partial header left.)
        let limit = if self.body_left > 0 {
            self.body_left
        } else {
            self.ahead.len()
        };
        let n = buf.remaining().min(self.ahead.len()).min(limit);
        buf.put_slice(&self.ahead[..n]);
        self.ahead.advance(n);
        self.body_left = self.body_left.saturating_sub(n);
        // The whole records of that flight read along with it go in the same read, so that
        // rustls answers the flight at once: served one by one, a client would write its
        // ChangeCipherSpec (queued on the ServerHello) before reading on to the server's
        // Finished, and send it in a packet of its own. Other records go one per read, as
        // tokio-rustls asks for them: it stops reading once rustls holds plaintext, so records
        // after the handshake's last (a client's first data, then its close_notify) stay here
        // for the connection's next owner.
        while flight
            && self.body_left == 0
            && let Some(len) = record_len(&self.ahead)
            && len <= self.ahead.len()
            && len <= buf.remaining()
        {
            buf.put_slice(&self.ahead[..len]);
            self.ahead.advance(len);
        }
        Poll::Ready(Ok(()))
    }

    fn poll_read_ahead(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.ahead.is_empty() {
            if buf.remaining() >= READ_AHEAD {
                return Pin::new(&mut self.inner).poll_read(cx, buf);
            }
            self.ahead.reserve(READ_AHEAD);
            match tokio_util::io::poll_read_buf(Pin::new(&mut self.inner), cx, &mut self.ahead) {
                Poll::Pending => {
                    self.ahead = BytesMut::new(); // nothing to read: hold no buffer meanwhile
                    return Poll::Pending;
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Ready(Ok(_)) => {} // 0 is EOF: nothing is put into `buf`
            }
        }
        let n = buf.remaining().min(self.ahead.len());
        buf.put_slice(&self.ahead[..n]);
        self.ahead.advance(n);
        Poll::Ready(Ok(()))
    }
}

/// Writes with `MSG_MORE`: the kernel keeps a last partial segment until a write without it, a
/// FIN or a push joins it.
pub fn poll_send_more(
    tcp: &TcpStream,
    cx: &mut Context<'_>,
    bufs: &[io::IoSlice<'_>],
) -> Poll<io::Result<usize>> {
    loop {
        ready!(tcp.poll_write_ready(cx))?;
        let sent = tcp.try_io(tokio::io::Interest::WRITABLE, || {
            sendmsg::<()>(tcp.as_raw_fd(), bufs, &[], MSG_MORE, None).map_err(io::Error::from)
        });
        match sent {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            sent => return Poll::Ready(sent),
        }
    }
}

/// `MSG_MORE | MSG_NOSIGNAL` (nix names no `MSG_MORE`; `MSG_NOSIGNAL` as every other write).
const MSG_MORE: MsgFlags = MsgFlags::from_bits_retain(libc::MSG_MORE | libc::MSG_NOSIGNAL);

impl AsyncWrite for RecordAligned<TcpStream> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if matches!(self.hold, Hold::Armed(_)) {
            return self.poll_write_vectored(cx, &[io::IoSlice::new(buf)]);
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if matches!(this.hold, Hold::Off) {
            return Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        }
        if matches!(this.hold, Hold::Held) || this.starts_last_flight(bufs) {
            return poll_send_more(&this.inner, cx, bufs);
        }
        let n = ready!(Pin::new(&mut this.inner).poll_write_vectored(cx, bufs))?;
        this.wrote(bufs, n);
        Poll::Ready(Ok(n))
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    fn record(kind: u8, body: &[u8]) -> Vec<u8> {
        let mut r = vec![kind, 3, 3];
        r.extend_from_slice(&(body.len() as u16).to_be_bytes());
        r.extend_from_slice(body);
        r
    }

    #[tokio::test]
    async fn never_reads_past_a_record_boundary() {
        let (mut far, near) = tokio::io::duplex(1024);
        let mut wire = record(22, b"handshake");
        wire.extend(record(23, b"application data that must stay in the socket"));
        far.write_all(&wire).await.unwrap();
        let mut aligned = RecordAligned::new(near, Mode::Aligned);
        let mut buf = [0u8; 1024];
        let mut first = Vec::new();
        while first.len() < 5 + 9 {
            let n = aligned.read(&mut buf).await.unwrap();
            first.extend_from_slice(&buf[..n]);
        }
        assert_eq!(first, record(22, b"handshake"));
        assert!(aligned.at_boundary());
        // Released, the rest comes in one read.
        aligned.release();
        let n = aligned.read(&mut buf).await.unwrap();
        assert_eq!(
            &buf[..n],
            &record(23, b"application data that must stay in the socket")[..]
        );
    }

    /// A reader that counts its reads.
    struct Counting<R> {
        inner: R,
        reads: usize,
    }

    impl<R: AsyncRead + Unpin> AsyncRead for Counting<R> {
        fn poll_read(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            self.reads += 1;
            Pin::new(&mut self.inner).poll_read(cx, buf)
        }
    }

    #[tokio::test]
    async fn released_it_reads_ahead_and_hands_out_every_byte_in_order() {
        let (mut far, near) = tokio::io::duplex(1 << 20);
        let wire: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        far.write_all(&wire).await.unwrap();
        drop(far); // EOF after the data
        let mut reader = RecordAligned::new(
            Counting {
                inner: near,
                reads: 0,
            },
            Mode::Free,
        );
        // rustls-sized reads: about one record at a time.
        let mut got = Vec::new();
        let mut chunk = [0u8; 16 * 1024 + 5];
        loop {
            let n = reader.read(&mut chunk).await.unwrap();
            if n == 0 {
                break;
            }
            got.extend_from_slice(&chunk[..n]);
        }
        assert_eq!(got, wire);
        // 200,000 bytes in 64 KiB reads: 4 of them (and one for EOF), not 13 of 16 KiB.
        assert!(
            reader.get_ref().reads <= 5,
            "{} reads",
            reader.get_ref().reads
        );
    }

    #[tokio::test]
    async fn nothing_to_read_releases_the_buffer() {
        let (mut far, near) = tokio::io::duplex(1024);
        let mut reader = RecordAligned::new(near, Mode::Free);
        far.write_all(b"hello").await.unwrap();
        let mut buf = [0u8; 100];
        assert_eq!(reader.read(&mut buf).await.unwrap(), 5);
        // The next read finds the socket empty: Pending, and the buffer goes.
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let mut rb = ReadBuf::new(&mut buf);
        assert!(
            Pin::new(&mut reader)
                .poll_read(&mut cx, &mut rb)
                .is_pending()
        );
        assert_eq!(reader.ahead.capacity(), 0);
    }

    #[tokio::test]
    async fn a_short_read_in_the_middle_of_a_record_is_not_a_boundary() {
        let (mut far, near) = tokio::io::duplex(1024);
        far.write_all(&record(22, b"abcdef")[..7]).await.unwrap();
        let mut aligned = RecordAligned::new(near, Mode::Aligned);
        let mut buf = [0u8; 64];
        let mut got = 0;
        while got < 7 {
            got += aligned.read(&mut buf).await.unwrap();
        }
        assert!(!aligned.at_boundary());
    }

    #[tokio::test]
    async fn bounded_serves_whole_records_only_and_hands_over_the_rest() {
        let (mut far, near) = tokio::io::duplex(1 << 16);
        let first = record(23, &[7; 6000]);
        let second = record(23, b"the next record");
        far.write_all(&first[..1000]).await.unwrap();
        let mut bounded = RecordAligned::new(near, Mode::Bounded);
        let mut buf = vec![0u8; 1 << 16];
        // Part of a record is not served: rustls would be left holding it.
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let mut rb = ReadBuf::new(&mut buf);
        assert!(
            Pin::new(&mut bounded)
                .poll_read(&mut cx, &mut rb)
                .is_pending()
        );
        far.write_all(&first[1000..]).await.unwrap();
        far.write_all(&second[..3]).await.unwrap();
        // rustls asks for 4 KiB at a time: the record comes in two reads, nothing beyond it.
        let mut got = Vec::new();
        while got.len() < first.len() {
            let n = bounded.read(&mut buf[..4096]).await.unwrap();
            got.extend_from_slice(&buf[..n]);
            assert!(got.len() <= first.len());
        }
        assert_eq!(got, first);
        assert!(bounded.at_boundary());
        let (_, rest) = bounded.into_parts();
        assert_eq!(&rest[..], &second[..3]);
    }

    /// What cannot be a TLS record is not waited for: rustls gets it at once and answers with an
    /// alert. Waiting would hold the connection (and up to 64 KiB) for the handshake timeout.
    #[tokio::test]
    async fn bounded_serves_what_cannot_be_a_record_at_once() {
        let overlong = [&[22u8, 3, 1, 0xff, 0xff][..], &[b'A'; 100]].concat();
        let bad_type = [&[0x99u8, 3, 3, 0, 16][..], &[0; 4]].concat();
        let bad_version = [&[22u8, 9, 9, 0, 16][..], &[0; 4]].concat();
        let http = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec();
        for wire in [overlong, bad_type, bad_version, http] {
            let (mut far, near) = tokio::io::duplex(1 << 16);
            far.write_all(&wire).await.unwrap();
            let mut bounded = RecordAligned::new(near, Mode::Bounded);
            let mut buf = vec![0u8; 1 << 16];
            let mut cx = Context::from_waker(std::task::Waker::noop());
            let mut rb = ReadBuf::new(&mut buf);
            let polled = Pin::new(&mut bounded).poll_read(&mut cx, &mut rb);
            assert!(polled.is_ready(), "{wire:?}: waited for more");
            assert_eq!(rb.filled(), &wire[..]);
        }
        // The longest legal record is still waited for whole.
        let (mut far, near) = tokio::io::duplex(1 << 16);
        let longest = record(23, &vec![1; MAX_BODY]);
        far.write_all(&longest[..100]).await.unwrap();
        let mut bounded = RecordAligned::new(near, Mode::Bounded);
        let mut buf = vec![0u8; 1 << 16];
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let mut rb = ReadBuf::new(&mut buf);
        assert!(
            Pin::new(&mut bounded)
                .poll_read(&mut cx, &mut rb)
                .is_pending()
        );
    }

    /// A flight that arrived in one packet (a ServerHello, a ChangeCipherSpec and the encrypted
    /// rest) reaches rustls in one read, so that it answers in one write; a record that is not
    /// whole yet, or does not fit the reader's buffer, waits. Records that do not follow a
    /// plaintext handshake record (a client's Finished, first data and close_notify) are served
    /// one per read: tokio-rustls stops asking once rustls holds plaintext, and what it did not
    /// take must stay for the record layer.
    #[tokio::test]
    async fn bounded_serves_a_whole_flight_at_once_and_other_records_one_by_one() {
        let (mut far, near) = tokio::io::duplex(1 << 16);
        let hello = record(22, &[1; 90]);
        let ccs = record(20, &[1]);
        let sealed = record(23, &[2; 300]);
        let next = record(23, &[3; 100]);
        let wire = [&hello[..], &ccs, &sealed, &next[..7]].concat();
        far.write_all(&wire).await.unwrap();
        let mut bounded = RecordAligned::new(near, Mode::Bounded);
        let mut buf = vec![0u8; 1 << 16];
        let n = bounded.read(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], &wire[..wire.len() - 7]);
        assert!(bounded.at_boundary());
        // Not a flight: the completed record alone, then the next.
        far.write_all(&next[7..]).await.unwrap();
        far.write_all(&sealed).await.unwrap();
        let n = bounded.read(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], &next[..]);
        let n = bounded.read(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], &sealed[..]);
        assert!(bounded.at_boundary());
        // A flight record that does not fit the buffer after the hello waits for the next read.
        far.write_all(&[&hello[..], &sealed].concat())
            .await
            .unwrap();
        let n = bounded.read(&mut buf[..hello.len() + 10]).await.unwrap();
        assert_eq!(&buf[..n], &hello[..]);
        let n = bounded.read(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], &sealed[..]);
        assert!(bounded.at_boundary());
    }

    #[test]
    fn scan_finds_where_records_start_across_writes() {
        let mut scan = Scan::default();
        let hello = record(22, &[1; 40]);
        let ccs = record(20, &[1]);
        let sealed = record(23, &[9; 60]);
        assert!(!scan.starts(&hello[..3], APPLICATION_DATA));
        assert!(!scan.starts(&hello[3..], APPLICATION_DATA));
        // A body byte of 23 is not a record start; a header split across writes is found.
        assert!(!scan.starts(&[&ccs[..], &sealed[..2]].concat(), 24));
        let mut again = Scan::default();
        assert!(!again.starts(&[&hello[..], &ccs].concat(), APPLICATION_DATA));
        assert!(again.starts(&sealed[..1], APPLICATION_DATA));
        assert!(!again.starts(&sealed[1..], APPLICATION_DATA));
        let mut body = Scan::default();
        assert!(!body.starts(&record(22, &[23; 30]), APPLICATION_DATA));
    }

    /// Bytes in `tcp`'s send queue that have not been sent (`TCP_INFO`'s
    /// `tcpi_notsent_bytes`): a push sends them within the call that pushes, without waiting for
    /// the peer (or, on a loaded host, for softirq time to deliver its ACK).
    fn unsent(tcp: &TcpStream) -> u32 {
        crate::test_tcp::info(tcp).tcpi_notsent_bytes
    }

    /// A client handshake with the last flight held, against a tokio-rustls server that, once its
    /// handshake is done, reads until EOF.
    async fn held_handshake(
        version: &'static rustls::SupportedProtocolVersion,
    ) -> (
        tokio_rustls::client::TlsStream<RecordAligned<TcpStream>>,
        tokio::task::JoinHandle<Vec<u8>>,
    ) {
        use rustls::pki_types::ServerName;
        let provider = crate::tls::provider(
            crate::config::Provider::AwsLcRs,
            crate::config::Provider::AwsLcRs,
            true,
        );
        let suite = *provider
            .cipher_suites
            .iter()
            .find(|s| s.version() == version)
            .unwrap();
        let (server, client) = crate::test_tls::configs_for(provider, suite, version);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            let mut tls = tokio_rustls::TlsAcceptor::from(server)
                .accept(tcp)
                .await
                .unwrap();
            let mut got = Vec::new();
            tls.read_to_end(&mut got).await.unwrap();
            got
        });
        let mut tcp = RecordAligned::new(TcpStream::connect(addr).await.unwrap(), Mode::Bounded);
        tcp.tcp().set_nodelay(true).unwrap();
        tcp.hold_last_flight();
        let name = ServerName::try_from("server.test").unwrap();
        let tls = tokio_rustls::TlsConnector::from(client)
            .connect(name, tcp)
            .await
            .unwrap();
        (tls, server)
    }

    /// Closes the client, and what the server read before EOF.
    async fn server_got(
        mut tls: tokio_rustls::client::TlsStream<RecordAligned<TcpStream>>,
        server: tokio::task::JoinHandle<Vec<u8>>,
    ) -> Vec<u8> {
        tls.shutdown().await.unwrap();
        tokio::time::timeout(std::time::Duration::from_secs(30), server)
            .await
            .expect("the server's handshake and read")
            .unwrap()
    }

    /// The Finished stays in our send queue, unsent (the server cannot finish its handshake),
    /// until the app's first bytes are written after it; then both go, the request intact.
    #[tokio::test]
    async fn the_last_flight_waits_for_the_first_request_and_leaves_with_it() {
        let (mut tls, server) = held_handshake(&rustls::version::TLS13).await;
        let written = std::time::Instant::now(); // (just after: the handshake's last write)
        assert!(
            tls.get_ref().0.holding(),
            "a TLS 1.3 client's Finished is held"
        );
        // A plain write would have sent it within the call. The look counts only within 150 ms
        // of the write: the kernel's probe timer sends held bytes 200 ms after it, and a loaded
        // test host may keep this thread waiting that long.
        let (held, finished) = (unsent(tls.get_ref().0.tcp()), server.is_finished());
        if written.elapsed() < std::time::Duration::from_millis(150) {
            assert!(held > 0, "the held flight left alone");
            assert!(!finished, "the server finished its handshake");
        }
        assert!(tls.get_mut().0.end_hold(), "the flight was held");
        tls.write_all(b"the first request").await.unwrap();
        tls.flush().await.unwrap();
        assert_eq!(
            unsent(tls.get_ref().0.tcp()),
            0,
            "the request's write sent both"
        );
        // Later writes are not held.
        assert!(!tls.get_ref().0.holding());
        assert_eq!(server_got(tls, server).await, b"the first request");
    }

    /// With no request waiting, the held flight is pushed at once: sent within the call (not
    /// left to the kernel's probe timer), and the server's handshake ends.
    #[tokio::test]
    async fn the_last_flight_goes_alone_when_the_app_has_nothing_to_send() {
        let (mut tls, server) = held_handshake(&rustls::version::TLS13).await;
        assert!(tls.get_mut().0.end_hold());
        tls.get_ref().0.push_held().unwrap();
        assert_eq!(
            unsent(tls.get_ref().0.tcp()),
            0,
            "the held flight was not pushed"
        );
        assert!(server_got(tls, server).await.is_empty());
    }

    /// TLS 1.2 handshakes seal no application-data record: nothing is held, and once the hold
    /// ends the first record of app data is not held either.
    #[tokio::test]
    async fn a_tls12_handshake_holds_nothing() {
        let (mut tls, server) = held_handshake(&rustls::version::TLS12).await;
        assert!(!tls.get_mut().0.end_hold());
        tls.write_all(b"app data").await.unwrap();
        tls.flush().await.unwrap();
        assert_eq!(unsent(tls.get_ref().0.tcp()), 0, "the record was held");
        assert_eq!(server_got(tls, server).await, b"app data");
    }
}
