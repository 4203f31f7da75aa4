//! Putting generated material on disk: the layout of [`crate::layout`], private keys and
//! Secrets (which contain keys) with mode 0600, certificates 0644.
//!
//! [`DevPki::write`] builds the whole tree in a staging directory next to the target and renames
//! it into place, so a failure never leaves a half-written PKI and a replaced one disappears in
//! one step.

use std::fs;
use std::io::{self, Write as _};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::issue::Leaf;
use crate::k8s::{self, SecretMeta};
use crate::layout;
use crate::pki::DevPki;

const SECRET_MODE: u32 = 0o600;

/// Renders one certificate's Secret manifest (`k8s::secret_yaml` or Redis' own shape).
type SecretRender = fn(SecretMeta<'_>, &Leaf) -> Result<String, serde_yaml_ng::Error>;
const PUBLIC_MODE: u32 = 0o644;
const DIR_MODE: u32 = 0o755;

/// What to do when the output directory exists and is not empty.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Existing {
    /// Fail with [`WriteError::Exists`].
    Refuse,
    /// Replace it, but only if it holds [`layout::MARKER`] (i.e. it is earlier output).
    Replace,
}

/// What [`DevPki::write`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    pub dir: PathBuf,
    /// Every file written, relative to `dir`, sorted.
    pub files: Vec<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("{} already exists and is not empty (pass --force to replace it)", .0.display())]
    Exists(PathBuf),
    #[error(
        "{} is not empty and has no {}, so it is not gembok-certs-dev output; refusing to replace it, even with --force",
        .0.display(),
        layout::MARKER
    )]
    NotOurs(PathBuf),
    #[error("{} exists and is not a directory", .0.display())]
    NotADirectory(PathBuf),
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("rendering {}: {source}", path.display())]
    Yaml {
        path: PathBuf,
        #[source]
        source: serde_yaml_ng::Error,
    },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> WriteError + '_ {
    move |source| WriteError::Io {
        path: path.to_owned(),
        source,
    }
}

impl Leaf {
    /// Writes `tls.crt`, `tls.key` (0600) and `ca.crt` into `dir`, creating it if needed and
    /// replacing each file atomically (write aside, rename) if it exists. Returns the paths.
    pub fn write_cert_dir(&self, dir: &Path) -> Result<Vec<PathBuf>, WriteError> {
        fs::create_dir_all(dir).map_err(io_err(dir))?;
        let files = [
            (layout::CERT, &self.chain_pem, PUBLIC_MODE),
            (layout::KEY, &self.key_pem, SECRET_MODE),
            (layout::CA, &self.ca_pem, PUBLIC_MODE),
        ];
        let mut paths = Vec::new();
        for (name, contents, mode) in files {
            let path = dir.join(name);
            write_file(&path, contents.as_bytes(), mode)?;
            paths.push(path);
        }
        Ok(paths)
    }
}

impl DevPki {
    /// Writes the whole PKI to `out` (see `README.md` for the layout).
    pub fn write(&self, out: &Path, existing: Existing) -> Result<Written, WriteError> {
        let replace = check_target(out, existing)?;
        let parent = match out.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        fs::create_dir_all(parent).map_err(io_err(parent))?;
        let staging = tempfile::Builder::new()
            .prefix(".gembok-certs-dev-new-")
            .tempdir_in(parent)
            .map_err(io_err(parent))?;

        let mut files = self.write_tree(staging.path())?;
        files.sort();
        set_mode(staging.path(), DIR_MODE)?;

        // Renaming a directory onto an empty one replaces it, so the old tree moves into a fresh
        // empty temporary directory that deletes it when dropped.
        let old = tempfile::Builder::new()
            .prefix(".gembok-certs-dev-old-")
            .tempdir_in(parent)
            .map_err(io_err(parent))?;
        if replace {
            fs::rename(out, old.path()).map_err(io_err(out))?;
        }
        if let Err(e) = fs::rename(staging.path(), out) {
            if replace {
                // Best effort: put the previous output back where it was.
                let _ = fs::rename(old.path(), out);
            }
            return Err(io_err(out)(e));
        }
        // The staging path is gone (renamed); keep TempDir from trying to delete it.
        let _ = staging.keep();
        drop(old);
        Ok(Written {
            dir: out.to_owned(),
            files,
        })
    }

    fn write_tree(&self, base: &Path) -> Result<Vec<PathBuf>, WriteError> {
        let mut w = Tree {
            base,
            files: Vec::new(),
        };
        let opts = &self.options;
        w.file(layout::MARKER.as_ref(), &marker_text(self), PUBLIC_MODE)?;

        let root_dir = Path::new(layout::ROOT_DIR);
        w.file(
            &root_dir.join(layout::ROOT_CERT),
            self.root.cert_pem(),
            PUBLIC_MODE,
        )?;
        w.file(
            &root_dir.join(layout::ROOT_KEY),
            &self.root.key_pem(),
            SECRET_MODE,
        )?;

        for region in &self.regions {
            let r = region.name.as_str();
            let inter = layout::intermediate_dir(Path::new(""), r);
            w.file(
                &inter.join(layout::CERT),
                region.intermediate.cert_pem(),
                PUBLIC_MODE,
            )?;
            w.file(
                &inter.join(layout::KEY),
                &region.intermediate.key_pem(),
                SECRET_MODE,
            )?;
            w.file(
                &inter.join(layout::CA),
                region.intermediate.root_pem(),
                PUBLIC_MODE,
            )?;

            let k8s_dir = layout::k8s_dir(Path::new(""), r);
            let mut resources = Vec::new();
            // The PEM files of `leaf` in `<region>/<name>/`, and its Secret as `render` writes it.
            let mut leaf = |w: &mut Tree<'_>,
                            name: &str,
                            leaf: &Leaf,
                            meta: SecretMeta<'_>,
                            render: SecretRender| {
                w.cert_dir(&layout::cert_dir(Path::new(""), r, name), leaf)?;
                let file = layout::secret_file(meta.name);
                let path = k8s_dir.join(&file);
                let yaml = render(meta, leaf).map_err(|source| WriteError::Yaml {
                    path: path.clone(),
                    source,
                })?;
                w.file(&path, &yaml, SECRET_MODE)?;
                resources.push(file);
                Ok::<_, WriteError>(())
            };
            for (svc, cert) in &region.services {
                let name = layout::secret_name(svc);
                let meta = SecretMeta {
                    name: &name,
                    namespace: &opts.namespace,
                    app: svc,
                    region: r,
                };
                leaf(&mut w, svc, cert, meta, k8s::secret_yaml)?;
            }
            let name = layout::injector_secret_name(&opts.injector_service);
            let meta = SecretMeta {
                name: &name,
                namespace: &opts.injector_namespace,
                app: &opts.injector_service,
                region: r,
            };
            leaf(
                &mut w,
                &opts.injector_service,
                &region.injector,
                meta,
                k8s::secret_yaml,
            )?;
            // Clients are for people and tools, not pods: PEM files only.
            for (name, cert) in &region.clients {
                w.cert_dir(&layout::cert_dir(Path::new(""), r, name), cert)?;
            }
            if let Some(cert) = &region.redis_proxy {
                let meta = SecretMeta {
                    name: layout::REDIS_PROXY_SECRET,
                    namespace: layout::REDIS_NAMESPACE,
                    app: layout::REDIS_PROXY_DIR,
                    region: r,
                };
                let render = k8s::redis_proxy_secret_yaml;
                leaf(&mut w, layout::REDIS_PROXY_DIR, cert, meta, render)?;
            }

            let path = k8s_dir.join(layout::KUSTOMIZATION);
            let yaml = k8s::kustomization_yaml(&resources).map_err(|source| WriteError::Yaml {
                path: path.clone(),
                source,
            })?;
            w.file(&path, &yaml, PUBLIC_MODE)?;
        }
        Ok(w.files)
    }
}

fn marker_text(pki: &DevPki) -> String {
    let o = &pki.options;
    format!(
        "{warning}.\n\n\
         Everything in this directory, private keys included, is a throw-away development PKI.\n\
         Regenerate from the repository root: {regen}\n\n\
         regions:  {regions}\nservices: {services}\nnamespace: {ns}\ntrust domain: {td}\n\
         clients: {clients}\nredis proxy names: {redis}\n",
        warning = k8s::WARNING,
        regen = k8s::REGENERATE,
        regions = o.regions.join(", "),
        services = o.services.join(", "),
        ns = o.namespace,
        td = o.trust_domain,
        clients = o.clients.join(", "),
        redis = o.redis_proxy_names.join(", "),
    )
}

/// Whether `out` must be replaced (true) or is absent/empty (false).
fn check_target(out: &Path, existing: Existing) -> Result<bool, WriteError> {
    let meta = match fs::symlink_metadata(out) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(io_err(out)(e)),
    };
    if !meta.is_dir() {
        return Err(WriteError::NotADirectory(out.to_owned()));
    }
    let empty = fs::read_dir(out).map_err(io_err(out))?.next().is_none();
    if empty {
        // An empty directory holds nothing to lose; rename replaces it.
        return Ok(false);
    }
    match existing {
        Existing::Refuse => Err(WriteError::Exists(out.to_owned())),
        Existing::Replace if out.join(layout::MARKER).is_file() => Ok(true),
        Existing::Replace => Err(WriteError::NotOurs(out.to_owned())),
    }
}

struct Tree<'a> {
    base: &'a Path,
    files: Vec<PathBuf>,
}

impl Tree<'_> {
    fn file(&mut self, rel: &Path, contents: &str, mode: u32) -> Result<(), WriteError> {
        let path = self.base.join(rel);
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir).map_err(io_err(dir))?;
        }
        write_file(&path, contents.as_bytes(), mode)?;
        self.files.push(rel.to_owned());
        Ok(())
    }

    fn cert_dir(&mut self, rel: &Path, leaf: &Leaf) -> Result<(), WriteError> {
        for path in leaf.write_cert_dir(&self.base.join(rel))? {
            let name = path.file_name().unwrap_or_default();
            self.files.push(rel.join(name));
        }
        Ok(())
    }
}

/// Writes aside with the final mode already set, then renames, so a reader never sees a partial
/// file and a key is never readable by others, not even for a moment.
fn write_file(path: &Path, contents: &[u8], mode: u32) -> Result<(), WriteError> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let mut tmp = tempfile::Builder::new()
        .prefix(".tmp-")
        .permissions(fs::Permissions::from_mode(mode & SECRET_MODE))
        .tempfile_in(dir)
        .map_err(io_err(dir))?;
    tmp.write_all(contents).map_err(io_err(path))?;
    tmp.as_file().sync_all().map_err(io_err(path))?;
    tmp.as_file()
        .set_permissions(fs::Permissions::from_mode(mode))
        .map_err(io_err(path))?;
    tmp.persist(path).map_err(|e| io_err(path)(e.error))?;
    Ok(())
}

fn set_mode(path: &Path, mode: u32) -> Result<(), WriteError> {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(io_err(path))
}
