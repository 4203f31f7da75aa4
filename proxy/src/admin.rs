//! The plaintext admin listener's endpoints (the accept loop, with its connection limit, is
//! `gembok_net::admin`'s, shared with the injector).
//!
//! | endpoint   | answers |
//! |------------|---------|
//! | `/live`    | 200 while the process runs |
//! | `/ready`   | 200 when certificates are loaded, listeners are bound, the certificate does not expire within `--cert-expiry-margin`, and the proxy is not draining; 503 with the reason otherwise |
//! | `/metrics` | Prometheus text format (see `metrics.rs` for the names) |
//! | `POST /shutdown` | from a loopback peer only (403 otherwise): 202, then the same drain as SIGTERM. Lets a Job's app end a classic (non-native) sidecar so the pod completes |

use std::convert::Infallible;
use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use gembok_certwatch::Reloadable;
use gembok_net::admin::MAX_CONNECTIONS;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::tls::TlsConfigs;

/// What `/ready` looks at, and how `/shutdown` reaches the main task.
#[derive(Debug)]
pub struct Health {
    /// Which data path new connections can take (kTLS or user space), as probed at start-up.
    pub data_path: String,
    pub certs: Reloadable<TlsConfigs>,
    pub expiry_margin: Duration,
    pub draining: AtomicBool,
    /// Cancelled by `POST /shutdown`.
    pub shutdown_requested: CancellationToken,
    /// What the last `/ready` answered, so that a change is logged once, not at every probe.
    pub last_answer: Mutex<Result<(), Unready>>,
}

/// Why `/ready` is 503.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unready {
    Draining,
    NoCertificate,
    Expiring {
        serial: String,
        left: Duration,
        margin: Duration,
    },
    Expired {
        serial: String,
    },
}

impl fmt::Display for Unready {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Draining => write!(f, "draining: shutting down"),
            Self::NoCertificate => write!(f, "no certificate loaded"),
            Self::Expiring {
                serial,
                left,
                margin,
            } => write!(
                f,
                "certificate {serial} expires in {}s, within the {}s margin",
                left.as_secs(),
                margin.as_secs()
            ),
            Self::Expired { serial } => write!(f, "certificate {serial} has expired"),
        }
    }
}

impl Health {
    /// `Ok` when the proxy can serve new connections, else why not. A change of answer is
    /// logged: a warning when the proxy turns unready for a reason of its own (no certificate,
    /// one expiring or expired), since the kubelet then takes the pod out of its Services.
    pub fn ready(&self) -> Result<(), Unready> {
        let answer = self.check();
        let mut last = self.last_answer.lock().unwrap_or_else(|e| e.into_inner());
        let same = match (&*last, &answer) {
            (Ok(()), Ok(())) => true,
            // The same certificate's time left is not news.
            (
                Err(Unready::Expiring { serial: a, .. }),
                Err(Unready::Expiring { serial: b, .. }),
            ) => a == b,
            (a, b) => a == b,
        };
        if !same {
            match &answer {
                Ok(()) => tracing::info!("ready again"),
                Err(Unready::Draining) => {} // the drain logs itself
                Err(why) => tracing::warn!(reason = %why, "not ready"),
            }
            *last = answer.clone();
        }
        answer
    }

    fn check(&self) -> Result<(), Unready> {
        if self.draining.load(Ordering::Acquire) {
            return Err(Unready::Draining);
        }
        let Some(certs) = self.certs.current() else {
            return Err(Unready::NoCertificate);
        };
        let leaf = &certs.material.leaf;
        let serial = || leaf.serial.clone();
        match leaf.not_after.duration_since(SystemTime::now()) {
            Ok(left) if left > self.expiry_margin => Ok(()),
            Ok(left) => Err(Unready::Expiring {
                serial: serial(),
                left,
                margin: self.expiry_margin,
            }),
            Err(_) => Err(Unready::Expired { serial: serial() }),
        }
    }
}

/// Serves the admin endpoints until `stop` is cancelled, at most
/// [`gembok_net::admin::MAX_CONNECTIONS`] connections at once.
pub async fn serve(
    listener: TcpListener,
    health: Arc<Health>,
    metrics: PrometheusHandle,
    stop: CancellationToken,
) {
    gembok_net::admin::serve(listener, MAX_CONNECTIONS, stop, move |client| {
        let (health, metrics) = (health.clone(), metrics.clone());
        hyper::service::service_fn(move |req| {
            let response = respond(&req, client, &health, &metrics);
            async move { Ok::<_, Infallible>(response) }
        })
    })
    .await;
}

fn respond(
    req: &Request<Incoming>,
    client: SocketAddr,
    health: &Health,
    metrics: &PrometheusHandle,
) -> Response<Full<Bytes>> {
    if req.uri().path() == "/shutdown" {
        return shutdown(req, client, health);
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "only GET\n".to_owned());
    }
    match req.uri().path() {
        "/live" => text(StatusCode::OK, "live\n".to_owned()),
        "/ready" => match health.ready() {
            Ok(()) => text(
                StatusCode::OK,
                format!("ready\ndata path: {}\n", health.data_path),
            ),
            Err(why) => text(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("not ready: {why}\n"),
            ),
        },
        "/metrics" => {
            let mut r = text(StatusCode::OK, metrics.render());
            r.headers_mut().insert(
                hyper::header::CONTENT_TYPE,
                hyper::header::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            r
        }
        _ => text(
            StatusCode::NOT_FOUND,
            "not found: try /live, /ready or /metrics\n".to_owned(),
        ),
    }
}

fn shutdown(req: &Request<Incoming>, client: SocketAddr, health: &Health) -> Response<Full<Bytes>> {
    if req.method() != Method::POST {
        return text(StatusCode::METHOD_NOT_ALLOWED, "only POST\n".to_owned());
    }
    // The admin port listens on the pod IP for probes and scraping; only the pod itself may stop
    // its sidecar.
    if !from_the_pod(client) {
        tracing::warn!(client = %client, "refused /shutdown from a non-loopback address");
        return text(
            StatusCode::FORBIDDEN,
            "shutdown is only accepted from loopback\n".to_owned(),
        );
    }
    tracing::info!(client = %client, "shutdown requested through the admin endpoint");
    health.shutdown_requested.cancel();
    text(StatusCode::ACCEPTED, "shutting down\n".to_owned())
}

/// Whether `client` is the pod itself: a loopback address, also as IPv4 mapped into IPv6, which
/// is how an IPv4 client reaches a dual-stack admin socket (`--admin [::]:15700`).
fn from_the_pod(client: SocketAddr) -> bool {
    client.ip().to_canonical().is_loopback()
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pod_is_loopback_in_either_family() {
        for pod in [
            "127.0.0.1:1",
            "127.9.9.9:1",
            "[::1]:1",
            "[::ffff:127.0.0.1]:1",
        ] {
            assert!(from_the_pod(pod.parse().unwrap()), "{pod}");
        }
        for outside in [
            "10.0.0.7:1",
            "[fd00::7]:1",
            "[::ffff:10.0.0.7]:1",
            "0.0.0.0:1",
        ] {
            assert!(!from_the_pod(outside.parse().unwrap()), "{outside}");
        }
    }
}
