//! The webhook edge: HTTPS (rustls, TLS 1.3, certificates hot-reloaded by `gembok-certwatch`)
//! in front of [`review`], plus the lifecycle of the whole process.
//!
//! HTTP rules for `POST /mutate` (and `POST /mutate/istio`, the same for namespaces that are
//! Istio-injected): 404 for other paths, 405 for other methods, 415 unless the body is
//! `application/json`, 413 over [`MAX_BODY`], 408 when the body is not sent within
//! `--body-timeout`, 400 when it is not an AdmissionReview, otherwise 200 with the answer.
//!
//! The body of a refused request is still read and thrown away behind the answer, up to
//! [`LINGER_MAX`] bytes and within `--body-timeout`: a client that is still sending then sees
//! the answer rather than a reset, and a keep-alive connection stays usable for its next
//! request.
//!
//! A client that does not finish the TLS handshake, or a request's headers, within
//! `--header-timeout` is disconnected. At most `--max-connections` connections are open at
//! once; past that, new connections wait in the listen queue until one closes.
//!
//! Shutdown (SIGTERM or SIGINT): `/ready` turns 503 at once while requests are still served for
//! `--shutdown-delay` (the endpoint is being removed from the Service meanwhile), then the
//! listener closes, idle keep-alive connections close, and in-flight requests get
//! `--drain-grace` to finish.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use gembok_certwatch::{Material, Options, Reloadable, Requirements, Usage};
use gembok_net::accept::{Backoff, is_per_connection};
use gembok_net::signals::{self, Signals};
use http_body_util::{BodyExt, Full};
use hyper::body::Body;
use hyper::body::Incoming;
use hyper::header::{ALLOW, CONTENT_TYPE, EXPECT, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::sign::SingleCertAndKey;
use thiserror::Error;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use crate::admin::{self, Health};
use crate::config::ServeConfig;
use crate::inject::{Context, InjectorConfig};
use crate::metrics;
use crate::review::{self, Verdict};

/// Largest request body accepted. The API server caps objects near 3 MiB; a review carries
/// the object once for CREATE, plus envelope.
pub const MAX_BODY: usize = 6 * 1024 * 1024;

/// Per-connection limits from the command line.
#[derive(Clone, Copy, Debug)]
struct Limits {
    header_timeout: Duration,
    body_timeout: Duration,
}

/// Why the server could not run.
#[derive(Debug, Error)]
pub enum ServeError {
    #[error("cannot bind {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot install the metrics recorder: {0}")]
    Metrics(#[from] metrics_exporter_prometheus::BuildError),
    #[error("cannot start the async runtime: {0}")]
    Runtime(std::io::Error),
    #[error("cannot install the SIGTERM/SIGINT handlers: {0}")]
    Signals(std::io::Error),
}

type Tls = Reloadable<Arc<ServerConfig>>;

/// Starts the runtime, binds both listeners and serves until SIGTERM/SIGINT.
pub fn run_blocking(config: ServeConfig) -> Result<(), ServeError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(ServeError::Runtime)?;
    runtime.block_on(async move {
        let prometheus = metrics::install()?;
        let bind =
            |addr| async move { listen(addr).map_err(|source| ServeError::Bind { addr, source }) };
        let signals = signals::stop_signals().map_err(ServeError::Signals)?;
        let https = bind(config.listen).await?;
        let admin = bind(config.admin).await?;
        run(config, https, admin, prometheus, signals).await;
        Ok(())
    })
}

/// Listens on `addr`. `[::]` (the default) takes IPv4 and IPv6 clients alike, so the API server
/// reaches the webhook in IPv4, IPv6 and dual-stack clusters ([`gembok_net::listen`], as
/// gembok-proxy's listeners).
fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    gembok_net::listen(addr, 1024, false)
}

/// Serves on already-bound listeners until the first of `signals`, then drains; a second signal
/// ends the shutdown delay and the drain at once.
pub async fn run(
    config: ServeConfig,
    https: TcpListener,
    admin: TcpListener,
    prometheus: metrics_exporter_prometheus::PrometheusHandle,
    mut signals: Signals,
) {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let source = config.cert.source();
    let options = Options {
        // The API server presents no client certificate, so no CA is needed.
        requirements: Requirements {
            ca_required: false,
            usages: vec![Usage::Server],
        },
        metric_prefix: metrics::PREFIX.to_owned(),
        ..Options::default()
    };
    let stop_certs = CancellationToken::new();
    let build_provider = provider.clone();
    let (tls, reload) = gembok_certwatch::start(
        source,
        provider,
        options,
        move |material: &Material| server_config(material, &build_provider),
        stop_certs.clone(),
    );
    reload.reload_on_sighup(stop_certs.clone());

    metrics::sandbox_info(config.sandboxed);
    let draining = Arc::new(AtomicBool::new(false));
    let health = Health {
        tls: tls.clone(),
        draining: draining.clone(),
    };
    let stop_admin = CancellationToken::new();
    let admin_addr = admin.local_addr().ok();
    tokio::spawn(metrics::upkeep(
        prometheus.clone(),
        metrics::UPKEEP_EVERY,
        stop_admin.clone(),
    ));
    tokio::spawn(admin::serve(admin, health, prometheus, stop_admin.clone()));

    let stop_accepting = CancellationToken::new();
    let tracker = TaskTracker::new();
    let https_addr = https.local_addr().ok();
    let injector = Arc::new(config.injector.clone());
    let limits = Limits {
        header_timeout: config.header_timeout,
        body_timeout: config.body_timeout,
    };
    let accept = tokio::spawn(accept_loop(
        https,
        tls.clone(),
        injector,
        limits,
        Arc::new(Semaphore::new(config.max_connections)),
        stop_accepting.clone(),
        tracker.clone(),
    ));
    info!(
        https = %show(https_addr),
        admin = %show(admin_addr),
        proxy_image = %config.injector.proxy_image,
        proxy_pull_policy = config.injector.proxy_pull_policy.as_str(),
        sidecar_mode = config.injector.sidecar_mode.as_str(),
        unannotated_pods = config.injector.unannotated.as_str(),
        max_connections = config.max_connections,
        "listening"
    );

    let signal = signals::next(&mut signals).await;
    draining.store(true, Ordering::SeqCst);
    info!(signal, delay = ?config.shutdown_delay, "shutting down: /ready is now 503, still serving");
    let second_signal = |name: &str| warn!("second signal ({name}): stopping now");
    let mut cut = false;
    tokio::select! {
        () = tokio::time::sleep(config.shutdown_delay) => {}
        name = signals::next(&mut signals) => {
            second_signal(name);
            cut = true;
        }
    }
    stop_accepting.cancel();
    let graceful = accept.await.unwrap_or_default();
    tracker.close();
    info!(grace = ?config.drain_grace, "listener closed, draining connections");
    let drain = async {
        graceful.shutdown().await;
        tracker.wait().await;
    };
    let again = async {
        if !cut {
            second_signal(signals::next(&mut signals).await);
        }
    };
    let drained = tokio::select! {
        biased;
        drained = tokio::time::timeout(config.drain_grace, drain) => drained
            .map_err(|_| "drain grace elapsed with requests still in flight; closing them"),
        () = again => Err("requests still in flight; closing them"),
    };
    if let Err(why) = drained {
        warn!("{why}");
    }
    stop_admin.cancel();
    stop_certs.cancel();
    info!("stopped");
}

fn show(addr: Option<SocketAddr>) -> String {
    addr.map_or_else(|| "?".to_owned(), |a| a.to_string())
}

/// TLS 1.3 only, HTTP/1.1 only (the API server speaks both; one protocol keeps this small).
fn server_config(
    material: &Material,
    provider: &Arc<CryptoProvider>,
) -> Result<Arc<ServerConfig>, gembok_certwatch::BuildError> {
    let mut config = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(SingleCertAndKey::from(
            material.certified_key.clone(),
        )));
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Accepts until `stop`; returns the graceful-shutdown handle for the connections it started.
/// Each connection holds a permit of `slots` until it closes; with none left, accepting waits.
async fn accept_loop(
    listener: TcpListener,
    tls: Tls,
    injector: Arc<InjectorConfig>,
    limits: Limits,
    slots: Arc<Semaphore>,
    stop: CancellationToken,
    tracker: TaskTracker,
) -> GracefulShutdown {
    let graceful = GracefulShutdown::new();
    let mut backoff = Backoff::default();
    loop {
        let permit = tokio::select! {
            () = stop.cancelled() => return graceful,
            permit = slots.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => return graceful, // never closed
            },
        };
        let (stream, peer) = tokio::select! {
            () = stop.cancelled() => return graceful,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => {
                    backoff.reset();
                    accepted
                }
                Err(e) => {
                    metrics::error("accept");
                    if is_per_connection(&e) {
                        debug!(error = %e, "accept failed for one connection");
                        continue;
                    }
                    // Out of file descriptors and the like: wait instead of spinning.
                    let wait = backoff.pause();
                    warn!(error = %e, retry_in = ?wait, "accept failed; backing off");
                    tokio::select! {
                        () = stop.cancelled() => return graceful,
                        () = tokio::time::sleep(wait) => continue,
                    }
                }
            },
        };
        // One snapshot per connection: a reload mid-connection never mixes two certificates.
        let Some(loaded) = tls.current() else {
            debug!(client.addr = %peer, "no certificate loaded yet; closing connection");
            metrics::error("no_certificate");
            continue;
        };
        let acceptor = TlsAcceptor::from(loaded.value.clone());
        let watcher = graceful.watcher();
        let injector = injector.clone();
        let stop = stop.clone();
        tracker.spawn(async move {
            let _permit = permit;
            let handshake = tokio::select! {
                () = stop.cancelled() => return,
                r = tokio::time::timeout(limits.header_timeout, acceptor.accept(stream)) => r,
            };
            let stream = match handshake {
                Ok(Ok(stream)) => stream,
                Ok(Err(e)) => {
                    debug!(client.addr = %peer, error = %e, "TLS handshake failed");
                    metrics::error("tls_handshake");
                    return;
                }
                Err(_) => {
                    debug!(client.addr = %peer, "TLS handshake timed out");
                    metrics::error("tls_handshake");
                    return;
                }
            };
            let service = service_fn(move |req| handle(req, injector.clone(), limits));
            let conn = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_timeout)
                .serve_connection(TokioIo::new(stream), service);
            if let Err(e) = watcher.watch(conn).await {
                debug!(client.addr = %peer, error = %e, "connection ended with an error");
            }
        });
    }
}

/// The most of a refused request's body read and thrown away behind the answer. A socket
/// closed with unread data in it makes the kernel send RST, and a reset can destroy the answer
/// before a client that is still sending has read it. Past this, the connection is closed
/// anyway.
const LINGER_MAX: usize = 2 * MAX_BODY;

#[derive(Debug)]
enum BodyError {
    /// Over [`MAX_BODY`]; the rest of the body, unread.
    TooLarge(Incoming),
    Read(hyper::Error),
}

/// The whole body if it fits in [`MAX_BODY`]. A body that came in one frame is handed on as it
/// came; several are joined once at the end.
async fn read_body(mut body: Incoming) -> Result<Bytes, BodyError> {
    let mut kept: Vec<Bytes> = Vec::new();
    let mut len = 0;
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame.map_err(BodyError::Read)?.into_data() else {
            continue; // trailers
        };
        len += data.len();
        if len > MAX_BODY {
            return Err(BodyError::TooLarge(body));
        }
        kept.push(data);
    }
    Ok(match kept.len() {
        1 => kept.swap_remove(0),
        _ => Bytes::from(kept.concat()),
    })
}

async fn handle(
    req: Request<Incoming>,
    injector: Arc<InjectorConfig>,
    limits: Limits,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let started = Instant::now();
    debug!(method = %req.method(), path = req.uri().path(), "request received");
    let (result, response) = route(req, &injector, limits).await;
    metrics::request(result, started.elapsed());
    Ok(response)
}

async fn route(
    req: Request<Incoming>,
    injector: &InjectorConfig,
    limits: Limits,
) -> (&'static str, Response<Full<Bytes>>) {
    let (head, body) = req.into_parts();
    let context = match admit(&head, body.size_hint().exact()) {
        Ok(context) => context,
        Err(refusal) => {
            // A client waiting for `100 Continue` has sent no body, and now will not: hyper
            // sends it only when the body is first read, so the refusal goes out instead.
            if !head.headers.contains_key(EXPECT) {
                linger(body, limits.body_timeout);
            }
            return refusal.answer();
        }
    };
    let body = tokio::time::timeout(limits.body_timeout, read_body(body));
    let body = match body.await {
        Ok(Ok(body)) => body,
        Ok(Err(BodyError::TooLarge(rest))) => {
            linger(rest, limits.body_timeout);
            return Refusal::TooLarge.answer();
        }
        Ok(Err(BodyError::Read(e))) => {
            metrics::error("bad_request");
            let message = format!("cannot read the request body: {e}");
            return ("bad_request", text(StatusCode::BAD_REQUEST, &message));
        }
        Err(_) => {
            metrics::error("timeout");
            return (
                "timeout",
                text(
                    StatusCode::REQUEST_TIMEOUT,
                    "request body not received in time",
                ),
            );
        }
    };
    match review::review(&body, injector, &context) {
        Ok(answer) => {
            let result = match &answer.result {
                Verdict::Injected => {
                    metrics::injected();
                    info!(pod = %answer.object, "injected");
                    "injected"
                }
                Verdict::Skipped(reason) => {
                    metrics::skipped(reason);
                    info!(pod = %answer.object, reason, "skipped");
                    "skipped"
                }
                Verdict::Rejected(reason) => {
                    metrics::rejected(reason);
                    info!(pod = %answer.object, reason, "rejected");
                    "rejected"
                }
                Verdict::Ignored => "ignored",
                Verdict::Unreadable => {
                    metrics::error("unreadable_pod");
                    warn!(pod = %answer.object, "denied: the Pod does not deserialise");
                    "unreadable"
                }
            };
            match review::to_wire(&answer.review) {
                Ok(json) => {
                    let mut response = Response::new(Full::new(Bytes::from(json)));
                    response
                        .headers_mut()
                        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
                    (result, response)
                }
                Err(e) => {
                    metrics::error("internal");
                    (
                        "internal",
                        text(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
                    )
                }
            }
        }
        Err(e) if e.is_client_error() => {
            metrics::error("bad_request");
            ("bad_request", text(StatusCode::BAD_REQUEST, &e.to_string()))
        }
        Err(e) => {
            metrics::error("internal");
            (
                "internal",
                text(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
            )
        }
    }
}

/// Why a request is refused before its body is used: on its head alone, or a body streamed past
/// [`MAX_BODY`].
#[derive(Clone, Copy, Debug)]
enum Refusal {
    NotFound,
    MethodNotAllowed,
    UnsupportedMediaType,
    TooLarge,
}

impl Refusal {
    /// The `result` label and the answer.
    fn answer(self) -> (&'static str, Response<Full<Bytes>>) {
        match self {
            Refusal::NotFound => (
                "not_found",
                text(
                    StatusCode::NOT_FOUND,
                    "not found: the webhook serves POST /mutate",
                ),
            ),
            Refusal::MethodNotAllowed => {
                let mut response = text(StatusCode::METHOD_NOT_ALLOWED, "use POST");
                response
                    .headers_mut()
                    .insert(ALLOW, HeaderValue::from_static("POST"));
                ("method_not_allowed", response)
            }
            Refusal::UnsupportedMediaType => {
                metrics::error("unsupported_media_type");
                (
                    "unsupported_media_type",
                    text(
                        StatusCode::UNSUPPORTED_MEDIA_TYPE,
                        "Content-Type must be application/json",
                    ),
                )
            }
            Refusal::TooLarge => {
                metrics::error("too_large");
                (
                    "too_large",
                    text(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        &format!("body larger than {MAX_BODY} bytes"),
                    ),
                )
            }
        }
    }
}

/// The checks that need only the request's head: path, method, media type and the body's
/// declared length (`Content-Length`, as hyper parsed it; `None` for a chunked body).
fn admit(head: &hyper::http::request::Parts, declared: Option<u64>) -> Result<Context, Refusal> {
    let context = match head.uri.path() {
        "/mutate" => Context::default(),
        "/mutate/istio" => Context {
            namespace_istio: true,
        },
        _ => return Err(Refusal::NotFound),
    };
    if head.method != Method::POST {
        return Err(Refusal::MethodNotAllowed);
    }
    if !is_json(head.headers.get(CONTENT_TYPE)) {
        return Err(Refusal::UnsupportedMediaType);
    }
    if declared.is_some_and(|n| n > MAX_BODY as u64) {
        return Err(Refusal::TooLarge);
    }
    Ok(context)
}

/// Reads and throws away, behind the answer, what is left of a refused request's body: up to
/// [`LINGER_MAX`] bytes within `timeout` (see there why). The answer goes out at once; the
/// connection closes, or takes its next request, once the body has been read to its end, like
/// nginx's lingering close. A body declared longer than [`LINGER_MAX`] is not read: it could
/// not be read to its end anyway.
fn linger(mut body: Incoming, timeout: Duration) {
    if body.is_end_stream() || body.size_hint().lower() > LINGER_MAX as u64 {
        return;
    }
    let drain = async move {
        let mut read = 0;
        while let Some(Ok(frame)) = body.frame().await {
            read += frame.data_ref().map_or(0, Bytes::len);
            if read > LINGER_MAX {
                return;
            }
        }
    };
    // Bounded by `timeout`: a client too slow has its connection closed, as without the drain.
    tokio::spawn(tokio::time::timeout(timeout, drain));
}

/// `application/json`, with or without parameters such as `; charset=utf-8`.
fn is_json(value: Option<&HeaderValue>) -> bool {
    value
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|media| media.trim().eq_ignore_ascii_case("application/json"))
}

pub(crate) fn text(status: StatusCode, message: &str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(format!("{message}\n"))));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A request's head, and the body length it declares.
    fn head(
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        declared: Option<usize>,
    ) -> (hyper::http::request::Parts, Option<u64>) {
        let mut request = Request::builder().method(method).uri(path);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let head = request.body(()).unwrap().into_parts().0;
        (head, declared.map(|n| n as u64))
    }

    const JSON: (&str, &str) = ("content-type", "application/json; charset=utf-8");

    #[test]
    fn only_json_posts_to_the_two_paths_within_the_limit_are_admitted() {
        let admitted = |(h, declared)| {
            admit(&h, declared)
                .map(|c| c.namespace_istio)
                .map_err(|r| format!("{r:?}"))
        };
        assert_eq!(admitted(head("POST", "/mutate", &[JSON], None)), Ok(false));
        assert_eq!(
            admitted(head("POST", "/mutate/istio?timeout=10s", &[JSON], None)),
            Ok(true)
        );
        assert_eq!(
            admitted(head("POST", "/mutate", &[JSON], Some(MAX_BODY))),
            Ok(false)
        );
        for ((h, declared), refusal) in [
            (head("POST", "/validate", &[JSON], None), "NotFound"),
            (head("GET", "/mutate", &[JSON], None), "MethodNotAllowed"),
            (head("POST", "/mutate", &[], None), "UnsupportedMediaType"),
            (
                head(
                    "POST",
                    "/mutate",
                    &[("content-type", "application/yaml")],
                    None,
                ),
                "UnsupportedMediaType",
            ),
            (
                head("POST", "/mutate", &[JSON], Some(MAX_BODY + 1)),
                "TooLarge",
            ),
        ] {
            let what = format!("{} {}", h.method, h.uri);
            assert_eq!(admitted((h, declared)), Err(refusal.to_owned()), "{what}");
        }
    }

    #[test]
    fn each_refusal_answers_with_its_status_and_label() {
        for (refusal, status, label) in [
            (Refusal::NotFound, 404, "not_found"),
            (Refusal::MethodNotAllowed, 405, "method_not_allowed"),
            (Refusal::UnsupportedMediaType, 415, "unsupported_media_type"),
            (Refusal::TooLarge, 413, "too_large"),
        ] {
            let (result, response) = refusal.answer();
            assert_eq!((result, response.status().as_u16()), (label, status));
        }
        let (_, response) = Refusal::MethodNotAllowed.answer();
        assert_eq!(response.headers()[ALLOW], "POST");
    }
}
