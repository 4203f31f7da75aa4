//! The `gembok.io/*` pod annotations: their keys, their syntax and the error policy.
//!
//! Policy (documented in README.md): a bad value in an annotation that decides *what is
//! encrypted, whom to trust or what runs* (`inbound`, `outbound`, `allowed-sans`, `cert-secret`,
//! `image`, `sidecar-mode`) rejects the pod, because guessing there could leave traffic in
//! plaintext or trust the wrong peer. A bad value in a *tuning* annotation (`log-level`,
//! resources, `drain-seconds`) falls back to the default with a warning naming the annotation.
//! Unknown `gembok.io/` keys get a warning (usually a typo).

use std::collections::BTreeMap;

use gembok_certwatch::san::SanPattern;
use rustls::pki_types::{IpAddr, ServerName};
use thiserror::Error;
use tracing_subscriber::filter::Targets;

use crate::quantity;

/// Pod label that opts a pod out (`"false"`).
pub const INJECT_LABEL: &str = "gembok.io/inject";
pub const INBOUND: &str = "gembok.io/inbound";
pub const OUTBOUND: &str = "gembok.io/outbound";
pub const ALLOWED_SANS: &str = "gembok.io/allowed-sans";
/// A ConfigMap whose `allowed-sans` key lists more SAN patterns, one per line; mounted, so the
/// proxy reloads it when the ConfigMap changes (no restart).
pub const ALLOWED_SANS_CONFIGMAP: &str = "gembok.io/allowed-sans-configmap";
pub const CERT_SECRET: &str = "gembok.io/cert-secret";
pub const LOG_LEVEL: &str = "gembok.io/log-level";
pub const CPU_REQUEST: &str = "gembok.io/proxy-cpu-request";
pub const CPU_LIMIT: &str = "gembok.io/proxy-cpu-limit";
pub const MEMORY_REQUEST: &str = "gembok.io/proxy-memory-request";
pub const MEMORY_LIMIT: &str = "gembok.io/proxy-memory-limit";
pub const DRAIN_SECONDS: &str = "gembok.io/drain-seconds";
pub const IMAGE: &str = "gembok.io/image";
pub const SIDECAR_MODE: &str = "gembok.io/sidecar-mode";
pub const KEY_EXCHANGE: &str = "gembok.io/key-exchange";
pub const CIPHER_SUITES: &str = "gembok.io/cipher-suites";
/// `"true"`: the sidecar is the proxy's FIPS build (`--proxy-image-fips`, unless
/// `gembok.io/image` names one), and the suites and groups asked for must be FIPS-approved.
pub const FIPS: &str = "gembok.io/fips";
/// A ConfigMap whose `ca.crl` key holds the certificate revocation lists the proxy enforces.
pub const CRL_CONFIGMAP: &str = "gembok.io/crl-configmap";
/// Written by the injector: what was injected. Its presence makes re-injection a no-op.
pub const STATUS: &str = "gembok.io/status";

const KNOWN: &[&str] = &[
    INBOUND,
    OUTBOUND,
    ALLOWED_SANS,
    ALLOWED_SANS_CONFIGMAP,
    CERT_SECRET,
    LOG_LEVEL,
    CPU_REQUEST,
    CPU_LIMIT,
    MEMORY_REQUEST,
    MEMORY_LIMIT,
    DRAIN_SECONDS,
    IMAGE,
    SIDECAR_MODE,
    KEY_EXCHANGE,
    CIPHER_SUITES,
    FIPS,
    CRL_CONFIGMAP,
    STATUS,
];

/// The key exchange groups `gembok-proxy --key-exchange` knows, as it spells them
/// (`proxy/src/config/key_exchange.rs`; `tests/tests/injector.rs` checks that the proxy takes
/// every one). Post-quantum groups alone make the sidecar refuse classical-only peers.
pub const KEY_EXCHANGE_GROUPS: &[&str] = &[
    "X25519MLKEM768",
    "secp256r1MLKEM768",
    "MLKEM768",
    "MLKEM1024",
    "X25519",
    "secp256r1",
    "secp384r1",
];

/// The TLS 1.3 cipher suites `gembok-proxy --cipher-suites` knows, as it spells them
/// (`proxy/src/config/cipher_suites.rs`; `tests/tests/injector.rs` checks that the proxy takes
/// every one). An injected sidecar speaks TLS 1.3 only, so the proxy's TLS 1.2 suites are not
/// among them.
pub const TLS13_CIPHER_SUITES: &[&str] = &[
    "TLS13_AES_128_GCM_SHA256",
    "TLS13_AES_256_GCM_SHA384",
    "TLS13_CHACHA20_POLY1305_SHA256",
];

/// The groups and suites above that FIPS 140-3 does not approve, which the proxy's FIPS build
/// refuses (`proxy/src/config/fips.rs`; `tests/tests/injector.rs` checks that it takes all the
/// others): X25519 alone (the X25519MLKEM768 hybrid is approved) and ChaCha20-Poly1305.
pub const NOT_FIPS_APPROVED: &[&str] = &["X25519", "TLS13_CHACHA20_POLY1305_SHA256"];

/// Longest drain the injector accepts; longer is almost certainly a unit mistake.
const MAX_DRAIN_SECONDS: u32 = 3600;

/// How the proxy runs next to the app.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SidecarMode {
    /// An init container with `restartPolicy: Always` (Kubernetes 1.29+).
    Native,
    /// A regular container placed first, holding the app until it is ready.
    Classic,
}

impl SidecarMode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Native => "native",
            Self::Classic => "classic",
        }
    }
}

impl std::str::FromStr for SidecarMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "native" => Ok(Self::Native),
            "classic" => Ok(Self::Classic),
            other => Err(format!(
                "{other:?} is not a sidecar mode (native or classic)"
            )),
        }
    }
}

/// `TLSPORT=APPPORT[,allow-san=PATTERN]...[,proxy-protocol=v2]`: mTLS in on TLSPORT, plaintext
/// to the app (preceded by a PROXY protocol v2 header that names the caller, when asked for).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InboundMapping {
    pub tls_port: u16,
    pub app_port: u16,
    pub allow_sans: Vec<String>,
    /// The mounted `gembok.io/allowed-sans-configmap` list, where the pod-wide lists apply.
    pub allow_san_file: Option<String>,
    pub proxy_protocol: bool,
}

/// `LOCALPORT=HOST:PORT[,server-name=NAME][,alpn=PROTO]`: plaintext in on loopback, mTLS out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutboundRoute {
    pub local_port: u16,
    pub host: String,
    pub port: u16,
    pub server_name: Option<String>,
    pub alpn: Vec<String>,
}

/// Sidecar resources requested through annotations (validated quantities).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ResourceOverrides {
    pub cpu_request: Option<String>,
    pub cpu_limit: Option<String>,
    pub memory_request: Option<String>,
    pub memory_limit: Option<String>,
}

/// Everything the annotations asked for, after validation.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PodSettings {
    pub inbound: Vec<InboundMapping>,
    pub outbound: Vec<OutboundRoute>,
    pub allowed_sans: Vec<String>,
    /// `gembok.io/allowed-sans-configmap`: a ConfigMap name.
    pub allowed_sans_configmap: Option<String>,
    pub cert_secret: Option<String>,
    pub log_level: Option<String>,
    pub resources: ResourceOverrides,
    pub drain_seconds: Option<u32>,
    pub image: Option<String>,
    pub sidecar_mode: Option<SidecarMode>,
    /// `gembok.io/key-exchange`, as the proxy spells the groups, comma-separated.
    pub key_exchange: Option<String>,
    /// `gembok.io/cipher-suites`, as the proxy spells the suites, comma-separated.
    pub cipher_suites: Option<String>,
    /// `gembok.io/crl-configmap`: a ConfigMap name.
    pub crl_configmap: Option<String>,
    /// `gembok.io/fips`: the proxy's FIPS build or not; `None` leaves it to the injector's
    /// `--fips`.
    pub fips: Option<bool>,
}

/// Why the injector refuses a pod: almost always an annotation's value. Display names the
/// annotation and the value, or says that the annotation is not set when its default is at fault.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum AnnotationError {
    /// A value the injector refuses.
    #[error("annotation {key}={value:?}: {reason}")]
    Value {
        key: String,
        value: String,
        reason: String,
    },
    /// An annotation that is not set, whose default does not work for this pod.
    #[error("annotation {key} is not set: {reason}")]
    Unset { key: String, reason: String },
    /// The pod cannot take the sidecar whatever the annotations say (a container on its fixed
    /// admin port, a Windows pod).
    #[error("{reason}")]
    Pod { reason: String },
}

impl AnnotationError {
    /// The annotation at fault, if any.
    pub fn key(&self) -> Option<&str> {
        match self {
            Self::Value { key, .. } | Self::Unset { key, .. } => Some(key),
            Self::Pod { .. } => None,
        }
    }

    /// What is wrong, without the annotation and value.
    pub fn reason(&self) -> &str {
        match self {
            Self::Value { reason, .. } | Self::Unset { reason, .. } | Self::Pod { reason } => {
                reason
            }
        }
    }
}

/// Result of reading a pod's annotations.
#[derive(Debug, Default)]
pub struct Parsed {
    pub settings: PodSettings,
    /// Values that reject the pod.
    pub errors: Vec<AnnotationError>,
    /// Values that were ignored (default used) and unknown keys.
    pub warnings: Vec<String>,
}

/// Reads and validates every `gembok.io/` annotation. Never stops at the first problem.
pub fn parse(annotations: &BTreeMap<String, String>) -> Parsed {
    let mut out = Parsed::default();
    let get = |key: &str| annotations.get(key).map(String::as_str);

    // Rejecting annotations.
    if let Some(value) = get(INBOUND) {
        match parse_list(value, parse_inbound) {
            Ok(list) => out.settings.inbound = list,
            Err(reason) => out.errors.push(error(INBOUND, value, reason)),
        }
    }
    if let Some(value) = get(OUTBOUND) {
        match parse_list(value, parse_outbound) {
            Ok(list) => out.settings.outbound = list,
            Err(reason) => out.errors.push(error(OUTBOUND, value, reason)),
        }
    }
    if let Some(value) = get(ALLOWED_SANS) {
        let sans: Result<Vec<String>, String> = value
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| check_san_pattern(s).map(|()| s.to_owned()))
            .collect();
        match sans {
            Ok(list) if list.is_empty() => out.errors.push(error(
                ALLOWED_SANS,
                value,
                "empty list; remove the annotation or name at least one SAN pattern".into(),
            )),
            Ok(list) => out.settings.allowed_sans = list,
            Err(reason) => out.errors.push(error(ALLOWED_SANS, value, reason)),
        }
    }
    for (key, slot) in [
        (CRL_CONFIGMAP, &mut out.settings.crl_configmap),
        (
            ALLOWED_SANS_CONFIGMAP,
            &mut out.settings.allowed_sans_configmap,
        ),
    ] {
        if let Some(value) = get(key) {
            match check_object_name(value) {
                Ok(()) => *slot = Some(value.to_owned()),
                Err(reason) => out.errors.push(error(
                    key,
                    value,
                    format!("not a valid ConfigMap name: {reason}"),
                )),
            }
        }
    }
    if let Some(value) = get(CERT_SECRET) {
        match check_object_name(value) {
            Ok(()) => out.settings.cert_secret = Some(value.to_owned()),
            Err(reason) => out.errors.push(error(
                CERT_SECRET,
                value,
                format!("not a valid Secret name: {reason}"),
            )),
        }
    }
    if let Some(value) = get(IMAGE) {
        match crate::image::check(value) {
            Ok(()) => out.settings.image = Some(value.to_owned()),
            Err(why) => out.errors.push(error(
                IMAGE,
                value,
                format!(
                    "not an image reference: {why} (expected e.g. ghcr.io/gembok/gembok-proxy:0.1.0)"
                ),
            )),
        }
    }
    if let Some(value) = get(SIDECAR_MODE) {
        match value.parse() {
            Ok(mode) => out.settings.sidecar_mode = Some(mode),
            Err(reason) => out.errors.push(error(SIDECAR_MODE, value, reason)),
        }
    }
    // They decide which peers may connect (post-quantum only refuses classical peers; a
    // compliance policy's suites refuse the others), so a bad value rejects the pod rather than
    // leaving the proxy's default in place.
    if let Some(value) = get(KEY_EXCHANGE) {
        match parse_key_exchange(value) {
            Ok(groups) => out.settings.key_exchange = Some(groups),
            Err(reason) => out.errors.push(error(KEY_EXCHANGE, value, reason)),
        }
    }
    if let Some(value) = get(CIPHER_SUITES) {
        match parse_cipher_suites(value) {
            Ok(suites) => out.settings.cipher_suites = Some(suites),
            Err(reason) => out.errors.push(error(CIPHER_SUITES, value, reason)),
        }
    }
    if let Some(value) = get(FIPS) {
        match value {
            "true" => out.settings.fips = Some(true),
            "false" => out.settings.fips = Some(false),
            other => out
                .errors
                .push(error(FIPS, other, "not \"true\" or \"false\"".to_owned())),
        }
    }

    // Tuning annotations: fall back to the default.
    if let Some(value) = get(LOG_LEVEL) {
        match check_log_filter(value) {
            Ok(()) => out.settings.log_level = Some(value.to_owned()),
            Err(reason) => out.warnings.push(ignored(LOG_LEVEL, value, &reason)),
        }
    }
    let resources = [
        (CPU_REQUEST, &mut out.settings.resources.cpu_request),
        (CPU_LIMIT, &mut out.settings.resources.cpu_limit),
        (MEMORY_REQUEST, &mut out.settings.resources.memory_request),
        (MEMORY_LIMIT, &mut out.settings.resources.memory_limit),
    ];
    for (key, slot) in resources {
        if let Some(value) = get(key) {
            match quantity::parse(value) {
                Ok(_) => *slot = Some(value.to_owned()),
                Err(e) => out.warnings.push(ignored(key, value, &e.to_string())),
            }
        }
    }
    if let Some(value) = get(DRAIN_SECONDS) {
        match value.parse::<u32>() {
            Ok(n) if n <= MAX_DRAIN_SECONDS => out.settings.drain_seconds = Some(n),
            _ => out.warnings.push(ignored(
                DRAIN_SECONDS,
                value,
                &format!("not a whole number of seconds between 0 and {MAX_DRAIN_SECONDS}"),
            )),
        }
    }

    for key in annotations.keys() {
        if key.starts_with("gembok.io/") && !KNOWN.contains(&key.as_str()) {
            if key == INJECT_LABEL {
                out.warnings.push(format!(
                    "{INJECT_LABEL} is a label, not an annotation: the annotation is ignored; \
                     set the label {INJECT_LABEL}=\"false\" to opt out"
                ));
            } else {
                let hint = KNOWN
                    .iter()
                    .map(|known| (edit_distance(key, known), known))
                    .min()
                    .filter(|(distance, _)| *distance <= 3)
                    .map_or_else(
                        || "see the annotation table in the injector README".to_owned(),
                        |(_, known)| format!("did you mean {known}?"),
                    );
                out.warnings
                    .push(format!("unknown annotation {key} is ignored ({hint})"));
            }
        }
    }
    out
}

/// Levenshtein distance, to suggest the annotation a typo meant.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut previous = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitution = previous + usize::from(ca != *cb);
            previous = row[j + 1];
            row[j + 1] = substitution.min(row[j] + 1).min(row[j + 1] + 1);
        }
    }
    row[b.len()]
}

pub(crate) fn error(key: &str, value: &str, reason: String) -> AnnotationError {
    AnnotationError::Value {
        key: key.to_owned(),
        value: value.to_owned(),
        reason,
    }
}

fn ignored(key: &str, value: &str, reason: &str) -> String {
    format!("annotation {key}={value:?} ignored, default used: {reason}")
}

/// Splits a `;`-separated list, ignoring empty entries, and names the entry that failed.
fn parse_list<T>(value: &str, item: fn(&str) -> Result<T, String>) -> Result<Vec<T>, String> {
    let entries: Vec<&str> = value
        .split(';')
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .collect();
    if entries.is_empty() {
        return Err("empty; remove the annotation or give at least one entry".into());
    }
    entries
        .into_iter()
        .map(|entry| item(entry).map_err(|reason| format!("entry {entry:?}: {reason}")))
        .collect()
}

fn parse_inbound(entry: &str) -> Result<InboundMapping, String> {
    let mut parts = entry.split(',').map(str::trim);
    let head = parts.next().unwrap_or_default();
    let (tls, app) = head
        .split_once('=')
        .ok_or("expected TLSPORT=APPPORT[,allow-san=PATTERN]...[,proxy-protocol=v2]")?;
    let tls_port = parse_port("TLSPORT", tls)?;
    let app_port = parse_port("APPPORT", app)?;
    if tls_port == app_port {
        return Err(format!(
            "TLSPORT and APPPORT are both {tls_port}; the proxy and the app cannot share a port"
        ));
    }
    let mut allow_sans = Vec::new();
    let mut proxy_protocol = false;
    for option in parts {
        match option.split_once('=') {
            Some(("allow-san", pattern)) => {
                check_san_pattern(pattern)?;
                allow_sans.push(pattern.to_owned());
            }
            Some(("proxy-protocol", "v2")) => proxy_protocol = true,
            Some(("proxy-protocol", other)) => {
                return Err(format!(
                    "proxy-protocol {other:?} is not supported (only v2, the binary form)"
                ));
            }
            _ => {
                return Err(format!(
                    "unknown option {option:?} (known: allow-san=PATTERN, proxy-protocol=v2)"
                ));
            }
        }
    }
    Ok(InboundMapping {
        tls_port,
        app_port,
        allow_sans,
        allow_san_file: None,
        proxy_protocol,
    })
}

fn parse_outbound(entry: &str) -> Result<OutboundRoute, String> {
    let mut parts = entry.split(',').map(str::trim);
    let head = parts.next().unwrap_or_default();
    let (local, target) = head
        .split_once('=')
        .ok_or("expected LOCALPORT=HOST:PORT[,server-name=NAME][,alpn=PROTO]")?;
    let local_port = parse_port("LOCALPORT", local)?;
    let (host, port) = target
        .rsplit_once(':')
        .ok_or_else(|| format!("target {target:?} is not HOST:PORT"))?;
    check_host(host)?;
    let port = parse_port("PORT", port)?;
    let mut route = OutboundRoute {
        local_port,
        host: host.to_owned(),
        port,
        server_name: None,
        alpn: vec![],
    };
    for option in parts {
        match option.split_once('=') {
            Some(("server-name", name)) => {
                check_server_name(name).map_err(|e| format!("server-name: {e}"))?;
                if route.server_name.replace(name.to_owned()).is_some() {
                    return Err("server-name given twice".into());
                }
            }
            Some(("alpn", proto)) => {
                let ok = !proto.is_empty()
                    && proto.len() <= 255
                    && proto
                        .chars()
                        .all(|c| c.is_ascii_graphic() && !",;=".contains(c));
                if !ok {
                    return Err(format!("alpn {proto:?} is not a protocol id (e.g. h2)"));
                }
                route.alpn.push(proto.to_owned());
            }
            _ => {
                return Err(format!(
                    "unknown option {option:?} (known: server-name=NAME, alpn=PROTO)"
                ));
            }
        }
    }
    Ok(route)
}

fn parse_port(what: &str, text: &str) -> Result<u16, String> {
    match text.trim().parse::<u16>() {
        Ok(port) if port > 0 => Ok(port),
        _ => Err(format!("{what} {text:?} is not a port number (1-65535)")),
    }
}

/// `gembok.io/log-level`: what the proxy's `--log` takes (a `tracing_subscriber` filter, checked
/// the way the proxy checks it), limited to characters that need no quoting in an env value.
fn check_log_filter(value: &str) -> Result<(), String> {
    let plain = !value.is_empty()
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_:=,.-".contains(c));
    if !plain {
        return Err(
            "not a log level or tracing filter (e.g. debug, info, gembok_proxy=trace)".into(),
        );
    }
    value
        .parse::<Targets>()
        .map(|_| ())
        .map_err(|e| format!("not a log level or tracing filter the proxy accepts: {e}"))
}

/// An outbound HOST: a DNS name, an IPv4 address or a bracketed IPv6 address. The proxy strips
/// the brackets and, unless `server-name=` is given, verifies the peer against the host, so the
/// host must be a TLS server name too (see [`check_server_name`]).
fn check_host(host: &str) -> Result<(), String> {
    if let Some(inner) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        return match ServerName::try_from(inner) {
            Ok(ServerName::IpAddress(IpAddr::V6(_))) => Ok(()),
            _ => Err(format!("{host:?} is not an IPv6 address")),
        };
    }
    let reason = if host.contains(':') {
        Err("an IPv6 address goes in brackets ([fd00::1]:443)".to_owned())
    } else {
        check_server_name(host)
    };
    reason.map_err(|reason| format!("host {host:?} is not a DNS name or IP address: {reason}"))
}

/// A name the proxy can verify the peer's certificate against: exactly what rustls'
/// `ServerName::try_from` takes (the proxy's check), and for DNS names also the RFC 1123 rules
/// (labels of at most 63 lower-case letters, digits and '-', compared without case).
fn check_server_name(name: &str) -> Result<(), String> {
    let dns_rules = check_dns_name(&name.to_ascii_lowercase());
    match ServerName::try_from(name) {
        Ok(ServerName::DnsName(_)) => dns_rules,
        Ok(_) => Ok(()),
        Err(_) => {
            let why = dns_rules.err().unwrap_or_else(|| {
                "its last label is all digits, so it is neither a DNS name nor an IP address"
                    .to_owned()
            });
            Err(format!("{name:?} is not a TLS server name: {why}"))
        }
    }
}

/// An RFC 1123 host name: at most 253 characters, labels of 1-63 lower-case letters, digits or
/// '-', starting and ending with a letter or digit.
fn check_dns_name(name: &str) -> Result<(), String> {
    check_object_name(name)?;
    match name.split('.').find(|label| label.len() > 63) {
        Some(label) => Err(format!(
            "label {label:?} is longer than 63 characters, the DNS limit"
        )),
        None => Ok(()),
    }
}

/// A Kubernetes object name (a Secret, a ServiceAccount): an RFC 1123 subdomain as Kubernetes
/// checks it, at most 253 characters in dot-separated parts of lower-case letters, digits or '-'
/// that start and end with a letter or digit. Unlike a host name, a part may be longer than 63.
pub fn check_object_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 253 {
        return Err("must be 1 to 253 characters".into());
    }
    for part in name.split('.') {
        let ok = !part.is_empty()
            && part
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            && !part.starts_with('-')
            && !part.ends_with('-');
        if !ok {
            return Err(format!(
                "part {part:?} must be lower-case letters, digits or '-', starting and ending \
                 with a letter or digit"
            ));
        }
    }
    Ok(())
}

/// One `allow-san` pattern: no separator the proxy's lists use, and then exactly what the proxy's
/// own parser ([`SanPattern`], shared through gembok-certwatch) accepts.
fn check_san_pattern(pattern: &str) -> Result<(), String> {
    if pattern.is_empty()
        || pattern
            .chars()
            .any(|c| c.is_whitespace() || ",;".contains(c))
    {
        return Err(format!(
            "SAN pattern {pattern:?} is empty or holds whitespace, ',' or ';'"
        ));
    }
    SanPattern::parse(pattern)
        .map(|_| ())
        .map_err(|e| format!("SAN pattern {pattern:?}: {e}"))
}

/// What keeps a pod on the proxy's FIPS build (`fips_by`: why it is on it, an annotation or
/// the injector's `--fips`) from starting: the suites and groups its annotations name that FIPS
/// does not approve ([`NOT_FIPS_APPROVED`]), one error per annotation. Refused here, where the
/// pod's author sees why, rather than in a crash-looping sidecar.
pub fn fips_refusals(
    settings: &PodSettings,
    annotations: &BTreeMap<String, String>,
    fips_by: &str,
) -> Vec<AnnotationError> {
    let lists = [
        (KEY_EXCHANGE, &settings.key_exchange),
        (CIPHER_SUITES, &settings.cipher_suites),
    ];
    let mut errors = Vec::new();
    for (key, list) in lists {
        let Some(list) = list else { continue };
        let refused: Vec<&str> = list
            .split(',')
            .filter(|name| NOT_FIPS_APPROVED.contains(name))
            .collect();
        if !refused.is_empty() {
            let (is, them) = if refused.len() == 1 {
                ("is", "it")
            } else {
                ("are", "them")
            };
            let reason = format!(
                "{} {is} not FIPS-approved, and {fips_by} (the proxy's FIPS build refuses to \
                 start with {them})",
                refused.join(", ")
            );
            let value = annotations.get(key).map_or("", String::as_str);
            errors.push(error(key, value, reason));
        }
    }
    errors
}

/// `gembok.io/key-exchange`: group names separated by commas, most preferred first, matched
/// without regard to case; returned in the proxy's spelling.
fn parse_key_exchange(value: &str) -> Result<String, String> {
    parse_names(
        value,
        KEY_EXCHANGE_GROUPS,
        "a key exchange group",
        "",
        str::to_owned,
    )
}

/// `gembok.io/cipher-suites`: TLS 1.3 suite names separated by commas, most preferred first, in
/// the proxy's spelling or the IANA one (`TLS_AES_256_GCM_SHA384`, as OpenSSL writes them),
/// matched without regard to case; returned in the proxy's spelling.
fn parse_cipher_suites(value: &str) -> Result<String, String> {
    parse_names(
        value,
        TLS13_CIPHER_SUITES,
        "a TLS 1.3 cipher suite",
        ": an injected sidecar speaks TLS 1.3 only",
        |name| {
            let name = name.to_ascii_uppercase();
            match name.strip_prefix("TLS_") {
                Some(iana) if !iana.starts_with("ECDHE_") => format!("TLS13_{iana}"),
                _ => name,
            }
        },
    )
}

/// A comma-separated list of names from `known` (`what` each is, `why` after the list when one
/// is not), each first respelled by `spelling`, without repeats; returned as `known` spells
/// them, joined by commas.
fn parse_names(
    value: &str,
    known: &[&str],
    what: &str,
    why: &str,
    spelling: impl Fn(&str) -> String,
) -> Result<String, String> {
    let mut names: Vec<&str> = Vec::new();
    for name in value.split(',').map(str::trim) {
        let respelled = spelling(name);
        let Some(found) = known.iter().find(|k| k.eq_ignore_ascii_case(&respelled)) else {
            let list = known.join(", ");
            return Err(format!("{name:?} is not {what} (one of {list}){why}"));
        };
        if names.contains(found) {
            return Err(format!("{found} is named twice"));
        }
        names.push(found);
    }
    Ok(names.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn annotations(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn reads_inbound_and_outbound_lists_with_options() {
        let parsed = parse(&annotations(&[
            (
                INBOUND,
                "8443=8080,allow-san=spiffe://cluster.local/ns/a/sa/*; 9443=9090,proxy-protocol=v2",
            ),
            (
                OUTBOUND,
                "15701=rec.ecommerce.svc.cluster.local:8443,server-name=rec,alpn=h2",
            ),
        ]));
        assert!(parsed.errors.is_empty(), "{:?}", parsed.errors);
        assert_eq!(parsed.settings.inbound.len(), 2);
        assert_eq!(
            parsed.settings.inbound[0].allow_sans,
            ["spiffe://cluster.local/ns/a/sa/*"]
        );
        assert!(!parsed.settings.inbound[0].proxy_protocol);
        assert_eq!(parsed.settings.inbound[1].app_port, 9090);
        assert!(parsed.settings.inbound[1].proxy_protocol);
        let refused = parse(&annotations(&[(INBOUND, "8443=8080,proxy-protocol=v1")]));
        assert!(
            refused
                .errors
                .iter()
                .any(|e| e.to_string().contains("only v2")),
            "{:?}",
            refused.errors
        );
        let route = &parsed.settings.outbound[0];
        assert_eq!(
            (route.local_port, route.host.as_str(), route.port),
            (15701, "rec.ecommerce.svc.cluster.local", 8443)
        );
        assert_eq!(route.server_name.as_deref(), Some("rec"));
        assert_eq!(route.alpn, ["h2"]);
    }

    #[test]
    fn key_exchange_groups_are_checked_and_spelled_as_the_proxy_spells_them() {
        let parsed = parse(&annotations(&[(KEY_EXCHANGE, "x25519mlkem768, MLKEM1024")]));
        assert!(parsed.errors.is_empty(), "{:?}", parsed.errors);
        assert_eq!(
            parsed.settings.key_exchange.as_deref(),
            Some("X25519MLKEM768,MLKEM1024")
        );
        for (value, reason) in [
            (
                "X448",
                "\"X448\" is not a key exchange group (one of X25519MLKEM768,",
            ),
            ("X25519,", "\"\" is not a key exchange group"),
            ("X25519,x25519", "X25519 is named twice"),
        ] {
            let parsed = parse(&annotations(&[(KEY_EXCHANGE, value)]));
            assert_eq!(parsed.errors.len(), 1, "{value}");
            assert!(
                parsed.errors[0].reason().starts_with(reason),
                "{:?}",
                parsed.errors
            );
            assert_eq!(parsed.settings.key_exchange, None);
        }
    }

    #[test]
    fn cipher_suites_are_tls13_ones_in_either_spelling_written_as_the_proxy_spells_them() {
        let value = "tls_chacha20_poly1305_sha256, TLS13_AES_256_GCM_SHA384";
        let parsed = parse(&annotations(&[(CIPHER_SUITES, value)]));
        assert!(parsed.errors.is_empty(), "{:?}", parsed.errors);
        assert_eq!(
            parsed.settings.cipher_suites.as_deref(),
            Some("TLS13_CHACHA20_POLY1305_SHA256,TLS13_AES_256_GCM_SHA384")
        );
        for (value, reason) in [
            (
                "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
                "\"TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256\" is not a TLS 1.3 cipher suite (one of \
                 TLS13_AES_128_GCM_SHA256, TLS13_AES_256_GCM_SHA384, \
                 TLS13_CHACHA20_POLY1305_SHA256): an injected sidecar speaks TLS 1.3 only",
            ),
            (
                "TLS_AES_128_CCM_SHA256",
                "\"TLS_AES_128_CCM_SHA256\" is not a TLS 1.3",
            ),
            (
                "TLS_AES_128_GCM_SHA256,",
                "\"\" is not a TLS 1.3 cipher suite",
            ),
            (
                "TLS_AES_128_GCM_SHA256,tls13_aes_128_gcm_sha256",
                "TLS13_AES_128_GCM_SHA256 is named twice",
            ),
        ] {
            let parsed = parse(&annotations(&[(CIPHER_SUITES, value)]));
            assert_eq!(parsed.errors.len(), 1, "{value}");
            assert!(
                parsed.errors[0].reason().starts_with(reason),
                "{:?}",
                parsed.errors
            );
            assert_eq!(parsed.settings.cipher_suites, None);
        }
    }

    /// `gembok.io/fips` is `"true"` or `"false"`, anything else rejects; what it refuses
    /// alongside is `fips_refusals` (tested in `inject.rs`, where the injector's `--fips` joins).
    #[test]
    fn fips_is_true_or_false() {
        for (value, fips) in [("true", Some(true)), ("false", Some(false))] {
            let parsed = parse(&annotations(&[(FIPS, value)]));
            assert!(parsed.errors.is_empty(), "{:?}", parsed.errors);
            assert_eq!(parsed.settings.fips, fips);
        }
        assert_eq!(parse(&annotations(&[])).settings.fips, None);
        let parsed = parse(&annotations(&[(FIPS, "yes")]));
        assert_eq!(
            parsed.errors[0].to_string(),
            "annotation gembok.io/fips=\"yes\": not \"true\" or \"false\""
        );
    }

    #[test]
    fn reports_every_rejecting_annotation_at_once() {
        let parsed = parse(&annotations(&[
            (INBOUND, "8443=http"),
            (OUTBOUND, "15701=no-port"),
            (CERT_SECRET, "Bad_Name"),
            (SIDECAR_MODE, "sidecar"),
            (IMAGE, "has space"),
            (ALLOWED_SANS, " , "),
            (ALLOWED_SANS_CONFIGMAP, "Payment.Allowed"),
            (KEY_EXCHANGE, "X25519MLKEM768,X448"),
            (CIPHER_SUITES, "TLS_AES_128_CCM_8_SHA256"),
        ]));
        let keys: Vec<&str> = parsed
            .errors
            .iter()
            .filter_map(AnnotationError::key)
            .collect();
        assert_eq!(
            keys,
            [
                INBOUND,
                OUTBOUND,
                ALLOWED_SANS,
                ALLOWED_SANS_CONFIGMAP,
                CERT_SECRET,
                IMAGE,
                SIDECAR_MODE,
                KEY_EXCHANGE,
                CIPHER_SUITES
            ]
        );
        assert!(
            parsed.errors[0]
                .to_string()
                .contains("APPPORT \"http\" is not a port number")
        );
    }

    #[test]
    fn ignores_bad_tuning_values_with_a_warning_that_names_the_annotation() {
        let parsed = parse(&annotations(&[
            (MEMORY_LIMIT, "64MB"),
            (DRAIN_SECONDS, "30s"),
            (LOG_LEVEL, "debug please"),
            (CPU_REQUEST, "25m"),
        ]));
        assert!(parsed.errors.is_empty());
        assert_eq!(
            parsed.settings.resources.cpu_request.as_deref(),
            Some("25m")
        );
        assert_eq!(parsed.settings.resources.memory_limit, None);
        assert_eq!(parsed.warnings.len(), 3);
        for key in [MEMORY_LIMIT, DRAIN_SECONDS, LOG_LEVEL] {
            assert!(
                parsed.warnings.iter().any(|w| w.contains(key)),
                "no warning names {key}"
            );
        }
    }

    #[test]
    fn warns_about_unknown_keys_and_the_label_used_as_an_annotation() {
        let parsed = parse(&annotations(&[
            ("gembok.io/inbond", "1=2"),
            (INJECT_LABEL, "false"),
        ]));
        assert_eq!(parsed.warnings.len(), 2);
        assert!(
            parsed.warnings.iter().any(
                |w| w.contains("gembok.io/inbond is ignored (did you mean gembok.io/inbound?)")
            )
        );
        assert!(
            parsed
                .warnings
                .iter()
                .any(|w| w.contains("is a label, not an annotation"))
        );
    }

    #[test]
    fn refuses_unknown_options_and_same_port_twice() {
        let parsed = parse(&annotations(&[
            (INBOUND, "8443=8443"),
            (OUTBOUND, "1=a:1,sni=x"),
        ]));
        assert_eq!(parsed.errors.len(), 2);
        assert!(parsed.errors[0].reason().contains("cannot share a port"));
        assert!(
            parsed.errors[1]
                .reason()
                .contains("unknown option \"sni=x\"")
        );
    }

    #[test]
    fn accepts_ip_targets() {
        let parsed = parse(&annotations(&[(
            OUTBOUND,
            "15701=10.0.0.1:443;15702=[fd00::1]:443",
        )]));
        assert!(parsed.errors.is_empty(), "{:?}", parsed.errors);
        assert_eq!(parsed.settings.outbound[1].host, "[fd00::1]");
    }

    /// What the proxy's own parser refuses (it exits 64) the injector refuses at admission, with
    /// the parser's words.
    #[test]
    fn san_patterns_are_checked_by_the_proxys_parser() {
        for (key, value, reason) in [
            (
                ALLOWED_SANS,
                "spiffe://cluster.local/ns/a/sa/foo*",
                "`*` must be a whole label or path segment",
            ),
            (
                ALLOWED_SANS,
                "user@example.com",
                "`user@example.com` is not a DNS name pattern",
            ),
            (
                ALLOWED_SANS,
                "spiffe:///x",
                "needs a scheme and an authority",
            ),
            (
                INBOUND,
                "8443=8080,allow-san=a=b",
                "SAN pattern \"a=b\": `a=b` is not a DNS name pattern",
            ),
        ] {
            let parsed = parse(&annotations(&[(key, value)]));
            assert_eq!(parsed.errors.len(), 1, "{value}: {:?}", parsed.errors);
            assert_eq!(parsed.errors[0].key(), Some(key));
            assert!(
                parsed.errors[0].reason().contains(reason),
                "{value}: {}",
                parsed.errors[0]
            );
        }
        let parsed = parse(&annotations(&[
            (
                ALLOWED_SANS,
                "*.shop.svc.cluster.local, spiffe://td/ns/*/sa/a",
            ),
            (INBOUND, "8443=8080,allow-san=spiffe://td/ns/a/sa/*"),
        ]));
        assert!(parsed.errors.is_empty(), "{:?}", parsed.errors);
    }

    /// Hosts and server names are what rustls' `ServerName::try_from` takes (the proxy's check):
    /// a name whose last label is all digits is neither a DNS name nor an IP address.
    #[test]
    fn outbound_names_are_tls_server_names() {
        for (value, reason) in [
            (
                "15701=999.1.1.1:8443",
                "host \"999.1.1.1\" is not a DNS name",
            ),
            ("15701=1.2.3:8443", "host \"1.2.3\" is not a DNS name"),
            (
                "15701=svc:8443,server-name=123",
                "server-name: \"123\" is not a TLS server name",
            ),
            (
                "15701=svc:8443,server-name=[fd00::1]",
                "server-name: \"[fd00::1]\" is not a TLS server name",
            ),
            ("15701=fd00::1:8443", "an IPv6 address goes in brackets"),
            (
                "15701=[10.0.0.1]:8443",
                "\"[10.0.0.1]\" is not an IPv6 address",
            ),
            (
                "15701=a.toolongtoolongtoolongtoolongtoolongtoolongtoolongtoolongtoolong1:8443",
                "longer than 63 characters",
            ),
        ] {
            let parsed = parse(&annotations(&[(OUTBOUND, value)]));
            assert_eq!(parsed.errors.len(), 1, "{value}");
            assert!(
                parsed.errors[0].reason().contains(reason),
                "{value}: {}",
                parsed.errors[0]
            );
        }
        let parsed = parse(&annotations(&[(
            OUTBOUND,
            "15701=1a.example:1;15702=[fd00::1]:1,server-name=fd00::1;15703=svc:1,server-name=10.0.0.1;\
             15704=Svc-1.Shop:1,server-name=x1.123a",
        )]));
        assert!(parsed.errors.is_empty(), "{:?}", parsed.errors);
        assert_eq!(parsed.settings.outbound.len(), 4);
    }

    /// `gembok.io/log-level` is what the proxy's `--log` takes (tracing's `Targets`: levels per
    /// target), else the default with a warning.
    #[test]
    fn log_level_is_a_filter_the_proxy_accepts() {
        for value in ["gembok_proxy=verbose", "debug,=x", "info,a=b=c"] {
            let parsed = parse(&annotations(&[(LOG_LEVEL, value)]));
            assert!(parsed.errors.is_empty(), "{value}");
            assert_eq!(parsed.settings.log_level, None, "{value}");
            assert_eq!(parsed.warnings.len(), 1, "{value}");
            assert!(
                parsed.warnings[0].starts_with(&format!(
                    "annotation {LOG_LEVEL}={value:?} ignored, default used: not a log level or \
                     tracing filter the proxy accepts: "
                )),
                "{}",
                parsed.warnings[0]
            );
        }
        for value in [
            "debug",
            "gembok_proxy=trace,info",
            "warn,gembok_proxy::conn=debug",
        ] {
            let parsed = parse(&annotations(&[(LOG_LEVEL, value)]));
            assert_eq!(parsed.settings.log_level.as_deref(), Some(value));
            assert!(parsed.warnings.is_empty(), "{:?}", parsed.warnings);
        }
        // Span and field filters (EnvFilter's `[span{field=value}]`) are not levels per target.
        for value in ["gembok_proxy[conn]=debug", "[{", "info,x{a=1}=debug"] {
            let parsed = parse(&annotations(&[(LOG_LEVEL, value)]));
            assert_eq!(parsed.settings.log_level, None, "{value}");
            assert_eq!(parsed.warnings.len(), 1, "{value}");
        }
    }

    /// Secret names are Kubernetes object names: up to 253 characters with no 63-character
    /// limit per dot-separated part (that limit is for DNS host names).
    #[test]
    fn secret_names_are_object_names_without_a_per_label_limit() {
        let long = format!("{}-gembok-tls", "a".repeat(60));
        let parsed = parse(&annotations(&[(CERT_SECRET, long.as_str())]));
        assert!(parsed.errors.is_empty(), "{:?}", parsed.errors);
        assert_eq!(parsed.settings.cert_secret, Some(long));
        for bad in ["a".repeat(254), "a..b".to_owned(), "-a".to_owned()] {
            let parsed = parse(&annotations(&[(CERT_SECRET, bad.as_str())]));
            assert_eq!(parsed.errors.len(), 1, "{bad}");
        }
    }
}
