//! `gembok-demo`: the whole sidecar story on one machine, in a few seconds.
//!
//! Generates a development PKI, starts an app stand-in, an inbound and an outbound
//! `gembok-proxy` (product-catalog in region us calling recommendation in region eu, so the
//! cross-region trust model is exercised), pushes verifiable traffic through the encrypted pair
//! in both directions at once, and prints what happened.
//!
//! `--hold` keeps everything running afterwards so /metrics can be browsed (Ctrl-C to stop);
//! `--mib N` sets the size of each transfer (default 256 MiB each way per connection). Ctrl-C or
//! SIGTERM at any point stops the sidecars and removes the PKI.

#![forbid(unsafe_code)]

use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::Parser;
use gembok_certs_dev::{DevPki, Existing, Options};
use gembok_tests::pki::CertDir;
use gembok_tests::proxy::Proxy;
use gembok_tests::traffic::{Exchange, ExchangeApp};
use tokio::signal::unix::{SignalKind, signal};

const STREAMS: u64 = 4;
const DEFAULT_MIB_EACH_WAY: u64 = 256;

/// Gembok's local demo: a development PKI, an app stand-in with an inbound and an outbound
/// gembok-proxy, verified traffic through the encrypted pair, and what the sidecars say about it.
#[derive(Debug, Parser)]
#[command(name = "gembok-demo", version)]
struct Args {
    /// Keep everything running afterwards (PKI, app, sidecars) so /metrics can be browsed; Ctrl-C
    /// stops.
    #[arg(long)]
    hold: bool,
    /// MiB sent each way on each of the 4 connections.
    #[arg(
        long = "mib",
        default_value_t = DEFAULT_MIB_EACH_WAY,
        value_parser = positive_mib
    )]
    mib_each_way: u64,
}

fn positive_mib(value: &str) -> Result<u64, String> {
    match value.parse() {
        Ok(mib) if mib > 0 => Ok(mib),
        _ => Err("needs a positive number of MiB".to_owned()),
    }
}

#[tokio::main]
async fn main() -> Result<ExitCode> {
    let args = match gembok_cliargs::read::<Args>("gembok-demo") {
        Ok((args, usage)) => match usage.finish(Some(args)) {
            Ok(args) => args,
            Err(exit) => return Ok(exit),
        },
        Err(exit) => return Ok(exit),
    };
    // Interrupted, the demo drops what it started: the sidecars are killed and the PKI's
    // directory (private keys) is removed, as on a normal exit.
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    tokio::select! {
        done = run(args) => done.map(|()| ExitCode::SUCCESS),
        _ = interrupt.recv() => {
            eprintln!("gembok-demo: interrupted; sidecars stopped, PKI removed");
            Ok(ExitCode::from(130))
        }
        _ = terminate.recv() => {
            eprintln!("gembok-demo: terminated; sidecars stopped, PKI removed");
            Ok(ExitCode::from(143))
        }
    }
}

async fn run(Args { hold, mib_each_way }: Args) -> Result<()> {
    let work = tempfile::tempdir()?;

    // 1. A development PKI: one root, an intermediate per region, a leaf per service.
    let pki = DevPki::generate(&Options::default()).context("generating the development PKI")?;
    pki.write(&work.path().join("pki"), Existing::Refuse)?;
    let server = pki
        .region("eu")
        .and_then(|r| r.service("recommendation"))
        .context("eu/recommendation")?;
    let client = pki
        .region("us")
        .and_then(|r| r.service("product-catalog"))
        .context("us/product-catalog")?;
    let (server_dir, client_dir) = (CertDir::new(server), CertDir::new(client));
    println!(
        "1. development PKI        {} (root + us/eu/asia intermediates; removed on exit)",
        work.path().join("pki").display()
    );

    // 2. The app and its two sidecars.
    let mut app = ExchangeApp::start().await;
    let inbound = Proxy::builder()
        .cert_dir(&server_dir)
        .inbound(
            app.addr,
            ",allow-san=spiffe://cluster.local/ns/ecommerce/sa/product-catalog",
        )
        .start();
    let outbound = Proxy::builder()
        .cert_dir(&client_dir)
        .outbound(
            &inbound.inbound[0].to_string(),
            ",server-name=recommendation.ecommerce.svc.cluster.local",
        )
        .start();
    inbound.ready().await;
    outbound.ready().await;
    println!("2. app stand-in           {}", app.addr);
    println!(
        "   inbound gembok-proxy   {} (eu/recommendation, mTLS, allows spiffe://cluster.local/ns/ecommerce/sa/product-catalog) -> app",
        inbound.inbound[0]
    );
    println!(
        "   outbound gembok-proxy  {} (us/product-catalog) -> {}",
        outbound.outbound[0], inbound.inbound[0]
    );

    // 3. Traffic: STREAMS connections, each `mib_each_way` up and down at the same time.
    let bytes = mib_each_way << 20;
    let exchanges: Vec<Exchange> = (0..STREAMS)
        .map(|id| Exchange::both_ways(id, bytes))
        .collect();
    let started = Instant::now();
    let entry = outbound.outbound[0];
    let tasks: Vec<_> = exchanges
        .iter()
        .copied()
        .map(|x| tokio::spawn(async move { x.run(entry).await }))
        .collect();
    for (x, task) in exchanges.iter().zip(tasks) {
        let got = match task.await? {
            Ok(got) => got,
            Err(e) => {
                // What the sidecars saw is what explains a failed stream: show it.
                eprintln!(
                    "--- outbound gembok-proxy log\n{}\n--- inbound gembok-proxy log\n{}",
                    outbound.logs(),
                    inbound.logs()
                );
                return Err(e).with_context(|| format!("stream {}", x.id));
            }
        };
        if got.received != x.expected_reply() {
            bail!("stream {}: the reply arrived corrupted", x.id);
        }
    }
    for _ in &exchanges {
        let at_app = app.received.recv().await.context("app stopped")??;
        if at_app.stream != exchanges[at_app.id as usize].expected_at_app() {
            bail!("stream {}: the upload arrived corrupted", at_app.id);
        }
    }
    let elapsed = started.elapsed();
    let total = 2 * STREAMS * bytes;
    println!(
        "3. traffic                {STREAMS} connections x {mib_each_way} MiB each way at once = {} MiB in {:.2} s: {:.2} Gbit/s through the pair, SHA-256 verified both ways",
        total >> 20,
        elapsed.as_secs_f64(),
        total as f64 * 8.0 / elapsed.as_secs_f64() / 1e9
    );

    // 4. What the sidecars say about it.
    let m = outbound.metrics().await;
    let negotiated = m
        .samples
        .iter()
        .find(|s| s.name == "gembok_tls_handshakes_total")
        .context("no handshake recorded")?;
    println!(
        "4. negotiated             {} {} with key exchange {} ({} handshakes)",
        negotiated.labels["version"],
        negotiated.labels["suite"],
        negotiated.labels["kx"],
        negotiated.value
    );
    let im = inbound.metrics().await;
    println!(
        "   bytes                  outbound app->peer {} / peer->app {}; inbound peer->app {} / app->peer {}",
        m.sum("gembok_bytes_total", &[("flow", "app_to_peer")]),
        m.sum("gembok_bytes_total", &[("flow", "peer_to_app")]),
        im.sum("gembok_bytes_total", &[("flow", "peer_to_app")]),
        im.sum("gembok_bytes_total", &[("flow", "app_to_peer")]),
    );
    println!(
        "   metrics                http://{}/metrics (outbound)  http://{}/metrics (inbound)",
        outbound.admin, inbound.admin
    );
    println!(
        "   health                 http://{}/ready  http://{}/live",
        inbound.admin, inbound.admin
    );

    if hold {
        println!("\nRunning until Ctrl-C.");
        std::future::pending::<()>().await;
    }
    Ok(())
}
