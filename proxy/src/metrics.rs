//! Every metric the proxy exports, named and described in one place.
//!
//! Names are part of Gembok's interface (dashboards and alerts in `manifests/` use them), so they
//! follow Prometheus conventions and do not change casually. Per-listener handles are resolved
//! once ([`ListenerMetrics::new`]) so the data path only touches atomics.

use std::sync::OnceLock;
use std::time::Duration;

use metrics::{Counter, Gauge, Histogram, Unit};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::Direction;
use crate::ktls::stream::KeyUpdates;
use crate::resolve::LookupCounters;
use tokio_util::sync::CancellationToken;

pub const CONNECTIONS_OPENED: &str = "gembok_connections_opened_total";
pub const CONNECTIONS_CLOSED: &str = "gembok_connections_closed_total";
pub const CONNECTIONS_ACTIVE: &str = "gembok_connections_active";
pub const BYTES: &str = "gembok_bytes_total";
pub const HANDSHAKE_DURATION: &str = "gembok_handshake_duration_seconds";
pub const HANDSHAKE_FAILURES: &str = "gembok_handshake_failures_total";
pub const HANDSHAKES: &str = "gembok_tls_handshakes_total";
pub const TRUNCATIONS: &str = "gembok_truncations_total";
pub const UPSTREAM_FAILURES: &str = "gembok_upstream_connect_failures_total";
pub const ACCEPT_ERRORS: &str = "gembok_accept_errors_total";
pub const BUILD_INFO: &str = "gembok_build_info";
pub const SANDBOX_INFO: &str = "gembok_sandbox_info";
pub const DATA_PATH: &str = "gembok_data_path_total";
pub const KTLS_FALLBACKS: &str = "gembok_ktls_fallbacks_total";
pub const KTLS_CLOSES: &str = "gembok_ktls_control_closes_total";
pub const KTLS_AVAILABLE: &str = "gembok_ktls_available";
pub const KTLS_REKEY_AVAILABLE: &str = "gembok_ktls_rekey_available";
pub const KTLS_KEY_UPDATES: &str = "gembok_ktls_key_updates_total";
pub const RECORD_KEY_UPDATES: &str = "gembok_record_key_updates_total";
pub const RECORD_CLOSES: &str = "gembok_record_control_closes_total";
pub const DNS_LOOKUPS: &str = "gembok_dns_lookups_total";
/// Certificate metrics come from `gembok-certwatch` under this prefix:
/// `gembok_cert_reloads_total{result}` and `gembok_cert_not_after_timestamp_seconds`.
pub const PREFIX: &str = "gembok_";

/// `reason` values of [`HANDSHAKE_FAILURES`] (see `tls::failure_reason`, plus the timeout and the
/// refusal before any certificate loaded).
pub const HANDSHAKE_FAILURE_REASONS: &[&str] = &[
    "no_client_cert",
    "unknown_ca",
    "san_not_allowed",
    "expired",
    "not_yet_valid",
    "bad_certificate",
    "name_mismatch",
    "revoked",
    "bad_crl",
    "protocol_version",
    "incompatible",
    "alpn",
    "peer_rejected",
    "malformed",
    "eof",
    "timeout",
    "no_certificate_loaded",
    "other",
];

/// `end` values of [`CONNECTIONS_CLOSED`].
pub const CLOSE_ENDS: &[&str] = &[
    "clean",
    "truncated",
    "reset",
    "idle_timeout",
    "aborted",
    "handshake_failed",
    "upstream_failed",
    "ktls_failed",
    "records_failed",
];

/// `reason` values of [`UPSTREAM_FAILURES`] (see `conn::ConnectError::reason`).
pub const UPSTREAM_FAILURE_REASONS: &[&str] = &["timeout", "resolve", "refused", "reset", "other"];

const HANDSHAKE_BUCKETS: &[f64] = &[
    0.000_25, 0.000_5, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Installs the process-wide Prometheus recorder (once) and returns the handle that renders it.
pub fn install() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let handle = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Full(HANDSHAKE_DURATION.to_owned()),
                    HANDSHAKE_BUCKETS,
                )
                .expect("bucket list is non-empty")
                .install_recorder()
                .expect("no other metrics recorder is installed in this process");
            describe();
            handle
        })
        .clone()
}

/// How often [`upkeep`] drains the recorded histogram samples.
pub const UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// Folds the histogram samples recorded since the last pass into their buckets, every `every`
/// until `stop` is cancelled. The exporter keeps every raw sample until a render or an upkeep
/// pass (16 bytes each): without this, a sidecar that nobody scrapes grows by one sample per
/// handshake for as long as it runs.
pub async fn upkeep(handle: PrometheusHandle, every: Duration, stop: CancellationToken) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => handle.run_upkeep(),
        }
    }
}

fn describe() {
    metrics::describe_counter!(
        CONNECTIONS_OPENED,
        "Connections accepted, by direction and listener."
    );
    // The label values of the pre-registered series are listed from the same constants, so a
    // new value cannot be left out of the help text.
    metrics::describe_counter!(
        CONNECTIONS_CLOSED,
        format!(
            "Connections finished, by direction, listener and how they ended ({}; aborted: cut at the end of the drain).",
            CLOSE_ENDS.join(", ")
        )
    );
    metrics::describe_gauge!(
        CONNECTIONS_ACTIVE,
        "Connections open now, by direction and listener."
    );
    metrics::describe_counter!(
        BYTES,
        Unit::Bytes,
        "Plaintext bytes forwarded, by direction, listener and flow (app_to_peer, peer_to_app)."
    );
    metrics::describe_histogram!(
        HANDSHAKE_DURATION,
        Unit::Seconds,
        "Successful TLS handshake duration, by direction and listener."
    );
    metrics::describe_counter!(
        HANDSHAKE_FAILURES,
        format!(
            "Failed TLS handshakes, by direction, listener and reason ({}). Outbound, peer_rejected also counts a certificate the server refused after the handshake (TLS 1.3 says so then; that handshake counted as done too).",
            HANDSHAKE_FAILURE_REASONS.join(", ")
        )
    );
    metrics::describe_counter!(
        HANDSHAKES,
        "Successful TLS handshakes, by direction, listener, protocol version, cipher suite, key exchange group and kind (full, resumed)."
    );
    metrics::describe_counter!(
        TRUNCATIONS,
        "Peer connections that ended without a TLS close_notify (the app side was reset), by direction and listener."
    );
    metrics::describe_counter!(
        UPSTREAM_FAILURES,
        format!(
            "Failed connects to the app (inbound) or the peer (outbound), by direction, listener and reason ({}).",
            UPSTREAM_FAILURE_REASONS.join(", ")
        )
    );
    metrics::describe_counter!(
        ACCEPT_ERRORS,
        "Errors accepting connections (e.g. EMFILE), by listener."
    );
    metrics::describe_gauge!(
        BUILD_INFO,
        "Always 1; labels carry the version, the crypto provider (key exchange, signatures), the aead library (records in user space; kTLS connections are protected by the kernel) and whether this is the FIPS build (then in FIPS mode)."
    );
    metrics::describe_counter!(
        DATA_PATH,
        "Connections by the data path they used after the handshake (ktls; records: gembok's user-space record layer; userspace: rustls), by direction and listener."
    );
    metrics::describe_counter!(
        KTLS_FALLBACKS,
        "Connections kTLS could not take, by direction, listener and reason (ulp, unsupported_cipher, partial_record, buffered_records, peer_closed, flush, extract_secrets, tls_tx, tls_rx, ...)."
    );
    metrics::describe_counter!(
        KTLS_CLOSES,
        "kTLS connections ended by a control record, a record the kernel could not open or a key limit, by direction, listener and reason (alert, bad_record_mac, bad_record, key_update, rekey_failed, malformed, unexpected_record, record_limit)."
    );
    metrics::describe_counter!(
        KTLS_KEY_UPDATES,
        "TLS 1.3 key updates the kernel took on kTLS connections, by direction, listener and key (receive: the peer's KeyUpdate followed; send: our own KeyUpdate)."
    );
    metrics::describe_counter!(
        RECORD_KEY_UPDATES,
        "TLS 1.3 key updates on connections gembok's record layer protects, by direction, listener and key (receive: the peer's KeyUpdate followed; send: our own KeyUpdate, asked for or at the record budget)."
    );
    metrics::describe_counter!(
        RECORD_CLOSES,
        "Connections gembok's record layer ended on what the peer sent or on the key budget, by direction, listener and reason (alert, bad_record_mac, bad_record, malformed, unexpected_record, key_update, record_limit)."
    );
    metrics::describe_counter!(
        DNS_LOOKUPS,
        "Lookups of outbound routes' host names, by listener and result (ok; failed: no address to use; stale: a refresh failed and the previous answer was used)."
    );
    metrics::describe_gauge!(SANDBOX_INFO, crate::sandbox::INFO_HELP);
    metrics::describe_gauge!(
        KTLS_AVAILABLE,
        "1 when the kernel data path (kTLS) is available to this process."
    );
    metrics::describe_gauge!(
        KTLS_REKEY_AVAILABLE,
        "1 when the kernel can follow TLS 1.3 KeyUpdates on kTLS connections (Linux 6.14 and later)."
    );
}

/// The lookup counters of one outbound listener, registered at zero.
pub fn dns_lookups(listener: &str) -> LookupCounters {
    let counter = |result: &'static str| {
        let c =
            metrics::counter!(DNS_LOOKUPS, "listener" => listener.to_owned(), "result" => result);
        c.increment(0);
        c
    };
    LookupCounters {
        ok: counter("ok"),
        failed: counter("failed"),
        stale: counter("stale"),
    }
}

/// Records the build-info gauge; `fips` is whether this is the FIPS build (in FIPS mode: it
/// does not start otherwise).
pub fn build_info(provider: &'static str, aead: &'static str, fips: bool) {
    metrics::gauge!(BUILD_INFO, "version" => env!("CARGO_PKG_VERSION"), "provider" => provider,
        "aead" => aead, "fips" => if fips { "true" } else { "false" })
    .set(1.0);
}

/// Records what the self-sandbox achieved (1, labelled).
pub fn sandbox_info(achieved: crate::sandbox::Achieved) {
    metrics::gauge!(SANDBOX_INFO, "landlock" => achieved.landlock, "seccomp" => achieved.seccomp)
        .set(1.0);
}

/// Records whether kTLS is available to this process, and whether its kernel follows
/// KeyUpdates.
pub fn ktls_available(available: bool, rekey: bool) {
    let flag = |b: bool| if b { 1.0 } else { 0.0 };
    metrics::gauge!(KTLS_AVAILABLE).set(flag(available));
    metrics::gauge!(KTLS_REKEY_AVAILABLE).set(flag(available && rekey));
}

/// Handles for one listener.
#[derive(Debug, Clone)]
pub struct ListenerMetrics {
    direction: &'static str,
    listener: String,
    pub opened: Counter,
    pub active: Gauge,
    pub app_to_peer: Counter,
    pub peer_to_app: Counter,
    pub handshake: Histogram,
    /// Key updates on kTLS connections.
    pub key_updates: KeyUpdates,
    /// Key updates on connections of gembok's record layer.
    pub record_key_updates: KeyUpdates,
}

impl ListenerMetrics {
    /// Resolves the data-path handles and registers every failure series at zero, so that
    /// alerts and `rate()` see a series before its first event.
    pub fn new(direction: Direction, listener: String) -> Self {
        let d = direction.as_str();
        let labels = [("direction", d.to_owned()), ("listener", listener.clone())];
        let with = |key: &'static str, value: &str| {
            let mut l = labels.to_vec();
            l.push((key, value.to_owned()));
            l
        };
        for reason in HANDSHAKE_FAILURE_REASONS {
            metrics::counter!(HANDSHAKE_FAILURES, &with("reason", reason)).increment(0);
        }
        for end in CLOSE_ENDS {
            metrics::counter!(CONNECTIONS_CLOSED, &with("end", end)).increment(0);
        }
        for reason in UPSTREAM_FAILURE_REASONS {
            metrics::counter!(UPSTREAM_FAILURES, &with("reason", reason)).increment(0);
        }
        metrics::counter!(TRUNCATIONS, &labels).increment(0);
        metrics::counter!(ACCEPT_ERRORS, "listener" => listener.clone()).increment(0);
        let flow = |f: &'static str| {
            let mut l = labels.to_vec();
            l.push(("flow", f.to_owned()));
            metrics::counter!(BYTES, &l)
        };
        Self {
            direction: d,
            opened: metrics::counter!(CONNECTIONS_OPENED, &labels),
            active: metrics::gauge!(CONNECTIONS_ACTIVE, &labels),
            app_to_peer: flow("app_to_peer"),
            peer_to_app: flow("peer_to_app"),
            handshake: metrics::histogram!(HANDSHAKE_DURATION, &labels),
            key_updates: KeyUpdates {
                rx: metrics::counter!(KTLS_KEY_UPDATES, &with("key", "receive")),
                tx: metrics::counter!(KTLS_KEY_UPDATES, &with("key", "send")),
            },
            record_key_updates: KeyUpdates {
                rx: metrics::counter!(RECORD_KEY_UPDATES, &with("key", "receive")),
                tx: metrics::counter!(RECORD_KEY_UPDATES, &with("key", "send")),
            },
            listener,
        }
    }

    pub fn listener(&self) -> &str {
        &self.listener
    }

    /// Whether these are an outbound listener's connections (we are the TLS client).
    pub fn is_outbound(&self) -> bool {
        self.direction == crate::Direction::Outbound.as_str()
    }

    pub fn handshake_failed(&self, reason: &'static str) {
        debug_assert!(
            HANDSHAKE_FAILURE_REASONS.contains(&reason),
            "{reason} is not in HANDSHAKE_FAILURE_REASONS"
        );
        metrics::counter!(HANDSHAKE_FAILURES, "direction" => self.direction, "listener" => self.listener.clone(), "reason" => reason)
            .increment(1);
    }

    pub fn handshake_ok(
        &self,
        version: &'static str,
        suite: &'static str,
        kx: &'static str,
        kind: &'static str,
    ) {
        metrics::counter!(HANDSHAKES, "direction" => self.direction, "listener" => self.listener.clone(),
            "version" => version, "suite" => suite, "kx" => kx, "kind" => kind)
        .increment(1);
    }

    pub fn upstream_failed(&self, reason: &'static str) {
        debug_assert!(
            UPSTREAM_FAILURE_REASONS.contains(&reason),
            "{reason} is not in UPSTREAM_FAILURE_REASONS"
        );
        metrics::counter!(UPSTREAM_FAILURES, "direction" => self.direction, "listener" => self.listener.clone(), "reason" => reason)
            .increment(1);
    }

    pub fn truncated(&self) {
        metrics::counter!(TRUNCATIONS, "direction" => self.direction, "listener" => self.listener.clone()).increment(1);
    }

    pub fn closed(&self, end: &'static str) {
        debug_assert!(CLOSE_ENDS.contains(&end), "{end} is not in CLOSE_ENDS");
        metrics::counter!(CONNECTIONS_CLOSED, "direction" => self.direction, "listener" => self.listener.clone(), "end" => end)
            .increment(1);
    }

    pub fn data_path(&self, path: &'static str) {
        metrics::counter!(DATA_PATH, "direction" => self.direction, "listener" => self.listener.clone(), "path" => path).increment(1);
    }

    pub fn ktls_fallback(&self, reason: &'static str) {
        metrics::counter!(KTLS_FALLBACKS, "direction" => self.direction, "listener" => self.listener.clone(), "reason" => reason)
            .increment(1);
    }

    pub fn ktls_closed(&self, reason: &'static str) {
        metrics::counter!(KTLS_CLOSES, "direction" => self.direction, "listener" => self.listener.clone(), "reason" => reason)
            .increment(1);
    }

    pub fn records_closed(&self, reason: &'static str) {
        metrics::counter!(RECORD_CLOSES, "direction" => self.direction, "listener" => self.listener.clone(), "reason" => reason)
            .increment(1);
    }

    pub fn accept_error(&self) {
        metrics::counter!(ACCEPT_ERRORS, "listener" => self.listener.clone()).increment(1);
    }
}
