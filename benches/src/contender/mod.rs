//! The proxies under test. Each kind writes its configuration from a template in code (the
//! same certificates, TLS 1.3 only, client certificates required, ECDSA P-256) and starts an
//! outbound sidecar (plaintext in, mTLS out) and an inbound sidecar (mTLS in, plaintext out) as
//! two processes, like two pods. hitch only terminates TLS, so it has no outbound side.
//!
//! Every outbound side has three routes: `main` to the inbound side, `probe` to the harness's
//! TLS server that records what the sidecar negotiated, and `rogue` to a server with a foreign
//! certificate that the sidecar must refuse (see `verify.rs`).

mod gembok;
pub use gembok::data_paths;
mod haproxy;
mod hitch;
mod nginx;
mod stunnel;

use std::net::{SocketAddr, TcpListener as StdListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use gembok_proxy::config::Provider;

use crate::pki::Pki;
use crate::procs::{self, Proc};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    Gembok(ProviderKind),
    /// gembok with aws-lc-rs and `--key-exchange X25519`: the key exchange every established
    /// contender negotiates (OpenSSL 3.0 has no ML-KEM), so its handshakes do the same work as
    /// theirs. Context beside the judged defaults, which negotiate X25519MLKEM768.
    GembokX25519,
    /// An extra gembok build or setting under test (`--variant`), index into [`variants`].
    Variant(usize),
    Haproxy,
    Stunnel,
    Nginx,
    Hitch,
}

/// A gembok build or flag set measured beside the default, for before/after figures from one
/// interleaved run: `--variant NAME=BINARY[,ARG...]` (e.g. `w1=target/release/gembok-proxy,--workers=1`).
#[derive(Debug, Clone)]
pub struct Variant {
    /// `gembok-NAME` in reports.
    pub id: &'static str,
    pub bin: PathBuf,
    pub args: Vec<String>,
}

static VARIANTS: std::sync::OnceLock<Vec<Variant>> = std::sync::OnceLock::new();

/// Registers the variants (once, before any contender starts; checked by
/// [`crate::usage::variants`]); returns their kinds.
pub fn set_variants(variants: Vec<Variant>) -> Result<Vec<Kind>> {
    let kinds = (0..variants.len()).map(Kind::Variant).collect();
    VARIANTS
        .set(variants)
        .map_err(|_| anyhow::anyhow!("variants already set"))?;
    Ok(kinds)
}

pub fn variants() -> &'static [Variant] {
    VARIANTS.get().map_or(&[], Vec::as_slice)
}

/// `gembok_proxy::config::Provider` with the traits a table key needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ProviderKind {
    AwsLcRs,
    Ring,
}

impl ProviderKind {
    pub fn provider(self) -> Provider {
        match self {
            ProviderKind::AwsLcRs => Provider::AwsLcRs,
            ProviderKind::Ring => Provider::Ring,
        }
    }
}

impl Kind {
    pub const ALL: [Kind; 7] = [
        Kind::Gembok(ProviderKind::AwsLcRs),
        Kind::Gembok(ProviderKind::Ring),
        Kind::GembokX25519,
        Kind::Haproxy,
        Kind::Stunnel,
        Kind::Nginx,
        Kind::Hitch,
    ];

    /// Name in reports and on the command line.
    pub fn id(self) -> &'static str {
        match self {
            Kind::Gembok(ProviderKind::AwsLcRs) => "gembok-aws-lc-rs",
            Kind::Gembok(ProviderKind::Ring) => "gembok-ring",
            Kind::GembokX25519 => "gembok-x25519",
            Kind::Variant(i) => variants()[i].id,
            Kind::Haproxy => "haproxy",
            Kind::Stunnel => "stunnel4",
            Kind::Nginx => "nginx",
            Kind::Hitch => "hitch",
        }
    }

    pub fn parse(s: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.id() == s)
    }

    pub fn is_gembok(self) -> bool {
        matches!(
            self,
            Kind::Gembok(_) | Kind::GembokX25519 | Kind::Variant(_)
        )
    }

    /// Can originate TLS (has an outbound side, so takes part in the pair topology).
    pub fn has_outbound(self) -> bool {
        self != Kind::Hitch
    }

    /// Debian packages that provide it (none for gembok: built from this workspace).
    pub fn packages(self) -> &'static [&'static str] {
        match self {
            Kind::Gembok(_) | Kind::GembokX25519 | Kind::Variant(_) => &[],
            Kind::Haproxy => &["haproxy"],
            Kind::Stunnel => &["stunnel4"],
            Kind::Nginx => &["nginx", "libnginx-mod-stream"],
            Kind::Hitch => &["hitch"],
        }
    }

    /// The program and the files that must exist for it to run.
    pub fn required_files(self) -> &'static [&'static str] {
        match self {
            Kind::Gembok(_) | Kind::GembokX25519 | Kind::Variant(_) => &[],
            Kind::Haproxy => &["/usr/sbin/haproxy"],
            Kind::Stunnel => &["/usr/bin/stunnel4"],
            Kind::Nginx => &["/usr/sbin/nginx", nginx::STREAM_MODULE],
            Kind::Hitch => &["/usr/sbin/hitch"],
        }
    }

    /// `program args` printing the version (first line kept).
    pub fn version_command(self) -> Option<(&'static str, &'static [&'static str])> {
        match self {
            Kind::Gembok(_) | Kind::GembokX25519 | Kind::Variant(_) => None,
            Kind::Haproxy => Some(("/usr/sbin/haproxy", &["-v"])),
            Kind::Stunnel => Some(("/usr/bin/stunnel4", &["-version"])),
            Kind::Nginx => Some(("/usr/sbin/nginx", &["-v"])),
            Kind::Hitch => Some(("/usr/sbin/hitch", &["--version"])),
        }
    }

    /// The TLS library it uses, for the report. Gembok's records may be sealed by the other
    /// library (`--aead auto`, decided by the CPU): the report says so.
    pub fn tls_library(self) -> String {
        match self {
            Kind::Gembok(p) => {
                let records = gembok_proxy::tls::record_library(p.provider(), None);
                if records == p.provider() {
                    format!("rustls + {}", p.provider().name())
                } else {
                    format!(
                        "rustls + {} (records: {}, `--aead auto` on this CPU)",
                        p.provider().name(),
                        records.name()
                    )
                }
            }
            Kind::GembokX25519 => format!(
                "{}, `--key-exchange X25519`",
                Kind::Gembok(ProviderKind::AwsLcRs).tls_library()
            ),
            Kind::Variant(_) => "rustls (variant build/flags)".into(),
            _ => "OpenSSL (system)".into(),
        }
    }
}

/// What every contender is started with.
pub struct Env<'a> {
    pub pki: &'a Pki,
    pub gembok_bin: &'a Path,
    /// The app (echo/sink server) behind every inbound side.
    pub app: SocketAddr,
    /// Harness TLS servers for the outbound checks.
    pub probe: SocketAddr,
    pub rogue: SocketAddr,
    /// Scratch directory for configs, pid files and logs.
    pub work: &'a Path,
    pub workers: usize,
    /// The open-file limit every contender inherits (sizes their connection limits).
    pub nofile: u64,
}

/// TLS 1.3 suites in gembok's order (AES-128-GCM first), given to every OpenSSL contender so
/// that all of them negotiate the same cipher (OpenSSL's own default puts AES-256-GCM first).
pub const TLS13_SUITES: &str =
    "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256";

/// Listen addresses of one contender.
#[derive(Debug, Clone)]
pub struct Ports {
    pub out_main: SocketAddr,
    pub out_probe: SocketAddr,
    pub out_rogue: SocketAddr,
    pub inbound: SocketAddr,
    pub admin_out: SocketAddr,
    pub admin_in: SocketAddr,
}

impl Ports {
    pub fn pick() -> Result<Ports> {
        Ok(Ports {
            out_main: free_port()?,
            out_probe: free_port()?,
            out_rogue: free_port()?,
            inbound: free_port()?,
            admin_out: free_port()?,
            admin_in: free_port()?,
        })
    }
}

/// A free loopback port (bound and released; nothing else on this host races for it).
pub fn free_port() -> Result<SocketAddr> {
    Ok(StdListener::bind("127.0.0.1:0")?.local_addr()?)
}

/// A contender's two processes.
#[derive(Debug)]
pub struct Running {
    pub kind: Kind,
    pub ports: Ports,
    pub outbound: Option<Proc>,
    pub inbound: Proc,
    /// Resident memory of each side right after it became ready, before any traffic.
    pub idle_out: Option<procs::Rss>,
    pub idle_in: procs::Rss,
}

impl Running {
    pub fn stop(&self) {
        if let Some(o) = &self.outbound {
            procs::stop(o);
        }
        procs::stop(&self.inbound);
    }

    /// CPU seconds used so far by (outbound, inbound).
    pub fn cpu(&self) -> (f64, f64) {
        (
            self.outbound
                .as_ref()
                .map_or(0.0, |o| procs::cpu_seconds(o.pid)),
            procs::cpu_seconds(self.inbound.pid),
        )
    }
}

/// The pieces of one side before it is spawned.
struct Launch {
    name: String,
    command: Command,
    /// Listeners that must accept before the side counts as ready.
    listens: Vec<SocketAddr>,
    /// gembok: its admin address, polled for `GET /ready` → 200.
    admin: Option<SocketAddr>,
}

/// Writes the configs and starts the inbound side, then the outbound side, each ready. Ports are
/// picked free and released before the contender binds them, so another process (a parallel test)
/// can take one in between: a start that fails with "Address already in use" is retried with new
/// ports.
pub fn start(kind: Kind, env: &Env<'_>) -> Result<Running> {
    const ATTEMPTS: usize = 3;
    for attempt in 1.. {
        match start_once(kind, env) {
            Err(e) if attempt < ATTEMPTS && format!("{e:#}").contains("Address already in use") => {
                eprintln!(
                    "{}: a port was taken meanwhile; retrying with new ports",
                    kind.id()
                );
            }
            result => return result,
        }
    }
    unreachable!("the loop returns by its last attempt")
}

fn start_once(kind: Kind, env: &Env<'_>) -> Result<Running> {
    let dir = env.work.join(kind.id());
    std::fs::create_dir_all(&dir)?;
    let ports = Ports::pick()?;
    let (inbound, outbound) = match kind {
        Kind::Gembok(p) => gembok::launches(p, env.gembok_bin, &[], env, &ports),
        Kind::GembokX25519 => {
            let x25519 = ["--key-exchange".to_owned(), "X25519".to_owned()];
            gembok::launches(ProviderKind::AwsLcRs, env.gembok_bin, &x25519, env, &ports)
        }
        Kind::Variant(i) => {
            let v = &variants()[i];
            gembok::launches(ProviderKind::AwsLcRs, &v.bin, &v.args, env, &ports)
        }
        Kind::Haproxy => haproxy::launches(env, &ports, &dir)?,
        Kind::Stunnel => stunnel::launches(env, &ports, &dir)?,
        Kind::Nginx => nginx::launches(env, &ports, &dir)?,
        Kind::Hitch => (hitch::launch(env, &ports, &dir)?, None),
    };
    let inbound = launch(inbound, &dir)?;
    let idle_in = procs::rss(inbound.pid);
    let outbound = match outbound.map(|o| launch(o, &dir)).transpose() {
        Ok(o) => o,
        Err(e) => {
            procs::stop(&inbound);
            return Err(e);
        }
    };
    let idle_out = outbound.as_ref().map(|o| procs::rss(o.pid));
    Ok(Running {
        kind,
        ports,
        outbound,
        inbound,
        idle_out,
        idle_in,
    })
}

fn launch(mut l: Launch, dir: &Path) -> Result<Proc> {
    l.command
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin");
    let log = dir.join(format!("{}.log", l.name));
    let proc = procs::spawn(&l.name, l.command, &log)?;
    if let Err(e) = wait_ready(&proc, &l.listens, l.admin, Duration::from_secs(15)) {
        procs::stop(&proc);
        bail!(
            "{e:#}\n--- {} ---\n{}",
            log.display(),
            procs::log_tail(&proc, 15)
        );
    }
    Ok(proc)
}

/// Polls until every listener is listening (and gembok's `/ready` says 200); never sleeps
/// blindly. Listeners are found in the kernel's socket table, not by connecting: a connection
/// to an outbound side would start a proxied connection and its TLS handshake, so the idle
/// memory measured next would no longer be the memory of a sidecar that has carried nothing.
fn wait_ready(
    proc: &Proc,
    listens: &[SocketAddr],
    admin: Option<SocketAddr>,
    timeout: Duration,
) -> Result<()> {
    let deadline = Instant::now() + timeout;
    let mut pending: Vec<SocketAddr> = listens.to_vec();
    let mut admin = admin;
    loop {
        if let Some(status) = procs::exited(proc) {
            bail!("{} exited during start-up ({status})", proc.name);
        }
        if let Some(a) = admin
            && http_status(a, "/ready").ok() == Some(200)
        {
            admin = None;
        }
        let listening = listening_ports()?;
        pending.retain(|a| !listening.contains(&a.port()));
        if pending.is_empty() && admin.is_none() {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "{} not ready after {timeout:?} (still waiting for {pending:?}{})",
                proc.name,
                if admin.is_some() { " and /ready" } else { "" }
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// TCP ports in the LISTEN state in this network namespace (`/proc/net/tcp` and `tcp6`; the
/// run's ports are its own, see [`Ports::pick`]).
fn listening_ports() -> Result<Vec<u16>> {
    let mut ports = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        match std::fs::read_to_string(table) {
            Ok(text) => ports.extend(parse_listening(&text)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {} // no IPv6
            Err(e) => return Err(e).with_context(|| format!("reading {table}")),
        }
    }
    Ok(ports)
}

/// The local ports of the LISTEN (`0A`) rows of a `/proc/net/tcp`-style table.
fn parse_listening(table: &str) -> impl Iterator<Item = u16> + '_ {
    table.lines().skip(1).filter_map(|line| {
        let mut fields = line.split_whitespace();
        let local = fields.nth(1)?;
        let state = fields.nth(1)?;
        let port = local.rsplit_once(':')?.1;
        if state != "0A" {
            return None;
        }
        u16::from_str_radix(port, 16).ok()
    })
}

/// Status code of a plain HTTP/1.0 GET (gembok's admin listener).
pub fn http_status(addr: SocketAddr, path: &str) -> Result<u16> {
    let body = http_get(addr, path)?;
    body.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .context("no HTTP status line")
}

pub fn http_get(addr: SocketAddr, path: &str) -> Result<String> {
    use std::io::{Read, Write};
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(500))?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out)
}

/// The directory holding a config, for templates that want absolute paths.
fn path(p: &Path) -> String {
    p.display().to_string()
}

fn write_config(dir: &Path, name: &str, text: &str) -> Result<PathBuf> {
    let p = dir.join(name);
    std::fs::write(&p, text).with_context(|| format!("write {}", p.display()))?;
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listening_ports_are_read_from_the_listen_rows_only() {
        // Rows as Linux writes them: 8080 listening, 8081 established, 8082 in TIME_WAIT.
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0000000000000000 100 0 0 10 0
   1: 0100007F:1F91 0100007F:D431 01 00000000:00000000 00:00000000 00000000     0        0 2 1 0000000000000000 20 4 30 10 -1
   2: 0100007F:1F92 0100007F:D432 06 00000000:00000000 03:00000F5A 00000000     0        0 0 3 0000000000000000
";
        assert_eq!(parse_listening(table).collect::<Vec<_>>(), vec![8080]);
    }

    #[test]
    fn a_bound_listener_is_found_without_connecting_to_it() {
        let listener = StdListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        assert!(listening_ports().unwrap().contains(&port));
        listener.set_nonblocking(true).unwrap();
        // Found in the table, and nothing connected: no connection waits to be accepted.
        assert_eq!(
            listener.accept().unwrap_err().kind(),
            std::io::ErrorKind::WouldBlock
        );
        drop(listener);
        assert!(!listening_ports().unwrap().contains(&port));
    }
}
