//! What every accept loop of both servers does with `accept`'s errors: skip those that concern
//! one connection, and back off on the others (out of file descriptors and the like) instead of
//! spinning on a listener that keeps failing.

use std::io;
use std::time::Duration;

/// Errors that concern one connection (it was reset before it was accepted), not the listener:
/// accept the next one at once.
pub fn is_per_connection(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionRefused
    )
}

/// The pause after a failed accept: 5 ms doubling to 1 s; reset by a successful accept.
#[derive(Debug)]
pub struct Backoff {
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self { next: Self::FIRST }
    }
}

impl Backoff {
    const FIRST: Duration = Duration::from_millis(5);
    const MAX: Duration = Duration::from_secs(1);

    /// How long to wait before accepting again; the next failure waits twice as long.
    pub fn pause(&mut self) -> Duration {
        let now = self.next;
        self.next = (self.next * 2).min(Self::MAX);
        now
    }

    /// After a successful accept.
    pub fn reset(&mut self) {
        self.next = Self::FIRST;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_backoff_doubles_to_a_second_and_starts_over_after_a_success() {
        let mut b = Backoff::default();
        let waits: Vec<u64> = (0..10).map(|_| b.pause().as_millis() as u64).collect();
        assert_eq!(waits, [5, 10, 20, 40, 80, 160, 320, 640, 1000, 1000]);
        b.reset();
        assert_eq!(b.pause(), Duration::from_millis(5));
    }

    #[test]
    fn only_a_refused_or_reset_connection_is_skipped_without_a_pause() {
        for kind in [
            io::ErrorKind::ConnectionAborted,
            io::ErrorKind::ConnectionReset,
            io::ErrorKind::ConnectionRefused,
        ] {
            assert!(is_per_connection(&kind.into()), "{kind:?}");
        }
        // EMFILE: the process is out of descriptors, and accepting again at once would spin.
        assert!(!is_per_connection(&io::Error::from_raw_os_error(
            libc::EMFILE
        )));
    }
}
