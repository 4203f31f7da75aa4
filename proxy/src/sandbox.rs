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
//! TCP, where the kernel's Landlock has network rights (ABI 4, Linux 6.7 and later): it may bind
//! only its listeners' ports and connect only to its routes' ports (the apps' and the peers', and
//! 53 when a peer is named, as a resolver retries a truncated answer over TCP). Rules are by
//! port, not address: peers are resolved at run time. So a compromised proxy cannot open a new
//! listener, nor reach the Kubernetes API, a metadata service or any port it has no route to.
//! UDP (DNS lookups) and already-open descriptors (sockets, stderr) are not restricted.
//!
//! Where the kernel allows it (ABI 6, Linux 6.12 and later) it may also send no signal to, nor
//! connect to an abstract Unix socket of, any process outside its sandbox: the app beside it in
//! a pod that shares its process namespace, say.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use landlock::{
    ABI, Access, AccessFs, AccessNet, BitFlags, CompatLevel, Compatible, NetPort, RestrictSelfAttr,
    RestrictionStatus, Ruleset, RulesetAttr, RulesetCreatedAttr, RulesetError, RulesetStatus,
    Scope, path_beneath_rules,
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

/// What the sandboxed proxy may still do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allowed {
    /// Paths it may read beneath (those that do not exist are skipped).
    pub readable: Vec<PathBuf>,
    /// TCP ports it may bind: its listeners' (0, as tests configure, means an ephemeral port).
    pub bind: BTreeSet<u16>,
    /// TCP ports it may connect to.
    pub connect: BTreeSet<u16>,
}

/// The port DNS answers too large for UDP are asked for again on (over TCP).
const DNS_PORT: u16 = 53;

/// What `config` needs: its files, its listeners, its routes.
pub fn allowed(config: &Config) -> Allowed {
    let bind = (config.inbound.iter().map(|r| r.listen.port()))
        .chain(config.outbound.iter().map(|r| r.listen.port()))
        .chain([config.admin.port()])
        .collect();
    let named = |host: &str| host.trim_matches(['[', ']']).parse::<IpAddr>().is_err();
    let connect = (config.inbound.iter().map(|r| r.target.port()))
        .chain(config.outbound.iter().map(|r| r.port))
        .chain(
            config
                .outbound
                .iter()
                .any(|r| named(&r.host))
                .then_some(DNS_PORT),
        )
        .collect();
    Allowed {
        readable: readable(config),
        bind,
        connect,
    }
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
        let nothing = Allowed {
            readable: Vec::new(),
            bind: BTreeSet::new(),
            connect: BTreeSet::new(),
        };
        assert_eq!(
            apply(Mode::Off, &nothing).unwrap(),
            Status::None("--sandbox off".to_owned())
        );
    }

    fn config(args: &[&str]) -> Config {
        let base = [
            "gembok-proxy",
            "--cert",
            "/c/c.pem",
            "--key",
            "/c/k.pem",
            "--ca",
            "/c/ca.pem",
        ];
        let args: Vec<&str> = base.iter().chain(args).copied().collect();
        let cli = <crate::cli::Cli as clap::Parser>::try_parse_from(args).unwrap();
        Config::from_cli(&cli.proxy).unwrap()
    }

    #[test]
    fn binds_its_listeners_and_connects_to_its_routes_ports_only() {
        let pod = allowed(&config(&[
            "--inbound",
            "0.0.0.0:8443=127.0.0.1:8080",
            "--outbound",
            "127.0.0.1:15701=auth.ecommerce.svc.cluster.local:8443",
            "--outbound",
            "127.0.0.1:15710=10.0.0.7:12001",
            "--admin",
            "0.0.0.0:15700",
        ]));
        assert_eq!(pod.bind, BTreeSet::from([8443, 15700, 15701, 15710]));
        // A named peer: its lookups may go over TCP.
        assert_eq!(pod.connect, BTreeSet::from([53, 8080, 8443, 12001]));

        let by_address = allowed(&config(&[
            "--outbound",
            "127.0.0.1:15701=10.0.0.7:8443",
            "--outbound",
            "127.0.0.1:15702=[fd00::7]:8443",
        ]));
        assert_eq!(by_address.connect, BTreeSet::from([8443]));
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
