//! The one accept loop, shared by inbound and outbound listeners.
//!
//! Per connection: accept (backing off on errors such as EMFILE instead of spinning), take a
//! permit (the connection limit of the direction, shared by its listeners; when none is left the
//! loop waits with the one socket it accepted, and the kernel queues the next ones, which is the
//! back-pressure), open a span, and spawn the handler on the shutdown tracker. The permit comes
//! after the accept so that an idle listener holds none: otherwise each idle listener kept one
//! from the others, and a route whose listener started last could get none at all under a limit
//! lower than the number of listeners. Accepted sockets come with `TCP_NODELAY` set, inherited
//! from the listener.

use std::future::Future;
use std::sync::Arc;

use nix::sys::socket::{getsockopt, sockopt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use gembok_net::accept::{Backoff, is_per_connection};

use crate::Direction;
use crate::metrics::ListenerMetrics;
use crate::shutdown::Shutdown;

/// What a listener does with each accepted connection.
pub trait Handler: Send + Sync + 'static {
    fn direction(&self) -> Direction;
    fn metrics(&self) -> &ListenerMetrics;
    /// Serves one connection to its end, handling (logging and counting) its errors, and returns
    /// how it ended: the `end` label of `gembok_connections_closed_total`. When `abort` is
    /// cancelled (the drain grace period is over) forwarding stops and both sides are reset.
    fn proxy(
        &self,
        stream: TcpStream,
        abort: CancellationToken,
    ) -> impl Future<Output = &'static str> + Send;
}

/// Accepts on `listener` until `shutdown` is cancelled, then drops the listener.
pub async fn serve<H: Handler>(
    listener: TcpListener,
    handler: Arc<H>,
    permits: Arc<Semaphore>,
    shutdown: Shutdown,
) {
    let mut backoff = Backoff::default();
    let listen = handler.metrics().listener().to_owned();
    // Accepted sockets inherit TCP_NODELAY from a listener that had it before the handshake
    // (Linux copies it; `crate::listen` sets it before listening), saving a system call per
    // connection. Other listeners get it per connection.
    let inherited = getsockopt(&listener, sockopt::TcpNoDelay).unwrap_or(false);
    loop {
        let accepted = tokio::select! {
            biased;
            _ = shutdown.token.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, client) = match accepted {
            Ok(conn) => {
                backoff.reset();
                if !inherited {
                    let _ = conn.0.set_nodelay(true);
                }
                conn
            }
            Err(e) => {
                handler.metrics().accept_error();
                if is_per_connection(&e) {
                    tracing::debug!(listener = %listen, error = %e, "accept failed for one connection");
                    continue;
                }
                let wait = backoff.pause();
                tracing::warn!(listener = %listen, error = %e, retry_in = ?wait, "accept failed; backing off");
                tokio::select! {
                    _ = shutdown.token.cancelled() => break,
                    _ = tokio::time::sleep(wait) => continue,
                }
            }
        };
        // Waiting here holds one accepted socket; a drain that begins meanwhile closes it unserved,
        // as it would have been in the listener's queue.
        let permit = tokio::select! {
            biased;
            _ = shutdown.token.cancelled() => break,
            permit = permits.clone().acquire_owned() => permit.expect("the connection semaphore is never closed"),
        };
        let span = tracing::info_span!(
            "conn",
            direction = handler.direction().as_str(),
            listener = %listen,
            client.addr = %client,
            peer.id = tracing::field::Empty,
        );
        let handler = handler.clone();
        let abort = shutdown.abort.child_token();
        shutdown.tracker.spawn(
            async move {
                let metrics = handler.metrics();
                metrics.opened.increment(1);
                // Counted down however the task ends (a panic in a handler included).
                let active = Active::count(&metrics.active);
                let end = handler.proxy(stream, abort).await;
                drop(active);
                metrics.closed(end);
                drop(permit);
            }
            .instrument(span),
        );
    }
    tracing::info!(listener = %listen, "stopped accepting");
}

/// One connection in `gembok_connections_active` for as long as it lives.
struct Active<'a>(&'a metrics::Gauge);

impl<'a> Active<'a> {
    fn count(gauge: &'a metrics::Gauge) -> Self {
        gauge.increment(1.0);
        Self(gauge)
    }
}

impl Drop for Active<'_> {
    fn drop(&mut self) {
        self.0.decrement(1.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_active_guard_counts_a_panicking_task_out() {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicU64, Ordering};
        let cell = Arc::new(AtomicU64::new(0f64.to_bits()));
        let gauge = metrics::Gauge::from_arc(cell.clone());
        let task = tokio::spawn(async move {
            let _active = Active::count(&gauge);
            panic!("a handler bug");
        });
        assert!(task.await.unwrap_err().is_panic());
        assert_eq!(f64::from_bits(cell.load(Ordering::SeqCst)), 0.0);
    }

    /// Reports whether each accepted socket has `TCP_NODELAY`.
    struct Nodelay {
        metrics: ListenerMetrics,
        seen: tokio::sync::mpsc::UnboundedSender<bool>,
    }

    impl Handler for Nodelay {
        fn direction(&self) -> Direction {
            Direction::Inbound
        }

        fn metrics(&self) -> &ListenerMetrics {
            &self.metrics
        }

        async fn proxy(&self, stream: TcpStream, _: CancellationToken) -> &'static str {
            let _ = self.seen.send(stream.nodelay().unwrap());
            "clean"
        }
    }

    /// Listeners bound by `crate::listen` pass TCP_NODELAY on; others get it set per connection.
    #[tokio::test]
    async fn accepted_sockets_come_with_nodelay() {
        let localhost = "127.0.0.1:0".parse().unwrap();
        let ours = crate::listen(localhost).unwrap();
        assert!(getsockopt(&ours, sockopt::TcpNoDelay).unwrap());
        accepts_with_nodelay(ours).await;
        let plain = TcpListener::bind(localhost).await.unwrap();
        assert!(!getsockopt(&plain, sockopt::TcpNoDelay).unwrap());
        accepts_with_nodelay(plain).await;
    }

    async fn accepts_with_nodelay(listener: TcpListener) {
        let addr = listener.local_addr().unwrap();
        let (seen, mut nodelay) = tokio::sync::mpsc::unbounded_channel();
        let handler = Arc::new(Nodelay {
            metrics: ListenerMetrics::new(Direction::Inbound, addr.to_string()),
            seen,
        });
        let shutdown = Shutdown {
            token: CancellationToken::new(),
            tracker: tokio_util::task::TaskTracker::new(),
            abort: CancellationToken::new(),
        };
        let permits = Arc::new(Semaphore::new(4));
        let server = tokio::spawn(serve(listener, handler, permits, shutdown.clone()));
        for _ in 0..3 {
            let _client = TcpStream::connect(addr).await.unwrap();
            assert_eq!(nodelay.recv().await, Some(true));
        }
        shutdown.token.cancel();
        server.await.unwrap();
    }

    /// Two listeners share a limit of one connection: the one that started first and has no
    /// traffic must not keep the only permit from the other (it did while waiting to accept).
    #[tokio::test]
    async fn an_idle_listener_holds_no_permit() {
        let localhost: std::net::SocketAddr = "127.0.0.1:0".parse().unwrap();
        let permits = Arc::new(Semaphore::new(1));
        let shutdown = Shutdown::default();
        let (seen, mut served) = tokio::sync::mpsc::unbounded_channel();
        let mut addrs = Vec::new();
        let mut servers = Vec::new();
        for _ in 0..2 {
            let listener = crate::listen(localhost).unwrap();
            let addr = listener.local_addr().unwrap();
            let handler = Arc::new(Nodelay {
                metrics: ListenerMetrics::new(Direction::Inbound, addr.to_string()),
                seen: seen.clone(),
            });
            addrs.push(addr);
            servers.push(tokio::spawn(serve(
                listener,
                handler,
                permits.clone(),
                shutdown.clone(),
            )));
            // `tokio::test` runs one thread: a yield lets this loop run until it waits, so the
            // loops start in order and the first one waits before the second exists.
            tokio::task::yield_now().await;
        }
        assert_eq!(permits.available_permits(), 1, "idle loops hold permits");
        let _client = TcpStream::connect(addrs[1]).await.unwrap();
        let got = tokio::time::timeout(std::time::Duration::from_secs(5), served.recv()).await;
        assert_eq!(got, Ok(Some(true)), "the second listener was served");
        shutdown.token.cancel();
        for server in servers {
            server.await.unwrap();
        }
    }
}
