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
pub mod usage;
pub mod verify;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::cli::{Command, Common, Only};
use crate::contender::{Kind, Variant};
use crate::plan::Plan;
use crate::run::Options;
use crate::usage::{Problems, Usage, label};

/// A command line whose values passed [`check`]: what [`execute`] does.
#[derive(Debug)]
pub enum Job {
    Serve(SocketAddr),
    /// Re-render the report and plots from `from`.
    Report {
        from: PathBuf,
        report: PathBuf,
        out: PathBuf,
        /// Output directories to create, each with the flag that named it.
        dirs: Vec<(String, PathBuf)>,
    },
    Measure(Box<Measure>),
}

/// A measuring run (`full`, `quick`, `smoke`), every value checked.
#[derive(Debug)]
pub struct Measure {
    pub mode: &'static str,
    pub plan: Plan,
    /// The built-in contenders; the variants follow them once registered.
    pub kinds: Vec<Kind>,
    pub variants: Vec<Variant>,
    pub gembok_bin: PathBuf,
    pub allow_install: bool,
    pub workers: usize,
    pub strace_all: bool,
    pub profile: Option<PathBuf>,
    pub congestion: String,
    pub out: PathBuf,
    pub report: PathBuf,
    /// Output directories to create before the run, each with the flag that named it.
    pub dirs: Vec<(String, PathBuf)>,
}

/// Checks every value of the command line at once (nothing is installed, started or created):
/// every problem found, each naming its flag, or what to do.
pub fn check(command: Command) -> Result<Job, Usage> {
    match command {
        Command::Serve { listen } => Ok(Job::Serve(listen)),
        Command::Report { from, report, out } => {
            let mut p = Problems::default();
            match std::fs::metadata(&from) {
                Ok(m) if m.is_file() => {}
                Ok(_) => p.push(format!("--from {}: is not a file", from.display())),
                Err(e) => p.push(format!("--from {}: {e}", from.display())),
            }
            let (out_given, report_given) = (out.is_some(), report.is_some());
            let (out, report) = full_paths(out, report);
            let dirs = output_dirs(&mut p, &out, out_given, Some((&report, report_given)), None);
            p.into_result(Job::Report {
                from,
                report,
                out,
                dirs,
            })
        }
        Command::Full { common, report } => {
            let report_given = report.is_some();
            let (out, report) = full_paths(common.out.clone(), report);
            measure_job(
                "full",
                Plan::full(),
                common,
                None,
                out,
                Some((report, report_given)),
            )
        }
        Command::Quick { common, only } => {
            let out = common
                .out
                .clone()
                .unwrap_or_else(|| "target/gembok-bench/quick".into());
            measure_job("quick", Plan::quick(), common, Some(only), out, None)
        }
        Command::Smoke { common, only } => {
            let out = common
                .out
                .clone()
                .unwrap_or_else(|| "target/gembok-bench/smoke".into());
            measure_job("smoke", Plan::smoke(), common, Some(only), out, None)
        }
    }
}

/// Checks the output directory, the `--report` file (when the mode has that flag) and
/// `--profile`: the directories to create, each with its flag.
fn output_dirs(
    p: &mut Problems,
    out: &Path,
    out_given: bool,
    report: Option<(&Path, bool)>,
    profile: Option<&Path>,
) -> Vec<(String, PathBuf)> {
    let out_label = label("--out", out_given);
    usage::out_dir(p, &out_label, out);
    let mut dirs = vec![(out_label, out.to_owned())];
    if let Some((report, given)) = report {
        let report_label = label("--report", given);
        usage::report_file(p, &report_label, report);
        if let Some(parent) = report.parent() {
            dirs.push((report_label, parent.to_owned()));
        }
    }
    if let Some(profile) = profile {
        usage::out_dir(p, "--profile", profile);
        dirs.push(("--profile".into(), profile.to_owned()));
    }
    dirs
}

fn measure_job(
    mode: &'static str,
    mut plan: Plan,
    c: Common,
    only: Option<Only>,
    out: PathBuf,
    report: Option<(PathBuf, bool)>,
) -> Result<Job, Usage> {
    let mut p = Problems::default();
    usage::at_least_one(&mut p, "--reps", c.reps.map(u64::from));
    usage::at_least_one(&mut p, "--cps-rounds", c.cps_rounds.map(u64::from));
    usage::memory_steps(&mut p, &c.memory_steps);
    usage::workers(&mut p, c.workers);
    if let Some(r) = c.reps {
        plan.reps = r;
    }
    if let Some(r) = c.cps_rounds {
        plan.cps_rounds = r;
    }
    if !c.memory_steps.is_empty() {
        plan.memory_steps = c.memory_steps.clone();
    }
    if let Some(only) = only {
        plan = only.apply(plan);
    }
    let mut kinds = usage::contenders(&mut p, &c.contenders);
    if c.contenders.is_empty() {
        kinds = if mode == "smoke" {
            vec![Kind::Gembok(contender::ProviderKind::AwsLcRs)]
        } else {
            Kind::ALL.to_vec()
        };
    }
    let variants = usage::variants(&mut p, &c.variants);
    let gembok_bin = match &c.gembok_bin {
        Some(path) => {
            usage::gembok_bin(&mut p, path, true);
            path.clone()
        }
        None => match sibling("gembok-proxy") {
            Ok(path) => {
                usage::gembok_bin(&mut p, &path, false);
                path
            }
            Err(e) => {
                p.push(format!("--gembok-bin: no default ({e:#}); pass one"));
                PathBuf::new()
            }
        },
    };
    usage::congestion(&mut p, &c.congestion);
    let report_path = report
        .as_ref()
        .map_or_else(|| out.join("RESULTS.md"), |(r, _)| r.clone());
    let dirs = output_dirs(
        &mut p,
        &out,
        c.out.is_some(),
        report.as_ref().map(|(r, given)| (r.as_path(), *given)),
        c.profile.as_deref(),
    );
    let full = mode == "full";
    p.into_result(Job::Measure(Box::new(Measure {
        mode,
        plan,
        kinds,
        variants,
        gembok_bin,
        allow_install: !c.no_install,
        workers: c
            .workers
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())),
        strace_all: c.strace_all || full,
        profile: c.profile,
        congestion: c.congestion,
        out,
        report: report_path,
        dirs,
    })))
}

/// Does a checked [`Job`]. An output directory that cannot be created is a [`Usage`] error
/// (found before anything is measured).
pub fn execute(job: Job, argv: String) -> Result<()> {
    match job {
        Job::Serve(listen) => server::run(listen),
        Job::Report {
            from,
            report,
            out,
            dirs,
        } => {
            usage::create_dirs(&dirs)?;
            let r = report::load(&from)?;
            report::write(&r, &report, &out).with_context(|| {
                format!(
                    "write {} and its plots in {}",
                    report.display(),
                    out.display()
                )
            })?;
            eprintln!(
                "wrote {} and the plots in {}",
                report.display(),
                out.display()
            );
            Ok(())
        }
        Job::Measure(m) => measure(*m, argv),
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

fn measure(m: Measure, argv: String) -> Result<()> {
    usage::create_dirs(&m.dirs)?;
    let full = m.mode == "full";
    let mut kinds = m.kinds;
    kinds.extend(contender::set_variants(m.variants)?);
    let gembok_bin = m.gembok_bin;
    if full && !gembok_bin.to_string_lossy().contains("release") {
        eprintln!(
            "warning: {} does not look like a release build",
            gembok_bin.display()
        );
    }
    let (out, report) = (m.out, m.report);
    let opts = Options {
        mode: m.mode.into(),
        kinds,
        plan: m.plan,
        gembok_bin,
        allow_install: m.allow_install,
        workers: m.workers,
        strace_all: m.strace_all,
        profile: m.profile,
        command: argv,
    };
    // apt needs the host's network, and the facts read sysctls that only the host's namespace
    // has (tcp_available_ulp); then the main thread, before any other thread or child exists,
    // moves to the run's own namespace, which they all inherit.
    let installed = run::install(&opts);
    let mut facts = facts::collect(&opts.kinds, &opts.gembok_bin);
    let network = netns::enter(&m.congestion, opts.allow_install)?;
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
    let json = out.join("results.json");
    std::fs::write(&json, serde_json::to_vec_pretty(&results)?)
        .with_context(|| format!("write {}", json.display()))?;
    report::write(&results, &report, &out).with_context(|| {
        format!(
            "write {} and its plots in {}",
            report.display(),
            out.display()
        )
    })?;
    eprintln!("wrote {} and {}", json.display(), report.display());
    if let Some(why) = failure(&results) {
        anyhow::bail!("{why}");
    }
    Ok(())
}

/// Why a run that wrote its results failed anyway: it measured nothing under test, or a
/// contender died during it (its figures are incomplete).
fn failure(results: &run::Results) -> Option<String> {
    if let Some(why) = nothing_under_test(results) {
        return Some(why);
    }
    let died: Vec<String> = results
        .contenders
        .iter()
        .filter(|c| c.status.starts_with(run::DIED))
        .map(|c| format!("{} {}", c.id, c.status))
        .collect();
    (!died.is_empty()).then(|| {
        format!(
            "the figures are incomplete: {} (see the report's contenders table)",
            died.join("; ")
        )
    })
}

/// Why a run measured nothing under test, if it did not: every contender was skipped and only
/// the direct baseline has figures (the run then fails, after writing what it has).
fn nothing_under_test(results: &run::Results) -> Option<String> {
    if results.samples.iter().any(|s| s.subject != "direct") {
        return None;
    }
    let why: Vec<String> = results
        .contenders
        .iter()
        .map(|c| format!("{}: {}", c.id, c.status.lines().next().unwrap_or_default()))
        .collect();
    Some(format!(
        "nothing under test was measured, only the direct baseline ({})",
        if why.is_empty() {
            "no contender".to_owned()
        } else {
            why.join("; ")
        }
    ))
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

#[cfg(test)]
mod check_tests {
    use clap::Parser as _;

    use super::{Job, check};
    use crate::cli::Cli;

    fn check_args(args: &[&str]) -> Result<Job, Vec<String>> {
        let cli = Cli::try_parse_from(std::iter::once("gembok-bench").chain(args.iter().copied()))
            .expect("clap reads it");
        check(cli.command).map_err(|u| u.0)
    }

    /// A full run checks its `--report` file before it measures (it wrote it after 21 minutes).
    #[test]
    fn a_full_run_checks_its_report_file_first() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a-file");
        std::fs::write(&file, "").unwrap();
        let report = file.join("RESULTS.md");
        let out = dir.path().join("out");
        let problems = check_args(&[
            "full",
            "--gembok-bin",
            "/bin/true",
            "--out",
            out.to_str().unwrap(),
            "--report",
            report.to_str().unwrap(),
        ])
        .unwrap_err();
        assert_eq!(
            problems,
            [format!(
                "--report {}: {} is not a directory",
                report.display(),
                file.display()
            )]
        );
        assert!(!out.exists(), "the check created --out");
        let Ok(Job::Measure(m)) = check_args(&[
            "full",
            "--gembok-bin",
            "/bin/true",
            "--out",
            out.to_str().unwrap(),
        ]) else {
            panic!("a good full command line was refused");
        };
        assert_eq!(m.report, out.join("RESULTS.md"));
        assert_eq!((m.plan.reps, m.strace_all), (5, true));
    }
}

#[cfg(test)]
mod failure_tests {

    use super::failure;
    use crate::run::{ContenderInfo, DIED, Results};
    use crate::scenario::{Sample, Topology};

    fn info(id: &str, status: &str) -> ContenderInfo {
        ContenderInfo {
            id: id.into(),
            tls_library: String::new(),
            status: status.into(),
            verdict: None,
            data_path: String::new(),
            idle_rss_out_kib: None,
            idle_rss_in_kib: None,
        }
    }

    fn results(contenders: Vec<ContenderInfo>, subjects: &[&str]) -> Results {
        Results {
            mode: "quick".into(),
            command: String::new(),
            started: String::new(),
            duration_secs: 0.0,
            plan: serde_json::Value::Null,
            facts: serde_json::Value::Null,
            nofile_limit: 0,
            contenders,
            samples: subjects
                .iter()
                .map(|s| Sample::new("latency", Topology::Pair, "64 B", s, 0, &[]))
                .collect(),
            errors: Vec::new(),
        }
    }

    #[test]
    fn a_run_fails_when_a_contender_died_even_if_others_were_measured() {
        let died = format!("{DIED}: its inbound process (pid 7) exited (signal: 9 (SIGKILL))");
        let r = results(
            vec![info("haproxy", &died), info("nginx", "measured")],
            &["direct", "haproxy", "nginx"],
        );
        let why = failure(&r).expect("the run must fail");
        assert!(
            why.starts_with("the figures are incomplete: haproxy died during the run"),
            "{why}"
        );
        let r = results(vec![info("nginx", "measured")], &["direct", "nginx"]);
        assert_eq!(failure(&r), None);
        let r = results(vec![info("nginx", "skipped: cannot start")], &["direct"]);
        assert!(
            failure(&r)
                .unwrap()
                .starts_with("nothing under test was measured")
        );
    }
}
