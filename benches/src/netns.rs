//! The run's own network namespace, so that the TCP congestion control of every socket in the
//! run (load client, app, every contender) is the run's choice and not the host's.
//!
//! It decides the bulk figures on loopback: with BBR, which paces with timers when no `fq`
//! qdisc does, one stream through a pair ran at half the speed and twice the sidecar CPU per
//! GiB that it ran at with CUBIC on the same host (see `benches/tuning.md`). The namespace
//! inherits every other network setting from the host's; only its loopback carries traffic.
//!
//! The main thread enters it before the runtime and any child exist: threads and children
//! created afterwards inherit the thread's namespace. Installing packages needs the network,
//! so [`crate::install`] runs first.

use std::io;
use std::net::{TcpListener, TcpStream};
use std::process::Command;

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

const CONGESTION: &str = "/proc/sys/net/ipv4/tcp_congestion_control";
const AVAILABLE: &str = "/proc/sys/net/ipv4/tcp_available_congestion_control";
const ALLOWED: &str = "/proc/sys/net/ipv4/tcp_allowed_congestion_control";

/// `--congestion host`: stay in the host's namespace, with its congestion control.
pub const HOST: &str = "host";

/// [`Network::namespace`] when the run has a namespace of its own.
pub const OWN: &str = "own";

/// Where the run's sockets live, for the machine-facts header.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Network {
    /// [`OWN`], or `host` and why.
    pub namespace: String,
    /// The congestion control new sockets get in the run, as a loopback connection reported
    /// it (`TCP_CONGESTION` on both ends).
    pub congestion: String,
    /// The host's default.
    pub host_congestion: String,
}

impl Network {
    /// The host's congestion control, when the run measures under another one (bulk is then
    /// measured under both).
    pub fn host_differs(&self) -> Option<&str> {
        (self.namespace == OWN && self.host_congestion != self.congestion)
            .then_some(self.host_congestion.as_str())
    }
}

/// The default congestion control of the calling thread's namespace.
pub fn congestion() -> io::Result<String> {
    Ok(std::fs::read_to_string(CONGESTION)?.trim().to_owned())
}

/// Sets the namespace's default congestion control and checks that a new loopback connection
/// gets it on both ends (an accepted socket takes the default of the moment it is created).
pub fn set_congestion(name: &str) -> Result<()> {
    std::fs::write(CONGESTION, name).with_context(|| {
        let available = std::fs::read_to_string(AVAILABLE).unwrap_or_default();
        format!(
            "set {CONGESTION} to {name} (loaded: {}; others need their module)",
            available.trim()
        )
    })?;
    let seen = loopback_congestion().context("check a loopback connection's congestion control")?;
    if seen.iter().any(|s| s != name) {
        bail!("asked for {name}, a new loopback connection got {seen:?}");
    }
    Ok(())
}

/// Whether `name` can be set as a congestion control: loaded already
/// (`tcp_available_congestion_control`), or a module of the running kernel (`tcp_NAME`, which
/// the kernel loads when root sets it). Checked before the run, so that a misspelt name is bad
/// usage and not an error after installing packages.
pub fn available(name: &str) -> Result<(), String> {
    let loaded = std::fs::read_to_string(AVAILABLE).unwrap_or_default();
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let dir = std::path::Path::new("/lib/modules").join(release.trim());
    let modules: String = ["modules.dep", "modules.builtin"]
        .iter()
        .filter_map(|f| std::fs::read_to_string(dir.join(f)).ok())
        .collect();
    available_in(name, &loaded, &modules, &dir.display().to_string())
}

/// [`available`] on the kernel's lists: `loaded` as `tcp_available_congestion_control` has it,
/// `modules` the lines of `modules.dep` and `modules.builtin` (`kernel/net/ipv4/tcp_bbr.ko:`).
fn available_in(name: &str, loaded: &str, modules: &str, dir: &str) -> Result<(), String> {
    if loaded.split_whitespace().any(|l| l == name) {
        return Ok(());
    }
    let module = format!("/tcp_{name}.ko");
    let is_module = modules.lines().any(|l| {
        let path = l.split(':').next().unwrap_or_default();
        path.find(&module).is_some_and(|at| {
            let rest = &path[at + module.len()..];
            rest.is_empty() || rest.starts_with('.')
        })
    });
    if is_module {
        return Ok(());
    }
    Err(format!(
        "not a congestion control of this kernel (loaded: {}; no module tcp_{name} in {dir})",
        loaded.trim()
    ))
}

/// A namespace other than the host's may only take a congestion control that the host's
/// `tcp_allowed_congestion_control` lists (else `EPERM`; reno is always allowed), and only the
/// host's namespace may change that list. Adds `want` where it is missing, said on stderr. The
/// list says which congestion controls unprivileged sockets and other namespaces may choose;
/// the host's default stays as it was. (Seen on a host whose list was `reno bbr`.)
fn allow(want: &str) -> Result<()> {
    let allowed = std::fs::read_to_string(ALLOWED).with_context(|| format!("read {ALLOWED}"))?;
    if let Some(list) = allowed_with(&allowed, want) {
        std::fs::write(ALLOWED, &list).with_context(|| format!("add {want} to {ALLOWED}"))?;
        eprintln!(
            "note: added {want} to {ALLOWED} (was: {}) so that the run's namespace may use it; \
             the host's default is unchanged",
            allowed.trim()
        );
    }
    Ok(())
}

/// The allowed list with `want` added, or `None` when it has it already.
fn allowed_with(allowed: &str, want: &str) -> Option<String> {
    let mut names: Vec<&str> = allowed.split_whitespace().collect();
    if names.contains(&want) {
        return None;
    }
    names.push(want);
    Some(names.join(" "))
}

/// Why a run stays in the host's namespace, decided before `unshare`.
#[derive(Debug, PartialEq, Eq)]
struct Stay {
    /// [`Network::namespace`]: `host`, and why.
    namespace: String,
    /// What to warn about; none when the user asked for [`HOST`].
    warning: Option<String>,
}

/// Whether the run must stay in the host's namespace: asked to, not root, or no `ip` to bring
/// the new namespace's loopback up (`ip` is asked for, and perhaps installed, only when the
/// rest allows a namespace).
fn stay_in_host(want: &str, root: bool, ip: impl FnOnce() -> Result<(), String>) -> Option<Stay> {
    let stay = |why: Option<&str>, warning: String| Stay {
        namespace: why.map_or(HOST.to_owned(), |w| format!("{HOST} ({w})")),
        warning: Some(warning),
    };
    if want == HOST {
        return Some(Stay {
            namespace: HOST.to_owned(),
            warning: None,
        });
    }
    if !root {
        let why = "an own namespace needs root";
        let warning = "a network namespace of the run's own needs root".to_owned();
        return Some(stay(Some(why), warning));
    }
    match ip() {
        Ok(()) => None,
        Err(why) => Some(stay(
            Some(&why),
            format!("the run's network namespace needs `ip` to bring its loopback up: {why}"),
        )),
    }
}

/// The congestion control of both ends of a fresh loopback connection.
fn loopback_congestion() -> io::Result<[String; 2]> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let client = TcpStream::connect(listener.local_addr()?)?;
    let (server, _) = listener.accept()?;
    let name = |s: &TcpStream| -> io::Result<String> {
        let raw = socket2::SockRef::from(s).tcp_congestion()?;
        let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
        Ok(String::from_utf8_lossy(&raw[..end]).into_owned())
    };
    Ok([name(&client)?, name(&server)?])
}

/// Moves the calling thread into a new network namespace with loopback up and `want` as its
/// congestion control; with [`HOST`], or where no namespace can be made (no root, no iproute2
/// to bring its loopback up, a sandbox; said on stderr and in the returned namespace), stays
/// where it is. Installs iproute2 first if it is missing and may be (the namespace has no
/// route out).
/// Call it from the main thread before any other thread or child process exists.
pub fn enter(want: &str, allow_install: bool) -> Result<Network> {
    let host = congestion().unwrap_or_else(|e| format!("(unreadable: {e})"));
    let stay = |why: &str| Network {
        namespace: why.to_owned(),
        congestion: host.clone(),
        host_congestion: host.clone(),
    };
    let ip = || crate::install::ensure_ip(allow_install);
    if let Some(Stay { namespace, warning }) = stay_in_host(want, crate::sys::is_root(), ip) {
        if let Some(w) = warning {
            eprintln!(
                "warning: {w}; measuring with the host's congestion control ({host}) instead \
                 of {want}"
            );
        }
        return Ok(stay(&namespace));
    }
    // Still in the host's namespace, the only one that may allow it to the run's.
    if let Err(e) = allow(want) {
        eprintln!(
            "warning: the run's namespace could not take {want} ({e:#}); measuring with the \
             host's congestion control ({host}) instead"
        );
        return Ok(stay(&format!("{HOST} ({want} not allowed)")));
    }
    // A sandbox may forbid new namespaces even to root (seccomp, no CAP_SYS_ADMIN).
    if let Err(e) = nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET) {
        eprintln!(
            "warning: cannot create the run's network namespace (unshare: {e}); measuring \
             with the host's congestion control ({host}) instead of {want}"
        );
        return Ok(stay(&format!("{HOST} (unshare: {e})")));
    }
    let status = Command::new("ip")
        .args(["link", "set", "lo", "up"])
        .status()
        .context("run `ip link set lo up` (iproute2) in the run's namespace")?;
    if !status.success() {
        bail!("`ip link set lo up` in the run's namespace: {status}");
    }
    set_congestion(want)?;
    Ok(Network {
        namespace: OWN.into(),
        congestion: want.to_owned(),
        host_congestion: host,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_ip() -> Result<(), String> {
        Err("ip is not installed (apt-get install iproute2)".into())
    }

    #[test]
    fn a_congestion_control_must_be_loaded_or_a_module_of_the_kernel() {
        let dep = "kernel/net/ipv4/tcp_bbr.ko.zst: \nkernel/net/ipv4/tcp_vegas.ko:\n";
        assert_eq!(available_in("cubic", "reno cubic\n", "", "/m"), Ok(()));
        assert_eq!(available_in("bbr", "reno cubic", dep, "/m"), Ok(()));
        assert_eq!(available_in("vegas", "reno cubic", dep, "/m"), Ok(()));
        let err = available_in("bogus", "reno cubic\n", dep, "/m").unwrap_err();
        assert_eq!(
            err,
            "not a congestion control of this kernel (loaded: reno cubic; no module tcp_bogus in /m)"
        );
        // A prefix of a module's name is not that module.
        assert!(available_in("bb", "reno", dep, "/m").is_err());
    }

    #[test]
    fn a_congestion_control_missing_from_the_allowed_list_is_added_to_it() {
        assert_eq!(
            allowed_with("reno bbr\n", "cubic").as_deref(),
            Some("reno bbr cubic")
        );
        assert_eq!(allowed_with("reno cubic bbr", "cubic"), None);
        assert_eq!(allowed_with("reno bbr", "reno"), None);
        // A name is a whole word of the list.
        assert_eq!(
            allowed_with("reno bbr2", "bbr").as_deref(),
            Some("reno bbr2 bbr")
        );
    }

    #[test]
    fn without_ip_the_run_stays_in_the_host_namespace_and_says_why() {
        let s = stay_in_host("cubic", true, no_ip).expect("must stay");
        assert_eq!(
            s.namespace,
            "host (ip is not installed (apt-get install iproute2))"
        );
        assert!(s.warning.unwrap().contains("needs `ip`"));
    }

    #[test]
    fn root_with_ip_makes_a_namespace() {
        assert_eq!(stay_in_host("cubic", true, || Ok(())), None);
    }

    #[test]
    fn ip_is_not_asked_for_when_no_namespace_is_made() {
        let asked = std::cell::Cell::new(false);
        let ip = || {
            asked.set(true);
            Ok(())
        };
        let s = stay_in_host("cubic", false, ip).expect("must stay");
        assert_eq!(s.namespace, "host (an own namespace needs root)");
        assert!(s.warning.is_some());
        let s = stay_in_host(HOST, true, || {
            asked.set(true);
            Ok(())
        })
        .expect("must stay");
        assert_eq!((s.namespace.as_str(), s.warning), (HOST, None));
        assert!(
            !asked.get(),
            "ip was looked for (and maybe installed) for nothing"
        );
    }
}
