//! The signals that stop a Gembok server: SIGTERM (the kubelet) and SIGINT (an operator's
//! Ctrl-C), passed on by name in the order they arrive. The first starts the drain; a second
//! one cuts it short, so each server keeps taking them after the first.

use tokio::sync::mpsc;

/// The stop signals by name (`"SIGTERM"`, `"SIGINT"`). A server's `run` takes the receiving
/// end, so tests can feed one of their own.
pub type Signals = mpsc::UnboundedReceiver<&'static str>;

/// Installs the SIGTERM and SIGINT handlers now (call inside the runtime, before serving:
/// a signal that comes earlier kills the process, as it should before anything is served), and
/// passes on every one of those signals until the receiver is dropped.
pub fn stop_signals() -> std::io::Result<Signals> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let name = tokio::select! {
                _ = term.recv() => "SIGTERM",
                _ = int.recv() => "SIGINT",
            };
            if tx.send(name).is_err() {
                return;
            }
        }
    });
    Ok(rx)
}

/// The next signal; never resolves once no more can come.
pub async fn next(signals: &mut Signals) -> &'static str {
    match signals.recv().await {
        Some(name) => name,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn signals_arrive_in_order_and_a_closed_source_never_stops() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        tx.send("SIGTERM").unwrap();
        tx.send("SIGINT").unwrap();
        assert_eq!(next(&mut rx).await, "SIGTERM");
        assert_eq!(next(&mut rx).await, "SIGINT");
        drop(tx);
        let waited = tokio::time::timeout(Duration::from_millis(50), next(&mut rx)).await;
        assert!(waited.is_err(), "{waited:?}");
    }
}
