use std::path::Path;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
};
use time::Duration as TimeDuration;

use super::*;
use crate::source::CertSource;
use crate::test_pki::{Ca, ca, good_leaf, leaf};

fn write(dir: &Path, cert: &str, key: &str, ca: &str) -> CertSource {
    std::fs::write(dir.join("tls.crt"), cert).unwrap();
    std::fs::write(dir.join("tls.key"), key).unwrap();
    std::fs::write(dir.join("ca.crt"), ca).unwrap();
    CertSource::Dir(dir.to_path_buf())
}

fn validate(src: &CertSource) -> Result<Material, LoadError> {
    validate_with_crls(src, &[])
}

#[test]
fn accepts_a_good_chain_and_reports_leaf_facts() {
    let dir = tempfile::tempdir().unwrap();
    let ca = ca("root");
    let l = good_leaf(&ca);
    let m = validate(&write(dir.path(), &l.cert, &l.key, &ca.pem)).unwrap();
    assert_eq!(m.chain.len(), 1);
    assert_eq!(m.leaf.dns_names, vec!["svc.example"]);
    assert_eq!(m.leaf.uris, vec!["spiffe://cluster.local/ns/a/sa/b"]);
    assert!(!m.leaf.serial.is_empty());
    assert!(m.leaf.not_after > SystemTime::now());
    assert!(m.roots.is_some());
}

#[test]
fn accepts_a_leaf_signed_by_an_intermediate_when_the_chain_carries_it() {
    let dir = tempfile::tempdir().unwrap();
    let root = ca("root");
    let inter_key = KeyPair::generate().unwrap();
    let mut inter_params = CertificateParams::new(vec![]).unwrap();
    inter_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    inter_params
        .distinguished_name
        .push(DnType::CommonName, "intermediate eu");
    let inter_cert = inter_params.signed_by(&inter_key, &root.issuer).unwrap();
    let inter = Ca {
        pem: inter_cert.pem(),
        issuer: Issuer::new(inter_params, inter_key),
    };
    let l = good_leaf(&inter);
    let chain = format!("{}{}", l.cert, inter.pem);
    let m = validate(&write(dir.path(), &chain, &l.key, &root.pem)).unwrap();
    assert_eq!(m.chain.len(), 2);

    // Without the intermediate in the chain, the leaf does not verify against the root.
    let err = validate(&write(dir.path(), &l.cert, &l.key, &root.pem)).unwrap_err();
    assert_eq!(err.reason(), "untrusted", "{err}");
}

#[test]
fn refuses_a_key_that_belongs_to_another_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let ca = ca("root");
    let a = good_leaf(&ca);
    let b = good_leaf(&ca);
    let err = validate(&write(dir.path(), &a.cert, &b.key, &ca.pem)).unwrap_err();
    assert_eq!(err.reason(), "key_mismatch");
    assert!(err.to_string().contains("does not match"), "{err}");
}

#[test]
fn refuses_garbage_pem_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let ca = ca("root");
    let a = good_leaf(&ca);
    let err = validate(&write(dir.path(), "not a certificate\n", &a.key, &ca.pem)).unwrap_err();
    assert_eq!(err.reason(), "bad_pem");
    assert!(err.to_string().contains("tls.crt"), "{err}");

    let err = validate(&write(dir.path(), &a.cert, "garbage", &ca.pem)).unwrap_err();
    assert_eq!(err.reason(), "bad_key");
    assert!(err.to_string().contains("tls.key"), "{err}");

    let err = validate(&write(dir.path(), &a.cert, &a.key, "")).unwrap_err();
    assert_eq!(err.reason(), "bad_ca");
    assert!(err.to_string().contains("ca.crt"), "{err}");
}

#[test]
fn refuses_expired_and_not_yet_valid_certificates() {
    let dir = tempfile::tempdir().unwrap();
    let ca = ca("root");
    let old = leaf(&ca, TimeDuration::days(-10), TimeDuration::days(1));
    let err = validate(&write(dir.path(), &old.cert, &old.key, &ca.pem)).unwrap_err();
    assert!(matches!(err, LoadError::Expired { .. }), "{err}");
    assert!(err.to_string().contains("expired at"), "{err}");

    let future = leaf(&ca, TimeDuration::days(1), TimeDuration::days(10));
    let err = validate(&write(dir.path(), &future.cert, &future.key, &ca.pem)).unwrap_err();
    assert!(matches!(err, LoadError::NotYetValid { .. }), "{err}");
}

#[test]
fn refuses_a_chain_from_another_ca() {
    let dir = tempfile::tempdir().unwrap();
    let ours = ca("ours");
    let theirs = ca("theirs");
    let l = good_leaf(&theirs);
    let err = validate(&write(dir.path(), &l.cert, &l.key, &ours.pem)).unwrap_err();
    assert_eq!(err.reason(), "untrusted", "{err}");
}

#[test]
fn refuses_a_leaf_without_the_required_usage() {
    let dir = tempfile::tempdir().unwrap();
    let ca = ca("root");
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(vec!["server.only".to_owned()]).unwrap();
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let cert = params.signed_by(&key, &ca.issuer).unwrap();
    let err = validate(&write(
        dir.path(),
        &cert.pem(),
        &key.serialize_pem(),
        &ca.pem,
    ))
    .unwrap_err();
    assert!(
        matches!(
            err,
            LoadError::Untrusted {
                usage: Usage::Client,
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn ring_provider_validates_the_same_material() {
    let dir = tempfile::tempdir().unwrap();
    let ca = ca("root");
    let l = good_leaf(&ca);
    let src = write(dir.path(), &l.cert, &l.key, &ca.pem);
    let files = src.read(true).unwrap();
    let provider = rustls::crypto::ring::default_provider();
    let req = Requirements {
        ca_required: true,
        usages: vec![Usage::Server],
    };
    Material::validate(&files, &provider, &req, SystemTime::now()).unwrap();
    let other = good_leaf(&ca);
    let src = write(dir.path(), &l.cert, &other.key, &ca.pem);
    let files = src.read(true).unwrap();
    let err = Material::validate(&files, &provider, &req, SystemTime::now()).unwrap_err();
    assert_eq!(err.reason(), "key_mismatch");
}

#[test]
fn a_truncated_pem_is_described_in_words() {
    let dir = tempfile::tempdir().unwrap();
    let ca = ca("root");
    let a = good_leaf(&ca);
    let cut = |pem: &str| pem[..pem.len() / 2].to_owned();

    let err = validate(&write(dir.path(), &cut(&a.cert), &a.key, &ca.pem)).unwrap_err();
    assert_eq!(err.reason(), "bad_pem");
    let text = err.to_string();
    assert!(
        text.contains("the CERTIFICATE section has no `-----END CERTIFICATE-----` line"),
        "{text}"
    );
    assert!(!text.contains('['), "bytes in the message: {text}");

    let err = validate(&write(dir.path(), &a.cert, &cut(&a.key), &ca.pem)).unwrap_err();
    assert_eq!(err.reason(), "bad_key");
    assert!(
        err.to_string()
            .contains("the PRIVATE KEY section has no `-----END PRIVATE KEY-----` line"),
        "{err}"
    );

    let err = validate(&write(
        dir.path(),
        "-----BEGIN CERTIFICATE--\n",
        &a.key,
        &ca.pem,
    ))
    .unwrap_err();
    assert!(
        err.to_string()
            .contains("malformed BEGIN line `-----BEGIN CERTIFICATE--`"),
        "{err}"
    );
}

/// An RSA key made by the `openssl` command (neither rcgen nor aws-lc-rs generates keys under
/// 2048 bits), in the format `args` ask for.
fn openssl_rsa(bits: u32, args: &[&str]) -> String {
    let out = std::process::Command::new("openssl")
        .arg("genrsa")
        .args(args)
        .arg(bits.to_string())
        .output()
        .expect("the openssl command is needed to make RSA keys of any size");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn a_short_rsa_key_is_named_as_such() {
    let dir = tempfile::tempdir().unwrap();
    let ca = ca("root");
    let a = good_leaf(&ca);
    // PKCS#8 (OpenSSL 3's default) and PKCS#1, under both providers.
    for (key, header) in [
        (openssl_rsa(1024, &[]), "BEGIN PRIVATE KEY"),
        (
            openssl_rsa(1024, &["-traditional"]),
            "BEGIN RSA PRIVATE KEY",
        ),
    ] {
        assert!(key.contains(header), "{key}");
        let src = write(dir.path(), &a.cert, &key, &ca.pem);
        let files = src.read(true).unwrap();
        let req = Requirements {
            ca_required: true,
            usages: vec![Usage::Server],
        };
        for provider in [
            rustls::crypto::aws_lc_rs::default_provider(),
            rustls::crypto::ring::default_provider(),
        ] {
            let err = Material::validate(&files, &provider, &req, SystemTime::now()).unwrap_err();
            assert_eq!(err.reason(), "bad_key");
            assert!(
                err.to_string()
                    .ends_with("tls.key: the RSA key is 1024 bits; the minimum is 2048"),
                "{err}"
            );
        }
    }
}

#[test]
fn rsa_key_sizes_are_read_from_the_key() {
    let pem = |pem: &str| PrivateKeyDer::from_pem_slice(pem.as_bytes()).unwrap();
    assert_eq!(rsa_modulus_bits(&pem(&openssl_rsa(2048, &[]))), Some(2048));
    assert_eq!(
        rsa_modulus_bits(&pem(&openssl_rsa(1536, &["-traditional"]))),
        Some(1536)
    );
    let ecdsa = KeyPair::generate().unwrap().serialize_pem();
    assert_eq!(rsa_modulus_bits(&pem(&ecdsa)), None);
}

/// [`validate`] with CRL files (path, contents) read alongside: server and client use, CA
/// required.
fn validate_with_crls(src: &CertSource, crls: &[(&str, &[u8])]) -> Result<Material, LoadError> {
    let provider = rustls::crypto::aws_lc_rs::default_provider();
    let mut files = src.read(true).unwrap();
    files.crls = crls
        .iter()
        .map(|(path, bytes)| (PathBuf::from(path), bytes.to_vec()))
        .collect();
    Material::validate(
        &files,
        &provider,
        &Requirements {
            ca_required: true,
            usages: vec![Usage::Server, Usage::Client],
        },
        SystemTime::now(),
    )
}

#[test]
fn revocation_lists_are_parsed_and_checked_against_our_own_chain() {
    use crate::test_pki::crl;
    let dir = tempfile::tempdir().unwrap();
    let ca = ca("root");
    let ours = good_leaf(&ca);
    let theirs = good_leaf(&ca);
    let src = write(dir.path(), &ours.cert, &ours.key, &ca.pem);

    // Two lists in one file (PEM, two issuers), and one DER file (a third issuer).
    let (other, third) = (crate::test_pki::ca("other"), crate::test_pki::ca("third"));
    let two = format!("{}{}", crl(&ca, &[&theirs.cert]), crl(&other, &[]));
    let der =
        rustls_pki_types::CertificateRevocationListDer::from_pem_slice(crl(&third, &[]).as_bytes())
            .unwrap();
    let m = validate_with_crls(
        &src,
        &[("two.pem", two.as_bytes()), ("one.der", der.as_ref())],
    )
    .unwrap();
    assert_eq!(m.crls.len(), 3);

    // A list naming our own certificate is taken (and logged): peers will refuse us anyway.
    let m = validate_with_crls(&src, &[("ours.pem", crl(&ca, &[&ours.cert]).as_bytes())]);
    assert_eq!(m.unwrap().crls.len(), 1);

    // Same issuer name, another key: its signature does not verify, so it is refused.
    let impostor = crate::test_pki::ca("root");
    let forged = crl(&impostor, &[&theirs.cert]);
    let err = validate_with_crls(&src, &[("forged.pem", forged.as_bytes())]).unwrap_err();
    assert_eq!(err.reason(), "bad_crl");
    assert!(err.to_string().starts_with("forged.pem: certificate revocation list refused: it does not verify against our own chain"), "{err}");

    for (bytes, why) in [
        (
            &b"not a list"[..],
            "no PEM `X509 CRL` block and not a DER CRL",
        ),
        (
            &b"0\x03\x02\x01\x00"[..],
            "CRL 1 of the file cannot be used",
        ),
        (
            &b"-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n"[..],
            "CRL 1 of the file cannot be used",
        ),
    ] {
        let err = validate_with_crls(&src, &[("bad.pem", bytes)]).unwrap_err();
        assert_eq!(err.reason(), "bad_crl");
        assert!(err.to_string().contains(why), "{err}");
    }
}

/// webpki consults only the first list covering a certificate: of one issuer's lists, only the
/// newest reaches the verifiers, wherever it stands; a list twice is one list; lists scoped to
/// different distribution points are all kept; two that differ with the same number are refused.
#[test]
fn of_one_issuers_lists_the_newest_is_used() {
    use rustls::server::WebPkiClientVerifier;

    use crate::test_pki::crl_numbered;
    let dir = tempfile::tempdir().unwrap();
    let ca = ca("root");
    let ours = good_leaf(&ca);
    let theirs = good_leaf(&ca);
    let src = write(dir.path(), &ours.cert, &ours.key, &ca.pem);
    let old = crl_numbered(&ca, &[], 1, None);
    let new = crl_numbered(&ca, &[&theirs.cert], 2, None);
    let theirs_der = CertificateDer::from_pem_slice(theirs.cert.as_bytes()).unwrap();
    // Whether a client verifier given the material's lists refuses `theirs` as revoked.
    let revoked = |m: &Material| {
        let verifier = WebPkiClientVerifier::builder_with_provider(
            m.roots.clone().unwrap(),
            Arc::new(rustls::crypto::aws_lc_rs::default_provider()),
        )
        .with_crls(m.crls.clone())
        .build()
        .unwrap();
        let now = UnixTime::now();
        match verifier.verify_client_cert(&theirs_der, &[], now) {
            Ok(_) => false,
            Err(rustls::Error::InvalidCertificate(rustls::CertificateError::Revoked)) => true,
            Err(e) => panic!("neither accepted nor revoked: {e}"),
        }
    };

    for files in [
        vec![("ca.crl", format!("{old}{new}"))],
        vec![("old.crl", old.clone()), ("new.crl", new.clone())],
        vec![("new.crl", new.clone()), ("old.crl", old.clone())],
        vec![("ca.crl", format!("{old}{new}{old}{new}"))],
    ] {
        let names: Vec<_> = files.iter().map(|(name, _)| *name).collect();
        let files: Vec<(&str, &[u8])> = files.iter().map(|(n, pem)| (*n, pem.as_bytes())).collect();
        let m = validate_with_crls(&src, &files).unwrap();
        assert_eq!(m.crls.len(), 1, "{names:?}");
        assert!(
            revoked(&m),
            "the newer list of {names:?} was not the one used"
        );
    }

    // Lists scoped to distribution points of their own are not each other's successors.
    let (a, b) = (
        crl_numbered(&ca, &[], 1, Some("http://crl.example/a.crl")),
        crl_numbered(&ca, &[], 2, Some("http://crl.example/b.crl")),
    );
    let m = validate_with_crls(&src, &[("ab.crl", format!("{a}{b}").as_bytes())]).unwrap();
    assert_eq!(m.crls.len(), 2);

    // The same number, different contents: which one holds cannot be told.
    let rival = crl_numbered(&ca, &[&theirs.cert], 1, None);
    let err = validate_with_crls(
        &src,
        &[("old.crl", old.as_bytes()), ("rival.crl", rival.as_bytes())],
    )
    .unwrap_err();
    assert_eq!(err.reason(), "bad_crl");
    assert!(
        err.to_string().starts_with(
            "rival.crl: certificate revocation list refused: it holds a list of CN=root"
        ) && err
            .to_string()
            .contains("differs from one in old.crl with the same CRL number"),
        "{err}"
    );
}
