//! The whole development PKI: one root, one intermediate per region, one leaf per service per
//! region plus the injector's webhook serving certificate, and on request client certificates
//! for people and the Redis Enterprise proxy certificate.

use crate::issue::{Ca, IssueError, Leaf};
use crate::layout;
use crate::options::{Options, Problem};
use crate::spec::{LeafSpec, Usage, Validity, spiffe_id};

/// The root's common name starts with this, then the PKI's random id.
pub const ROOT_COMMON_NAME: &str = "Gembok Development Root CA";

/// Every generated PKI names its CAs with an id of its own, so that a certificate from another
/// run of the tool is reported as signed by an unknown issuer, not as a bad signature by ours
/// (verifiers find a certificate's issuer by name).
fn root_common_name(id: &str) -> String {
    format!("{ROOT_COMMON_NAME} {id}")
}

pub fn intermediate_common_name(region: &str, id: &str) -> String {
    format!("Gembok Development Intermediate CA ({region}) {id}")
}

/// Eight random hex digits.
fn pki_id() -> String {
    format!("{:08x}", rand::random::<u32>())
}

#[derive(Debug, thiserror::Error)]
pub enum GenerateError {
    #[error("invalid options: {}", join(.0))]
    Options(Vec<Problem>),
    #[error(transparent)]
    Issue(#[from] IssueError),
}

fn join(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// Generated material, in memory. [`DevPki::write`](crate::DevPki::write) puts it on disk.
#[derive(Debug)]
pub struct DevPki {
    pub options: Options,
    pub root: Ca,
    /// In the order of `options.regions`.
    pub regions: Vec<Region>,
    /// The root's revocation list (revoking nothing) and each region's intermediate's (revoking
    /// that region's `revoked_clients`), in that order, PEM: what a sidecar's `--crl` takes.
    /// Their next update is as far away as the leaves' expiry.
    pub crl_pem: String,
}

#[derive(Debug)]
pub struct Region {
    pub name: String,
    pub intermediate: Ca,
    /// `(service, leaf)` in the order of `options.services`, as written there (`NAME` or
    /// `NAMESPACE/NAME`).
    pub services: Vec<(String, Leaf)>,
    /// Serving certificate of the admission webhook in this region's cluster.
    pub injector: Leaf,
    /// `(client name, leaf)` in the order of `options.clients`.
    pub clients: Vec<(String, Leaf)>,
    /// `(client name, leaf)` in the order of `options.revoked_clients`: a second certificate of
    /// the client's identity, listed as revoked in the intermediate's revocation list.
    pub revoked_clients: Vec<(String, Leaf)>,
    /// The Redis Enterprise proxy certificate, when `options.redis_proxy_names` has names.
    pub redis_proxy: Option<Leaf>,
}

impl DevPki {
    pub fn generate(options: &Options) -> Result<Self, GenerateError> {
        let problems = options.validate();
        if !problems.is_empty() {
            return Err(GenerateError::Options(problems));
        }
        // One window for every CA, so no intermediate outlives the root.
        let ca_validity = Validity::days(options.ca_days);
        let id = pki_id();
        let root = Ca::root(&root_common_name(&id), ca_validity)?;
        let regions: Vec<Region> = options
            .regions
            .iter()
            .map(|region| generate_region(&root, &id, ca_validity, region, options))
            .collect::<Result<_, _>>()?;
        let lifetime = time::Duration::days(i64::from(options.days));
        let mut crl_pem = root.crl_pem_for(&[], 1, lifetime)?;
        for region in &regions {
            let revoked: Vec<String> = region
                .revoked_clients
                .iter()
                .map(|(_, leaf)| leaf.serial_hex())
                .collect();
            crl_pem += &region.intermediate.crl_pem_for(&revoked, 1, lifetime)?;
        }
        Ok(Self {
            options: options.clone(),
            root,
            regions,
            crl_pem,
        })
    }

    pub fn region(&self, name: &str) -> Option<&Region> {
        self.regions.iter().find(|r| r.name == name)
    }
}

impl Region {
    pub fn service(&self, name: &str) -> Option<&Leaf> {
        self.services
            .iter()
            .find_map(|(svc, leaf)| (svc == name).then_some(leaf))
    }

    pub fn client(&self, name: &str) -> Option<&Leaf> {
        self.clients
            .iter()
            .find_map(|(client, leaf)| (client == name).then_some(leaf))
    }
}

/// The leaf spec used for each service (exposed so tests can compare against it).
pub fn service_spec(options: &Options, service: &str) -> LeafSpec {
    let (namespace, service) = options.service(service);
    LeafSpec::workload(
        service,
        namespace,
        &options.trust_domain,
        &options.cluster_domain,
    )
    .validity(Validity::days(options.days))
}

/// The API server calls the webhook by `<svc>.<ns>.svc`; the long form is for humans and tools.
pub fn injector_spec(options: &Options) -> LeafSpec {
    let (svc, ns) = (&options.injector_service, &options.injector_namespace);
    LeafSpec::new(svc.as_str())
        .dns(format!("{svc}.{ns}.svc"))
        .dns(format!("{svc}.{ns}.svc.{}", options.cluster_domain))
        .usage(Usage::Server)
        .validity(Validity::days(options.days))
}

/// A person's or tool's certificate: the SPIFFE ID of a service account `name` in the services'
/// namespace, clientAuth only, so it can call a service but never pose as one.
pub fn client_spec(options: &Options, name: &str) -> LeafSpec {
    LeafSpec::new(name)
        .uri(spiffe_id(&options.trust_domain, &options.namespace, name))
        .usage(Usage::Client)
        .validity(Validity::days(options.days))
}

/// The Redis Enterprise proxy certificate, as the production Certificate `redis-proxy-gembok`
/// has it: the databases' names, Redis' SPIFFE ID, server and client usage (active-active sync).
pub fn redis_proxy_spec(options: &Options) -> Option<LeafSpec> {
    let first = options.redis_proxy_names.first()?;
    let spec = options
        .redis_proxy_names
        .iter()
        .fold(LeafSpec::new(first.as_str()), |spec, name| {
            spec.dns(name.as_str())
        })
        .uri(spiffe_id(
            &options.trust_domain,
            layout::REDIS_NAMESPACE,
            layout::REDIS_SERVICE_ACCOUNT,
        ))
        .usage(Usage::ServerAndClient)
        .validity(Validity::days(options.days));
    Some(spec)
}

fn generate_region(
    root: &Ca,
    id: &str,
    ca_validity: Validity,
    region: &str,
    options: &Options,
) -> Result<Region, IssueError> {
    let intermediate = root.intermediate(&intermediate_common_name(region, id), ca_validity)?;
    // `(name, leaf)` for each name, the leaf issued from the spec `spec` gives that name.
    let each = |names: &[String], spec: &dyn Fn(&str) -> LeafSpec| {
        names
            .iter()
            .map(|name| Ok((name.clone(), intermediate.issue(&spec(name))?)))
            .collect::<Result<Vec<_>, IssueError>>()
    };
    let services = each(&options.services, &|svc| service_spec(options, svc))?;
    let injector = intermediate.issue(&injector_spec(options))?;
    let clients = each(&options.clients, &|name| client_spec(options, name))?;
    // A second leaf of each such client's identity, for the revocation lists to name.
    let revoked_clients = each(&options.revoked_clients, &|name| client_spec(options, name))?;
    let redis_proxy = redis_proxy_spec(options)
        .map(|spec| intermediate.issue(&spec))
        .transpose()?;
    Ok(Region {
        name: region.to_owned(),
        intermediate,
        services,
        injector,
        clients,
        revoked_clients,
        redis_proxy,
    })
}
