//! What a certificate should be: key type, usages, validity window and SANs ([`LeafSpec`]),
//! and the workload identities of contract §4. [`crate::issue`] turns a spec into a certificate.

use std::net::IpAddr;

use rcgen::{KeyPair, PKCS_ECDSA_P256_SHA256, PKCS_ECDSA_P384_SHA384, PKCS_RSA_SHA256, RsaKeySize};
use time::{Duration, OffsetDateTime};

/// How far a normal validity window starts in the past, so that a node whose clock is a little
/// behind the generating machine does not reject a certificate as not yet valid.
pub const BACKDATE: Duration = Duration::minutes(5);

/// Key algorithm of a generated key pair.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub enum KeyType {
    /// ECDSA on P-256 with SHA-256: the project's default (contract §4).
    #[default]
    EcdsaP256,
    EcdsaP384,
    /// RSA 2048 (PKCS#1 v1.5 SHA-256 signatures by this key), for tests of RSA certificates.
    Rsa2048,
}

impl KeyType {
    pub(crate) fn generate(self) -> Result<KeyPair, rcgen::Error> {
        match self {
            Self::EcdsaP256 => KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256),
            Self::EcdsaP384 => KeyPair::generate_for(&PKCS_ECDSA_P384_SHA384),
            Self::Rsa2048 => KeyPair::generate_rsa_for(&PKCS_RSA_SHA256, RsaKeySize::_2048),
        }
    }
}

/// Which TLS roles a leaf may play (its extended key usages).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub enum Usage {
    Server,
    Client,
    /// A sidecar is both: TLS server on inbound, TLS client on outbound.
    #[default]
    ServerAndClient,
}

/// A certificate's validity window (whole seconds, as X.509 stores it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Validity {
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
}

impl Validity {
    /// From [`BACKDATE`] ago until `days` from now.
    pub fn days(days: u32) -> Self {
        let now = now();
        Self::between(now - BACKDATE, now + Duration::days(days.into()))
    }

    /// Ended a day ago (valid from two days ago until one day ago).
    pub fn expired() -> Self {
        let now = now();
        Self::between(now - Duration::days(2), now - Duration::days(1))
    }

    /// Starts tomorrow (valid from one day until two days from now).
    pub fn not_yet_valid() -> Self {
        let now = now();
        Self::between(now + Duration::days(1), now + Duration::days(2))
    }

    /// Any window; [`Ca::issue`](crate::Ca::issue) rejects one that ends before it starts.
    pub fn between(not_before: OffsetDateTime, not_after: OffsetDateTime) -> Self {
        Self {
            not_before: whole_seconds(not_before),
            not_after: whole_seconds(not_after),
        }
    }
}

fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc()
}

fn whole_seconds(t: OffsetDateTime) -> OffsetDateTime {
    t.replace_nanosecond(0).unwrap_or(t)
}

/// What a leaf certificate should contain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeafSpec {
    pub common_name: String,
    pub dns_names: Vec<String>,
    /// URI SANs, e.g. SPIFFE IDs.
    pub uris: Vec<String>,
    pub ip_addresses: Vec<IpAddr>,
    pub validity: Validity,
    pub key_type: KeyType,
    pub usage: Usage,
}

impl LeafSpec {
    /// A leaf with no SANs, valid for 365 days, ECDSA P-256, server and client usage.
    pub fn new(common_name: impl Into<String>) -> Self {
        Self {
            common_name: common_name.into(),
            dns_names: Vec::new(),
            uris: Vec::new(),
            ip_addresses: Vec::new(),
            validity: Validity::days(365),
            key_type: KeyType::default(),
            usage: Usage::default(),
        }
    }

    /// The identity of a workload as contract §4 defines it: DNS
    /// `<name>.<namespace>.svc.<cluster_domain>` and `<name>.<namespace>.svc`, URI
    /// `spiffe://<trust_domain>/ns/<namespace>/sa/<name>` (service and service account share
    /// `name`).
    pub fn workload(name: &str, namespace: &str, trust_domain: &str, cluster_domain: &str) -> Self {
        Self::new(name)
            .dns(format!("{name}.{namespace}.svc.{cluster_domain}"))
            .dns(format!("{name}.{namespace}.svc"))
            .uri(spiffe_id(trust_domain, namespace, name))
    }

    pub fn dns(mut self, name: impl Into<String>) -> Self {
        self.dns_names.push(name.into());
        self
    }

    pub fn uri(mut self, uri: impl Into<String>) -> Self {
        self.uris.push(uri.into());
        self
    }

    pub fn ip(mut self, ip: IpAddr) -> Self {
        self.ip_addresses.push(ip);
        self
    }

    pub fn validity(mut self, validity: Validity) -> Self {
        self.validity = validity;
        self
    }

    pub fn key_type(mut self, key_type: KeyType) -> Self {
        self.key_type = key_type;
        self
    }

    pub fn usage(mut self, usage: Usage) -> Self {
        self.usage = usage;
        self
    }
}

/// `spiffe://<trust_domain>/ns/<namespace>/sa/<service_account>`.
pub fn spiffe_id(trust_domain: &str, namespace: &str, service_account: &str) -> String {
    format!("spiffe://{trust_domain}/ns/{namespace}/sa/{service_account}")
}
