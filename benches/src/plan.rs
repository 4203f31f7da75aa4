//! How big each scenario is, per mode. Every scenario is bounded both in bytes or counts and
//! in time, so a slow contender makes a run longer by a bounded amount, never forever.

use std::time::Duration;

use crate::placement::Placement;

#[derive(Debug, Clone, serde::Serialize)]
pub struct Plan {
    /// Repetitions of the timed scenarios (bulk, connections, latency); contenders interleaved.
    pub reps: u32,
    pub bulk_one_stream_bytes: u64,
    pub bulk_four_streams_bytes: u64,
    /// Bytes of the inbound-only bulk run (the TLS client in the harness is also the sender).
    pub bulk_inbound_bytes: u64,
    /// A bulk transfer not finished by then fails (the scenario's time bound).
    pub bulk_max: Duration,
    pub cps_duration: Duration,
    /// Rounds of the connection scenario in each repetition, each in an order of its own: the
    /// connection rate moves most from one sample to the next (by up to a third on a shared
    /// host), so it gets more, shorter samples.
    pub cps_rounds: u32,
    pub cps_concurrency: usize,
    pub latency_small_round_trips: usize,
    pub latency_large_round_trips: usize,
    pub latency_warmup: usize,
    /// Fixed request rates (64 B requests per second over one connection).
    pub latency_rates: Vec<u32>,
    pub latency_rate_duration: Duration,
    /// Idle connection counts held open at once (cumulative steps).
    pub memory_steps: Vec<usize>,
    pub memory_max: Duration,
    pub syscalls_bytes: u64,
    /// The scenarios this run measures (`quick --scenarios`; every one otherwise).
    pub scenarios: Vec<Scenario>,
    /// Also measure single-stream bulk under the host's congestion control when the run's is
    /// another one (see [`crate::netns`]).
    pub bulk_under_host_congestion: bool,
    /// Fixed placements under which the 64 B ping-pong is measured again, beside the kernel's
    /// own (see [`crate::placement`]).
    pub latency_placements: Vec<Placement>,
}

/// The scenarios, as `--scenarios` names them and as results.json records their samples
/// ([`Scenario::name`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Scenario {
    Bulk,
    Connections,
    Latency,
    Memory,
    Syscalls,
}

impl Scenario {
    /// Every scenario: what a complete run must have produced figures for.
    pub const ALL: [Scenario; 5] = [
        Scenario::Bulk,
        Scenario::Connections,
        Scenario::Latency,
        Scenario::Memory,
        Scenario::Syscalls,
    ];

    /// The scenario's name in samples (`Sample::scenario`) and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Scenario::Bulk => "bulk",
            Scenario::Connections => "connections",
            Scenario::Latency => "latency",
            Scenario::Memory => "memory",
            Scenario::Syscalls => "syscalls",
        }
    }
}

const MIB: u64 = 1024 * 1024;

impl Plan {
    /// The full run that regenerates `benches/RESULTS.md` (about 21 minutes on 2 cores).
    pub fn full() -> Plan {
        Plan {
            // Five: bulk and connection rates through a pair move by 15–30 % between samples on
            // a shared host, and a median of three follows one odd sample. (The verdicts on the
            // 2× and 3× targets still differ between runs here: see tuning.md.)
            reps: 5,
            bulk_one_stream_bytes: 2048 * MIB,
            bulk_four_streams_bytes: 2048 * MIB,
            bulk_inbound_bytes: 1024 * MIB,
            bulk_max: Duration::from_secs(60),
            cps_duration: Duration::from_secs(2),
            cps_rounds: 2,
            cps_concurrency: 8,
            latency_small_round_trips: 10_000,
            latency_large_round_trips: 3_000,
            latency_warmup: 300,
            latency_rates: vec![500, 2_000],
            latency_rate_duration: Duration::from_secs(2),
            memory_steps: vec![1_000, 10_000],
            memory_max: Duration::from_secs(90),
            syscalls_bytes: 512 * MIB,
            scenarios: Scenario::ALL.to_vec(),
            bulk_under_host_congestion: true,
            latency_placements: vec![Placement::OneCpu, Placement::PerPod],
        }
    }

    /// Every scenario at a tiny size, so the harness cannot rot (no timing meaning at all).
    pub fn smoke() -> Plan {
        Plan {
            reps: 1,
            // Large enough that each side uses several CPU clock ticks (10 ms each) even at
            // gembok's ~0.3 s/GiB per side, or its CPU per GiB could read 0 (16 MiB did).
            bulk_one_stream_bytes: 128 * MIB,
            bulk_four_streams_bytes: 128 * MIB,
            bulk_inbound_bytes: 128 * MIB,
            bulk_max: Duration::from_secs(10),
            cps_duration: Duration::from_millis(300),
            cps_rounds: 1,
            cps_concurrency: 2,
            latency_small_round_trips: 50,
            latency_large_round_trips: 20,
            latency_warmup: 5,
            latency_rates: vec![200],
            latency_rate_duration: Duration::from_millis(250),
            memory_steps: vec![20, 50],
            memory_max: Duration::from_secs(20),
            syscalls_bytes: 8 * MIB,
            scenarios: Scenario::ALL.to_vec(),
            bulk_under_host_congestion: true,
            latency_placements: vec![Placement::OneCpu, Placement::PerPod],
        }
    }

    /// A quick look (one repetition, smaller sizes) while tuning.
    pub fn quick() -> Plan {
        Plan {
            reps: 1,
            bulk_one_stream_bytes: 1024 * MIB,
            bulk_four_streams_bytes: 1024 * MIB,
            bulk_inbound_bytes: 512 * MIB,
            cps_rounds: 1,
            latency_small_round_trips: 5_000,
            latency_large_round_trips: 1_000,
            memory_steps: vec![1_000],
            syscalls_bytes: 256 * MIB,
            bulk_under_host_congestion: false,
            ..Plan::full()
        }
    }

    /// Whether this run measures `scenario`.
    pub fn runs(&self, scenario: Scenario) -> bool {
        self.scenarios.contains(&scenario)
    }
}
