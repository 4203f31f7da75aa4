//! Shared steps of a proxied connection: connect with a deadline, record the peer's identity,
//! and close both sockets the way forwarding ended.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::CertificateDer;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_util::sync::CancellationToken;

use crate::forward::{self, Buffered, End, IdleWatch, Outcome, Settings, Switch};
use crate::identity;
use crate::ktls::keys::SecretLog;
use crate::ktls::setup::TlsSession;
use crate::ktls::splice::AppToKernel;
use crate::ktls::stream::ControlError;
use crate::ktls::{self, Handoff, Handover, KtlsStream, RecordAligned};
use crate::metrics::ListenerMetrics;
use crate::post_handshake;
use crate::records::{self, RecordStream};
use crate::resolve::Resolver;

/// Why a TCP connect (to the app, or to the peer) failed: the `reason` label of
/// `gembok_upstream_connect_failures_total`.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("connect timed out after {0:?}")]
    Timeout(Duration),
    #[error("cannot resolve {0}: {1}")]
    Resolve(String, io::Error),
    #[error("{0} resolved to no address")]
    NoAddress(String),
    #[error("connect to {addr}: {source}")]
    Io { addr: SocketAddr, source: io::Error },
}

impl ConnectError {
    pub fn reason(&self) -> &'static str {
        match self {
            ConnectError::Timeout(_) => "timeout",
            ConnectError::Resolve(..) | ConnectError::NoAddress(_) => "resolve",
            ConnectError::Io { source, .. } => io_failure_reason(source),
        }
    }
}

/// The `reason` label of a failed exchange with the upstream: refused, reset or other.
pub fn io_failure_reason(e: &io::Error) -> &'static str {
    match e.kind() {
        io::ErrorKind::ConnectionRefused => "refused",
        io::ErrorKind::ConnectionReset => "reset",
        _ => "other",
    }
}

/// What the caller does once a connection is up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Opening {
    /// It writes at once: a TLS client's ClientHello. The ACK that completes TCP's handshake
    /// then rides on that first write instead of going alone (Linux delays it while the
    /// socket is in "ping-pong" mode, which `TCP_QUICKACK` = 0 sets), and the listener's side
    /// wakes once, with the connection and its first data, instead of twice.
    WeWriteFirst,
    /// It may wait for the other side to speak first (an app behind the inbound): the ACK
    /// goes at once, as by default, or a server-first app would not see its connection until
    /// the kernel's delayed-ACK timer (200 ms) fires.
    EitherSide,
}

/// Finds the addresses (see [`Resolver`]) and connects to the first that accepts, all within
/// `timeout`. TCP_NODELAY is set: records are flushed explicitly.
///
/// With several addresses the attempts overlap as in Happy Eyeballs (RFC 8305): address
/// families alternate, starting with the resolver's first choice, and the next address is tried
/// when the previous attempt failed or has not connected within 250 ms, earlier attempts
/// running on; the first to connect wins and the others are dropped. An address that silently
/// drops SYNs (a dead endpoint behind a headless Service, broken IPv6) so costs 250 ms, not the
/// whole timeout. When every attempt failed, the error is the last one.
pub async fn connect(
    to: &Resolver,
    opening: Opening,
    timeout: Duration,
) -> Result<TcpStream, ConnectError> {
    use std::task::Poll;

    /// RFC 8305's Connection Attempt Delay (its recommended value).
    const ATTEMPT_DELAY: Duration = Duration::from_millis(250);

    /// The order of the attempts: families alternate (RFC 8305 section 4), so a family whose
    /// addresses all drop SYNs delays the other by one `ATTEMPT_DELAY`, not one per address.
    fn interleave(addrs: &[SocketAddr]) -> Vec<SocketAddr> {
        let v6_first = addrs.first().is_some_and(SocketAddr::is_ipv6);
        let mut first = addrs.iter().filter(|a| a.is_ipv6() == v6_first);
        let mut other = addrs.iter().filter(|a| a.is_ipv6() != v6_first);
        let mut order = Vec::with_capacity(addrs.len());
        loop {
            match (first.next(), other.next()) {
                (None, None) => return order,
                (a, b) => order.extend(a.into_iter().chain(b)),
            }
        }
    }

    let attempt = async {
        // With `--dns-cache 0` and an older answer to fall back on, a connection waits for a
        // fresh one for at most half its time.
        let addrs = to.addrs(timeout / 2).await?;
        if let [addr] = *addrs {
            return connect_one(addr, opening)
                .await
                .map_err(|source| ConnectError::Io { addr, source });
        }
        let mut next = interleave(&addrs).into_iter();
        let mut attempts = Vec::with_capacity(addrs.len());
        let mut last = None;
        let mut stagger = std::pin::pin!(tokio::time::sleep(ATTEMPT_DELAY));
        // The next address starts at once after a failure (and the first one at once).
        let mut start_next = true;
        std::future::poll_fn(|cx| {
            loop {
                let delay_over = stagger.as_mut().poll(cx).is_ready();
                if delay_over || start_next || attempts.is_empty() {
                    start_next = false;
                    match next.next() {
                        Some(addr) => {
                            attempts.push((addr, Box::pin(connect_one(addr, opening))));
                            let at = tokio::time::Instant::now() + ATTEMPT_DELAY;
                            stagger.as_mut().reset(at);
                            // Polls the new delay, then the new attempt with the others.
                            continue;
                        }
                        None if attempts.is_empty() => {
                            return Poll::Ready(Err(last.take().unwrap_or_else(|| {
                                ConnectError::NoAddress(to.host().to_owned())
                            })));
                        }
                        None => {}
                    }
                }
                let mut i = 0;
                while i < attempts.len() {
                    let (addr, attempt) = &mut attempts[i];
                    match attempt.as_mut().poll(cx) {
                        Poll::Ready(Ok(stream)) => return Poll::Ready(Ok(stream)),
                        Poll::Ready(Err(source)) => {
                            last = Some(ConnectError::Io {
                                addr: *addr,
                                source,
                            });
                            drop(attempts.swap_remove(i));
                            start_next = true;
                        }
                        Poll::Pending => i += 1,
                    }
                }
                if !(start_next || attempts.is_empty()) {
                    return Poll::Pending;
                }
            }
        })
        .await
    };
    tokio::time::timeout(timeout, attempt)
        .await
        .unwrap_or(Err(ConnectError::Timeout(timeout)))
}

async fn connect_one(addr: SocketAddr, opening: Opening) -> io::Result<TcpStream> {
    let socket = match addr {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    // Both options only save packets: a kernel (or sandbox) that refuses one still connects.
    let _ = socket.set_nodelay(true);
    if opening == Opening::WeWriteFirst {
        // Only the handshake's last ACK is affected: the kernel leaves ping-pong mode when it
        // takes the SYN-ACK, and from then on decides as for any socket.
        let _ = socket2::SockRef::from(&socket).set_tcp_quickack(false);
    }
    socket.connect(addr).await
}

/// How many encrypted bytes rustls may queue for one connection before a write waits: as much
/// as one forwarding buffer holds, so a full read leaves in one `writev` (rustls' default of
/// 64 KiB made a 256 KiB read four).
pub const TLS_SEND_QUEUE: usize = crate::forward::LARGE_BUFFER + 1024;

/// Records a completed handshake: its duration, what was negotiated, and who the peer is.
pub fn handshake_done(metrics: &ListenerMetrics, tls: &rustls::CommonState, took: Duration) {
    metrics.handshake.record(took);
    let name = |s: Option<&'static str>| s.unwrap_or("unknown");
    metrics.handshake_ok(
        name(tls.protocol_version().and_then(|v| v.as_str())),
        name(
            tls.negotiated_cipher_suite()
                .and_then(|s| s.suite().as_str()),
        ),
        name(
            tls.negotiated_key_exchange_group()
                .and_then(|g| g.name().as_str()),
        ),
        match tls.handshake_kind() {
            Some(rustls::HandshakeKind::Resumed) => "resumed",
            Some(_) => "full",
            None => "unknown",
        },
    );
    record_peer(tls.peer_certificates());
}

/// Records the peer's identity on the connection span (parsing the certificate only when the
/// span is being recorded).
fn record_peer(certs: Option<&[CertificateDer<'_>]>) {
    let span = tracing::Span::current();
    if span.is_disabled() {
        return;
    }
    if let Some(leaf) = certs.and_then(|c| c.first())
        && let Ok(info) = gembok_certwatch::LeafInfo::from_der(leaf)
        && let Some(id) = identity::peer_id(&info)
    {
        span.record("peer.id", id);
    }
}

/// The peer side of a connection: a TLS stream over a TCP socket we can reset.
pub trait PeerStream: AsyncRead + AsyncWrite + Unpin + Send {
    fn tcp(&self) -> &TcpStream;
}

impl PeerStream for tokio_rustls::server::TlsStream<RecordAligned<TcpStream>> {
    fn tcp(&self) -> &TcpStream {
        self.get_ref().0.tcp()
    }
}

impl PeerStream for tokio_rustls::client::TlsStream<RecordAligned<TcpStream>> {
    fn tcp(&self) -> &TcpStream {
        self.get_ref().0.tcp()
    }
}

impl<T: PeerStream + ?Sized> PeerStream for Box<T> {
    fn tcp(&self) -> &TcpStream {
        (**self).tcp()
    }
}

impl PeerStream for RecordStream {
    fn tcp(&self) -> &TcpStream {
        RecordStream::tcp(self)
    }
}

impl PeerStream for KtlsStream {
    fn tcp(&self) -> &TcpStream {
        KtlsStream::tcp(self)
    }
}

/// Who may take a connection's records over from rustls after the handshake, first to last.
pub struct Takers<'a> {
    /// The kernel (kTLS enabled and available).
    pub ktls: Option<Handoff<'a>>,
    /// Gembok's user-space record layer (`--record-layer gembok`).
    pub records: Option<&'a records::Layer>,
    /// The connection's captured traffic secrets, for its record layer's key updates.
    pub secrets: Option<Arc<SecretLog>>,
    /// Client side: the session store's watch. Such a connection starts with rustls and
    /// switches once the server's ticket is stored (see `records::tickets`).
    pub tickets: Option<Arc<records::tickets::Watch>>,
}

/// Steps 4 and 5 of both directions: choose the data path (the kernel when it can take the
/// connection, else gembok's record layer, else rustls), forward until both sides are done, and
/// close the way forwarding ended. Returns the `end` label of `gembok_connections_closed_total`.
/// `carried`: bytes already forwarded each way (app → peer, peer → app), for the log.
pub async fn carry<S>(
    mut app: TcpStream,
    peer: S,
    settings: Settings,
    metrics: &ListenerMetrics,
    takers: Takers<'_>,
    abort: &CancellationToken,
    mut carried: (u64, u64),
) -> &'static str
where
    S: TlsSession + PeerStream,
{
    let mut peer = match takers.ktls {
        None => peer,
        Some(handoff) => match ktls::handover(peer, &handoff, metrics.key_updates.clone()).await {
            Handover::Taken(peer) => {
                return carry_in_kernel(app, peer, settings, metrics, abort).await;
            }
            Handover::Kept(peer, reason) => {
                metrics.ktls_fallback(reason);
                tracing::debug!(reason, "kTLS not used for this connection");
                peer
            }
            Handover::Failed(e, reason) => {
                metrics.ktls_fallback(reason);
                tracing::warn!(reason, error = %e, "kTLS hand-over failed after the handshake; closing");
                reset(&app);
                return "ktls_failed";
            }
        },
    };
    peer.set_send_queue(TLS_SEND_QUEUE);
    // Reads were bounded by records (aligned, if the ULP attached) from the start.
    if let Some(layer) = takers.records {
        if let Some(tickets) = &takers.tickets {
            let until = until_ticket(&mut app, &mut peer, tickets, settings, metrics, abort);
            match until.await {
                Ok(so_far) => carried = (carried.0 + so_far.0, carried.1 + so_far.1),
                Err(outcome) => {
                    metrics.data_path("userspace");
                    return finish_logged(outcome, carried, &mut app, &mut peer, metrics).await;
                }
            }
        }
        let secrets = takers.secrets.as_deref();
        peer = match records::handover(peer, layer, secrets, metrics.record_key_updates.clone())
            .await
        {
            Handover::Taken(peer) => {
                return carry_records(app, peer, settings, metrics, abort, carried).await;
            }
            Handover::Kept(peer, reason) => {
                tracing::debug!(reason, "gembok's record layer not used for this connection");
                peer
            }
            Handover::Failed(e, reason) => {
                tracing::warn!(reason, error = %e, "record layer hand-over failed after the handshake; closing");
                reset(&app);
                return "records_failed";
            }
        };
    }
    peer.release();
    metrics.data_path("userspace");
    let idle = IdleWatch::with_sockets(settings.idle_timeout, &app, PeerStream::tcp(&peer));
    let outcome = forward::forward(
        &mut app,
        &mut peer,
        settings.buffers,
        idle,
        &metrics.app_to_peer,
        &metrics.peer_to_app,
        abort,
    )
    .await;
    finish_logged(outcome, carried, &mut app, &mut peer, metrics).await
}

/// Client side of gembok's record layer: forwards with rustls until the server's session ticket
/// is stored, then stops both directions at their next boundary (see `records::tickets`).
/// `Ok(bytes carried so far)` when the connection may switch now; `Err(how it ended)` when it
/// ended first.
async fn until_ticket<S: TlsSession + PeerStream>(
    app: &mut TcpStream,
    peer: &mut S,
    tickets: &records::tickets::Watch,
    settings: Settings,
    metrics: &ListenerMetrics,
    abort: &CancellationToken,
) -> Result<(u64, u64), Outcome> {
    let up = Buffered::new(settings.buffers, &metrics.app_to_peer);
    let down = Buffered::new(settings.buffers, &metrics.peer_to_app);
    let switch = Switch {
        wanted: || tickets.ticket_stored(),
        ready: |peer: &mut S| peer.at_boundary() && !peer.common().wants_write(),
    };
    let idle = IdleWatch::with_sockets(settings.idle_timeout, &*app, PeerStream::tcp(&*peer));
    match forward::forward_until(app, peer, up, down, idle, abort, switch).await {
        (None, carried) => Ok(carried),
        (Some(outcome), _) => Err(outcome),
    }
}

/// The kernel data path: app → peer spliced (copied where no pipe can be had), peer → app one
/// copy; the kernel protects the records both ways.
async fn carry_in_kernel(
    mut app: TcpStream,
    mut peer: KtlsStream,
    settings: Settings,
    metrics: &ListenerMetrics,
    abort: &CancellationToken,
) -> &'static str {
    metrics.data_path("ktls");
    let up = AppToKernel::new(&metrics.app_to_peer, settings.buffers);
    let down = Buffered::new(settings.buffers, &metrics.peer_to_app);
    let idle = IdleWatch::with_sockets(settings.idle_timeout, &app, peer.tcp());
    let outcome = forward::forward_with(&mut app, &mut peer, up, down, idle, abort).await;
    // A control record or the record limit ended it. Where our sending key is still good, say
    // so with an alert (the peer's sidecar then resets its app) rather than leave a truncation,
    // or a close_notify that would pass for a clean end.
    if let End::PeerError(e) = &outcome.end
        && let Some(control) = e.get_ref().and_then(|i| i.downcast_ref::<ControlError>())
    {
        metrics.ktls_closed(control.reason());
        if let Some(alert) = control.alert() {
            let _ = tokio::time::timeout(Duration::from_secs(1), peer.abort(alert)).await;
        }
    }
    // (Nothing is forwarded before the kernel takes the records.)
    finish_logged(outcome, (0, 0), &mut app, &mut peer, metrics).await
}

/// Gembok's record layer: app → peer read into record slots and sealed there, peer → app opened
/// in place and written from there.
async fn carry_records(
    mut app: TcpStream,
    mut peer: Box<RecordStream>,
    settings: Settings,
    metrics: &ListenerMetrics,
    abort: &CancellationToken,
    carried: (u64, u64),
) -> &'static str {
    metrics.data_path("records");
    let up = records::AppToRecords::new(settings.buffers, &metrics.app_to_peer);
    let down = records::RecordsToApp::new(&metrics.peer_to_app);
    let idle = IdleWatch::with_sockets(settings.idle_timeout, &app, peer.tcp());
    let outcome = forward::forward_with(&mut app, &mut peer, up, down, idle, abort).await;
    // A bad record or our key budget ended it: tell the peer with a fatal alert (its sidecar then
    // resets its app) rather than leave a truncation. Not after the peer's own alert.
    if let End::PeerError(e) = &outcome.end
        && let Some(control) = e
            .get_ref()
            .and_then(|i| i.downcast_ref::<records::stream::ControlError>())
    {
        metrics.records_closed(control.reason());
        if let Some(alert) = control.alert() {
            let _ = tokio::time::timeout(Duration::from_secs(1), peer.abort(alert)).await;
        }
    }
    finish_logged(outcome, carried, &mut app, &mut peer, metrics).await
}

/// Logs how the connection ended (with `carried`, the bytes forwarded each way before this
/// data path took over) and closes it accordingly.
async fn finish_logged<P: PeerStream>(
    outcome: Outcome,
    carried: (u64, u64),
    app: &mut TcpStream,
    peer: &mut P,
    metrics: &ListenerMetrics,
) -> &'static str {
    tracing::debug!(
        app_to_peer = carried.0 + outcome.app_to_peer,
        peer_to_app = carried.1 + outcome.peer_to_app,
        end = outcome.end.label(),
        "connection finished"
    );
    // A server refuses a TLS 1.3 client's certificate after the client's handshake is done: the
    // refusal is the first thing it sends. Counted as the failed handshake it is (the handshake
    // was counted too, from the client's side), or certificates every peer refuses would show
    // only as resets.
    if let End::PeerError(e) = &outcome.end
        && metrics.is_outbound()
        && carried.1 + outcome.peer_to_app == 0
        && let Some(alert) = received_alert(e)
        && post_handshake::CERTIFICATE_REFUSALS.contains(&alert)
    {
        metrics.handshake_failed("peer_rejected");
        tracing::warn!(
            alert,
            error = %e,
            "the peer refused our certificate (TLS 1.3 says so after our handshake completes)"
        );
    }
    finish(&outcome.end, app, peer, metrics).await;
    outcome.end.label()
}

/// The description of the fatal alert from the peer that ended a connection, whichever layer
/// read it (rustls, the kernel, gembok's record layer).
fn received_alert(e: &io::Error) -> Option<u8> {
    let inner = e.get_ref()?;
    if let Some(rustls::Error::AlertReceived(description)) = inner.downcast_ref::<rustls::Error>() {
        return Some(u8::from(*description));
    }
    if let Some(ControlError::Alert { description, .. }) = inner.downcast_ref::<ControlError>() {
        return Some(*description);
    }
    match inner.downcast_ref::<records::stream::ControlError>() {
        Some(records::stream::ControlError::Alert { description, .. }) => Some(*description),
        _ => None,
    }
}

/// Sends a TCP reset instead of a FIN when the socket is dropped.
pub fn reset(stream: &TcpStream) {
    let _ = stream.set_zero_linger();
}

/// Ends a forwarded connection. A clean end already half-closed both sides. Anything else must
/// not look clean to the other side: a truncated or failed peer resets the app, a failed app
/// resets the peer (no close_notify, so the remote sidecar sees a truncation and resets its app),
/// and a connection cut by the end of the drain resets both. An idle timeout closes both sides
/// gracefully, unless bytes read from one side were still waiting for the other (a reader that
/// stopped): then both are reset, since a clean close would pass the stream off as complete.
pub async fn finish<P: PeerStream>(
    end: &End,
    app: &mut TcpStream,
    peer: &mut P,
    metrics: &ListenerMetrics,
) {
    match end {
        End::Clean => {}
        End::Truncated => {
            metrics.truncated();
            tracing::info!("peer closed without close_notify; resetting the app connection");
            reset(app);
        }
        End::PeerError(e) => {
            tracing::info!(error = %e, "peer connection failed; resetting the app connection");
            reset(app);
        }
        End::AppError(e) => {
            tracing::info!(error = %e, "app connection failed; resetting the peer connection");
            reset(peer.tcp());
        }
        End::Aborted => {
            tracing::info!("the drain is over; resetting both sides");
            reset(app);
            reset(peer.tcp());
        }
        End::IdleTimeout { unsent: true } => {
            // A clean close would pass a truncated stream off as complete.
            tracing::info!(
                "idle timeout with bytes the other side never took; resetting both sides"
            );
            reset(app);
            reset(peer.tcp());
        }
        End::IdleTimeout { unsent: false } => {
            tracing::info!("idle timeout; closing both sides");
            let close = async {
                let _ = peer.shutdown().await;
                let _ = app.shutdown().await;
            };
            let _ = tokio::time::timeout(Duration::from_secs(1), close).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The peer's alert is found whichever layer read it: rustls (before a connection leaves
    /// it), the kernel (kTLS) or gembok's record layer.
    #[test]
    fn a_received_alert_is_read_from_every_layer() {
        let wrap = |e: Box<dyn std::error::Error + Send + Sync>| {
            io::Error::new(io::ErrorKind::InvalidData, e)
        };
        let rustls_alert =
            rustls::Error::AlertReceived(rustls::AlertDescription::CertificateRequired);
        assert_eq!(received_alert(&wrap(Box::new(rustls_alert))), Some(116));
        let kernel = ControlError::Alert {
            level: 2,
            description: 48,
        };
        assert_eq!(received_alert(&wrap(Box::new(kernel))), Some(48));
        let records = records::stream::ControlError::Alert {
            level: 2,
            description: 42,
        };
        assert_eq!(received_alert(&wrap(Box::new(records))), Some(42));
        assert_eq!(
            received_alert(&wrap(Box::new(rustls::Error::DecryptError))),
            None
        );
        assert_eq!(received_alert(&io::ErrorKind::ConnectionReset.into()), None);
        for alert in [116, 48, 42] {
            assert!(post_handshake::CERTIFICATE_REFUSALS.contains(&alert));
        }
    }

    /// Every reason a failed connect can give is one of the series registered at zero (and
    /// named in the metric's help text).
    #[test]
    fn every_connect_failure_reason_is_a_registered_label() {
        let addr: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let io = |kind: io::ErrorKind| ConnectError::Io {
            addr,
            source: kind.into(),
        };
        let errors = [
            ConnectError::Timeout(Duration::from_secs(1)),
            ConnectError::Resolve("app".into(), io::ErrorKind::NotFound.into()),
            ConnectError::NoAddress("app".into()),
            io(io::ErrorKind::ConnectionRefused),
            io(io::ErrorKind::ConnectionReset),
            io(io::ErrorKind::PermissionDenied),
        ];
        let reasons: Vec<_> = errors.iter().map(ConnectError::reason).collect();
        assert_eq!(
            reasons,
            ["timeout", "resolve", "resolve", "refused", "reset", "other"]
        );
        for reason in reasons {
            assert!(
                crate::metrics::UPSTREAM_FAILURE_REASONS.contains(&reason),
                "{reason}"
            );
        }
    }

    /// A connection whose caller writes first sends no ACK of its own to complete TCP's
    /// handshake (SYN, then the first data carrying the ACK); one whose caller may wait sends
    /// it at once (SYN, ACK, data), and is accepted before anything is written.
    #[tokio::test]
    async fn the_last_ack_of_tcps_handshake_rides_on_our_first_write() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let to = Resolver::fixed(listener.local_addr().unwrap());
        // Segments sent by the time the first write returns, and whether the listener had the
        // connection before it. The kernel holds the ACK for at most 200 ms: an attempt that a
        // loaded host stalls for longer between connect and write is not counted.
        async fn segments(
            listener: &tokio::net::TcpListener,
            to: &Resolver,
            opening: Opening,
        ) -> (u32, bool) {
            loop {
                let began = std::time::Instant::now();
                let mut tcp = connect(to, opening, Duration::from_secs(5)).await.unwrap();
                assert!(tcp.nodelay().unwrap());
                // Kept open until the count is read: closing it would send a FIN, and our
                // ACK of it would be counted too.
                let early = std::future::poll_fn(|cx| {
                    std::task::Poll::Ready(match listener.poll_accept(cx) {
                        std::task::Poll::Ready(accepted) => Some(accepted.unwrap()),
                        std::task::Poll::Pending => None,
                    })
                })
                .await;
                tcp.write_all(b"hello").await.unwrap();
                let sent = crate::test_tcp::info(&tcp).tcpi_segs_out;
                let accepted_early = early.is_some();
                if !accepted_early {
                    listener.accept().await.unwrap();
                }
                drop(early);
                if began.elapsed() < Duration::from_millis(150) {
                    return (sent, accepted_early);
                }
            }
        }
        let segments = |opening| segments(&listener, &to, opening);
        assert_eq!(segments(Opening::WeWriteFirst).await, (2, false));
        assert_eq!(segments(Opening::EitherSide).await, (3, true));
    }

    /// A listener whose accept queue is full: the kernel drops further SYNs without a word (the
    /// client retransmits them), as from a dead endpoint. Keep the listener and the connection
    /// that fills its queue for as long as the hole is needed.
    async fn black_hole(ip: std::net::IpAddr) -> (tokio::net::TcpListener, TcpStream, SocketAddr) {
        let socket = match ip {
            std::net::IpAddr::V4(_) => TcpSocket::new_v4(),
            std::net::IpAddr::V6(_) => TcpSocket::new_v6(),
        }
        .unwrap();
        socket.bind(SocketAddr::new(ip, 0)).unwrap();
        let listener = socket.listen(0).unwrap();
        let addr = listener.local_addr().unwrap();
        let filler = TcpStream::connect(addr).await.unwrap();
        let another = tokio::time::timeout(Duration::from_millis(100), TcpStream::connect(addr));
        assert!(another.await.is_err(), "{addr} drops SYNs");
        (listener, filler, addr)
    }

    /// A headless Service with a dead endpoint first: its SYNs vanish, and the next address is
    /// tried 250 ms later instead of never (the whole connect timeout went to the first).
    #[tokio::test]
    async fn a_first_address_that_drops_syns_does_not_hold_up_the_next() {
        let (_hole, _filler, dead) = black_hole([127, 0, 0, 1].into()).await;
        let good = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let dns = crate::resolve::tests::FakeDns::default();
        dns.answer(Duration::ZERO, &[dead, good.local_addr().unwrap()]);
        let (to, _) = dns.resolver("peer", Duration::from_secs(60));
        let began = std::time::Instant::now();
        let tcp = connect(&to, Opening::WeWriteFirst, Duration::from_secs(5))
            .await
            .expect("connected to the second address");
        assert!(
            began.elapsed() >= Duration::from_millis(250),
            "the first ran alone"
        );
        assert_eq!(tcp.peer_addr().unwrap(), good.local_addr().unwrap());
        assert!(tcp.nodelay().unwrap());
    }

    /// Dual stack with broken IPv6 and many AAAA records: families alternate, so the IPv4
    /// address is the second attempt, not the one after every IPv6 address timed out.
    #[tokio::test]
    async fn families_alternate_so_a_dead_family_costs_one_attempt_delay() {
        if std::net::TcpListener::bind("[::1]:0").is_err() {
            eprintln!("skipped: no IPv6 loopback here");
            return;
        }
        let (_hole, _filler, dead) = black_hole(std::net::Ipv6Addr::LOCALHOST.into()).await;
        let good = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut answer = vec![dead; 30];
        answer.push(good.local_addr().unwrap());
        let dns = crate::resolve::tests::FakeDns::default();
        dns.answer(Duration::ZERO, &answer);
        let (to, _) = dns.resolver("peer", Duration::from_secs(60));
        let tcp = connect(&to, Opening::EitherSide, Duration::from_secs(5))
            .await
            .expect("connected over IPv4");
        assert_eq!(tcp.peer_addr().unwrap(), good.local_addr().unwrap());
    }

    /// An attempt still running when the next starts is not abandoned: here the first address
    /// takes its retransmitted SYN (about 1 s in), the second never answers.
    #[tokio::test]
    async fn an_earlier_attempt_keeps_running_after_the_next_starts() {
        let (slow, filler, late) = black_hole([127, 0, 0, 1].into()).await;
        let (_hole, _filler, dead) = black_hole([127, 0, 0, 1].into()).await;
        let dns = crate::resolve::tests::FakeDns::default();
        dns.answer(Duration::ZERO, &[late, dead]);
        let (to, _) = dns.resolver("peer", Duration::from_secs(60));
        // Not a wait for readiness: the queue frees up once both attempts are under way (the
        // second starts at 250 ms), and the first attempt's SYN is retransmitted at about 1 s.
        let free = async {
            tokio::time::sleep(Duration::from_millis(500)).await;
            drop(filler);
            slow.accept().await.unwrap()
        };
        let connected = connect(&to, Opening::EitherSide, Duration::from_secs(5));
        let (tcp, _) = tokio::join!(connected, free);
        assert_eq!(tcp.expect("the first attempt").peer_addr().unwrap(), late);
    }

    /// When every address refuses, the error names the last attempt's failure.
    #[tokio::test]
    async fn when_every_address_fails_the_error_is_the_last_failure() {
        let closed = || {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        let (first, second) = (closed(), closed());
        let dns = crate::resolve::tests::FakeDns::default();
        dns.answer(Duration::ZERO, &[first, second]);
        let (to, _) = dns.resolver("peer", Duration::from_secs(60));
        let e = connect(&to, Opening::EitherSide, Duration::from_secs(5))
            .await
            .unwrap_err();
        assert!(
            matches!(&e, ConnectError::Io { addr, .. } if *addr == second),
            "{e}"
        );
        assert_eq!(e.reason(), "refused");
    }

    /// The reviewer's case: the cached answer is older than `--dns-cache` and DNS has gone
    /// silent. Six connections at once all connect with the last answer, at once, and one
    /// refresh is asked for (it used to be one lookup after another under a lock, each within
    /// the connections' connect timeouts, and five of six timed out).
    #[tokio::test]
    async fn connections_use_the_last_answer_at_once_while_dns_is_silent() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let dns = crate::resolve::tests::FakeDns::default();
        dns.answer(Duration::ZERO, &[listener.local_addr().unwrap()]); // then silence
        let (to, counts) = dns.resolver("peer", Duration::from_secs(1));
        let timeout = Duration::from_secs(5);
        connect(&to, Opening::EitherSide, timeout).await.unwrap();
        // The answer becomes older than the cache period.
        tokio::time::pause();
        tokio::time::advance(Duration::from_secs(2)).await;
        tokio::time::resume();
        let to = Arc::new(to);
        let mut connections = tokio::task::JoinSet::new();
        for _ in 0..6 {
            let to = to.clone();
            connections.spawn(async move { connect(&to, Opening::EitherSide, timeout).await });
        }
        for got in connections.join_all().await {
            got.expect("connected with the last answer");
        }
        assert_eq!(dns.calls(), 2, "one refresh");
        assert_eq!(counts.get(), (1, 0, 0));
    }
}
