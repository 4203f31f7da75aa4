//! One benchmark run: get the contenders, start the app and every contender once, verify
//! each, then measure. Timed scenarios go repetition by repetition and, inside one, variant by
//! variant over every subject in an order that changes every repetition ([`order`]), so drift
//! (thermal, noisy neighbours) hits all subjects alike. Then the latency variants under fixed CPU
//! placements, in repetitions of their own: a pinned thread stays where it was put after it is
//! let go, until the scheduler moves it, which may slow what runs next (see `placement`).
//! Memory and syscall counts come last: they leave connections and tracers behind that would
//! disturb timing.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::client::Target;
use crate::contender::{self, Env, Kind, Running};
use crate::facts::{self, Facts};
use crate::netns;
use crate::pki::Pki;
use crate::placement::{self, Placement};
use crate::plan::{Plan, Scenario};
use crate::procs::{self, Proc};
use crate::scenario::{Sample, Topology, bulk, cps, latency, memory, syscalls};
use crate::stats::quantile;
use crate::steal::{self, CpuTimes};
use crate::tlsconf::{self, ClientOpts};
use crate::verify::{self, Probes, Verdict};
use crate::{install, profile, sys};

const GIB: f64 = 1024.0 * 1024.0 * 1024.0;

#[derive(Debug, Clone)]
pub struct Options {
    pub mode: String,
    pub kinds: Vec<Kind>,
    pub plan: Plan,
    pub gembok_bin: PathBuf,
    pub allow_install: bool,
    pub workers: usize,
    /// Count syscalls of every pair contender, not only gembok's.
    pub strace_all: bool,
    /// Profile gembok's sidecars under load into this directory (see [`crate::profile`]).
    pub profile: Option<PathBuf>,
    pub command: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ContenderInfo {
    pub id: String,
    pub tls_library: String,
    /// `measured`, or why not.
    pub status: String,
    pub verdict: Option<serde_json::Value>,
    /// `userspace` or `ktls` (from /proc/net/tls_stat deltas during its bulk runs).
    pub data_path: String,
    pub idle_rss_out_kib: Option<u64>,
    pub idle_rss_in_kib: Option<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Results {
    pub mode: String,
    pub command: String,
    pub started: String,
    pub duration_secs: f64,
    pub plan: serde_json::Value,
    pub facts: serde_json::Value,
    pub nofile_limit: u64,
    pub contenders: Vec<ContenderInfo>,
    pub samples: Vec<Sample>,
    /// Measurements that failed (the run went on without them).
    pub errors: Vec<String>,
}

impl Results {
    pub fn facts(&self) -> Option<Facts> {
        serde_json::from_value(self.facts.clone()).ok()
    }

    /// How the connection scenario was sampled; `None` for a run from before `cps_rounds`.
    pub fn cps_sampling(&self) -> Option<CpsSampling> {
        serde_json::from_value(self.plan.clone()).ok()
    }
}

/// The part of a run's [`Plan`] that says what each connection figure is the median of.
#[derive(Debug, serde::Deserialize)]
pub struct CpsSampling {
    pub reps: u32,
    pub cps_rounds: u32,
    pub cps_duration: Duration,
}

/// A contender, or the direct baseline.
struct Subject {
    id: String,
    running: Option<Running>,
    ktls_seen: u64,
    /// Why the contender is no longer measured: one of its processes exited during the run
    /// (set by [`Subject::alive`]).
    dead: std::cell::OnceCell<String>,
}

impl Subject {
    fn new(id: String, running: Option<Running>) -> Subject {
        Subject {
            id,
            running,
            ktls_seen: 0,
            dead: std::cell::OnceCell::new(),
        }
    }

    /// Whether every process of the contender still runs, checked before measurement `next`.
    /// The first time one has exited, says which and how (on stderr and among the run's
    /// failures) and returns false from then on: its remaining measurements are skipped rather
    /// than run against a dead port.
    fn alive(&self, next: &str, rec: &mut Recorder) -> bool {
        if self.dead.get().is_some() {
            return false;
        }
        let Some(r) = &self.running else {
            return true;
        };
        let exited = r.outbound.iter().chain([&r.inbound]).find_map(|p| {
            procs::exited(p)
                .map(|status| format!("its {} process (pid {}) exited ({status})", p.name, p.pid))
        });
        let Some(exited) = exited else {
            return true;
        };
        let why = format!("{exited}, found before {next}; its remaining measurements were skipped");
        eprintln!("  {}: {why}", self.id);
        rec.errors.push(format!("{}: {why}", self.id));
        let _ = self.dead.set(why);
        false
    }

    fn topologies(&self) -> Vec<Topology> {
        match &self.running {
            None => vec![Topology::Direct],
            Some(r) if r.outbound.is_some() => vec![Topology::Pair, Topology::Inbound],
            Some(_) => vec![Topology::Inbound],
        }
    }

    fn target(
        &self,
        topo: Topology,
        app: std::net::SocketAddr,
        pki: &Pki,
        opts: ClientOpts,
    ) -> Result<Target> {
        Ok(match (topo, &self.running) {
            (Topology::Direct, _) | (_, None) => Target::plain(app),
            (Topology::Pair, Some(r)) => Target::plain(r.ports.out_main),
            (Topology::Inbound, Some(r)) => Target {
                addr: r.ports.inbound,
                tls: Some(tlsconf::client_config(pki, opts)?),
            },
        })
    }

    /// Pins the processes of `topo` for a fixed placement: the outbound on the client's CPU,
    /// the inbound and the app on the server's (the load client pins itself).
    fn pin(
        &self,
        topo: Topology,
        sides: placement::Sides,
        app: u32,
        cpus: &[usize],
    ) -> Result<placement::Pinned> {
        let mut procs = vec![(app, sides.server)];
        if let Some(r) = &self.running {
            procs.push((r.inbound.pid, sides.server));
            if let (Topology::Pair, Some(o)) = (topo, &r.outbound) {
                procs.push((o.pid, sides.client));
            }
        }
        placement::pin(&procs, cpus)
    }

    /// CPU seconds (outbound, inbound); zero for direct.
    fn cpu(&self) -> (f64, f64) {
        self.running.as_ref().map_or((0.0, 0.0), Running::cpu)
    }
}

struct Recorder {
    samples: Vec<Sample>,
    errors: Vec<String>,
    /// The machine's CPU times when the timed sample now running started ([`Recorder::start`]).
    started: Option<CpuTimes>,
}

impl Recorder {
    /// Marks the start of a timed sample: the next [`Recorder::add`] carries the share of the
    /// machine's CPU time stolen since (`steal_pct`).
    fn start(&mut self) {
        self.started = CpuTimes::now();
    }

    fn add(
        &mut self,
        scenario: &str,
        topology: Topology,
        variant: &str,
        subject: &str,
        rep: u32,
        metrics: &[(&str, f64)],
    ) {
        let steal = self
            .started
            .take()
            .zip(CpuTimes::now())
            .and_then(|(a, b)| b.steal_pct_since(&a));
        let mut sample = Sample::new(scenario, topology, variant, subject, rep, metrics);
        if let Some(pct) = steal {
            sample.metrics.insert(steal::METRIC.to_owned(), pct);
        }
        self.samples.push(sample);
    }

    fn fail(&mut self, what: String, e: anyhow::Error) {
        self.started = None;
        eprintln!("  FAILED {what}: {e:#}");
        self.errors.push(format!("{what}: {e:#}"));
    }
}

/// What the run needs from apt, got before it leaves the host's network namespace (its own
/// has no route out): each contender, strace (syscalls), perf (`--profile`), each available
/// or why not.
#[derive(Debug)]
pub struct Installed {
    contenders: Vec<(Kind, Result<(), String>)>,
    strace: Result<(), String>,
    perf: Result<(), String>,
}

/// Installs what the run will use and is missing (see [`Installed`]; iproute2, which only the
/// namespace needs, comes with [`netns::enter`]).
pub fn install(opts: &Options) -> Installed {
    let unused = || Err("not used in this run".to_owned());
    Installed {
        contenders: install::ensure(&opts.kinds, opts.allow_install),
        strace: if opts.plan.runs(Scenario::Syscalls) {
            install::ensure_strace(opts.allow_install)
        } else {
            unused()
        },
        perf: if opts.profile.is_some() {
            install::ensure_perf(opts.allow_install)
        } else {
            unused()
        },
    }
}

/// Measures, in the run's namespace. `facts` were collected in the host's (some of the
/// sysctls they read exist there only) and name the run's network.
pub async fn run(opts: &Options, installed: Installed, facts: Facts) -> Result<Results> {
    let started = std::time::SystemTime::now();
    let clock = std::time::Instant::now();
    let nofile = sys::raise_nofile(200_000);
    let mut infos: BTreeMap<Kind, ContenderInfo> = BTreeMap::new();
    let mut available = Vec::new();
    for (kind, r) in installed.contenders {
        match r {
            Ok(()) => available.push(kind),
            Err(why) => {
                eprintln!("skipping {}: {why}", kind.id());
                infos.insert(kind, info(kind, format!("skipped: {why}")));
            }
        }
    }
    // Single-stream bulk once more under the host's congestion control, if the run's differs.
    let host_congestion = facts.network.as_ref().and_then(|n| {
        n.host_differs()
            .filter(|_| opts.plan.bulk_under_host_congestion)
            .map(|host| CongestionSwitch {
                host: host.to_owned(),
                run: n.congestion.clone(),
            })
    });

    let work = tempfile::Builder::new().prefix("gembok-bench-").tempdir()?;
    let pki = Pki::generate(&work.path().join("pki"))?;
    let app = contender::free_port()?;
    let server = start_server(app, work.path())?;
    let cpus = placement::allowed()?;
    let probes = Probes::start(&pki).await?;
    let env = Env {
        pki: &pki,
        gembok_bin: &opts.gembok_bin,
        app,
        probe: probes.probe,
        rogue: probes.rogue,
        work: work.path(),
        workers: opts.workers,
        nofile,
    };

    let mut subjects = vec![Subject::new("direct".into(), None)];
    for kind in available {
        eprintln!("starting {}", kind.id());
        let running = match contender::start(kind, &env) {
            Ok(r) => {
                let out = r
                    .outbound
                    .as_ref()
                    .map(|o| format!("outbound pid {}, ", o.pid));
                eprintln!(
                    "started {}: {}inbound pid {}",
                    kind.id(),
                    out.unwrap_or_default(),
                    r.inbound.pid
                );
                r
            }
            Err(e) => {
                eprintln!("skipping {}: cannot start: {e:#}", kind.id());
                infos.insert(kind, info(kind, format!("skipped: cannot start: {e:#}")));
                continue;
            }
        };
        let verdict = verify::verify(&running, &pki, &probes).await;
        let mut i = info(kind, String::new());
        i.idle_rss_out_kib = running.idle_out.map(|r| r.total_kib);
        i.idle_rss_in_kib = Some(running.idle_in.total_kib);
        match verdict {
            Ok(v) if v.passed() => {
                i.status = "measured".into();
                i.verdict = serde_json::to_value(&v).ok();
                subjects.push(Subject::new(kind.id().into(), Some(running)));
            }
            Ok(v) => {
                eprintln!(
                    "skipping {}: mTLS verification failed: {}",
                    kind.id(),
                    v.failures()
                );
                i.status = format!("skipped: mTLS verification failed: {}", v.failures());
                i.verdict = serde_json::to_value(&v).ok();
                running.stop();
            }
            Err(e) => {
                i.status = format!("skipped: could not be verified: {e:#}");
                running.stop();
            }
        }
        infos.insert(kind, i);
    }

    let mut rec = Recorder {
        samples: Vec::new(),
        errors: Vec::new(),
        started: None,
    };
    let plan = &opts.plan;
    let scope = Scope {
        plan,
        host_congestion: host_congestion.as_ref(),
        app,
        server_pid: server.pid,
        cpus: &cpus,
        pki: &pki,
    };
    for rep in 0..plan.reps {
        eprintln!("repetition {}/{}", rep + 1, plan.reps);
        let order = order(subjects.len(), rep as usize);
        timed_rep(&mut subjects, &order, rep, &scope, &mut rec).await;
    }
    // After every timed repetition (see the module's comment).
    let placed = placed_variants(plan);
    if !placed.is_empty() {
        for rep in 0..plan.reps {
            eprintln!(
                "latency under fixed placements, repetition {}/{}",
                rep + 1,
                plan.reps
            );
            let order = order(subjects.len(), rep as usize);
            latency_rep(&subjects, &order, rep, &scope, &placed, &mut rec).await;
        }
    }

    if let Some(dir) = &opts.profile {
        profile_all(&subjects, plan, app, &pki, dir, installed.perf, &mut rec).await;
    }

    if plan.runs(Scenario::Memory) {
        eprintln!("memory");
        for s in subjects.iter().filter(|s| s.running.is_some()) {
            memory_sample(s, plan, nofile, app, &pki, &mut rec).await;
        }
    }
    if plan.runs(Scenario::Syscalls) {
        match installed.strace {
            Err(why) => rec.fail("syscalls".into(), anyhow::anyhow!(why)),
            Ok(()) => {
                eprintln!("syscalls");
                for s in subjects.iter().filter(|s| {
                    s.running.as_ref().is_some_and(|r| {
                        r.outbound.is_some() && (r.kind.is_gembok() || opts.strace_all)
                    })
                }) {
                    if !s.alive(&format!("syscalls {}", s.id), &mut rec) {
                        continue;
                    }
                    if let Err(e) = syscalls_sample(s, plan, work.path()).await.map(|m| {
                        let metrics: Vec<(&str, f64)> =
                            m.iter().map(|(k, v)| (k.as_str(), *v)).collect();
                        rec.add("syscalls", Topology::Pair, "1 stream", &s.id, 0, &metrics);
                    }) {
                        rec.fail(format!("syscalls {}", s.id), e);
                    }
                }
            }
        }
    }

    for s in &subjects {
        if let Some(r) = &s.running {
            // A process that exited during the last measurement is told too.
            s.alive("the end of the run", &mut rec);
            let paths = r.kind.is_gembok().then(|| contender::data_paths(&r.ports));
            r.stop();
            if let Some(i) = infos.get_mut(&r.kind) {
                if let Some(why) = s.dead.get() {
                    i.status = format!("{DIED}: {why}");
                }
                i.data_path = if facts.ktls_stats {
                    if s.ktls_seen > 0 {
                        "ktls".into()
                    } else {
                        "userspace".into()
                    }
                } else {
                    format!(
                        "userspace (no kTLS in this kernel: tcp_available_ulp = {})",
                        facts.tcp_available_ulp
                    )
                };
                // gembok says which layer carried its connections (records: its own).
                if let Some(paths) = paths.filter(|p| !p.is_empty()) {
                    let counts: Vec<String> =
                        paths.iter().map(|(p, n)| format!("{p} {n}")).collect();
                    i.data_path += &format!("; connections by path: {}", counts.join(", "));
                }
            }
        }
    }
    procs::stop(&server);

    Ok(Results {
        mode: opts.mode.clone(),
        command: opts.command.clone(),
        started: humantime::format_rfc3339_seconds(started).to_string(),
        duration_secs: clock.elapsed().as_secs_f64(),
        plan: serde_json::to_value(plan)?,
        facts: serde_json::to_value(&facts)?,
        nofile_limit: nofile,
        contenders: infos.into_values().collect(),
        samples: rec.samples,
        errors: rec.errors,
    })
}

/// How [`ContenderInfo::status`] starts for a contender one of whose processes exited during
/// the run.
pub const DIED: &str = "died during the run";

fn info(kind: Kind, status: String) -> ContenderInfo {
    ContenderInfo {
        id: kind.id().into(),
        tls_library: kind.tls_library(),
        status,
        verdict: None,
        data_path: "n/a".into(),
        idle_rss_out_kib: None,
        idle_rss_in_kib: None,
    }
}

fn start_server(app: std::net::SocketAddr, dir: &std::path::Path) -> Result<Proc> {
    let exe = std::env::current_exe().context("locate the gembok-bench binary")?;
    let mut cmd = procs::command(exe);
    cmd.arg("serve").arg("--listen").arg(app.to_string());
    let proc = procs::spawn("app", cmd, &dir.join("app.log"))?;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect_timeout(&app, Duration::from_millis(200)).is_err() {
        if procs::exited(&proc).is_some() || std::time::Instant::now() > deadline {
            procs::stop(&proc);
            anyhow::bail!(
                "the app server did not start: {}",
                procs::log_tail(&proc, 5)
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(proc)
}

/// The order of `n` subjects in repetition `rep`: forward, then backward, then both again
/// from the middle, and so on (a quarter further each time round), so that every subject runs
/// early in some repetitions and late in others. With two repetitions every subject's mean
/// slot is the same. (Rotating by one slot per repetition, as before, kept each subject in
/// nearly the same slot when there are fewer repetitions than subjects: with 8 subjects and 3
/// repetitions, a `--variant` always ran among the last three.)
fn order(n: usize, rep: usize) -> Vec<usize> {
    let round = rep / 2;
    let shift = (round * n.div_ceil(2) + (round / 2) * n.div_ceil(4)) % n.max(1);
    let forward = (0..n).map(|i| (i + shift) % n);
    if rep.is_multiple_of(2) {
        forward.collect()
    } else {
        forward.rev().collect()
    }
}

/// The label of single-stream bulk samples measured under congestion control `cc` besides the
/// run's own ("1 stream, bbr"), as results.json and the report name them.
pub fn single_stream_under(cc: &str) -> String {
    format!("1 stream, {cc}")
}

/// Single-stream bulk measured once more under the host's congestion control: switched to
/// `host` for those samples, then back to the run's.
struct CongestionSwitch {
    host: String,
    run: String,
}

/// What every timed repetition measures with.
#[derive(Clone, Copy)]
struct Scope<'a> {
    plan: &'a Plan,
    host_congestion: Option<&'a CongestionSwitch>,
    app: std::net::SocketAddr,
    /// The app's process, pinned with the inbound side under a fixed placement.
    server_pid: u32,
    /// The CPUs the harness may use.
    cpus: &'a [usize],
    pki: &'a Pki,
}

async fn timed_rep(
    subjects: &mut [Subject],
    order: &[usize],
    rep: u32,
    scope: &Scope<'_>,
    rec: &mut Recorder,
) {
    let Scope {
        plan,
        host_congestion,
        app,
        pki,
        ..
    } = *scope;
    // 1. Bulk; the single-stream variants again under the host's congestion control when the
    // run's namespace has another one ("1 stream, bbr").
    let base =
        |topo, variant: &str, streams, bytes| (topo, variant.to_owned(), streams, bytes, None);
    let mut bulk_variants: Vec<(Topology, String, usize, u64, Option<&str>)> = vec![
        base(Topology::Pair, "1 stream", 1, plan.bulk_one_stream_bytes),
        base(Topology::Pair, "4 streams", 4, plan.bulk_four_streams_bytes),
        base(Topology::Inbound, "1 stream", 1, plan.bulk_inbound_bytes),
        base(Topology::Direct, "1 stream", 1, plan.bulk_one_stream_bytes),
        base(
            Topology::Direct,
            "4 streams",
            4,
            plan.bulk_four_streams_bytes,
        ),
    ];
    if let Some(CongestionSwitch { host, .. }) = host_congestion {
        for (topo, bytes) in [
            (Topology::Pair, plan.bulk_one_stream_bytes),
            (Topology::Inbound, plan.bulk_inbound_bytes),
            (Topology::Direct, plan.bulk_one_stream_bytes),
        ] {
            bulk_variants.push((topo, single_stream_under(host), 1, bytes, Some(host)));
        }
    }
    bulk_variants.retain(|_| plan.runs(Scenario::Bulk));
    for (topo, variant, streams, bytes, congestion) in &bulk_variants {
        let (topo, streams, bytes) = (*topo, *streams, *bytes);
        if let Some(cc) = congestion
            && let Err(e) = netns::set_congestion(cc)
        {
            rec.fail(format!("bulk {variant}: switch to {cc}"), e);
            continue;
        }
        for &i in order {
            let s = &mut subjects[i];
            if !s.topologies().contains(&topo) {
                continue;
            }
            let what = format!("bulk {} {variant} {}", topo.as_str(), s.id);
            if !s.alive(&what, rec) {
                continue;
            }
            let target = match s.target(topo, app, pki, ClientOpts::FULL) {
                Ok(t) => t,
                Err(e) => {
                    rec.fail(what, e);
                    continue;
                }
            };
            let ktls0 = facts::ktls_connections();
            let (o0, i0) = s.cpu();
            rec.start();
            match bulk::run(&target, streams, bytes, plan.bulk_max).await {
                Ok(t) => {
                    let (o1, i1) = s.cpu();
                    if let (Some(a), Some(b)) = (ktls0, facts::ktls_connections()) {
                        s.ktls_seen += b.saturating_sub(a);
                    }
                    let gib = t.bytes as f64 / GIB;
                    let mut m = vec![
                        ("gbit_per_s", t.bytes as f64 * 8.0 / t.secs / 1e9),
                        ("bytes", t.bytes as f64),
                        ("secs", t.secs),
                    ];
                    if s.running.is_some() {
                        m.push(("cpu_s_per_gib", (o1 - o0 + i1 - i0) / gib));
                        m.push(("cpu_out_s_per_gib", (o1 - o0) / gib));
                        m.push(("cpu_in_s_per_gib", (i1 - i0) / gib));
                    }
                    eprintln!("  {what}: {:.2} Gbit/s", m[0].1);
                    rec.add("bulk", topo, variant, &s.id, rep, &m);
                }
                Err(e) => rec.fail(what, e),
            }
        }
        if congestion.is_some()
            && let Some(CongestionSwitch { run, .. }) = host_congestion
            && let Err(e) = netns::set_congestion(run)
        {
            rec.fail(format!("bulk {variant}: switch back to {run}"), e);
        }
    }

    // 2. New connections, in `cps_rounds` rounds (see `Plan::cps_rounds`).
    let cps_variants = [
        (Topology::Pair, "new connections", ClientOpts::FULL),
        (Topology::Inbound, "full handshake", ClientOpts::FULL),
        (Topology::Inbound, "resumed", ClientOpts::RESUMED),
        (Topology::Direct, "new connections", ClientOpts::FULL),
    ];
    let rounds = if plan.runs(Scenario::Connections) {
        plan.cps_rounds
    } else {
        0
    };
    for round in 0..rounds {
        let round_order = self::order(subjects.len(), (rep * rounds + round) as usize);
        for (topo, variant, copts) in cps_variants {
            for &i in &round_order {
                connections_sample(&subjects[i], topo, variant, copts, rep, scope, rec).await;
            }
        }
    }

    // 3. Latency, where the kernel places the processes.
    latency_rep(subjects, order, rep, scope, &shared_variants(plan), rec).await;
}

/// One connection-rate sample of subject `s`, with its sidecars' CPU per connection.
async fn connections_sample(
    s: &Subject,
    topo: Topology,
    variant: &str,
    copts: ClientOpts,
    rep: u32,
    scope: &Scope<'_>,
    rec: &mut Recorder,
) {
    if !s.topologies().contains(&topo) {
        return;
    }
    let what = format!("connections {} {variant} {}", topo.as_str(), s.id);
    if !s.alive(&what, rec) {
        return;
    }
    let target = match s.target(topo, scope.app, scope.pki, copts) {
        Ok(t) => t,
        Err(e) => return rec.fail(what, e),
    };
    let plan = scope.plan;
    let (o0, i0) = s.cpu();
    rec.start();
    match cps::run(&target, plan.cps_concurrency, plan.cps_duration).await {
        Ok(r) if r.ok > 0 => {
            let (o1, i1) = s.cpu();
            let n = r.ok as f64;
            let mut m = vec![
                ("conn_per_s", n / r.secs),
                ("failed", r.failed as f64),
                ("connect_p50_us", r.p50_us),
                ("connect_p99_us", r.p99_us),
            ];
            if s.running.is_some() {
                m.push(("cpu_ms_per_conn", (o1 - o0 + i1 - i0) * 1e3 / n));
                m.push(("cpu_out_ms_per_conn", (o1 - o0) * 1e3 / n));
                m.push(("cpu_in_ms_per_conn", (i1 - i0) * 1e3 / n));
            }
            eprintln!("  {what}: {:.0}/s ({} failed)", m[0].1, r.failed);
            rec.add("connections", topo, variant, &s.id, rep, &m);
        }
        Ok(r) => rec.fail(
            what,
            anyhow::anyhow!("no connection succeeded ({} failed)", r.failed),
        ),
        Err(e) => rec.fail(what, e),
    }
}

/// The latency variants measured where the kernel places the processes.
fn shared_variants(plan: &Plan) -> Vec<LatencyVariant> {
    let lat = |topo, name: String, size, rate| LatencyVariant {
        topo,
        name,
        size,
        rate,
        placement: Placement::Shared,
    };
    let mut v = Vec::new();
    for topo in [Topology::Pair, Topology::Inbound, Topology::Direct] {
        v.push(lat(topo, "64 B".into(), 64, None));
        v.push(lat(topo, "16 KiB".into(), 16 * 1024, None));
    }
    for &rate in &plan.latency_rates {
        for topo in [Topology::Pair, Topology::Direct] {
            v.push(lat(topo, format!("64 B at {rate}/s"), 64, Some(rate)));
        }
    }
    v.retain(|_| plan.runs(Scenario::Latency));
    v
}

/// The 64 B ping-pong under each of the plan's fixed placements ("64 B, one CPU").
fn placed_variants(plan: &Plan) -> Vec<LatencyVariant> {
    let mut v = Vec::new();
    for &placement in &plan.latency_placements {
        for topo in [Topology::Pair, Topology::Inbound, Topology::Direct] {
            v.push(LatencyVariant {
                topo,
                name: placement.variant_64b(),
                size: 64,
                rate: None,
                placement,
            });
        }
    }
    v.retain(|_| plan.runs(Scenario::Latency));
    v
}

/// One repetition of `variants`, each over every subject in `order`.
async fn latency_rep(
    subjects: &[Subject],
    order: &[usize],
    rep: u32,
    scope: &Scope<'_>,
    variants: &[LatencyVariant],
    rec: &mut Recorder,
) {
    let Scope {
        plan,
        app,
        server_pid,
        cpus,
        pki,
        ..
    } = *scope;
    for v in variants {
        let (topo, variant) = (v.topo, v.name.as_str());
        // A placement the machine cannot hold (a CPU per pod on one CPU) is skipped, as a
        // contender that cannot be installed is.
        let sides = match placement::sides(v.placement, cpus) {
            Ok(sides) => sides,
            Err(e) => {
                eprintln!("skipping latency {variant}: {e:#}");
                continue;
            }
        };
        for &i in order {
            let s = &subjects[i];
            if !s.topologies().contains(&topo) {
                continue;
            }
            let what = format!("latency {} {variant} {}", topo.as_str(), s.id);
            if !s.alive(&what, rec) {
                continue;
            }
            let target = match s.target(topo, app, pki, ClientOpts::FULL) {
                Ok(t) => t,
                Err(e) => {
                    rec.fail(what, e);
                    continue;
                }
            };
            let pinned = sides.map(|sides| s.pin(topo, sides, server_pid, cpus));
            let _pinned = match pinned.transpose() {
                Ok(p) => p,
                Err(e) => {
                    rec.fail(what, e);
                    continue;
                }
            };
            let (size, rate) = (v.size, v.rate);
            let n = if size > 64 {
                plan.latency_large_round_trips
            } else {
                plan.latency_small_round_trips
            };
            let (warmup, dur) = (plan.latency_warmup, plan.latency_rate_duration);
            let (client_cpu, restore) = (sides.map(|s| s.client), cpus.to_vec());
            rec.start();
            let r = tokio::task::spawn_blocking(move || {
                placement::on_cpu(client_cpu, &restore, || match rate {
                    None => latency::ping_pong(&target, size, n, warmup),
                    Some(rate) => latency::fixed_rate(&target, size, rate, dur),
                })
            })
            .await
            .map_err(anyhow::Error::from)
            .and_then(|r| r);
            match r {
                Ok(t) => {
                    let m = [
                        ("p50_us", quantile(&t, 0.5) / 1e3),
                        ("p90_us", quantile(&t, 0.9) / 1e3),
                        ("p99_us", quantile(&t, 0.99) / 1e3),
                        ("p999_us", quantile(&t, 0.999) / 1e3),
                        ("samples", t.len() as f64),
                    ];
                    eprintln!("  {what}: p50 {:.0} µs p99 {:.0} µs", m[0].1, m[2].1);
                    rec.add("latency", topo, variant, &s.id, rep, &m);
                }
                Err(e) => rec.fail(what, e),
            }
        }
    }
}

/// One latency measurement: a topology, a message size, ping-pong or a fixed rate, and where
/// the processes run.
struct LatencyVariant {
    topo: Topology,
    name: String,
    size: usize,
    rate: Option<u32>,
    placement: Placement,
}

/// `--profile`: the pair's single-stream bulk, connection and 64 B latency loads once more for
/// each gembok contender, under perf (see [`crate::profile`]); flamegraphs and `profile.md` go to `dir`.
async fn profile_all(
    subjects: &[Subject],
    plan: &Plan,
    app: std::net::SocketAddr,
    pki: &Pki,
    dir: &std::path::Path,
    perf: Result<(), String>,
    rec: &mut Recorder,
) {
    if let Err(why) = perf {
        rec.fail("profile".into(), anyhow::anyhow!(why));
        return;
    }
    if let Err(e) = std::fs::create_dir_all(dir) {
        rec.fail(format!("profile: create {}", dir.display()), e.into());
        return;
    }
    eprintln!("profile");
    let mut md = String::from(
        "# Where gembok's sidecars spend their CPU\n\n\
         Written by `gembok-bench --profile`: after the measured repetitions, each load ran once \
         more with `perf record -e cpu-clock --call-graph dwarf` attached to both sidecars \
         (figures under perf are lower than the measured ones). Shares are of both sidecars' \
         samples together, then split by sidecar (each side's column adds up to its share of \
         the whole). Kernel samples are grouped by the system call they ran in; softirq \
         is the loopback receiver's packet processing, which runs inside the sender's call.\n\n",
    );
    let pairs = subjects.iter().filter_map(|s| {
        let r = s.running.as_ref()?;
        let out = r.outbound.as_ref()?;
        let sides = [("outbound", out.pid), ("inbound", r.inbound.pid)];
        r.kind.is_gembok().then_some((s, sides))
    });
    for (s, sides) in pairs {
        for scenario in [Scenario::Bulk, Scenario::Connections, Scenario::Latency] {
            if !plan.runs(scenario) {
                continue;
            }
            let what = format!("profile {} pair {}", scenario.name(), s.id);
            if !s.alive(&what, rec) {
                continue;
            }
            match profile_one(s, scenario, &sides, plan, app, pki, dir).await {
                Ok(section) => {
                    eprintln!("  {what}: written");
                    md.push_str(&section);
                }
                Err(e) => rec.fail(what, e),
            }
        }
    }
    let path = dir.join("profile.md");
    if let Err(e) = std::fs::write(&path, md) {
        rec.fail(format!("profile: write {}", path.display()), e.into());
    }
}

async fn profile_one(
    s: &Subject,
    scenario: Scenario,
    sides: &[(&str, u32)],
    plan: &Plan,
    app: std::net::SocketAddr,
    pki: &Pki,
    dir: &std::path::Path,
) -> Result<String> {
    let target = s.target(Topology::Pair, app, pki, ClientOpts::FULL)?;
    let name = format!("{}-pair-{}", scenario.name(), s.id);
    let pids: Vec<u32> = sides.iter().map(|&(_, pid)| pid).collect();
    let recording = profile::Recording::start(&pids, dir.join(format!("{name}.perf.data")))?;
    // Long enough for a few hundred samples even at the smoke test's sizes.
    let duration = plan.cps_duration.max(Duration::from_secs(1));
    let (title, load) = if scenario == Scenario::Bulk {
        // Whole transfers of the measured size until the duration is over.
        let (bytes, max) = (plan.bulk_one_stream_bytes, plan.bulk_max);
        let load = async {
            let deadline = std::time::Instant::now() + duration;
            let (mut carried, mut secs) = (0, 0.0);
            while carried == 0 || std::time::Instant::now() < deadline {
                let t = bulk::run(&target, 1, bytes, max).await?;
                carried += t.bytes;
                secs += t.secs;
            }
            anyhow::Ok(format!(
                "{:.1} GiB on one stream, {:.2} Gbit/s",
                carried as f64 / GIB,
                carried as f64 * 8.0 / secs / 1e9
            ))
        }
        .await;
        ("One bulk stream", load)
    } else if scenario == Scenario::Connections {
        let load = cps::run(&target, plan.cps_concurrency, duration)
            .await
            .map(|r| format!("{:.0} connections/s", r.ok as f64 / r.secs));
        ("New connections", load)
    } else {
        let (n, warmup) = (plan.latency_small_round_trips, plan.latency_warmup);
        let load = tokio::task::spawn_blocking(move || {
            let deadline = std::time::Instant::now() + duration;
            let mut all = Vec::new();
            while all.is_empty() || std::time::Instant::now() < deadline {
                all.extend(latency::ping_pong(&target, 64, n, warmup)?);
            }
            all.sort_unstable();
            anyhow::Ok(all)
        })
        .await
        .map_err(anyhow::Error::from)
        .and_then(|r| r)
        .map(|t| {
            let p50 = quantile(&t, 0.5) / 1e3;
            format!("{} round trips of 64 B, p50 {p50:.0} µs", t.len())
        });
        ("64 B ping-pong", load)
    };
    // perf is stopped whether or not the load went through; `perf script` takes seconds.
    let per_side = tokio::task::spawn_blocking(move || recording.finish()).await?;
    let (load, per_side) = (load?, per_side?);
    let folded = profile::merge(&per_side);
    if folded.is_empty() {
        anyhow::bail!("perf recorded no samples");
    }
    let svg = dir.join(format!("{name}.svg"));
    profile::flamegraph(
        &folded,
        &format!("{title} through the pair: {}", s.id),
        &svg,
    )?;
    let summary = profile::Summary::from_folded(&folded);
    let per_side: Vec<profile::Summary> = per_side
        .iter()
        .map(|f| profile::Summary::from_folded(f))
        .collect();
    let named: Vec<(&str, &profile::Summary)> =
        sides.iter().map(|&(name, _)| name).zip(&per_side).collect();
    Ok(format!(
        "## {title} through the pair: {}\n\nUnder perf: {load}. Flamegraph: [{name}.svg]({name}.svg)\n\n{}\n",
        s.id,
        summary.markdown(&named, 15)
    ))
}

async fn memory_sample(
    s: &Subject,
    plan: &Plan,
    nofile: u64,
    app: std::net::SocketAddr,
    pki: &Pki,
    rec: &mut Recorder,
) {
    let Some(r) = &s.running else { return };
    if !s.alive(&format!("memory {}", s.id), rec) {
        return;
    }
    let topo = if r.outbound.is_some() {
        Topology::Pair
    } else {
        Topology::Inbound
    };
    let mut idle = vec![
        ("in_kib", r.idle_in.total_kib as f64),
        ("in_anon_kib", r.idle_in.anon_kib as f64),
    ];
    if let Some(out) = r.idle_out {
        idle.extend([
            ("out_kib", out.total_kib as f64),
            ("out_anon_kib", out.anon_kib as f64),
        ]);
    }
    rec.add("memory", topo, "idle", &s.id, 0, &idle);
    let what = format!("memory {}", s.id);
    let target = match s.target(topo, app, pki, ClientOpts::RESUMED) {
        Ok(t) => t,
        Err(e) => return rec.fail(what, e),
    };
    let rss = || {
        (
            r.outbound.as_ref().map(|o| procs::rss(o.pid).total_kib),
            procs::rss(r.inbound.pid).total_kib,
        )
    };
    let (out0, in0) = rss();
    // A sidecar holds two sockets per connection; stay under the open-file limit (which an
    // unprivileged or capability-less harness cannot raise) and say so in the variant name.
    let cap = (nofile.saturating_sub(256) / 2) as usize;
    let steps: Vec<usize> = plan.memory_steps.iter().map(|&n| n.min(cap)).collect();
    if steps != plan.memory_steps {
        eprintln!("  memory steps capped at {cap} connections by the open-file limit {nofile}");
    }
    match memory::run(&target, &steps, plan.memory_max, rss).await {
        Ok(steps) => {
            for st in steps {
                if st.held == 0 {
                    rec.fail(
                        format!("{what} {} connections", st.asked),
                        anyhow::anyhow!("no connection held"),
                    );
                    continue;
                }
                let n = st.held as f64;
                let mut m = vec![
                    ("held", n),
                    ("failed", st.failed as f64),
                    ("in_kib_per_conn", (st.in_kib as f64 - in0 as f64) / n),
                ];
                if let (Some(o), Some(o0)) = (st.out_kib, out0) {
                    m.push(("out_kib_per_conn", (o as f64 - o0 as f64) / n));
                }
                eprintln!("  {}", memory_line(&what, st.asked, &m));
                rec.add(
                    "memory",
                    topo,
                    &format!("{} connections", st.asked),
                    &s.id,
                    0,
                    &m,
                );
            }
        }
        Err(e) => rec.fail(what, e),
    }
}

/// A memory step's progress line: `memory haproxy, 1000 connections: held 1000, failed 0,
/// inbound 33.8 KiB/conn, outbound 30.1 KiB/conn`.
fn memory_line(what: &str, asked: usize, metrics: &[(&str, f64)]) -> String {
    let parts: Vec<String> = metrics
        .iter()
        .map(|&(k, v)| match k {
            "held" | "failed" => format!("{k} {v:.0}"),
            "in_kib_per_conn" => format!("inbound {v:.1} KiB/conn"),
            "out_kib_per_conn" => format!("outbound {v:.1} KiB/conn"),
            _ => format!("{k} {v}"),
        })
        .collect();
    format!("{what}, {asked} connections: {}", parts.join(", "))
}

async fn syscalls_sample(
    s: &Subject,
    plan: &Plan,
    dir: &std::path::Path,
) -> Result<BTreeMap<String, f64>> {
    let r = s.running.as_ref().context("no contender")?;
    let out = r.outbound.as_ref().context("no outbound side")?;
    let dir = dir.join(&s.id);
    std::fs::create_dir_all(&dir)?;
    let t_out = syscalls::attach("outbound", out.pid, &dir)?;
    let t_in = syscalls::attach("inbound", r.inbound.pid, &dir)?;
    let target = Target::plain(r.ports.out_main);
    let result = bulk::run(&target, 1, plan.syscalls_bytes, Duration::from_secs(60)).await;
    let c_out = t_out.finish()?;
    let c_in = t_in.finish()?;
    let t = result?;
    let gib = t.bytes as f64 / (1024.0 * 1024.0 * 1024.0);
    let mut m = BTreeMap::new();
    m.insert(
        "out_total_per_gib".to_owned(),
        c_out.values().sum::<u64>() as f64 / gib,
    );
    m.insert(
        "in_total_per_gib".to_owned(),
        c_in.values().sum::<u64>() as f64 / gib,
    );
    for (side, counts) in [("out", &c_out), ("in", &c_in)] {
        for (name, n) in counts {
            m.insert(format!("{side}:{name}"), *n as f64 / gib);
        }
    }
    eprintln!(
        "  syscalls {}: out {:.0}/GiB in {:.0}/GiB",
        s.id, m["out_total_per_gib"], m["in_total_per_gib"]
    );
    Ok(m)
}

/// Re-exported for the report: a verdict parsed back from JSON.
pub fn verdict(info: &ContenderInfo) -> Option<Verdict> {
    info.verdict
        .as_ref()
        .and_then(|v| serde_json::from_value(v.clone()).ok())
}

#[cfg(test)]
mod memory_line_tests {
    #[test]
    fn a_memory_step_reads_as_words_not_debug_output() {
        let m = [
            ("held", 1000.0),
            ("failed", 0.0),
            ("in_kib_per_conn", 33.84),
            ("out_kib_per_conn", 30.06),
        ];
        assert_eq!(
            super::memory_line("memory haproxy", 1000, &m),
            "memory haproxy, 1000 connections: held 1000, failed 0, inbound 33.8 KiB/conn, \
             outbound 30.1 KiB/conn"
        );
    }
}

#[cfg(test)]
mod order_tests {
    use super::order;

    fn slot(n: usize, rep: usize, subject: usize) -> usize {
        order(n, rep).iter().position(|&s| s == subject).unwrap()
    }

    #[test]
    fn every_repetition_runs_every_subject_once() {
        for n in 1..12 {
            for rep in 0..8 {
                let mut o = order(n, rep);
                o.sort_unstable();
                assert_eq!(o, (0..n).collect::<Vec<_>>(), "n {n} rep {rep}");
            }
        }
    }

    #[test]
    fn two_repetitions_give_every_subject_the_same_mean_slot() {
        for n in 1..12 {
            for s in 0..n {
                assert_eq!(slot(n, 0, s) + slot(n, 1, s), n - 1, "n {n} subject {s}");
            }
        }
    }

    #[test]
    fn in_three_repetitions_every_subject_runs_early_and_late() {
        let n = 8; // what a full run with one --variant has: direct, 6 contenders, the variant
        for s in 0..n {
            let slots: Vec<_> = (0..3).map(|rep| slot(n, rep, s)).collect();
            assert!(slots.iter().any(|&x| x < n / 2), "subject {s}: {slots:?}");
            assert!(slots.iter().any(|&x| x >= n / 2), "subject {s}: {slots:?}");
        }
    }
}
