//! What the webhook server (`serve`) keeps under its Landlock self-sandbox (`--sandbox`; the
//! mechanism is shared with the proxy: [`gembok_net::sandbox`]). It may read only beneath its
//! serving certificate's directories (as configured and as their symlinks resolve at start, so
//! the kubelet's `..data` swaps reload) and the shared-library directories, bind TCP only on its
//! two listeners' ports, and connect to no TCP port at all: it calls no Kubernetes API and no
//! other service. So a compromised injector could neither read nor write a file beyond its
//! certificate, nor reach the API server, a metadata service or any pod. `inject`, the offline
//! command, reads the file it is given and is not sandboxed.

use std::collections::BTreeSet;
use std::path::PathBuf;

use gembok_net::sandbox::{Allowed, LIBRARY_DIRS, directories_of};

use crate::config::ServeConfig;

/// What `serve` with `config` needs.
pub fn allowed(config: &ServeConfig) -> Allowed {
    let paths = config.cert.source().paths();
    let mut readable = directories_of(
        [Some(paths.cert), Some(paths.key), paths.ca]
            .into_iter()
            .flatten(),
    );
    readable.extend(LIBRARY_DIRS.iter().map(PathBuf::from));
    Allowed {
        readable,
        bind: BTreeSet::from([config.listen.port(), config.admin.port()]),
        connect: BTreeSet::new(),
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use gembok_net::sandbox::Mode;

    use super::*;
    use crate::config::{Cli, Config};

    fn serve(args: &[&str]) -> ServeConfig {
        let args = ["gembok-injector", "serve"].iter().chain(args);
        match Cli::try_parse_from(args).unwrap().validate().unwrap() {
            Config::Serve(config) => config,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn reads_its_certificate_binds_its_listeners_and_connects_nowhere() {
        let dir = serve(&["--cert-dir", "/etc/webhook/certs", "--admin", "[::]:9000"]);
        let rights = allowed(&dir);
        assert!(
            rights
                .readable
                .contains(&PathBuf::from("/etc/webhook/certs"))
        );
        assert!(rights.readable.contains(&PathBuf::from("/usr/lib")));
        assert!(
            !rights.readable.contains(&PathBuf::from("/etc")),
            "{rights:?}"
        );
        assert_eq!(rights.bind, BTreeSet::from([8443, 9000]));
        assert!(rights.connect.is_empty());

        assert_eq!(serve(&["--cert-dir", "c"]).sandbox, Mode::Auto);
        let err = Cli::try_parse_from(["gembok-injector", "serve", "--sandbox", "on"])
            .unwrap()
            .validate()
            .unwrap_err();
        assert!(
            err.iter()
                .any(|e| e == "--sandbox: `on` is not one of auto, off, require"),
            "{err:?}"
        );

        let files = serve(&["--cert", "/c/tls.crt", "--key", "/k/tls.key"]);
        let readable = allowed(&files).readable;
        for want in ["/c", "/k"] {
            assert!(readable.contains(&PathBuf::from(want)), "{readable:?}");
        }
    }
}
