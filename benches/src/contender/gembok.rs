//! gembok-proxy: configured by flags only (docs/contracts.md §1), ready when `/ready` says 200.

use super::{Env, Launch, Ports, ProviderKind};
use crate::pki::SERVER_NAME;
use crate::procs;

pub(super) fn launches(
    p: ProviderKind,
    bin: &std::path::Path,
    extra: &[String],
    env: &Env<'_>,
    ports: &Ports,
) -> (Launch, Option<Launch>) {
    let defaults = [
        ("--crypto-provider", p.provider().name().to_owned()),
        ("--log", "warn".to_owned()),
        // Enough for the 10,000-connection memory step (each side holds two sockets each).
        ("--max-connections", "30000".to_owned()),
        ("--workers", env.workers.to_string()),
    ];
    let common = |cmd: &mut std::process::Command, admin| {
        cmd.arg("--admin").arg(format!("{admin}"));
        // A variant's own flags replace these defaults (clap refuses a flag given twice).
        for (flag, value) in &defaults {
            let overridden = extra
                .iter()
                .any(|e| e == flag || e.starts_with(&format!("{flag}=")));
            if !overridden {
                cmd.arg(flag).arg(value);
            }
        }
        cmd.args(extra);
    };
    let mut inbound = procs::command(bin);
    inbound
        .arg("--cert-dir")
        .arg(&env.pki.server.dir)
        .arg("--inbound")
        .arg(format!("{}={}", ports.inbound, env.app));
    common(&mut inbound, ports.admin_in);

    let mut outbound = procs::command(bin);
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

/// How many connections each gembok side carried on each data path (`gembok_data_path_total`
/// from both admin endpoints, summed by `path`: ktls, records, userspace), for the report's
/// contender table: `/proc/net/tls_stat` only tells kernel from user space.
pub fn data_paths(ports: &Ports) -> std::collections::BTreeMap<String, u64> {
    let mut paths = std::collections::BTreeMap::new();
    for admin in [ports.admin_out, ports.admin_in] {
        let Ok(text) = super::http_get(admin, "/metrics") else {
            continue;
        };
        for line in text.lines() {
            let Some(rest) = line.strip_prefix("gembok_data_path_total{") else {
                continue;
            };
            let path = rest
                .split("path=\"")
                .nth(1)
                .and_then(|p| p.split('"').next());
            let value = rest.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok());
            if let (Some(path), Some(value)) = (path, value) {
                *paths.entry(path.to_owned()).or_insert(0) += value as u64;
            }
        }
    }
    paths
}
