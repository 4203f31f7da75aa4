//! The plaintext admin listener: `GET /live` (the process answers), `GET /ready` (a valid
//! serving certificate is loaded and the process is not shutting down), `GET /metrics`
//! (Prometheus text format).

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::SystemTime;

use bytes::Bytes;
use gembok_net::admin::MAX_CONNECTIONS;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use metrics_exporter_prometheus::PrometheusHandle;
use rustls::ServerConfig;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::server::text;

/// What `/ready` looks at.
#[derive(Clone)]
pub struct Health {
    pub tls: gembok_certwatch::Reloadable<Arc<ServerConfig>>,
    pub draining: Arc<AtomicBool>,
}

impl Health {
    /// `Ok` when the webhook can serve, or the reason it cannot.
    pub fn ready(&self) -> Result<(), &'static str> {
        if self.draining.load(Ordering::SeqCst) {
            return Err("shutting down");
        }
        match self.tls.current() {
            None => Err("no valid serving certificate loaded"),
            Some(loaded) if loaded.material.leaf.not_after <= SystemTime::now() => {
                Err("serving certificate expired")
            }
            Some(_) => Ok(()),
        }
    }
}

/// Serves until `stop` is cancelled, at most [`gembok_net::admin::MAX_CONNECTIONS`]
/// connections at once.
pub async fn serve(
    listener: TcpListener,
    health: Health,
    prometheus: PrometheusHandle,
    stop: CancellationToken,
) {
    gembok_net::admin::serve(listener, MAX_CONNECTIONS, stop, move |_client| {
        let (health, prometheus) = (health.clone(), prometheus.clone());
        service_fn(move |req| {
            let response = respond(&req, &health, &prometheus);
            async move { Ok::<_, Infallible>(response) }
        })
    })
    .await;
}

fn respond(
    req: &Request<Incoming>,
    health: &Health,
    prometheus: &PrometheusHandle,
) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "use GET");
    }
    match req.uri().path() {
        "/live" => text(StatusCode::OK, "ok"),
        "/ready" => match health.ready() {
            Ok(()) => text(StatusCode::OK, "ready"),
            Err(reason) => text(StatusCode::SERVICE_UNAVAILABLE, reason),
        },
        "/metrics" => {
            let mut response = Response::new(Full::new(Bytes::from(prometheus.render())));
            response.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            response
        }
        _ => text(StatusCode::NOT_FOUND, "not found: /live, /ready, /metrics"),
    }
}
