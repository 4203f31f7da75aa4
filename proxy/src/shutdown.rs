//! Shutdown: one cancellation token down, one task tracker up, one grace deadline.
//!
//! On SIGTERM (or SIGINT) the proxy turns `/ready` to 503, keeps accepting for the drain delay
//! if one is set, cancels the token so every accept loop stops and drops its listener (new
//! connections are refused), then waits for the tracked connection tasks until the drain grace
//! period ends, and returns so the process exits 0.
//!
//! Connections still open when the grace period ends are cut, and cut visibly: a second token
//! ([`Shutdown::abort`]) makes each one reset both its sockets, so neither the app nor the peer
//! mistakes the cut for a clean end of stream. A second signal cuts them at once: whoever sends
//! it (an operator's second Ctrl-C) does not want to wait out the grace period.

use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Handed to every accept loop and connection task.
#[derive(Debug, Clone, Default)]
pub struct Shutdown {
    /// Cancelled when the process should stop accepting.
    pub token: CancellationToken,
    /// Tracks accept loops and connection tasks, so the drain can wait for them.
    pub tracker: TaskTracker,
    /// Cancelled when the grace period is over: every connection still forwarding resets both
    /// sides. Each connection watches its own child token (an uncontended lock per wake-up).
    pub abort: CancellationToken,
}

/// How a drain ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Drained {
    /// Every connection finished within the grace period.
    Complete,
    /// The grace period ended with this many connections still open; they were reset.
    Expired { remaining: usize },
    /// Told to stop waiting with this many connections still open; they were reset.
    Cut { remaining: usize },
}

/// How long connections get, after the grace period, to reset their sockets before the process
/// exits anyway. Every step watches the abort (handshake, connect, forwarding), so this is only
/// a bound for a task that is slow to be polled.
const ABORT_WAIT: Duration = Duration::from_secs(2);

impl Shutdown {
    /// Stops accepting and waits up to `grace` for open connections to finish, or until `cut`
    /// resolves (with none open, the drain is complete even when `cut` is ready at once); then
    /// resets the ones left.
    pub async fn drain(&self, grace: Duration, cut: impl Future<Output = ()>) -> Drained {
        self.token.cancel();
        self.tracker.close();
        let expired = tokio::select! {
            biased;
            finished = tokio::time::timeout(grace, self.tracker.wait()) => match finished {
                Ok(()) => return Drained::Complete,
                Err(_) => true,
            },
            () = cut => false,
        };
        let remaining = self.tracker.len();
        self.abort.cancel();
        let _ = tokio::time::timeout(ABORT_WAIT, self.tracker.wait()).await;
        if expired {
            Drained::Expired { remaining }
        } else {
            Drained::Cut { remaining }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn drain_waits_for_tasks_but_not_past_the_grace_period() {
        let s = Shutdown::default();
        let token = s.token.clone();
        s.tracker.spawn(async move { token.cancelled().await });
        s.tracker.spawn(tokio::time::sleep(Duration::from_secs(5)));
        let never = std::future::pending::<()>;
        assert_eq!(
            s.drain(Duration::from_secs(10), never()).await,
            Drained::Complete
        );

        let s = Shutdown::default();
        s.tracker.spawn(tokio::time::sleep(Duration::from_secs(60)));
        assert_eq!(
            s.drain(Duration::from_secs(1), never()).await,
            Drained::Expired { remaining: 1 }
        );
        assert!(s.abort.is_cancelled(), "connections left are told to reset");

        // Within the grace period nobody is aborted.
        let s = Shutdown::default();
        s.tracker
            .spawn(tokio::time::sleep(Duration::from_millis(10)));
        assert_eq!(
            s.drain(Duration::from_secs(1), never()).await,
            Drained::Complete
        );
        assert!(!s.abort.is_cancelled());
    }

    #[tokio::test(start_paused = true)]
    async fn a_cut_ends_the_drain_before_its_grace_period() {
        let s = Shutdown::default();
        s.tracker.spawn(tokio::time::sleep(Duration::from_secs(60)));
        let started = tokio::time::Instant::now();
        let cut = tokio::time::sleep(Duration::from_secs(2));
        assert_eq!(
            s.drain(Duration::from_secs(30), cut).await,
            Drained::Cut { remaining: 1 }
        );
        assert!(s.abort.is_cancelled(), "connections left are told to reset");
        assert!(started.elapsed() < Duration::from_secs(30));

        // Nothing open: complete, though the cut came at once.
        let s = Shutdown::default();
        assert_eq!(
            s.drain(Duration::from_secs(30), async {}).await,
            Drained::Complete
        );
    }
}
