//! Before a contender is measured, prove it really does what every contender must: TLS 1.3,
//! client certificates required and checked, server certificates checked. A contender that
//! fails a check is not measured, and the report says which check failed.
//!
//! Inbound side (a TLS client straight to it):
//! - the trusted client certificate gets an echo back, over TLS 1.3;
//! - no client certificate, a certificate from a foreign CA, or a TLS 1.2-only client: refused.
//!
//! Outbound side (a plaintext client to its three routes, see `contender/mod.rs`):
//! - `main` reaches the app through the inbound side (so it presented a certificate the inbound
//!   side accepted);
//! - `probe` reaches the harness's TLS server, which requires a client certificate from the
//!   run's CA and records the version, suite and key exchange the sidecar negotiated;
//! - `rogue` (right name, foreign CA): refused, and the rogue server never sees a byte.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Result;
use rustls::ServerConfig;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::client::{self, Target};
use crate::contender::Running;
use crate::pki::Pki;
use crate::server::ECHO;
use crate::tlsconf::{self, ClientOpts};

/// What the probe server saw of one handshake.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Negotiated {
    pub version: String,
    pub suite: String,
    pub group: String,
    pub client_cert: bool,
}

/// The harness's two TLS servers for the outbound checks.
pub struct Probes {
    pub probe: SocketAddr,
    pub rogue: SocketAddr,
    seen: Arc<Mutex<Vec<Negotiated>>>,
    rogue_bytes: Arc<AtomicU64>,
}

impl Probes {
    pub async fn start(pki: &Pki) -> Result<Probes> {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let rogue_bytes = Arc::new(AtomicU64::new(0));
        let probe = serve(tlsconf::probe_server_config(pki)?, Some(seen.clone()), None).await?;
        let rogue = serve(
            tlsconf::rogue_server_config(pki)?,
            None,
            Some(rogue_bytes.clone()),
        )
        .await?;
        Ok(Probes {
            probe,
            rogue,
            seen,
            rogue_bytes,
        })
    }
}

async fn serve(
    config: Arc<ServerConfig>,
    seen: Option<Arc<Mutex<Vec<Negotiated>>>>,
    bytes: Option<Arc<AtomicU64>>,
) -> Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let acceptor = TlsAcceptor::from(config);
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let acceptor = acceptor.clone();
            let seen = seen.clone();
            let bytes = bytes.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                if let Some(seen) = &seen {
                    let c = tls.get_ref().1;
                    seen.lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(Negotiated {
                            version: c
                                .protocol_version()
                                .map(|v| format!("{v:?}"))
                                .unwrap_or_default(),
                            suite: c
                                .negotiated_cipher_suite()
                                .map(|s| format!("{:?}", s.suite()))
                                .unwrap_or_default(),
                            group: c
                                .negotiated_key_exchange_group()
                                .map(|g| format!("{:?}", g.name()))
                                .unwrap_or_default(),
                            client_cert: c.peer_certificates().is_some_and(|p| !p.is_empty()),
                        });
                }
                let mut buf = vec![0u8; 16 * 1024];
                let mut first = true;
                loop {
                    let n = match tls.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    if let Some(b) = &bytes {
                        b.fetch_add(n as u64, Ordering::Relaxed);
                    }
                    // Drop the mode byte like the app server does.
                    let skip = usize::from(first && buf[0] == ECHO);
                    first = false;
                    if tls.write_all(&buf[skip..n]).await.is_err() {
                        break;
                    }
                }
                let _ = tls.shutdown().await;
            });
        }
    });
    Ok(addr)
}

/// One check's outcome.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Check {
    pub name: String,
    pub passed: bool,
    pub detail: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Verdict {
    pub checks: Vec<Check>,
    /// What the outbound side negotiated with the probe server.
    pub negotiated: Option<Negotiated>,
}

impl Verdict {
    pub fn passed(&self) -> bool {
        self.checks.iter().all(|c| c.passed)
    }

    pub fn failures(&self) -> String {
        self.checks
            .iter()
            .filter(|c| !c.passed)
            .map(|c| format!("{}: {}", c.name, c.detail))
            .collect::<Vec<_>>()
            .join("; ")
    }
}

const PAYLOAD: &[u8] = b"gembok-bench verification";

/// Ok(()) if an echo came back intact within the timeout, else why not.
pub async fn echo(target: &Target) -> Result<(), String> {
    let attempt = async {
        let mut s = client::connect(target).await.map_err(|e| e.to_string())?;
        let mut msg = vec![ECHO];
        msg.extend_from_slice(PAYLOAD);
        s.write_all(&msg).await.map_err(|e| e.to_string())?;
        let mut back = vec![0u8; PAYLOAD.len()];
        s.read_exact(&mut back).await.map_err(|e| e.to_string())?;
        if back != PAYLOAD {
            return Err("echo came back altered".to_owned());
        }
        Ok(())
    };
    tokio::time::timeout(Duration::from_secs(5), attempt)
        .await
        .unwrap_or_else(|_| Err("timed out".to_owned()))
}

pub async fn verify(c: &Running, pki: &Pki, probes: &Probes) -> Result<Verdict> {
    let mut checks = Vec::new();
    let inbound = |opts| -> Result<Target> {
        Ok(Target {
            addr: c.ports.inbound,
            tls: Some(tlsconf::client_config(pki, opts)?),
        })
    };
    let accepted = |name: &str, r: Result<(), String>| Check {
        name: name.to_owned(),
        passed: r.is_ok(),
        detail: r.err().unwrap_or_else(|| "echo intact".into()),
    };
    let refused = |name: &str, r: Result<(), String>| Check {
        name: name.to_owned(),
        passed: r.is_err(),
        detail: match r {
            Ok(()) => "ACCEPTED (must be refused)".into(),
            Err(e) => format!("refused ({e})"),
        },
    };

    checks.push(accepted(
        "inbound accepts the trusted client certificate over TLS 1.3",
        echo(&inbound(ClientOpts::FULL)?).await,
    ));
    checks.push(refused(
        "inbound refuses a client without a certificate",
        echo(&inbound(ClientOpts {
            cert: None,
            ..ClientOpts::FULL
        })?)
        .await,
    ));
    checks.push(refused(
        "inbound refuses a client certificate from a foreign CA",
        echo(&inbound(ClientOpts {
            cert: Some(false),
            ..ClientOpts::FULL
        })?)
        .await,
    ));
    checks.push(refused(
        "inbound refuses TLS 1.2",
        echo(&inbound(ClientOpts {
            tls12_only: true,
            ..ClientOpts::FULL
        })?)
        .await,
    ));

    let mut negotiated = None;
    if c.outbound.is_some() {
        checks.push(accepted(
            "outbound → inbound carries data (client certificate accepted)",
            echo(&Target::plain(c.ports.out_main)).await,
        ));
        let before = probes.seen.lock().unwrap_or_else(|e| e.into_inner()).len();
        let r = echo(&Target::plain(c.ports.out_probe)).await;
        let seen = probes
            .seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        negotiated = seen.get(before).cloned();
        let tls13 = negotiated
            .as_ref()
            .is_some_and(|n| n.version.contains("TLSv1_3") && n.client_cert);
        checks.push(Check {
            name: "outbound speaks TLS 1.3 and presents its certificate".into(),
            passed: r.is_ok() && tls13,
            detail: format!("{r:?} {negotiated:?}"),
        });
        let before = probes.rogue_bytes.load(Ordering::Relaxed);
        let r = echo(&Target::plain(c.ports.out_rogue)).await;
        let leaked = probes.rogue_bytes.load(Ordering::Relaxed) - before;
        checks.push(Check {
            name: "outbound refuses a server certificate from a foreign CA".into(),
            passed: r.is_err() && leaked == 0,
            detail: format!("{r:?}, {leaked} bytes reached the rogue server"),
        });
    }
    Ok(Verdict { checks, negotiated })
}
