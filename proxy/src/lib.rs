//! gembok-proxy: the encryption sidecar. It terminates mTLS for the app it sits beside (inbound)
//! and originates mTLS for it (outbound), so plaintext never leaves the pod.
//!
//! ```text
//!            pod A                                              pod B
//!  ┌────────────────────────────┐                    ┌────────────────────────────┐
//!  │ app ──plaintext──► outbound│ ══ mTLS (TLS 1.3) ══► inbound ──plaintext──► app │
//!  │     127.0.0.1:15701        │                    │ :8443          127.0.0.1:8080
//!  └────────────────────────────┘                    └────────────────────────────┘
//! ```
//!
//! Module map (the README has the same map by concept):
//! - [`cli`], [`config`]: flags and `GEMBOK_*` variables → one typed [`Config`], all errors at once;
//! - [`serve`]: the one accept loop (permit → accept with backoff → span → tracked task);
//! - [`inbound`], [`outbound`]: one connection each way; the two files mirror each other;
//! - [`forward`]: moves bytes both ways with exact half-close; [`conn`]: connect, reset, finish;
//!   [`resolve`]: outbound host names, looked up once per `--dns-cache` period;
//! - [`ktls`]: the kernel data path (probe, hand-over, control records, key updates, splice);
//! - [`records`]: gembok's own TLS 1.3 record layer, the user-space data path after the
//!   handshake (in-place open/seal, no user-space copy); [`post_handshake`]: the control
//!   messages both record takers read and send;
//! - [`tls`], [`identity`], [`verify_cache`]: rustls configs, suite policy, `allow-san` checks,
//!   remembered chain verdicts;
//!   certificates are loaded and hot-reloaded by the `gembok-certwatch` crate;
//! - [`admin`]: `/live`, `/ready`, `/metrics`; [`metrics`]: every metric name;
//! - [`shutdown`]: cancellation token, task tracker, grace deadline; [`fd_limit`]: the open-file
//!   limit raised at start; [`app_exit`]: `--exit-with-app`, the end of a Job's app seen in
//!   `/proc`;
//! - `math`: the five C math functions our dependencies call, so glibc's libm is never loaded.

// Unsafe code is denied workspace-wide; only `ktls::sys` (one sendmsg with a control message) and
// `math` (C symbol names) allow it, with their reasons.
#![deny(unsafe_code)]

pub mod admin;
pub mod app_exit;
pub mod cli;
pub mod config;
pub mod conn;
pub mod fd_limit;
pub mod forward;
pub mod identity;
pub mod inbound;
pub mod ktls;
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub mod math;
pub mod metrics;
pub mod outbound;
pub mod post_handshake;
pub mod proxy_protocol;
pub mod reads;
pub mod records;
pub mod resolve;
pub mod sandbox;
pub mod serve;
pub mod shutdown;
pub mod tcp_info;
pub mod tls;
pub mod verify_cache;
pub mod wait_ready;

#[cfg(test)]
mod footprint;
#[cfg(test)]
mod test_tcp;
#[cfg(test)]
mod test_tls;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use gembok_certwatch::{CertSource, Requirements, Usage};
use gembok_net::signals::{self, Signals};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

pub use config::Config;

use crate::admin::Health;
use crate::forward::{BufferPolicy, Settings};
use crate::inbound::Inbound;
use crate::metrics::ListenerMetrics;
use crate::outbound::Outbound;
use crate::shutdown::{Drained, Shutdown};

/// Which way a connection goes, seen from the pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// From another pod to our app (we terminate TLS).
    Inbound,
    /// From our app to another pod (we originate TLS).
    Outbound,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Inbound => "inbound",
            Direction::Outbound => "outbound",
        }
    }
}

/// The bound sockets `run` serves; bound by the caller so that tests can use port 0.
#[derive(Debug)]
pub struct Listeners {
    /// One per `Config::inbound` route, same order.
    pub inbound: Vec<TcpListener>,
    /// One per `Config::outbound` route, same order.
    pub outbound: Vec<TcpListener>,
    pub admin: TcpListener,
}

/// A listener could not be bound.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {addr} ({what}): {source}")]
pub struct BindError {
    pub addr: SocketAddr,
    pub what: &'static str,
    #[source]
    pub source: io::Error,
}

/// Accept queue length asked of the kernel (capped by `net.core.somaxconn`). tokio's default of
/// 128 overflows when a burst of clients arrives while the accept loop waits for a connection
/// permit; the kernel then drops SYNs and clients stall for a one-second retransmit.
pub const LISTEN_BACKLOG: u32 = 4096;

impl Listeners {
    pub fn bind(config: &Config) -> Result<Self, BindError> {
        let bind = |addr: SocketAddr, what: &'static str| {
            listen(addr).map_err(|source| BindError { addr, what, source })
        };
        Ok(Self {
            inbound: config
                .inbound
                .iter()
                .map(|r| bind(r.listen, "inbound"))
                .collect::<Result<_, _>>()?,
            outbound: config
                .outbound
                .iter()
                .map(|r| bind(r.listen, "outbound"))
                .collect::<Result<_, _>>()?,
            admin: bind(config.admin, "admin")?,
        })
    }
}

/// Binds a listening socket with [`LISTEN_BACKLOG`] and TCP_NODELAY, which every accepted
/// socket inherits (see `serve`); `[::]` is dual-stack ([`gembok_net::listen`]).
pub fn listen(addr: SocketAddr) -> io::Result<TcpListener> {
    gembok_net::listen(addr, LISTEN_BACKLOG, true)
}

/// Serves until the first of `signals` (or `POST /shutdown` on the admin listener), then drains
/// (see [`shutdown`]) and returns; a second signal cuts the drain short.
pub async fn run(config: Config, listeners: Listeners, signals: Signals) -> io::Result<()> {
    let prometheus = metrics::install();
    let (provider, aead) = tls::configured(&config.tls);
    if config.tls.fips {
        let not_fips = tls::not_fips(&provider);
        if !not_fips.is_empty() {
            return Err(io::Error::other(format!(
                "this is the FIPS build, but these would run outside FIPS mode: {}",
                not_fips.join(", ")
            )));
        }
        tracing::info!(
            aws_lc = aws_lc_rs::awslc_version(),
            fips_module = aws_lc_rs::fips_version(),
            "FIPS mode: key exchange, signatures, randomness and records in AWS-LC's FIPS module \
             (its power-on self-tests passed); records sealed by rustls in user space"
        );
    }
    metrics::build_info(config.tls.provider.name(), aead.name(), config.tls.fips);
    metrics::sandbox_info(config.sandboxed);
    let key_exchange = tls::group_names(&provider);
    let cipher_suites = tls::suite_names(&provider);
    let provider = Arc::new(provider);
    let stop = Shutdown::default();
    let config = Arc::new(config);

    // Certificates: loaded now, then kept current in the background.
    let mut usages = Vec::new();
    if !config.inbound.is_empty() {
        usages.push(Usage::Server);
    }
    if !config.outbound.is_empty() {
        usages.push(Usage::Client);
    }
    let options = gembok_certwatch::Options {
        poll_interval: config.reload_interval,
        requirements: Requirements {
            ca_required: true,
            usages,
        },
        metric_prefix: metrics::PREFIX.to_owned(),
        allow_san_files: config.allow_san_files(),
        crl_files: config.crl_files.clone(),
        ..Default::default()
    };
    let build_config = config.clone();
    let build_provider = provider.clone();
    let (certs, reload) = gembok_certwatch::start(
        config.certs.clone(),
        provider.clone(),
        options,
        move |material| tls::build(material, &build_provider, &build_config),
        stop.token.child_token(),
    );
    reload.reload_on_sighup(stop.token.clone());

    // kTLS: only when asked for and the start-up probe found the kernel able.
    let ktls = config.kernel_tls().then(|| {
        Arc::new(ktls::Kernel {
            support: config.ktls_support.clone(),
            record_limit: config.record_limit,
        })
    });
    let data_path = match config.ktls {
        ktls::Mode::Off if config.tls.fips => "user space (FIPS build)".to_owned(),
        ktls::Mode::Off => "user space (--ktls off)".to_owned(),
        _ => config.ktls_support.to_string(),
    };
    metrics::ktls_available(ktls.is_some(), config.ktls_support.rekey);

    let health = Arc::new(Health {
        data_path: data_path.clone(),
        certs: certs.clone(),
        expiry_margin: config.cert_expiry_margin,
        draining: AtomicBool::new(false),
        shutdown_requested: tokio_util::sync::CancellationToken::new(),
        last_answer: std::sync::Mutex::new(Ok(())),
    });
    // Before the admin server answers /ready, which lets the kubelet start the app.
    let app_table = config.exit_with_app.then(app_exit::start).flatten();
    let admin_addr = listeners.admin.local_addr()?;
    let admin_stop = tokio_util::sync::CancellationToken::new();
    tokio::spawn(metrics::upkeep(
        prometheus.clone(),
        metrics::UPKEEP_EVERY,
        admin_stop.clone(),
    ));
    tokio::spawn(admin::serve(
        listeners.admin,
        health.clone(),
        prometheus,
        admin_stop.clone(),
    ));

    if !config.inbound.is_empty() {
        match config.client_auth {
            config::ClientAuth::Required => {}
            config::ClientAuth::Optional => tracing::warn!(
                "--inbound-client-auth optional: peers without a client certificate are let in \
                 (mTLS is not enforced on inbound listeners)"
            ),
            config::ClientAuth::None => tracing::warn!(
                "--inbound-client-auth none: client certificates are not asked for; any peer that \
                 reaches an inbound listener gets through to the app"
            ),
        }
    }

    // One limit per direction: peers that connect and stall their handshakes (unauthenticated
    // until it completes) can hold every inbound slot, never the app's own outbound ones.
    let inbound_permits = Arc::new(Semaphore::new(config.limits.max_connections));
    let outbound_permits = Arc::new(Semaphore::new(config.limits.max_connections));
    let forward = Settings {
        idle_timeout: config.limits.idle_timeout,
        buffers: BufferPolicy::default(),
    };
    let records = (config.record_layer == records::Choice::Gembok).then(|| {
        Arc::new(records::Layer {
            library: aead,
            record_limit: config.record_limit,
            buffers: forward.buffers,
        })
    });
    for (index, (route, listener)) in config.inbound.iter().zip(listeners.inbound).enumerate() {
        let addr = listener.local_addr()?;
        tracing::info!(direction = "inbound", listen = %addr, app = %route.target,
            allow_san = ?route.allow_san.iter().map(ToString::to_string).collect::<Vec<_>>(),
            allow_san_files = ?route.allow_san_files, "listening");
        let handler = Arc::new(Inbound {
            route: route.clone(),
            index,
            certs: certs.clone(),
            limits: config.limits,
            forward,
            metrics: ListenerMetrics::new(Direction::Inbound, addr.to_string()),
            ktls: ktls.clone(),
            records: records.clone(),
            app: resolve::Resolver::fixed(route.target),
        });
        stop.tracker.spawn(serve::serve(
            listener,
            handler,
            inbound_permits.clone(),
            stop.clone(),
        ));
    }
    for (index, (route, listener)) in config.outbound.iter().zip(listeners.outbound).enumerate() {
        let addr = listener.local_addr()?;
        tracing::info!(direction = "outbound", listen = %addr, upstream = %format_args!("{}:{}", route.host, route.port),
            server_name = ?route.server_name, "listening");
        let lookups = metrics::dns_lookups(&addr.to_string());
        let handler = Arc::new(Outbound {
            route: route.clone(),
            index,
            certs: certs.clone(),
            limits: config.limits,
            forward,
            metrics: ListenerMetrics::new(Direction::Outbound, addr.to_string()),
            ktls: ktls.clone(),
            records: records.clone(),
            peer: resolve::Resolver::new(&route.host, route.port, config.dns_cache, lookups),
        });
        stop.tracker.spawn(serve::serve(
            listener,
            handler,
            outbound_permits.clone(),
            stop.clone(),
        ));
    }
    tracing::info!(admin = %admin_addr, provider = config.tls.provider.name(), aead = aead.name(), tls12 = config.tls.tls12,
        cipher_suites, key_exchange, certificate_loaded = certs.current().is_some(), data_path = %data_path, "gembok-proxy started");

    let app_exited = async {
        if config.exit_with_app {
            app_exit::exited(app_table).await
        } else {
            std::future::pending().await
        }
    };
    wait_and_drain(&config, &health, &stop, signals, app_exited).await;
    admin_stop.cancel();
    Ok(())
}

/// Waits for the first signal, `POST /shutdown` or the app's exit (`--exit-with-app`), then
/// stops: `/ready` 503, the drain delay (signals only), the drain. A second signal cuts the delay
/// and the drain short.
async fn wait_and_drain(
    config: &Config,
    health: &Health,
    stop: &Shutdown,
    mut signals: Signals,
    app_exited: impl Future<Output = ()>,
) {
    let (signal, requested) = tokio::select! {
        signal = signals::next(&mut signals) => (signal, false),
        () = health.shutdown_requested.cancelled() => ("POST /shutdown", true),
        () = app_exited => ("the app exited", true),
    };
    // The app asked for it or is gone: it is done calling out, so no delay.
    let delay = if requested {
        Duration::ZERO
    } else {
        config.drain_delay
    };
    let deadline = tokio::time::Instant::now() + config.drain_grace;
    health.draining.store(true, Ordering::Release);
    // Connections open: the tracker also holds one accept loop per listener until they stop.
    let listeners = config.inbound.len() + config.outbound.len();
    let open = || {
        let tracked = stop.tracker.len();
        if stop.token.is_cancelled() {
            tracked
        } else {
            tracked.saturating_sub(listeners)
        }
    };
    // A second signal: whoever sent it does not want to wait out the grace period.
    let second_signal = |name: &'static str, open: usize| {
        tracing::warn!(
            signal = name,
            open,
            "second signal: closing the remaining connections now"
        );
    };
    let mut cut = false;
    if !delay.is_zero() {
        // The app may be stopping too and still call out; peers may not have seen /ready yet.
        tracing::info!(signal, delay = ?delay, "still accepting for the drain delay");
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = health.shutdown_requested.cancelled() => {
                tracing::info!("POST /shutdown: the app is done; the drain delay ends");
            }
            again = signals::next(&mut signals) => {
                second_signal(again, open());
                cut = true;
            }
        }
    }
    let grace = deadline.saturating_duration_since(tokio::time::Instant::now());
    tracing::info!(signal, grace = ?grace, open = open(), "draining");
    let again = async {
        if cut {
            return;
        }
        if requested {
            // Not a second signal: the kubelet's SIGTERM (a Job deleted, a node drained) during
            // the app's own stop keeps the drain going; a signal after it cuts.
            let first = signals::next(&mut signals).await;
            tracing::info!(signal = first, "already draining ({signal})");
        }
        second_signal(signals::next(&mut signals).await, open());
    };
    match stop.drain(grace, again).await {
        Drained::Complete => tracing::info!("drained; exiting"),
        Drained::Expired { remaining } => tracing::warn!(
            remaining,
            "drain grace period over; closing the remaining connections"
        ),
        Drained::Cut { remaining } => {
            tracing::info!(remaining, "closed the remaining connections")
        }
    }
}

/// The certificate source as the operator configured it, for logs.
pub fn describe_certs(source: &CertSource) -> String {
    match source {
        CertSource::Dir(d) => format!("dir {}", d.display()),
        CertSource::Files { cert, key, ca } => format!(
            "cert {} key {} ca {}",
            cert.display(),
            key.display(),
            ca.as_ref()
                .map(|c| c.display().to_string())
                .unwrap_or_default()
        ),
    }
}
