use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use metrics::Counter;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream, ReadBuf, duplex};

use super::*;
use std::sync::atomic::{AtomicBool, Ordering};

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

async fn run(mut app: DuplexStream, mut peer: DuplexStream, idle: Duration) -> Outcome {
    let c = Counter::noop();
    let abort = CancellationToken::new();
    forward(
        &mut app,
        &mut peer,
        BufferPolicy::default(),
        IdleWatch::new(idle),
        &c,
        &c,
        &abort,
    )
    .await
}

#[tokio::test]
async fn carries_both_directions_at_once_and_half_closes_each_way() {
    // Small pipes so that back-pressure and partial writes happen.
    let (app_far, app_near) = duplex(8 * 1024);
    let (peer_near, mut peer_far) = duplex(8 * 1024);
    let up = pattern(3 * 1024 * 1024 + 17, 1);
    let down = pattern(2 * 1024 * 1024 + 5, 2);
    let proxy = tokio::spawn(run(app_near, peer_near, Duration::from_secs(60)));

    let (mut app_r, mut app_w) = tokio::io::split(app_far);
    let up_sent = up.clone();
    let app_writer = tokio::spawn(async move {
        app_w.write_all(&up_sent).await.unwrap();
        app_w.shutdown().await.unwrap(); // app FIN
    });
    let app_reader = tokio::spawn(async move {
        let mut got = Vec::new();
        app_r.read_to_end(&mut got).await.unwrap();
        got
    });
    let down_sent = down.clone();
    let peer = tokio::spawn(async move {
        // The app's FIN arrives while the peer still has most of its data to send.
        peer_far.write_all(&down_sent[..1024]).await.unwrap();
        let mut got = Vec::new();
        peer_far.read_to_end(&mut got).await.unwrap();
        peer_far.write_all(&down_sent[1024..]).await.unwrap();
        peer_far.shutdown().await.unwrap();
        got
    });

    app_writer.await.unwrap();
    assert_eq!(peer.await.unwrap(), up);
    assert_eq!(app_reader.await.unwrap(), down);
    let outcome = proxy.await.unwrap();
    assert!(matches!(outcome.end, End::Clean), "{:?}", outcome.end);
    assert_eq!(outcome.app_to_peer, up.len() as u64);
    assert_eq!(outcome.peer_to_app, down.len() as u64);
}

#[tokio::test]
async fn peer_eof_first_closes_the_app_side_and_keeps_the_other_direction() {
    let (mut app_far, app_near) = duplex(64 * 1024);
    let (peer_near, mut peer_far) = duplex(64 * 1024);
    let proxy = tokio::spawn(run(app_near, peer_near, Duration::from_secs(60)));

    peer_far.write_all(b"response").await.unwrap();
    peer_far.shutdown().await.unwrap(); // the peer's close_notify, as the TLS stream reports it
    let mut got = Vec::new();
    app_far.read_to_end(&mut got).await.unwrap();
    assert_eq!(got, b"response");
    // The app can still send after it saw EOF.
    app_far.write_all(b"late request").await.unwrap();
    app_far.shutdown().await.unwrap();
    let mut late = Vec::new();
    peer_far.read_to_end(&mut late).await.unwrap();
    assert_eq!(late, b"late request");
    assert!(matches!(proxy.await.unwrap().end, End::Clean));
}

/// A peer stream whose reads end the way tokio-rustls reports a FIN without close_notify.
struct TruncatingPeer {
    data: Vec<u8>,
}

impl tokio::io::AsyncRead for TruncatingPeer {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.data.is_empty() {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "peer closed connection without sending TLS close_notify",
            )));
        }
        let n = self.data.len().min(buf.remaining());
        buf.put_slice(&self.data[..n]);
        self.data.drain(..n);
        Poll::Ready(Ok(()))
    }
}

impl tokio::io::AsyncWrite for TruncatingPeer {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[tokio::test]
async fn a_peer_fin_without_close_notify_is_a_truncation() {
    let (mut app_far, mut app_near) = duplex(64 * 1024);
    let mut peer = TruncatingPeer {
        data: b"partial".to_vec(),
    };
    let c = Counter::noop();
    let outcome = forward(
        &mut app_near,
        &mut peer,
        BufferPolicy::default(),
        IdleWatch::new(Duration::from_secs(60)),
        &c,
        &c,
        &CancellationToken::new(),
    )
    .await;
    assert!(matches!(outcome.end, End::Truncated), "{:?}", outcome.end);
    assert_eq!(outcome.peer_to_app, 7);
    let mut got = [0u8; 7];
    app_far.read_exact(&mut got).await.unwrap();
    assert_eq!(&got, b"partial");
}

#[tokio::test(start_paused = true)]
async fn idles_out_only_after_a_quiet_period() {
    let (mut app_far, app_near) = duplex(1024);
    let (peer_near, mut peer_far) = duplex(1024);
    let proxy = tokio::spawn(run(app_near, peer_near, Duration::from_secs(10)));
    // Traffic every 6 s keeps it alive past the 10 s timeout...
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_secs(6)).await;
        app_far.write_all(b"x").await.unwrap();
        let mut b = [0u8; 1];
        peer_far.read_exact(&mut b).await.unwrap();
    }
    assert!(!proxy.is_finished());
    // ...then silence ends it.
    let started = tokio::time::Instant::now();
    let outcome = proxy.await.unwrap();
    assert!(
        matches!(outcome.end, End::IdleTimeout { unsent: false }),
        "{:?}",
        outcome.end
    );
    assert!(
        started.elapsed() >= Duration::from_secs(9),
        "{:?}",
        started.elapsed()
    );
}

/// A peer that reads slowly but steadily (4 KiB every 3 s, 36 s in all against a 10 s timeout)
/// keeps the connection alive: writes that make progress are activity, and every byte arrives.
#[tokio::test(start_paused = true)]
async fn a_slow_but_steady_reader_is_not_idle() {
    // The app's pipe takes everything at once: from then on only writes move (each 16 KiB the
    // proxy read takes the reader 12 s).
    let (mut app_far, app_near) = duplex(64 * 1024);
    let (peer_near, mut peer_far) = duplex(1024);
    let proxy = tokio::spawn(run(app_near, peer_near, Duration::from_secs(10)));
    let data = pattern(48 * 1024, 3);
    let sent = data.clone();
    let writer = tokio::spawn(async move {
        app_far.write_all(&sent).await.unwrap();
        app_far.shutdown().await.unwrap();
        app_far
    });
    let mut got = Vec::new();
    let mut chunk = vec![0u8; 4 * 1024];
    while got.len() < data.len() {
        tokio::time::sleep(Duration::from_secs(3)).await;
        let n = peer_far.read(&mut chunk).await.unwrap();
        assert!(n > 0, "closed after {} of {} bytes", got.len(), data.len());
        got.extend_from_slice(&chunk[..n]);
    }
    assert!(got == data, "the stream arrived altered");
    let _app_far = writer.await.unwrap();
    assert!(!proxy.is_finished(), "{:?}", proxy.await.unwrap().end);
}

/// A peer that stops reading with bytes still on their way: the idle timeout must not end the
/// connection as complete (the caller resets instead of a clean close).
#[tokio::test(start_paused = true)]
async fn an_idle_timeout_with_bytes_not_taken_says_so() {
    let (mut app_far, app_near) = duplex(1024);
    let (peer_near, _peer_far) = duplex(1024);
    let proxy = tokio::spawn(run(app_near, peer_near, Duration::from_secs(10)));
    let data = pattern(64 * 1024, 4);
    // The peer never reads: the proxy holds what the pipes cannot.
    let writer = tokio::spawn(async move { app_far.write_all(&data).await });
    let outcome = proxy.await.unwrap();
    assert!(
        matches!(outcome.end, End::IdleTimeout { unsent: true }),
        "{:?}",
        outcome.end
    );
    writer.abort();
}

#[tokio::test]
async fn abort_stops_a_busy_connection_at_once() {
    let (mut app_far, mut app_near) = duplex(1024);
    let (mut peer_near, _peer_far) = duplex(1024);
    let abort = CancellationToken::new();
    let c = Counter::noop();
    let cut = abort.clone();
    let forwarding = async {
        forward(
            &mut app_near,
            &mut peer_near,
            BufferPolicy::default(),
            IdleWatch::new(Duration::from_secs(60)),
            &c,
            &c,
            &abort,
        )
        .await
    };
    let app = async {
        app_far.write_all(b"in flight").await.unwrap();
        cut.cancel();
    };
    let (outcome, ()) = tokio::join!(forwarding, app);
    assert!(matches!(outcome.end, End::Aborted), "{:?}", outcome.end);
    assert_eq!(outcome.end.label(), "aborted");
}

#[test]
fn buffers_grow_with_traffic() {
    let p = BufferPolicy::default();
    assert_eq!(p.size_for(0), 16 * 1024);
    assert_eq!(p.size_for(128 * 1024 - 1), 16 * 1024);
    assert_eq!(p.size_for(128 * 1024), LARGE_BUFFER);
}

/// What a scripted reader gives on each read: bytes (up to what the buffer offers), or nothing
/// for now (`Pending`).
enum Step {
    Data(usize),
    Fill,
    Pending,
}

/// A reader that follows a script and records how much room each read was offered.
struct Scripted {
    script: std::collections::VecDeque<Step>,
    offered: Vec<usize>,
}

impl tokio::io::AsyncRead for Scripted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let room = buf.remaining();
        self.offered.push(room);
        match self.script.pop_front() {
            Some(Step::Data(n)) => buf.put_slice(&vec![7; n.min(room)]),
            Some(Step::Fill) => buf.put_slice(&vec![7; room]),
            Some(Step::Pending) | None => return Poll::Pending,
        }
        Poll::Ready(Ok(()))
    }
}

/// A writer that takes everything and logs writes and flushes in order.
#[derive(Default)]
struct Logged {
    events: Vec<String>,
}

impl tokio::io::AsyncWrite for Logged {
    fn poll_write(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.events.push(format!("write {}", buf.len()));
        Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.events.push("flush".to_owned());
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.events.push("shutdown".to_owned());
        Poll::Ready(Ok(()))
    }
}

fn pump_once(reader: &mut Scripted, writer: &mut Logged, pump: &mut Buffered<'_>) -> bool {
    let mut cx = Context::from_waker(std::task::Waker::noop());
    pump.poll_pump(&mut cx, Pin::new(reader), Pin::new(writer))
        .is_pending()
}

#[test]
fn flushes_only_when_the_next_read_would_block() {
    let c = Counter::noop();
    let mut pump = Buffered::new(BufferPolicy::default(), &c);
    let mut reader = Scripted {
        script: [
            Step::Data(100),
            Step::Data(200),
            Step::Data(300),
            Step::Pending,
        ]
        .into(),
        offered: Vec::new(),
    };
    let mut writer = Logged::default();
    assert!(pump_once(&mut reader, &mut writer, &mut pump));
    assert_eq!(
        writer.events,
        ["write 100", "write 200", "write 300", "flush"],
        "three reads ready at once leave in one flush"
    );
    // Nothing new to read and nothing written since: no second flush.
    reader.script = [Step::Pending].into();
    assert!(pump_once(&mut reader, &mut writer, &mut pump));
    assert_eq!(writer.events.len(), 4, "{:?}", writer.events);
    assert_eq!(pump.carried, 600);
}

#[test]
fn the_pump_reads_with_larger_buffers_once_a_direction_carried_128_kib() {
    let c = Counter::noop();
    let mut pump = Buffered::new(BufferPolicy::default(), &c);
    let mut reader = Scripted {
        script: std::iter::repeat_with(|| Step::Fill)
            .take(12)
            .chain([Step::Pending])
            .collect(),
        offered: Vec::new(),
    };
    let mut writer = Logged::default();
    assert!(pump_once(&mut reader, &mut writer, &mut pump));
    // 8 reads of 16 KiB make 128 KiB; from then on the large buffer at a time.
    assert!(
        reader.offered[..8].iter().all(|&n| n == 16 * 1024),
        "{:?}",
        reader.offered
    );
    assert!(
        reader.offered[8..]
            .iter()
            .all(|&n| (LARGE_BUFFER..2 * LARGE_BUFFER).contains(&n)),
        "{:?}",
        reader.offered
    );
    assert_eq!(pump.carried, 8 * 16 * 1024 + 4 * reader.offered[8] as u64);
    // The buffer is released while the reader has nothing to give: idle connections hold none.
    assert!(pump.buf.is_none());
}

/// An app that always has more to send (a byte counter, so order and loss show) and swallows
/// whatever it is sent: its reads never return `Pending`.
#[derive(Default)]
struct Endless {
    sent: u64,
}

impl tokio::io::AsyncRead for Endless {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let n = buf.remaining().min(4096);
        let start = self.sent;
        let bytes: Vec<u8> = (start..start + n as u64).map(|i| i as u8).collect();
        buf.put_slice(&bytes);
        self.sent += n as u64;
        Poll::Ready(Ok(()))
    }
}

impl tokio::io::AsyncWrite for Endless {
    fn poll_write(self: Pin<&mut Self>, _: &mut Context<'_>, b: &[u8]) -> Poll<io::Result<usize>> {
        Poll::Ready(Ok(b.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// Reads what the peer side receives, checking it is the counter in order; once `after` bytes
/// are in, raises `wanted`. Returns the byte count at EOF, or once `cut` (a count and the token
/// to cancel then) is reached.
async fn receive_counter(
    mut far: DuplexStream,
    wanted: &AtomicBool,
    after: u64,
    cut: Option<(u64, &CancellationToken)>,
) -> u64 {
    let mut got = 0u64;
    let mut buf = vec![0; 64 * 1024];
    loop {
        let n = far.read(&mut buf).await.unwrap();
        if n == 0 {
            return got;
        }
        for (i, b) in buf[..n].iter().enumerate() {
            let at = got + i as u64;
            assert_eq!(*b, at as u8, "byte {at} out of order");
        }
        got += n as u64;
        if got >= after {
            wanted.store(true, Ordering::Relaxed);
        }
        if let Some((limit, abort)) = cut
            && got >= limit
        {
            abort.cancel();
            return got;
        }
    }
}

/// Forwards between `app` and `peer` with `switch`; `peer` is dropped at the end, so the far
/// side sees the end of what was forwarded.
async fn forward_switching<W: Fn() -> bool, R: FnMut(&mut DuplexStream) -> bool>(
    app: &mut Endless,
    mut peer: DuplexStream,
    switch: Switch<W, R>,
    abort: &CancellationToken,
) -> (Option<Outcome>, (u64, u64)) {
    let c = Counter::noop();
    let up = Buffered::new(BufferPolicy::default(), &c);
    let down = Buffered::new(BufferPolicy::default(), &c);
    let idle = IdleWatch::new(Duration::from_secs(60));
    forward_until(app, &mut peer, up, down, idle, abort, switch).await
}

#[tokio::test]
async fn a_busy_connection_switches_at_the_next_boundary_and_leaves_nothing_behind() {
    let mut app = Endless::default();
    let (peer, far) = duplex(64 * 1024);
    let wanted = AtomicBool::new(false);
    let abort = CancellationToken::new();
    let switch = Switch {
        wanted: || wanted.load(Ordering::Relaxed),
        ready: |_: &mut DuplexStream| true,
    };
    let forwarding = forward_switching(&mut app, peer, switch, &abort);
    let received = receive_counter(far, &wanted, 1 << 20, None);
    let ((outcome, carried), got) = within("a busy connection coming to a boundary", async {
        tokio::join!(forwarding, received)
    })
    .await;
    assert!(outcome.is_none(), "{outcome:?}");
    assert!(
        carried.0 >= 1 << 20,
        "switched before it was wanted: {carried:?}"
    );
    // Everything read from the app was written to the peer, and nothing more was read.
    assert_eq!(got, carried.0);
    assert_eq!(
        app.sent, carried.0,
        "bytes read from the app but not forwarded"
    );
}

#[tokio::test]
async fn a_peer_not_ready_to_switch_keeps_forwarding() {
    let mut app = Endless::default();
    let (peer, far) = duplex(64 * 1024);
    let wanted = AtomicBool::new(false);
    let abort = CancellationToken::new();
    let asked = std::cell::Cell::new(0);
    let switch = Switch {
        wanted: || wanted.load(Ordering::Relaxed),
        ready: |_: &mut DuplexStream| {
            asked.set(asked.get() + 1);
            false
        },
    };
    let forwarding = forward_switching(&mut app, peer, switch, &abort);
    // Wanted after 1 MiB; still flowing 4 MiB later, then cut.
    let received = receive_counter(far, &wanted, 1 << 20, Some((5 << 20, &abort)));
    let ((outcome, carried), got) = within("held directions when the peer was not ready", async {
        tokio::join!(forwarding, received)
    })
    .await;
    let outcome = outcome.expect("never ready, so never switched");
    assert!(matches!(outcome.end, End::Aborted), "{:?}", outcome.end);
    assert!(got >= 5 << 20 && carried.0 >= got, "{carried:?} {got}");
    assert!(asked.get() >= 1, "the peer was never asked");
}

/// A stuck test fails instead of hanging.
async fn within<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(30), f)
        .await
        .unwrap_or_else(|_| panic!("{what}: nothing after 30 s"))
}
