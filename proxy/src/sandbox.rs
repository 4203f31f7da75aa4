//! Self-sandboxing with Landlock (`--sandbox`, Linux 5.13 and later): before the runtime starts,
//! the proxy gives up every filesystem right except reading beneath a few paths, for itself and
//! every thread it will start. What a compromised proxy could then do to the pod shrinks to what
//! it must do anyway: it cannot read the ServiceAccount token, the app's files or other
//! processes' `/proc` entries, and cannot write, create, remove or execute any file.
//!
//! Readable, and only that:
//! - the certificate files' and allow-san files' directories as configured, and the real
//!   directories their symlinks resolve to at start (the kubelet's `..data` swaps stay inside the
//!   configured directory; a certbot-style link into `archive/` keeps its directory), so reloads
//!   keep working;
//! - `/etc` and the shared-library directories: name resolution reads `/etc/hosts`,
//!   `/etc/resolv.conf` and `/etc/nsswitch.conf` on every lookup, and glibc may load an NSS module.
//!
//! Network rights are not restricted (outbound peers are resolved at run time), nor are
//! already-open descriptors (sockets, stderr).

use std::path::{Path, PathBuf};

use landlock::{
    ABI, Access, AccessFs, CompatLevel, Compatible, RestrictSelfAttr, RestrictionStatus, Ruleset,
    RulesetAttr, RulesetCreatedAttr, RulesetError, RulesetStatus, path_beneath_rules,
};

use crate::config::Config;

/// `--sandbox`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Sandbox where the kernel can (the default); say so where it cannot.
    Auto,
    Off,
    /// Refuse to start where the kernel cannot sandbox at all.
    Require,
}

impl std::str::FromStr for Mode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(Mode::Auto),
            "off" => Ok(Mode::Off),
            "require" => Ok(Mode::Require),
            other => Err(format!("`{other}` is not one of auto, off, require")),
        }
    }
}

/// The newest Landlock ABI whose rights this code asks for; older kernels enforce the subset
/// they know (the crate's best-effort compatibility), newer ones ask for nothing more.
const ABI_TARGET: ABI = ABI::V6;

/// Directories of shared libraries glibc may load at run time (NSS modules for lookups).
const LIBRARY_DIRS: &[&str] = &["/lib", "/lib64", "/usr/lib", "/usr/lib64"];

/// How the sandbox ended up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    Enforced {
        /// Every right this code handles is enforced (else the kernel's older Landlock ABI
        /// knows only part of them, and those are).
        full: bool,
        /// Threads started before the sandbox (jemalloc's purge thread, started with the
        /// allocator) are covered too: Linux 7.0 and later (Landlock ABI 8) can do that; before,
        /// only this thread and those it starts are.
        all_threads: bool,
    },
    /// No sandbox: `--sandbox off`, a kernel without Landlock, or (`auto`) a set-up the
    /// environment refused (a seccomp filter that denies the Landlock calls, say).
    None(String),
}

/// Why the sandbox could not be set up (a kernel that merely lacks Landlock is not an error).
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("cannot set up the Landlock sandbox: {0}")]
    Ruleset(#[from] RulesetError),
    #[error("--sandbox require, but this kernel cannot sandbox (no Landlock)")]
    Unsupported,
}

/// Every path the sandboxed proxy may read beneath (those that do not exist are skipped).
pub fn readable(config: &Config) -> Vec<PathBuf> {
    let paths = config.certs.paths();
    let files = [Some(paths.cert), Some(paths.key), paths.ca]
        .into_iter()
        .flatten()
        .chain(config.allow_san_files());
    let mut dirs: Vec<PathBuf> = Vec::new();
    for file in files {
        let dir = parent(&file);
        // The real directory behind a symlinked file (or a symlinked directory), as of now.
        if let Ok(real) = std::fs::canonicalize(&file) {
            dirs.push(parent(&real));
        }
        if let Ok(real) = std::fs::canonicalize(&dir) {
            dirs.push(real);
        }
        dirs.push(dir);
    }
    dirs.push(PathBuf::from("/etc"));
    dirs.extend(LIBRARY_DIRS.iter().map(PathBuf::from));
    dirs.sort();
    dirs.dedup();
    dirs
}

fn parent(file: &Path) -> PathBuf {
    match file.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Restricts this thread and every thread it starts from now on. Call before the runtime.
pub fn apply(mode: Mode, readable: &[PathBuf]) -> Result<Status, SandboxError> {
    if mode == Mode::Off {
        return Ok(Status::None("--sandbox off".to_owned()));
    }
    // Every thread where the kernel can (asked for as a hard requirement, so that a kernel that
    // cannot says so instead of marking the whole sandbox partial), else this one and its
    // future threads.
    let restricted = match restrict(readable, true) {
        Err(RulesetError::RestrictSelfFlags(_)) => restrict(readable, false),
        other => other,
    };
    let status = match (restricted, mode) {
        (Ok(status), _) => status,
        (Err(e), Mode::Require) => return Err(e.into()),
        // Nothing was restricted: a failed step leaves the process as it was.
        (Err(e), _) => return Ok(Status::None(format!("cannot set up Landlock: {e}"))),
    };
    let all_threads = status.all_threads;
    match (status.ruleset, mode) {
        (RulesetStatus::FullyEnforced, _) => Ok(Status::Enforced {
            full: true,
            all_threads,
        }),
        (RulesetStatus::PartiallyEnforced, _) => Ok(Status::Enforced {
            full: false,
            all_threads,
        }),
        (RulesetStatus::NotEnforced, Mode::Require) => Err(SandboxError::Unsupported),
        (RulesetStatus::NotEnforced, _) => {
            Ok(Status::None("this kernel has no Landlock".to_owned()))
        }
    }
}

fn restrict(readable: &[PathBuf], all_threads: bool) -> Result<RestrictionStatus, RulesetError> {
    let read = AccessFs::ReadFile | AccessFs::ReadDir;
    let created = Ruleset::default()
        .handle_access(AccessFs::from_all(ABI_TARGET))?
        .create()?
        .add_rules(path_beneath_rules(readable, read))?;
    let created = if all_threads {
        created
            .set_compatibility(CompatLevel::HardRequirement)
            .all_threads(true)?
    } else {
        created
    };
    created.restrict_self()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_beneath_the_configured_and_the_real_directories_only() {
        let tmp = tempfile::tempdir().unwrap();
        let (live, archive) = (tmp.path().join("live"), tmp.path().join("archive"));
        std::fs::create_dir_all(&live).unwrap();
        std::fs::create_dir_all(&archive).unwrap();
        std::fs::write(archive.join("cert1.pem"), "c").unwrap();
        std::os::unix::fs::symlink(archive.join("cert1.pem"), live.join("cert.pem")).unwrap();
        let list = tmp.path().join("lists/allow-san");
        let cert = live.join("cert.pem").display().to_string();
        let inbound = format!(
            "0.0.0.0:8443=127.0.0.1:8080,allow-san-file={}",
            list.display()
        );
        let args = [
            "gembok-proxy",
            "--cert",
            &cert,
            "--key",
            "/k/key.pem",
            "--ca",
            "/k/ca.pem",
            "--inbound",
            &inbound,
        ];
        let cli = <crate::cli::Cli as clap::Parser>::try_parse_from(args).unwrap();
        let config = Config::from_cli(&cli.proxy).unwrap();
        let dirs = readable(&config);
        let real = |p: &Path| std::fs::canonicalize(p).unwrap();
        for want in [
            live.clone(),
            real(&live),
            real(&archive),
            PathBuf::from("/k"),
            tmp.path().join("lists"),
            PathBuf::from("/etc"),
            PathBuf::from("/usr/lib"),
        ] {
            assert!(dirs.contains(&want), "{want:?} missing from {dirs:?}");
        }
        assert!(
            !dirs
                .iter()
                .any(|d| d == Path::new("/") || d.starts_with("/var")),
            "{dirs:?}"
        );
    }

    #[test]
    fn modes_parse_and_off_sandboxes_nothing() {
        assert_eq!("require".parse(), Ok(Mode::Require));
        assert!(
            "on".parse::<Mode>()
                .unwrap_err()
                .contains("auto, off, require")
        );
        assert_eq!(
            apply(Mode::Off, &[]).unwrap(),
            Status::None("--sandbox off".to_owned())
        );
    }
}
