//! Record-aligned reads for the handshake.
//!
//! rustls reads whatever the socket has. If the peer's first application records arrive in the
//! same segment as its last handshake record, rustls would read (and decrypt) them too, and the
//! kernel, taking over afterwards, would never see them. While `aligned`, this wrapper hands
//! rustls one TLS record at a time (the 5-byte header, then exactly the body), so when the
//! handshake completes everything after it is still in the socket. Once the connection has
//! been handed over, or kept in user space, [`RecordAligned::release`] turns it into a plain
//! pass-through. It costs two reads per handshake record.
//!
//! Unaligned, it reads ahead: rustls asks for at most one record (about 16 KiB) per read, so a
//! bulk transfer would cost one `recvfrom` per record. When rustls asks for less than
//! [`READ_AHEAD`], one read fills a buffer of that size and rustls is served from it (a
//! memory copy instead of a system call for most records). The buffer is released whenever the
//! socket has nothing more to give, so an idle connection holds none.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

const HEADER: usize = 5;

/// How much one read asks of the socket on behalf of rustls (user space only).
pub const READ_AHEAD: usize = 64 * 1024;

#[derive(Debug)]
pub struct RecordAligned<S> {
    inner: S,
    aligned: bool,
    header: [u8; HEADER],
    /// Header bytes seen of the current record (5 once its body is being read).
    header_seen: usize,
    /// Body bytes of the current record still to hand out.
    body_left: usize,
    /// Bytes read ahead of rustls (never while aligned).
    ahead: BytesMut,
}

impl<S> RecordAligned<S> {
    /// `aligned == false` makes it a plain pass-through from the start.
    pub fn new(inner: S, aligned: bool) -> Self {
        Self {
            inner,
            aligned,
            header: [0; HEADER],
            header_seen: 0,
            body_left: 0,
            ahead: BytesMut::new(),
        }
    }

    /// Whether reads are (still) record-aligned.
    pub fn aligned(&self) -> bool {
        self.aligned
    }

    /// Whether the reads stopped exactly at a record boundary.
    pub fn at_boundary(&self) -> bool {
        !self.aligned || (self.header_seen == 0 && self.body_left == 0)
    }

    /// Stops aligning reads.
    pub fn release(&mut self) {
        self.aligned = false;
    }

    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The socket, once nothing read from it is waiting here (always the case after aligned
    /// reads, which are what a hand-over to the kernel follows).
    pub fn into_inner(self) -> S {
        debug_assert!(self.ahead.is_empty(), "bytes read ahead would be lost");
        self.inner
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
        if !this.aligned {
            return this.poll_read_ahead(cx, buf);
        }
        let want = if this.header_seen < HEADER {
            HEADER - this.header_seen
        } else {
            this.body_left
        };
        // A small bounce buffer keeps this free of `unsafe`; it only serves handshake records.
        let mut bounce = [0u8; 4096];
        let want = want.min(buf.remaining()).min(bounce.len());
        let mut limited = ReadBuf::new(&mut bounce[..want]);
        ready!(Pin::new(&mut this.inner).poll_read(cx, &mut limited))?;
        let got = limited.filled().len();
        buf.put_slice(limited.filled());
        if this.header_seen < HEADER {
            this.header[this.header_seen..this.header_seen + got].copy_from_slice(limited.filled());
            this.header_seen += got;
            if this.header_seen == HEADER {
                this.body_left = u16::from_be_bytes([this.header[3], this.header[4]]) as usize;
            }
        } else {
            this.body_left -= got;
        }
        if this.header_seen == HEADER && this.body_left == 0 {
            this.header_seen = 0;
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncRead + Unpin> RecordAligned<S> {
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
        let mut aligned = RecordAligned::new(near, true);
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
            false,
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
        let mut reader = RecordAligned::new(near, false);
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
        let mut aligned = RecordAligned::new(near, true);
        let mut buf = [0u8; 64];
        let mut got = 0;
        while got < 7 {
            got += aligned.read(&mut buf).await.unwrap();
        }
        assert!(!aligned.at_boundary());
    }
}
