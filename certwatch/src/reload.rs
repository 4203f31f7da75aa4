//! The published certificate state and a single reload attempt.
//!
//! Readers call [`Reloadable::current`] once per connection and keep that snapshot for the
//! connection's life; the writer ([`Reloader`], owned by the watch task) builds a complete new
//! value aside and publishes it with one pointer swap, so a handshake never sees half a reload.

use std::sync::Arc;
use std::time::SystemTime;

use arc_swap::ArcSwapOption;
use rustls::crypto::CryptoProvider;

use crate::material::{LoadError, Material, Requirements};
use crate::source::CertSource;

/// Error returned by the caller's build function (for example a rustls config error).
pub type BuildError = Box<dyn std::error::Error + Send + Sync>;

type BuildFn<T> = dyn Fn(&Material) -> Result<T, BuildError> + Send + Sync;

/// What the caller built from validated material, with the material it came from.
#[derive(Debug)]
pub struct Loaded<T> {
    pub value: T,
    pub material: Arc<Material>,
    pub loaded_at: SystemTime,
}

/// The current certificate state: cheap to clone and to read on every connection.
#[derive(Debug)]
pub struct Reloadable<T> {
    current: Arc<ArcSwapOption<Loaded<T>>>,
}

impl<T> Clone for Reloadable<T> {
    fn clone(&self) -> Self {
        Self {
            current: self.current.clone(),
        }
    }
}

impl<T> Reloadable<T> {
    /// A snapshot of the last good state, or `None` until certificates have loaded once.
    pub fn current(&self) -> Option<Arc<Loaded<T>>> {
        self.current.load_full()
    }
}

/// The result of one reload attempt.
#[derive(Debug)]
pub enum Outcome {
    /// New material validated, built and published.
    Loaded { serial: String },
    /// The files are byte-for-byte what is already published (or, unforced, what already
    /// failed); nothing done.
    Unchanged,
    /// The files were refused; the previous state (if any) is still published.
    Failed(ReloadError),
}

/// Why a reload attempt was refused.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error("certificate is valid but building the TLS configuration failed: {0}")]
    Build(BuildError),
}

impl ReloadError {
    /// A short, stable label for logs and metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            ReloadError::Load(e) => e.reason(),
            ReloadError::Build(_) => "build",
        }
    }
}

/// Names of the reload metrics, under the binary's prefix (`gembok_`, `gembok_injector_`).
#[derive(Debug, Clone)]
pub(crate) struct MetricNames {
    pub reloads: String,
    pub not_after: String,
}

impl MetricNames {
    pub(crate) fn new(prefix: &str) -> Self {
        let names = Self {
            reloads: format!("{prefix}cert_reloads_total"),
            not_after: format!("{prefix}cert_not_after_timestamp_seconds"),
        };
        metrics::describe_counter!(
            names.reloads.clone(),
            "Certificate reload attempts that found changed files, by result (success, failure)."
        );
        metrics::describe_gauge!(
            names.not_after.clone(),
            metrics::Unit::Seconds,
            "Expiry (notAfter, Unix time) of the certificate currently served."
        );
        names
    }
}

/// The writer side: reads, validates, builds and publishes. Owned by the watch task.
pub struct Reloader<T> {
    source: CertSource,
    /// Allow-san list files read with the certificates (see [`crate::san`]).
    allow_san_files: Vec<std::path::PathBuf>,
    /// Certificate revocation list files read with the certificates.
    crl_files: Vec<std::path::PathBuf>,
    provider: Arc<CryptoProvider>,
    requirements: Requirements,
    build: Box<BuildFn<T>>,
    published: Reloadable<T>,
    last_failed: Option<FailureKey>,
    metrics: MetricNames,
}

impl<T> Reloader<T> {
    pub(crate) fn new(
        source: CertSource,
        allow_san_files: Vec<std::path::PathBuf>,
        crl_files: Vec<std::path::PathBuf>,
        provider: Arc<CryptoProvider>,
        requirements: Requirements,
        build: Box<BuildFn<T>>,
        metric_prefix: &str,
    ) -> Self {
        Self {
            source,
            allow_san_files,
            crl_files,
            provider,
            requirements,
            build,
            published: Reloadable {
                current: Arc::new(ArcSwapOption::empty()),
            },
            last_failed: None,
            metrics: MetricNames::new(metric_prefix),
        }
    }

    /// The reader side of what this reloader publishes.
    pub fn reloadable(&self) -> Reloadable<T> {
        self.published.clone()
    }

    /// One attempt. Files identical to the published ones are always skipped, so a periodic
    /// re-read costs a few small reads and a hash, and a SIGHUP with nothing new neither counts
    /// a reload nor rebuilds the TLS configurations (which would drop their session caches).
    /// Without `force`, files identical to the last refused ones are skipped too; `force`
    /// checks them again (and reports the refusal again).
    pub fn attempt(&mut self, force: bool) -> Outcome {
        let now = SystemTime::now();
        let read = self
            .source
            .read(self.requirements.ca_required)
            .and_then(|mut files| {
                files.read_lists(&self.allow_san_files)?;
                files.read_crls(&self.crl_files)?;
                Ok(files)
            });
        let files = match read {
            Ok(files) => files,
            Err(e) => {
                let key = FailureKey::Read(e.to_string());
                return self.refuse(ReloadError::Load(e.into()), key);
            }
        };
        if self.is_published(&files.digest) {
            // Back to the served files after a refused swap: a later refusal is news again.
            self.last_failed = None;
            if force {
                tracing::debug!(
                    "certificate files unchanged since they were loaded; not reloading"
                );
            }
            return Outcome::Unchanged;
        }
        if !force && self.last_failed == Some(FailureKey::Content(files.digest)) {
            return Outcome::Unchanged;
        }
        let material = match Material::validate(&files, &self.provider, &self.requirements, now) {
            Ok(m) => m,
            // A certificate that is not valid *yet* may become valid with time alone: do not
            // remember its digest, so the next periodic read tries again.
            Err(e @ LoadError::NotYetValid { .. }) => {
                return self.refuse(e.into(), FailureKey::NotYetValid(files.digest));
            }
            Err(e) => return self.refuse(e.into(), FailureKey::Content(files.digest)),
        };
        let value = match (self.build)(&material) {
            Ok(v) => v,
            Err(e) => {
                return self.refuse(ReloadError::Build(e), FailureKey::Content(files.digest));
            }
        };
        let leaf = material.leaf.clone();
        let allow_san: Vec<String> = material
            .allow_san
            .iter()
            .map(|list| format!("{}: {} patterns", list.path.display(), list.patterns.len()))
            .collect();
        let crls = material.crls.len();
        self.published.current.store(Some(Arc::new(Loaded {
            value,
            material: Arc::new(material),
            loaded_at: now,
        })));
        self.last_failed = None;
        metrics::counter!(self.metrics.reloads.clone(), "result" => "success").increment(1);
        metrics::gauge!(self.metrics.not_after.clone()).set(leaf.not_after_unix());
        tracing::info!(
            serial = %leaf.serial,
            subject = %leaf.subject,
            not_after = %humantime::format_rfc3339_seconds(leaf.not_after),
            dns_names = ?leaf.dns_names,
            uris = ?leaf.uris,
            allow_san_lists = ?allow_san,
            crls,
            "certificate loaded"
        );
        Outcome::Loaded {
            serial: leaf.serial,
        }
    }

    /// Whether files with this digest are what is served now.
    fn is_published(&self, digest: &[u8; 32]) -> bool {
        self.published
            .current()
            .is_some_and(|current| current.material.digest == *digest)
    }

    fn refuse(&mut self, error: ReloadError, key: FailureKey) -> Outcome {
        // The same refusal again (a periodic re-read of the same broken files) is not news.
        if self.last_failed.as_ref() != Some(&key) {
            metrics::counter!(self.metrics.reloads.clone(), "result" => "failure").increment(1);
            match self.published.current() {
                Some(good) => tracing::warn!(
                    error = %error,
                    reason = error.reason(),
                    kept_serial = %good.material.leaf.serial,
                    "certificate reload refused; keeping the last good certificate"
                ),
                None => tracing::warn!(
                    error = %error,
                    reason = error.reason(),
                    "no usable certificate yet; TLS handshakes are refused until one loads"
                ),
            }
        }
        self.last_failed = Some(key);
        Outcome::Failed(error)
    }
}

/// Identifies a refusal so that repeating it is neither logged nor counted again.
#[derive(Debug, Clone, PartialEq, Eq)]
enum FailureKey {
    /// Files that failed validation: skipped until their content changes.
    Content([u8; 32]),
    /// Files not valid *yet*: retried on every attempt (time alone can fix them), reported once.
    NotYetValid([u8; 32]),
    /// Files that could not be read, keyed by the message.
    Read(String),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::material::Usage;
    use crate::test_pki::{Ca, Leaf, ca, good_leaf};
    use crate::testing::SecretDir;

    /// A reloader of the certificates in `dir` and the allow-san `lists`, building with `build`.
    fn reloader_of<T>(
        dir: &std::path::Path,
        lists: Vec<std::path::PathBuf>,
        usages: Vec<Usage>,
        build: impl Fn(&Material) -> Result<T, BuildError> + Send + Sync + 'static,
    ) -> Reloader<T> {
        Reloader::new(
            CertSource::Dir(dir.to_path_buf()),
            lists,
            Vec::new(),
            Arc::new(rustls::crypto::aws_lc_rs::default_provider()),
            Requirements {
                ca_required: true,
                usages,
            },
            Box::new(build),
            "test_",
        )
    }

    /// Publishes `leaf` with its key and `ca` the kubelet's way.
    fn publish(secret: &SecretDir, leaf: &Leaf, ca: &Ca) {
        secret
            .swap(&[
                ("tls.crt", leaf.cert.as_bytes()),
                ("tls.key", leaf.key.as_bytes()),
                ("ca.crt", ca.pem.as_bytes()),
            ])
            .unwrap();
    }

    fn reloader(dir: &std::path::Path) -> Reloader<String> {
        reloader_of(dir, Vec::new(), vec![Usage::Server, Usage::Client], |m| {
            Ok(m.leaf.serial.clone())
        })
    }

    fn serial(r: &Reloader<String>) -> Option<String> {
        r.reloadable().current().map(|l| l.value.clone())
    }

    #[test]
    fn refusals_keep_the_last_good_value_and_repeats_are_not_news() {
        let dir = tempfile::tempdir().unwrap();
        let secret = SecretDir::new(dir.path());
        let mut r = reloader(dir.path());
        assert!(matches!(
            r.attempt(false),
            Outcome::Failed(ReloadError::Load(LoadError::Read(_)))
        ));
        assert!(serial(&r).is_none());

        let ca = ca("root");
        let good = good_leaf(&ca);
        publish(&secret, &good, &ca);
        let Outcome::Loaded { serial: loaded } = r.attempt(false) else {
            panic!("good material refused")
        };
        assert_eq!(serial(&r).as_deref(), Some(loaded.as_str()));
        assert!(matches!(r.attempt(false), Outcome::Unchanged));

        let other = good_leaf(&ca);
        secret
            .swap(&[
                ("tls.crt", good.cert.as_bytes()),
                ("tls.key", other.key.as_bytes()),
                ("ca.crt", ca.pem.as_bytes()),
            ])
            .unwrap();
        match r.attempt(false) {
            Outcome::Failed(e) => assert_eq!(e.reason(), "key_mismatch"),
            other => panic!("mismatched key accepted: {other:?}"),
        }
        assert_eq!(serial(&r).as_deref(), Some(loaded.as_str()));
        // Re-reading the same broken files is skipped; forcing re-validates (and refuses again).
        assert!(matches!(r.attempt(false), Outcome::Unchanged));
        assert!(matches!(r.attempt(true), Outcome::Failed(_)));

        secret
            .swap(&[
                (
                    "tls.crt",
                    b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
                ),
                ("tls.key", b"x"),
                ("ca.crt", ca.pem.as_bytes()),
            ])
            .unwrap();
        assert!(matches!(r.attempt(false), Outcome::Failed(_)));
        assert_eq!(serial(&r).as_deref(), Some(loaded.as_str()));

        publish(&secret, &good_leaf(&ca), &ca);
        assert!(matches!(r.attempt(false), Outcome::Loaded { .. }));
        assert_ne!(serial(&r).as_deref(), Some(loaded.as_str()));
    }

    #[test]
    fn a_forced_attempt_on_unchanged_files_rebuilds_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let secret = SecretDir::new(dir.path());
        let ca = ca("root");
        let good = good_leaf(&ca);
        publish(&secret, &good, &ca);
        let builds = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = builds.clone();
        let usages = vec![Usage::Server, Usage::Client];
        let mut r = reloader_of(dir.path(), Vec::new(), usages, move |_| {
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Ok(())
        });
        let built = || builds.load(std::sync::atomic::Ordering::SeqCst);
        assert!(matches!(r.attempt(true), Outcome::Loaded { .. }));
        let loaded_at = r.reloadable().current().unwrap().loaded_at;
        // SIGHUP with the same files: nothing rebuilt, nothing republished.
        assert!(matches!(r.attempt(true), Outcome::Unchanged));
        assert!(matches!(r.attempt(false), Outcome::Unchanged));
        assert_eq!(built(), 1);
        assert_eq!(r.reloadable().current().unwrap().loaded_at, loaded_at);
        // The same content rewritten (a new kubelet snapshot, new inodes and times) is unchanged too.
        publish(&secret, &good, &ca);
        assert!(matches!(r.attempt(true), Outcome::Unchanged));
        assert_eq!(built(), 1);
        // New content is loaded, forced or not.
        publish(&secret, &good_leaf(&ca), &ca);
        assert!(matches!(r.attempt(true), Outcome::Loaded { .. }));
        assert_eq!(built(), 2);
    }

    #[test]
    fn build_errors_are_refusals_too() {
        let dir = tempfile::tempdir().unwrap();
        let secret = SecretDir::new(dir.path());
        let ca = ca("root");
        let good = good_leaf(&ca);
        publish(&secret, &good, &ca);
        let mut r: Reloader<()> = reloader_of(dir.path(), Vec::new(), vec![], |_| {
            Err("no listener accepts this".into())
        });
        match r.attempt(false) {
            Outcome::Failed(e) => assert_eq!(e.reason(), "build"),
            other => panic!("{other:?}"),
        }
        assert!(r.reloadable().current().is_none());
    }

    /// An allow-san list is part of what is published: a good edit rebuilds with the new list,
    /// a bad one is refused (with its own reason) and the last good list stays.
    #[test]
    fn a_list_file_reloads_with_the_certificates_and_a_bad_one_keeps_the_last_good() {
        let dir = tempfile::tempdir().unwrap();
        for sub in ["certs", "lists"] {
            std::fs::create_dir(dir.path().join(sub)).unwrap();
        }
        let secret = SecretDir::new(dir.path().join("certs"));
        let lists = SecretDir::new(dir.path().join("lists"));
        let ca = ca("root");
        let good = good_leaf(&ca);
        publish(&secret, &good, &ca);
        lists.swap(&[("allow-san", b"a.shop.svc\n")]).unwrap();
        let list = dir.path().join("lists/allow-san");
        let mut r = reloader_of(&dir.path().join("certs"), vec![list], vec![], |m| {
            Ok(m.allow_san[0]
                .patterns
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>())
        });
        let served = |r: &Reloader<Vec<String>>| r.reloadable().current().unwrap().value.clone();
        assert!(matches!(r.attempt(false), Outcome::Loaded { .. }));
        assert_eq!(served(&r), ["a.shop.svc"]);

        lists
            .swap(&[("allow-san", b"a.shop.svc\nb.shop.svc\n")])
            .unwrap();
        assert!(matches!(r.attempt(false), Outcome::Loaded { .. }));
        assert_eq!(served(&r), ["a.shop.svc", "b.shop.svc"]);

        lists
            .swap(&[("allow-san", b"b.shop.svc\n*.svc\n")])
            .unwrap();
        match r.attempt(false) {
            Outcome::Failed(e) => {
                assert_eq!(e.reason(), "bad_allow_san");
                let text = e.to_string();
                assert!(
                    text.contains("allow-san") && text.contains("line 2"),
                    "{text}"
                );
            }
            other => panic!("a bad list was accepted: {other:?}"),
        }
        assert_eq!(
            served(&r),
            ["a.shop.svc", "b.shop.svc"],
            "the last good list"
        );
        assert!(
            matches!(r.attempt(false), Outcome::Unchanged),
            "not news again"
        );

        lists.swap(&[("other-key", b"b.shop.svc\n")]).unwrap();
        assert!(matches!(
            r.attempt(false),
            Outcome::Failed(ReloadError::Load(LoadError::Read(_)))
        ));
        assert_eq!(
            served(&r),
            ["a.shop.svc", "b.shop.svc"],
            "the last good list"
        );
    }
}
