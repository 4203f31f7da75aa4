//! Where each generated file goes, relative to the output directory. `README.md` documents the
//! same layout and a test holds the two together.

use std::path::{Path, PathBuf};

/// Written first-level file that marks a directory as ours: `--force` only replaces a directory
/// that contains it, so a mistyped `--out $HOME --force` cannot delete anything else.
pub const MARKER: &str = "DEVELOPMENT-ONLY.txt";
pub const ROOT_DIR: &str = "root";
pub const ROOT_CERT: &str = "ca.crt";
pub const ROOT_KEY: &str = "ca.key";
pub const INTERMEDIATE_DIR: &str = "intermediate";
pub const K8S_DIR: &str = "k8s";
pub const KUSTOMIZATION: &str = "kustomization.yaml";
/// `crl/ca.crl`: the revocation lists of the root and of every region's intermediate, PEM.
pub const CRL_DIR: &str = "crl";
pub const CRL_FILE: &str = "ca.crl";
/// The ConfigMap holding [`CRL_FILE`] in each namespace with services, named by the workloads'
/// `gembok.io/crl-configmap` annotation.
pub const CRL_CONFIGMAP: &str = "gembok-crl";
/// `<region>/redis-proxy/`: the Redis Enterprise proxy certificate (with `--redis-proxy-names`).
pub const REDIS_PROXY_DIR: &str = "redis-proxy";
/// The Secret Redis Enterprise reads its proxy certificate from (`proxyCertificateSecretName`).
pub const REDIS_PROXY_SECRET: &str = "redis-proxy-tls";
/// Namespace and service account of Redis Enterprise: the Secret's namespace and the
/// certificate's SPIFFE ID, as the production Certificate `redis-proxy-gembok` has them.
pub const REDIS_NAMESPACE: &str = "redis";
pub const REDIS_SERVICE_ACCOUNT: &str = "redis-enterprise";

/// The three files a sidecar (or any TLS endpoint) mounts, as in a `kubernetes.io/tls` Secret.
pub const CERT: &str = "tls.crt";
pub const KEY: &str = "tls.key";
pub const CA: &str = "ca.crt";

pub fn root_dir(out: &Path) -> PathBuf {
    out.join(ROOT_DIR)
}

pub fn intermediate_dir(out: &Path, region: &str) -> PathBuf {
    out.join(region).join(INTERMEDIATE_DIR)
}

/// `<out>/<region>/<name>/` holding `tls.crt`, `tls.key`, `ca.crt`: what `--cert-dir` expects.
/// `name` is a service, a client, the injector's service name or [`REDIS_PROXY_DIR`].
pub fn cert_dir(out: &Path, region: &str, name: &str) -> PathBuf {
    out.join(region).join(name)
}

pub fn crl_file(out: &Path) -> PathBuf {
    out.join(CRL_DIR).join(CRL_FILE)
}

/// Directory name of a client's revoked second certificate (`--revoked-clients`).
pub fn revoked_client_dir(client: &str) -> String {
    format!("{client}-revoked")
}

/// File name of the revocation lists' ConfigMap for `namespace` inside [`k8s_dir`].
pub fn crl_configmap_file(namespace: &str) -> String {
    format!("{CRL_CONFIGMAP}.{namespace}.yaml")
}

pub fn k8s_dir(out: &Path, region: &str) -> PathBuf {
    out.join(K8S_DIR).join(region)
}

/// Secret name of a workload's sidecar certificate (contract §4).
pub fn secret_name(service_account: &str) -> String {
    format!("{service_account}-gembok-tls")
}

/// Secret name of the injector's serving certificate (contract §3).
pub fn injector_secret_name(injector_service: &str) -> String {
    format!("{injector_service}-tls")
}

/// File name of a Secret manifest inside [`k8s_dir`].
pub fn secret_file(secret_name: &str) -> String {
    format!("{secret_name}.yaml")
}
