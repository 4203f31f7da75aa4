//! Where a route's host is: resolved at most once per `--dns-cache` period, not per connection.
//!
//! In a pod, `payment.ecommerce.svc.cluster.local` has fewer dots than the resolver's `ndots:5`,
//! so every lookup walks the search domains first (several queries and NXDOMAINs) before the
//! name itself; resolving on every connection put all of that on every connection's critical
//! path. Here one lookup at a time runs per route (connections that arrive meanwhile wait for its
//! answer), the answer is reused for the cache period, and when a refresh fails the last answer
//! keeps serving, logged and counted, instead of failing every new connection while DNS is down.
//! An IP literal is never looked up.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use metrics::Counter;
use tokio::sync::Mutex;
use tokio::time::Instant;

use crate::conn::ConnectError;

/// Counts of lookups by result (`gembok_dns_lookups_total`).
#[derive(Debug, Clone)]
pub struct LookupCounters {
    pub ok: Counter,
    pub failed: Counter,
    /// A refresh failed and the previous answer was used.
    pub stale: Counter,
}

impl Default for LookupCounters {
    fn default() -> Self {
        Self {
            ok: Counter::noop(),
            failed: Counter::noop(),
            stale: Counter::noop(),
        }
    }
}

/// The addresses of one `HOST:PORT`.
#[derive(Debug)]
pub struct Resolver {
    host: String,
    port: u16,
    /// Set when `host` is an IP literal.
    fixed: Option<Arc<[SocketAddr]>>,
    cache_for: Duration,
    cache: Mutex<Option<Entry>>,
    counters: LookupCounters,
}

#[derive(Debug)]
struct Entry {
    addrs: Arc<[SocketAddr]>,
    resolved: Instant,
}

impl Resolver {
    /// `cache_for` of zero looks the name up for every connection.
    pub fn new(host: &str, port: u16, cache_for: Duration, counters: LookupCounters) -> Self {
        // `[::1]`-style hosts arrive without brackets from the route parser.
        let fixed = host
            .parse::<IpAddr>()
            .ok()
            .map(|ip| Arc::from([SocketAddr::new(ip, port)]));
        Self {
            host: host.to_owned(),
            port,
            fixed,
            cache_for,
            cache: Mutex::new(None),
            counters,
        }
    }

    /// For a known socket address (an inbound route's app): never looked up.
    pub fn fixed(addr: SocketAddr) -> Self {
        let ip = addr.ip().to_string();
        Self::new(&ip, addr.port(), Duration::ZERO, LookupCounters::default())
    }

    pub fn host(&self) -> &str {
        &self.host
    }

    /// The addresses to try, in the order the system resolver gave them.
    pub async fn addrs(&self) -> Result<Arc<[SocketAddr]>, ConnectError> {
        if let Some(fixed) = &self.fixed {
            return Ok(fixed.clone());
        }
        let mut cache = self.cache.lock().await;
        if let Some(entry) = cache.as_ref()
            && entry.resolved.elapsed() < self.cache_for
        {
            return Ok(entry.addrs.clone());
        }
        match self.lookup().await {
            Ok(addrs) => {
                self.counters.ok.increment(1);
                *cache = Some(Entry {
                    addrs: addrs.clone(),
                    resolved: Instant::now(),
                });
                Ok(addrs)
            }
            Err(e) => match cache.as_ref() {
                Some(previous) => {
                    self.counters.stale.increment(1);
                    tracing::warn!(host = %self.host, error = %e,
                        "cannot refresh the peer's addresses; using the previous answer");
                    Ok(previous.addrs.clone())
                }
                None => {
                    self.counters.failed.increment(1);
                    Err(e)
                }
            },
        }
    }

    async fn lookup(&self) -> Result<Arc<[SocketAddr]>, ConnectError> {
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host((self.host.as_str(), self.port))
            .await
            .map_err(|e| ConnectError::Resolve(self.host.clone(), e))?
            .collect();
        if addrs.is_empty() {
            return Err(ConnectError::NoAddress(self.host.clone()));
        }
        Ok(addrs.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_ip_literal_is_never_looked_up() {
        let r = Resolver::new(
            "127.0.0.1",
            8443,
            Duration::from_secs(5),
            LookupCounters::default(),
        );
        let addrs = r.addrs().await.unwrap();
        assert_eq!(&*addrs, &["127.0.0.1:8443".parse::<SocketAddr>().unwrap()]);
        assert!(r.cache.lock().await.is_none());
        let r = Resolver::new("::1", 1, Duration::ZERO, LookupCounters::default());
        assert_eq!(r.addrs().await.unwrap()[0], "[::1]:1".parse().unwrap());
    }

    #[tokio::test]
    async fn a_name_is_resolved_once_per_period() {
        let r = Resolver::new(
            "localhost",
            7,
            Duration::from_secs(60),
            LookupCounters::default(),
        );
        let first = r.addrs().await.unwrap();
        assert!(first.iter().all(|a| a.ip().is_loopback() && a.port() == 7));
        let stamp = r.cache.lock().await.as_ref().unwrap().resolved;
        let second = r.addrs().await.unwrap();
        assert!(Arc::ptr_eq(&first, &second), "the cached answer is reused");
        assert_eq!(r.cache.lock().await.as_ref().unwrap().resolved, stamp);
    }

    #[tokio::test]
    async fn with_no_cache_period_every_call_looks_up() {
        let r = Resolver::new("localhost", 7, Duration::ZERO, LookupCounters::default());
        let first = r.addrs().await.unwrap();
        let second = r.addrs().await.unwrap();
        assert!(!Arc::ptr_eq(&first, &second));
    }

    #[tokio::test]
    async fn a_failed_refresh_keeps_the_previous_answer() {
        // A name the system resolver refuses without asking a server, with a remembered answer.
        let r = Resolver::new(
            "no_such_host!",
            7,
            Duration::ZERO,
            LookupCounters::default(),
        );
        assert!(matches!(
            r.addrs().await,
            Err(ConnectError::Resolve(..) | ConnectError::NoAddress(_))
        ));
        let remembered: Arc<[SocketAddr]> = Arc::from(["10.0.0.7:7".parse().unwrap()]);
        *r.cache.lock().await = Some(Entry {
            addrs: remembered.clone(),
            resolved: Instant::now(),
        });
        let got = r.addrs().await.unwrap();
        assert!(Arc::ptr_eq(&got, &remembered));
    }
}
