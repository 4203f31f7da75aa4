//! Parsing and validating one snapshot of certificate files into [`Material`].
//!
//! Validation happens here, before anything is published: the private key must match the leaf,
//! the leaf must be inside its validity window, and the chain must verify against the CA bundle
//! for every [`Usage`] the caller needs (a sidecar is both a TLS server and a TLS client).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls::RootCertStore;
use rustls::crypto::CryptoProvider;
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer, UnixTime};
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

use crate::san::{AllowList, ListError, parse_list};
use crate::source::Files;

/// What the leaf certificate will be used for; the chain is verified for each one required.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Usage {
    /// Presented by a TLS server (extended key usage serverAuth).
    Server,
    /// Presented by a TLS client (extended key usage clientAuth).
    Client,
}

/// A validated certificate, its key and the CA bundle, ready to build TLS configs from.
#[derive(Debug)]
pub struct Material {
    /// Leaf first, then any intermediates, as read from the certificate file.
    pub chain: Vec<CertificateDer<'static>>,
    /// The chain with its loaded signing key (shared by every config built from this material).
    pub certified_key: Arc<CertifiedKey>,
    /// Trust anchors from the CA bundle; `None` when no CA file was given and none is required.
    pub roots: Option<Arc<RootCertStore>>,
    /// Facts about the leaf for logs, metrics and readiness.
    pub leaf: LeafInfo,
    /// The allow-san list files, parsed, in the order configured.
    pub allow_san: Vec<AllowList>,
    /// The certificate revocation lists of the CRL files, in the order configured, the newest
    /// of each issuer only; each parsed and, where its issuer is on our own chain, its signature
    /// checked ([`Material::validate`]).
    pub crls: Vec<CertificateRevocationListDer<'static>>,
    /// Digest of the file contents this material was built from.
    pub digest: [u8; 32],
}

/// Facts about the leaf certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeafInfo {
    /// Serial number, lower-case hex without separators.
    pub serial: String,
    pub subject: String,
    /// The subject's first common name, if it has one.
    pub common_name: Option<String>,
    pub not_before: SystemTime,
    pub not_after: SystemTime,
    pub dns_names: Vec<String>,
    pub uris: Vec<String>,
}

impl LeafInfo {
    /// Parses a DER certificate. Shared with callers that inspect peer certificates.
    pub fn from_der(der: &[u8]) -> Result<Self, String> {
        let (_, cert) = X509Certificate::from_der(der).map_err(|e| e.to_string())?;
        let validity = cert.validity();
        let mut dns_names = Vec::new();
        let mut uris = Vec::new();
        if let Ok(Some(san)) = cert.subject_alternative_name() {
            for name in &san.value.general_names {
                match name {
                    GeneralName::DNSName(n) => dns_names.push((*n).to_owned()),
                    GeneralName::URI(u) => uris.push((*u).to_owned()),
                    _ => {}
                }
            }
        }
        Ok(LeafInfo {
            serial: cert
                .tbs_certificate
                .raw_serial()
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect(),
            subject: cert.subject().to_string(),
            common_name: cert
                .subject()
                .iter_common_name()
                .next()
                .and_then(|cn| cn.as_str().ok())
                .map(str::to_owned),
            not_before: to_system_time(validity.not_before.timestamp()),
            not_after: to_system_time(validity.not_after.timestamp()),
            dns_names,
            uris,
        })
    }

    /// Seconds since the Unix epoch at which the certificate expires (for metrics).
    pub fn not_after_unix(&self) -> f64 {
        self.not_after
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0)
    }
}

fn to_system_time(unix: i64) -> SystemTime {
    if unix >= 0 {
        UNIX_EPOCH + Duration::from_secs(unix as u64)
    } else {
        UNIX_EPOCH - Duration::from_secs(unix.unsigned_abs())
    }
}

/// Why a snapshot of certificate files was refused. Each variant names the file or the check.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(transparent)]
    Read(#[from] crate::source::ReadError),
    #[error("{}: no PEM certificate found", path.display())]
    NoCertificate { path: PathBuf },
    #[error("{}: invalid PEM: {reason}", path.display())]
    BadPem { path: PathBuf, reason: String },
    #[error("{}: no PEM private key found (PKCS#8, PKCS#1 or SEC1)", path.display())]
    NoKey { path: PathBuf },
    #[error("{}: private key not usable: {reason}", path.display())]
    BadKey { path: PathBuf, reason: String },
    #[error("{}: the RSA key is {bits} bits; the minimum is {RSA_MIN_BITS}", path.display())]
    WeakRsaKey { path: PathBuf, bits: usize },
    #[error("private key {} does not match certificate {}", key.display(), cert.display())]
    KeyMismatch { cert: PathBuf, key: PathBuf },
    #[error("{}: CA bundle required but no file was configured", path.display())]
    NoCa { path: PathBuf },
    #[error("{}: no usable CA certificate: {reason}", path.display())]
    BadCa { path: PathBuf, reason: String },
    #[error("{}: leaf certificate cannot be parsed: {reason}", path.display())]
    BadLeaf { path: PathBuf, reason: String },
    #[error("{}: certificate (serial {serial}) is not valid before {}", path.display(), humanize(*not_before))]
    NotYetValid {
        path: PathBuf,
        serial: String,
        not_before: SystemTime,
    },
    #[error("{}: certificate (serial {serial}) expired at {}", path.display(), humanize(*not_after))]
    Expired {
        path: PathBuf,
        serial: String,
        not_after: SystemTime,
    },
    #[error("{}: certificate revocation list refused: {reason}", path.display())]
    BadCrl { path: PathBuf, reason: String },
    #[error("{}: allow-san list refused: {error}", path.display())]
    AllowSan { path: PathBuf, error: ListError },
    #[error("{}: chain does not verify against the CA bundle {} for {usage:?} use: {reason}", cert.display(), ca.display())]
    Untrusted {
        cert: PathBuf,
        ca: PathBuf,
        usage: Usage,
        reason: String,
    },
}

impl LoadError {
    /// A short, stable label for metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            LoadError::Read(_) => "read",
            LoadError::NoCertificate { .. } | LoadError::BadPem { .. } => "bad_pem",
            LoadError::NoKey { .. } | LoadError::BadKey { .. } | LoadError::WeakRsaKey { .. } => {
                "bad_key"
            }
            LoadError::KeyMismatch { .. } => "key_mismatch",
            LoadError::NoCa { .. } | LoadError::BadCa { .. } => "bad_ca",
            LoadError::BadLeaf { .. } => "bad_certificate",
            LoadError::NotYetValid { .. } => "not_yet_valid",
            LoadError::Expired { .. } => "expired",
            LoadError::Untrusted { .. } => "untrusted",
            LoadError::AllowSan { .. } => "bad_allow_san",
            LoadError::BadCrl { .. } => "bad_crl",
        }
    }
}

/// The smallest RSA modulus accepted. Both crypto providers refuse smaller keys anyway, but
/// only as "failed to parse private key as RSA, ECDSA, or EdDSA", which sends operators looking
/// for a broken file; checking first lets the error say what is wrong.
pub const RSA_MIN_BITS: usize = 2048;

fn humanize(t: SystemTime) -> humantime::Rfc3339Timestamp {
    humantime::format_rfc3339_seconds(t)
}

/// What validation must check beyond parsing.
#[derive(Debug, Clone)]
pub struct Requirements {
    /// Refuse material without a CA bundle (needed to verify peers and our own chain).
    pub ca_required: bool,
    /// Verify the chain against the CA for each of these uses. Ignored without a CA.
    pub usages: Vec<Usage>,
}

impl Material {
    /// Parses and validates one snapshot of files at time `now`.
    pub fn validate(
        files: &Files,
        provider: &CryptoProvider,
        req: &Requirements,
        now: SystemTime,
    ) -> Result<Material, LoadError> {
        let paths = &files.paths;
        let chain = parse_certs(&files.cert, &paths.cert)?;
        let key = PrivateKeyDer::from_pem_slice(&files.key).map_err(|e| match e {
            rustls_pki_types::pem::Error::NoItemsFound => LoadError::NoKey {
                path: paths.key.clone(),
            },
            other => LoadError::BadKey {
                path: paths.key.clone(),
                reason: describe_pem_error(&other),
            },
        })?;
        if let Some(bits) = rsa_modulus_bits(&key).filter(|&bits| bits < RSA_MIN_BITS) {
            return Err(LoadError::WeakRsaKey {
                path: paths.key.clone(),
                bits,
            });
        }
        let signing_key =
            provider
                .key_provider
                .load_private_key(key)
                .map_err(|e| LoadError::BadKey {
                    path: paths.key.clone(),
                    reason: e.to_string(),
                })?;
        let certified_key = CertifiedKey::new(chain.clone(), signing_key);
        match certified_key.keys_match() {
            Ok(()) => {}
            Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {
                // The provider cannot derive the public key: prove possession instead.
                prove_key_matches(&certified_key, provider, &chain[0]).map_err(|_| {
                    LoadError::KeyMismatch {
                        cert: paths.cert.clone(),
                        key: paths.key.clone(),
                    }
                })?;
            }
            Err(_) => {
                return Err(LoadError::KeyMismatch {
                    cert: paths.cert.clone(),
                    key: paths.key.clone(),
                });
            }
        }

        let leaf = LeafInfo::from_der(&chain[0]).map_err(|reason| LoadError::BadLeaf {
            path: paths.cert.clone(),
            reason,
        })?;
        if now < leaf.not_before {
            return Err(LoadError::NotYetValid {
                path: paths.cert.clone(),
                serial: leaf.serial,
                not_before: leaf.not_before,
            });
        }
        if now > leaf.not_after {
            return Err(LoadError::Expired {
                path: paths.cert.clone(),
                serial: leaf.serial,
                not_after: leaf.not_after,
            });
        }

        let roots = match (&files.ca, &paths.ca) {
            (Some(ca_pem), Some(ca_path)) => {
                let roots = parse_roots(ca_pem, ca_path)?;
                verify_chain(&chain, &roots, provider, &req.usages, now).map_err(
                    |(usage, reason)| LoadError::Untrusted {
                        cert: paths.cert.clone(),
                        ca: ca_path.clone(),
                        usage,
                        reason,
                    },
                )?;
                Some(Arc::new(roots))
            }
            _ if req.ca_required => {
                return Err(LoadError::NoCa {
                    path: paths.ca.clone().unwrap_or_else(|| PathBuf::from("ca.crt")),
                });
            }
            _ => None,
        };

        let allow_san = files
            .lists
            .iter()
            .map(|(path, bytes)| {
                parse_list(bytes)
                    .map(|patterns| AllowList {
                        path: path.clone(),
                        patterns,
                    })
                    .map_err(|error| LoadError::AllowSan {
                        path: path.clone(),
                        error,
                    })
            })
            .collect::<Result<_, _>>()?;

        let mut parsed = Vec::new();
        for (path, bytes) in &files.crls {
            let lists = parse_crls(bytes).map_err(|reason| LoadError::BadCrl {
                path: path.clone(),
                reason,
            })?;
            if roots.is_none() {
                return Err(LoadError::BadCrl {
                    path: path.clone(),
                    reason: "revocation lists need the CA bundle".to_owned(),
                });
            }
            parsed.extend(lists.into_iter().map(|(der, list)| Crl { path, der, list }));
        }
        let kept = newest_per_issuer(parsed)?;
        if let (Some(roots), Some(usage)) = (&roots, req.usages.first()) {
            for (path, _) in &files.crls {
                let lists: Vec<_> = kept
                    .iter()
                    .filter(|crl| crl.path == path)
                    .map(|crl| &crl.list)
                    .collect();
                check_crls(&chain, roots, provider, *usage, &lists, now).map_err(|reason| {
                    LoadError::BadCrl {
                        path: path.clone(),
                        reason,
                    }
                })?;
            }
        }
        let crls = kept.into_iter().map(|crl| crl.der).collect();

        Ok(Material {
            chain,
            certified_key: Arc::new(certified_key),
            roots,
            leaf,
            allow_san,
            crls,
            digest: files.digest,
        })
    }
}

fn parse_certs(
    pem: &[u8],
    path: &std::path::Path,
) -> Result<Vec<CertificateDer<'static>>, LoadError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| LoadError::BadPem {
            path: path.to_path_buf(),
            reason: describe_pem_error(&e),
        })?;
    if certs.is_empty() {
        return Err(LoadError::NoCertificate {
            path: path.to_path_buf(),
        });
    }
    Ok(certs)
}

/// Size in bits of an RSA private key's modulus (PKCS#1, or PKCS#8 wrapping PKCS#1); `None` for
/// other keys and for anything that does not parse (the provider then says what is wrong).
fn rsa_modulus_bits(key: &PrivateKeyDer<'_>) -> Option<usize> {
    use x509_parser::der_parser::der::parse_der;
    use x509_parser::oid_registry::OID_PKCS1_RSAENCRYPTION;
    let pkcs1 = match key {
        PrivateKeyDer::Pkcs1(key) => key.secret_pkcs1_der(),
        PrivateKeyDer::Pkcs8(key) => {
            // PrivateKeyInfo ::= SEQUENCE { version, AlgorithmIdentifier, OCTET STRING }
            let (_, info) = parse_der(key.secret_pkcs8_der()).ok()?;
            let info = info.as_sequence().ok()?;
            let algorithm = info.get(1)?.as_sequence().ok()?;
            if *algorithm.first()?.as_oid().ok()? != OID_PKCS1_RSAENCRYPTION {
                return None;
            }
            info.get(2)?.as_slice().ok()?
        }
        _ => return None,
    };
    // RSAPrivateKey ::= SEQUENCE { version, modulus INTEGER, ... }
    let (_, rsa) = parse_der(pkcs1).ok()?;
    let modulus = rsa.as_sequence().ok()?.get(1)?.as_slice().ok()?;
    let significant = modulus.iter().position(|&b| b != 0)?;
    let top = modulus[significant];
    Some((modulus.len() - significant - 1) * 8 + (8 - top.leading_zeros() as usize))
}

/// A PEM error in words. rustls-pki-types' own message shows the section label and the bad
/// line as byte arrays (`missing section end marker: [67, 69, 82, 84, ...]`), which nobody
/// reading a log can act on.
fn describe_pem_error(e: &rustls_pki_types::pem::Error) -> String {
    use rustls_pki_types::pem::Error;
    match e {
        Error::MissingSectionEnd { end_marker } => {
            let label = String::from_utf8_lossy(end_marker);
            format!("the {label} section has no `-----END {label}-----` line (truncated file?)")
        }
        Error::IllegalSectionStart { line } => format!(
            "malformed BEGIN line `{}`",
            String::from_utf8_lossy(line).trim_end()
        ),
        other => other.to_string(),
    }
}

fn parse_roots(pem: &[u8], path: &std::path::Path) -> Result<RootCertStore, LoadError> {
    let certs = parse_certs(pem, path).map_err(|e| LoadError::BadCa {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    let mut roots = RootCertStore::empty();
    for cert in certs {
        roots.add(cert).map_err(|e| LoadError::BadCa {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
    }
    Ok(roots)
}

fn verify_chain(
    chain: &[CertificateDer<'static>],
    roots: &RootCertStore,
    provider: &CryptoProvider,
    usages: &[Usage],
    now: SystemTime,
) -> Result<(), (Usage, String)> {
    let unix = UnixTime::since_unix_epoch(now.duration_since(UNIX_EPOCH).unwrap_or_default());
    let end_entity =
        webpki::EndEntityCert::try_from(&chain[0]).map_err(|e| (Usage::Server, e.to_string()))?;
    for &usage in usages {
        let eku = match usage {
            Usage::Server => webpki::KeyUsage::server_auth(),
            Usage::Client => webpki::KeyUsage::client_auth(),
        };
        end_entity
            .verify_for_usage(
                provider.signature_verification_algorithms.all,
                &roots.roots,
                &chain[1..],
                unix,
                eku,
                None,
                None,
            )
            .map_err(|e| (usage, e.to_string()))?;
    }
    Ok(())
}

/// The CRLs of one file: one or more PEM `X509 CRL` blocks, or a single DER CRL; each must be a
/// CRL webpki can use (v2, no unsupported critical extension, no indirect CRL). Each as DER (for
/// rustls' verifiers) and as webpki parsed it (for [`check_crls`]).
type ParsedCrl = (
    CertificateRevocationListDer<'static>,
    webpki::CertRevocationList<'static>,
);

fn parse_crls(bytes: &[u8]) -> Result<Vec<ParsedCrl>, String> {
    let crls: Vec<CertificateRevocationListDer<'static>> =
        match CertificateRevocationListDer::pem_slice_iter(bytes).collect::<Result<Vec<_>, _>>() {
            Ok(pem) if !pem.is_empty() => pem,
            // DER: a SEQUENCE, which no PEM text starts with.
            Ok(_) if bytes.first() == Some(&0x30) => vec![bytes.to_vec().into()],
            Ok(_) => return Err("no PEM `X509 CRL` block and not a DER CRL".to_owned()),
            Err(e) => return Err(format!("invalid PEM: {}", describe_pem_error(&e))),
        };
    crls.into_iter()
        .enumerate()
        .map(|(i, der)| {
            let parsed = webpki::OwnedCertRevocationList::from_der(&der)
                .map_err(|e| format!("CRL {} of the file cannot be used: {e}", i + 1))?;
            Ok((der, parsed.into()))
        })
        .collect()
}

/// One revocation list as read: the file it came from, its DER, and webpki's parse.
struct Crl<'p> {
    path: &'p PathBuf,
    der: CertificateRevocationListDer<'static>,
    list: webpki::CertRevocationList<'static>,
}

/// One list per issuer (and issuing distribution point, which partitions an issuer's lists):
/// webpki consults only the first list that covers a certificate, so a newer list behind an
/// older one of the same CA, appended to a bundle or named in a later file, would go unread and
/// the certificates it revokes accepted. A complete list supersedes its issuer's earlier ones
/// (RFC 5280 5.1.2.4), so the newest is kept (and the others logged); the same list twice is
/// kept once. Two lists of one issuer that differ but claim the same age are refused: which one
/// holds cannot be told.
fn newest_per_issuer(crls: Vec<Crl<'_>>) -> Result<Vec<Crl<'_>>, LoadError> {
    let mut kept: Vec<Crl<'_>> = Vec::with_capacity(crls.len());
    for crl in crls {
        let same_scope = kept.iter().position(|k| {
            k.list.issuer() == crl.list.issuer()
                && k.list.issuing_distribution_point() == crl.list.issuing_distribution_point()
        });
        let Some(i) = same_scope else {
            kept.push(crl);
            continue;
        };
        if kept[i].der == crl.der {
            continue;
        }
        let (older, newer) = match compare_age(&crl.der, &kept[i].der) {
            std::cmp::Ordering::Greater => (std::mem::replace(&mut kept[i], crl), &kept[i]),
            std::cmp::Ordering::Less => (crl, &kept[i]),
            std::cmp::Ordering::Equal => {
                return Err(LoadError::BadCrl {
                    path: crl.path.clone(),
                    reason: format!(
                        "it holds a list of {} that differs from one in {} with the same CRL \
                         number and update time; keep only the current one",
                        issuer_of(&crl.der),
                        kept[i].path.display()
                    ),
                });
            }
        };
        tracing::info!(
            issuer = %issuer_of(&older.der),
            superseded = %older.path.display(),
            by = %newer.path.display(),
            "a revocation list is superseded by a newer one of the same issuer; only the newest is used"
        );
    }
    Ok(kept)
}

/// Which of two lists of one issuer is newer: by CRL number where both have one (RFC 5280
/// 5.2.3: it grows with every list an issuer signs), then by update time. Lists x509-parser
/// cannot read (webpki could) count as equally new.
fn compare_age(a: &[u8], b: &[u8]) -> std::cmp::Ordering {
    use x509_parser::revocation_list::CertificateRevocationList;
    let read = |der| {
        CertificateRevocationList::from_der(der)
            .ok()
            .map(|(_, crl)| crl)
    };
    let (Some(a), Some(b)) = (read(a), read(b)) else {
        return std::cmp::Ordering::Equal;
    };
    let by_number = match (a.crl_number(), b.crl_number()) {
        (Some(x), Some(y)) => x.cmp(y),
        _ => std::cmp::Ordering::Equal,
    };
    by_number.then(a.last_update().cmp(&b.last_update()))
}

fn issuer_of(der: &[u8]) -> String {
    x509_parser::revocation_list::CertificateRevocationList::from_der(der).map_or_else(
        |_| "an unreadable issuer".to_owned(),
        |(_, crl)| crl.issuer().to_string(),
    )
}

/// Verifies our own chain again with `crls`, so that a CRL issued by a certificate on it (the
/// CA or our intermediate) has its signature checked before it is used; one whose issuer is
/// elsewhere (another region's intermediate) is checked at the handshakes it applies to.
/// Revocation of our own certificate is logged, not refused: the list must still reach our
/// verifiers, and only a new certificate mends ours.
fn check_crls(
    chain: &[CertificateDer<'static>],
    roots: &RootCertStore,
    provider: &CryptoProvider,
    usage: Usage,
    crls: &[&webpki::CertRevocationList<'_>],
    now: SystemTime,
) -> Result<(), String> {
    let Ok(options) = webpki::RevocationOptionsBuilder::new(crls) else {
        return Ok(()); // no list: nothing to check
    };
    let options = options
        .with_status_policy(webpki::UnknownStatusPolicy::Allow)
        .build();
    let unix = UnixTime::since_unix_epoch(now.duration_since(UNIX_EPOCH).unwrap_or_default());
    let end_entity = webpki::EndEntityCert::try_from(&chain[0]).map_err(|e| e.to_string())?;
    let eku = match usage {
        Usage::Server => webpki::KeyUsage::server_auth(),
        Usage::Client => webpki::KeyUsage::client_auth(),
    };
    match end_entity.verify_for_usage(
        provider.signature_verification_algorithms.all,
        &roots.roots,
        &chain[1..],
        unix,
        eku,
        Some(options),
        None,
    ) {
        Ok(_) => Ok(()),
        Err(webpki::Error::CertRevoked) => {
            tracing::error!(
                "the certificate served (or its intermediate) is revoked by a configured \
                 revocation list: peers that have the list will refuse it until it is renewed"
            );
            Ok(())
        }
        // The chain verified without the lists just before, so the lists are at fault.
        Err(e) => Err(format!("it does not verify against our own chain: {e}")),
    }
}

/// Signs a message with the key and verifies it with the certificate's public key.
fn prove_key_matches(
    ck: &CertifiedKey,
    provider: &CryptoProvider,
    leaf: &CertificateDer<'_>,
) -> Result<(), ()> {
    let schemes = provider
        .signature_verification_algorithms
        .mapping
        .iter()
        .map(|(scheme, _)| *scheme)
        .collect::<Vec<_>>();
    let signer = ck.key.choose_scheme(&schemes).ok_or(())?;
    let scheme = signer.scheme();
    let message = b"gembok certwatch key possession check";
    let signature = signer.sign(message).map_err(|_| ())?;
    let algs = provider
        .signature_verification_algorithms
        .mapping
        .iter()
        .find(|(s, _)| *s == scheme)
        .map(|(_, algs)| *algs)
        .ok_or(())?;
    let cert = webpki::EndEntityCert::try_from(leaf).map_err(|_| ())?;
    algs.iter()
        .any(|alg| cert.verify_signature(*alg, message, &signature).is_ok())
        .then_some(())
        .ok_or(())
}

#[cfg(test)]
mod tests;
