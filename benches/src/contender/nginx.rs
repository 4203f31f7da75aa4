//! nginx with the stream module: `listen ... ssl` + `ssl_verify_client on` inbound,
//! `proxy_ssl on` + `proxy_ssl_certificate` + `proxy_ssl_verify on` outbound; TLS 1.3 only.
//! `proxy_half_close on` on both, or a client's FIN would close the whole connection (every
//! other contender forwards half-closes, and the sink scenario depends on it).

use std::path::Path;

use anyhow::Result;

use super::{Env, Launch, Ports, TLS13_SUITES, path, write_config};
use crate::pki::SERVER_NAME;
use crate::procs;

pub const STREAM_MODULE: &str = "/usr/lib/nginx/modules/ngx_stream_module.so";

fn main_block(workers: usize, nofile: u64, pid: &Path) -> String {
    format!(
        "load_module {STREAM_MODULE};
daemon off;
master_process on;
worker_processes {workers};
worker_rlimit_nofile {nofile};
pid {pid};
error_log stderr warn;
events {{ worker_connections {nofile}; }}
",
        pid = path(pid),
    )
}

pub(super) fn launches(
    env: &Env<'_>,
    ports: &Ports,
    dir: &Path,
) -> Result<(Launch, Option<Launch>)> {
    let server = &env.pki.server;
    let client = &env.pki.client;
    let inbound = format!(
        "{main}stream {{
    server {{
        listen {listen} ssl;
        ssl_protocols TLSv1.3;
        ssl_conf_command Ciphersuites {TLS13_SUITES};
        ssl_certificate {chain};
        ssl_certificate_key {key};
        ssl_client_certificate {ca};
        ssl_verify_client on;
        ssl_verify_depth 3;
        proxy_half_close on;
        proxy_pass {app};
    }}
}}
",
        main = main_block(env.workers, env.nofile, &dir.join("nginx-inbound.pid")),
        listen = ports.inbound,
        chain = path(&server.chain),
        key = path(&server.key),
        ca = path(&server.ca),
        app = env.app,
    );
    let mut servers = String::new();
    for (listen, upstream) in [
        (ports.out_main, ports.inbound),
        (ports.out_probe, env.probe),
        (ports.out_rogue, env.rogue),
    ] {
        servers.push_str(&format!(
            "    server {{
        listen {listen};
        proxy_pass {upstream};
        proxy_half_close on;
        proxy_ssl on;
        proxy_ssl_protocols TLSv1.3;
        proxy_ssl_conf_command Ciphersuites {TLS13_SUITES};
        proxy_ssl_certificate {chain};
        proxy_ssl_certificate_key {key};
        proxy_ssl_trusted_certificate {ca};
        proxy_ssl_verify on;
        proxy_ssl_verify_depth 3;
        proxy_ssl_name {SERVER_NAME};
        proxy_ssl_server_name on;
        proxy_ssl_session_reuse on;
    }}
",
            chain = path(&client.chain),
            key = path(&client.key),
            ca = path(&client.ca),
        ));
    }
    let outbound = format!(
        "{main}stream {{\n{servers}}}\n",
        main = main_block(env.workers, env.nofile, &dir.join("nginx-outbound.pid"))
    );
    let side = |name: &str, text: &str, listens| -> Result<Launch> {
        let cfg = write_config(dir, &format!("nginx-{name}.conf"), text)?;
        let mut cmd = procs::command("/usr/sbin/nginx");
        // -p: prefix for relative paths; -e: error log before the config is read.
        cmd.arg("-p")
            .arg(dir)
            .arg("-e")
            .arg("stderr")
            .arg("-c")
            .arg(cfg);
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
