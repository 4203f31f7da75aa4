//! Certificate authorities and the certificates they issue, in memory.
//!
//! [`Ca`] is a root or an intermediate that can sign; a [`LeafSpec`] says what a leaf should
//! contain (SANs, validity window, key type, usages) and [`Ca::issue`] turns it into a [`Leaf`]
//! with everything a sidecar mounts: the chain (`tls.crt`), the key (`tls.key`) and the root
//! (`ca.crt`). All ASN.1 is written by rcgen.

use rand::RngCore;
use rcgen::string::Ia5String;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType, SerialNumber,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use time::OffsetDateTime;

use crate::spec::{KeyType, LeafSpec, Usage, Validity};

/// Organization written into every subject, so the certificates say what they are when inspected.
pub const ORGANIZATION: &str = "Gembok (development only)";

/// A failure while creating a key or a certificate.
#[derive(Debug, thiserror::Error)]
pub enum IssueError {
    #[error("{subject}: not_after ({not_after}) must be later than not_before ({not_before})")]
    Validity {
        subject: String,
        not_before: OffsetDateTime,
        not_after: OffsetDateTime,
    },
    #[error("{subject}: subject alternative name {value:?} is not plain ASCII (IA5String)")]
    San { subject: String, value: String },
    #[error("{subject}: {value:?} is not a serial number in hex")]
    Serial { subject: String, value: String },
    #[error("{subject}: {source}")]
    Rcgen {
        subject: String,
        #[source]
        source: rcgen::Error,
    },
}

/// An issued leaf certificate with its key and everything needed to present and verify it.
#[derive(Clone)]
pub struct Leaf {
    /// The leaf certificate alone.
    pub cert_pem: String,
    /// PKCS#8 private key (`tls.key`).
    pub key_pem: String,
    /// The leaf followed by every intermediate up to (not including) the root (`tls.crt`).
    pub chain_pem: String,
    /// The root certificate (`ca.crt`).
    pub ca_pem: String,
    /// Serial number, big-endian, exactly as encoded in the certificate.
    pub serial: Vec<u8>,
    pub validity: Validity,
    chain_der: Vec<CertificateDer<'static>>,
    key_der: Vec<u8>,
    ca_der: CertificateDer<'static>,
}

impl std::fmt::Debug for Leaf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Leaf")
            .field("serial", &hex(&self.serial))
            .field("validity", &self.validity)
            .field("key", &"[elided]")
            .finish_non_exhaustive()
    }
}

impl Leaf {
    pub fn cert_der(&self) -> CertificateDer<'static> {
        self.chain_der[0].clone()
    }

    /// Leaf first, then intermediates: what a TLS peer presents.
    pub fn chain_der(&self) -> Vec<CertificateDer<'static>> {
        self.chain_der.clone()
    }

    pub fn key_der(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key_der.clone()))
    }

    pub fn ca_der(&self) -> CertificateDer<'static> {
        self.ca_der.clone()
    }

    /// Serial number as lowercase hex (what `openssl x509 -serial` prints, lower-cased).
    pub fn serial_hex(&self) -> String {
        hex(&self.serial)
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

fn serial_of(params: &CertificateParams) -> Vec<u8> {
    params
        .serial_number
        .as_ref()
        .map(SerialNumber::to_bytes)
        .unwrap_or_default()
}

/// A certificate authority that can sign intermediates and leaves.
pub struct Ca {
    common_name: String,
    issuer: Issuer<'static, KeyPair>,
    /// This CA certificate's serial number.
    serial: Vec<u8>,
    cert_pem: String,
    /// This CA and every CA between it and the root, nearest first; empty for the root itself.
    chain_pem: Vec<String>,
    chain_der: Vec<CertificateDer<'static>>,
    root_pem: String,
    root_der: CertificateDer<'static>,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ca")
            .field("common_name", &self.common_name)
            .field("is_root", &self.is_root())
            .finish_non_exhaustive()
    }
}

impl Ca {
    /// A new self-signed root (ECDSA P-256, no path length limit).
    pub fn root(common_name: &str, validity: Validity) -> Result<Self, IssueError> {
        let rcgen_err = rcgen_err(common_name);
        let key = KeyType::EcdsaP256.generate().map_err(&rcgen_err)?;
        let params = ca_params(common_name, validity, BasicConstraints::Unconstrained)?;
        let cert = params.self_signed(&key).map_err(&rcgen_err)?;
        let der = cert.der().clone();
        Ok(Self {
            common_name: common_name.to_owned(),
            serial: serial_of(&params),
            issuer: Issuer::new(params, key),
            cert_pem: cert.pem(),
            chain_pem: Vec::new(),
            chain_der: Vec::new(),
            root_pem: cert.pem(),
            root_der: der,
        })
    }

    /// A new intermediate signed by this CA: ECDSA P-256, path length 0 (it signs leaves only).
    pub fn intermediate(&self, common_name: &str, validity: Validity) -> Result<Self, IssueError> {
        let rcgen_err = rcgen_err(common_name);
        let key = KeyType::EcdsaP256.generate().map_err(&rcgen_err)?;
        let mut params = ca_params(common_name, validity, BasicConstraints::Constrained(0))?;
        params.use_authority_key_identifier_extension = true;
        let cert = params.signed_by(&key, &self.issuer).map_err(&rcgen_err)?;
        let mut chain_pem = vec![cert.pem()];
        chain_pem.extend(self.chain_pem.iter().cloned());
        let mut chain_der = vec![cert.der().clone()];
        chain_der.extend(self.chain_der.iter().cloned());
        Ok(Self {
            common_name: common_name.to_owned(),
            serial: serial_of(&params),
            issuer: Issuer::new(params, key),
            cert_pem: cert.pem(),
            chain_pem,
            chain_der,
            root_pem: self.root_pem.clone(),
            root_der: self.root_der.clone(),
        })
    }

    /// Loads a CA written earlier (e.g. `root/ca.crt` + `root/ca.key`, or a region's
    /// `intermediate/tls.crt` + `tls.key` with `root_pem` = `ca.crt`). `root_pem: None` means
    /// the certificate is itself the root; otherwise it must be signed directly by the root.
    pub fn from_pem(
        cert_pem: &str,
        key_pem: &str,
        root_pem: Option<&str>,
    ) -> Result<Self, IssueError> {
        let subject = "CA loaded from PEM";
        let rcgen_err = rcgen_err(subject);
        let key = KeyPair::from_pem(key_pem).map_err(&rcgen_err)?;
        let der = CertificateDer::from_pem_slice(cert_pem.as_bytes())
            .map_err(|_| rcgen_err(rcgen::Error::CouldNotParseCertificate))?;
        let serial = x509_parser::parse_x509_certificate(&der)
            .map(|(_, cert)| cert.tbs_certificate.raw_serial().to_vec())
            .map_err(|_| rcgen_err(rcgen::Error::CouldNotParseCertificate))?;
        let issuer = Issuer::from_ca_cert_der(&der, key).map_err(&rcgen_err)?;
        let pem = pem_of(&der);
        let (chain_pem, chain_der, root_pem, root_der) = match root_pem {
            None => (Vec::new(), Vec::new(), pem.clone(), der.clone()),
            Some(root) => {
                let root_der = CertificateDer::from_pem_slice(root.as_bytes())
                    .map_err(|_| rcgen_err(rcgen::Error::CouldNotParseCertificate))?;
                (vec![pem.clone()], vec![der], pem_of(&root_der), root_der)
            }
        };
        Ok(Self {
            common_name: subject.to_owned(),
            issuer,
            serial,
            cert_pem: pem,
            chain_pem,
            chain_der,
            root_pem,
            root_der,
        })
    }

    /// This CA certificate's serial number as lowercase hex (as [`Leaf::serial_hex`]).
    pub fn serial_hex(&self) -> String {
        hex(&self.serial)
    }

    /// A certificate revocation list signed by this CA (PEM `X509 CRL`), number `number`,
    /// naming the certificates with these serials (lowercase hex, as [`Leaf::serial_hex`] and
    /// [`Ca::serial_hex`] give them) revoked as of now; its next update is in 7 days.
    pub fn crl_pem(&self, serials: &[String], number: u64) -> Result<String, IssueError> {
        self.crl_pem_for(serials, number, time::Duration::days(7))
    }

    /// [`Ca::crl_pem`] with its next update `lifetime` from now.
    pub fn crl_pem_for(
        &self,
        serials: &[String],
        number: u64,
        lifetime: time::Duration,
    ) -> Result<String, IssueError> {
        let rcgen_err = rcgen_err(&self.common_name);
        let now = OffsetDateTime::now_utc();
        let revoked_certs = serials
            .iter()
            .map(|serial| {
                let bytes = unhex(serial).ok_or_else(|| IssueError::Serial {
                    subject: self.common_name.clone(),
                    value: serial.clone(),
                })?;
                Ok(rcgen::RevokedCertParams {
                    serial_number: SerialNumber::from_slice(&bytes),
                    revocation_time: now,
                    reason_code: Some(rcgen::RevocationReason::KeyCompromise),
                    invalidity_date: None,
                })
            })
            .collect::<Result<Vec<_>, IssueError>>()?;
        let params = rcgen::CertificateRevocationListParams {
            this_update: now - time::Duration::minutes(1),
            next_update: now + lifetime,
            crl_number: SerialNumber::from(number),
            issuing_distribution_point: None,
            revoked_certs,
            key_identifier_method: rcgen::KeyIdMethod::Sha256,
        };
        let crl = params.signed_by(&self.issuer).map_err(&rcgen_err)?;
        crl.pem().map_err(&rcgen_err)
    }

    /// Signs a new leaf with a fresh key and a random serial.
    pub fn issue(&self, spec: &LeafSpec) -> Result<Leaf, IssueError> {
        let subject = spec.common_name.as_str();
        let rcgen_err = rcgen_err(subject);
        check_window(subject, spec.validity)?;
        let key = spec.key_type.generate().map_err(&rcgen_err)?;

        let mut params = CertificateParams::default();
        params.distinguished_name = distinguished_name(subject);
        params.not_before = spec.validity.not_before;
        params.not_after = spec.validity.not_after;
        let serial = random_serial();
        params.serial_number = Some(SerialNumber::from_slice(&serial));
        params.is_ca = IsCa::ExplicitNoCa;
        params.use_authority_key_identifier_extension = true;
        params.key_usages = match spec.key_type {
            KeyType::Rsa2048 => vec![
                KeyUsagePurpose::DigitalSignature,
                KeyUsagePurpose::KeyEncipherment,
            ],
            KeyType::EcdsaP256 | KeyType::EcdsaP384 => vec![KeyUsagePurpose::DigitalSignature],
        };
        params.extended_key_usages = match spec.usage {
            Usage::Server => vec![ExtendedKeyUsagePurpose::ServerAuth],
            Usage::Client => vec![ExtendedKeyUsagePurpose::ClientAuth],
            Usage::ServerAndClient => vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ],
        };
        params.subject_alt_names = sans(spec)?;

        let cert = params.signed_by(&key, &self.issuer).map_err(&rcgen_err)?;
        let mut chain_der = vec![cert.der().clone()];
        chain_der.extend(self.chain_der.iter().cloned());
        let chain_pem = std::iter::once(cert.pem())
            .chain(self.chain_pem.iter().cloned())
            .collect::<String>();
        Ok(Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            chain_pem,
            ca_pem: self.root_pem.clone(),
            serial,
            validity: spec.validity,
            chain_der,
            key_der: key.serialize_der(),
            ca_der: self.root_der.clone(),
        })
    }

    pub fn common_name(&self) -> &str {
        &self.common_name
    }

    pub fn is_root(&self) -> bool {
        self.chain_pem.is_empty()
    }

    /// This CA's certificate alone.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// This CA's PKCS#8 private key.
    pub fn key_pem(&self) -> String {
        self.issuer.key().serialize_pem()
    }

    pub fn root_pem(&self) -> &str {
        &self.root_pem
    }

    pub fn root_der(&self) -> CertificateDer<'static> {
        self.root_der.clone()
    }

    /// This CA and the intermediates above it (nearest first); empty for a root.
    pub fn chain_der(&self) -> Vec<CertificateDer<'static>> {
        self.chain_der.clone()
    }
}

fn rcgen_err(subject: &str) -> impl Fn(rcgen::Error) -> IssueError + '_ {
    move |source| IssueError::Rcgen {
        subject: subject.to_owned(),
        source,
    }
}

fn check_window(subject: &str, v: Validity) -> Result<(), IssueError> {
    if v.not_after <= v.not_before {
        return Err(IssueError::Validity {
            subject: subject.to_owned(),
            not_before: v.not_before,
            not_after: v.not_after,
        });
    }
    Ok(())
}

fn ca_params(
    common_name: &str,
    validity: Validity,
    constraints: BasicConstraints,
) -> Result<CertificateParams, IssueError> {
    check_window(common_name, validity)?;
    let mut params = CertificateParams::default();
    params.distinguished_name = distinguished_name(common_name);
    params.not_before = validity.not_before;
    params.not_after = validity.not_after;
    params.serial_number = Some(SerialNumber::from_slice(&random_serial()));
    params.is_ca = IsCa::Ca(constraints);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    Ok(params)
}

fn distinguished_name(common_name: &str) -> rcgen::DistinguishedName {
    let mut dn = rcgen::DistinguishedName::new();
    dn.push(DnType::OrganizationName, ORGANIZATION);
    dn.push(DnType::CommonName, common_name);
    dn
}

fn sans(spec: &LeafSpec) -> Result<Vec<SanType>, IssueError> {
    let ia5 = |value: &String| {
        Ia5String::try_from(value.as_str()).map_err(|_| IssueError::San {
            subject: spec.common_name.clone(),
            value: value.clone(),
        })
    };
    let mut sans = Vec::new();
    for dns in &spec.dns_names {
        sans.push(SanType::DnsName(ia5(dns)?));
    }
    for uri in &spec.uris {
        sans.push(SanType::URI(ia5(uri)?));
    }
    sans.extend(spec.ip_addresses.iter().copied().map(SanType::IpAddress));
    Ok(sans)
}

/// 128 random bits, positive and without a leading zero byte so the DER encoding is exactly
/// these 16 bytes. Explicit because rcgen's default serial is a hash of the public key.
fn random_serial() -> Vec<u8> {
    let mut serial = vec![0u8; 16];
    rand::rng().fill_bytes(&mut serial);
    serial[0] = (serial[0] & 0x7f).max(1);
    serial
}

fn pem_of(der: &CertificateDer<'_>) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der.as_ref());
    let mut pem = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in b64.as_bytes().chunks(64) {
        pem.push_str(std::str::from_utf8(line).unwrap_or_default());
        pem.push('\n');
    }
    pem.push_str("-----END CERTIFICATE-----\n");
    pem
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serial_is_sixteen_positive_bytes() {
        for _ in 0..256 {
            let s = random_serial();
            assert_eq!(s.len(), 16);
            assert!(s[0] >= 1 && s[0] <= 0x7f, "{s:?}");
        }
        assert_ne!(random_serial(), random_serial());
    }

    #[test]
    fn inverted_window_is_rejected() {
        let root = Ca::root("r", Validity::days(1)).unwrap();
        let now = OffsetDateTime::now_utc();
        let spec =
            LeafSpec::new("x").validity(Validity::between(now, now - time::Duration::hours(1)));
        assert!(matches!(
            root.issue(&spec),
            Err(IssueError::Validity { .. })
        ));
    }

    #[test]
    fn non_ascii_san_is_rejected() {
        let root = Ca::root("r", Validity::days(1)).unwrap();
        let spec = LeafSpec::new("x").dns("bücher.example");
        assert!(matches!(root.issue(&spec), Err(IssueError::San { .. })));
    }

    #[test]
    fn leaf_from_root_has_no_intermediates() {
        let root = Ca::root("r", Validity::days(1)).unwrap();
        let leaf = root.issue(&LeafSpec::new("x").dns("x.test")).unwrap();
        assert_eq!(leaf.chain_der().len(), 1);
        assert_eq!(leaf.chain_pem, leaf.cert_pem);
        assert_eq!(leaf.ca_pem, root.cert_pem());
    }
}
