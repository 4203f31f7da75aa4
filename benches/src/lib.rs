//! gembok-bench: measures the gembok-proxy sidecar pair against established TLS proxies
//! (haproxy, stunnel4, nginx, hitch) on loopback, with the same certificates and TLS policy,
//! and writes a markdown report with plots. The README maps each concept to its file.
//!
//! Module map:
//! - [`cli`], [`plan`]: modes and their sizes;
//! - [`run`]: one run (install, start, verify, interleaved repetitions, memory, syscalls);
//! - [`contender`]: config templates and start-up of each proxy; [`verify`]: the mTLS checks;
//! - [`scenario`]: bulk, connections, latency, memory, syscalls; [`client`], [`server`]: the
//!   load client and the echo/sink app; [`tlsconf`], [`pki`]: TLS settings and certificates;
//! - [`procs`], [`sys`]: child processes, cleanup, `/proc` CPU and RSS;
//! - [`facts`], [`install`]: machine facts, apt-get; [`netns`]: the run's network namespace and
//!   its TCP congestion control; [`steal`]: the hypervisor's steal time during each timed
//!   sample; [`report`], [`plot`], [`stats`]: output;
//! - [`profile`]: `--profile`, perf flamegraphs of gembok's sidecars under load.

#![forbid(unsafe_code)]

pub mod cli;
pub mod client;
pub mod contender;
pub mod facts;
pub mod install;
pub mod netns;
pub mod pki;
pub mod placement;
pub mod plan;
pub mod plot;
pub mod procs;
pub mod profile;
pub mod report;
pub mod run;
pub mod scenario;
pub mod server;
pub mod stats;
pub mod steal;
pub mod sys;
pub mod tlsconf;
pub mod verify;

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use crate::cli::{Command, Common};
use crate::contender::Kind;
use crate::plan::Plan;
use crate::run::Options;

/// What `main` should do after parsing.
pub fn execute(command: Command, argv: String) -> Result<()> {
    match command {
        Command::Serve { listen } => server::run(listen),
        Command::Report { from, report, out } => {
            let r = report::load(&from)?;
            let (out, report) = full_paths(out, report);
            report::write(&r, &report, &out)
        }
        Command::Full { common, report } => {
            let (out, report) = full_paths(common.out.clone(), report);
            measure("full", Plan::full(), common, &out, &report, argv, true)
        }
        Command::Quick { common, only } => {
            let out = common
                .out
                .clone()
                .unwrap_or_else(|| "target/gembok-bench/quick".into());
            let report = out.join("RESULTS.md");
            let plan = only.apply(Plan::quick());
            measure("quick", plan, common, &out, &report, argv, false)
        }
        Command::Smoke { common, only } => {
            let out = common
                .out
                .clone()
                .unwrap_or_else(|| "target/gembok-bench/smoke".into());
            let report = out.join("RESULTS.md");
            let plan = only.apply(Plan::smoke());
            measure("smoke", plan, common, &out, &report, argv, false)
        }
    }
}

/// Where a full run (or `report`, re-rendering one) writes its plots and report: the committed
/// `benches/results/` and `benches/RESULTS.md` by default; with `--out DIR` alone, both under
/// DIR, so that a run or a re-render elsewhere never overwrites the committed report.
fn full_paths(out: Option<PathBuf>, report: Option<PathBuf>) -> (PathBuf, PathBuf) {
    let default_report = match &out {
        None => PathBuf::from("benches/RESULTS.md"),
        Some(out) => out.join("RESULTS.md"),
    };
    (
        out.unwrap_or_else(|| "benches/results".into()),
        report.unwrap_or(default_report),
    )
}

fn measure(
    mode: &str,
    mut plan: Plan,
    c: Common,
    out: &Path,
    report: &Path,
    argv: String,
    full: bool,
) -> Result<()> {
    if let Some(r) = c.reps {
        plan.reps = r.max(1);
    }
    if let Some(r) = c.cps_rounds {
        plan.cps_rounds = r.max(1);
    }
    if !c.memory_steps.is_empty() {
        plan.memory_steps = c.memory_steps.clone();
    }
    let kinds: Vec<Kind> = if c.contenders.is_empty() {
        if mode == "smoke" {
            vec![Kind::parse("gembok-aws-lc-rs").expect("known id")]
        } else {
            Kind::ALL.to_vec()
        }
    } else {
        let mut kinds = Vec::new();
        let mut bad = Vec::new();
        for id in &c.contenders {
            match Kind::parse(id) {
                Some(k) => kinds.push(k),
                None => bad.push(id.clone()),
            }
        }
        if !bad.is_empty() {
            bail!(
                "unknown contender(s) {}; known: {}",
                bad.join(", "),
                Kind::ALL.map(Kind::id).join(", ")
            );
        }
        kinds
    };
    let mut kinds = kinds;
    kinds.extend(contender::set_variants(&c.variants)?);
    let gembok_bin = match c.gembok_bin {
        Some(p) => p,
        None => sibling("gembok-proxy")?,
    };
    if !gembok_bin.exists() {
        bail!(
            "{} not found: build it first (cargo build --release -p gembok-proxy) or pass --gembok-bin",
            gembok_bin.display()
        );
    }
    if full && !gembok_bin.to_string_lossy().contains("release") {
        eprintln!(
            "warning: {} does not look like a release build",
            gembok_bin.display()
        );
    }
    let opts = Options {
        mode: mode.into(),
        kinds,
        plan,
        gembok_bin,
        allow_install: !c.no_install,
        workers: c
            .workers
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())),
        strace_all: c.strace_all || full,
        profile: c.profile.clone(),
        command: argv,
    };
    // apt needs the host's network, and the facts read sysctls that only the host's namespace
    // has (tcp_available_ulp); then the main thread, before any other thread or child exists,
    // moves to the run's own namespace, which they all inherit.
    let installed = run::install(&opts);
    let mut facts = facts::collect(&opts.kinds, &opts.gembok_bin);
    let network = netns::enter(&c.congestion, opts.allow_install)?;
    eprintln!(
        "network: {} namespace, congestion control {} (host: {})",
        network.namespace, network.congestion, network.host_congestion
    );
    facts.network = Some(network);
    procs::install_cleanup_handlers();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    // Children are spawned from this (the main) thread only: their parent-death signal is tied
    // to the thread that forked them.
    let result = rt.block_on(async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            r = run::run(&opts, installed, facts) => r,
            _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
            _ = term.recv() => Err(anyhow::anyhow!("terminated")),
        }
    });
    procs::cleanup();
    rt.shutdown_timeout(std::time::Duration::from_millis(200));
    let results = result?;
    std::fs::create_dir_all(out).with_context(|| format!("create {}", out.display()))?;
    let json = out.join("results.json");
    std::fs::write(&json, serde_json::to_vec_pretty(&results)?)?;
    report::write(&results, report, out)?;
    eprintln!("wrote {} and {}", json.display(), report.display());
    Ok(())
}

/// A binary next to this one (same cargo profile directory).
fn sibling(name: &str) -> Result<PathBuf> {
    let exe = std::env::current_exe().context("locate gembok-bench")?;
    let dir = exe.parent().context("gembok-bench has no directory")?;
    // Integration tests run from target/<profile>/deps.
    let dir = if dir.ends_with("deps") {
        dir.parent().unwrap_or(dir)
    } else {
        dir
    };
    Ok(dir.join(name))
}

#[cfg(test)]
mod full_paths_tests {
    use super::full_paths;
    use std::path::PathBuf;

    fn p(s: &str) -> PathBuf {
        PathBuf::from(s)
    }

    #[test]
    fn by_default_a_full_run_writes_the_committed_report() {
        assert_eq!(
            full_paths(None, None),
            (p("benches/results"), p("benches/RESULTS.md"))
        );
    }

    #[test]
    fn a_full_run_elsewhere_keeps_its_report_beside_its_plots() {
        assert_eq!(
            full_paths(Some(p("runs/a")), None),
            (p("runs/a"), p("runs/a/RESULTS.md"))
        );
    }

    #[test]
    fn an_explicit_report_path_wins() {
        assert_eq!(
            full_paths(Some(p("runs/a")), Some(p("elsewhere/r.md"))),
            (p("runs/a"), p("elsewhere/r.md"))
        );
        assert_eq!(
            full_paths(None, Some(p("elsewhere/r.md"))),
            (p("benches/results"), p("elsewhere/r.md"))
        );
    }
}
