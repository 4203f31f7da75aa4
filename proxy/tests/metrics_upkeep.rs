//! The Prometheus exporter keeps every histogram sample until a render or an upkeep pass. A
//! sidecar nobody scrapes must not grow with its handshakes: `metrics::upkeep` bounds it.
//!
//! Its own test binary: it measures this process's resident memory.

use std::time::Duration;

use gembok_proxy::metrics;
use tokio_util::sync::CancellationToken;

/// Resident set size of this process, in bytes.
fn rss() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

/// Records `n` handshake durations.
fn record(n: usize) {
    let histogram = ::metrics::histogram!(
        metrics::HANDSHAKE_DURATION,
        "direction" => "inbound",
        "listener" => "test"
    );
    for _ in 0..n {
        histogram.record(0.000_3);
    }
}

/// The clock is paused: each sleep below lets the upkeep task's next tick run first, so the test
/// does not depend on timing.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn unscraped_histogram_samples_do_not_accumulate() {
    let handle = metrics::install();
    record(10_000); // first-use allocations out of the way
    handle.run_upkeep();

    // With upkeep (measured first: memory freed by a pass is kept by the allocator and would
    // hide the growth of a measurement made after it).
    let stop = CancellationToken::new();
    let every = Duration::from_millis(5);
    tokio::spawn(metrics::upkeep(handle.clone(), every, stop.clone()));
    let before = rss();
    // At most one chunk (about 4 MB) is ever pending.
    for _ in 0..8 {
        record(250_000);
        tokio::time::sleep(every * 2).await;
    }
    let with = rss().saturating_sub(before);
    stop.cancel();
    tokio::task::yield_now().await;

    // Without: the same 2M samples, the yardstick (about 32 MB).
    let before = rss();
    record(2_000_000);
    let without = rss().saturating_sub(before);
    assert!(
        without > 16 << 20,
        "the exporter no longer keeps raw samples ({} KiB for 2M): this test measures nothing",
        without >> 10
    );
    assert!(
        with < without / 2,
        "2M samples with upkeep grew RSS by {} KiB (without: {} KiB)",
        with >> 10,
        without >> 10
    );
    // Every sample still counts.
    let rendered = handle.render();
    let count = rendered
        .lines()
        .find(|l| {
            l.starts_with("gembok_handshake_duration_seconds_count")
                && l.contains("listener=\"test\"")
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok());
    assert_eq!(count, Some(4_010_000.0), "{rendered}");
}
