//! hitch: TLS termination only (no outbound side), `client-verify = required`, TLS 1.3 only.

use std::path::Path;

use anyhow::Result;

use super::{Env, Launch, Ports, TLS13_SUITES, path, write_config};
use crate::procs;

pub(super) fn launch(env: &Env<'_>, ports: &Ports, dir: &Path) -> Result<Launch> {
    let server = &env.pki.server;
    let text = format!(
        "frontend = \"[{ip}]:{port}\"
backend = \"[{app_ip}]:{app_port}\"
pem-file = \"{pem}\"
tls-protos = TLSv1.3
ciphersuites = \"{suites}\"
client-verify = required
client-verify-ca = \"{ca}\"
workers = {workers}
daemon = off
syslog = off
log-level = 0
backlog = 4096
{user}",
        ip = ports.inbound.ip(),
        port = ports.inbound.port(),
        app_ip = env.app.ip(),
        app_port = env.app.port(),
        pem = path(&server.combined),
        ca = path(&server.ca),
        workers = env.workers,
        suites = TLS13_SUITES,
        // hitch refuses to run its workers as root; it reads the PEM files before dropping.
        user = if crate::sys::is_root() {
            "user = \"nobody\"\ngroup = \"nogroup\"\n"
        } else {
            ""
        },
    );
    let cfg = write_config(dir, "hitch.conf", &text)?;
    let mut cmd = procs::command("/usr/sbin/hitch");
    cmd.arg("--config").arg(cfg);
    Ok(Launch {
        name: "inbound".into(),
        command: cmd,
        listens: vec![ports.inbound],
        admin: None,
    })
}
