//! Zero-copy app → peer: `splice(app socket → pipe → kTLS socket)`. The plaintext never enters
//! user space; the kernel encrypts it on its way into the TLS socket (records of at most 16 KiB).

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use metrics::Counter;
use nix::fcntl::{FcntlArg, OFlag, SpliceFFlags, fcntl, splice};
use tokio::io::{AsyncWrite, Interest};
use tokio::net::TcpStream;

use super::KtlsStream;
use crate::forward::{BufferPolicy, Buffered, Failed, Pump};

/// Pipe capacity asked for: large enough that one splice carries many records.
const PIPE_SIZE: usize = 256 * 1024;

/// The app → peer pump of a kTLS connection: [`Splice`], or, when no pipe can be had (out of
/// file descriptors, say), a user-space copy. Either way the kernel encrypts.
pub enum AppToKernel<'a> {
    Splice(Splice<'a>),
    Copy(Buffered<'a>),
}

impl<'a> AppToKernel<'a> {
    pub fn new(counter: &'a Counter, buffers: BufferPolicy) -> Self {
        match Splice::new(counter) {
            Ok(splice) => Self::Splice(splice),
            Err(e) => {
                tracing::debug!(error = %e, "no pipe for splice; copying app -> peer");
                Self::Copy(Buffered::new(buffers, counter))
            }
        }
    }
}

impl Pump<TcpStream, KtlsStream> for AppToKernel<'_> {
    fn poll_pump(
        &mut self,
        cx: &mut Context<'_>,
        app: Pin<&mut TcpStream>,
        peer: Pin<&mut KtlsStream>,
    ) -> Poll<Result<(), Failed>> {
        match self {
            Self::Splice(p) => p.poll_pump(cx, app, peer),
            Self::Copy(p) => p.poll_pump(cx, app, peer),
        }
    }

    fn carried(&self) -> u64 {
        match self {
            Self::Splice(p) => p.carried(),
            Self::Copy(p) => Pump::<TcpStream, KtlsStream>::carried(p),
        }
    }

    fn take_moved(&mut self) -> bool {
        match self {
            Self::Splice(p) => p.take_moved(),
            Self::Copy(p) => Pump::<TcpStream, KtlsStream>::take_moved(p),
        }
    }

    fn unsent(&self) -> bool {
        match self {
            Self::Splice(p) => p.unsent(),
            Self::Copy(p) => Pump::<TcpStream, KtlsStream>::unsent(p),
        }
    }
}

/// The zero-copy app → peer pump of a kTLS connection.
pub struct Splice<'a> {
    pipe_read: OwnedFd,
    pipe_write: OwnedFd,
    capacity: usize,
    /// Bytes in the pipe, not yet in the TLS socket.
    in_pipe: usize,
    carried: u64,
    counter: &'a Counter,
    read_done: bool,
    moved: bool,
}

impl<'a> Splice<'a> {
    pub fn new(counter: &'a Counter) -> io::Result<Self> {
        let (pipe_read, pipe_write) = nix::unistd::pipe2(OFlag::O_NONBLOCK | OFlag::O_CLOEXEC)?;
        // Best effort: an unprivileged process may be capped below PIPE_SIZE.
        let capacity = fcntl(&pipe_write, FcntlArg::F_SETPIPE_SZ(PIPE_SIZE as _))
            .map_or(64 * 1024, |n| n as usize);
        Ok(Self {
            pipe_read,
            pipe_write,
            capacity,
            in_pipe: 0,
            carried: 0,
            counter,
            read_done: false,
            moved: false,
        })
    }
}

impl Pump<TcpStream, KtlsStream> for Splice<'_> {
    fn carried(&self) -> u64 {
        self.carried
    }

    fn take_moved(&mut self) -> bool {
        std::mem::take(&mut self.moved)
    }

    fn unsent(&self) -> bool {
        self.in_pipe > 0
    }

    fn poll_pump(
        &mut self,
        cx: &mut Context<'_>,
        app: Pin<&mut TcpStream>,
        mut peer: Pin<&mut KtlsStream>,
    ) -> Poll<Result<(), Failed>> {
        let flags = SpliceFFlags::SPLICE_F_NONBLOCK | SpliceFFlags::SPLICE_F_MOVE;
        loop {
            if self.in_pipe == 0 {
                if self.read_done {
                    // App EOF: close_notify, then FIN.
                    ready!(peer.as_mut().poll_shutdown(cx)).map_err(Failed::Write)?;
                    return Poll::Ready(Ok(()));
                }
                ready!(app.poll_read_ready(cx)).map_err(Failed::Read)?;
                let moved = app.try_io(Interest::READABLE, || {
                    splice(
                        app.as_fd(),
                        None,
                        self.pipe_write.as_fd(),
                        None,
                        self.capacity,
                        flags,
                    )
                    .map_err(io::Error::from)
                });
                match moved {
                    Ok(0) => self.read_done = true,
                    Ok(n) => {
                        self.in_pipe = n;
                        self.carried += n as u64;
                        self.counter.increment(n as u64);
                        self.moved = true;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                    Err(e) => return Poll::Ready(Err(Failed::Read(e))),
                }
            }
            while self.in_pipe > 0 {
                // A KeyUpdate owed to the peer, or a key rotation at the record budget, first.
                ready!(peer.as_mut().get_mut().poll_send_ready(cx, self.in_pipe))
                    .map_err(Failed::Write)?;
                ready!(peer.tcp().poll_write_ready(cx)).map_err(Failed::Write)?;
                let tcp = peer.tcp();
                let sent = tcp.try_io(Interest::WRITABLE, || {
                    splice(
                        self.pipe_read.as_fd(),
                        None,
                        tcp.as_fd(),
                        None,
                        self.in_pipe,
                        flags,
                    )
                    .map_err(io::Error::from)
                });
                match sent {
                    Ok(n) => {
                        self.in_pipe -= n;
                        self.moved = true;
                        peer.as_mut().get_mut().sent(n);
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                    Err(e) => return Poll::Ready(Err(Failed::Write(e))),
                }
            }
        }
    }
}
