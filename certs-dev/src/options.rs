//! What to generate: regions, services, names and lifetimes, and the checks on them.
//!
//! Every name ends up in a file path, a DNS name, a Secret name or a label value, so each one
//! must be a DNS-1123 label; that also rules out path traversal (`../`) through `--services`.

use std::collections::HashSet;
use std::fmt;

use crate::layout;

/// Regions of the e-commerce platform; each gets its own intermediate CA.
pub const DEFAULT_REGIONS: [&str; 3] = ["us", "eu", "asia"];
/// Services that get a sidecar certificate in every region.
pub const DEFAULT_SERVICES: [&str; 4] = ["product-catalog", "payment", "recommendation", "auth"];

/// Everything [`DevPki::generate`](crate::DevPki::generate) needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    pub regions: Vec<String>,
    /// Service names, each `NAME` or `NAMESPACE/NAME` (a workload outside `namespace`, such as
    /// a tracing collector); the service account is assumed to have the same name (contract §4).
    pub services: Vec<String>,
    /// Namespace of the services without one of their own (DNS SANs, SPIFFE path, Secret
    /// namespace).
    pub namespace: String,
    /// SPIFFE trust domain: `spiffe://<trust_domain>/ns/<ns>/sa/<sa>`.
    pub trust_domain: String,
    /// Cluster DNS domain: `<svc>.<ns>.svc.<cluster_domain>`.
    pub cluster_domain: String,
    /// Lifetime of leaf certificates.
    pub days: u32,
    /// Lifetime of the root and the intermediates.
    pub ca_days: u32,
    /// Service and namespace of the admission webhook whose serving certificate is generated.
    pub injector_service: String,
    pub injector_namespace: String,
    /// Client-only certificates for people and tools (e.g. `curl` through a port-forward), each
    /// with the SPIFFE ID of a service account of that name in `namespace`. PEM files only.
    pub clients: Vec<String>,
    /// Names from `clients` that also get a second certificate of the same identity, listed as
    /// revoked in their region's revocation list and written to `<region>/<name>-revoked/`: a
    /// leaked key's certificate, to see a sidecar given the lists refuse it while it admits
    /// the same identity's good certificate.
    pub revoked_clients: Vec<String>,
    /// DNS names of the Redis Enterprise proxy certificate (the databases' Service names); none
    /// means no such certificate. Written as PEM files and as a Secret in Redis' own shape.
    pub redis_proxy_names: Vec<String>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            regions: DEFAULT_REGIONS.iter().map(|s| s.to_string()).collect(),
            services: DEFAULT_SERVICES.iter().map(|s| s.to_string()).collect(),
            namespace: "ecommerce".into(),
            trust_domain: "cluster.local".into(),
            cluster_domain: "cluster.local".into(),
            days: 365,
            ca_days: 3650,
            injector_service: "gembok-injector".into(),
            injector_namespace: "gembok-system".into(),
            clients: Vec::new(),
            revoked_clients: Vec::new(),
            redis_proxy_names: Vec::new(),
        }
    }
}

/// The option a [`Problem`] is about (the CLI maps it to its flag).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Field {
    Regions,
    Services,
    Namespace,
    TrustDomain,
    ClusterDomain,
    Days,
    CaDays,
    InjectorService,
    InjectorNamespace,
    Clients,
    RevokedClients,
    RedisProxyNames,
}

/// One thing wrong with [`Options`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub field: Field,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}: {}", self.field, self.message)
    }
}

/// Longest lifetime accepted, so a typo (`--days 36500`) cannot mint a century-long credential.
pub const MAX_DAYS: u32 = 10 * 366;

impl Options {
    /// The command-line flags that give these options, leaving out what is the default (the
    /// injector's names have no flag).
    pub fn flags(&self) -> Vec<String> {
        let default = Self::default();
        let mut flags = Vec::new();
        let mut flag = |name: &str, value: String, default: String| {
            if value != default {
                flags.extend([format!("--{name}"), value]);
            }
        };
        flag("regions", self.regions.join(","), default.regions.join(","));
        flag(
            "services",
            self.services.join(","),
            default.services.join(","),
        );
        flag("namespace", self.namespace.clone(), default.namespace);
        flag(
            "trust-domain",
            self.trust_domain.clone(),
            default.trust_domain,
        );
        flag(
            "cluster-domain",
            self.cluster_domain.clone(),
            default.cluster_domain,
        );
        flag("days", self.days.to_string(), default.days.to_string());
        flag(
            "ca-days",
            self.ca_days.to_string(),
            default.ca_days.to_string(),
        );
        flag("clients", self.clients.join(","), default.clients.join(","));
        flag(
            "revoked-clients",
            self.revoked_clients.join(","),
            default.revoked_clients.join(","),
        );
        flag(
            "redis-proxy-names",
            self.redis_proxy_names.join(","),
            default.redis_proxy_names.join(","),
        );
        flags
    }

    /// `(namespace, name)` of a `--services` item: `NAMESPACE/NAME`, or `NAME` in `namespace`.
    pub fn service<'a>(&'a self, item: &'a str) -> (&'a str, &'a str) {
        item.split_once('/')
            .unwrap_or((self.namespace.as_str(), item))
    }

    /// The namespaces of the services, each once, sorted.
    pub fn service_namespaces(&self) -> Vec<&str> {
        let mut namespaces: Vec<&str> = self
            .services
            .iter()
            .map(|item| self.service(item).0)
            .collect();
        namespaces.sort_unstable();
        namespaces.dedup();
        namespaces
    }

    /// Every problem at once; empty when the options are usable.
    pub fn validate(&self) -> Vec<Problem> {
        let mut problems = Vec::new();
        let mut push = |field, message: String| problems.push(Problem { field, message });

        for (field, what, names) in [
            (Field::Regions, "region", &self.regions),
            (Field::Services, "service", &self.services),
        ] {
            if names.is_empty() {
                push(field, format!("at least one {what} is required"));
            }
        }
        // A region is a directory beside the root CA's and the manifests'.
        let top_level = [layout::ROOT_DIR, layout::K8S_DIR, layout::CRL_DIR];
        check_list(
            Field::Regions,
            "region",
            &self.regions,
            &top_level,
            &mut push,
        );
        let reserved = [
            layout::INTERMEDIATE_DIR,
            layout::REDIS_PROXY_DIR,
            &self.injector_service,
        ];
        // `NAME` or `NAMESPACE/NAME`; the names are checked together (one directory each).
        let mut service_names = Vec::new();
        for item in &self.services {
            match item.split('/').collect::<Vec<_>>()[..] {
                [name] => service_names.push(name.to_owned()),
                [namespace, name] => {
                    if let Err(why) = check_label(namespace) {
                        push(
                            Field::Services,
                            format!("service {item:?}: namespace {namespace:?} {why}"),
                        );
                    }
                    service_names.push(name.to_owned());
                }
                _ => push(
                    Field::Services,
                    format!("service {item:?} is neither NAME nor NAMESPACE/NAME"),
                ),
            }
        }
        check_list(
            Field::Services,
            "service",
            &service_names,
            &reserved,
            &mut push,
        );
        check_list(
            Field::Clients,
            "client",
            &self.clients,
            &reserved,
            &mut push,
        );
        for name in self.clients.iter().filter(|c| service_names.contains(c)) {
            push(
                Field::Clients,
                format!("client {name:?} is also a service (each gets a directory of its name)"),
            );
        }
        let mut seen = HashSet::new();
        for name in &self.revoked_clients {
            let dir = layout::revoked_client_dir(name);
            if !self.clients.contains(name) {
                push(
                    Field::RevokedClients,
                    format!(
                        "{name:?} is not in --clients (a revoked certificate is a second one of a client's identity)"
                    ),
                );
            } else if !seen.insert(name) {
                push(Field::RevokedClients, format!("{name:?} is listed twice"));
            } else if let Err(why) = check_label(&dir) {
                push(
                    Field::RevokedClients,
                    format!("{name:?}: its directory {dir:?} {why}"),
                );
            } else if service_names.contains(&dir) || self.clients.contains(&dir) {
                push(
                    Field::RevokedClients,
                    format!("{name:?}: its directory {dir:?} is also a service's or a client's"),
                );
            }
        }
        let mut seen = HashSet::new();
        for name in &self.redis_proxy_names {
            if let Err(why) = check_dns_name(name) {
                push(Field::RedisProxyNames, format!("{name:?} {why}"));
            } else if !seen.insert(name) {
                push(Field::RedisProxyNames, format!("{name:?} is listed twice"));
            }
        }
        for (field, value) in [
            (Field::Namespace, &self.namespace),
            (Field::InjectorService, &self.injector_service),
            (Field::InjectorNamespace, &self.injector_namespace),
        ] {
            if let Err(why) = check_label(value) {
                push(field, format!("{value:?} {why}"));
            }
        }
        if let Err(why) = check_trust_domain(&self.trust_domain) {
            push(Field::TrustDomain, format!("{:?} {why}", self.trust_domain));
        }
        if let Err(why) = check_dns_name(&self.cluster_domain) {
            push(
                Field::ClusterDomain,
                format!("{:?} {why}", self.cluster_domain),
            );
        }
        let mut in_range = true;
        for (field, days) in [(Field::Days, self.days), (Field::CaDays, self.ca_days)] {
            if days == 0 || days > MAX_DAYS {
                in_range = false;
                push(
                    field,
                    format!("{days} is out of range (1 to {MAX_DAYS} days)"),
                );
            }
        }
        if in_range && self.days > self.ca_days {
            push(
                Field::Days,
                format!(
                    "leaf lifetime ({} days) must not exceed the CA lifetime ({} days)",
                    self.days, self.ca_days
                ),
            );
        }
        problems
    }
}

fn check_list(
    field: Field,
    what: &str,
    names: &[String],
    reserved: &[&str],
    push: &mut impl FnMut(Field, String),
) {
    let mut seen = HashSet::new();
    for name in names {
        if let Err(why) = check_label(name) {
            push(field, format!("{what} {name:?} {why}"));
        } else if reserved.contains(&name.as_str()) {
            push(
                field,
                format!("{what} {name:?} is reserved by the output layout"),
            );
        } else if !seen.insert(name) {
            push(field, format!("{what} {name:?} is listed twice"));
        }
    }
}

/// A DNS-1123 label: what Kubernetes accepts as a namespace or Service name.
pub(crate) fn check_label(s: &str) -> Result<(), &'static str> {
    if s.is_empty() || s.len() > 63 {
        return Err("must be 1 to 63 characters long");
    }
    if !s
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return Err("may contain only lowercase letters, digits and '-'");
    }
    if s.starts_with('-') || s.ends_with('-') {
        return Err("must start and end with a letter or digit");
    }
    Ok(())
}

/// A DNS name of DNS-1123 labels; the error names the label at fault.
fn check_dns_name(s: &str) -> Result<(), String> {
    if s.is_empty() || s.len() > 253 {
        return Err("must be 1 to 253 characters long".to_owned());
    }
    s.split('.').try_for_each(|label| match label {
        "" => Err("has an empty label (two dots in a row, or a dot at either end)".to_owned()),
        label => check_label(label).map_err(|why| format!("has the label {label:?}, which {why}")),
    })
}

/// SPIFFE trust domain: lowercase letters, digits, '.', '-' and '_' (SPIFFE-ID §2.1).
fn check_trust_domain(s: &str) -> Result<(), &'static str> {
    if s.is_empty() || s.len() > 255 {
        return Err("must be 1 to 255 characters long");
    }
    if s.bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'_'))
    {
        Ok(())
    } else {
        Err("may contain only lowercase letters, digits, '.', '-' and '_'")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        assert_eq!(Options::default().validate(), vec![]);
    }

    #[test]
    fn a_service_may_name_its_own_namespace() {
        let opts = Options {
            services: vec!["payment".into(), "monitoring/jaeger".into()],
            ..Options::default()
        };
        assert_eq!(opts.validate(), vec![]);
        assert_eq!(opts.service("payment"), ("ecommerce", "payment"));
        assert_eq!(opts.service("monitoring/jaeger"), ("monitoring", "jaeger"));

        // One directory per name, whatever the namespace; every part a DNS-1123 label.
        let opts = Options {
            services: vec![
                "payment".into(),
                "shop/payment".into(),
                "Mon/jaeger".into(),
                "a/b/c".into(),
                "/x".into(),
                "monitoring/".into(),
            ],
            ..Options::default()
        };
        let problems: Vec<String> = opts.validate().iter().map(|p| p.message.clone()).collect();
        assert_eq!(
            problems,
            [
                "service \"Mon/jaeger\": namespace \"Mon\" may contain only lowercase letters, digits and '-'",
                "service \"a/b/c\" is neither NAME nor NAMESPACE/NAME",
                "service \"/x\": namespace \"\" must be 1 to 63 characters long",
                "service \"payment\" is listed twice",
                "service \"\" must be 1 to 63 characters long",
            ],
        );
    }

    #[test]
    fn every_problem_is_reported() {
        let opts = Options {
            regions: vec![],
            services: vec![
                "../etc".into(),
                "payment".into(),
                "payment".into(),
                "intermediate".into(),
            ],
            namespace: "Ecommerce".into(),
            trust_domain: "cluster local".into(),
            cluster_domain: "cluster..local".into(),
            days: 0,
            ca_days: 99_999,
            ..Options::default()
        };
        let fields: Vec<Field> = opts.validate().iter().map(|p| p.field).collect();
        assert_eq!(
            fields,
            vec![
                Field::Regions,
                Field::Services,
                Field::Services,
                Field::Services,
                Field::Namespace,
                Field::TrustDomain,
                Field::ClusterDomain,
                Field::Days,
                Field::CaDays,
            ]
        );
    }

    #[test]
    fn clients_and_redis_names_are_checked() {
        let opts = Options {
            clients: vec![
                "dev-client".into(),
                "payment".into(),
                "redis-proxy".into(),
                "Dev".into(),
                "dev-client".into(),
            ],
            redis_proxy_names: vec![
                "a.redis.svc".into(),
                "a.redis.svc".into(),
                "a..b".into(),
                "A.redis".into(),
                "".into(),
            ],
            ..Options::default()
        };
        let messages: Vec<String> = opts.validate().iter().map(ToString::to_string).collect();
        assert_eq!(
            messages,
            [
                "Clients: client \"redis-proxy\" is reserved by the output layout",
                "Clients: client \"Dev\" may contain only lowercase letters, digits and '-'",
                "Clients: client \"dev-client\" is listed twice",
                "Clients: client \"payment\" is also a service (each gets a directory of its name)",
                "RedisProxyNames: \"a.redis.svc\" is listed twice",
                "RedisProxyNames: \"a..b\" has an empty label (two dots in a row, or a dot at either end)",
                "RedisProxyNames: \"A.redis\" has the label \"A\", which may contain only lowercase letters, digits and '-'",
                "RedisProxyNames: \"\" must be 1 to 253 characters long",
            ]
        );
    }

    #[test]
    fn revoked_clients_are_clients_with_a_free_directory() {
        let long = "a".repeat(60);
        let opts = Options {
            services: vec!["payment".into(), "bob-revoked".into()],
            clients: vec!["alice".into(), "bob".into(), long.clone(), "carol".into()],
            revoked_clients: vec![
                "alice".into(),
                "mallory".into(),
                "alice".into(),
                "bob".into(),
                long.clone(),
            ],
            ..Options::default()
        };
        let messages: Vec<String> = opts.validate().iter().map(ToString::to_string).collect();
        assert_eq!(
            messages,
            [
                "RevokedClients: \"mallory\" is not in --clients (a revoked certificate is a second one of a client's identity)",
                "RevokedClients: \"alice\" is listed twice",
                "RevokedClients: \"bob\": its directory \"bob-revoked\" is also a service's or a client's",
                &format!(
                    "RevokedClients: \"{long}\": its directory \"{long}-revoked\" must be 1 to 63 characters long"
                ),
            ]
        );
    }

    #[test]
    fn regions_cannot_take_the_names_of_the_top_level_directories() {
        let opts = Options {
            regions: vec!["k8s".into(), "root".into(), "us".into(), "crl".into()],
            ..Options::default()
        };
        let messages: Vec<String> = opts.validate().iter().map(ToString::to_string).collect();
        assert_eq!(
            messages,
            [
                "Regions: region \"k8s\" is reserved by the output layout",
                "Regions: region \"root\" is reserved by the output layout",
                "Regions: region \"crl\" is reserved by the output layout",
            ]
        );
    }

    #[test]
    fn flags_give_back_what_is_not_the_default() {
        assert!(Options::default().flags().is_empty());
        let opts = Options {
            regions: vec!["dev".into()],
            days: 1825,
            redis_proxy_names: vec!["a.redis".into(), "b.redis".into()],
            ..Options::default()
        };
        assert_eq!(
            opts.flags(),
            [
                "--regions",
                "dev",
                "--days",
                "1825",
                "--redis-proxy-names",
                "a.redis,b.redis"
            ]
        );
    }

    #[test]
    fn leaf_may_not_outlive_ca() {
        let opts = Options {
            days: 400,
            ca_days: 300,
            ..Options::default()
        };
        let problems = opts.validate();
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!(problems[0].field, Field::Days);
    }

    #[test]
    fn labels() {
        for good in ["a", "us", "product-catalog", "a1", &"x".repeat(63)] {
            assert_eq!(check_label(good), Ok(()), "{good}");
        }
        for bad in ["", "-a", "a-", "A", "a_b", "a.b", "../x", &"x".repeat(64)] {
            assert!(check_label(bad).is_err(), "{bad}");
        }
    }
}
