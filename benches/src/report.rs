//! `results.json` → markdown (absolute figures, medians with min–max, ratios against the best
//! established contender and against direct, the targets) and SVG plots.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::Path;

use anyhow::Result;

use crate::contender::Kind;
use crate::placement::Placement;
use crate::plot::{self, Series};
use crate::run::{Results, verdict};
use crate::scenario::{Sample, Topology};
use crate::stats::Spread;
use crate::steal;

/// The gembok variant the targets are judged on (the default provider).
pub const GEMBOK: &str = "gembok-aws-lc-rs";

fn is_gembok(id: &str) -> bool {
    id.starts_with("gembok")
}

struct View<'a> {
    r: &'a Results,
}

impl View<'_> {
    fn spread(
        &self,
        scenario: &str,
        topo: Topology,
        variant: &str,
        subject: &str,
        metric: &str,
    ) -> Option<Spread> {
        let v: Vec<f64> = self
            .r
            .samples
            .iter()
            .filter(|s| {
                s.scenario == scenario
                    && s.topology == topo
                    && s.variant == variant
                    && s.subject == subject
            })
            .filter_map(|s| s.metrics.get(metric).copied())
            .collect();
        Spread::of(&v)
    }

    /// Subjects with at least one sample in (scenario, topology), in a stable order: gembok
    /// first, then the others, direct last.
    fn subjects(&self, scenario: &str, topo: Topology) -> Vec<String> {
        let mut set: BTreeSet<(u8, String)> = BTreeSet::new();
        for s in self
            .r
            .samples
            .iter()
            .filter(|s| s.scenario == scenario && s.topology == topo)
        {
            let rank = if is_gembok(&s.subject) {
                0
            } else if s.subject == "direct" {
                2
            } else {
                1
            };
            set.insert((rank, s.subject.clone()));
        }
        set.into_iter().map(|(_, s)| s).collect()
    }

    fn variants(&self, scenario: &str, topo: Topology) -> Vec<String> {
        let mut seen = Vec::new();
        for s in self
            .r
            .samples
            .iter()
            .filter(|s| s.scenario == scenario && s.topology == topo)
        {
            if !seen.contains(&s.variant) {
                seen.push(s.variant.clone());
            }
        }
        seen
    }

    /// What `subject` adds over direct in a latency `metric` under `variant` (pair or
    /// inbound-only topology `topo`).
    fn added(&self, topo: Topology, variant: &str, subject: &str, metric: &str) -> Option<Added> {
        let mine = self.spread("latency", topo, variant, subject, metric)?;
        let direct = self.spread("latency", Topology::Direct, variant, "direct", metric)?;
        Some(Added::of(mine, direct))
    }

    /// The established contender that adds the least, among those whose added figure is not
    /// noise (see [`Added`]).
    fn best_added(&self, topo: Topology, variant: &str, metric: &str) -> Option<(String, Added)> {
        self.subjects("latency", topo)
            .into_iter()
            .filter(|s| !is_gembok(s) && s != "direct")
            .filter_map(|s| {
                let a = self.added(topo, variant, &s, metric)?;
                (!a.is_noise()).then_some((s, a))
            })
            .reduce(|a, b| if b.1.value < a.1.value { b } else { a })
    }

    /// Per established pair contender, its worse side in memory `variant` (the larger median
    /// of the two `metrics`, one per side, times `scale`); the contender whose worse side is the
    /// smallest, with it.
    fn best_worse_side(
        &self,
        variant: &str,
        metrics: [&str; 2],
        scale: f64,
    ) -> Option<(String, f64)> {
        self.subjects("memory", Topology::Pair)
            .into_iter()
            .filter(|s| !is_gembok(s) && s != "direct")
            .filter_map(|s| {
                let worse = metrics
                    .iter()
                    .filter_map(|m| self.spread("memory", Topology::Pair, variant, &s, m))
                    .map(|x| x.median * scale)
                    .reduce(f64::max)?;
                Some((s, worse))
            })
            .reduce(|a, b| if b.1 < a.1 { b } else { a })
    }

    /// The best established (non-gembok, non-direct) contender's median.
    fn best(
        &self,
        scenario: &str,
        topo: Topology,
        variant: &str,
        metric: &str,
        higher_better: bool,
    ) -> Option<(String, f64)> {
        self.subjects(scenario, topo)
            .into_iter()
            .filter(|s| !is_gembok(s) && s != "direct")
            .filter_map(|s| {
                self.spread(scenario, topo, variant, &s, metric)
                    .map(|v| (s, v.median))
            })
            .reduce(|a, b| if (b.1 > a.1) == higher_better { b } else { a })
    }
}

/// What a subject adds over the direct baseline in a latency percentile: the difference of
/// two medians of independent samples. When it is below zero, or smaller than the spread of
/// direct's own samples (max − min), it says nothing about the proxy (direct's samples were
/// bimodal, or one repetition was slow): it is reported as noise and never wins "best".
#[derive(Debug, Clone, Copy)]
struct Added {
    value: f64,
    direct: Spread,
}

impl Added {
    fn of(subject: Spread, direct: Spread) -> Added {
        Added {
            value: subject.median - direct.median,
            direct,
        }
    }

    fn is_noise(&self) -> bool {
        self.value < 0.0 || self.direct.max - self.direct.min > self.value
    }

    /// The figure, or why there is none, in a few words for a table cell.
    fn cell(&self) -> String {
        if !self.is_noise() {
            fmt_num(self.value)
        } else if self.value < 0.0 {
            "< 0 (noise)".into()
        } else {
            "n/a (noise)".into()
        }
    }

    /// The figure, or why there is none with direct's spread, for the targets.
    fn text(&self) -> String {
        let spread = format!(
            "direct's samples spread {}–{}",
            fmt_num(self.direct.min),
            fmt_num(self.direct.max)
        );
        if !self.is_noise() {
            fmt_num(self.value)
        } else if self.value < 0.0 {
            format!("< 0 ({spread})")
        } else {
            format!("n/a ({} within {spread})", fmt_num(self.value))
        }
    }
}

/// Said wherever added latency is shown.
const ADDED_NOISE: &str = "An added figure is the subject's median minus direct's over \
     independent samples; where it is below zero or smaller than the spread (max − min) of \
     direct's own samples, it is shown as noise (\"< 0 (noise)\", \"n/a (noise)\"), since then it \
     tells nothing about the proxy (no proxy makes a round trip faster than none), and it is \
     never picked as the best established contender.";

fn fmt_num(v: f64) -> String {
    if !v.is_finite() {
        "–".into()
    } else if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

fn cell(s: Option<Spread>) -> String {
    cell_with(s, fmt_num)
}

/// A count (connections held, failed): whole numbers as such, a median between two as x.5.
fn fmt_count(v: f64) -> String {
    if !v.is_finite() {
        "–".into()
    } else if v.fract() == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

/// Metrics that count things rather than measure them.
const COUNTS: [&str; 3] = ["held", "failed", "samples"];

fn cell_with(s: Option<Spread>, fmt: fn(f64) -> String) -> String {
    match s {
        None => "–".into(),
        Some(s) if s.n > 1 => format!("{} ({}–{})", fmt(s.median), fmt(s.min), fmt(s.max)),
        Some(s) => fmt(s.median),
    }
}

fn ratio(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b != 0.0 => format!("{:.2}×", a / b),
        _ => "–".into(),
    }
}

/// Writes `report` (markdown) and the plots into `plots_dir` (linked relative to the report).
pub fn write(r: &Results, report: &Path, plots_dir: &Path) -> Result<()> {
    std::fs::create_dir_all(plots_dir)?;
    let v = View { r };
    let rel = pathdiff(report, plots_dir);
    let mut md = String::new();
    header(&v, &mut md);
    steal(&v, &mut md);
    targets(&v, &mut md);
    contenders(&v, &mut md);
    plots(&v, plots_dir, &rel, &mut md)?;
    tables(&v, &mut md);
    let tuning = report.with_file_name("tuning.md");
    if r.mode == "full"
        && let Ok(text) = std::fs::read_to_string(&tuning)
    {
        md.push_str("\n## What was tried to meet the targets\n\n");
        md.push_str("(From `benches/tuning.md`, kept by hand; ratios there come from the runs they name.)\n\n");
        md.push_str(&text);
    }
    if !r.errors.is_empty() {
        md.push_str("\n## Measurements that failed\n\n");
        for e in &r.errors {
            let _ = writeln!(md, "- {}", e.replace('\n', " "));
        }
    }
    std::fs::write(report, md)?;
    Ok(())
}

/// `plots_dir` relative to the report's directory (both given relative to the same base).
fn pathdiff(report: &Path, plots_dir: &Path) -> String {
    let base = report.parent().unwrap_or(Path::new(""));
    let rel = plots_dir
        .strip_prefix(base)
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| plots_dir.display().to_string());
    if rel.is_empty() { ".".into() } else { rel }
}

fn header(v: &View<'_>, md: &mut String) {
    let r = v.r;
    let _ = writeln!(md, "# gembok-bench results\n");
    let _ = writeln!(
        md,
        "Mode `{}`, started {}, {:.0} s. Regenerate with `{}` (see `benches/README.md`).\n",
        r.mode, r.started, r.duration_secs, r.command
    );
    md.push_str(
        "All traffic is on 127.0.0.1; the load client, the app, and both sidecars share the same CPUs, \
         so wall-clock figures are contention-bound. CPU seconds per GiB and per connection (from \
         `/proc/<pid>/stat`, every thread and worker process of each sidecar) are the figures that carry \
         to other machines. Medians of the repetitions, with min–max in parentheses.\n\n",
    );
    if let Some(f) = r.facts() {
        md.push_str("## Machine\n\n| | |\n|---|---|\n");
        let _ = writeln!(md, "| CPU | {} |", f.cpu);
        let _ = writeln!(
            md,
            "| CPU flags (crypto, copies) | {} |",
            f.cpu_flags.join(" ")
        );
        let _ = writeln!(
            md,
            "| cores / memory | {} / {:.1} GiB |",
            f.cores, f.memory_gib
        );
        let _ = writeln!(md, "| kernel | {} |", f.kernel);
        if !f.cpuidle.is_empty() {
            let _ = writeln!(md, "| cpuidle | {} |", f.cpuidle);
        }
        let _ = writeln!(
            md,
            "| kTLS | tcp_available_ulp = `{}`; /proc/net/tls_stat {} |",
            f.tcp_available_ulp,
            if f.ktls_stats {
                "present"
            } else {
                "absent (no kTLS)"
            }
        );
        if let Some(n) = &f.network {
            let _ = writeln!(
                md,
                "| network | {} namespace; TCP congestion control `{}` (the host's: `{}`) |",
                n.namespace, n.congestion, n.host_congestion
            );
        }
        let _ = writeln!(md, "| OpenSSL | {} |", f.openssl);
        for (k, ver) in &f.versions {
            let _ = writeln!(md, "| {k} | {ver} |");
        }
        let _ = writeln!(md, "| open-file limit | {} |", r.nofile_limit);
        md.push('\n');
    }
}

/// Steal time by repetition and scenario (see [`crate::steal`]), when the samples carry it.
fn steal(v: &View<'_>, md: &mut String) {
    const SCENARIOS: [&str; 3] = ["bulk", "connections", "latency"];
    let of = |rep: u32, scenario: &str| {
        let pct: Vec<f64> =
            v.r.samples
                .iter()
                .filter(|s| s.rep == rep && s.scenario == scenario)
                .filter_map(|s| s.metrics.get(steal::METRIC).copied())
                .collect();
        Spread::of(&pct)
    };
    let reps: BTreeSet<u32> =
        v.r.samples
            .iter()
            .filter(|s| s.metrics.contains_key(steal::METRIC))
            .map(|s| s.rep)
            .collect();
    if reps.is_empty() {
        return;
    }
    md.push_str(
        "## Steal time\n\nThe share of the machine's CPU time that the hypervisor gave to \
         other guests while the samples ran (`/proc/stat`), in percent: the median of a \
         repetition's samples, with the most any one of them saw. Time stolen from a sample \
         slows it for every subject measured then alike, and the interleaving spreads it over \
         all of them. It counts only the time the vCPUs did not run: a neighbour that shares \
         the physical core's caches or memory bandwidth slows a sample without showing here. \
         The latency scenario's fixed placements run in repetitions of their own, counted here \
         with the repetition of the same number.\n\n\
         | repetition | bulk | connections | latency |\n|---|---|---|---|\n",
    );
    for rep in reps {
        let cells: Vec<String> = SCENARIOS
            .iter()
            .map(|sc| {
                of(rep, sc).map_or("–".into(), |p| {
                    format!("{:.1} (max {:.1})", p.median, p.max)
                })
            })
            .collect();
        let _ = writeln!(md, "| {} | {} |", rep + 1, cells.join(" | "));
    }
    md.push('\n');
}

/// The host's congestion control and the label of the single-stream bulk samples measured
/// under it, when the run measured them besides its own.
fn host_congestion(v: &View<'_>) -> Option<(String, String)> {
    let network = v.r.facts()?.network?;
    let host = network.host_differs()?.to_owned();
    let label = crate::run::single_stream_under(&host);
    v.variants("bulk", Topology::Pair)
        .contains(&label)
        .then_some((host, label))
}

fn targets(v: &View<'_>, md: &mut String) {
    md.push_str(
        "## Targets (issue 5), judged on gembok with its defaults (aws-lc-rs, `--aead auto`, key exchange X25519MLKEM768)\n\n",
    );
    md.push_str("| target | gembok | best established contender | ratio | goal | met |\n|---|---|---|---|---|---|\n");
    // `subject`'s median against the best established contender's: both, whether the ratio
    // meets `goal`, and the ratio as text.
    let rel_of = |subject, scenario, topo, variant: &str, metric, higher: bool, goal: f64| {
        let g = v
            .spread(scenario, topo, variant, subject, metric)
            .map(|s| s.median);
        let best = v.best(scenario, topo, variant, metric, higher);
        let r = g.zip(best.as_ref().map(|b| b.1)).map(|(g, b)| g / b);
        let met = r.map(|r| if higher { r >= goal } else { r <= goal });
        (g, best, met, r.map_or("–".into(), |r| format!("{r:.2}×")))
    };
    let rel = |scenario, topo, variant: &str, metric, higher, goal| {
        rel_of(GEMBOK, scenario, topo, variant, metric, higher, goal)
    };
    let (g, b, m, t) = rel("bulk", Topology::Pair, "1 stream", "gbit_per_s", true, 2.0);
    num_row(
        md,
        "pair bulk throughput, 1 connection (Gbit/s)",
        g,
        b,
        "≥ 2×",
        m,
        t,
    );
    let (g, b, m, t) = rel(
        "bulk",
        Topology::Pair,
        "1 stream",
        "cpu_s_per_gib",
        false,
        0.5,
    );
    num_row(
        md,
        "CPU s/GiB, both sidecars (1 connection)",
        g,
        b,
        "≤ 0.5×",
        m,
        t,
    );
    if let Some((host, label)) = host_congestion(v) {
        let (g, b, _, t) = rel("bulk", Topology::Pair, &label, "gbit_per_s", true, 2.0);
        let name = format!("pair bulk throughput, 1 connection, under the host's {host} (Gbit/s)");
        num_row(md, &name, g, b, "(context)", None, t);
        let (g, b, _, t) = rel("bulk", Topology::Pair, &label, "cpu_s_per_gib", false, 0.5);
        let name = format!("CPU s/GiB, both sidecars, under the host's {host}");
        num_row(md, &name, g, b, "(context)", None, t);
    }
    let (g, b, m, t) = rel(
        "connections",
        Topology::Pair,
        "new connections",
        "conn_per_s",
        true,
        3.0,
    );
    num_row(
        md,
        "new mTLS connections/s through the pair",
        g,
        b,
        "≥ 3×",
        m,
        t,
    );
    let (g, b, _, t) = rel(
        "connections",
        Topology::Pair,
        "new connections",
        "cpu_ms_per_conn",
        false,
        1.0,
    );
    num_row(
        md,
        "CPU ms per new connection, both sidecars",
        g,
        b,
        "(context)",
        None,
        t,
    );
    // The same handshakes with the key exchange the established contenders negotiate.
    let like_theirs = |metric, higher| {
        let (g, b, _, t) = rel_of(
            Kind::GembokX25519.id(),
            "connections",
            Topology::Pair,
            "new connections",
            metric,
            higher,
            1.0,
        );
        (g, b, t)
    };
    let (g, b, t) = like_theirs("conn_per_s", true);
    if g.is_some() {
        num_row(
            md,
            "new mTLS connections/s through the pair, gembok with `--key-exchange X25519` (the contenders' key exchange; gembok-x25519)",
            g,
            b,
            "(context)",
            None,
            t,
        );
        let (g, b, t) = like_theirs("cpu_ms_per_conn", false);
        num_row(
            md,
            "CPU ms per new connection, both sidecars, with `--key-exchange X25519`",
            g,
            b,
            "(context)",
            None,
            t,
        );
    }
    // Judged where the kernel placed the processes; the fixed placements are context: they
    // show what the proxies add once wake-ups across idle CPUs are off the path.
    let mut noise = false;
    let mut latency_rows = Vec::new();
    for placement in [Placement::Shared, Placement::OneCpu, Placement::PerPod] {
        let variant = placement.variant_64b();
        for (p, goal) in [("p50_us", 40.0), ("p99_us", 100.0)] {
            let added = v.added(Topology::Pair, &variant, GEMBOK, p);
            let best = v.best_added(Topology::Pair, &variant, p);
            let pct = &p[..p.len() - 3];
            let judged = placement == Placement::Shared;
            if !judged && added.is_none() {
                continue;
            }
            noise |= added.is_some_and(|a| a.is_noise())
                || v.subjects("latency", Topology::Pair).iter().any(|s| {
                    !is_gembok(s)
                        && v.added(Topology::Pair, &variant, s, p)
                            .is_some_and(|a| a.is_noise())
                });
            let (name, goal_text) = if judged {
                (
                    format!("64 B round trip added by the pair, {pct} (µs)"),
                    format!("≤ {goal} µs"),
                )
            } else {
                (
                    format!("64 B round trip added by the pair, {placement}, {pct} (µs)"),
                    format!("(context; ≤ {goal} µs)"),
                )
            };
            let met = added
                .filter(|a| judged && !a.is_noise())
                .map(|a| a.value <= goal);
            latency_rows.push((
                name,
                added.map_or("–".into(), |a| a.text()),
                best.map_or("–".into(), |(n, a)| format!("{} ({n})", fmt_num(a.value))),
                goal_text,
                met,
            ));
        }
    }
    for (name, g, best, goal, met) in latency_rows {
        text_row(md, &name, &g, &best, "–", &goal, met);
    }
    let step =
        v.r.samples
            .iter()
            .filter(|s| s.scenario == "memory" && s.subject == GEMBOK && s.variant != "idle")
            .max_by_key(|s| s.metrics.get("held").copied().unwrap_or(0.0) as u64)
            .map(|s| s.variant.clone());
    if let Some(step) = step {
        let per = ["out_kib_per_conn", "in_kib_per_conn"]
            .iter()
            .filter_map(|m| {
                v.spread("memory", Topology::Pair, &step, GEMBOK, m)
                    .map(|s| s.median)
            })
            .reduce(f64::max);
        let best = v.best_worse_side(&step, ["out_kib_per_conn", "in_kib_per_conn"], 1.0);
        num_row(
            md,
            &format!("RSS per idle connection per sidecar at {step}, worse side (KiB)"),
            per,
            best,
            "≤ 16 KiB",
            per.map(|per| per <= 16.0),
            "–".into(),
        );
    }
    // Idle memory, worse side: all of it (judged), and the anonymous part alone (context: the
    // rest is the program's pages, shared by every sidecar started from the same files).
    for (metrics, name, judged) in [
        (
            ["out_kib", "in_kib"],
            "idle RSS per sidecar, worse side (MiB)",
            true,
        ),
        (
            ["out_anon_kib", "in_anon_kib"],
            "idle RSS per sidecar, anonymous part only, worse side (MiB)",
            false,
        ),
    ] {
        let idle = metrics
            .iter()
            .filter_map(|m| {
                v.spread("memory", Topology::Pair, "idle", GEMBOK, m)
                    .map(|s| s.median / 1024.0)
            })
            .reduce(f64::max);
        let best = v.best_worse_side("idle", metrics, 1.0 / 1024.0);
        if judged {
            num_row(
                md,
                name,
                idle,
                best,
                "≤ 8 MiB",
                idle.map(|i| i <= 8.0),
                "–".into(),
            );
        } else if idle.is_some() {
            num_row(md, name, idle, best, "(context)", None, "–".into());
        }
    }
    md.push('\n');
    if noise {
        md.push_str(ADDED_NOISE);
        md.push_str(" A target whose figure is noise is not judged.\n\n");
    }
}

/// One row of the targets table with figures.
fn num_row(
    md: &mut String,
    name: &str,
    g: Option<f64>,
    best: Option<(String, f64)>,
    goal: &str,
    met: Option<bool>,
    ratio_text: String,
) {
    let g = g.map_or("–".into(), fmt_num);
    let best = best
        .as_ref()
        .map_or("–".into(), |(n, b)| format!("{} ({n})", fmt_num(*b)));
    text_row(md, name, &g, &best, &ratio_text, goal, met);
}

/// One row of the targets table.
fn text_row(
    md: &mut String,
    name: &str,
    gembok: &str,
    best: &str,
    ratio: &str,
    goal: &str,
    met: Option<bool>,
) {
    let met = match met {
        Some(true) => "yes",
        Some(false) => "**no**",
        None => "–",
    };
    let _ = writeln!(
        md,
        "| {name} | {gembok} | {best} | {ratio} | {goal} | {met} |"
    );
}

fn contenders(v: &View<'_>, md: &mut String) {
    md.push_str("## Contenders\n\n");
    md.push_str("Same PKI for all (root → intermediate → ECDSA P-256 leaves), TLS 1.3 only, client certificates required. Each was checked before it was measured (see `src/verify.rs`).\n\n");
    md.push_str("| contender | TLS library | status | mTLS checks | outbound negotiated | data path |\n|---|---|---|---|---|---|\n");
    for c in &v.r.contenders {
        let verdict = verdict(c);
        let checks = verdict.as_ref().map_or("–".into(), |vd| {
            format!(
                "{}/{} passed",
                vd.checks.iter().filter(|c| c.passed).count(),
                vd.checks.len()
            )
        });
        let neg = verdict
            .as_ref()
            .and_then(|vd| vd.negotiated.clone())
            .map_or("–".into(), |n| {
                format!("{} {} {}", n.version, n.suite, n.group)
            });
        let _ = writeln!(
            md,
            "| {} | {} | {} | {checks} | {neg} | {} |",
            c.id,
            c.tls_library,
            c.status.replace('\n', " ").replace('|', "/"),
            c.data_path
        );
    }
    md.push('\n');
}

fn plots(v: &View<'_>, dir: &Path, rel: &str, md: &mut String) -> Result<()> {
    md.push_str("## Plots\n\n");
    let mut emit =
        |file: &str, title: &str, y: &str, cats: Vec<String>, series: Vec<Series>| -> Result<()> {
            if cats.is_empty() || series.iter().all(|s| s.values.iter().all(Option::is_none)) {
                return Ok(());
            }
            plot::bars(&dir.join(file), title, y, &cats, &series)?;
            let _ = writeln!(md, "![{title}]({rel}/{file})\n");
            Ok(())
        };
    // Each scenario's plots show the subjects that scenario measured (pair, then inbound-only).
    let cats_of = |scenario: &str| {
        let mut cats = v.subjects(scenario, Topology::Pair);
        for s in v.subjects(scenario, Topology::Inbound) {
            if !cats.contains(&s) {
                cats.push(s);
            }
        }
        cats
    };
    let cats = cats_of("bulk");
    let series = |scenario: &str,
                  list: &[(Topology, &str, &str)],
                  metric: &str,
                  cats: &[String]|
     -> Vec<Series> {
        list.iter()
            .map(|(t, variant, name)| Series {
                name: (*name).into(),
                values: cats
                    .iter()
                    .map(|c| v.spread(scenario, *t, variant, c, metric))
                    .collect(),
            })
            .collect()
    };
    let mut with_direct = cats.clone();
    with_direct.push("direct".into());
    // The pair's single stream under the host's congestion control too, when it was measured.
    let under_host =
        host_congestion(v).map(|(h, label)| (label, format!("pair, 1 stream, the host's {h}")));
    let mut thr = vec![
        (Topology::Pair, "1 stream", "pair, 1 stream"),
        (Topology::Pair, "4 streams", "pair, 4 streams"),
        (Topology::Inbound, "1 stream", "inbound only, 1 stream"),
    ];
    if let Some((variant, name)) = &under_host {
        thr.push((Topology::Pair, variant, name));
    }
    let mut s = series("bulk", &thr, "gbit_per_s", &with_direct);
    // The direct baseline has no topology of its own in the chart: show it in the pair series.
    let mut direct = vec![(0, "1 stream"), (1, "4 streams")];
    if let Some((variant, _)) = &under_host {
        direct.push((3, variant));
    }
    for (i, variant) in direct {
        if let Some(last) = s[i].values.last_mut() {
            *last = v.spread("bulk", Topology::Direct, variant, "direct", "gbit_per_s");
        }
    }
    emit(
        "throughput.svg",
        "Bulk throughput (higher is better)",
        "Gbit/s",
        with_direct,
        s,
    )?;
    emit(
        "cpu-per-gib.svg",
        "CPU seconds per GiB, all sidecar processes (lower is better)",
        "CPU s / GiB",
        cats.clone(),
        series("bulk", &thr, "cpu_s_per_gib", &cats),
    )?;
    let conn = [
        (
            Topology::Pair,
            "new connections",
            "pair (proxies' own session reuse)",
        ),
        (
            Topology::Inbound,
            "full handshake",
            "inbound only, full handshake",
        ),
        (Topology::Inbound, "resumed", "inbound only, resumed"),
    ];
    let conn_cats = cats_of("connections");
    emit(
        "connections.svg",
        "New mTLS connections per second (higher is better)",
        "connections/s",
        conn_cats.clone(),
        series("connections", &conn, "conn_per_s", &conn_cats),
    )?;
    emit(
        "cpu-per-connection.svg",
        "CPU ms per new connection, all sidecar processes (lower is better)",
        "CPU ms / connection",
        conn_cats.clone(),
        series("connections", &conn, "cpu_ms_per_conn", &conn_cats),
    )?;
    let mut lat_plots = vec![
        ("64 B".to_owned(), "latency-64b.svg".to_owned()),
        ("16 KiB".to_owned(), "latency-16k.svg".to_owned()),
    ];
    for p in [Placement::OneCpu, Placement::PerPod] {
        lat_plots.push((p.variant_64b(), format!("latency-64b-{}.svg", p.slug())));
    }
    for (variant, file) in &lat_plots {
        let variant = variant.as_str();
        let lat_cats = v.subjects("latency", Topology::Pair);
        let lat: Vec<Series> = [
            ("p50_us", "p50"),
            ("p90_us", "p90"),
            ("p99_us", "p99"),
            ("p999_us", "p99.9"),
        ]
        .iter()
        .map(|(m, name)| {
            let d = v.spread("latency", Topology::Direct, variant, "direct", m);
            Series {
                name: (*name).into(),
                values: lat_cats
                    .iter()
                    .map(|c| {
                        let s = v.spread("latency", Topology::Pair, variant, c, m)?;
                        let d = d?.median;
                        Some(Spread {
                            median: s.median - d,
                            min: s.min - d,
                            max: s.max - d,
                            n: s.n,
                        })
                    })
                    .collect(),
            }
        })
        .collect();
        emit(
            file,
            &format!(
                "Round trip added by the pair over direct, ping-pong of {variant} (lower is better)"
            ),
            "µs added",
            lat_cats,
            lat,
        )?;
    }
    let mem_cats: Vec<String> =
        v.r.samples
            .iter()
            .filter(|s| s.scenario == "memory")
            .fold(Vec::new(), |mut acc, s| {
                if !acc.contains(&s.subject) {
                    acc.push(s.subject.clone());
                }
                acc
            });
    let steps: Vec<String> =
        v.r.samples
            .iter()
            .filter(|s| s.scenario == "memory" && s.variant != "idle")
            .fold(Vec::new(), |mut acc, s| {
                if !acc.contains(&s.variant) {
                    acc.push(s.variant.clone());
                }
                acc
            });
    let mut mem = Vec::new();
    for step in &steps {
        for (m, side) in [
            ("out_kib_per_conn", "outbound"),
            ("in_kib_per_conn", "inbound"),
        ] {
            mem.push(Series {
                name: format!("{side}, {step}"),
                values: mem_cats
                    .iter()
                    .map(|c| {
                        [Topology::Pair, Topology::Inbound]
                            .iter()
                            .find_map(|t| v.spread("memory", *t, step, c, m))
                    })
                    .collect(),
            });
        }
    }
    emit(
        "memory-per-connection.svg",
        "RSS per idle connection, per sidecar (lower is better)",
        "KiB / connection",
        mem_cats,
        mem,
    )?;
    Ok(())
}

struct Col {
    metric: &'static str,
    title: &'static str,
    higher_better: bool,
}

const fn col(metric: &'static str, title: &'static str, higher_better: bool) -> Col {
    Col {
        metric,
        title,
        higher_better,
    }
}

fn tables(v: &View<'_>, md: &mut String) {
    md.push_str("## Figures\n\nRatios: \"vs best\" divides by the best established contender's median (for lower-is-better figures a ratio below 1 is better); \"vs direct\" divides by the no-proxy baseline.\n\n");
    let bulk = [
        col("gbit_per_s", "Gbit/s", true),
        col("cpu_s_per_gib", "CPU s/GiB (both sides)", false),
        col("cpu_out_s_per_gib", "outbound CPU s/GiB", false),
        col("cpu_in_s_per_gib", "inbound CPU s/GiB", false),
    ];
    md.push_str("### 1. Bulk throughput\n\n");
    if let Some((host, label)) = host_congestion(v) {
        let _ = writeln!(
            md,
            "Every socket of the run uses the congestion control of its own network namespace \
             (see Machine). The \"{label}\" tables measure the same streams under the \
             host's default, {host}, switched for those samples only.\n"
        );
    }
    for topo in [Topology::Pair, Topology::Inbound, Topology::Direct] {
        for variant in v.variants("bulk", topo) {
            table(v, md, "bulk", topo, &variant, &bulk, Some("gbit_per_s"));
        }
    }
    md.push_str("### 2. New connections\n\nEach connection: connect, (TLS handshake), 64 B request, echo, close. In the pair the client speaks plaintext, so resumption between the sidecars is each proxy's own default (all of them resume); the inbound-only rows control it from the client.");
    if let Some(sampling) = v.r.cps_sampling().filter(|s| s.cps_rounds > 1) {
        let (reps, rounds) = (sampling.reps, sampling.cps_rounds);
        let secs = sampling.cps_duration.as_secs_f64();
        let _ = write!(
            md,
            " The connection rate moves most from one sample to the next, so each figure is the \
             median of {} samples of {secs} s: {rounds} rounds in {}, every round in an order of \
             its own.",
            reps * rounds,
            if reps == 1 {
                "1 repetition".to_owned()
            } else {
                format!("each of {reps} repetitions")
            }
        );
    }
    md.push_str("\n\n");
    let conn = [
        col("conn_per_s", "connections/s", true),
        col("cpu_ms_per_conn", "CPU ms/conn (all sidecars)", false),
        col("connect_p50_us", "connect→echo p50 µs", false),
        col("failed", "failed", false),
    ];
    for topo in [Topology::Pair, Topology::Inbound, Topology::Direct] {
        for variant in v.variants("connections", topo) {
            table(
                v,
                md,
                "connections",
                topo,
                &variant,
                &conn,
                Some("conn_per_s"),
            );
        }
    }
    md.push_str("### 3. Latency\n\nAbsolute round trips in µs; \"+\" columns are added over the direct baseline (same variant, same repetition set). Where the kernel places the processes, a round trip also pays for every wake-up of a thread on an idle CPU, which costs most on a virtual machine that halts idle vCPUs at once (see the Machine table's cpuidle). The 64 B ping-pong is therefore measured twice more with CPU affinity fixed: \"one CPU\" (client, both sidecars and app on one CPU: no wake-up crosses CPUs, so what a proxy adds is its own work and context switches) and \"a CPU per pod\" (client and outbound on one CPU, inbound and app on another, like two pods with a CPU each: only the hops between the pods cross CPUs, in the direct runs as in the pair's). ");
    md.push_str(ADDED_NOISE);
    md.push_str("\n\n");
    for topo in [Topology::Pair, Topology::Inbound, Topology::Direct] {
        for variant in v.variants("latency", topo) {
            latency_table(v, md, topo, &variant);
        }
    }
    md.push_str("### 4. Memory\n\nRSS of each sidecar's whole process tree. Idle: right after start-up, before any traffic; \"of it anonymous\" leaves out the program's and libraries' pages (file-backed, shared through the page cache by every sidecar started from the same image). Per connection: (RSS holding N idle connections − RSS before) / N, each connection proven established by an echo. Kernel socket buffers are not included.\n\n");
    let mem = [
        col("out_kib", "outbound idle KiB", false),
        col("out_anon_kib", "of it anonymous", false),
        col("in_kib", "inbound idle KiB", false),
        col("in_anon_kib", "of it anonymous", false),
        col("out_kib_per_conn", "outbound KiB/conn", false),
        col("in_kib_per_conn", "inbound KiB/conn", false),
        col("held", "connections held", true),
    ];
    for topo in [Topology::Pair, Topology::Inbound] {
        for variant in v.variants("memory", topo) {
            table(v, md, "memory", topo, &variant, &mem, None);
        }
    }
    md.push_str("### 5. System calls per GiB (strace -c -f, one bulk stream through the pair)\n\n");
    let subjects = v.subjects("syscalls", Topology::Pair);
    if !subjects.is_empty() {
        md.push_str("| contender | side | calls/GiB | top calls per GiB |\n|---|---|---|---|\n");
        for s in &subjects {
            let Some(sample) =
                v.r.samples
                    .iter()
                    .find(|x| x.scenario == "syscalls" && &x.subject == s)
            else {
                continue;
            };
            for side in ["out", "in"] {
                let mut calls: Vec<(&str, f64)> = sample
                    .metrics
                    .iter()
                    .filter_map(|(k, val)| k.strip_prefix(&format!("{side}:")).map(|n| (n, *val)))
                    .collect();
                calls.sort_by(|a, b| b.1.total_cmp(&a.1));
                let top: Vec<String> = calls
                    .iter()
                    .take(6)
                    .map(|(n, c)| format!("{n} {}", fmt_num(*c)))
                    .collect();
                let _ = writeln!(
                    md,
                    "| {s} | {} | {} | {} |",
                    if side == "out" { "outbound" } else { "inbound" },
                    sample
                        .metrics
                        .get(&format!("{side}_total_per_gib"))
                        .map_or("–".into(), |t| fmt_num(*t)),
                    top.join(", ")
                );
            }
        }
        md.push('\n');
    }
}

fn table(
    v: &View<'_>,
    md: &mut String,
    scenario: &str,
    topo: Topology,
    variant: &str,
    cols: &[Col],
    ratio_on: Option<&str>,
) {
    let subjects = v.subjects(scenario, topo);
    let cols: Vec<&Col> = cols
        .iter()
        .filter(|c| {
            subjects
                .iter()
                .any(|s| v.spread(scenario, topo, variant, s, c.metric).is_some())
        })
        .collect();
    if cols.is_empty() {
        return;
    }
    let _ = writeln!(md, "**{} — {}**\n", topo_name(topo), variant);
    md.push_str("| subject |");
    for c in &cols {
        let _ = write!(md, " {} |", c.title);
    }
    let ratio_col = ratio_on.and_then(|m| cols.iter().find(|c| c.metric == m).copied());
    let cpu_col = cols
        .iter()
        .find(|c| {
            c.metric.starts_with("cpu_")
                && !c.metric.contains("_out_")
                && !c.metric.contains("_in_")
        })
        .copied();
    if ratio_col.is_some() {
        md.push_str(" vs best |");
        if topo != Topology::Direct {
            md.push_str(" vs direct |");
        }
    }
    if cpu_col.is_some() {
        md.push_str(" CPU vs best |");
    }
    md.push('\n');
    md.push_str("|---|");
    let extra = usize::from(ratio_col.is_some()) * (1 + usize::from(topo != Topology::Direct))
        + usize::from(cpu_col.is_some());
    for _ in 0..cols.len() + extra {
        md.push_str("---|");
    }
    md.push('\n');
    for s in &subjects {
        let _ = write!(md, "| {s} |");
        for c in &cols {
            let _ = write!(
                md,
                " {} |",
                cell_with(
                    v.spread(scenario, topo, variant, s, c.metric),
                    if COUNTS.contains(&c.metric) {
                        fmt_count
                    } else {
                        fmt_num
                    }
                )
            );
        }
        if let Some(c) = ratio_col {
            let mine = v
                .spread(scenario, topo, variant, s, c.metric)
                .map(|x| x.median);
            let best = v
                .best(scenario, topo, variant, c.metric, c.higher_better)
                .map(|b| b.1);
            let _ = write!(md, " {} |", ratio(mine, best));
            if topo != Topology::Direct {
                let direct = v
                    .spread(scenario, Topology::Direct, variant, "direct", c.metric)
                    .or_else(|| {
                        v.variants(scenario, Topology::Direct)
                            .first()
                            .and_then(|dv| {
                                v.spread(scenario, Topology::Direct, dv, "direct", c.metric)
                            })
                    })
                    .map(|x| x.median);
                let _ = write!(md, " {} |", ratio(mine, direct));
            }
        }
        if let Some(c) = cpu_col {
            let mine = v
                .spread(scenario, topo, variant, s, c.metric)
                .map(|x| x.median);
            let best = v
                .best(scenario, topo, variant, c.metric, false)
                .map(|b| b.1);
            let _ = write!(md, " {} |", ratio(mine, best));
        }
        md.push('\n');
    }
    md.push('\n');
}

fn latency_table(v: &View<'_>, md: &mut String, topo: Topology, variant: &str) {
    let subjects = v.subjects("latency", topo);
    let subjects: Vec<&String> = subjects
        .iter()
        .filter(|s| v.spread("latency", topo, variant, s, "p50_us").is_some())
        .collect();
    if subjects.is_empty() {
        return;
    }
    let _ = writeln!(md, "**{} — {}**\n", topo_name(topo), variant);
    let ps = [
        ("p50_us", "p50"),
        ("p90_us", "p90"),
        ("p99_us", "p99"),
        ("p999_us", "p99.9"),
    ];
    md.push_str("| subject |");
    for (_, p) in ps {
        let _ = write!(md, " {p} |");
    }
    if topo != Topology::Direct {
        for (_, p) in ps {
            let _ = write!(md, " +{p} |");
        }
    }
    md.push_str("\n|---|");
    for _ in 0..ps.len() * if topo != Topology::Direct { 2 } else { 1 } {
        md.push_str("---|");
    }
    md.push('\n');
    for s in subjects {
        let _ = write!(md, "| {s} |");
        for (m, _) in ps {
            let _ = write!(md, " {} |", cell(v.spread("latency", topo, variant, s, m)));
        }
        if topo != Topology::Direct {
            for (m, _) in ps {
                let added = v.added(topo, variant, s, m);
                let _ = write!(md, " {} |", added.map_or("–".into(), |a| a.cell()));
            }
        }
        md.push('\n');
    }
    md.push('\n');
}

fn topo_name(t: Topology) -> &'static str {
    match t {
        Topology::Pair => "sidecar pair (client → outbound → mTLS → inbound → app)",
        Topology::Inbound => "inbound only (TLS client → inbound → app)",
        Topology::Direct => "direct (client → app, no proxy)",
    }
}

/// Loads a `results.json` written by an earlier run.
pub fn load(path: &Path) -> Result<Results> {
    use anyhow::Context as _;
    let bytes = std::fs::read(path).with_context(|| format!("read {}", path.display()))?;
    serde_json::from_slice(&bytes).with_context(|| {
        format!(
            "{} is not the results.json of a gembok-bench run",
            path.display()
        )
    })
}

pub fn samples_of<'a>(r: &'a Results, scenario: &str) -> Vec<&'a Sample> {
    r.samples
        .iter()
        .filter(|s| s.scenario == scenario)
        .collect()
}

#[cfg(test)]
mod tests {

    use super::*;

    pub(super) fn results(samples: Vec<Sample>) -> Results {
        Results {
            mode: "quick".into(),
            command: "gembok-bench quick".into(),
            started: "2026-11-30T00:00:00Z".into(),
            duration_secs: 1.0,
            plan: serde_json::Value::Null,
            facts: serde_json::Value::Null,
            nofile_limit: 1024,
            contenders: Vec::new(),
            samples,
            errors: Vec::new(),
        }
    }

    /// Latency samples of `subject` in `topology`: one p50 and p99 per repetition.
    fn latency(topology: Topology, subject: &str, p50: &[f64], p99: &[f64]) -> Vec<Sample> {
        p50.iter()
            .zip(p99)
            .enumerate()
            .map(|(rep, (&a, &b))| {
                Sample::new(
                    "latency",
                    topology,
                    "64 B",
                    subject,
                    rep as u32,
                    &[("p50_us", a), ("p99_us", b)],
                )
            })
            .collect()
    }

    /// `report --from` reads back exactly the figures the run wrote, so a re-rendered report
    /// is the run's own, digit for digit (serde_json's default parser is off by one ulp for
    /// about one value in ten of these).
    #[test]
    fn results_json_reads_back_every_figure_exactly() {
        let samples: Vec<Sample> = (1..2_000u32)
            .map(|i| {
                let x = f64::from(i) * 1.3 / 7.0 + 1.0 / f64::from(i);
                Sample::new(
                    "bulk",
                    Topology::Pair,
                    "1 stream",
                    GEMBOK,
                    i,
                    &[("gbit_s", x)],
                )
            })
            .collect();
        let dir = tempfile::tempdir().unwrap();
        let json = dir.path().join("results.json");
        std::fs::write(
            &json,
            serde_json::to_vec_pretty(&results(samples.clone())).unwrap(),
        )
        .unwrap();
        let back = load(&json).unwrap();
        for (wrote, read) in samples.iter().zip(&back.samples) {
            assert_eq!(wrote.metrics, read.metrics, "repetition {}", wrote.rep);
        }
        assert_eq!(back.samples.len(), samples.len());
    }

    fn render(r: &Results) -> String {
        let dir = tempfile::tempdir().unwrap();
        let report = dir.path().join("RESULTS.md");
        write(r, &report, dir.path()).unwrap();
        std::fs::read_to_string(report).unwrap()
    }

    fn line<'a>(md: &'a str, start: &str) -> &'a str {
        md.lines()
            .find(|l| l.starts_with(start))
            .unwrap_or_else(|| panic!("no line starting {start:?} in:\n{md}"))
    }

    /// The worse side of the best established contender: per contender its worse side, then
    /// the best of those. haproxy's outbound and nginx's inbound are each the best of their
    /// side, but each of them is bad on its other side; stunnel4 is the best on both sides.
    #[test]
    fn memorys_best_worse_side_is_one_contenders_worse_side() {
        let mem = |subject: &str, variant: &str, out: (&str, f64), inb: (&str, f64)| {
            Sample::new("memory", Topology::Pair, variant, subject, 0, &[out, inb])
        };
        let mut samples = Vec::new();
        for (subject, out, inb) in [
            (GEMBOK, 7.0, 6.0),
            ("haproxy", 5.0, 40.0),
            ("nginx", 30.0, 4.0),
            ("stunnel4", 12.0, 11.0),
        ] {
            let mut m = mem(
                subject,
                "1000 connections",
                ("out_kib_per_conn", out),
                ("in_kib_per_conn", inb),
            );
            m.metrics.insert("held".into(), 1000.0);
            samples.push(m);
            samples.push(mem(
                subject,
                "idle",
                ("out_kib", out * 1024.0),
                ("in_kib", inb * 1024.0),
            ));
        }
        let md = render(&results(samples));
        let row = line(
            &md,
            "| RSS per idle connection per sidecar at 1000 connections",
        );
        assert!(row.contains("| 7.00 | 12.0 (stunnel4) |"), "{row}");
        let row = line(&md, "| idle RSS per sidecar, worse side (MiB)");
        assert!(row.contains("| 7.00 | 12.0 (stunnel4) |"), "{row}");
    }

    /// A run of the connection scenario alone (no bulk) still gets its connection plots, over
    /// the subjects it measured.
    #[test]
    fn connection_plots_are_drawn_from_the_connection_scenarios_subjects() {
        let conn = |topo, variant: &str, subject: &str| {
            Sample::new(
                "connections",
                topo,
                variant,
                subject,
                0,
                &[("conn_per_s", 1000.0), ("cpu_ms_per_conn", 0.5)],
            )
        };
        let samples = vec![
            conn(Topology::Pair, "new connections", GEMBOK),
            conn(Topology::Inbound, "full handshake", GEMBOK),
            conn(Topology::Inbound, "full handshake", "hitch"),
            conn(Topology::Direct, "new connections", "direct"),
        ];
        let dir = tempfile::tempdir().unwrap();
        let report = dir.path().join("RESULTS.md");
        write(&results(samples), &report, dir.path()).unwrap();
        let md = std::fs::read_to_string(report).unwrap();
        for file in ["connections.svg", "cpu-per-connection.svg"] {
            assert!(md.contains(&format!("(./{file})")), "no {file} in:\n{md}");
            let svg = std::fs::read_to_string(dir.path().join(file)).unwrap();
            assert!(svg.contains(GEMBOK) && svg.contains("hitch"), "{file}");
        }
        assert!(!dir.path().join("throughput.svg").exists());
    }

    /// Counts read as counts: "20" connections held and "0" failed, not "20.0" and "0.00".
    #[test]
    fn counts_are_whole_numbers_in_the_tables() {
        let samples = vec![
            Sample::new(
                "memory",
                Topology::Pair,
                "20 connections",
                GEMBOK,
                0,
                &[("held", 20.0), ("failed", 0.0), ("in_kib_per_conn", 7.5)],
            ),
            Sample::new(
                "connections",
                Topology::Pair,
                "new connections",
                GEMBOK,
                0,
                &[("conn_per_s", 2500.0), ("failed", 0.0)],
            ),
            Sample::new(
                "connections",
                Topology::Pair,
                "new connections",
                GEMBOK,
                1,
                &[("conn_per_s", 2400.0), ("failed", 3.0)],
            ),
        ];
        let md = render(&results(samples));
        let mem = md.split("### 4. Memory").nth(1).unwrap();
        assert!(
            line(mem, &format!("| {GEMBOK} |")).ends_with("| 7.50 | 20 |"),
            "{mem}"
        );
        let conn = md.split("### 2. New connections").nth(1).unwrap();
        assert!(
            line(conn, &format!("| {GEMBOK} |")).contains("| 1.5 (0–3) |"),
            "{conn}"
        );
    }

    /// Direct's p99 samples are bimodal (200 or 1400 µs): a median of 1400 makes every proxy
    /// "add" a negative round trip. That is noise, not a proxy making things faster: it is
    /// marked, explained, and wins no "best".
    #[test]
    fn an_added_latency_below_zero_or_within_directs_spread_is_noise_and_never_best() {
        let mut samples = latency(
            Topology::Direct,
            "direct",
            &[100.0, 101.0, 102.0],
            &[1400.0, 200.0, 1400.0],
        );
        samples.extend(latency(
            Topology::Pair,
            GEMBOK,
            &[170.0, 171.0, 172.0],
            &[861.0, 861.0, 861.0],
        ));
        // haproxy "adds" the most negative p99 (−928): it used to be "best".
        samples.extend(latency(
            Topology::Pair,
            "haproxy",
            &[180.0, 181.0, 182.0],
            &[472.0, 472.0, 472.0],
        ));
        // nginx adds more than direct's spread at p99 and so is the only honest best there.
        samples.extend(latency(
            Topology::Pair,
            "nginx",
            &[160.0, 161.0, 162.0],
            &[2700.0, 2700.0, 2700.0],
        ));
        let md = render(&results(samples));
        let p99 = line(&md, "| 64 B round trip added by the pair, p99 (µs) |");
        assert_eq!(
            p99,
            "| 64 B round trip added by the pair, p99 (µs) | < 0 (direct's samples spread 200–1400) \
             | 1300 (nginx) | – | ≤ 100 µs | – |"
        );
        let p50 = line(&md, "| 64 B round trip added by the pair, p50 (µs) |");
        assert_eq!(
            p50,
            "| 64 B round trip added by the pair, p50 (µs) | 70.0 | 60.0 (nginx) | – | ≤ 40 µs | **no** |"
        );
        assert!(md.contains(ADDED_NOISE), "no explanation");
        assert_eq!(
            line(&md, "| haproxy |"),
            "| haproxy | 181 (180–182) | – | 472 (472–472) | – | 80.0 | – | < 0 (noise) | – |"
        );
        // Positive, but smaller than direct's spread.
        let mut samples = latency(
            Topology::Direct,
            "direct",
            &[100.0, 101.0, 102.0],
            &[200.0, 300.0, 1400.0],
        );
        samples.extend(latency(
            Topology::Pair,
            GEMBOK,
            &[170.0, 171.0, 172.0],
            &[461.0, 461.0, 461.0],
        ));
        let md = render(&results(samples));
        let p99 = line(&md, "| 64 B round trip added by the pair, p99 (µs) |");
        assert!(
            p99.contains("| n/a (161 within direct's samples spread 200–1400) | – |"),
            "{p99}"
        );
    }
}
