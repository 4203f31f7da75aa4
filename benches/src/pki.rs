//! One throw-away ECDSA P-256 PKI per run, shared by every contender: root → intermediate →
//! two workload leaves (the outbound side's and the inbound side's), written in the layouts the
//! proxies want, plus a foreign PKI for the "must be refused" checks.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use gembok_certs_dev::{Ca, Leaf, LeafSpec, Validity};

/// The name the outbound side dials and the inbound side's certificate carries.
pub const SERVER_NAME: &str = "payment.ecommerce.svc.cluster.local";

/// Certificate files of one side (a Secret-like directory plus combined PEMs).
#[derive(Debug, Clone)]
pub struct Side {
    /// `tls.crt` (leaf + intermediate), `tls.key`, `ca.crt` (root).
    pub dir: PathBuf,
    pub chain: PathBuf,
    pub key: PathBuf,
    pub ca: PathBuf,
    /// Chain followed by the key (haproxy `crt`, hitch `pem-file`).
    pub combined: PathBuf,
    pub leaf: Leaf,
}

#[derive(Debug, Clone)]
pub struct Pki {
    /// Presented by outbound sidecars (TLS client): product-catalog.
    pub client: Side,
    /// Presented by inbound sidecars (TLS server): payment, SAN [`SERVER_NAME`].
    pub server: Side,
    /// Same names, signed by an unrelated root: every contender must refuse these.
    pub foreign_client: Leaf,
    pub foreign_server: Leaf,
}

impl Pki {
    pub fn generate(dir: &Path) -> Result<Pki> {
        let days = Validity::days(7);
        let root = Ca::root("Gembok Bench Root (throw-away)", days)?;
        let mid = root.intermediate("Gembok Bench Intermediate", days)?;
        let workload = |name: &str| {
            LeafSpec::workload(name, "ecommerce", "cluster.local", "cluster.local").validity(days)
        };
        let client = mid.issue(&workload("product-catalog"))?;
        let server = mid.issue(&workload("payment"))?;
        let foreign_root = Ca::root("Foreign Root", days)?;
        let foreign_client = foreign_root.issue(&workload("product-catalog"))?;
        let foreign_server = foreign_root.issue(&workload("payment"))?;
        Ok(Pki {
            client: write_side(&dir.join("client"), client)?,
            server: write_side(&dir.join("server"), server)?,
            foreign_client,
            foreign_server,
        })
    }
}

fn write_side(dir: &Path, leaf: Leaf) -> Result<Side> {
    leaf.write_cert_dir(dir)
        .with_context(|| format!("write {}", dir.display()))?;
    let combined = dir.join("combined.pem");
    fs::write(&combined, format!("{}{}", leaf.chain_pem, leaf.key_pem))?;
    Ok(Side {
        dir: dir.to_owned(),
        chain: dir.join("tls.crt"),
        key: dir.join("tls.key"),
        ca: dir.join("ca.crt"),
        combined,
        leaf,
    })
}
