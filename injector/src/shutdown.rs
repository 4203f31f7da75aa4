//! Process signals: SIGTERM/SIGINT end the process (after draining), SIGHUP forces a
//! certificate reload.

use gembok_certwatch::ReloadHandle;
use tokio::signal::unix::{SignalKind, signal as unix_signal};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// Completes on the first SIGTERM or SIGINT.
pub async fn signal() {
    let (Ok(mut term), Ok(mut int)) = (
        unix_signal(SignalKind::terminate()),
        unix_signal(SignalKind::interrupt()),
    ) else {
        warn!("cannot install signal handlers; stop with SIGKILL");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => info!("SIGTERM received"),
        _ = int.recv() => info!("SIGINT received"),
    }
}

/// Forces a certificate reload on every SIGHUP until `stop`.
pub async fn reload_on_sighup(reload: ReloadHandle, stop: CancellationToken) {
    let Ok(mut hup) = unix_signal(SignalKind::hangup()) else {
        return;
    };
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            Some(()) = hup.recv() => {
                info!("SIGHUP received: reloading certificates");
                reload.reload_now();
            }
        }
    }
}
