//! Outbound: plaintext from the app on localhost in, mTLS to the peer out.
//!
//! Steps, in the same order as `inbound.rs`:
//! 1. snapshot the current TLS configs (one per certificate generation);
//! 2. connect to the peer, under the connect timeout (resolving its name);
//! 3. TLS handshake with the peer, under the handshake timeout, presenting our certificate and
//!    verifying the server's against the CA and the route's server name;
//! 4. hand the connection to the kernel (kTLS) when it can take it, and forward both ways until
//!    both sides are done;
//! 5. close the way forwarding ended, and count it.

use std::sync::Arc;
use std::time::Instant;

use gembok_certwatch::Reloadable;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_util::sync::CancellationToken;

use crate::Direction;
use crate::config::{Limits, OutboundRoute};
use crate::conn::{self, Opening};
use crate::forward::{End, Settings};
use crate::ktls::{self, Kernel, RecordAligned};
use crate::metrics::ListenerMetrics;
use crate::reads;
use crate::records;
use crate::resolve::Resolver;
use crate::serve::Handler;
use crate::tls::{self, TlsConfigs};

/// One `--outbound` route.
pub struct Outbound {
    pub route: OutboundRoute,
    /// Position of this route's config in `TlsConfigs::outbound`.
    pub index: usize,
    pub certs: Reloadable<TlsConfigs>,
    pub limits: Limits,
    pub forward: Settings,
    pub metrics: ListenerMetrics,
    /// What the kernel can take, when kTLS is enabled and available.
    pub ktls: Option<Arc<Kernel>>,
    /// Gembok's record layer, unless `--record-layer rustls`.
    pub records: Option<Arc<records::Layer>>,
    /// Where the route's HOST is (looked up at most once per `--dns-cache`).
    pub peer: Resolver,
}

impl Handler for Outbound {
    fn direction(&self) -> Direction {
        Direction::Outbound
    }

    fn metrics(&self) -> &ListenerMetrics {
        &self.metrics
    }

    async fn proxy(&self, mut app: TcpStream, abort: CancellationToken) -> &'static str {
        // 1. Configs of the current certificate generation, kept for this connection's life.
        let Some(certs) = self.certs.current() else {
            self.metrics.handshake_failed("no_certificate_loaded");
            tracing::warn!("refusing connection: no certificate loaded yet");
            conn::reset(&app);
            return "handshake_failed";
        };
        let config = certs.value.outbound[self.index].clone();
        let sessions = certs.value.sessions[self.index].clone();
        drop(certs);

        // 2. The peer.
        let route = &self.route;
        let connect = conn::connect(
            &self.peer,
            Opening::WeWriteFirst,
            self.limits.connect_timeout,
        );
        let tcp = match abort.run_until_cancelled(connect).await {
            None => {
                tracing::info!(
                    "drain grace period over while connecting to the peer; resetting the app"
                );
                conn::reset(&app);
                return "aborted";
            }
            Some(Ok(tcp)) => tcp,
            Some(Err(e)) => {
                self.metrics.upstream_failed(e.reason());
                tracing::warn!(peer = %format_args!("{}:{}", route.host, route.port), error = %e, "cannot reach the peer; resetting the app");
                conn::reset(&app);
                return "upstream_failed";
            }
        };

        // 3. Handshake (reading record by record when the kernel may take over afterwards; a
        //    kernel that can follow KeyUpdates needs the connection's traffic secrets too).
        let started = Instant::now();
        let records = self.records.as_deref();
        let mut tcp = ktls::prepare(tcp, self.ktls.is_some(), records.is_some());
        if !tcp.aligned() {
            // Our Finished waits for the app's first request (step 4), unless the kernel takes
            // the records: it must find rustls' sequence numbers untouched.
            tcp.hold_last_flight();
        }
        let (mut config, handoff, secrets) = ktls::keys::handoff(
            self.ktls.as_deref(),
            tcp.aligned(),
            records.is_some(),
            config,
        );
        let tickets = records.map(|_| records::tickets::watch(&mut config, &sessions));
        let connector = TlsConnector::from(config);
        // The TLS state (over a kilobyte) lives on the heap: moved through the handshake, the
        // hand-over and the forwarder by pointer, it is not copied into each of their futures.
        // Matched where it is awaited, never bound to a local (see `inbound.rs`).
        let handshake = Box::pin(connector.connect(route.server_name.clone(), tcp));
        let handshake = tokio::time::timeout(self.limits.handshake_timeout, handshake);
        let mut peer = match abort.run_until_cancelled(handshake).await {
            None => {
                tracing::info!(
                    "drain grace period over during the TLS handshake; resetting the app"
                );
                conn::reset(&app);
                return "aborted";
            }
            Some(Ok(Ok(tls))) => Box::new(tls),
            Some(Ok(Err(e))) => {
                let reason = tls::failure_reason(&e);
                self.metrics.handshake_failed(reason);
                tracing::info!(reason, error = %e, server_name = ?route.server_name, "TLS handshake failed; resetting the app");
                conn::reset(&app);
                return "handshake_failed";
            }
            Some(Err(_)) => {
                self.metrics.handshake_failed("timeout");
                tracing::info!(timeout = ?self.limits.handshake_timeout, "TLS handshake timed out; resetting the app");
                conn::reset(&app);
                return "handshake_failed";
            }
        };
        conn::handshake_done(&self.metrics, peer.get_ref().1, started.elapsed());

        // 4. and 5. Forward (the app's first bytes, when already there, with our Finished),
        //    then close.
        //    A peer that takes nothing (its window shut) cannot hold this step past the idle
        //    timeout or the drain.
        let first = send_first(&mut app, &mut peer, &self.metrics);
        let first = tokio::time::timeout(self.limits.idle_timeout, first);
        let first = match abort.run_until_cancelled(first).await {
            None => Err(End::Aborted),
            Some(Err(_)) => Err(End::IdleTimeout { unsent: true }),
            Some(Ok(first)) => first,
        };
        let first = match first {
            Ok(first) => first,
            Err(end) => {
                conn::finish(&end, &mut app, &mut peer, &self.metrics).await;
                return end.label();
            }
        };
        let takers = conn::Takers {
            ktls: handoff,
            records,
            secrets,
            tickets,
        };
        conn::carry(
            app,
            peer,
            self.forward,
            &self.metrics,
            takers,
            &abort,
            (first, 0),
        )
        .await
    }
}

/// Ends the hold of `RecordAligned::hold_last_flight`, and sends the held flight with the
/// app's first bytes when they are already waiting (a client usually writes its request right
/// after connecting), in one packet; else alone, at once. Returns how many app bytes it sent.
async fn send_first(
    app: &mut TcpStream,
    peer: &mut TlsStream<RecordAligned<TcpStream>>,
    metrics: &ListenerMetrics,
) -> Result<u64, End> {
    if !peer.get_mut().0.end_hold() {
        return Ok(0); // nothing held (TLS 1.2)
    }
    let mut first = Vec::with_capacity(FIRST_READ);
    let n = match reads::read_if_there(app, &mut first).await {
        Some(Ok(n)) => n, // 0 is EOF: forwarding finds it again
        None => 0,
        Some(Err(e)) => return Err(End::AppError(e)), // the peer is reset, the flight with it
    };
    if n == 0 {
        peer.get_ref().0.push_held().map_err(End::PeerError)?;
        return Ok(0);
    }
    peer.write_all(&first).await.map_err(End::PeerError)?;
    peer.flush().await.map_err(End::PeerError)?;
    metrics.app_to_peer.increment(n as u64);
    Ok(n as u64)
}

/// The most of the app's first bytes that go with the Finished: one record's worth.
const FIRST_READ: usize = 16 * 1024;
