//! The command line. Run from the repository root (paths default relative to it).

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::plan::Scenario;

/// Benchmarks gembok-proxy against haproxy, stunnel4, nginx and hitch on loopback.
#[derive(Debug, Parser)]
#[command(name = "gembok-bench", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// The full run: every contender, every scenario, 5 repetitions; writes
    /// benches/RESULTS.md and its plots (about 21 minutes on 2 cores).
    Full {
        #[command(flatten)]
        common: Common,
        /// Markdown report to write. Default: benches/RESULTS.md, or RESULTS.md in the
        /// `--out` directory when one is given (so that a run elsewhere never overwrites the
        /// committed report with links to its own plots).
        #[arg(long)]
        report: Option<PathBuf>,
    },
    /// One repetition at reduced sizes, for tuning.
    Quick {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        only: Only,
    },
    /// Every scenario at a tiny size against gembok only (no timing meaning): proves the
    /// harness works.
    Smoke {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        only: Only,
    },
    /// Re-renders the report and plots from an earlier run's results.json.
    Report {
        /// results.json of the run.
        #[arg(long)]
        from: PathBuf,
        /// Markdown report to write. Default: as `full` (benches/RESULTS.md, or RESULTS.md in
        /// the `--out` directory when one is given).
        #[arg(long)]
        report: Option<PathBuf>,
        /// Directory for the plots. Default: benches/results.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Internal: the echo/sink app server (started by the harness itself).
    #[command(hide = true)]
    Serve {
        #[arg(long)]
        listen: SocketAddr,
    },
}

#[derive(Debug, Args)]
pub struct Common {
    /// Directory for results.json and the plots.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Comma-separated contenders (gembok-aws-lc-rs, gembok-ring, gembok-x25519, haproxy,
    /// stunnel4, nginx, hitch). Default: all (smoke: gembok-aws-lc-rs).
    #[arg(long, value_delimiter = ',')]
    pub contenders: Vec<String>,
    /// The gembok-proxy binary. Default: next to this binary (target/<profile>/gembok-proxy).
    #[arg(long)]
    pub gembok_bin: Option<PathBuf>,
    /// Never run apt-get; skip contenders that are not installed.
    #[arg(long)]
    pub no_install: bool,
    /// Worker threads / processes for every contender. Default: the CPUs available.
    #[arg(long)]
    pub workers: Option<usize>,
    /// Repetitions of the timed scenarios (overrides the mode's default).
    #[arg(long)]
    pub reps: Option<u32>,
    /// Rounds of the connection scenario in each repetition (overrides the mode's: 2 in full,
    /// else 1), each round in an order of its own.
    #[arg(long)]
    pub cps_rounds: Option<u32>,
    /// Idle connection counts for the memory scenario (overrides the mode's), e.g. 1000,10000.
    #[arg(long, value_delimiter = ',')]
    pub memory_steps: Vec<usize>,
    /// Also measure a gembok build or flag set beside the others, interleaved:
    /// NAME=BINARY[,ARG...] (repeatable), reported as gembok-NAME.
    #[arg(long = "variant", value_name = "NAME=BINARY[,ARG...]")]
    pub variants: Vec<String>,
    /// Count syscalls for every pair contender, not just gembok (on by default in `full`).
    #[arg(long)]
    pub strace_all: bool,
    /// TCP congestion control of every socket in the run, set in a network namespace of the
    /// run's own (needs root; loopback only, every other setting as the host's). `host` stays in
    /// the host's namespace with its default. When the host's default differs, full and smoke
    /// runs also measure single-stream bulk under it.
    #[arg(long, default_value = "cubic", value_name = "NAME|host", value_parser = congestion_name)]
    pub congestion: String,
    /// After the measured repetitions, run the pair's connections and 64 B latency load once
    /// more for each gembok contender under `perf record`, and write flamegraphs and a summary
    /// of where the CPU went (profile.md) to this directory.
    #[arg(long, value_name = "DIR")]
    pub profile: Option<PathBuf>,
}

/// A subset of the scenarios (`quick` and `smoke`; `full` always runs every one, its report
/// needs them all).
#[derive(Debug, Args)]
pub struct Only {
    /// Only these scenarios (comma-separated), e.g. `connections` while profiling that one.
    /// Default: every one.
    #[arg(long, value_delimiter = ',')]
    pub scenarios: Vec<Scenario>,
}

impl Only {
    /// `plan`, restricted to these scenarios if any were named.
    pub fn apply(self, mut plan: crate::plan::Plan) -> crate::plan::Plan {
        if !self.scenarios.is_empty() {
            plan.scenarios = self.scenarios;
        }
        plan
    }
}

/// A congestion control's name as the kernel spells them (`cubic`, `bbr`, `reno`, ...).
fn congestion_name(s: &str) -> Result<String, String> {
    let ok = !s.is_empty()
        && s.len() < 16
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if ok {
        Ok(s.to_owned())
    } else {
        Err(format!(
            "`{s}` is not a congestion control name (e.g. cubic, bbr, reno) nor `host`"
        ))
    }
}
