//! Where a route's host is: resolved at most once per `--dns-cache` period, not per connection.
//!
//! In a pod, `payment.ecommerce.svc.cluster.local` has fewer dots than the resolver's `ndots:5`,
//! so every lookup walks the search domains first (several queries and NXDOMAINs) before the
//! name itself; resolving on every connection put all of that on every connection's critical
//! path. Here the answer is reused for the cache period, and at most one lookup runs at a time
//! per route, in a task of its own, never under a lock a connection waits on:
//!
//! - with no answer yet, connections wait for that lookup (each bounded by its own connect
//!   timeout; the lookup goes on when they give up, and its answer serves the next ones);
//! - once the answer is older than the cache period, connections use it at once while one
//!   refresh runs in the background (stale-while-revalidate); with `--dns-cache 0` a connection
//!   waits for its refresh, but no longer than the patience its caller gives it;
//! - when a refresh fails, the last answer keeps serving, logged and counted, and the next
//!   refresh starts [`RETRY_AFTER`] later, not with every connection, so a silent DNS server
//!   costs one lookup at a time, not a lookup per connection.
//!
//! An IP literal is never looked up.

use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use metrics::Counter;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::conn::ConnectError;

/// After a refresh fails, how long the previous answer serves before another lookup starts.
pub const RETRY_AFTER: Duration = Duration::from_secs(1);

/// Counts of lookups by result (`gembok_dns_lookups_total`): one per lookup, however many
/// connections used its answer.
#[derive(Debug, Clone)]
pub struct LookupCounters {
    pub ok: Counter,
    /// A lookup failed with no previous answer to use.
    pub failed: Counter,
    /// A refresh failed and the previous answer was kept.
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

type Addrs = Arc<[SocketAddr]>;
/// What one lookup gave, shared by every connection waiting for it.
type Answer = Result<Addrs, Arc<ConnectError>>;
type LookupFuture = Pin<Box<dyn Future<Output = io::Result<Vec<SocketAddr>>> + Send>>;
type LookupFn = dyn Fn(&str, u16) -> LookupFuture + Send + Sync;

/// The addresses of one `HOST:PORT`.
pub struct Resolver {
    host: String,
    target: Target,
}

enum Target {
    /// `host` is an IP literal.
    Fixed(Addrs),
    Name(Arc<Name>),
}

struct Name {
    host: String,
    port: u16,
    cache_for: Duration,
    counters: LookupCounters,
    lookup: Box<LookupFn>,
    /// Never held across an `.await`.
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    entry: Option<Entry>,
    /// The lookup in flight, if any: its answer once it lands.
    running: Option<watch::Receiver<Option<Answer>>>,
    /// When the last refresh failed (the entry was kept); cleared by a successful lookup.
    failed_at: Option<Instant>,
}

#[derive(Debug)]
struct Entry {
    addrs: Addrs,
    resolved: Instant,
}

impl std::fmt::Debug for Resolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut d = f.debug_struct("Resolver");
        d.field("host", &self.host);
        match &self.target {
            Target::Fixed(addrs) => d.field("fixed", addrs),
            Target::Name(name) => d
                .field("port", &name.port)
                .field("cache_for", &name.cache_for),
        };
        d.finish()
    }
}

/// Longest one lookup may take; then it counts as failed (glibc's own limit is usually 5 s per
/// attempt and server). The system resolver's thread may go on, but the route no longer waits.
const LOOKUP_LIMIT: Duration = Duration::from_secs(30);

impl Resolver {
    /// `cache_for` of zero looks the name up for every connection.
    pub fn new(host: &str, port: u16, cache_for: Duration, counters: LookupCounters) -> Self {
        Self::with_lookup(host, port, cache_for, counters, |host, port| {
            let host = host.to_owned();
            Box::pin(async move {
                Ok(tokio::net::lookup_host((host.as_str(), port))
                    .await?
                    .collect())
            })
        })
    }

    /// As [`Resolver::new`], with `lookup` in place of the system resolver.
    pub(crate) fn with_lookup(
        host: &str,
        port: u16,
        cache_for: Duration,
        counters: LookupCounters,
        lookup: impl Fn(&str, u16) -> LookupFuture + Send + Sync + 'static,
    ) -> Self {
        // `[::1]`-style hosts arrive without brackets from the route parser.
        let target = match host.parse::<IpAddr>() {
            Ok(ip) => Target::Fixed(Arc::from([SocketAddr::new(ip, port)])),
            Err(_) => Target::Name(Arc::new(Name {
                host: host.to_owned(),
                port,
                cache_for,
                counters,
                lookup: Box::new(lookup),
                state: Mutex::default(),
            })),
        };
        Self {
            host: host.to_owned(),
            target,
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

    /// The addresses to try, in the order the system resolver gave them. An answer within the
    /// cache period, or an older one while its refresh runs, comes at once; with no answer yet
    /// this waits for the lookup. `patience` only matters with `--dns-cache 0`: how long to
    /// wait for a fresh answer before using the previous one.
    pub async fn addrs(&self, patience: Duration) -> Result<Addrs, ConnectError> {
        let name = match &self.target {
            Target::Fixed(addrs) => return Ok(addrs.clone()),
            Target::Name(name) => name,
        };
        let (previous, running) = {
            let mut state = name.state();
            let now = Instant::now();
            let previous = match &state.entry {
                Some(e) if now.duration_since(e.resolved) < name.cache_for => {
                    return Ok(e.addrs.clone());
                }
                Some(e) => Some(e.addrs.clone()),
                None => None,
            };
            let retry_due = state
                .failed_at
                .is_none_or(|failed| now.duration_since(failed) >= RETRY_AFTER);
            if state.running.is_none() && (previous.is_none() || retry_due) {
                state.running = Some(name.start());
            }
            // Stale-while-revalidate; and while DNS is known to be failing, even with
            // `--dns-cache 0`, no connection waits for it.
            if let Some(previous) = &previous
                && (name.cache_for > Duration::ZERO
                    || state.failed_at.is_some()
                    || state.running.is_none())
            {
                return Ok(previous.clone());
            }
            let running = state.running.clone();
            (
                previous,
                running.expect("a lookup runs when there is no answer to use"),
            )
        };
        let answer = match &previous {
            None => Name::answer(running).await,
            Some(_) => tokio::time::timeout(patience, Name::answer(running))
                .await
                .unwrap_or(None),
        };
        match (answer, previous) {
            (Some(Ok(addrs)), _) => Ok(addrs),
            (_, Some(previous)) => Ok(previous),
            (Some(Err(e)), None) => Err(name.copy(&e)),
            (None, None) => Err(ConnectError::Resolve(
                name.host.clone(),
                io::Error::other("the lookup was abandoned"),
            )),
        }
    }
}

impl Name {
    fn state(&self) -> MutexGuard<'_, State> {
        // Nothing panics while holding it; a poisoned lock still holds a consistent state.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts a lookup in a task of its own (so it completes, and its answer is kept, even when
    /// every connection waiting for it gave up).
    fn start(self: &Arc<Self>) -> watch::Receiver<Option<Answer>> {
        let (tx, rx) = watch::channel(None);
        let name = self.clone();
        let lookup = (self.lookup)(&self.host, self.port);
        tokio::spawn(async move {
            // A resolver that never answers must not hold the route's refreshes forever.
            let looked_up = tokio::time::timeout(LOOKUP_LIMIT, lookup)
                .await
                .unwrap_or_else(|_| {
                    Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("no answer within {}s", LOOKUP_LIMIT.as_secs()),
                    ))
                });
            let result = name.addrs(looked_up);
            let answer = name.settle(result);
            tx.send_replace(Some(answer));
        });
        rx
    }

    /// The answer of a running lookup; `None` if its task ended without one (runtime shutdown).
    async fn answer(mut running: watch::Receiver<Option<Answer>>) -> Option<Answer> {
        running
            .wait_for(Option::is_some)
            .await
            .ok()
            .and_then(|answer| answer.clone())
    }

    fn addrs(&self, looked_up: io::Result<Vec<SocketAddr>>) -> Result<Addrs, ConnectError> {
        let addrs = looked_up.map_err(|e| ConnectError::Resolve(self.host.clone(), e))?;
        if addrs.is_empty() {
            return Err(ConnectError::NoAddress(self.host.clone()));
        }
        Ok(addrs.into())
    }

    /// Records a lookup's result and counts it.
    fn settle(&self, result: Result<Addrs, ConnectError>) -> Answer {
        let mut state = self.state();
        state.running = None;
        match result {
            Ok(addrs) => {
                self.counters.ok.increment(1);
                state.entry = Some(Entry {
                    addrs: addrs.clone(),
                    resolved: Instant::now(),
                });
                state.failed_at = None;
                Ok(addrs)
            }
            Err(e) => {
                if state.entry.is_some() {
                    self.counters.stale.increment(1);
                    state.failed_at = Some(Instant::now());
                    tracing::warn!(host = %self.host, error = %e, retry_in = ?RETRY_AFTER,
                        "cannot refresh the peer's addresses; using the previous answer");
                } else {
                    self.counters.failed.increment(1);
                }
                Err(Arc::new(e))
            }
        }
    }

    /// A lookup's error for one more connection (`io::Error` cannot be cloned).
    fn copy(&self, e: &ConnectError) -> ConnectError {
        match e {
            ConnectError::Resolve(host, source) => ConnectError::Resolve(
                host.clone(),
                io::Error::new(source.kind(), source.to_string()),
            ),
            ConnectError::NoAddress(host) => ConnectError::NoAddress(host.clone()),
            other => ConnectError::Resolve(self.host.clone(), io::Error::other(other.to_string())),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::collections::VecDeque;
    use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

    use tokio::task::JoinSet;

    use super::*;

    /// A scripted reply: after how long, and what.
    type Reply = (Duration, io::Result<Vec<SocketAddr>>);

    /// A DNS server for tests: lookups take their replies from a script, in order, each after
    /// its delay (on tokio's clock); once the script is spent, lookups never answer (a server
    /// that drops every query).
    #[derive(Clone, Default)]
    pub(crate) struct FakeDns {
        script: Arc<Mutex<VecDeque<Reply>>>,
        calls: Arc<AtomicUsize>,
    }

    impl FakeDns {
        pub(crate) fn answer(&self, after: Duration, addrs: &[SocketAddr]) -> &Self {
            self.reply(after, Ok(addrs.to_vec()))
        }

        pub(crate) fn fail(&self, after: Duration) -> &Self {
            self.reply(after, Err(io::ErrorKind::TimedOut.into()))
        }

        fn reply(&self, after: Duration, reply: io::Result<Vec<SocketAddr>>) -> &Self {
            self.script.lock().unwrap().push_back((after, reply));
            self
        }

        /// Lookups asked so far.
        pub(crate) fn calls(&self) -> usize {
            self.calls.load(Ordering::SeqCst)
        }

        pub(crate) fn resolver(&self, host: &str, cache_for: Duration) -> (Resolver, Counts) {
            let counts = Counts::default();
            let dns = self.clone();
            let resolver =
                Resolver::with_lookup(host, 7, cache_for, counts.counters(), move |_, _| {
                    dns.calls.fetch_add(1, Ordering::SeqCst);
                    let next = dns.script.lock().unwrap().pop_front();
                    Box::pin(async move {
                        match next {
                            Some((after, reply)) => {
                                tokio::time::sleep(after).await;
                                reply
                            }
                            None => std::future::pending().await,
                        }
                    })
                });
            (resolver, counts)
        }
    }

    /// `gembok_dns_lookups_total` of one resolver.
    #[derive(Default)]
    pub(crate) struct Counts([Arc<AtomicU64>; 3]);

    impl Counts {
        fn counters(&self) -> LookupCounters {
            let [ok, failed, stale] = self.0.clone().map(Counter::from_arc);
            LookupCounters { ok, failed, stale }
        }

        /// (ok, failed, stale)
        pub(crate) fn get(&self) -> (u64, u64, u64) {
            let [ok, failed, stale] = &self.0;
            let get = |c: &AtomicU64| c.load(Ordering::SeqCst);
            (get(ok), get(failed), get(stale))
        }
    }

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    const PATIENCE: Duration = Duration::from_secs(2);

    #[tokio::test(start_paused = true)]
    async fn an_ip_literal_is_never_looked_up() {
        let dns = FakeDns::default();
        let (r, _) = dns.resolver("127.0.0.1", Duration::from_secs(5));
        assert_eq!(&*r.addrs(PATIENCE).await.unwrap(), &[addr("127.0.0.1:7")]);
        let (r, _) = dns.resolver("::1", Duration::ZERO);
        assert_eq!(&*r.addrs(PATIENCE).await.unwrap(), &[addr("[::1]:7")]);
        assert_eq!(dns.calls(), 0);
        let r = Resolver::fixed(addr("[::1]:1"));
        assert_eq!(&*r.addrs(PATIENCE).await.unwrap(), &[addr("[::1]:1")]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_name_is_resolved_once_per_period() {
        let dns = FakeDns::default();
        dns.answer(Duration::ZERO, &[addr("10.0.0.1:7")]);
        let (r, counts) = dns.resolver("peer", Duration::from_secs(60));
        let first = r.addrs(PATIENCE).await.unwrap();
        tokio::time::advance(Duration::from_secs(59)).await;
        let second = r.addrs(PATIENCE).await.unwrap();
        assert!(Arc::ptr_eq(&first, &second), "the cached answer is reused");
        assert_eq!((dns.calls(), counts.get()), (1, (1, 0, 0)));
    }

    /// A resolver that never answers: the lookup gives up after its limit, and the next one
    /// can start (the script's second reply answers it).
    #[tokio::test(start_paused = true)]
    async fn a_lookup_that_never_answers_gives_up_after_its_limit() {
        let dns = FakeDns::default();
        dns.answer(LOOKUP_LIMIT * 10, &[addr("10.0.0.1:7")]); // far beyond the limit
        dns.answer(Duration::ZERO, &[addr("10.0.0.2:7")]);
        let (r, counts) = dns.resolver("peer", Duration::from_secs(1));
        let began = Instant::now();
        let first = r.addrs(LOOKUP_LIMIT * 2).await;
        assert!(matches!(first, Err(ConnectError::Resolve(..))), "{first:?}");
        assert_eq!(began.elapsed(), LOOKUP_LIMIT);
        assert_eq!(counts.get(), (0, 1, 0));
        let second = r.addrs(PATIENCE).await.unwrap();
        assert_eq!(&*second, &[addr("10.0.0.2:7")]);
        assert_eq!(dns.calls(), 2);
    }

    /// The system resolver, for real: `localhost` is in /etc/hosts.
    #[tokio::test]
    async fn with_no_cache_period_every_call_looks_up() {
        let r = Resolver::new("localhost", 7, Duration::ZERO, LookupCounters::default());
        let first = r.addrs(PATIENCE).await.unwrap();
        assert!(first.iter().all(|a| a.ip().is_loopback() && a.port() == 7));
        let second = r.addrs(PATIENCE).await.unwrap();
        assert!(!Arc::ptr_eq(&first, &second));
    }

    /// The reviewer's case: the answer is older than the cache period and DNS has gone silent.
    /// Every connection gets the last answer at once, and one refresh runs, not one each.
    #[tokio::test(start_paused = true)]
    async fn a_stale_answer_serves_at_once_while_one_refresh_runs() {
        let dns = FakeDns::default();
        let a = [addr("10.0.0.1:7")];
        dns.answer(Duration::ZERO, &a); // then silence
        let (r, counts) = dns.resolver("peer", Duration::from_secs(1));
        assert_eq!(&*r.addrs(PATIENCE).await.unwrap(), &a);
        tokio::time::advance(Duration::from_secs(2)).await;
        let r = Arc::new(r);
        let began = Instant::now();
        let mut connections = JoinSet::new();
        for _ in 0..6 {
            let r = r.clone();
            connections.spawn(async move {
                tokio::time::timeout(Duration::from_secs(5), r.addrs(PATIENCE)).await
            });
        }
        while let Some(got) = connections.join_next().await {
            let got = got.unwrap().expect("served without waiting for DNS");
            assert_eq!(&*got.unwrap(), &a);
        }
        assert_eq!(began.elapsed(), Duration::ZERO);
        assert_eq!(dns.calls(), 2, "one refresh for all six");
        assert_eq!(counts.get(), (1, 0, 0));
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_refresh_keeps_the_answer_and_is_retried_after_a_delay() {
        let dns = FakeDns::default();
        let (a, b) = ([addr("10.0.0.1:7")], [addr("10.0.0.2:7")]);
        dns.answer(Duration::ZERO, &a)
            .fail(Duration::from_secs(3)) // a resolver's timeout
            .answer(Duration::ZERO, &b);
        let (r, counts) = dns.resolver("peer", Duration::from_secs(1));
        assert_eq!(&*r.addrs(PATIENCE).await.unwrap(), &a);
        tokio::time::advance(Duration::from_secs(2)).await;
        let began = Instant::now();
        assert_eq!(&*r.addrs(PATIENCE).await.unwrap(), &a);
        assert_eq!(
            began.elapsed(),
            Duration::ZERO,
            "not waiting for the refresh"
        );
        // The refresh fails 3 s later.
        tokio::time::sleep(Duration::from_millis(3001)).await;
        assert_eq!((dns.calls(), counts.get()), (2, (1, 0, 1)));
        // The old answer keeps serving, with no new lookup until RETRY_AFTER has passed.
        for _ in 0..3 {
            assert_eq!(&*r.addrs(PATIENCE).await.unwrap(), &a);
        }
        // (It failed 1 ms ago.)
        tokio::time::advance(RETRY_AFTER - Duration::from_millis(2)).await;
        assert_eq!(&*r.addrs(PATIENCE).await.unwrap(), &a);
        assert_eq!(dns.calls(), 2);
        tokio::time::advance(Duration::from_millis(1)).await;
        let began = Instant::now();
        assert_eq!(&*r.addrs(PATIENCE).await.unwrap(), &a);
        assert_eq!(began.elapsed(), Duration::ZERO);
        assert_eq!(dns.calls(), 3, "retried");
        // That refresh answers at once (in its own task); later connections get its answer.
        tokio::time::sleep(Duration::from_millis(1)).await;
        assert_eq!(&*r.addrs(PATIENCE).await.unwrap(), &b);
        assert_eq!((dns.calls(), counts.get()), (3, (2, 0, 1)));
    }

    /// With no answer at all, connections wait, for one lookup; its failure is counted once.
    /// The next connection tries again at once (there is nothing older to serve).
    #[tokio::test(start_paused = true)]
    async fn with_no_answer_connections_wait_for_one_lookup() {
        let dns = FakeDns::default();
        let a = [addr("10.0.0.1:7")];
        dns.fail(Duration::from_secs(1))
            .answer(Duration::from_secs(2), &a);
        let (r, counts) = dns.resolver("peer", Duration::from_secs(5));
        let r = Arc::new(r);
        let wait_all = |n| {
            let mut connections = JoinSet::new();
            for _ in 0..n {
                let r = r.clone();
                connections.spawn(async move { r.addrs(PATIENCE).await });
            }
            connections.join_all()
        };
        let began = Instant::now();
        for got in wait_all(3).await {
            assert!(matches!(got, Err(ConnectError::Resolve(h, e))
                if h == "peer" && e.kind() == io::ErrorKind::TimedOut));
        }
        assert_eq!(began.elapsed(), Duration::from_secs(1));
        assert_eq!((dns.calls(), counts.get()), (1, (0, 1, 0)));
        for got in wait_all(3).await {
            assert_eq!(&*got.unwrap(), &a);
        }
        assert_eq!(began.elapsed(), Duration::from_secs(3));
        assert_eq!((dns.calls(), counts.get()), (2, (1, 1, 0)));
    }

    /// A connection that gives up waiting (its connect timeout) leaves the lookup running; its
    /// answer serves the next connection at once.
    #[tokio::test(start_paused = true)]
    async fn a_lookup_outlives_the_connections_that_gave_up_on_it() {
        let dns = FakeDns::default();
        let a = [addr("10.0.0.1:7")];
        dns.answer(Duration::from_secs(4), &a);
        let (r, counts) = dns.resolver("peer", Duration::from_secs(5));
        let gave_up = tokio::time::timeout(Duration::from_secs(1), r.addrs(PATIENCE)).await;
        assert!(gave_up.is_err());
        tokio::time::sleep(Duration::from_secs(3)).await;
        let began = Instant::now();
        let got = tokio::time::timeout(Duration::from_secs(1), r.addrs(PATIENCE)).await;
        assert_eq!(&*got.expect("the lookup's answer, kept").unwrap(), &a);
        assert_eq!(began.elapsed(), Duration::ZERO);
        assert_eq!((dns.calls(), counts.get()), (1, (1, 0, 0)));
    }

    /// `--dns-cache 0`: a connection waits for its own lookup, but with an older answer to fall
    /// back on, for no longer than its patience; once a refresh failed, nobody waits until one
    /// succeeds again.
    #[tokio::test(start_paused = true)]
    async fn with_no_cache_period_a_connection_waits_for_a_fresh_answer_within_its_patience() {
        let dns = FakeDns::default();
        let (a, b) = ([addr("10.0.0.1:7")], [addr("10.0.0.2:7")]);
        dns.answer(Duration::ZERO, &a)
            .answer(Duration::from_millis(100), &b)
            .answer(Duration::from_secs(10), &a)
            .fail(Duration::ZERO);
        let (r, counts) = dns.resolver("peer", Duration::ZERO);
        assert_eq!(&*r.addrs(PATIENCE).await.unwrap(), &a);
        let began = Instant::now();
        assert_eq!(
            &*r.addrs(PATIENCE).await.unwrap(),
            &b,
            "waits for a fresh answer"
        );
        assert_eq!(began.elapsed(), Duration::from_millis(100));
        // A slow lookup: the previous answer once the patience is spent.
        let began = Instant::now();
        assert_eq!(&*r.addrs(PATIENCE).await.unwrap(), &b);
        assert_eq!(began.elapsed(), PATIENCE);
        // It lands, and the next lookup fails at once.
        tokio::time::sleep(Duration::from_millis(8001)).await;
        assert_eq!(&*r.addrs(PATIENCE).await.unwrap(), &a);
        assert_eq!((dns.calls(), counts.get()), (4, (3, 0, 1)));
        // DNS is failing now: the previous answer, at once, and no lookup before RETRY_AFTER.
        let began = Instant::now();
        assert_eq!(&*r.addrs(PATIENCE).await.unwrap(), &a);
        assert_eq!(began.elapsed(), Duration::ZERO);
        assert_eq!(dns.calls(), 4);
        tokio::time::advance(RETRY_AFTER).await;
        assert_eq!(&*r.addrs(PATIENCE).await.unwrap(), &a);
        assert_eq!(
            began.elapsed(),
            RETRY_AFTER,
            "served at once while the retry runs"
        );
        assert_eq!(dns.calls(), 5);
    }
}
