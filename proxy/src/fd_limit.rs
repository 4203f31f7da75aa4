//! The open-file limit. Every proxied connection holds two descriptors (the accepted socket and
//! the one connected onward; four on the kTLS path, whose splice needs a pipe), and container
//! runtimes start processes with a soft limit of 1024 (containerd 2, Docker 25 and systemd's
//! default) under a hard limit hundreds of times higher. Left there, a sidecar would refuse work
//! at about 500 connections whatever `--max-connections` says. So the proxy raises its soft
//! limit to the hard one at start, as Go does for every program since 1.19, and says when even
//! the hard limit is below what its connection limits need.

use std::fmt;

use nix::sys::resource::{Resource, getrlimit, setrlimit};

/// Descriptors kept aside for everything that is not a proxied connection: the admin server's
/// connections (at most [`gembok_net::admin::MAX_CONNECTIONS`]), and 64 for the listeners, the
/// certificate watcher, the runtime's epoll and wake-up descriptors, DNS lookups and logs.
pub const RESERVE: u64 = gembok_net::admin::MAX_CONNECTIONS as u64 + 64;

/// The limit before and after [`raise`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    /// The soft limit the process started with.
    pub was: u64,
    /// The soft limit now (the hard limit, unless raising failed).
    pub now: u64,
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit.
pub fn raise() -> nix::Result<Limit> {
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard)?;
    }
    Ok(Limit {
        was: soft,
        now: soft.max(hard),
    })
}

/// What the connection limits can need at most: `max_connections` in each configured direction,
/// each with its sockets (and its splice pipe under kTLS), plus [`RESERVE`].
pub fn needed(max_connections: usize, directions: usize, ktls: bool) -> u64 {
    let per_connection = if ktls { 4 } else { 2 };
    (max_connections as u64)
        .saturating_mul(directions as u64)
        .saturating_mul(per_connection)
        .saturating_add(RESERVE)
}

/// How many connections in all a descriptor limit leaves room for.
pub fn connections_within(limit: u64, ktls: bool) -> u64 {
    limit.saturating_sub(RESERVE) / if ktls { 4 } else { 2 }
}

impl fmt::Display for Limit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.was == self.now {
            write!(f, "{}", self.now)
        } else {
            write!(f, "{} (raised from {})", self.now, self.was)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_need_counts_every_direction_and_the_pipe_under_ktls() {
        assert_eq!(needed(10_000, 2, false), 40_128);
        assert_eq!(needed(10_000, 1, true), 40_128);
        assert_eq!(needed(100, 1, false), 328);
        assert_eq!(needed(usize::MAX, 2, true), u64::MAX);
        assert_eq!(connections_within(1024, false), 448);
        assert_eq!(connections_within(1024, true), 224);
        assert_eq!(connections_within(10, false), 0);
    }

    #[test]
    fn a_raised_limit_says_where_it_came_from() {
        assert_eq!(
            Limit {
                was: 1024,
                now: 524_288
            }
            .to_string(),
            "524288 (raised from 1024)"
        );
        assert_eq!(Limit { was: 40, now: 40 }.to_string(), "40");
    }
}
