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
    /// Allow-san list files read with the certificates ([`Files::read_lists`]): the path as
    /// configured and the bytes.
    pub lists: Vec<(PathBuf, Vec<u8>)>,
    /// Certificate revocation list files read with the certificates ([`Files::read_crls`]).
    pub crls: Vec<(PathBuf, Vec<u8>)>,
    /// Of everything above, so that a changed list is a change like a new certificate.
    pub digest: [u8; 32],
    /// The paths actually read, for error messages.
    pub paths: Paths,
}

impl Files {
    /// Adds the allow-san list files to this snapshot (each read once: a single read of a
    /// file behind the kubelet's `..data` link is never torn) and folds them into the digest.
    pub fn read_lists(&mut self, paths: &[PathBuf]) -> Result<(), ReadError> {
        self.lists = self.read_more(paths)?;
        Ok(())
    }

    /// Adds the CRL files to this snapshot, as [`Files::read_lists`] does the lists.
    pub fn read_crls(&mut self, paths: &[PathBuf]) -> Result<(), ReadError> {
        self.crls = self.read_more(paths)?;
        Ok(())
    }

    fn read_more(&mut self, paths: &[PathBuf]) -> Result<Vec<(PathBuf, Vec<u8>)>, ReadError> {
        let mut read = Vec::new();
        let mut hasher = Sha256::new();
        hasher.update(self.digest);
        for path in paths {
            let bytes = read_file(path, path)?;
            hasher.update((path.as_os_str().len() as u64).to_be_bytes());
            hasher.update(path.as_os_str().as_encoded_bytes());
            hasher.update((bytes.len() as u64).to_be_bytes());
            hasher.update(&bytes);
            read.push((path.clone(), bytes));
        }
        if !paths.is_empty() {
            self.digest = hasher.finalize().into();
        }
        Ok(read)
    }
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
        // The kubelet's layout: `tls.crt -> ..data/tls.crt` and `..data -> ..<timestamp>`.
        // Resolving `..data` once and reading every file that goes through it from the resolved
        // directory takes them all from one snapshot, even if a swap lands between two reads.
        // Any other file (a plain file, or a symlink of another shape, such as certbot's
        // `live/fullchain.pem -> ../../archive/x/fullchain1.pem`) is read as named.
        let cert_link = through_dir_link(&paths.cert);
        let snapshot = cert_link
            .as_ref()
            .and_then(|link| Some((std::fs::canonicalize(link).ok()?, link)));
        let resolve = |p: &Path, via: Option<&PathBuf>| -> PathBuf {
            match (&snapshot, via, p.file_name()) {
                (Some((real, link)), Some(via), Some(name)) if via == *link => real.join(name),
                _ => p.to_path_buf(),
            }
        };
        let resolve_other = |p: &Path| resolve(p, through_dir_link(p).as_ref());
        let cert = read_file(&resolve(&paths.cert, cert_link.as_ref()), &paths.cert)?;
        let key = read_file(&resolve_other(&paths.key), &paths.key)?;
        let ca = match &paths.ca {
            None => None,
            Some(ca_path) => match read_file(&resolve_other(ca_path), ca_path) {
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
            lists: Vec::new(),
            crls: Vec::new(),
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

/// For a symlink of the kubelet's shape, `NAME -> LINK/NAME` (one relative directory, the same
/// file name), the path of `LINK` beside it; `None` for anything else.
fn through_dir_link(p: &Path) -> Option<PathBuf> {
    let target = std::fs::read_link(p).ok()?;
    let (link, name) = (target.parent()?, target.file_name()?);
    let one_dir = matches!(
        link.components().collect::<Vec<_>>().as_slice(),
        [std::path::Component::Normal(_)]
    );
    (one_dir && Some(name) == p.file_name()).then(|| parent_dir(p).join(link))
}

pub(crate) fn parent_dir(p: &Path) -> PathBuf {
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

    /// certbot's layout: `live/<name>/fullchain.pem -> ../../archive/<name>/fullchain1.pem`.
    /// Each file is read through its own link (a file of another name sits behind it).
    #[test]
    fn reads_files_linked_under_other_names() {
        let dir = tempfile::tempdir().unwrap();
        let archive = dir.path().join("archive/shop");
        let live = dir.path().join("live/shop");
        std::fs::create_dir_all(&archive).unwrap();
        std::fs::create_dir_all(&live).unwrap();
        for (target, contents) in [
            ("fullchain1.pem", "c"),
            ("privkey1.pem", "k"),
            ("chain1.pem", "a"),
        ] {
            std::fs::write(archive.join(target), contents).unwrap();
        }
        for (link, target) in [
            ("fullchain.pem", "fullchain1.pem"),
            ("privkey.pem", "privkey1.pem"),
            ("chain.pem", "chain1.pem"),
        ] {
            std::os::unix::fs::symlink(format!("../../archive/shop/{target}"), live.join(link))
                .unwrap();
        }
        let src = CertSource::Files {
            cert: live.join("fullchain.pem"),
            key: live.join("privkey.pem"),
            ca: Some(live.join("chain.pem")),
        };
        let files = src.read(true).unwrap();
        assert_eq!(
            (
                files.cert.as_slice(),
                files.key.as_slice(),
                files.ca.as_deref()
            ),
            (&b"c"[..], &b"k"[..], Some(&b"a"[..]))
        );
    }

    #[test]
    fn list_files_join_the_snapshot_and_its_digest() {
        let dir = tempfile::tempdir().unwrap();
        for sub in ["certs", "lists"] {
            std::fs::create_dir(dir.path().join(sub)).unwrap();
        }
        let secret = crate::testing::SecretDir::new(dir.path().join("certs"));
        secret
            .swap(&[("tls.crt", b"c"), ("tls.key", b"k"), ("ca.crt", b"a")])
            .unwrap();
        let lists = crate::testing::SecretDir::new(dir.path().join("lists"));
        lists.swap(&[("allow-san", b"one.ns.svc\n")]).unwrap();
        let src = CertSource::Dir(dir.path().join("certs"));
        let list = vec![dir.path().join("lists/allow-san")];
        let read = || {
            let mut files = src.read(true).unwrap();
            files.read_lists(&list).map(|()| files)
        };
        let first = read().unwrap();
        assert_eq!(first.lists, [(list[0].clone(), b"one.ns.svc\n".to_vec())]);
        assert_ne!(
            first.digest,
            src.read(true).unwrap().digest,
            "the list counts"
        );
        assert_eq!(read().unwrap().digest, first.digest);
        lists.swap(&[("allow-san", b"two.ns.svc\n")]).unwrap();
        assert_ne!(
            read().unwrap().digest,
            first.digest,
            "a changed list is a change"
        );
        lists.swap(&[("other", b"x")]).unwrap();
        let err = read().unwrap_err();
        assert!(err.to_string().contains("allow-san"), "{err}");
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
