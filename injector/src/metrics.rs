//! Every metric the injector exports, named once. Names are API: dashboards and alerts use them.

use std::time::Duration;

use metrics::{counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram};
use metrics_exporter_prometheus::{BuildError, Matcher, PrometheusBuilder, PrometheusHandle};
use tokio_util::sync::CancellationToken;

pub const PREFIX: &str = "gembok_injector_";
pub const REQUESTS: &str = "gembok_injector_requests_total";
pub const INJECTED: &str = "gembok_injector_injected_total";
pub const SKIPPED: &str = "gembok_injector_skipped_total";
pub const REJECTED: &str = "gembok_injector_rejected_total";
pub const ERRORS: &str = "gembok_injector_errors_total";
pub const DURATION: &str = "gembok_injector_request_duration_seconds";
pub const SANDBOX_INFO: &str = "gembok_injector_sandbox_info";

/// Admission reviews take well under a millisecond; the API server gives up after seconds.
const BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0,
];

/// How often [`upkeep`] drains the recorded histogram samples.
pub const UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// Folds the request durations recorded since the last pass into their buckets, every `every`
/// until `stop` is cancelled: the exporter keeps every raw sample until a render or an upkeep
/// pass, so an injector nobody scrapes would grow with every review (as the proxy's
/// `metrics::upkeep` explains and tests).
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

/// Installs the process-wide Prometheus recorder and describes the metrics.
pub fn install() -> Result<PrometheusHandle, BuildError> {
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Full(DURATION.to_owned()), BUCKETS)?
        .install_recorder()?;
    describe_counter!(
        REQUESTS,
        "HTTP requests to the webhook listener, by result."
    );
    describe_counter!(INJECTED, "Pods the sidecar was injected into.");
    describe_counter!(SKIPPED, "Pods left unchanged, by reason.");
    describe_counter!(
        REJECTED,
        "Pods refused, by reason (invalid_annotations, incompatible_pod, nothing_to_encrypt)."
    );
    describe_counter!(
        ERRORS,
        "Requests that could not be answered with a review, by kind."
    );
    describe_histogram!(
        DURATION,
        metrics::Unit::Seconds,
        "Time to answer a webhook request."
    );
    describe_gauge!(SANDBOX_INFO, gembok_net::sandbox::INFO_HELP);
    Ok(handle)
}

/// Records what the self-sandbox achieved (1, labelled), as the proxy's `gembok_sandbox_info`.
pub fn sandbox_info(achieved: gembok_net::sandbox::Achieved) {
    gauge!(SANDBOX_INFO, "landlock" => achieved.landlock, "seccomp" => achieved.seccomp).set(1.0);
}

/// One answered request: `result` is the review verdict or the HTTP error kind.
pub fn request(result: &'static str, took: Duration) {
    counter!(REQUESTS, "result" => result).increment(1);
    histogram!(DURATION).record(took.as_secs_f64());
}

pub fn injected() {
    counter!(INJECTED).increment(1);
}

pub fn skipped(reason: &'static str) {
    counter!(SKIPPED, "reason" => reason).increment(1);
}

pub fn rejected(reason: &'static str) {
    counter!(REJECTED, "reason" => reason).increment(1);
}

pub fn error(kind: &'static str) {
    counter!(ERRORS, "kind" => kind).increment(1);
}
