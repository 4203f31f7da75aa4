//! gembok-proxy: configured by flags only (docs/contracts.md §1), ready when `/ready` says 200.

use super::{Env, Launch, Ports, ProviderKind};
use crate::pki::SERVER_NAME;
use crate::procs;

pub(super) fn launches(p: ProviderKind, env: &Env<'_>, ports: &Ports) -> (Launch, Option<Launch>) {
    let common = |cmd: &mut std::process::Command, admin| {
        cmd.arg("--admin")
            .arg(format!("{admin}"))
            .arg("--crypto-provider")
            .arg(p.provider().name())
            .arg("--log")
            .arg("warn")
            // Enough for the 10,000-connection memory step (each side holds two sockets each).
            .arg("--max-connections")
            .arg("30000")
            .arg("--workers")
            .arg(env.workers.to_string());
    };
    let mut inbound = procs::command(env.gembok_bin);
    inbound
        .arg("--cert-dir")
        .arg(&env.pki.server.dir)
        .arg("--inbound")
        .arg(format!("{}={}", ports.inbound, env.app));
    common(&mut inbound, ports.admin_in);

    let mut outbound = procs::command(env.gembok_bin);
    outbound.arg("--cert-dir").arg(&env.pki.client.dir);
    for (listen, upstream) in [
        (ports.out_main, ports.inbound),
        (ports.out_probe, env.probe),
        (ports.out_rogue, env.rogue),
    ] {
        outbound
            .arg("--outbound")
            .arg(format!("{listen}={upstream},server-name={SERVER_NAME}"));
    }
    common(&mut outbound, ports.admin_out);

    (
        Launch {
            name: "inbound".into(),
            command: inbound,
            listens: vec![ports.inbound],
            admin: Some(ports.admin_in),
        },
        Some(Launch {
            name: "outbound".into(),
            command: outbound,
            listens: vec![ports.out_main, ports.out_probe, ports.out_rogue],
            admin: Some(ports.admin_out),
        }),
    )
}
