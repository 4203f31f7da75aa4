//! The proxy's configuration: plain data, parsed once at the edge from [`crate::cli`].
//!
//! [`Config::from_cli`] checks every value and returns *all* problems at once, each naming its
//! flag, so an operator fixes a manifest in one round instead of one error per pod restart.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use gembok_certwatch::CertSource;
use rustls::pki_types::ServerName;

use crate::cli::ProxyArgs;
use crate::identity::SanPattern;

pub mod cipher_suites;
pub mod fips;
pub mod key_exchange;
pub use cipher_suites::Suite;
pub use key_exchange::KxGroup;

/// Everything the proxy needs to run. Nothing below `main` reads the environment.
#[derive(Debug, Clone)]
pub struct Config {
    pub inbound: Vec<InboundRoute>,
    pub outbound: Vec<OutboundRoute>,
    pub certs: CertSource,
    pub admin: SocketAddr,
    pub client_auth: ClientAuth,
    pub log: LogConfig,
    pub limits: Limits,
    pub tls: TlsOptions,
    /// After SIGTERM, how long open connections may keep going.
    pub drain_grace: Duration,
    /// The start of the drain grace period during which listeners still accept.
    pub drain_delay: Duration,
    /// `--exit-with-app`: drain and exit once the app's processes are gone ([`crate::app_exit`]).
    pub exit_with_app: bool,
    /// `/ready` fails when the certificate expires sooner than this.
    pub cert_expiry_margin: Duration,
    /// Safety-net re-read interval for certificate files.
    pub reload_interval: Duration,
    /// `--crl`: certificate revocation list files, read and watched with the certificates.
    pub crl_files: Vec<PathBuf>,
    /// Runtime worker threads; `None` = the CPUs available to the process.
    pub workers: Option<usize>,
    /// `--ktls`.
    pub ktls: crate::ktls::Mode,
    /// `--sandbox`.
    pub sandbox: crate::sandbox::Mode,
    /// What the kernel can do; probed by `main` (not part of the command line).
    pub ktls_support: crate::ktls::Support,
    /// What `--sandbox` achieved, set by the binary before `run` (`gembok_sandbox_info`);
    /// `off` where nothing sandboxed the process (tests that call `run` in-process).
    pub sandboxed: crate::sandbox::Achieved,
    /// `--dns-cache`: how long an outbound route's resolved addresses are reused.
    pub dns_cache: Duration,
    /// `--record-limit`; `None` for the cipher's own limit.
    pub record_limit: Option<u64>,
    /// `--record-layer`.
    pub record_layer: crate::records::Choice,
}

/// `--inbound LISTEN=TARGET[,allow-san=PATTERN]...[,allow-san-file=PATH]...[,alpn=PROTO]...
/// [,proxy-protocol=v2]`
#[derive(Debug, Clone)]
pub struct InboundRoute {
    pub listen: SocketAddr,
    /// Where the app listens; always a loopback address (plaintext never leaves the pod).
    pub target: SocketAddr,
    /// With `allow_san_files` empty too: any client certificate that chains to the CA.
    pub allow_san: Vec<SanPattern>,
    /// Files of more patterns (one per line), reloaded with the certificates
    /// (`gembok_certwatch::san`); a client matching any pattern of either kind is admitted.
    pub allow_san_files: Vec<PathBuf>,
    /// Empty: use `--alpn`.
    pub alpn: Vec<Vec<u8>>,
    /// Tell the app who is calling: a PROXY protocol v2 header before the client's first byte
    /// (`crate::proxy_protocol`).
    pub proxy_protocol: bool,
}

/// `--outbound LISTEN=HOST:PORT[,server-name=NAME][,alpn=PROTO]...`
#[derive(Debug, Clone)]
pub struct OutboundRoute {
    /// Always a loopback address: the app's plaintext is only accepted from inside the pod.
    pub listen: SocketAddr,
    pub host: String,
    pub port: u16,
    /// The name the server's certificate must be valid for.
    pub server_name: ServerName<'static>,
    /// Empty: use `--alpn`.
    pub alpn: Vec<Vec<u8>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    Required,
    Optional,
    None,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provider {
    AwsLcRs,
    Ring,
}

impl Provider {
    pub const ALL: [Provider; 2] = [Provider::AwsLcRs, Provider::Ring];

    pub fn name(self) -> &'static str {
        match self {
            Provider::AwsLcRs => "aws-lc-rs",
            Provider::Ring => "ring",
        }
    }

    /// The provider called `name` (as `--crypto-provider` and `--aead` spell it).
    pub fn named(name: &str) -> Option<Provider> {
        Provider::ALL.into_iter().find(|p| p.name() == name)
    }
}

#[derive(Debug, Clone)]
pub struct LogConfig {
    /// `--log`: levels per target (`warn,gembok_proxy::conn=debug`), tracing's `Targets`.
    pub filter: tracing_subscriber::filter::Targets,
    pub json: bool,
}

/// Bounds on everything a peer controls.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub handshake_timeout: Duration,
    pub connect_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_connections: usize,
}

#[derive(Debug, Clone)]
pub struct TlsOptions {
    /// FIPS mode: the FIPS build ([`fips::BUILD`]); every choice below is one it allows.
    pub fips: bool,
    pub tls12: bool,
    pub provider: Provider,
    /// Which library seals and opens records; `None` is `--aead auto` (chosen by CPU, see
    /// `tls::record_library`).
    pub aead: Option<Provider>,
    /// `--cipher-suites`, most preferred first; `None` keeps Gembok's order ([`Suite::ALL`]).
    /// In FIPS mode `auto` is already resolved here, to the approved ones.
    pub cipher_suites: Option<Vec<Suite>>,
    /// `--key-exchange`, most preferred first; `None` keeps the provider's own list.
    pub key_exchange: Option<Vec<KxGroup>>,
    /// Default ALPN protocols for routes that set none.
    pub alpn: Vec<Vec<u8>>,
}

/// A comma-separated list of names, most preferred first (`--cipher-suites`, `--key-exchange`):
/// each looked up by `named`, in order, with a problem for an empty, unknown (`known` lists the
/// names there are) or repeated one. `what` is the kind of name, for the empty one's problem.
fn names_in_order<T: Copy + PartialEq + fmt::Display>(
    value: &str,
    what: &str,
    known: &[&str],
    named: impl Fn(&str) -> Option<T>,
) -> (Vec<T>, Vec<String>) {
    let mut found = Vec::new();
    let mut problems = Vec::new();
    for name in value.split(',').map(str::trim) {
        match named(name) {
            Some(n) if found.contains(&n) => problems.push(format!("{n} is named twice")),
            Some(n) => found.push(n),
            None if name.is_empty() => problems.push(format!("an empty {what} name")),
            None => problems.push(format!("`{name}` is not one of auto, {}", known.join(", "))),
        }
    }
    (found, problems)
}

/// Every problem found in the configuration, one per line.
#[derive(Debug, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<String>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0.len();
        let plural = if n == 1 { "" } else { "s" };
        writeln!(f, "invalid configuration ({n} problem{plural}):")?;
        for problem in &self.0 {
            writeln!(f, "  {problem}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// Collects problems while parsing continues.
#[derive(Default)]
struct Problems(Vec<String>);

impl Problems {
    fn check<T, E: fmt::Display>(&mut self, flag: &str, r: Result<T, E>) -> Option<T> {
        r.map_err(|e| self.0.push(format!("--{flag}: {e}"))).ok()
    }

    /// [`Problems::check`] for a parser that reports every problem it finds.
    fn check_each<T>(&mut self, flag: &str, r: Result<T, Vec<String>>) -> Option<T> {
        r.map_err(|problems| {
            for problem in problems {
                self.push(flag, problem);
            }
        })
        .ok()
    }

    fn push(&mut self, flag: &str, message: impl fmt::Display) {
        self.0.push(format!("--{flag}: {message}"));
    }
}

impl Config {
    /// Whether connections may be handed to the kernel: kTLS asked for (`auto` or `require`)
    /// and the start-up probe found the kernel able.
    pub fn kernel_tls(&self) -> bool {
        self.ktls != crate::ktls::Mode::Off && self.ktls_support.available()
    }

    /// The configuration `args` give this build (FIPS mode in the FIPS build) on this kernel
    /// (probed for kTLS unless `--ktls off`).
    pub fn from_cli(args: &ProxyArgs) -> Result<Config, ConfigErrors> {
        Config::parse(args, fips::BUILD, crate::ktls::probe)
    }

    /// The configuration `args` give a build that is the FIPS build if `fips` ([`fips`]: what
    /// it refuses, and what `auto` picks there), on a kernel that `probe` finds able to do what
    /// it reports (called only when kTLS may be used, so that `--ktls require` on a kernel
    /// without it is reported with every other problem).
    pub fn parse(
        args: &ProxyArgs,
        fips: bool,
        probe: impl FnOnce() -> crate::ktls::Support,
    ) -> Result<Config, ConfigErrors> {
        let mut p = Problems::default();

        let inbound: Vec<InboundRoute> = args
            .inbound
            .iter()
            .filter_map(|spec| p.check_each("inbound", parse_inbound(spec)))
            .collect();
        let outbound: Vec<OutboundRoute> = args
            .outbound
            .iter()
            .filter_map(|spec| p.check_each("outbound", parse_outbound(spec)))
            .collect();
        if args.inbound.is_empty() && args.outbound.is_empty() {
            p.0.push("--inbound/--outbound: nothing to do; give at least one route".to_owned());
        }

        let certs = cert_source(args, &mut p);
        let admin = p.check("admin", parse_addr(&args.admin));
        let client_auth = p.check(
            "inbound-client-auth",
            match args.inbound_client_auth.as_str() {
                "required" => Ok(ClientAuth::Required),
                "optional" => Ok(ClientAuth::Optional),
                "none" => Ok(ClientAuth::None),
                other => Err(format!("`{other}` is not one of required, optional, none")),
            },
        );
        if client_auth.is_some_and(|a| a != ClientAuth::Required)
            && inbound.iter().any(InboundRoute::checks_sans)
        {
            p.push(
                "inbound-client-auth",
                "allow-san needs client certificates; use `required` or drop allow-san",
            );
        }
        let json = p.check(
            "log-format",
            match args.log_format.as_str() {
                "text" => Ok(false),
                "json" => Ok(true),
                other => Err(format!("`{other}` is not one of text, json")),
            },
        );
        // Levels per target (`warn,gembok_proxy::conn=debug`): tracing's `Targets`, as the
        // injector's check of gembok.io/log-level reads it.
        let log_filter = p.check(
            "log",
            (args.log.parse::<tracing_subscriber::filter::Targets>())
                .map_err(|e| format!("`{}`: {e}", args.log)),
        );
        let handshake_timeout =
            p.check("handshake-timeout", parse_duration(&args.handshake_timeout));
        let connect_timeout = p.check("connect-timeout", parse_duration(&args.connect_timeout));
        let dns_cache = p.check("dns-cache", parse_duration_allow_zero(&args.dns_cache));
        let idle_timeout = p.check("idle-timeout", parse_duration(&args.idle_timeout));
        let max_connections = p.check(
            "max-connections",
            parse_at_most(&args.max_connections, MAX_CONNECTIONS),
        );
        let drain_grace = p.check("drain-grace", parse_duration_allow_zero(&args.drain_grace));
        let drain_delay = p.check("drain-delay", parse_duration_allow_zero(&args.drain_delay));
        if let (Some(delay), Some(grace)) = (drain_delay, drain_grace)
            && !delay.is_zero()
            && delay >= grace
        {
            p.push(
                "drain-delay",
                format!(
                    "`{}` must be shorter than --drain-grace ({}), which it is part of",
                    args.drain_delay, args.drain_grace
                ),
            );
        }
        let exit_with_app = p.check("exit-with-app", parse_bool(&args.exit_with_app));
        let cert_expiry_margin = p.check(
            "cert-expiry-margin",
            parse_duration_allow_zero(&args.cert_expiry_margin),
        );
        let reload_interval = p.check("reload-interval", parse_duration(&args.reload_interval));
        let crl_files = p.check_each("crl", parse_crl_files(&args.crl));
        let tls12 = p.check("tls12", parse_bool(&args.tls12));
        let provider = p.check(
            "crypto-provider",
            Provider::named(&args.crypto_provider)
                .ok_or_else(|| format!("`{}` is not one of aws-lc-rs, ring", args.crypto_provider)),
        );
        let aead = p.check(
            "aead",
            match args.aead.as_str() {
                "auto" => Ok(None),
                other => Provider::named(other)
                    .map(Some)
                    .ok_or_else(|| format!("`{other}` is not one of auto, aws-lc-rs, ring")),
            },
        );
        let cipher_suites = p.check_each(
            "cipher-suites",
            cipher_suites::parse(&args.cipher_suites, tls12),
        );
        let key_exchange = p.check_each(
            "key-exchange",
            key_exchange::parse(&args.key_exchange, provider, tls12),
        );
        let alpn = p.check("alpn", parse_alpn_list(&args.alpn));
        let workers = p.check(
            "workers",
            match args.workers.as_str() {
                "auto" => Ok(None),
                n => parse_at_most(n, MAX_WORKERS).map(Some),
            },
        );

        let mut ktls = p.check("ktls", args.ktls.parse::<crate::ktls::Mode>());
        let sandbox = p.check("sandbox", args.sandbox.parse::<crate::sandbox::Mode>());

        let record_limit = p.check(
            "record-limit",
            match args.record_limit.as_str() {
                "auto" => Ok(None),
                n => parse_positive(n).map(|n| Some(n as u64)),
            },
        );
        let record_layer = p.check(
            "record-layer",
            match args.record_layer.as_str() {
                "auto" if fips => Ok(crate::records::Choice::Rustls),
                "auto" | "gembok" => Ok(crate::records::Choice::Gembok),
                "rustls" => Ok(crate::records::Choice::Rustls),
                other => Err(format!("`{other}` is not one of auto, gembok, rustls")),
            },
        );
        let (mut aead, mut cipher_suites) = (aead, cipher_suites);
        if fips {
            fips::check(
                &fips::Choices {
                    provider,
                    aead,
                    cipher_suites: cipher_suites.as_ref().and_then(|s| s.as_deref()),
                    key_exchange: key_exchange.as_ref().and_then(|g| g.as_deref()),
                    ktls,
                    record_layer,
                },
                &mut p,
            );
            // What `auto` means there: records sealed by the module, in user space, under the
            // approved suites in Gembok's order.
            aead = aead.map(|a| a.or(Some(Provider::AwsLcRs)));
            cipher_suites = cipher_suites.map(|s| s.or_else(|| Some(fips::approved_suites())));
            ktls = match ktls {
                Some(crate::ktls::Mode::Auto) => Some(crate::ktls::Mode::Off),
                // Refused above: nothing to probe the kernel for.
                Some(crate::ktls::Mode::Require) => None,
                other => other,
            };
        }
        let ktls_support = match ktls {
            Some(crate::ktls::Mode::Off) | None => crate::ktls::Support::not_probed(),
            Some(_) => probe(),
        };
        if ktls == Some(crate::ktls::Mode::Require) && !ktls_support.available() {
            p.push(
                "ktls",
                format!("require, but this kernel cannot do it: {ktls_support}"),
            );
        }

        check_unique_listeners(&inbound, &outbound, admin, &mut p);
        check_targets_are_not_own_listeners(&inbound, &outbound, admin, &mut p);

        if !p.0.is_empty() {
            return Err(ConfigErrors(p.0));
        }
        // Every `None` above pushed a problem, so these all hold values now.
        let some = "checked above";
        Ok(Config {
            inbound,
            outbound,
            certs: certs.expect(some),
            admin: admin.expect(some),
            client_auth: client_auth.expect(some),
            log: LogConfig {
                filter: log_filter.expect(some),
                json: json.expect(some),
            },
            limits: Limits {
                handshake_timeout: handshake_timeout.expect(some),
                connect_timeout: connect_timeout.expect(some),
                idle_timeout: idle_timeout.expect(some),
                max_connections: max_connections.expect(some),
            },
            tls: TlsOptions {
                fips,
                tls12: tls12.expect(some),
                provider: provider.expect(some),
                aead: aead.expect(some),
                cipher_suites: cipher_suites.expect(some),
                key_exchange: key_exchange.expect(some),
                alpn: alpn.expect(some),
            },
            drain_grace: drain_grace.expect(some),
            drain_delay: drain_delay.expect(some),
            exit_with_app: exit_with_app.expect(some),
            cert_expiry_margin: cert_expiry_margin.expect(some),
            reload_interval: reload_interval.expect(some),
            crl_files: crl_files.expect(some),
            workers: workers.expect(some),
            ktls: ktls.expect(some),
            sandbox: sandbox.expect(some),
            ktls_support,
            sandboxed: crate::sandbox::Achieved::OFF,
            record_limit: record_limit.expect(some),
            record_layer: record_layer.expect(some),
            dns_cache: dns_cache.expect(some),
        })
    }
}

fn cert_source(args: &ProxyArgs, p: &mut Problems) -> Option<CertSource> {
    let files = [("cert", &args.cert), ("key", &args.key), ("ca", &args.ca)];
    let given: Vec<&str> = files
        .iter()
        .filter(|(_, v)| v.is_some())
        .map(|(n, _)| *n)
        .collect();
    match (&args.cert_dir, given.len()) {
        (Some(dir), 0) => Some(CertSource::Dir(dir.clone())),
        (Some(_), _) => {
            p.push(
                "cert-dir",
                format!(
                    "give either --cert-dir or --cert/--key/--ca, not both (also got --{})",
                    given.join(", --")
                ),
            );
            None
        }
        (None, 3) => Some(CertSource::Files {
            cert: args.cert.clone().expect("counted"),
            key: args.key.clone().expect("counted"),
            ca: args.ca.clone(),
        }),
        (None, 0) => {
            p.push(
                "cert-dir",
                "certificates are required: give --cert-dir DIR or --cert, --key and --ca",
            );
            None
        }
        (None, _) => {
            for (name, value) in files {
                if value.is_none() {
                    p.push(
                        name,
                        format!("required together with --{}", given.join(" and --")),
                    );
                }
            }
            None
        }
    }
}

/// This proxy's listen addresses, each with the flag that set it. Port 0 asks the kernel for a
/// free port, so it never clashes and is left out.
fn own_listeners<'a>(
    inbound: &'a [InboundRoute],
    outbound: &'a [OutboundRoute],
    admin: Option<SocketAddr>,
) -> impl Iterator<Item = (SocketAddr, &'static str)> + 'a {
    admin
        .map(|a| (a, "admin"))
        .into_iter()
        .chain(inbound.iter().map(|r| (r.listen, "inbound")))
        .chain(outbound.iter().map(|r| (r.listen, "outbound")))
        .filter(|(addr, _)| addr.port() != 0)
}

/// Whether `a` and `b` name the same listening socket: the same port, and the same address (an
/// IPv4 one also written as mapped into IPv6) or either one unspecified.
fn same_socket(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() == b.port()
        && (a.ip().is_unspecified()
            || b.ip().is_unspecified()
            || a.ip().to_canonical() == b.ip().to_canonical())
}

fn check_unique_listeners(
    inbound: &[InboundRoute],
    outbound: &[OutboundRoute],
    admin: Option<SocketAddr>,
    p: &mut Problems,
) {
    let mut seen: Vec<(SocketAddr, &str)> = Vec::new();
    for (addr, flag) in own_listeners(inbound, outbound, admin) {
        match seen.iter().find(|(other, _)| same_socket(*other, addr)) {
            Some((other, other_flag)) => p.push(
                flag,
                format!("listen address {addr} clashes with --{other_flag} {other}"),
            ),
            None => seen.push((addr, flag)),
        }
    }
}

/// An inbound target must not be one of this proxy's own listeners. The admin port above all:
/// it trusts loopback, and the proxy's connections to the app come from loopback, so any mesh
/// peer could POST /shutdown or read /metrics through the route. A listener of its own would
/// loop traffic back into the proxy.
fn check_targets_are_not_own_listeners(
    inbound: &[InboundRoute],
    outbound: &[OutboundRoute],
    admin: Option<SocketAddr>,
    p: &mut Problems,
) {
    for target in inbound.iter().map(|r| r.target) {
        let mut own = own_listeners(inbound, outbound, admin);
        if let Some((listen, flag)) = own.find(|(listen, _)| same_socket(*listen, target)) {
            p.push(
                "inbound",
                format!(
                    "target {target} is this proxy's own --{flag} listener {listen}; mesh peers \
                     would reach it through the route"
                ),
            );
        }
    }
}

// === route specs ===

/// `--crl`: comma-separated file paths (none by default), each once; every problem named.
fn parse_crl_files(value: &str) -> Result<Vec<PathBuf>, Vec<String>> {
    let mut files: Vec<PathBuf> = Vec::new();
    let mut problems = Vec::new();
    if value.trim().is_empty() {
        return Ok(files);
    }
    for path in value.split(',').map(str::trim).map(PathBuf::from) {
        if path.as_os_str().is_empty() {
            problems.push("an empty file name".to_owned());
        } else if files.contains(&path) {
            problems.push(format!("{} is named twice", path.display()));
        } else {
            files.push(path);
        }
    }
    unless_problems(files, problems)
}

/// `value` when nothing was wrong with what it came from, else every problem found.
fn unless_problems<T>(value: T, problems: Vec<String>) -> Result<T, Vec<String>> {
    if problems.is_empty() {
        Ok(value)
    } else {
        Err(problems)
    }
}

impl Config {
    /// Every route's allow-san files, each once, for the certificate watcher.
    pub fn allow_san_files(&self) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = self
            .inbound
            .iter()
            .flat_map(|r| r.allow_san_files.iter().cloned())
            .collect();
        files.sort();
        files.dedup();
        files
    }
}

impl InboundRoute {
    /// Whether client certificates are checked against an allow-san list (inline or in files).
    pub fn checks_sans(&self) -> bool {
        !self.allow_san.is_empty() || !self.allow_san_files.is_empty()
    }
}

/// `LISTEN=TARGET[,allow-san=PATTERN]...[,allow-san-file=PATH]...[,alpn=PROTO]...[,proxy-protocol=v2]`
pub fn parse_inbound(spec: &str) -> Result<InboundRoute, Vec<String>> {
    let (listen, target, options) = split_spec(spec).map_err(|e| vec![e])?;
    let mut problems = Vec::new();
    let mut bad = |problem: String| problems.push(format!("`{spec}`: {problem}"));
    let listen = parse_addr(listen)
        .map_err(|e| bad(format!("listen {e}")))
        .ok();
    let target = parse_addr(target)
        .map_err(|e| bad(format!("target {e}")))
        .ok();
    if let Some(target) = target
        && !target.ip().to_canonical().is_loopback()
    {
        bad(format!(
            "target {target} is not a loopback address; plaintext must not leave the pod"
        ));
    }
    let (mut allow_san, mut allow_san_files, mut alpn) = (Vec::new(), Vec::new(), Vec::new());
    let mut proxy_protocol = false;
    for (key, value) in options {
        match key {
            "allow-san" => match SanPattern::parse(value) {
                Ok(pattern) => allow_san.push(pattern),
                Err(e) => bad(format!("allow-san {e}")),
            },
            "allow-san-file" => allow_san_files.push(PathBuf::from(value)),
            "alpn" => match parse_alpn(value) {
                Ok(protocol) => alpn.push(protocol),
                Err(e) => bad(e),
            },
            "proxy-protocol" if value == "v2" => proxy_protocol = true,
            "proxy-protocol" => bad(format!(
                "proxy-protocol `{value}` is not supported (only v2, the binary form)"
            )),
            other => bad(format!(
                "unknown option `{other}` (expected allow-san, allow-san-file, alpn or proxy-protocol)"
            )),
        }
    }
    match (listen, target) {
        (Some(listen), Some(target)) if problems.is_empty() => Ok(InboundRoute {
            listen,
            target,
            allow_san,
            allow_san_files,
            alpn,
            proxy_protocol,
        }),
        _ => Err(problems),
    }
}

/// `LISTEN=HOST:PORT[,server-name=NAME][,alpn=PROTO]...`
pub fn parse_outbound(spec: &str) -> Result<OutboundRoute, Vec<String>> {
    let (listen, upstream, options) = split_spec(spec).map_err(|e| vec![e])?;
    let mut problems = Vec::new();
    let mut bad = |problem: String| problems.push(format!("`{spec}`: {problem}"));
    let listen = parse_addr(listen)
        .map_err(|e| bad(format!("listen {e}")))
        .ok();
    if let Some(listen) = listen
        && !listen.ip().to_canonical().is_loopback()
    {
        bad(format!(
            "listen {listen} is not a loopback address; outbound plaintext is only accepted from inside the pod"
        ));
    }
    let upstream = split_host_port(upstream).map_err(&mut bad).ok();
    let mut server_name = None;
    let mut alpn = Vec::new();
    for (key, value) in options {
        match key {
            "server-name" if server_name.is_none() => server_name = Some(value),
            "server-name" => bad("server-name given twice".to_owned()),
            "alpn" => match parse_alpn(value) {
                Ok(protocol) => alpn.push(protocol),
                Err(e) => bad(e),
            },
            other => bad(format!(
                "unknown option `{other}` (expected server-name or alpn)"
            )),
        }
    }
    let name = server_name.or(upstream.as_ref().map(|(host, _)| host.as_str()));
    let server_name = name.and_then(|name| {
        ServerName::try_from(name.to_owned())
            .map_err(|_| bad(format!("`{name}` is not a valid server name")))
            .ok()
    });
    match (listen, upstream, server_name) {
        (Some(listen), Some((host, port)), Some(server_name)) if problems.is_empty() => {
            Ok(OutboundRoute {
                listen,
                host,
                port,
                server_name,
                alpn,
            })
        }
        _ => Err(problems),
    }
}

type Options<'a> = Vec<(&'a str, &'a str)>;

fn split_spec(spec: &str) -> Result<(&str, &str, Options<'_>), String> {
    let mut parts = spec.split(',');
    let head = parts.next().unwrap_or_default();
    let (left, right) = head
        .split_once('=')
        .ok_or_else(|| format!("`{spec}`: expected LISTEN=TARGET"))?;
    let options = parts
        .map(|opt| {
            opt.split_once('=')
                .filter(|(k, v)| !k.is_empty() && !v.is_empty())
                .ok_or_else(|| format!("`{spec}`: option `{opt}` must be KEY=VALUE"))
        })
        .collect::<Result<_, _>>()?;
    Ok((left.trim(), right.trim(), options))
}

/// `IP:PORT`, `[IPv6]:PORT`, `localhost:PORT`, or `:PORT` (all interfaces).
pub(crate) fn parse_addr(s: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = s.parse::<SocketAddr>() {
        return Ok(addr);
    }
    let (host, port) = split_host_port(s)?;
    let ip = match host.as_str() {
        "" => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        "localhost" => IpAddr::V4(Ipv4Addr::LOCALHOST),
        other => {
            return Err(format!(
                "`{other}` is not an IP address (the only name allowed here is `localhost`)"
            ));
        }
    };
    Ok(SocketAddr::new(ip, port))
}

fn split_host_port(s: &str) -> Result<(String, u16), String> {
    let (host, port) = s
        .rsplit_once(':')
        .ok_or_else(|| format!("`{s}` must be HOST:PORT"))?;
    let port: u16 = port
        .parse()
        .map_err(|_| format!("`{s}`: `{port}` is not a port number"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    Ok((host.to_owned(), port))
}

fn parse_alpn(s: &str) -> Result<Vec<u8>, String> {
    if s.is_empty() || s.len() > 255 {
        return Err(format!("ALPN protocol `{s}` must be 1 to 255 bytes"));
    }
    Ok(s.as_bytes().to_vec())
}

fn parse_alpn_list(s: &str) -> Result<Vec<Vec<u8>>, String> {
    s.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(parse_alpn)
        .collect()
}

pub(crate) fn parse_duration(s: &str) -> Result<Duration, String> {
    match parse_duration_allow_zero(s)? {
        d if d.is_zero() => Err(format!("`{s}` must be longer than zero")),
        d => Ok(d),
    }
}

/// The longest duration any flag takes: a timer set further out than this is a typo, and one
/// far enough out overflows the clock (`--idle-timeout 500000000000y` panicked every connection).
const MAX_DURATION: Duration = Duration::from_secs(366 * 24 * 3600);

fn parse_duration_allow_zero(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s)
        .map_err(|e| format!("`{s}` is not a duration like 10s, 500ms or 2m ({e})"))?;
    if d > MAX_DURATION {
        return Err(format!(
            "`{s}` is longer than the most any duration here may be, 366 days"
        ));
    }
    Ok(d)
}

/// The most `--max-connections` takes: 10 million connections per direction already hold
/// 20 million file descriptors and, idle, about 70 GiB. Above it a typo, not a plan (and past
/// tokio's semaphore limit, a panic at start instead of exit 64).
pub const MAX_CONNECTIONS: usize = 10_000_000;
/// The most `--workers` takes: runtime threads are all started at once.
pub const MAX_WORKERS: usize = 1024;

/// A positive whole number no larger than `max`.
fn parse_at_most(s: &str, max: usize) -> Result<usize, String> {
    let n = parse_positive(s)?;
    if n > max {
        return Err(format!("`{s}` is more than the most this takes, {max}"));
    }
    Ok(n)
}

fn parse_positive(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!("`{s}` is not a positive whole number")),
    }
}

fn parse_bool(s: &str) -> Result<bool, String> {
    match s.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" | "" => Ok(false),
        _ => Err(format!("`{s}` is not true or false")),
    }
}

#[cfg(test)]
mod tests;
