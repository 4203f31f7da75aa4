//! What the proxy keeps under its Landlock self-sandbox (`--sandbox`; the mechanism is shared
//! with the injector: [`gembok_net::sandbox`]). It may:
//! - read beneath its certificate files' and allow-san files' directories as configured and the
//!   real directories their symlinks resolve to at start (reloads keep working: the kubelet's
//!   `..data` swaps stay inside the configured directory; a directory that is itself a symlink
//!   also gives the directory its target lies in, so it can be re-pointed), `/etc` (name resolution reads
//!   `/etc/hosts`, `/etc/resolv.conf` and `/etc/nsswitch.conf` on every lookup) and the
//!   shared-library directories (glibc may load an NSS module), and with `--exit-with-app`
//!   `/proc` (to see the app's processes; other users' entries stay closed to it, as ever);
//!   write, create, remove or execute nothing;
//! - bind TCP only on its listeners' ports, and connect only to its routes' ports: the apps',
//!   the peers', and 53 when a peer is named, as a resolver retries a truncated answer over TCP.
//!
//! So a compromised proxy cannot read the ServiceAccount token, the app's files or (without
//! `--exit-with-app`) other processes' `/proc` entries, drop or run a file, open another listener, or reach the
//! Kubernetes API, a metadata service or any port it has no route to.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::PathBuf;

pub use gembok_net::sandbox::{Achieved, Allowed, INFO_HELP, Mode, SandboxError, enforce};
use gembok_net::sandbox::{LIBRARY_DIRS, directories_of};

use crate::config::Config;

/// The port DNS answers too large for UDP are asked for again on (over TCP).
const DNS_PORT: u16 = 53;

/// What `config` needs: its files, its listeners, its routes.
pub fn allowed(config: &Config) -> Allowed {
    let bind = (config.inbound.iter().map(|r| r.listen.port()))
        .chain(config.outbound.iter().map(|r| r.listen.port()))
        .chain([config.admin.port()])
        .collect();
    let named = |host: &str| host.trim_matches(['[', ']']).parse::<IpAddr>().is_err();
    let connect: BTreeSet<u16> = (config.inbound.iter().map(|r| r.target.port()))
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
        .chain(config.allow_san_files())
        .chain(config.crl_files.iter().cloned());
    let mut dirs = directories_of(files);
    dirs.push(PathBuf::from("/etc"));
    if config.exit_with_app {
        dirs.push(PathBuf::from(crate::app_exit::PROC));
    }
    dirs.extend(LIBRARY_DIRS.iter().map(PathBuf::from));
    dirs.sort();
    dirs.dedup();
    dirs
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

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
        assert!(!dirs.iter().any(|d| d.starts_with("/proc")), "{dirs:?}");
    }

    #[test]
    fn reads_proc_only_to_watch_the_app() {
        let route = ["--inbound", "0.0.0.0:8443=127.0.0.1:8080"];
        assert!(!readable(&config(&route)).contains(&PathBuf::from("/proc")));
        let dirs = readable(&config(&[&route[..], &["--exit-with-app"]].concat()));
        assert!(dirs.contains(&PathBuf::from("/proc")), "{dirs:?}");
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
}
