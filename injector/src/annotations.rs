//! The `gembok.io/*` pod annotations: their keys, their syntax and the error policy.
//!
//! Policy (documented in README.md): a bad value in an annotation that decides *what is
//! encrypted, whom to trust or what runs* (`inbound`, `outbound`, `allowed-sans`, `cert-secret`,
//! `image`, `sidecar-mode`) rejects the pod, because guessing there could leave traffic in
//! plaintext or trust the wrong peer. A bad value in a *tuning* annotation (`log-level`,
//! resources, `drain-seconds`) falls back to the default with a warning naming the annotation.
//! Unknown `gembok.io/` keys get a warning (usually a typo).

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Ipv6Addr};

use thiserror::Error;

use crate::quantity;

/// Pod label that opts a pod out (`"false"`).
pub const INJECT_LABEL: &str = "gembok.io/inject";
pub const INBOUND: &str = "gembok.io/inbound";
pub const OUTBOUND: &str = "gembok.io/outbound";
pub const ALLOWED_SANS: &str = "gembok.io/allowed-sans";
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
/// Written by the injector: what was injected. Its presence makes re-injection a no-op.
pub const STATUS: &str = "gembok.io/status";

const KNOWN: &[&str] = &[
    INBOUND,
    OUTBOUND,
    ALLOWED_SANS,
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

/// `TLSPORT=APPPORT[,allow-san=PATTERN]...`: mTLS in on TLSPORT, plaintext to the app.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InboundMapping {
    pub tls_port: u16,
    pub app_port: u16,
    pub allow_sans: Vec<String>,
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
    pub cert_secret: Option<String>,
    pub log_level: Option<String>,
    pub resources: ResourceOverrides,
    pub drain_seconds: Option<u32>,
    pub image: Option<String>,
    pub sidecar_mode: Option<SidecarMode>,
    /// `gembok.io/key-exchange`, as the proxy spells the groups, comma-separated.
    pub key_exchange: Option<String>,
}

/// An annotation whose value the injector refuses. Display names the annotation and the value.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
#[error("annotation {key}={value:?}: {reason}")]
pub struct AnnotationError {
    pub key: String,
    pub value: String,
    pub reason: String,
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
    if let Some(value) = get(CERT_SECRET) {
        match check_dns_subdomain(value) {
            Ok(()) => out.settings.cert_secret = Some(value.to_owned()),
            Err(reason) => out.errors.push(error(
                CERT_SECRET,
                value,
                format!("not a valid Secret name: {reason}"),
            )),
        }
    }
    if let Some(value) = get(IMAGE) {
        if value.is_empty() || value.chars().any(|c| c.is_whitespace() || c.is_control()) {
            out.errors.push(error(
                IMAGE,
                value,
                "not an image reference (expected e.g. ghcr.io/gembok/gembok-proxy:0.1.0)".into(),
            ));
        } else {
            out.settings.image = Some(value.to_owned());
        }
    }
    if let Some(value) = get(SIDECAR_MODE) {
        match value.parse() {
            Ok(mode) => out.settings.sidecar_mode = Some(mode),
            Err(reason) => out.errors.push(error(SIDECAR_MODE, value, reason)),
        }
    }
    // It decides which peers may connect (post-quantum only refuses classical peers), so a bad
    // value rejects the pod rather than leaving the proxy's default in place.
    if let Some(value) = get(KEY_EXCHANGE) {
        match parse_key_exchange(value) {
            Ok(groups) => out.settings.key_exchange = Some(groups),
            Err(reason) => out.errors.push(error(KEY_EXCHANGE, value, reason)),
        }
    }

    // Tuning annotations: fall back to the default.
    if let Some(value) = get(LOG_LEVEL) {
        let ok = !value.is_empty()
            && value
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_:=,.-[]{}\"".contains(c));
        if ok {
            out.settings.log_level = Some(value.to_owned());
        } else {
            out.warnings.push(ignored(
                LOG_LEVEL,
                value,
                "not a log level or tracing filter (e.g. debug, info, gembok_proxy=trace)",
            ));
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

fn error(key: &str, value: &str, reason: String) -> AnnotationError {
    AnnotationError {
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
        .ok_or("expected TLSPORT=APPPORT[,allow-san=PATTERN]...")?;
    let tls_port = parse_port("TLSPORT", tls)?;
    let app_port = parse_port("APPPORT", app)?;
    if tls_port == app_port {
        return Err(format!(
            "TLSPORT and APPPORT are both {tls_port}; the proxy and the app cannot share a port"
        ));
    }
    let mut allow_sans = Vec::new();
    for option in parts {
        match option.split_once('=') {
            Some(("allow-san", pattern)) => {
                check_san_pattern(pattern)?;
                allow_sans.push(pattern.to_owned());
            }
            _ => {
                return Err(format!(
                    "unknown option {option:?} (known: allow-san=PATTERN)"
                ));
            }
        }
    }
    Ok(InboundMapping {
        tls_port,
        app_port,
        allow_sans,
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
                check_host(name).map_err(|e| format!("server-name: {e}"))?;
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

/// A DNS name, an IPv4 address or a bracketed IPv6 address.
fn check_host(host: &str) -> Result<(), String> {
    if let Some(inner) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        return inner
            .parse::<Ipv6Addr>()
            .map(|_| ())
            .map_err(|_| format!("{host:?} is not an IPv6 address"));
    }
    if host.parse::<Ipv4Addr>().is_ok() {
        return Ok(());
    }
    check_dns_subdomain(&host.to_ascii_lowercase())
        .map_err(|reason| format!("host {host:?} is not a DNS name or IP address: {reason}"))
}

/// RFC 1123 subdomain, as Kubernetes checks object names and as DNS needs host names.
pub fn check_dns_subdomain(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 253 {
        return Err("must be 1 to 253 characters".into());
    }
    for label in name.split('.') {
        let ok = !label.is_empty()
            && label.len() <= 63
            && label
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            && !label.starts_with('-')
            && !label.ends_with('-');
        if !ok {
            return Err(format!(
                "label {label:?} must be 1-63 lower-case letters, digits or '-', \
                 starting and ending with a letter or digit"
            ));
        }
    }
    Ok(())
}

fn check_san_pattern(pattern: &str) -> Result<(), String> {
    if pattern.is_empty()
        || pattern
            .chars()
            .any(|c| c.is_whitespace() || ",;".contains(c))
    {
        Err(format!(
            "SAN pattern {pattern:?} is empty or holds whitespace, ',' or ';'"
        ))
    } else {
        Ok(())
    }
}

/// `gembok.io/key-exchange`: group names separated by commas, most preferred first, matched
/// without regard to case; returned in the proxy's spelling.
fn parse_key_exchange(value: &str) -> Result<String, String> {
    let mut groups: Vec<&str> = Vec::new();
    for name in value.split(',').map(str::trim) {
        let Some(group) = KEY_EXCHANGE_GROUPS
            .iter()
            .find(|g| g.eq_ignore_ascii_case(name))
        else {
            return Err(format!(
                "{name:?} is not a key exchange group (one of {})",
                KEY_EXCHANGE_GROUPS.join(", ")
            ));
        };
        if groups.contains(group) {
            return Err(format!("{group} is named twice"));
        }
        groups.push(group);
    }
    Ok(groups.join(","))
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
                "8443=8080,allow-san=spiffe://cluster.local/ns/a/sa/*; 9443=9090",
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
        assert_eq!(parsed.settings.inbound[1].app_port, 9090);
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
                parsed.errors[0].reason.starts_with(reason),
                "{:?}",
                parsed.errors
            );
            assert_eq!(parsed.settings.key_exchange, None);
        }
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
            (KEY_EXCHANGE, "X25519MLKEM768,X448"),
        ]));
        let keys: Vec<&str> = parsed.errors.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                INBOUND,
                OUTBOUND,
                ALLOWED_SANS,
                CERT_SECRET,
                IMAGE,
                SIDECAR_MODE,
                KEY_EXCHANGE
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
        assert!(parsed.errors[0].reason.contains("cannot share a port"));
        assert!(parsed.errors[1].reason.contains("unknown option \"sni=x\""));
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
}
