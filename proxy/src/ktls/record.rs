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
//!   records, and no further than the end of the current one; what was read beyond it is handed
//!   over with the socket ([`RecordAligned::into_parts`]). No extra system calls.
//! - [`Mode::Free`]: reads ahead and serves rustls whatever it asks for. rustls asks for at most
//!   one record (about 16 KiB) per read, so without read-ahead a bulk transfer would cost one
//!   `recvfrom` per record; one read of [`READ_AHEAD`] serves several.
//!
//! [`RecordAligned::release`] turns either bounded mode into `Free` once the connection stays
//! with rustls. The read-ahead buffer is released whenever the socket has nothing more to give
//! and nothing is left in it, so an idle connection holds none.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// The record header: outer type, legacy version, length.
pub const HEADER: usize = 5;

/// The whole length (header included) of the record starting at `wire`, once its header is
/// there.
pub fn record_len(wire: &[u8]) -> Option<usize> {
    let h = wire.get(..HEADER)?;
    Some(HEADER + usize::from(u16::from_be_bytes([h[3], h[4]])))
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

    /// Serves rustls freely from now on.
    pub fn release(&mut self) {
        self.mode = Mode::Free;
    }

    pub fn get_ref(&self) -> &S {
        &self.inner
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
        while self.body_left == 0 && self.ahead.len() < record_len(&self.ahead).unwrap_or(HEADER) {
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

impl<S: AsyncWrite + Unpin> AsyncWrite for RecordAligned<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
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
}
