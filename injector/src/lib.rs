//! gembok-injector: adds the `gembok-proxy` sidecar to pods, as a Kubernetes mutating admission
//! webhook (`serve`) and as an offline command (`inject`). Both edges share one pure core.
//!
//! ```text
//! API server ─POST /mutate─▶ server ─▶ review ─┐
//!                                              ├─▶ inject (policy → annotations → sidecar → istio)
//! YAML file/stdin ─▶ workload (pod templates) ─┘        │
//!                                                       ▼
//!                         patch::diff(original, injected) ─▶ JSON Patch
//! ```
//!
//! The core ([`inject`], [`policy`], [`annotations`], [`image`], [`sidecar`], [`istio`], [`patch`]) never
//! touches the network, files or clocks; the edges ([`review`], [`server`], [`admin`],
//! [`workload`]) never decide anything about a pod.

#![forbid(unsafe_code)]

pub mod annotations;
pub mod image;
pub mod inject;
pub mod istio;
pub mod patch;
pub mod policy;
pub mod quantity;
pub mod sidecar;

pub use inject::{Context, Decision, InjectorConfig, Outcome, inject};
pub mod admin;
pub mod audit;
pub mod cli;
pub mod config;
pub mod metrics;
pub mod review;
pub mod sandbox;
pub mod server;
pub mod workload;
pub mod yaml;
