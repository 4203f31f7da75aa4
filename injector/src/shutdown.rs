//! Process signals: SIGTERM/SIGINT end the process (after draining; a second one at once),
//! SIGHUP forces a certificate reload.

use gembok_certwatch::ReloadHandle;
use tokio::signal::unix::{SignalKind, signal as unix_signal};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// SIGTERM and SIGINT by name, in the order they arrive; [`run`](crate::server::run) takes the
/// receiving end.
pub type Signals = mpsc::UnboundedReceiver<&'static str>;

/// Installs the SIGTERM and SIGINT handlers now (inside the runtime, before serving) and passes
/// on every one of those signals.
pub fn signals() -> Signals {
    let (tx, rx) = mpsc::unbounded_channel();
    let (Ok(mut term), Ok(mut int)) = (
        unix_signal(SignalKind::terminate()),
        unix_signal(SignalKind::interrupt()),
    ) else {
        warn!("cannot install signal handlers; stop with SIGKILL");
        return rx; // closed: `next` then never resolves
    };
    tokio::spawn(async move {
        loop {
            let name = tokio::select! {
                _ = term.recv() => "SIGTERM",
                _ = int.recv() => "SIGINT",
            };
            info!("{name} received");
            if tx.send(name).is_err() {
                return;
            }
        }
    });
    rx
}

/// The next signal; never resolves once no more can come.
pub async fn next(signals: &mut Signals) -> &'static str {
    match signals.recv().await {
        Some(name) => name,
        None => std::future::pending().await,
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
