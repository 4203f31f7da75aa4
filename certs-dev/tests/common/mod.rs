//! Shared helpers for the certs-dev integration tests.
#![allow(dead_code)] // each test binary uses a different subset

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;

use anyhow::{Context as _, Result, bail};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// The real binary, with none of its `GEMBOK_CERTS_DEV_*` variables inherited from the
/// environment running the tests.
pub fn bin() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_gembok-certs-dev"));
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("GEMBOK_CERTS_DEV_") {
            cmd.env_remove(key);
        }
    }
    cmd
}

/// Runs the real binary; returns its output (never fails on a non-zero exit).
pub fn run(args: &[&str], cwd: &Path) -> Result<Output> {
    let out = bin()
        .args(args)
        .current_dir(cwd)
        .output()
        .context("running gembok-certs-dev")?;
    Ok(out)
}

pub fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn certs(pem: &str) -> Result<Vec<CertificateDer<'static>>> {
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .context("parsing PEM certificates")
}

pub struct Sans {
    pub dns: Vec<String>,
    pub uri: Vec<String>,
    pub ip: Vec<Vec<u8>>,
    pub other: usize,
}

pub fn sans(der: &CertificateDer<'_>) -> Result<Sans> {
    let (_, cert) = X509Certificate::from_der(der.as_ref())?;
    let mut s = Sans {
        dns: vec![],
        uri: vec![],
        ip: vec![],
        other: 0,
    };
    if let Some(ext) = cert.subject_alternative_name()? {
        for name in &ext.value.general_names {
            match name {
                GeneralName::DNSName(d) => s.dns.push(d.to_string()),
                GeneralName::URI(u) => s.uri.push(u.to_string()),
                GeneralName::IPAddress(ip) => s.ip.push(ip.to_vec()),
                _ => s.other += 1,
            }
        }
    }
    Ok(s)
}

/// Verifies `chain` (leaf first) up to `root` with rustls-webpki for `usage`, at `time`.
pub fn webpki_verify(
    chain: &[CertificateDer<'static>],
    root: &CertificateDer<'static>,
    usage: webpki::KeyUsage,
    time: UnixTime,
) -> Result<(), webpki::Error> {
    let anchor = webpki::anchor_from_trusted_cert(root)?;
    let ee = webpki::EndEntityCert::try_from(&chain[0])?;
    let algs = provider().signature_verification_algorithms.all;
    ee.verify_for_usage(algs, &[anchor], &chain[1..], time, usage, None, None)
        .map(|_| ())
}

pub fn dns_valid(leaf: &CertificateDer<'static>, name: &str) -> Result<(), webpki::Error> {
    let ee = webpki::EndEntityCert::try_from(leaf)?;
    let name = ServerName::try_from(name.to_owned()).map_err(|_| webpki::Error::BadDer)?;
    ee.verify_is_valid_for_subject_name(&name)
}

/// Runs `openssl` with `args`; returns (success, combined output).
pub fn openssl(args: &[&str]) -> Result<(bool, String)> {
    let out = Command::new("openssl")
        .args(args)
        .output()
        .context("running openssl (is it installed?)")?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok((out.status.success(), text))
}

pub fn ensure(cond: bool, what: impl FnOnce() -> String) -> Result<()> {
    if !cond {
        bail!("{}", what());
    }
    Ok(())
}
