//! Certificates for this crate's unit tests (rcgen).

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    SanType,
};
use time::{Duration as TimeDuration, OffsetDateTime};

pub struct Ca {
    pub pem: String,
    pub issuer: Issuer<'static, KeyPair>,
}

pub fn ca(name: &str) -> Ca {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(vec![]).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    let cert = params.self_signed(&key).unwrap();
    Ca {
        pem: cert.pem(),
        issuer: Issuer::new(params, key),
    }
}

pub struct Leaf {
    pub cert: String,
    pub key: String,
}

pub fn leaf(ca: &Ca, valid_from: TimeDuration, valid_for: TimeDuration) -> Leaf {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(vec!["svc.example".to_owned()]).unwrap();
    params.subject_alt_names.push(SanType::URI(
        "spiffe://cluster.local/ns/a/sa/b".try_into().unwrap(),
    ));
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let start = OffsetDateTime::now_utc() + valid_from;
    params.not_before = start;
    params.not_after = start + valid_for;
    let cert = params.signed_by(&key, &ca.issuer).unwrap();
    Leaf {
        cert: cert.pem(),
        key: key.serialize_pem(),
    }
}

pub fn good_leaf(ca: &Ca) -> Leaf {
    leaf(ca, TimeDuration::hours(-1), TimeDuration::days(30))
}

/// A certificate revocation list signed by `ca` naming the certificates (PEM) given.
pub fn crl(ca: &Ca, revoked: &[&str]) -> String {
    crl_numbered(ca, revoked, 1, None)
}

/// A revocation list of `ca` with this CRL number and, if given, an issuing distribution point
/// (the URI that scopes a partitioned list).
pub fn crl_numbered(ca: &Ca, revoked: &[&str], number: u64, scope: Option<&str>) -> String {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject as _;
    let now = OffsetDateTime::now_utc();
    let revoked_certs = revoked
        .iter()
        .map(|pem| {
            let der = CertificateDer::from_pem_slice(pem.as_bytes()).unwrap();
            let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
            rcgen::RevokedCertParams {
                serial_number: rcgen::SerialNumber::from_slice(cert.tbs_certificate.raw_serial()),
                revocation_time: now,
                reason_code: None,
                invalidity_date: None,
            }
        })
        .collect();
    let params = rcgen::CertificateRevocationListParams {
        this_update: now - TimeDuration::minutes(1),
        next_update: now + TimeDuration::days(1),
        crl_number: rcgen::SerialNumber::from(number),
        issuing_distribution_point: scope.map(|uri| rcgen::CrlIssuingDistributionPoint {
            distribution_point: rcgen::CrlDistributionPoint {
                uris: vec![uri.to_owned()],
            },
            scope: None,
        }),
        revoked_certs,
        key_identifier_method: rcgen::KeyIdMethod::Sha256,
    };
    params.signed_by(&ca.issuer).unwrap().pem().unwrap()
}
