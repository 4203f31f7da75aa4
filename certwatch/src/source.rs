//! Where the certificate files live, and reading them as one consistent snapshot.
//!
//! The kubelet updates a Secret volume by writing a new hidden timestamped directory and renaming a
//! `..data_tmp` symlink over `..data`; `tls.crt` is itself a symlink to `..data/tls.crt`. Reading
//! `tls.crt` and then `tls.key` through those symlinks can straddle a swap and pair the old
//! certificate with the new key. We therefore resolve the certificate's real directory once and
//! read every file that lives beside it from that same resolved directory.

use std::io;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// Where to read the certificate chain, the private key and the CA bundle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CertSource {
    /// A directory holding `tls.crt`, `tls.key` and `ca.crt`: the layout of a Secret written by
    /// cert-manager. `ca.crt` may be absent when the caller does not require a CA.
    Dir(PathBuf),
    /// Explicit paths. `ca` is optional for a server that does not verify clients.
    Files {
        cert: PathBuf,
        key: PathBuf,
        ca: Option<PathBuf>,
    },
}

/// The bytes of one snapshot of the files, plus a digest to tell whether anything changed.
#[derive(Debug, Clone)]
pub struct Files {
    pub cert: Vec<u8>,
    pub key: Vec<u8>,
    /// `None` when the source has no CA file (explicit `Files` without `ca`, or a directory
    /// without `ca.crt` when the CA is not required).
    pub ca: Option<Vec<u8>>,
    pub digest: [u8; 32],
    /// The paths actually read, for error messages.
    pub paths: Paths,
}

/// Paths as given (not resolved), used to name files in errors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paths {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca: Option<PathBuf>,
}

/// A file could not be read.
#[derive(Debug, thiserror::Error)]
#[error("cannot read {}: {source}", path.display())]
pub struct ReadError {
    pub path: PathBuf,
    #[source]
    pub source: io::Error,
}

impl CertSource {
    /// The three paths, as configured.
    pub fn paths(&self) -> Paths {
        match self {
            CertSource::Dir(dir) => Paths {
                cert: dir.join("tls.crt"),
                key: dir.join("tls.key"),
                ca: Some(dir.join("ca.crt")),
            },
            CertSource::Files { cert, key, ca } => Paths {
                cert: cert.clone(),
                key: key.clone(),
                ca: ca.clone(),
            },
        }
    }

    /// Directories to watch: the parents of every file (deduplicated). Watching directories, not
    /// files, is what survives the kubelet's symlink swap.
    pub fn watch_dirs(&self) -> Vec<PathBuf> {
        let paths = self.paths();
        let mut dirs: Vec<PathBuf> = [Some(&paths.cert), Some(&paths.key), paths.ca.as_ref()]
            .into_iter()
            .flatten()
            .map(|p| parent_dir(p))
            .collect();
        dirs.sort();
        dirs.dedup();
        dirs
    }

    /// Reads all files. With `ca_required == false` a missing `ca.crt` in a directory source
    /// is not an error.
    pub fn read(&self, ca_required: bool) -> Result<Files, ReadError> {
        let paths = self.paths();
        // Resolve the certificate's directory once; siblings in the same configured directory
        // are read from the resolved one so that all files come from the same kubelet snapshot.
        let cert_dir = parent_dir(&paths.cert);
        let resolved_dir = std::fs::canonicalize(&paths.cert)
            .ok()
            .and_then(|p| p.parent().map(Path::to_path_buf));
        let resolve = |p: &Path| -> PathBuf {
            match (&resolved_dir, p.file_name()) {
                (Some(real), Some(name)) if parent_dir(p) == cert_dir => real.join(name),
                _ => p.to_path_buf(),
            }
        };

        let cert = read_file(&resolve(&paths.cert), &paths.cert)?;
        let key = read_file(&resolve(&paths.key), &paths.key)?;
        let ca = match &paths.ca {
            None => None,
            Some(ca_path) => match read_file(&resolve(ca_path), ca_path) {
                Ok(bytes) => Some(bytes),
                Err(e) if !ca_required && e.source.kind() == io::ErrorKind::NotFound => None,
                Err(e) => return Err(e),
            },
        };

        let mut hasher = Sha256::new();
        for part in [Some(&cert), Some(&key), ca.as_ref()] {
            let bytes = part.map(Vec::as_slice).unwrap_or_default();
            hasher.update((bytes.len() as u64).to_be_bytes());
            hasher.update(bytes);
        }
        Ok(Files {
            cert,
            key,
            ca,
            digest: hasher.finalize().into(),
            paths,
        })
    }
}

fn read_file(real: &Path, named: &Path) -> Result<Vec<u8>, ReadError> {
    std::fs::read(real).map_err(|source| ReadError {
        path: named.to_path_buf(),
        source,
    })
}

fn parent_dir(p: &Path) -> PathBuf {
    match p.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dir_source_names_the_secret_keys() {
        let src = CertSource::Dir("/etc/gembok/certs".into());
        let p = src.paths();
        assert_eq!(p.cert, Path::new("/etc/gembok/certs/tls.crt"));
        assert_eq!(p.key, Path::new("/etc/gembok/certs/tls.key"));
        assert_eq!(p.ca.as_deref(), Some(Path::new("/etc/gembok/certs/ca.crt")));
        assert_eq!(src.watch_dirs(), vec![PathBuf::from("/etc/gembok/certs")]);
    }

    #[test]
    fn files_source_watches_each_parent_once() {
        let src = CertSource::Files {
            cert: "/a/c.pem".into(),
            key: "/a/k.pem".into(),
            ca: Some("/b/ca.pem".into()),
        };
        assert_eq!(
            src.watch_dirs(),
            vec![PathBuf::from("/a"), PathBuf::from("/b")]
        );
    }

    #[test]
    fn reads_through_kubelet_style_symlinks_and_digest_tracks_content() {
        let dir = tempfile::tempdir().unwrap();
        let secret = crate::testing::SecretDir::new(dir.path());
        secret
            .swap(&[("tls.crt", b"c1"), ("tls.key", b"k1"), ("ca.crt", b"a1")])
            .unwrap();
        let src = CertSource::Dir(dir.path().to_path_buf());
        let first = src.read(true).unwrap();
        assert_eq!(first.cert, b"c1");
        assert_eq!(first.key, b"k1");
        assert_eq!(first.ca.as_deref(), Some(&b"a1"[..]));

        secret
            .swap(&[("tls.crt", b"c2"), ("tls.key", b"k2"), ("ca.crt", b"a1")])
            .unwrap();
        let second = src.read(true).unwrap();
        assert_eq!(second.cert, b"c2");
        assert_eq!(second.key, b"k2");
        assert_ne!(first.digest, second.digest);
        assert_eq!(src.read(true).unwrap().digest, second.digest);
    }

    #[test]
    fn missing_ca_is_optional_only_when_allowed() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("tls.crt"), "c").unwrap();
        std::fs::write(dir.path().join("tls.key"), "k").unwrap();
        let src = CertSource::Dir(dir.path().to_path_buf());
        assert!(src.read(false).unwrap().ca.is_none());
        let err = src.read(true).unwrap_err();
        assert!(err.to_string().contains("ca.crt"), "{err}");
    }
}
