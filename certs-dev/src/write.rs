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
use crate::options::Options;
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
    #[error(
        "{} is a symbolic link; give the directory it points to (the output directory is \
         replaced as a whole, which would replace the link)",
        .0.display()
    )]
    Symlink(PathBuf),
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
        create_dirs(dir)?;
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

        let mut files = self.write_tree(staging.path(), out)?;
        files.sort();
        set_mode(staging.path(), DIR_MODE)?;

        // Where the kernel and filesystem can, the two trees trade places in one step, so `out`
        // is never missing or half-replaced; the old tree is then at the staging path and goes
        // with it.
        if replace && exchange(staging.path(), out).is_ok() {
            drop(staging);
            return Ok(Written {
                dir: out.to_owned(),
                files,
            });
        }
        // Otherwise in two renames. Renaming a directory onto an empty one replaces it, so the
        // old tree moves into a fresh empty temporary directory that deletes it when dropped.
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

    /// Writes the tree under `base` (a staging directory that becomes `out`).
    fn write_tree(&self, base: &Path, out: &Path) -> Result<Vec<PathBuf>, WriteError> {
        let mut w = Tree {
            base,
            files: Vec::new(),
        };
        let opts = &self.options;
        let regenerate = regenerate_command(out, opts);
        let header = k8s::header(&regenerate);
        w.file(
            layout::MARKER.as_ref(),
            &marker_text(self, &regenerate),
            PUBLIC_MODE,
        )?;

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

        w.file(&layout::crl_file(Path::new("")), &self.crl_pem, PUBLIC_MODE)?;
        let namespaces = opts.service_namespaces();

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
                w.manifest(
                    &k8s_dir.join(&file),
                    &header,
                    render(meta, leaf),
                    SECRET_MODE,
                )?;
                resources.push(file);
                Ok::<_, WriteError>(())
            };
            for (item, cert) in &region.services {
                let (namespace, svc) = opts.service(item);
                let name = layout::secret_name(svc);
                let meta = SecretMeta {
                    name: &name,
                    namespace,
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
            for (name, cert) in &region.revoked_clients {
                let dir = layout::revoked_client_dir(name);
                w.cert_dir(&layout::cert_dir(Path::new(""), r, &dir), cert)?;
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
            // The revocation lists, in every namespace whose workloads get a Secret here.
            for &namespace in &namespaces {
                let file = layout::crl_configmap_file(namespace);
                let meta = SecretMeta {
                    name: layout::CRL_CONFIGMAP,
                    namespace,
                    app: layout::CRL_CONFIGMAP,
                    region: r,
                };
                let rendered = k8s::crl_configmap_yaml(meta, &self.crl_pem);
                w.manifest(&k8s_dir.join(&file), &header, rendered, PUBLIC_MODE)?;
                resources.push(file);
            }

            let path = k8s_dir.join(layout::KUSTOMIZATION);
            let rendered = k8s::kustomization_yaml(&resources);
            w.manifest(&path, &header, rendered, PUBLIC_MODE)?;
        }
        Ok(w.files)
    }
}

fn marker_text(pki: &DevPki, regenerate: &str) -> String {
    let o = &pki.options;
    format!(
        "{warning}.\n\n\
         Everything in this directory, private keys included, is a throw-away development PKI.\n\
         Regenerate (from where it was run; a new root, so every Secret deployed from here must \
         be replaced too):\n  {regenerate}\n\n\
         regions:  {regions}\nservices: {services}\nnamespace: {ns}\ntrust domain: {td}\n\
         cluster domain: {cd}\nclients: {clients}\nrevoked clients: {revoked}\n\
         redis proxy names: {redis}\n\
         leaf lifetime: {days} days\nCA lifetime: {ca_days} days\n",
        warning = k8s::WARNING,
        regions = o.regions.join(", "),
        services = o.services.join(", "),
        ns = o.namespace,
        td = o.trust_domain,
        cd = o.cluster_domain,
        clients = o.clients.join(", "),
        revoked = o.revoked_clients.join(", "),
        redis = o.redis_proxy_names.join(", "),
        days = o.days,
        ca_days = o.ca_days,
    )
}

/// The command that writes this output again: the same `--out` and every option that is not
/// the default, with `--force`.
pub fn regenerate_command(out: &Path, options: &Options) -> String {
    let mut words = vec![
        "cargo run -p gembok-certs-dev --".to_owned(),
        "--out".to_owned(),
        shell_word(&out.to_string_lossy()),
        "--force".to_owned(),
    ];
    words.extend(options.flags().into_iter().map(|w| shell_word(&w)));
    words.join(" ")
}

/// `word` as one shell word: unchanged when it is plainly safe, single-quoted otherwise.
fn shell_word(word: &str) -> String {
    let plain = !word.is_empty()
        && word
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./,:=@".contains(&b));
    if plain {
        word.to_owned()
    } else {
        format!("'{}'", word.replace('\'', "'\\''"))
    }
}

/// Whether `out` must be replaced (true) or is absent/empty (false).
fn check_target(out: &Path, existing: Existing) -> Result<bool, WriteError> {
    let meta = match fs::symlink_metadata(out) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(io_err(out)(e)),
    };
    if meta.file_type().is_symlink() {
        return Err(WriteError::Symlink(out.to_owned()));
    }
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
            create_dirs(dir)?;
        }
        write_file(&path, contents.as_bytes(), mode)?;
        self.files.push(rel.to_owned());
        Ok(())
    }

    /// A manifest as `render` gave it, after `header`; a rendering error names the file.
    fn manifest(
        &mut self,
        rel: &Path,
        header: &str,
        rendered: Result<String, serde_yaml_ng::Error>,
        mode: u32,
    ) -> Result<(), WriteError> {
        let yaml = rendered.map_err(|source| WriteError::Yaml {
            path: rel.to_owned(),
            source,
        })?;
        self.file(rel, &(header.to_owned() + &yaml), mode)
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

/// Creates `dir` and its missing parents with mode 0755 whatever the umask (a umask of 000
/// would otherwise let any local user swap a `ca.crt` or a `tls.key`).
fn create_dirs(dir: &Path) -> Result<(), WriteError> {
    use std::os::unix::fs::DirBuilderExt as _;
    let mut missing = Vec::new();
    let mut at = Some(dir);
    while let Some(d) = at.filter(|d| !d.as_os_str().is_empty() && !d.exists()) {
        missing.push(d);
        at = d.parent();
    }
    for d in missing.into_iter().rev() {
        match fs::DirBuilder::new().mode(DIR_MODE).create(d) {
            Ok(()) => set_mode(d, DIR_MODE)?,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && d.is_dir() => {}
            Err(e) => return Err(io_err(d)(e)),
        }
    }
    Ok(())
}

/// Swaps two directories in one atomic rename (`RENAME_EXCHANGE`, Linux 3.15; not every
/// filesystem has it).
fn exchange(a: &Path, b: &Path) -> io::Result<()> {
    use nix::fcntl::{AT_FDCWD, RenameFlags, renameat2};
    renameat2(AT_FDCWD, a, AT_FDCWD, b, RenameFlags::RENAME_EXCHANGE).map_err(io::Error::from)
}

fn set_mode(path: &Path, mode: u32) -> Result<(), WriteError> {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(io_err(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_directories_trade_places_in_one_step() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        for (d, mark) in [(&a, "A"), (&b, "B")] {
            fs::create_dir(d).unwrap();
            fs::write(d.join("mark"), mark).unwrap();
        }
        exchange(&a, &b).unwrap();
        assert_eq!(fs::read_to_string(a.join("mark")).unwrap(), "B");
        assert_eq!(fs::read_to_string(b.join("mark")).unwrap(), "A");
    }
}
