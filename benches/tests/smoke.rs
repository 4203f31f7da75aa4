//! Runs `gembok-bench smoke` (the real binary, against the real gembok-proxy binary) and checks
//! that the report has every scenario with sane figures. No timing assertions: this only keeps
//! the harness from rotting. Needs root, or strace and perf installed (`benches/tests/setup.sh`).

use std::path::{Path, PathBuf};
use std::process::Command;

use gembok_bench::placement::{self, Placement};
use gembok_bench::plan::Scenario;
use gembok_bench::run::{Results, single_stream_under};
use gembok_bench::scenario::Topology;
use gembok_bench::{netns, report, steal};

/// The gembok-proxy binary of this cargo profile, built if missing (a `-p gembok-bench` test
/// run does not build other packages' binaries).
fn gembok_proxy() -> PathBuf {
    let bench = Path::new(env!("CARGO_BIN_EXE_gembok-bench"));
    let dir = bench.parent().expect("target/<profile>");
    let proxy = dir.join("gembok-proxy");
    if !proxy.exists() {
        let cargo = option_env!("CARGO").unwrap_or("cargo");
        let mut cmd = Command::new(cargo);
        cmd.args(["build", "-p", "gembok-proxy"]);
        if dir.ends_with("release") {
            cmd.arg("--release");
        }
        let status = cmd.status().expect("run cargo build -p gembok-proxy");
        assert!(status.success(), "cargo build -p gembok-proxy failed");
    }
    proxy
}

/// A `gembok-bench smoke` run with `args`, which must succeed with no failed measurement: its
/// output directory and results.
fn smoke(args: &[&str]) -> (tempfile::TempDir, Results) {
    let proxy = gembok_proxy();
    let out = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_gembok-bench"))
        .arg("smoke")
        .args(args)
        .arg("--out")
        .arg(out.path())
        .arg("--gembok-bin")
        .arg(&proxy)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "smoke run failed:\n{stderr}");
    let r = report::load(&out.path().join("results.json")).unwrap();
    assert!(r.errors.is_empty(), "failed measurements: {:#?}", r.errors);
    (out, r)
}

#[test]
fn smoke_run_covers_every_scenario_with_sane_figures() {
    let (out, r) = smoke(&[]);
    let gembok = r
        .contenders
        .iter()
        .find(|c| c.id == "gembok-aws-lc-rs")
        .expect("gembok in the report");
    assert_eq!(gembok.status, "measured", "{gembok:?}");
    let verdict = gembok_bench::run::verdict(gembok).expect("a verdict");
    assert!(verdict.checks.len() >= 7 && verdict.passed(), "{verdict:?}");
    assert_eq!(verdict.negotiated.unwrap().version, "TLSv1_3");
    assert!(
        gembok.data_path.starts_with("userspace") || gembok.data_path.starts_with("ktls"),
        "{}",
        gembok.data_path
    );
    // gembok's own count of connections by data path is in the table (its record layer here).
    assert!(
        gembok.data_path.contains("connections by path: ")
            && (gembok.data_path.contains("records ") || gembok.data_path.contains("ktls ")),
        "{}",
        gembok.data_path
    );

    for scenario in Scenario::ALL.map(Scenario::name) {
        let samples = report::samples_of(&r, scenario);
        assert!(!samples.is_empty(), "no samples for {scenario}");
        for s in &samples {
            assert!(!s.metrics.is_empty(), "{s:?}");
            for (k, v) in &s.metrics {
                assert!(v.is_finite(), "{scenario} {k} = {v}");
            }
        }
    }
    let metric = |scenario: &str, topo: Topology, variant: &str, subject: &str, m: &str| -> f64 {
        report::samples_of(&r, scenario)
            .into_iter()
            .find(|s| s.topology == topo && s.variant == variant && s.subject == subject)
            .and_then(|s| s.metrics.get(m).copied())
            .unwrap_or_else(|| panic!("no {scenario}/{topo:?}/{variant}/{subject}/{m}"))
    };
    let g = "gembok-aws-lc-rs";
    for (topo, variant) in [
        (Topology::Pair, "1 stream"),
        (Topology::Pair, "4 streams"),
        (Topology::Inbound, "1 stream"),
    ] {
        assert!(metric("bulk", topo, variant, g, "gbit_per_s") > 0.0);
        assert!(
            metric("bulk", topo, variant, g, "cpu_s_per_gib") > 0.0,
            "{topo:?} {variant}"
        );
    }
    assert!(metric("bulk", Topology::Direct, "1 stream", "direct", "gbit_per_s") > 0.0);
    for (topo, variant) in [
        (Topology::Pair, "new connections"),
        (Topology::Inbound, "full handshake"),
        (Topology::Inbound, "resumed"),
    ] {
        assert!(metric("connections", topo, variant, g, "conn_per_s") > 0.0);
        assert!(metric("connections", topo, variant, g, "cpu_ms_per_conn") > 0.0);
    }
    // The placed 64 B variants: each placement the harness's CPUs can hold ("a CPU per pod"
    // needs two).
    let cpus = placement::allowed().unwrap();
    for p in [Placement::OneCpu, Placement::PerPod] {
        if placement::sides(p, &cpus).is_err() {
            continue;
        }
        let variant = &p.variant_64b();
        for topo in [Topology::Pair, Topology::Inbound] {
            assert!(
                metric("latency", topo, variant, g, "p50_us") > 0.0,
                "{variant}"
            );
        }
        assert!(metric("latency", Topology::Direct, variant, "direct", "p50_us") > 0.0);
    }
    for variant in ["64 B", "16 KiB"] {
        let p50 = metric("latency", Topology::Pair, variant, g, "p50_us");
        let p999 = metric("latency", Topology::Pair, variant, g, "p999_us");
        assert!(
            p50 > 0.0 && p999 >= p50,
            "{variant}: p50 {p50} p99.9 {p999}"
        );
    }
    assert!(metric("memory", Topology::Pair, "idle", g, "in_kib") > 0.0);
    assert!(metric("memory", Topology::Pair, "idle", g, "out_kib") > 0.0);
    for side in ["in", "out"] {
        let all = metric("memory", Topology::Pair, "idle", g, &format!("{side}_kib"));
        let anon = metric(
            "memory",
            Topology::Pair,
            "idle",
            g,
            &format!("{side}_anon_kib"),
        );
        assert!(
            anon > 0.0 && anon < all,
            "{side}: anonymous {anon} of {all} KiB"
        );
    }
    // Every connection sample (each long enough for the clock to tick) carries the machine's
    // steal time; the untimed scenarios do not.
    for s in report::samples_of(&r, "connections") {
        let pct = s.metrics.get(steal::METRIC).copied();
        assert!(pct.is_some_and(|p| (0.0..=100.0).contains(&p)), "{s:?}");
    }
    for scenario in ["memory", "syscalls"] {
        for s in report::samples_of(&r, scenario) {
            assert!(!s.metrics.contains_key(steal::METRIC), "{s:?}");
        }
    }
    let held = metric("memory", Topology::Pair, "50 connections", g, "held");
    assert_eq!(held, 50.0);
    assert!(
        metric(
            "syscalls",
            Topology::Pair,
            "1 stream",
            g,
            "out_total_per_gib"
        ) > 0.0
    );
    assert!(
        metric(
            "syscalls",
            Topology::Pair,
            "1 stream",
            g,
            "in_total_per_gib"
        ) > 0.0
    );

    let md = std::fs::read_to_string(out.path().join("RESULTS.md")).unwrap();
    for heading in [
        "## Targets",
        "### 1. Bulk",
        "### 2. New connections",
        "### 3. Latency",
        "### 4. Memory",
        "### 5. System calls",
        "## Steal time",
    ] {
        assert!(md.contains(heading), "report lacks {heading}");
    }
    assert!(
        md.lines()
            .any(|l| l.starts_with("| 1 | ") && l.contains(" (max ")),
        "the steal table lacks repetition 1"
    );
    assert!(
        md.contains("| 64 B round trip added by the pair, one CPU, p50 (µs) | "),
        "the targets lack the one-CPU context row"
    );
    for svg in [
        "throughput.svg",
        "cpu-per-gib.svg",
        "connections.svg",
        "latency-64b.svg",
        "latency-64b-one-cpu.svg",
        "memory-per-connection.svg",
    ] {
        let text = std::fs::read_to_string(out.path().join(svg)).unwrap_or_default();
        assert!(
            text.contains("<svg") && text.contains("<rect"),
            "{svg} is not a bar chart"
        );
        assert!(
            md.contains(&format!("(./{svg})")),
            "report does not link {svg}"
        );
    }
}

/// Runs `gembok-bench` with `args`, which must exit with `code`; its stderr.
fn bench_exits(args: &[&str], code: i32) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_gembok-bench"))
        .args(args)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(code), "{args:?}: {stderr}");
    stderr
}

/// Runs `gembok-bench` with `args`, which must be refused as bad usage (exit 64); its stderr.
fn usage_error(args: &[&str]) -> String {
    bench_exits(args, 64)
}

#[test]
fn bad_flags_exit_64() {
    usage_error(&["smoke", "--no-such-flag"]);
}

/// Every bad value of a measuring command line is bad usage, found before anything is installed
/// or started, and listed at once, each naming its flag.
#[test]
fn every_bad_value_is_listed_at_once_and_exits_64() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a-file");
    std::fs::write(&file, "").unwrap();
    let file = file.to_str().unwrap();
    let not_exec = format!("noexec={file}");
    let under_file = format!("{file}/out");
    let args = [
        "quick",
        "--no-install",
        "--contenders",
        "bogus,haproxy,haproxy",
        "--variant",
        "foo",
        "--variant",
        "bar=/nonexistent/x",
        "--variant",
        &not_exec,
        "--variant",
        "aws-lc-rs=/bin/true",
        "--gembok-bin",
        "/nonexistent",
        "--congestion",
        "bogus",
        "--profile",
        file,
        "--reps",
        "0",
        "--cps-rounds",
        "0",
        "--memory-steps",
        "1000,0",
        "--workers",
        "100000",
        "--out",
        &under_file,
        "--no-such-flag",
    ];
    let err = usage_error(&args);
    let expected = [
        "--no-such-flag",
        "--contenders: unknown contender(s) `bogus`",
        "--contenders: haproxy is named more than once",
        "--variant foo: expected NAME=BINARY",
        "--variant bar=/nonexistent/x: /nonexistent/x does not exist",
        &format!("--variant {not_exec}: {file} is not executable"),
        "--variant aws-lc-rs=/bin/true: gembok-aws-lc-rs is a built-in contender",
        "--gembok-bin /nonexistent: does not exist",
        "--congestion bogus: not a congestion control of this kernel",
        &format!("--profile {file}: exists and is not a directory"),
        "--reps 0: must be at least 1",
        "--cps-rounds 0: must be at least 1",
        "--memory-steps 1000,0:",
        "--workers 100000: at most 64",
        &format!("--out {under_file}: {file} is not a directory"),
    ];
    assert!(
        err.starts_with(&format!(
            "gembok-bench: invalid configuration ({} problems):\n",
            expected.len()
        )),
        "{err}"
    );
    for line in expected {
        assert!(
            err.lines().any(|l| l.starts_with(&format!("  {line}"))),
            "no `{line}` in:\n{err}"
        );
    }
    // The problems, a line that counts them and a line that points to --help.
    assert_eq!(err.lines().count(), expected.len() + 2, "{err}");
    assert!(
        !err.contains("starting") && !err.contains("network:"),
        "{err}"
    );
    let err = usage_error(&["smoke", "--workers", "0", "--no-install"]);
    assert!(err.contains("--workers 0: must be at least 1"), "{err}");
}

/// An output directory that cannot be made is found before anything is measured (a full run
/// lost every figure to it after 21 minutes), naming the flag; `--report` likewise.
#[test]
fn an_output_path_under_a_file_is_bad_usage_before_measuring() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a-file");
    std::fs::write(&file, "").unwrap();
    let out = file.join("out");
    let err = usage_error(&["smoke", "--no-install", "--out", out.to_str().unwrap()]);
    assert!(
        err.starts_with(&format!(
            "gembok-bench: invalid configuration (1 problem):\n  --out {}: {} is not a directory",
            out.display(),
            file.display()
        )),
        "{err}"
    );
    assert!(!err.contains("starting"), "it measured first:\n{err}");
    let err = usage_error(&["smoke", "--no-install", "--out", file.to_str().unwrap()]);
    assert!(err.contains("exists and is not a directory"), "{err}");
    let committed = Path::new(env!("CARGO_MANIFEST_DIR")).join("results/results.json");
    let report = file.join("RESULTS.md");
    let err = usage_error(&[
        "report",
        "--from",
        committed.to_str().unwrap(),
        "--out",
        dir.path().join("plots").to_str().unwrap(),
        "--report",
        report.to_str().unwrap(),
    ]);
    assert!(
        err.contains(&format!(
            "--report {}: {} is not a directory",
            report.display(),
            file.display()
        )),
        "{err}"
    );
}

/// A run in which every contender under test was skipped (here: a gembok binary that exits at
/// once) measured only the direct baseline: it fails, saying so, after writing what it has.
#[test]
fn a_run_that_measured_nothing_under_test_fails() {
    let out = tempfile::tempdir().unwrap();
    let stderr = bench_exits(
        &[
            "smoke",
            "--no-install",
            "--scenarios",
            "latency",
            "--gembok-bin",
            "/bin/false",
            "--out",
            out.path().to_str().unwrap(),
        ],
        1,
    );
    let last = stderr.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("gembok-bench: nothing under test was measured, only the direct baseline")
            && last.contains("gembok-aws-lc-rs: skipped: cannot start"),
        "{stderr}"
    );
    let r = report::load(&out.path().join("results.json")).unwrap();
    assert!(r.samples.iter().all(|s| s.subject == "direct"));
}

/// A contender whose process dies during the run (here its inbound side, SIGKILLed as the
/// measuring starts) is noticed: named with how it exited, its remaining measurements skipped
/// (not run against a dead port), its status in the report says so, and the run fails.
#[test]
fn a_contender_that_dies_mid_run_is_noticed_and_skipped() {
    use std::io::BufRead as _;
    let proxy = gembok_proxy();
    let out = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_gembok-bench"))
        .args(["smoke", "--no-install", "--scenarios", "latency,memory"])
        .arg("--gembok-bin")
        .arg(&proxy)
        .arg("--out")
        .arg(out.path())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut inbound = None;
    let mut stderr = String::new();
    for line in std::io::BufReader::new(child.stderr.take().unwrap()).lines() {
        let line = line.unwrap();
        if let Some(rest) = line.strip_prefix("started gembok-aws-lc-rs: ") {
            let pid = rest.rsplit("inbound pid ").next().unwrap();
            inbound = Some(pid.trim().parse::<i32>().unwrap());
        }
        if line.starts_with("repetition 1/") {
            let pid = inbound.expect("the start line names the inbound pid");
            let pid = rustix::process::Pid::from_raw(pid).unwrap();
            rustix::process::kill_process(pid, rustix::process::Signal::KILL).unwrap();
        }
        stderr.push_str(&line);
        stderr.push('\n');
    }
    let status = child.wait().unwrap();
    let pid = inbound.expect("gembok started");
    assert_eq!(status.code(), Some(1), "{stderr}");
    let named = format!(
        "gembok-aws-lc-rs: its inbound process (pid {pid}) exited (signal: 9 (SIGKILL)), found \
         before "
    );
    assert!(stderr.contains(&named), "{stderr}");
    // Whatever else it says (here also that nothing under test was measured), the run's last
    // word names the dead process.
    let last = stderr.lines().last().unwrap();
    assert!(
        last.starts_with("gembok-bench: ")
            && last.contains(&format!(
                "died during the run: its inbound process (pid {pid})"
            )),
        "{stderr}"
    );
    // The samples that ran while the kill was on its way may fail; once the exit was seen, none
    // ran against the dead port.
    let after = stderr.split(&named).nth(1).unwrap();
    assert!(
        !after
            .lines()
            .any(|l| l.contains("FAILED") && l.contains("gembok-aws-lc-rs")),
        "{stderr}"
    );
    let r = report::load(&out.path().join("results.json")).unwrap();
    let gembok = r
        .contenders
        .iter()
        .find(|c| c.id == "gembok-aws-lc-rs")
        .unwrap();
    assert!(
        gembok.status.starts_with(gembok_bench::run::DIED) && gembok.status.contains("SIGKILL"),
        "{}",
        gembok.status
    );
    assert!(
        !r.samples
            .iter()
            .any(|s| s.subject == "gembok-aws-lc-rs" && s.scenario == "memory"),
        "memory was measured after the contender died"
    );
    let md = std::fs::read_to_string(out.path().join("RESULTS.md")).unwrap();
    let row = md
        .lines()
        .find(|l| l.starts_with("| gembok-aws-lc-rs | rustls"))
        .expect("contenders row");
    assert!(
        row.contains("died during the run: its inbound process"),
        "{row}"
    );
}

/// `report --from` names the file it could not use and what failed; on success it says what it
/// wrote.
#[test]
fn report_from_names_the_file_that_failed_and_what_it_wrote() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.json");
    let out = dir.path().join("out");
    let out_arg = out.to_str().unwrap();
    let run = |from: &Path, code| {
        bench_exits(
            &["report", "--from", from.to_str().unwrap(), "--out", out_arg],
            code,
        )
    };
    let err = run(&missing, 64);
    assert!(
        err.starts_with(&format!(
            "gembok-bench: invalid configuration (1 problem):\n  --from {}: No such file",
            missing.display()
        )),
        "{err}"
    );
    let garbage = dir.path().join("garbage.json");
    std::fs::write(&garbage, "{\"mode\": 1}").unwrap();
    let err = run(&garbage, 1);
    assert!(
        err.starts_with(&format!(
            "gembok-bench: {} is not the results.json of a gembok-bench run: ",
            garbage.display()
        )),
        "{err}"
    );
    let committed = Path::new(env!("CARGO_MANIFEST_DIR")).join("results/results.json");
    let err = run(&committed, 0);
    assert_eq!(
        err.trim(),
        format!(
            "wrote {} and the plots in {}",
            out.join("RESULTS.md").display(),
            out.display()
        )
    );
}

#[test]
fn a_congestion_control_that_is_no_name_exits_64() {
    let err = usage_error(&["smoke", "--congestion", "BBR;reboot"]);
    assert!(err.contains("not a congestion control name"), "{err}");
}

/// The run's sockets get the congestion control asked for, in a namespace of the run's own:
/// the host's default is left alone, and single-stream bulk is measured under the host's too.
#[test]
fn a_run_measures_in_its_own_namespace_with_the_congestion_control_asked_for() {
    let host = netns::congestion().unwrap();
    // reno is always built in; the host's default is rarely it, so bulk is measured twice.
    let (_out, r) = smoke(&["--congestion", "reno", "--scenarios", "bulk"]);
    assert_eq!(
        netns::congestion().unwrap(),
        host,
        "the host's default congestion control changed"
    );
    let facts = r.facts().expect("machine facts");
    // Read in the host's namespace: the run's own has no tcp_available_ulp.
    assert_ne!(facts.tcp_available_ulp, "(unavailable)");
    // The cpuidle driver as the kernel names it (with haltpoll's window after it).
    if let Ok(driver) = std::fs::read_to_string("/sys/devices/system/cpu/cpuidle/current_driver") {
        assert!(
            facts.cpuidle.starts_with(driver.trim()),
            "{}",
            facts.cpuidle
        );
    }
    let network = facts.network.expect("network facts");
    assert_eq!(network.host_congestion, host);
    if !rustix::process::geteuid().is_root() {
        assert!(network.namespace.starts_with("host"), "{network:?}");
        return;
    }
    assert_eq!(network.namespace, netns::OWN);
    assert_eq!(network.congestion, "reno");
    let labels = |topo: Topology| -> Vec<String> {
        report::samples_of(&r, "bulk")
            .into_iter()
            .filter(|s| s.topology == topo && s.metrics.get("gbit_per_s").is_some_and(|g| *g > 0.0))
            .map(|s| s.variant.clone())
            .collect()
    };
    for topo in [Topology::Pair, Topology::Inbound, Topology::Direct] {
        let under_host = single_stream_under(&host);
        let labels = labels(topo);
        assert!(
            labels.iter().any(|l| l == "1 stream"),
            "{topo:?}: {labels:?}"
        );
        assert_eq!(
            labels.contains(&under_host),
            host != "reno",
            "{topo:?}: {labels:?}"
        );
    }
}

#[test]
fn unknown_contender_is_refused_by_name() {
    let out = Command::new(env!("CARGO_BIN_EXE_gembok-bench"))
        .args([
            "smoke",
            "--contenders",
            "gembok-aws-lc-rs,envoy",
            "--no-install",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("envoy") && err.contains("haproxy"), "{err}");
}

#[test]
fn a_smoke_run_of_some_scenarios_measures_only_those() {
    let (out, r) = smoke(&[
        "--scenarios",
        "connections,latency",
        "--cps-rounds",
        "2",
        "--contenders",
        "gembok-aws-lc-rs,gembok-x25519",
    ]);
    // gembok-x25519 negotiates the established contenders' key exchange, the default the hybrid.
    for (id, group) in [
        ("gembok-aws-lc-rs", "X25519MLKEM768"),
        ("gembok-x25519", "X25519"),
    ] {
        let c = r.contenders.iter().find(|c| c.id == id).expect(id);
        let verdict = gembok_bench::run::verdict(c).expect("a verdict");
        assert!(verdict.passed(), "{verdict:?}");
        assert_eq!(verdict.negotiated.expect("negotiated").group, group, "{id}");
    }
    let measured: std::collections::BTreeSet<&str> =
        r.samples.iter().map(|s| s.scenario.as_str()).collect();
    let asked = [Scenario::Connections, Scenario::Latency].map(Scenario::name);
    assert_eq!(measured, asked.into(), "scenarios measured");
    // Two rounds of connections in the one repetition: two samples of each row, and the
    // report says what its figures are the median of.
    let mut rows = std::collections::BTreeMap::<_, usize>::new();
    for s in r.samples.iter().filter(|s| s.scenario == "connections") {
        *rows
            .entry((s.topology.as_str(), s.variant.as_str(), s.subject.as_str()))
            .or_default() += 1;
    }
    assert_eq!(
        rows.len(),
        7,
        "3 rows of each gembok and the direct one: {rows:?}"
    );
    assert!(rows.values().all(|&n| n == 2), "{rows:?}");
    let md = std::fs::read_to_string(out.path().join("RESULTS.md")).unwrap();
    assert!(
        md.contains("median of 2 samples of 0.3 s: 2 rounds in 1 repetition,"),
        "{md}"
    );
    // Its connection figures are context beside the judged default.
    let context = md
        .lines()
        .find(|l| l.contains("with `--key-exchange X25519` (the contenders' key exchange"))
        .expect("the gembok-x25519 context row");
    assert!(context.ends_with("| (context) | – |"), "{context}");
    // What was not measured gets no verdict in the targets table.
    let idle = md
        .lines()
        .find(|l| l.starts_with("| idle RSS per sidecar"))
        .expect("the idle RSS target row");
    assert!(idle.ends_with("| – |"), "{idle}");
}

#[test]
fn an_unknown_scenario_exits_64_naming_the_known_ones() {
    let err = usage_error(&["quick", "--scenarios", "bulk,handshakes"]);
    assert!(
        err.contains("handshakes") && err.contains("connections"),
        "{err}"
    );
}

#[test]
fn a_profile_run_writes_flamegraphs_and_where_the_cpu_went() {
    let profile = tempfile::tempdir().unwrap();
    // perf is installed by setup.sh; a machine whose kernel forbids perf_event_open (some
    // containers) cannot record at all, which no set-up can change.
    let probe = Command::new("perf")
        .args(["record", "-q", "-e", "cpu-clock", "-o"])
        .arg(profile.path().join("probe.data"))
        .args(["--", "true"])
        .output();
    match probe {
        Ok(o) if o.status.success() => {}
        other => {
            eprintln!("SKIP: perf cannot record on this machine: {other:?}");
            return;
        }
    }
    let _ = std::fs::remove_file(profile.path().join("probe.data"));
    let dir = profile.path().to_str().unwrap();
    smoke(&["--scenarios", "bulk,connections,latency", "--profile", dir]);
    let md = std::fs::read_to_string(profile.path().join("profile.md")).unwrap();
    for (section, svg) in [
        (
            "## One bulk stream through the pair: gembok-aws-lc-rs",
            "bulk-pair-gembok-aws-lc-rs.svg",
        ),
        (
            "## New connections through the pair: gembok-aws-lc-rs",
            "connections-pair-gembok-aws-lc-rs.svg",
        ),
        (
            "## 64 B ping-pong through the pair: gembok-aws-lc-rs",
            "latency-pair-gembok-aws-lc-rs.svg",
        ),
    ] {
        let body = md
            .split_once(section)
            .unwrap_or_else(|| panic!("no {section:?} in profile.md:\n{md}"))
            .1;
        // The sidecars made system calls, and their own code showed up by name.
        assert!(body.contains("| kernel: "), "{body}");
        assert!(body.contains(&format!("]({svg})")), "{body}");
        let svg = std::fs::read_to_string(profile.path().join(svg)).unwrap();
        assert!(svg.starts_with("<?xml"), "not an SVG");
        assert!(
            svg.contains("gembok_proxy::"),
            "no gembok frames in the flamegraph"
        );
    }
    // Handshakes are crypto, and so is sealing and opening records; bulk is also copies.
    let (bulk, rest) = md.split_once("## New connections").unwrap();
    let connections = rest.split("## 64 B").next().unwrap();
    assert!(connections.contains("| crypto | "), "{connections}");
    assert!(bulk.contains("| crypto | "), "{bulk}");
    assert!(bulk.contains("GiB on one stream"), "{bulk}");
    // Each side's column: the outbound seals and the inbound opens, and the two add up to the
    // total (to the rounding of three one-decimal figures).
    assert!(
        bulk.contains("| where | share | outbound | inbound |"),
        "{bulk}"
    );
    let row = |name: &str| -> [f64; 3] {
        let cells: Vec<f64> = bulk
            .lines()
            .find(|l| l.starts_with(&format!("| {name} | ")))
            .unwrap_or_else(|| panic!("no {name} row in:\n{bulk}"))
            .split('|')
            .filter_map(|cell| cell.trim().strip_suffix(" %")?.parse().ok())
            .collect();
        cells
            .try_into()
            .unwrap_or_else(|c| panic!("{name} row {c:?} in:\n{bulk}"))
    };
    let [total, outbound, inbound] = row("crypto");
    assert!(outbound > 0.0 && inbound > 0.0, "{bulk}");
    assert!((outbound + inbound - total).abs() <= 0.15, "{bulk}");
    // And each column is its own side: the outbound reads the app's bytes with `readv` (into
    // record-shaped slots), the inbound reads the sealed records with `recvfrom`.
    let [_, outbound, inbound] = row("kernel: readv");
    assert!(outbound > inbound, "readv: {bulk}");
    let [_, outbound, inbound] = row("kernel: recvfrom");
    assert!(inbound > outbound, "recvfrom: {bulk}");
    // perf's data files (tens of MB) are gone.
    let left: Vec<_> = std::fs::read_dir(profile.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".perf.data") || n.ends_with(".log"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

/// `report --out DIR` re-renders a run into DIR, report included: the report beside `benches/`
/// (the committed one, here a stand-in in a scratch working directory) is left alone.
#[test]
fn a_re_render_elsewhere_leaves_the_committed_report_alone() {
    let committed = Path::new(env!("CARGO_MANIFEST_DIR")).join("results/results.json");
    let work = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(work.path().join("benches/results")).unwrap();
    let stand_in = work.path().join("benches/RESULTS.md");
    std::fs::write(&stand_in, "the committed report\n").unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_gembok-bench"))
        .current_dir(work.path())
        .args(["report", "--from"])
        .arg(&committed)
        .args(["--out", "elsewhere"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "report failed:\n{stderr}");
    assert_eq!(
        std::fs::read_to_string(&stand_in).unwrap(),
        "the committed report\n"
    );
    let md = std::fs::read_to_string(work.path().join("elsewhere/RESULTS.md")).unwrap();
    assert!(md.starts_with("# gembok-bench results"), "{md:.200}");
    assert!(work.path().join("elsewhere/throughput.svg").exists());
    assert!(
        md.contains("(./throughput.svg)"),
        "the report links its plots where they are"
    );
}
