//! Non-blocking reads of an app socket that leave tokio's readiness as tokio's own `poll_read`
//! does: a short read means the socket is drained, so the next wait is for the next readiness
//! event. A read that leaves the readiness set (`try_read_vectored`, `try_read_buf`) makes the
//! next wait begin with one more system call that returns EAGAIN: on a request/response
//! connection, one call in seven per round trip on each sidecar.
//!
//! Bytes that arrive after the read bring a new event, which tokio does not clear, and a FIN
//! stays visible, because tokio never clears the closed states.

use std::future::poll_fn;
use std::io::{self, IoSliceMut};
use std::pin::Pin;
use std::task::Poll;

use bytes::BufMut;
use tokio::io::Interest;
use tokio::net::TcpStream;

/// One `readv` into `bufs`, if tokio takes the socket for readable (else WouldBlock).
pub fn readv_draining(app: &TcpStream, bufs: &mut [IoSliceMut<'_>]) -> io::Result<usize> {
    let room: usize = bufs.iter().map(|b| b.len()).sum();
    debug_assert!(room > 0, "an empty read would look like EOF");
    let mut got = 0;
    let read = app.try_io(Interest::READABLE, || {
        got = nix::sys::uio::readv(app, bufs)?;
        if 0 < got && got < room {
            return Err(io::ErrorKind::WouldBlock.into()); // clears the readiness; `got` is kept
        }
        Ok(got)
    });
    match read {
        Err(e) if e.kind() == io::ErrorKind::WouldBlock && got > 0 => Ok(got),
        read => read,
    }
}

/// One read into `buf`'s spare room if the app's bytes are already there; `None` (without a
/// system call when tokio knows the socket is drained) if they are not. `Some(Ok(0))` is EOF.
pub async fn read_if_there(
    app: &mut TcpStream,
    buf: &mut impl BufMut,
) -> Option<io::Result<usize>> {
    poll_fn(|cx| {
        Poll::Ready(
            match tokio_util::io::poll_read_buf(Pin::new(&mut *app), cx, buf) {
                Poll::Ready(read) => Some(read),
                Poll::Pending => None,
            },
        )
    })
    .await
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::io::AsyncWriteExt;

    use super::*;

    async fn connected() -> (TcpStream, TcpStream) {
        let (writer, reader) = crate::test_tcp::connected().await;
        (reader, writer)
    }

    async fn readable(reader: &TcpStream) {
        tokio::time::timeout(Duration::from_secs(5), reader.readable())
            .await
            .expect("the socket never became readable")
            .unwrap();
    }

    async fn readv(reader: &TcpStream, room: usize) -> io::Result<usize> {
        readable(reader).await;
        let mut buf = vec![0; room];
        readv_draining(reader, &mut [IoSliceMut::new(&mut buf)])
    }

    /// Whether tokio still takes the socket for readable (`try_io` runs its closure only then).
    fn still_readable(reader: &TcpStream) -> bool {
        reader.try_io(Interest::READABLE, || Ok(())).is_ok()
    }

    #[tokio::test]
    async fn a_short_readv_clears_the_readiness_and_the_next_bytes_bring_it_back() {
        let (reader, mut writer) = connected().await;
        writer.write_all(&[7; 10]).await.unwrap();
        assert_eq!(readv(&reader, 64).await.unwrap(), 10);
        assert!(
            !still_readable(&reader),
            "a readv that finds nothing would follow"
        );
        writer.write_all(&[8; 5]).await.unwrap();
        assert_eq!(readv(&reader, 64).await.unwrap(), 5);
    }

    #[tokio::test]
    async fn a_full_readv_keeps_the_readiness() {
        let (reader, mut writer) = connected().await;
        writer.write_all(&[7; 100]).await.unwrap();
        assert_eq!(readv(&reader, 64).await.unwrap(), 64);
        assert!(still_readable(&reader));
        assert_eq!(readv(&reader, 64).await.unwrap(), 36);
    }

    #[tokio::test]
    async fn a_fin_behind_a_short_readv_is_still_seen() {
        let (reader, mut writer) = connected().await;
        writer.write_all(&[7; 10]).await.unwrap();
        writer.shutdown().await.unwrap();
        assert_eq!(readv(&reader, 64).await.unwrap(), 10);
        assert_eq!(readv(&reader, 64).await.unwrap(), 0, "EOF");
    }

    #[tokio::test]
    async fn read_if_there_takes_what_is_there_and_leaves_the_socket_drained() {
        let (mut reader, mut writer) = connected().await;
        let mut buf = Vec::with_capacity(1024);
        assert!(
            read_if_there(&mut reader, &mut buf).await.is_none(),
            "nothing sent yet"
        );
        writer.write_all(&[7; 10]).await.unwrap();
        readable(&reader).await;
        assert_eq!(
            read_if_there(&mut reader, &mut buf).await.unwrap().unwrap(),
            10
        );
        assert_eq!(buf, [7; 10]);
        assert!(
            !still_readable(&reader),
            "a read that finds nothing would follow"
        );
        writer.shutdown().await.unwrap();
        readable(&reader).await;
        assert_eq!(
            read_if_there(&mut reader, &mut buf).await.unwrap().unwrap(),
            0,
            "EOF"
        );
    }
}
