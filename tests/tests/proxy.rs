//! Black-box tests of the real `gembok-proxy` binary. One test binary, one module per concern.
//!
//! Every test starts its own processes on port 0 and waits on `/ready` or on a port, never on a
//! sleep. `cargo nextest run --workspace` builds the binaries it runs (`-p gembok-tests` alone does not).

#[path = "proxy/support.rs"]
mod support;

#[path = "proxy/allow_list.rs"]
mod allow_list;
#[path = "proxy/clients.rs"]
mod clients;
#[path = "proxy/exit_with_app.rs"]
mod exit_with_app;
#[path = "proxy/fips.rs"]
mod fips;
#[path = "proxy/half_close.rs"]
mod half_close;
#[path = "proxy/lifecycle.rs"]
mod lifecycle;
#[path = "proxy/limits.rs"]
mod limits;
#[path = "proxy/opening.rs"]
mod opening;
#[path = "proxy/proxy_protocol.rs"]
mod proxy_protocol;
#[path = "proxy/records.rs"]
mod records;
#[path = "proxy/rejections.rs"]
mod rejections;
#[path = "proxy/reload.rs"]
mod reload;
#[path = "proxy/revocation.rs"]
mod revocation;
#[path = "proxy/roundtrip.rs"]
mod roundtrip;
#[path = "proxy/sandbox.rs"]
mod sandbox;
#[path = "proxy/sighup.rs"]
mod sighup;
#[path = "proxy/wait_ready.rs"]
mod wait_ready;
