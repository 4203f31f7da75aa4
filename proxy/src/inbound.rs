//! Inbound: mTLS from other pods in, plaintext to the app on localhost out.
//!
//! Steps, in the same order as `outbound.rs`:
//! 1. snapshot the current TLS configs (one per certificate generation);
//! 2. TLS handshake with the peer, under the handshake timeout (client certificate required by
//!    default, and its SANs checked against `allow-san` inside the handshake);
//! 3. connect to the app, under the connect timeout (and with `proxy-protocol=v2`, tell it who
//!    is calling: a PROXY protocol header before the client's first byte);
//! 4. hand the connection to the kernel (kTLS) when it can take it, and forward both ways until
//!    both sides are done;
//! 5. close the way forwarding ended, and count it.

use std::sync::Arc;
use std::time::Instant;

use gembok_certwatch::Reloadable;
use tokio::io::AsyncWriteExt as _;
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::Direction;
use crate::config::{InboundRoute, Limits};
use crate::conn::{self, Opening, PeerStream};
use crate::forward::Settings;
use crate::ktls::{self, Kernel, RecordAligned};
use crate::metrics::ListenerMetrics;
use crate::proxy_protocol;
use crate::records;
use crate::resolve::Resolver;
use crate::serve::Handler;
use crate::tls::{self, TlsConfigs};

/// One `--inbound` listener.
pub struct Inbound {
    pub route: InboundRoute,
    /// Position of this route's config in `TlsConfigs::inbound`.
    pub index: usize,
    pub certs: Reloadable<TlsConfigs>,
    pub limits: Limits,
    pub forward: Settings,
    pub metrics: ListenerMetrics,
    /// What the kernel can take, when kTLS is enabled and available.
    pub ktls: Option<Arc<Kernel>>,
    /// Gembok's record layer, unless `--record-layer rustls`.
    pub records: Option<Arc<records::Layer>>,
    /// The app (`route.target`, never looked up).
    pub app: Resolver,
}

impl Handler for Inbound {
    fn direction(&self) -> Direction {
        Direction::Inbound
    }

    fn metrics(&self) -> &ListenerMetrics {
        &self.metrics
    }

    async fn proxy(&self, peer: TcpStream, abort: CancellationToken) -> &'static str {
        // 1. Configs of the current certificate generation, kept for this connection's life.
        let Some(certs) = self.certs.current() else {
            self.metrics.handshake_failed("no_certificate_loaded");
            tracing::warn!("refusing connection: no certificate loaded yet");
            conn::reset(&peer);
            return "handshake_failed";
        };
        let config = certs.value.inbound[self.index].clone();
        drop(certs);

        // 2. Handshake (reading record by record when the kernel may take over afterwards; a
        //    kernel that can follow KeyUpdates needs the connection's traffic secrets too).
        let started = Instant::now();
        let peer = ktls::prepare(peer, self.ktls.is_some(), self.records.is_some());
        let (config, handoff, secrets) = ktls::keys::handoff(
            self.ktls.as_deref(),
            peer.aligned(),
            self.records.is_some(),
            config,
        );
        let acceptor = TlsAcceptor::from(config);
        // The TLS state (over a kilobyte) lives on the heap: moved through the handshake, the
        // hand-over and the forwarder by pointer, it is not copied into each of their futures.
        // The result is matched where it is awaited, never bound to a local: a local that held
        // it (even moved out of) would keep a slot for the unboxed TLS stream in every later
        // state of this future, 1.6 KiB more per connection for as long as it lives.
        let handshake = Box::pin(acceptor.accept(peer));
        let handshake = tokio::time::timeout(self.limits.handshake_timeout, handshake);
        let mut peer = match abort.run_until_cancelled(handshake).await {
            None => {
                tracing::info!("drain grace period over during the TLS handshake; closing");
                return "aborted";
            }
            Some(Ok(Ok(tls))) => Box::new(tls),
            Some(Ok(Err(e))) => {
                let reason = tls::failure_reason(&e);
                self.metrics.handshake_failed(reason);
                tracing::info!(reason, error = %e, "TLS handshake failed");
                return "handshake_failed";
            }
            Some(Err(_)) => {
                self.metrics.handshake_failed("timeout");
                tracing::info!(timeout = ?self.limits.handshake_timeout, "TLS handshake timed out");
                return "handshake_failed";
            }
        };
        conn::handshake_done(&self.metrics, peer.get_ref().1, started.elapsed());

        // 3. The app. The client's first bytes nearly always come with its Finished: written
        //    to the app as soon as it is connected, they take TCP's last ACK along.
        let target = self.route.target;
        let opening = if self.route.proxy_protocol || client_spoke(&mut peer) {
            Opening::WeWriteFirst
        } else {
            Opening::EitherSide
        };
        let connect = conn::connect(&self.app, opening, self.limits.connect_timeout);
        let mut app = match abort.run_until_cancelled(connect).await {
            None => {
                tracing::info!(
                    "drain grace period over while connecting to the app; resetting the peer"
                );
                conn::reset(peer.tcp());
                return "aborted";
            }
            Some(Ok(app)) => app,
            Some(Err(e)) => {
                self.metrics.upstream_failed(e.reason());
                tracing::warn!(app = %target, error = %e, "cannot reach the app; resetting the peer");
                conn::reset(peer.tcp());
                return "upstream_failed";
            }
        };
        if self.route.proxy_protocol {
            let tcp = peer.tcp();
            let (Ok(client), Ok(local)) = (tcp.peer_addr(), tcp.local_addr()) else {
                conn::reset(tcp);
                conn::reset(&app);
                return "reset";
            };
            let header = proxy_protocol::header(client, local, peer.get_ref().1);
            // A fresh socket's buffer takes these few hundred bytes at once.
            if let Err(e) = app.write_all(&header).await {
                self.metrics.upstream_failed(conn::io_failure_reason(&e));
                tracing::warn!(app = %target, error = %e, "cannot write the PROXY header to the app; resetting the peer");
                conn::reset(peer.tcp());
                return "upstream_failed";
            }
        }

        // 4. and 5. Forward, then close.
        let takers = conn::Takers {
            ktls: handoff,
            records: self.records.as_deref(),
            secrets,
            tickets: None,
        };
        conn::carry(
            app,
            peer,
            self.forward,
            &self.metrics,
            takers,
            &abort,
            (0, 0),
        )
        .await
    }
}

/// Whether the client's first bytes are already here after the handshake: read along with its
/// Finished and left for whoever takes the records, or decrypted by rustls.
fn client_spoke(peer: &mut tokio_rustls::server::TlsStream<RecordAligned<TcpStream>>) -> bool {
    let (tcp, tls) = peer.get_mut();
    tcp.read_ahead() > 0
        || tls
            .process_new_packets()
            .is_ok_and(|io| io.plaintext_bytes_to_read() > 0)
}
