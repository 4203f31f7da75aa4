//! Moving bytes both ways between the app's socket and the peer's TLS stream.
//!
//! Both directions run in one future on one task, so a connection costs one task and no
//! cross-thread wake-ups between its halves. Each direction:
//! - reads into a buffer that grows with the traffic (16 KiB, then [`LARGE_BUFFER`] after
//!   128 KiB: tokio's 8 KiB default costs about twice the CPU per byte, and each step up since,
//!   64 → 256 → 512 KiB, cut system calls and wake-ups per GiB in `gembok-bench`; see
//!   `benches/tuning.md`), and is *released* whenever the read side has nothing to give, so an
//!   idle connection holds no buffer at all;
//! - writes everything read before reading again, and flushes only when the next read would block
//!   (many TLS records then leave in one `writev`);
//! - on EOF, shuts the other side's write half (app FIN → close_notify + FIN to the peer; peer
//!   close_notify → FIN to the app) while the other direction keeps flowing.
//!
//! A peer that closes without close_notify is a truncation: we stop and report
//! [`End::Truncated`] so the caller resets the app side instead of forging a clean end. The same
//! goes for a connection cut by the end of the drain grace period ([`End::Aborted`]).

use std::future::poll_fn;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::BytesMut;
use metrics::Counter;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::{Instant, Sleep};
use tokio_util::sync::CancellationToken;

/// Buffer sizes by how much a direction has carried so far.
#[derive(Debug, Clone, Copy)]
pub struct BufferPolicy {
    pub initial: usize,
    pub large: usize,
    /// Bytes after which a direction switches to `large`.
    pub grow_after: u64,
}

/// The default large buffer: what one read from a busy socket takes at most. 512 KiB against
/// 256 KiB, where TCP paces its sends with timers (BBR without an `fq` qdisc, as on loopback):
/// about a quarter fewer CPU seconds per GiB in the outbound of a single bulk stream, where each
/// read and write moves twice the bytes (a third fewer `epoll_wait`s per GiB); under CUBIC the
/// two do the same (`benches/tuning.md`). A busy connection holds up to this much per direction
/// and per sidecar, an idle one nothing.
pub const LARGE_BUFFER: usize = 512 * 1024;

impl Default for BufferPolicy {
    fn default() -> Self {
        Self {
            initial: 16 * 1024,
            large: LARGE_BUFFER,
            grow_after: 128 * 1024,
        }
    }
}

impl BufferPolicy {
    pub fn size_for(&self, carried: u64) -> usize {
        if carried >= self.grow_after {
            self.large
        } else {
            self.initial
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub struct Settings {
    pub idle_timeout: Duration,
    pub buffers: BufferPolicy,
}

/// When a connection counts as idle: nothing read or written by either pump for `timeout`, and,
/// when the two TCP sockets are given, nothing acknowledged or received by either of them in
/// the kernel either. A slow reader drains a socket's send buffer without waking the writer
/// until half of it is free (megabytes on a fast link), so the pumps alone would call a
/// connection idle that is still delivering.
#[derive(Debug, Clone, Copy)]
pub struct IdleWatch {
    pub timeout: Duration,
    /// The app's and the peer's TCP sockets, read (`TCP_INFO`) only when the timer fires.
    sockets: Option<[RawFd; 2]>,
}

impl IdleWatch {
    /// Watches the pumps only (in-memory streams).
    pub fn new(timeout: Duration) -> Self {
        Self {
            timeout,
            sockets: None,
        }
    }

    /// Watches the two sockets' kernel counters too. The sockets must outlive the forwarding.
    pub fn with_sockets(timeout: Duration, app: &impl AsRawFd, peer: &impl AsRawFd) -> Self {
        Self {
            timeout,
            sockets: Some([app.as_raw_fd(), peer.as_raw_fd()]),
        }
    }

    /// Bytes acknowledged and received by both sockets so far (`None` when not watched).
    fn progress(&self) -> Option<u64> {
        let sockets = self.sockets?;
        Some(
            sockets
                .iter()
                .filter_map(|&fd| crate::tcp_info::progress(fd))
                .fold(0, u64::wrapping_add),
        )
    }
}

/// How a forwarded connection ended.
#[derive(Debug)]
pub enum End {
    /// Both directions reached EOF cleanly (FIN from the app, close_notify from the peer).
    Clean,
    /// The peer's TCP stream ended without close_notify.
    Truncated,
    /// Reading from or writing to the app failed (usually a reset).
    AppError(io::Error),
    /// Reading from or writing to the peer failed (reset, TLS alert, bad record).
    PeerError(io::Error),
    /// Nothing moved either way for the idle timeout. `unsent`: bytes read from one side were
    /// still waiting for the other to take them (a reader that stopped reading), so the
    /// connection must not end as if it were complete.
    IdleTimeout { unsent: bool },
    /// The drain grace period ended while the connection was still open.
    Aborted,
}

impl End {
    /// The `end` label of `gembok_connections_closed_total`.
    pub fn label(&self) -> &'static str {
        match self {
            End::Clean => "clean",
            End::Truncated => "truncated",
            End::AppError(_) | End::PeerError(_) => "reset",
            End::IdleTimeout { .. } => "idle_timeout",
            End::Aborted => "aborted",
        }
    }
}

/// What a connection carried and how it ended.
#[derive(Debug)]
pub struct Outcome {
    pub app_to_peer: u64,
    pub peer_to_app: u64,
    pub end: End,
}

/// Forwards until both directions are done, one fails, the connection idles out (`idle`) or
/// `abort` is cancelled, copying through user-space buffers both ways. `app_to_peer` and
/// `peer_to_app` count bytes as they move (live in /metrics).
pub async fn forward<A, P>(
    app: &mut A,
    peer: &mut P,
    buffers: BufferPolicy,
    idle: IdleWatch,
    app_to_peer: &Counter,
    peer_to_app: &Counter,
    abort: &CancellationToken,
) -> Outcome
where
    A: AsyncRead + AsyncWrite + Unpin + ?Sized,
    P: AsyncRead + AsyncWrite + Unpin + ?Sized,
{
    let up = Buffered::new(buffers, app_to_peer);
    let down = Buffered::new(buffers, peer_to_app);
    forward_with(app, peer, up, down, idle, abort).await
}

/// [`forward`] with the pump of each direction chosen by the caller (the kTLS path splices
/// app → peer). Peer reads that fail with `UnexpectedEof` are truncations.
pub async fn forward_with<A, P, U, D>(
    app: &mut A,
    peer: &mut P,
    up: U,
    down: D,
    idle: IdleWatch,
    abort: &CancellationToken,
) -> Outcome
where
    A: Unpin + ?Sized,
    P: Unpin + ?Sized,
    U: Pump<A, P>,
    D: Pump<P, A>,
{
    let never = Switch {
        wanted: || false,
        ready: |_: &mut P| false,
    };
    let (outcome, _) = forward_until(app, peer, up, down, idle, abort, never).await;
    outcome.expect("never switches")
}

/// When [`forward_until`] may hand the connection over to another data path.
pub struct Switch<W, R> {
    /// The caller wants to switch: each direction stops reading once what it read is written
    /// and flushed, so a busy connection reaches a boundary too.
    pub wanted: W,
    /// Asked once both directions are at rest: whether the peer may change its data path now.
    /// If not, forwarding goes on and switches only when both directions come to rest by
    /// themselves (an idle moment) and this holds.
    pub ready: R,
}

/// [`forward_with`] that stops early, returning `(None, carried)`, once `switch` is wanted and
/// ready while both directions are open and at rest (nothing read and not yet written);
/// `carried` is (app → peer, peer → app) so far. Nothing read from either side is left behind.
pub async fn forward_until<A, P, U, D, W, R>(
    app: &mut A,
    peer: &mut P,
    mut up: U,
    mut down: D,
    idle: IdleWatch,
    abort: &CancellationToken,
    mut switch: Switch<W, R>,
) -> (Option<Outcome>, (u64, u64))
where
    A: Unpin + ?Sized,
    P: Unpin + ?Sized,
    U: Pump<A, P>,
    D: Pump<P, A>,
    W: Fn() -> bool,
    R: FnMut(&mut P) -> bool,
{
    let mut idle = Idle::new(idle);
    let (mut up_done, mut down_done) = (false, false);
    // Set when the peer was not ready although both directions were held at rest.
    let mut gave_up = false;
    let mut aborted = std::pin::pin!(abort.cancelled());

    let end = poll_fn(|cx| {
        let mut moved = false;
        loop {
            if aborted.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Some(End::Aborted));
            }
            let hold = !gave_up && !up_done && !down_done && (switch.wanted)();
            up.hold(hold);
            down.hold(hold);
            if !up_done {
                match up.poll_pump(cx, Pin::new(&mut *app), Pin::new(&mut *peer)) {
                    Poll::Ready(Ok(())) => up_done = true,
                    Poll::Ready(Err(Failed::Read(e))) => {
                        return Poll::Ready(Some(End::AppError(e)));
                    }
                    Poll::Ready(Err(Failed::Write(e))) => {
                        return Poll::Ready(Some(End::PeerError(e)));
                    }
                    Poll::Pending => {}
                }
            }
            if !down_done {
                match down.poll_pump(cx, Pin::new(&mut *peer), Pin::new(&mut *app)) {
                    Poll::Ready(Ok(())) => down_done = true,
                    Poll::Ready(Err(Failed::Read(e)))
                        if e.kind() == io::ErrorKind::UnexpectedEof =>
                    {
                        return Poll::Ready(Some(End::Truncated));
                    }
                    Poll::Ready(Err(Failed::Read(e))) => {
                        return Poll::Ready(Some(End::PeerError(e)));
                    }
                    Poll::Ready(Err(Failed::Write(e))) => {
                        return Poll::Ready(Some(End::AppError(e)));
                    }
                    Poll::Pending => {}
                }
            }
            if up_done && down_done {
                return Poll::Ready(Some(End::Clean));
            }
            moved |= up.take_moved() | down.take_moved();
            let open = !up_done && !down_done;
            if open && up.at_rest() && down.at_rest() {
                if (switch.wanted)() && (switch.ready)(&mut *peer) {
                    return Poll::Ready(None);
                }
                if hold {
                    // Held pumps wait on nothing: poll them again, reading.
                    gave_up = true;
                    continue;
                }
            } else if hold && !open {
                // A direction finished while the other was held: no switch now, read again.
                continue;
            }
            // Whatever is not at rest waits on its socket; a held pump resumes with it.
            return idle.poll(cx, moved).map(|()| {
                let unsent = up.unsent() || down.unsent();
                Some(End::IdleTimeout { unsent })
            });
        }
    })
    .await;

    let carried = (up.carried(), down.carried());
    let outcome = end.map(|end| Outcome {
        app_to_peer: carried.0,
        peer_to_app: carried.1,
        end,
    });
    (outcome, carried)
}

/// Which side of a direction failed.
#[derive(Debug)]
pub enum Failed {
    Read(io::Error),
    Write(io::Error),
}

/// Moves one direction's bytes from a reader to a writer.
pub trait Pump<R: ?Sized, W: ?Sized> {
    /// Moves bytes until the reader has nothing to give (`Pending`), or until its EOF has been
    /// passed on as a write-side shutdown of the writer (`Ready(Ok)`).
    fn poll_pump(
        &mut self,
        cx: &mut Context<'_>,
        reader: Pin<&mut R>,
        writer: Pin<&mut W>,
    ) -> Poll<Result<(), Failed>>;
    /// Bytes carried so far.
    fn carried(&self) -> u64;
    /// Whether bytes moved since the last call, read or written (for the idle timer: a
    /// connection draining into a slow reader is not idle).
    fn take_moved(&mut self) -> bool;
    /// Whether bytes read are still waiting for the writer to take them.
    fn unsent(&self) -> bool;
    /// Whether nothing read is waiting to be written or flushed (see [`forward_until`]).
    fn at_rest(&self) -> bool {
        false
    }
    /// While set, read nothing more once what was read is written and flushed (a pump that
    /// cannot stop this way never reports [`Pump::at_rest`]).
    fn hold(&mut self, _hold: bool) {}
}

/// The user-space pump: read into a buffer, write it out.
pub struct Buffered<'a> {
    policy: BufferPolicy,
    /// Holds bytes read but not yet written; `None` while the reader has nothing to give.
    buf: Option<BytesMut>,
    /// How much of `buf` has been written.
    written: usize,
    carried: u64,
    counter: &'a Counter,
    read_done: bool,
    needs_flush: bool,
    moved: bool,
    /// See [`Pump::hold`].
    hold: bool,
}

impl<'a> Buffered<'a> {
    pub fn new(policy: BufferPolicy, counter: &'a Counter) -> Self {
        Self {
            policy,
            buf: None,
            written: 0,
            carried: 0,
            counter,
            read_done: false,
            needs_flush: false,
            moved: false,
            hold: false,
        }
    }

    /// Gives the buffer back and pushes out what was written, then waits (for the reader, or
    /// for whoever lifts the hold).
    fn rest<W: AsyncWrite + ?Sized>(
        &mut self,
        cx: &mut Context<'_>,
        writer: Pin<&mut W>,
    ) -> Poll<Result<(), Failed>> {
        self.buf = None;
        if self.needs_flush {
            ready!(writer.poll_flush(cx)).map_err(Failed::Write)?;
            self.needs_flush = false;
        }
        Poll::Pending
    }
}

impl<R, W> Pump<R, W> for Buffered<'_>
where
    R: AsyncRead + ?Sized,
    W: AsyncWrite + ?Sized,
{
    fn carried(&self) -> u64 {
        self.carried
    }

    fn take_moved(&mut self) -> bool {
        std::mem::take(&mut self.moved)
    }

    fn at_rest(&self) -> bool {
        self.buf.is_none() && !self.needs_flush && !self.read_done
    }

    fn unsent(&self) -> bool {
        self.needs_flush || self.buf.as_ref().is_some_and(|b| b.len() > self.written)
    }

    fn hold(&mut self, hold: bool) {
        self.hold = hold;
    }

    fn poll_pump(
        &mut self,
        cx: &mut Context<'_>,
        mut reader: Pin<&mut R>,
        mut writer: Pin<&mut W>,
    ) -> Poll<Result<(), Failed>> {
        loop {
            // Read only once everything read before has been written.
            let pending = self.buf.as_ref().map_or(0, |b| b.len() - self.written);
            if pending == 0 && !self.read_done {
                if self.hold {
                    return self.rest(cx, writer);
                }
                let size = self.policy.size_for(self.carried);
                let buf = self
                    .buf
                    .get_or_insert_with(|| BytesMut::with_capacity(size));
                buf.clear();
                if buf.capacity() < size {
                    buf.reserve(size);
                }
                self.written = 0;
                match tokio_util::io::poll_read_buf(reader.as_mut(), cx, buf) {
                    // Nothing to read now: give the buffer back and push out what we wrote.
                    Poll::Pending => return self.rest(cx, writer),
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(Failed::Read(e))),
                    Poll::Ready(Ok(0)) => {
                        self.read_done = true;
                        self.buf = None;
                    }
                    Poll::Ready(Ok(n)) => {
                        self.carried += n as u64;
                        self.counter.increment(n as u64);
                        self.moved = true;
                    }
                }
            }

            if let Some(buf) = &self.buf {
                while self.written < buf.len() {
                    let n = ready!(writer.as_mut().poll_write(cx, &buf[self.written..]))
                        .map_err(Failed::Write)?;
                    if n == 0 {
                        return Poll::Ready(Err(Failed::Write(io::ErrorKind::WriteZero.into())));
                    }
                    self.written += n;
                    self.needs_flush = true;
                    self.moved = true;
                }
            }

            if self.read_done {
                // EOF: flush, then half-close the other side's write direction.
                ready!(writer.as_mut().poll_flush(cx)).map_err(Failed::Write)?;
                ready!(writer.as_mut().poll_shutdown(cx)).map_err(Failed::Write)?;
                return Poll::Ready(Ok(()));
            }
        }
    }
}

/// Fires after `timeout` without traffic. The timer is re-armed lazily (only when it fires and
/// traffic happened meanwhile), so the data path never touches the timer wheel; the sockets'
/// kernel counters are read when the timer starts (two `getsockopt`s per forwarding phase) and
/// when it fires.
struct Idle {
    watch: IdleWatch,
    last_activity: Instant,
    /// The sockets' progress when the timer last fired.
    last_progress: Option<u64>,
    sleep: Pin<Box<Sleep>>,
}

impl Idle {
    fn new(watch: IdleWatch) -> Self {
        let now = Instant::now();
        Self {
            watch,
            last_activity: now,
            last_progress: watch.progress(),
            sleep: Box::pin(tokio::time::sleep_until(now + watch.timeout)),
        }
    }

    fn poll(&mut self, cx: &mut Context<'_>, moved: bool) -> Poll<()> {
        if moved {
            self.last_activity = Instant::now();
        }
        loop {
            ready!(self.sleep.as_mut().poll(cx));
            let progress = self.watch.progress();
            if progress != self.last_progress {
                // The kernel moved bytes we were not woken for: activity as of now.
                self.last_progress = progress;
                self.last_activity = Instant::now();
            }
            let deadline = self.last_activity + self.watch.timeout;
            if Instant::now() >= deadline {
                return Poll::Ready(());
            }
            self.sleep.as_mut().reset(deadline);
        }
    }
}

#[cfg(test)]
mod tests;
