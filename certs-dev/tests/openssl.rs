//! OpenSSL, a verifier that shares no code with rcgen or rustls, accepts what the binary writes
//! (and rejects what it should).

mod common;

use std::fs;
use std::path::Path;

use anyhow::Result;
use gembok_certs_dev::{Existing, LeafSpec, Options, Validity, layout};

use common::{ensure, openssl, run};

const REGIONS: [&str; 3] = ["us", "eu", "asia"];
const SERVICES: [&str; 4] = ["product-catalog", "payment", "recommendation", "auth"];

fn generate(dir: &Path) -> Result<std::path::PathBuf> {
    let out = dir.join("out");
    let output = run(&["--out", out.to_str().unwrap()], dir)?;
    ensure(output.status.success(), || format!("{output:?}"))?;
    Ok(out)
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn openssl_verifies_every_leaf_through_its_regional_intermediate() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let out = generate(tmp.path())?;
    let root = out.join("root").join(layout::ROOT_CERT);
    for region in REGIONS {
        let inter = layout::intermediate_dir(&out, region).join(layout::CERT);
        let (ok, text) = openssl(&["verify", "-x509_strict", "-CAfile", s(&root), s(&inter)])?;
        ensure(ok, || format!("{region} intermediate: {text}"))?;

        let mut targets: Vec<(&str, &[&str])> = SERVICES
            .iter()
            .map(|svc| (*svc, &["sslserver", "sslclient"][..]))
            .collect();
        targets.push(("gembok-injector", &["sslserver"]));
        for (name, purposes) in targets {
            let leaf = layout::cert_dir(&out, region, name).join(layout::CERT);
            for purpose in purposes {
                // The form from the brief: root trusted, intermediate untrusted, leaf to check.
                let (ok, text) = openssl(&[
                    "verify",
                    "-x509_strict",
                    "-purpose",
                    purpose,
                    "-CAfile",
                    s(&root),
                    "-untrusted",
                    s(&inter),
                    s(&leaf),
                ])?;
                ensure(ok && text.contains(": OK"), || {
                    format!("{region}/{name} {purpose}: {text}")
                })?;
                // The form a peer uses: the chain it was sent (tls.crt) as untrusted input.
                let (ok, text) = openssl(&[
                    "verify",
                    "-purpose",
                    purpose,
                    "-CAfile",
                    s(&root),
                    "-untrusted",
                    s(&leaf),
                    s(&leaf),
                ])?;
                ensure(ok, || {
                    format!("{region}/{name} {purpose} with its own chain: {text}")
                })?;
            }
        }
    }
    Ok(())
}

#[test]
fn openssl_rejects_missing_intermediate_foreign_root_and_wrong_purpose() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let out = generate(tmp.path())?;
    let root = out.join("root").join(layout::ROOT_CERT);
    let leaf = layout::cert_dir(&out, "eu", "payment").join(layout::CERT);

    let (ok, text) = openssl(&["verify", "-CAfile", s(&root), s(&leaf)])?;
    ensure(
        !ok && text.contains("unable to get local issuer certificate"),
        || text.clone(),
    )?;

    let other = tmp.path().join("other");
    fs::create_dir(&other)?;
    let other_out = generate(&other)?;
    let other_root = other_out.join("root").join(layout::ROOT_CERT);
    let (ok, text) = openssl(&[
        "verify",
        "-CAfile",
        s(&other_root),
        "-untrusted",
        s(&leaf),
        s(&leaf),
    ])?;
    ensure(!ok, || format!("foreign root accepted: {text}"))?;

    let injector = layout::cert_dir(&out, "eu", "gembok-injector").join(layout::CERT);
    let (ok, text) = openssl(&[
        "verify",
        "-purpose",
        "sslclient",
        "-CAfile",
        s(&root),
        "-untrusted",
        s(&injector),
        s(&injector),
    ])?;
    ensure(
        !ok && text.contains("unsuitable certificate purpose"),
        || text.clone(),
    )?;
    Ok(())
}

#[test]
fn openssl_sees_expired_leaf_as_expired() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let pki = gembok_certs_dev::DevPki::generate(&Options::default())?;
    pki.write(&tmp.path().join("out"), Existing::Refuse)?;
    let expired = pki.region("us").unwrap().intermediate.issue(
        &LeafSpec::new("old")
            .dns("old.test")
            .validity(Validity::expired()),
    )?;
    let dir = tmp.path().join("expired");
    expired.write_cert_dir(&dir)?;
    let (ok, text) = openssl(&[
        "verify",
        "-CAfile",
        s(&dir.join(layout::CA)),
        "-untrusted",
        s(&dir.join(layout::CERT)),
        s(&dir.join(layout::CERT)),
    ])?;
    ensure(!ok && text.contains("certificate has expired"), || {
        text.clone()
    })?;
    Ok(())
}

#[test]
fn openssl_agrees_each_key_matches_its_certificate() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let out = generate(tmp.path())?;
    let mut pairs = vec![(out.join("root/ca.crt"), out.join("root/ca.key"))];
    for region in REGIONS {
        let dirs = SERVICES
            .iter()
            .copied()
            .chain(["gembok-injector"])
            .map(|n| layout::cert_dir(&out, region, n))
            .chain([layout::intermediate_dir(&out, region)]);
        pairs.extend(dirs.map(|d| (d.join(layout::CERT), d.join(layout::KEY))));
    }
    let mut seen = std::collections::HashSet::new();
    for (cert, key) in pairs {
        let (ok, from_cert) = openssl(&["x509", "-noout", "-pubkey", "-in", s(&cert)])?;
        ensure(ok, || from_cert.clone())?;
        let (ok, from_key) = openssl(&["pkey", "-pubout", "-in", s(&key)])?;
        ensure(ok, || from_key.clone())?;
        ensure(from_cert == from_key, || {
            format!("{} does not match {}", key.display(), cert.display())
        })?;
        ensure(seen.insert(from_key), || {
            format!("{} reuses a key", key.display())
        })?;
    }
    Ok(())
}

/// `--revoked-clients`: OpenSSL, given crl/ca.crl, refuses the revoked certificate and accepts
/// the same identity's good one and every service's; each list verifies under its issuer.
#[test]
fn openssl_sees_the_revoked_client_as_revoked_and_the_others_as_good() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let out = tmp.path().join("out");
    let output = run(
        &[
            "--out",
            s(&out),
            "--regions=us,eu",
            "--clients=dev-client",
            "--revoked-clients=dev-client",
        ],
        tmp.path(),
    )?;
    ensure(output.status.success(), || format!("{output:?}"))?;
    let crl = layout::crl_file(&out);
    let pem = fs::read_to_string(&crl)?;
    ensure(pem.matches("-----BEGIN X509 CRL-----").count() == 3, || {
        format!("want the root's list and one per region:\n{pem}")
    })?;
    let root = out.join("root").join(layout::ROOT_CERT);
    for region in ["us", "eu"] {
        // Trusted: the root and this region's intermediate, so each leaf's issuer is known.
        let inter = layout::intermediate_dir(&out, region).join(layout::CERT);
        let cas = tmp.path().join(format!("{region}-cas.pem"));
        fs::write(&cas, [fs::read(&root)?, fs::read(&inter)?].concat())?;
        let verify = |name: &str| {
            let leaf = layout::cert_dir(&out, region, name).join(layout::CERT);
            openssl(&[
                "verify",
                "-crl_check_all",
                "-CAfile",
                s(&cas),
                "-CRLfile",
                s(&crl),
                s(&leaf),
            ])
        };
        let (ok, text) = verify("dev-client-revoked")?;
        ensure(!ok && text.contains("certificate revoked"), || {
            format!("{region}/dev-client-revoked: {text}")
        })?;
        for name in ["dev-client", "product-catalog", "gembok-injector"] {
            let (ok, text) = verify(name)?;
            ensure(ok && text.contains(": OK"), || {
                format!("{region}/{name}: {text}")
            })?;
        }
    }
    Ok(())
}
