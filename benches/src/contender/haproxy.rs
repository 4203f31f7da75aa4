//! haproxy (TCP mode): `bind ... ssl crt ... verify required` inbound, `server ... ssl crt ...
//! verify required verifyhost` outbound; TLS 1.3 only on both.

use std::path::Path;

use anyhow::Result;

use super::{Env, Launch, Ports, TLS13_SUITES, path, write_config};
use crate::pki::SERVER_NAME;
use crate::procs;

const GLOBAL: &str = "global
    maxconn {maxconn}
    nbthread {workers}
    ssl-default-bind-options ssl-min-ver TLSv1.3
    ssl-default-server-options ssl-min-ver TLSv1.3
    ssl-default-bind-ciphersuites {suites}
    ssl-default-server-ciphersuites {suites}
defaults
    mode tcp
    timeout connect 5s
    timeout client 1h
    timeout server 1h
";

pub(super) fn launches(
    env: &Env<'_>,
    ports: &Ports,
    dir: &Path,
) -> Result<(Launch, Option<Launch>)> {
    // haproxy refuses to start if maxconn needs more descriptors than the limit allows
    // (two per proxied connection).
    let global = GLOBAL
        .replace("{workers}", &env.workers.to_string())
        .replace(
            "{maxconn}",
            &(env.nofile.saturating_sub(200) / 2).to_string(),
        )
        .replace("{suites}", TLS13_SUITES);
    let server = &env.pki.server;
    let client = &env.pki.client;
    let inbound = format!(
        "{global}frontend in_main
    bind {listen} ssl crt {crt} ca-file {ca} verify required
    default_backend app
backend app
    server app {app}
",
        listen = ports.inbound,
        crt = path(&server.combined),
        ca = path(&server.ca),
        app = env.app,
    );
    let mut outbound = global.clone();
    for (name, listen, upstream) in [
        ("main", ports.out_main, ports.inbound),
        ("probe", ports.out_probe, env.probe),
        ("rogue", ports.out_rogue, env.rogue),
    ] {
        outbound.push_str(&format!(
            "frontend out_{name}
    bind {listen}
    default_backend up_{name}
backend up_{name}
    server peer {upstream} ssl crt {crt} ca-file {ca} verify required verifyhost {SERVER_NAME} sni str({SERVER_NAME})
",
            crt = path(&client.combined),
            ca = path(&client.ca),
        ));
    }
    let side = |name: &str, text: &str, listens| -> Result<Launch> {
        let cfg = write_config(dir, &format!("haproxy-{name}.cfg"), text)?;
        let mut cmd = procs::command("/usr/sbin/haproxy");
        // -db: foreground, no daemon; -f: this config only.
        cmd.arg("-db").arg("-f").arg(cfg);
        Ok(Launch {
            name: name.into(),
            command: cmd,
            listens,
            admin: None,
        })
    };
    Ok((
        side("inbound", &inbound, vec![ports.inbound])?,
        Some(side(
            "outbound",
            &outbound,
            vec![ports.out_main, ports.out_probe, ports.out_rogue],
        )?),
    ))
}
