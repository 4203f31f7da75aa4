//! gembok-certs-dev: a **development-only** PKI for Gembok, generated with rcgen.
//!
//! One root CA, one intermediate CA per region (path length 0) and, per region, one leaf per
//! service (DNS and SPIFFE URI SANs, serverAuth + clientAuth, ECDSA P-256) plus the injector's
//! webhook serving certificate. Every region chains to the same root, so a sidecar in `eu`
//! verifies a peer from `us` with nothing but `ca.crt`. The root's and the intermediates'
//! revocation lists go with them (`crl/ca.crl`), revoking nothing unless `--revoked-clients`
//! asks for a revoked certificate to test with.
//!
//! ```no_run
//! use gembok_certs_dev::{DevPki, Existing, LeafSpec, Options, Validity};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let pki = DevPki::generate(&Options::default())?;          // in memory
//! pki.write("certs-dev/out".as_ref(), Existing::Refuse)?;     // layout: README.md
//! let eu = pki.region("eu").unwrap();
//! let expired = eu.intermediate.issue(&LeafSpec::new("old").dns("old.test").validity(Validity::expired()))?;
//! # let _ = expired; Ok(()) }
//! ```
//!
//! Module map: [`options`] (what to generate, checks), [`spec`] (what a leaf should contain),
//! [`issue`] (CAs and signing), [`pki`] (the whole tree), [`layout`] (file paths),
//! [`write`](mod@write) (files, modes, atomic replace), [`k8s`] (Secret and kustomization
//! manifests), [`cli`] (the binary's flags).

#![forbid(unsafe_code)]

pub mod cli;
pub mod issue;
pub mod k8s;
pub mod layout;
pub mod options;
pub mod pki;
pub mod spec;
pub mod write;

pub use issue::{Ca, IssueError, Leaf};
pub use options::{Field, Options, Problem};
pub use pki::{DevPki, GenerateError, Region};
pub use spec::{KeyType, LeafSpec, Usage, Validity, spiffe_id};
/// The `time` crate, whose `OffsetDateTime` appears in [`Validity`].
pub use time;
pub use write::{Existing, WriteError, Written};
