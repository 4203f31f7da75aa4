//! stunnel4: `client = yes` services outbound (certificate presented, chain and host checked),
//! `requireCert` inbound; TLS 1.3 minimum; TCP_NODELAY on both sockets like every other
//! contender.

use std::path::Path;

use anyhow::Result;

use super::{Env, Launch, Ports, TLS13_SUITES, path, write_config};
use crate::pki::SERVER_NAME;
use crate::procs;

const GLOBAL: &str = "foreground = yes
pid =
syslog = no
debug = 3
";

const SERVICE_COMMON: &str = "socket = l:TCP_NODELAY=1
socket = r:TCP_NODELAY=1
sslVersionMin = TLSv1.3
verifyChain = yes
ciphersuites = {suites}
";

pub(super) fn launches(
    env: &Env<'_>,
    ports: &Ports,
    dir: &Path,
) -> Result<(Launch, Option<Launch>)> {
    let service_common = SERVICE_COMMON.replace("{suites}", TLS13_SUITES);
    let server = &env.pki.server;
    let client = &env.pki.client;
    let inbound = format!(
        "{GLOBAL}[in_main]
accept = {listen}
connect = {app}
cert = {chain}
key = {key}
CAfile = {ca}
requireCert = yes
{service_common}",
        listen = ports.inbound,
        app = env.app,
        chain = path(&server.chain),
        key = path(&server.key),
        ca = path(&server.ca),
    );
    let mut outbound = GLOBAL.to_owned();
    for (name, listen, upstream) in [
        ("main", ports.out_main, ports.inbound),
        ("probe", ports.out_probe, env.probe),
        ("rogue", ports.out_rogue, env.rogue),
    ] {
        outbound.push_str(&format!(
            "[out_{name}]
client = yes
accept = {listen}
connect = {upstream}
cert = {chain}
key = {key}
CAfile = {ca}
checkHost = {SERVER_NAME}
sni = {SERVER_NAME}
{service_common}",
            chain = path(&client.chain),
            key = path(&client.key),
            ca = path(&client.ca),
        ));
    }
    let side = |name: &str, text: &str, listens| -> Result<Launch> {
        let cfg = write_config(dir, &format!("stunnel-{name}.conf"), text)?;
        let mut cmd = procs::command("/usr/bin/stunnel4");
        cmd.arg(cfg);
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
