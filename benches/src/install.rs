//! Getting the contenders: a missing Debian package is installed with apt-get when the harness
//! runs as root; otherwise (or when apt fails) that contender is skipped and the report says why.

use std::path::Path;
use std::process::Command;

use crate::contender::Kind;

/// For each wanted kind: available, or the reason it is skipped.
pub fn ensure(kinds: &[Kind], allow_install: bool) -> Vec<(Kind, Result<(), String>)> {
    let missing: Vec<&str> = kinds
        .iter()
        .filter(|k| !present(**k))
        .flat_map(|k| k.packages().iter().copied())
        .collect();
    let mut apt_error = None;
    if !missing.is_empty() {
        if !allow_install {
            apt_error = Some("not installed and --no-install given".to_owned());
        } else if !crate::sys::is_root() {
            apt_error = Some(format!(
                "not installed, and installing needs root (apt-get install {})",
                missing.join(" ")
            ));
        } else {
            eprintln!("installing {} with apt-get", missing.join(" "));
            apt_error = apt_install(&missing).err();
        }
    }
    kinds
        .iter()
        .map(|k| {
            let r = if present(*k) {
                Ok(())
            } else {
                Err(apt_error.clone().unwrap_or_else(|| {
                    format!("{} still missing after install", k.packages().join(" "))
                }))
            };
            (*k, r)
        })
        .collect()
}

fn present(kind: Kind) -> bool {
    kind.required_files().iter().all(|f| Path::new(f).exists())
}

/// `apt-get install`, running `apt-get update` first only if the install fails.
pub fn apt_install(packages: &[&str]) -> Result<(), String> {
    let install = || {
        Command::new("apt-get")
            .args(["install", "-y", "-q", "--no-install-recommends"])
            .args(packages)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
    };
    match install() {
        Ok(s) if s.success() => return Ok(()),
        Err(e) => return Err(format!("apt-get: {e}")),
        Ok(_) => {}
    }
    let _ = Command::new("apt-get").args(["update", "-q"]).status();
    match install() {
        Ok(s) if s.success() => Ok(()),
        Ok(s) => Err(format!(
            "apt-get install {} failed ({s})",
            packages.join(" ")
        )),
        Err(e) => Err(format!("apt-get: {e}")),
    }
}

/// Installs strace if missing (root only); returns whether it is available.
pub fn ensure_strace(allow_install: bool) -> Result<(), String> {
    ensure_tool("strace", "strace", allow_install)
}

/// Installs perf (Debian's linux-perf) if missing (root only); returns whether it is available.
pub fn ensure_perf(allow_install: bool) -> Result<(), String> {
    ensure_tool("perf", "linux-perf", allow_install)
}

/// Installs iproute2 if `ip` is missing (root only): the run's network namespace needs it to
/// bring its loopback up.
pub fn ensure_ip(allow_install: bool) -> Result<(), String> {
    ensure_tool("ip", "iproute2", allow_install)
}

fn ensure_tool(tool: &str, package: &str, allow_install: bool) -> Result<(), String> {
    let have = || {
        ["/usr/bin", "/usr/sbin", "/bin", "/sbin"]
            .iter()
            .any(|dir| Path::new(dir).join(tool).exists())
    };
    if have() {
        return Ok(());
    }
    if !allow_install || !crate::sys::is_root() {
        return Err(format!(
            "{tool} is not installed (apt-get install {package})"
        ));
    }
    apt_install(&[package])?;
    if have() {
        Ok(())
    } else {
        Err(format!("{tool} still missing after installing {package}"))
    }
}
