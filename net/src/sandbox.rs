//! Self-sandboxing with Landlock (`--sandbox`, Linux 5.13 and later) and seccomp, the same way in
//! both servers: before its runtime starts, a process gives up every right it does not need, for
//! itself and every thread it will start. Each binary says what it needs ([`Allowed`]: the
//! proxy in `proxy/src/sandbox.rs`, the injector in `injector/src/sandbox.rs`); this module
//! asks the kernel for it and reports what the kernel could enforce.
//!
//! Files: read only beneath the given paths; write, create, remove or execute nothing.
//! TCP, where the kernel's Landlock has network rights (ABI 4, Linux 6.7 and later): bind only
//! the given ports, connect only to the given ports. Rules are by port, not address. Where the
//! kernel allows it (ABI 6, Linux 6.12 and later): send no signal to, and connect to no abstract
//! Unix socket of, any process outside the sandbox (the app beside the proxy in a pod that shares
//! its process namespace, say). UDP and already-open descriptors (sockets, stderr) are not
//! restricted.
//!
//! Then the system calls neither server makes are refused ([`crate::seccomp`]): running a
//! program, reaching into another process, new namespaces, and kernel interfaces such as bpf and
//! io_uring.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use landlock::{
    ABI, Access, AccessFs, AccessNet, BitFlags, CompatLevel, Compatible, NetPort, RestrictSelfAttr,
    RestrictionStatus, Ruleset, RulesetAttr, RulesetCreatedAttr, RulesetError, RulesetStatus,
    Scope, path_beneath_rules,
};

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
pub const LIBRARY_DIRS: &[&str] = &["/lib", "/lib64", "/usr/lib", "/usr/lib64"];

/// What the sandboxed process may still do.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Allowed {
    /// Paths it may read beneath (those that do not exist are skipped).
    pub readable: Vec<PathBuf>,
    /// TCP ports it may bind (0, as tests configure, means an ephemeral port).
    pub bind: BTreeSet<u16>,
    /// TCP ports it may connect to.
    pub connect: BTreeSet<u16>,
}

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
    #[error("--sandbox require, but {0}")]
    Seccomp(#[from] crate::seccomp::SeccompError),
}

/// The directories to read `files` from: each file's directory as given and, as of now, the
/// real directories behind a symlinked file or directory (the kubelet's `..data` swaps stay
/// inside the given directory; a certbot-style link into `archive/` keeps its directory). A
/// Landlock rule holds the directory a path names when the rule is made, so a directory that is
/// itself a symlink (`certs/current -> v1`, re-pointed to `v2` by a release tool) also gives
/// the directory its target lies in (`certs/`), else the new target could never be read.
pub fn directories_of(files: impl IntoIterator<Item = PathBuf>) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = Vec::new();
    for file in files {
        let dir = parent(&file);
        if let Ok(real) = std::fs::canonicalize(&file) {
            dirs.push(parent(&real));
        }
        if let Ok(real) = std::fs::canonicalize(&dir) {
            let linked = std::fs::symlink_metadata(&dir).is_ok_and(|m| m.file_type().is_symlink());
            if linked {
                dirs.push(parent(&real));
            }
            dirs.push(real);
        }
        dirs.push(dir);
    }
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

/// The help text of both servers' `*_sandbox_info` gauge, which [`Achieved`] labels.
pub const INFO_HELP: &str = "1, labelled with what --sandbox achieved: landlock (full, partial: an older kernel enforces part of the rights, none: no Landlock, off) and seccomp (all_threads, this_thread, none: the kernel refused the filters, off).";

/// What [`enforce`] achieved, as `gembok_sandbox_info` and `gembok_injector_sandbox_info` label it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Achieved {
    /// `full`, `partial` (an older Landlock ABI), `none` (no Landlock) or `off`.
    pub landlock: &'static str,
    /// `all_threads`, `this_thread` (and those it starts), `none` (refused) or `off`.
    pub seccomp: &'static str,
}

impl Achieved {
    pub const OFF: Achieved = Achieved {
        landlock: "off",
        seccomp: "off",
    };
}

/// Applies `mode` to this thread (call it before any other thread starts, so it covers them
/// all), logs what was enforced and returns it: an error only where `require` cannot be met or
/// the set-up failed half-way. `started_before` names threads the process already runs (an
/// allocator's), which only a kernel that sandboxes whole processes covers: the log says so
/// where it cannot.
pub fn enforce(
    mode: Mode,
    allowed: &Allowed,
    started_before: Option<&str>,
) -> Result<Achieved, SandboxError> {
    let landlock = match apply(mode, allowed)? {
        Status::Enforced { full, all_threads } => {
            tracing::info!(
                readable = ?allowed.readable,
                tcp_bind = ?allowed.bind,
                tcp_connect = ?allowed.connect,
                "sandboxed (Landlock): no file may be written, created, removed or executed; reads only beneath these paths; TCP binds and connects only on these ports; no signal to a process outside"
            );
            if !full {
                tracing::warn!(
                    "this kernel's Landlock is older: it enforces part of the sandbox's rights (network rights need Linux 6.7, signal and abstract socket scoping 6.12)"
                );
            }
            if let Some(threads) = started_before.filter(|_| !all_threads) {
                tracing::info!(
                    "the sandbox covers every thread but {threads}, started before it (Linux 7.0 and later cover that one too)"
                );
            }
            if full { "full" } else { "partial" }
        }
        Status::None(why) if mode == Mode::Off => {
            tracing::info!("not sandboxed: {why}");
            return Ok(Achieved::OFF);
        }
        Status::None(why) => {
            tracing::warn!("not sandboxed: {why}");
            "none"
        }
    };
    let seccomp = refuse_syscalls(mode, started_before)?;
    Ok(Achieved { landlock, seccomp })
}

/// The seccomp half of `enforce`, with or without Landlock.
fn refuse_syscalls(mode: Mode, started_before: Option<&str>) -> Result<&'static str, SandboxError> {
    match crate::seccomp::install() {
        Ok(installed) => {
            tracing::info!(
                refused = crate::seccomp::SUMMARY,
                all_threads = installed.all_threads,
                "system calls refused (seccomp)"
            );
            if let Some(threads) = started_before.filter(|_| !installed.all_threads) {
                tracing::info!("the seccomp filters do not cover {threads}, started before them");
            }
            Ok(if installed.all_threads {
                "all_threads"
            } else {
                "this_thread"
            })
        }
        Err(e) if mode == Mode::Require => Err(e.into()),
        Err(e) => {
            tracing::warn!("no seccomp filter: {e}");
            Ok("none")
        }
    }
}

/// Restricts this thread and every thread it starts from now on. Call before the runtime.
pub fn apply(mode: Mode, allowed: &Allowed) -> Result<Status, SandboxError> {
    if mode == Mode::Off {
        return Ok(Status::None("--sandbox off".to_owned()));
    }
    // Every thread where the kernel can (asked for as a hard requirement, so that a kernel that
    // cannot says so instead of marking the whole sandbox partial), else this one and its
    // future threads.
    let restricted = match restrict(allowed, true) {
        Err(RulesetError::RestrictSelfFlags(_)) => restrict(allowed, false),
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

fn restrict(allowed: &Allowed, all_threads: bool) -> Result<RestrictionStatus, RulesetError> {
    let read = AccessFs::ReadFile | AccessFs::ReadDir;
    // One rule per port: a port may be both listened on and connected to (8443 for a pod's
    // inbound and its peers').
    let mut ports: BTreeMap<u16, BitFlags<AccessNet>> = BTreeMap::new();
    for &port in &allowed.bind {
        *ports.entry(port).or_default() |= AccessNet::BindTcp;
    }
    for &port in &allowed.connect {
        *ports.entry(port).or_default() |= AccessNet::ConnectTcp;
    }
    let created = Ruleset::default()
        .handle_access(AccessFs::from_all(ABI_TARGET))?
        .handle_access(AccessNet::from_all(ABI_TARGET))?
        .scope(Scope::from_all(ABI_TARGET))?
        .create()?
        .add_rules(path_beneath_rules(&allowed.readable, read))?
        .add_rules(
            ports
                .into_iter()
                .map(|(port, access)| Ok::<_, RulesetError>(NetPort::new(port, access))),
        )?;
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
    fn modes_parse_and_off_sandboxes_nothing() {
        assert_eq!("require".parse(), Ok(Mode::Require));
        assert!(
            "on".parse::<Mode>()
                .unwrap_err()
                .contains("auto, off, require")
        );
        assert_eq!(
            apply(Mode::Off, &Allowed::default()).unwrap(),
            Status::None("--sandbox off".to_owned())
        );
    }

    #[test]
    fn a_symlinked_file_is_read_from_its_own_and_its_real_directory() {
        let tmp = std::env::temp_dir().join(format!("gembok-sandbox-{}", std::process::id()));
        let (live, archive) = (tmp.join("live"), tmp.join("archive"));
        std::fs::create_dir_all(&live).unwrap();
        std::fs::create_dir_all(&archive).unwrap();
        std::fs::write(archive.join("cert1.pem"), "c").unwrap();
        let link = live.join("cert.pem");
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(archive.join("cert1.pem"), &link).unwrap();
        let dirs = directories_of([link, PathBuf::from("/k/key.pem"), PathBuf::from("key.pem")]);
        let _ = std::fs::remove_dir_all(&tmp);
        let real_archive = dirs.iter().any(|d| d.ends_with("archive"));
        assert!(real_archive, "{dirs:?}");
        for want in [live, PathBuf::from("/k"), PathBuf::from(".")] {
            assert!(dirs.contains(&want), "{want:?} missing from {dirs:?}");
        }
    }

    /// A certificate directory that is a symlink, re-pointed the way `ln -sfn v2 current` does
    /// (a new link renamed over the old): the new target is read under the sandbox, a sibling
    /// of the directory holding the link is not. On a thread of its own, like the port test.
    #[test]
    fn a_symlinked_directory_stays_readable_when_it_is_re_pointed() {
        let tmp = std::env::temp_dir().join(format!("gembok-sandbox-flip-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&tmp);
        let certs = tmp.join("certs");
        for (dir, content) in [("v1", "one"), ("v2", "two")] {
            std::fs::create_dir_all(certs.join(dir)).unwrap();
            std::fs::write(certs.join(dir).join("tls.crt"), content).unwrap();
        }
        std::fs::create_dir_all(tmp.join("other")).unwrap();
        std::fs::write(tmp.join("other/secret"), "no").unwrap();
        let current = certs.join("current");
        std::os::unix::fs::symlink("v1", &current).unwrap();
        let rights = Allowed {
            readable: directories_of([current.join("tls.crt")]),
            bind: BTreeSet::new(),
            connect: BTreeSet::new(),
        };
        // The sandboxed thread may only read: this thread re-points the link when it asks.
        let (ask, asked) = std::sync::mpsc::channel::<()>();
        let (done, flipped) = std::sync::mpsc::channel::<()>();
        let reader = std::thread::spawn({
            let current = current.clone();
            move || {
                let probe = Ruleset::default()
                    .handle_access(AccessFs::from_all(ABI::V1))
                    .and_then(|r| r.create());
                if let Err(e) = probe {
                    eprintln!("SKIP: Landlock refused here: {e}");
                    return None;
                }
                let status = restrict(&rights, false).unwrap();
                if status.ruleset == RulesetStatus::NotEnforced {
                    eprintln!("SKIP: this kernel has no Landlock");
                    return None;
                }
                let before = std::fs::read_to_string(current.join("tls.crt"));
                ask.send(()).unwrap();
                flipped.recv().unwrap();
                let after = std::fs::read_to_string(current.join("tls.crt"));
                let outside = std::fs::read_to_string(current.join("../../other/secret"));
                Some((before.ok(), after.ok(), outside.map_err(|e| e.kind())))
            }
        });
        if asked.recv().is_ok() {
            let next = certs.join(".current.new");
            std::os::unix::fs::symlink("v2", &next).unwrap();
            std::fs::rename(&next, &current).unwrap();
            done.send(()).unwrap();
        }
        let outcome = reader.join().unwrap();
        let _ = std::fs::remove_dir_all(&tmp);
        let Some((before, after, outside)) = outcome else {
            return;
        };
        assert_eq!(before.as_deref(), Some("one"));
        assert_eq!(
            after.as_deref(),
            Some("two"),
            "the re-pointed link's new target"
        );
        assert_eq!(outside, Err(std::io::ErrorKind::PermissionDenied));
    }

    /// The kernel enforces the ports: checked on a thread of its own, sandboxed alone (without
    /// every-thread sandboxing, Landlock restricts only the calling thread and those it starts),
    /// so the rest of the test process stays free.
    #[test]
    fn tcp_binds_and_connects_outside_the_allowed_ports_are_denied() {
        use std::io::ErrorKind::PermissionDenied;
        use std::net::{TcpListener, TcpStream};
        let allowed_peer = TcpListener::bind("127.0.0.1:0").unwrap();
        let other_peer = TcpListener::bind("127.0.0.1:0").unwrap();
        let free = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let (ok, other) = (
            allowed_peer.local_addr().unwrap(),
            other_peer.local_addr().unwrap(),
        );
        let rights = Allowed {
            readable: Vec::new(),
            bind: BTreeSet::from([0]),
            connect: BTreeSet::from([ok.port()]),
        };
        std::thread::spawn(move || {
            // A container whose seccomp profile refuses the Landlock calls cannot run this; once
            // a bare ruleset can be made, the real one must be too.
            let probe = Ruleset::default()
                .handle_access(AccessFs::from_all(ABI::V1))
                .and_then(|r| r.create());
            if let Err(e) = probe {
                return eprintln!("SKIP: Landlock refused here: {e}");
            }
            let status = restrict(&rights, false).unwrap();
            if status.ruleset != RulesetStatus::FullyEnforced {
                eprintln!("SKIP: this kernel's Landlock has no network rights ({status:?})");
                return;
            }
            TcpStream::connect(ok).expect("the allowed port");
            let denied = TcpStream::connect(other).unwrap_err();
            assert_eq!(denied.kind(), PermissionDenied, "{denied}");
            TcpListener::bind("127.0.0.1:0").expect("an ephemeral port (rule for 0)");
            let denied = TcpListener::bind(free).unwrap_err();
            assert_eq!(denied.kind(), PermissionDenied, "{denied}");
        })
        .join()
        .unwrap();
    }
}
