//! gembok-certwatch: the certificate material both Gembok binaries serve, kept current.
//!
//! It reads a certificate chain, its private key and a CA bundle from files (usually a mounted
//! Kubernetes Secret), with the allow-san lists and revocation lists that go with them,
//! validates them *aside* (key matches the certificate, chain verifies against
//! the CA, certificate inside its validity window), builds whatever the caller needs from them
//! (rustls configs) and only then publishes the result by swapping one [`ArcSwap`] pointer. A bad
//! update never replaces good material: the last good one stays, the reason is logged and counted.
//!
//! ```text
//!  kubelet swaps ..data ──► notify (directory watch) ─┐
//!  periodic re-read (safety net) ─────────────────────┼─► debounce ─► load + validate ─► build ─► swap
//!  SIGHUP / ReloadHandle::reload_now() ───────────────┘                   │ failure
//!                                                                          └─► keep last good, log, count
//! ```
//!
//! Module map:
//! - [`source`]: where the files are ([`CertSource`]) and reading them in one consistent snapshot;
//! - [`material`]: parsing and validation into [`Material`] ([`LoadError`] says what is wrong);
//! - [`reload`]: the published value ([`Reloadable`]) and one reload attempt;
//! - [`watch`]: the background task that decides *when* to reload;
//! - [`san`]: `allow-san` peer-identity patterns ([`SanPattern`]), parsed and matched the same way by
//!   the proxy (client certificates) and the injector (annotations at admission), and allow-san
//!   list files ([`AllowList`]), reloaded with the certificates;
//! - `testing` (feature `test-util`): a directory swapped exactly as the kubelet swaps Secrets.
//!
//! [`ArcSwap`]: arc_swap::ArcSwap

#![forbid(unsafe_code)]

pub mod material;
pub mod reload;
pub mod san;
pub mod source;
#[cfg(any(test, feature = "test-util"))]
pub mod testing;
pub mod watch;

#[cfg(test)]
mod test_pki;

pub use material::{LeafInfo, LoadError, Material, Requirements, Usage};
pub use reload::{BuildError, Loaded, Outcome, ReloadError, Reloadable, Reloader};
pub use san::{AllowList, ListError, PatternError, SanPattern};
pub use source::CertSource;
pub use watch::{Options, ReloadHandle, start};
