//! The `gembok-certs-dev` command line: one typed [`Config`], every problem reported at once.

use std::ffi::OsString;
use std::path::PathBuf;

use clap::Parser;
use gembok_cliargs::Parsed;

use crate::options::{Field, MAX_DAYS, Options};
use crate::write::Existing;

/// Writes a development-only PKI for Gembok: a root CA, one intermediate CA per region and, per
/// region, a certificate for every service and for the injector's webhook, as PEM files and as
/// Kubernetes Secret manifests.
///
/// DEVELOPMENT ONLY: the private keys are written in plain files. Never use them in production.
#[derive(Debug, Parser)]
#[command(name = "gembok-certs-dev", version, args_override_self = true)]
struct Args {
    /// Output directory. Must not exist or be empty, unless --force.
    #[arg(long, env = "GEMBOK_CERTS_DEV_OUT", default_value = "certs-dev/out")]
    out: PathBuf,
    /// Replace an output directory written earlier by gembok-certs-dev (one that holds its
    /// DEVELOPMENT-ONLY.txt marker); any other non-empty directory is never touched.
    #[arg(long, env = "GEMBOK_CERTS_DEV_FORCE")]
    force: bool,
    /// Comma-separated regions; each gets its own intermediate CA under the shared root.
    #[arg(long, env = "GEMBOK_CERTS_DEV_REGIONS", default_value = "us,eu,asia")]
    regions: String,
    /// Comma-separated services (service account names) that get a sidecar certificate; a
    /// service in another namespace than --namespace is written NAMESPACE/NAME.
    #[arg(
        long,
        env = "GEMBOK_CERTS_DEV_SERVICES",
        default_value = "product-catalog,payment,recommendation,auth"
    )]
    services: String,
    /// Namespace of the services without one of their own (DNS and SPIFFE SANs, Secret
    /// namespace).
    #[arg(long, env = "GEMBOK_CERTS_DEV_NAMESPACE", default_value = "ecommerce")]
    namespace: String,
    /// SPIFFE trust domain of the URI SANs.
    #[arg(
        long,
        env = "GEMBOK_CERTS_DEV_TRUST_DOMAIN",
        default_value = "cluster.local"
    )]
    trust_domain: String,
    /// Cluster DNS domain of the DNS SANs (<svc>.<ns>.svc.<domain>).
    #[arg(
        long,
        env = "GEMBOK_CERTS_DEV_CLUSTER_DOMAIN",
        default_value = "cluster.local"
    )]
    cluster_domain: String,
    /// Lifetime of the leaf certificates, in days.
    #[arg(long, env = "GEMBOK_CERTS_DEV_DAYS", default_value = "365")]
    days: String,
    /// Lifetime of the root and intermediate CAs, in days.
    #[arg(long, env = "GEMBOK_CERTS_DEV_CA_DAYS", default_value = "3650")]
    ca_days: String,
    /// Comma-separated client certificates for people and tools (clientAuth only, SPIFFE ID of a
    /// service account of that name in --namespace), e.g. for curl through a port-forward.
    #[arg(long, env = "GEMBOK_CERTS_DEV_CLIENTS", default_value = "")]
    clients: String,
    /// Comma-separated names from --clients that also get a revoked certificate of the same
    /// identity (<region>/<name>-revoked/), listed in the revocation lists (crl/ca.crl).
    #[arg(long, env = "GEMBOK_CERTS_DEV_REVOKED_CLIENTS", default_value = "")]
    revoked_clients: String,
    /// Comma-separated DNS names of a Redis Enterprise proxy certificate, written also as the
    /// Secret redis-proxy-tls in Redis' own shape (name/certificate/key). None: no such certificate.
    #[arg(long, env = "GEMBOK_CERTS_DEV_REDIS_PROXY_NAMES", default_value = "")]
    redis_proxy_names: String,
}

/// A run of the tool, fully checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub out: PathBuf,
    pub existing: Existing,
    pub options: Options,
}

#[derive(Debug)]
pub enum CliError {
    /// `--help` or `--version`: print it and exit 0.
    Info(clap::Error),
    /// Every problem found, one per line, each naming its flag.
    Invalid(Vec<String>),
}

/// Parses `args` (program name first).
pub fn parse<I, T>(args: I) -> Result<Config, CliError>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString>,
{
    let (parsed, mut problems, sources) = match gembok_cliargs::parse::<Args>(args) {
        Parsed::Read(parsed, problems, sources) => (parsed, problems, sources),
        Parsed::Info(e) => return Err(CliError::Info(e)),
        Parsed::Unreadable(problems) => return Err(CliError::Invalid(problems)),
    };
    let first_own = problems.len();

    // A value that does not parse is reported here and replaced by a placeholder that passes
    // every check, so it cannot cause a second, misleading complaint.
    let mut unparsed = Vec::new();
    let mut days = |field: Field, value: &str, placeholder: u32| match value.trim().parse() {
        Ok(days) => days,
        Err(_) => {
            problems.push(format!(
                "{}: {value:?} is not a whole number of days",
                flag(field)
            ));
            unparsed.push(field);
            placeholder
        }
    };
    let leaf_days = days(Field::Days, &parsed.days, 1);
    let ca_days = days(Field::CaDays, &parsed.ca_days, MAX_DAYS);
    let options = Options {
        regions: split_list(&parsed.regions),
        services: split_list(&parsed.services),
        namespace: parsed.namespace,
        trust_domain: parsed.trust_domain,
        cluster_domain: parsed.cluster_domain,
        days: leaf_days,
        ca_days,
        clients: split_list(&parsed.clients),
        revoked_clients: split_list(&parsed.revoked_clients),
        redis_proxy_names: split_list(&parsed.redis_proxy_names),
        ..Options::default()
    };
    for p in options.validate() {
        if !unparsed.contains(&p.field) {
            problems.push(format!("{}: {}", flag(p.field), p.message));
        }
    }
    if !problems.is_empty() {
        // A value from a GEMBOK_CERTS_DEV_* variable is reported under the variable's name.
        for problem in &mut problems[first_own..] {
            *problem = sources.attribute(problem);
        }
        return Err(CliError::Invalid(problems));
    }
    Ok(Config {
        out: parsed.out,
        existing: if parsed.force {
            Existing::Replace
        } else {
            Existing::Refuse
        },
        options,
    })
}

fn flag(field: Field) -> &'static str {
    match field {
        Field::Regions => "--regions",
        Field::Services => "--services",
        Field::Namespace => "--namespace",
        Field::TrustDomain => "--trust-domain",
        Field::ClusterDomain => "--cluster-domain",
        Field::Days => "--days",
        Field::CaDays => "--ca-days",
        Field::InjectorService => "injector service",
        Field::InjectorNamespace => "injector namespace",
        Field::Clients => "--clients",
        Field::RevokedClients => "--revoked-clients",
        Field::RedisProxyNames => "--redis-proxy-names",
    }
}

fn split_list(s: &str) -> Vec<String> {
    s.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn invalid(args: &[&str]) -> Vec<String> {
        match parse(std::iter::once("gembok-certs-dev").chain(args.iter().copied())) {
            Err(CliError::Invalid(p)) => p,
            other => panic!("expected invalid, got {other:?}"),
        }
    }

    #[test]
    fn no_flags_means_default_options() {
        let config = parse(["gembok-certs-dev"]).unwrap();
        assert_eq!(config.options, Options::default());
        assert_eq!(config.out, PathBuf::from("certs-dev/out"));
        assert_eq!(config.existing, Existing::Refuse);
    }

    #[test]
    fn flags_reach_the_options() {
        let config = parse([
            "x",
            "--out=o",
            "--force",
            "--regions",
            "eu, us",
            "--services=a",
            "--namespace=shop",
            "--trust-domain=example.org",
            "--days=30",
            "--ca-days",
            "60",
        ])
        .unwrap();
        assert_eq!(config.existing, Existing::Replace);
        assert_eq!(config.out, PathBuf::from("o"));
        assert_eq!(config.options.regions, ["eu", "us"]);
        assert_eq!(config.options.services, ["a"]);
        assert_eq!(config.options.namespace, "shop");
        assert_eq!(config.options.trust_domain, "example.org");
        assert_eq!((config.options.days, config.options.ca_days), (30, 60));
    }

    #[test]
    fn unknown_flags_and_bad_values_are_all_listed() {
        let problems = invalid(&[
            "--bogus",
            "--regions=US",
            "--other=1",
            "--days=abc",
            "--namespace",
            "Shop",
        ]);
        assert_eq!(problems.len(), 5, "{problems:#?}");
        assert_eq!(problems[0], "--bogus: unknown flag", "{problems:#?}");
        assert_eq!(problems[1], "--other: unknown flag", "{problems:#?}");
        assert!(problems[2].starts_with("--days: \"abc\""), "{problems:#?}");
        assert!(problems[3].starts_with("--regions: "), "{problems:#?}");
        assert!(problems[4].starts_with("--namespace: "), "{problems:#?}");
    }

    #[test]
    fn a_value_starting_with_a_dash_is_checked_as_its_flags_value() {
        let problems = invalid(&["--services", "-pay", "--regions", "BAD", "--ca-days", "-1"]);
        assert_eq!(problems.len(), 3, "{problems:#?}");
        assert!(
            problems[0].starts_with("--ca-days: \"-1\""),
            "{problems:#?}"
        );
        assert!(problems[1].starts_with("--regions: "), "{problems:#?}");
        assert!(problems[2].starts_with("--services: "), "{problems:#?}");
    }

    #[test]
    fn near_miss_gets_a_suggestion() {
        let problems = invalid(&["--dyas=3"]);
        assert_eq!(problems, ["--dyas: unknown flag; did you mean --days?"]);
    }

    #[test]
    fn missing_value_is_reported_with_the_rest() {
        let problems = invalid(&["--services=../x", "--days"]);
        assert_eq!(problems.len(), 2, "{problems:#?}");
        assert!(problems[0].contains("--days"), "{problems:#?}");
        assert!(problems[1].starts_with("--services: "), "{problems:#?}");
    }

    #[test]
    fn help_is_not_an_error() {
        assert!(matches!(parse(["x", "--help"]), Err(CliError::Info(_))));
    }
}
