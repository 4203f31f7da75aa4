//! The five scenarios. Each measures one thing against one subject (a contender in one
//! topology, or the direct baseline) and returns named figures; `run.rs` interleaves subjects
//! and repetitions.

pub mod bulk;
pub mod cps;
pub mod latency;
pub mod memory;
pub mod syscalls;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// How the load reaches the app.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Topology {
    /// client → outbound sidecar → mTLS → inbound sidecar → app.
    Pair,
    /// TLS client → inbound sidecar → app.
    Inbound,
    /// client → app.
    Direct,
}

impl Topology {
    pub fn as_str(self) -> &'static str {
        match self {
            Topology::Pair => "pair",
            Topology::Inbound => "inbound",
            Topology::Direct => "direct",
        }
    }
}

/// One measurement.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Sample {
    pub scenario: String,
    pub topology: Topology,
    pub variant: String,
    /// Contender id, or `direct`.
    pub subject: String,
    pub rep: u32,
    pub metrics: BTreeMap<String, f64>,
}

impl Sample {
    pub fn new(
        scenario: &str,
        topology: Topology,
        variant: &str,
        subject: &str,
        rep: u32,
        metrics: &[(&str, f64)],
    ) -> Self {
        Self {
            scenario: scenario.into(),
            topology,
            variant: variant.into(),
            subject: subject.into(),
            rep,
            metrics: metrics.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect(),
        }
    }
}
