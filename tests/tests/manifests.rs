//! Consistency checks over the rendered kustomize layout in `manifests/` (issue 4): every
//! overlay and cluster is rendered with `kubectl kustomize`, run through the real
//! `gembok-injector inject` where the check is about injected pods, and cross-checked as a
//! whole. Schema validation and checkov run from `manifests/tests/run.sh`.
//!
//! Needs `kubectl` and the `gembok-injector` binary (`cargo build -p gembok-injector`, or
//! `GEMBOK_INJECTOR_BIN`).

#[path = "manifests/support.rs"]
mod support;

#[path = "manifests/operators.rs"]
mod operators;

#[path = "manifests/layout.rs"]
mod layout;

#[path = "manifests/workloads.rs"]
mod workloads;

#[path = "manifests/sidecar.rs"]
mod sidecar;

#[path = "manifests/netpol.rs"]
mod netpol;

#[path = "manifests/mesh.rs"]
mod mesh;

#[path = "manifests/dockerfile.rs"]
mod dockerfile;

#[path = "manifests/operations.rs"]
mod operations;

#[path = "manifests/versions.rs"]
mod versions;

#[path = "manifests/fips.rs"]
mod fips;

#[path = "manifests/authz.rs"]
mod authz;

#[path = "manifests/tracing.rs"]
mod tracing;
