//! Certificates for a test, from the development PKI generator (one root, one intermediate).

use std::path::{Path, PathBuf};

use gembok_certs_dev::{Ca, KeyType, Leaf, LeafSpec, Validity};
use gembok_certwatch::testing::SecretDir;

/// A root and an intermediate; leaves are issued by the intermediate and carry it in `tls.crt`.
pub struct TestPki {
    pub root: Ca,
    pub intermediate: Ca,
}

impl TestPki {
    pub fn new() -> Self {
        let root = Ca::root("Gembok Test Root", Validity::days(30)).expect("root CA");
        let intermediate = root
            .intermediate("Gembok Test Intermediate", Validity::days(30))
            .expect("intermediate");
        Self { root, intermediate }
    }

    /// A workload certificate like the platform's: DNS `<name>.test.svc.cluster.local` and
    /// `spiffe://cluster.local/ns/test/sa/<name>`.
    pub fn workload(&self, name: &str) -> Leaf {
        self.issue(workload_spec(name))
    }

    pub fn issue(&self, spec: LeafSpec) -> Leaf {
        self.intermediate.issue(&spec).expect("leaf")
    }

    pub fn expired(&self, name: &str) -> Leaf {
        self.issue(workload_spec(name).validity(Validity::expired()))
    }

    pub fn rsa(&self, name: &str) -> Leaf {
        self.issue(workload_spec(name).key_type(KeyType::Rsa2048))
    }

    pub fn root_pem(&self) -> &str {
        self.root.cert_pem()
    }
}

impl Default for TestPki {
    fn default() -> Self {
        Self::new()
    }
}

pub fn workload_spec(name: &str) -> LeafSpec {
    LeafSpec::workload(name, "test", "cluster.local", "cluster.local")
}

pub fn dns_name(name: &str) -> String {
    format!("{name}.test.svc.cluster.local")
}

pub fn spiffe(name: &str) -> String {
    format!("spiffe://cluster.local/ns/test/sa/{name}")
}

/// A certificate directory swapped exactly as the kubelet swaps a Secret volume.
pub struct CertDir {
    _tmp: tempfile::TempDir,
    secret: SecretDir,
}

impl CertDir {
    pub fn new(leaf: &Leaf) -> Self {
        let tmp = tempfile::tempdir().expect("tempdir");
        let secret = SecretDir::new(tmp.path());
        let dir = Self { _tmp: tmp, secret };
        dir.swap(leaf);
        dir
    }

    /// An empty directory: the Secret has not been written yet.
    pub fn empty() -> Self {
        let tmp = tempfile::tempdir().expect("tempdir");
        let secret = SecretDir::new(tmp.path());
        Self { _tmp: tmp, secret }
    }

    pub fn path(&self) -> &Path {
        self.secret.path()
    }

    pub fn arg(&self) -> String {
        self.path().display().to_string()
    }

    pub fn file(&self, name: &str) -> PathBuf {
        self.path().join(name)
    }

    /// Publishes a leaf (chain, key, CA) with the kubelet's `..data` symlink swap.
    pub fn swap(&self, leaf: &Leaf) {
        self.swap_raw(
            leaf.chain_pem.as_bytes(),
            leaf.key_pem.as_bytes(),
            leaf.ca_pem.as_bytes(),
        );
    }

    pub fn swap_raw(&self, cert: &[u8], key: &[u8], ca: &[u8]) {
        self.secret
            .swap(&[("tls.crt", cert), ("tls.key", key), ("ca.crt", ca)])
            .expect("kubelet-style swap");
    }
}
