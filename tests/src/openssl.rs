//! The real `openssl` command-line tool as a TLS peer: certificate files it can read, an
//! `s_client` run, and an `s_server` that is listening before it is handed out.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use gembok_certs_dev::Leaf;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::process::{Child, Command};

use crate::pki::TestPki;

/// A leaf, its intermediate and the root written out as files.
pub struct Identity {
    dir: tempfile::TempDir,
}

impl Identity {
    /// `ca.crt` (root), `tls.crt` (leaf only), `chain.crt` (intermediate), `full.crt` (leaf and
    /// intermediate, for tools without a separate chain option), `tls.key`.
    pub fn new(pki: &TestPki, leaf: &Leaf) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        for (name, body) in [
            ("ca.crt", pki.root_pem()),
            ("tls.crt", leaf.cert_pem.as_str()),
            ("chain.crt", pki.intermediate.cert_pem()),
            ("full.crt", leaf.chain_pem.as_str()),
            ("tls.key", leaf.key_pem.as_str()),
        ] {
            std::fs::write(dir.path().join(name), body).expect("write PEM");
        }
        Self { dir }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `-CAfile`, `-cert`, `-cert_chain`, `-key` for s_client and s_server.
    pub fn args(&self) -> Vec<String> {
        let p = |n: &str| self.path(n).display().to_string();
        vec![
            "-CAfile".into(),
            p("ca.crt"),
            "-cert".into(),
            p("tls.crt"),
            "-cert_chain".into(),
            p("chain.crt"),
            "-key".into(),
            p("tls.key"),
        ]
    }
}

/// Runs `openssl s_client` against `addr`, sends `input`, keeps reading until the server
/// closes (`-ign_eof`), and returns what it printed.
pub async fn s_client(
    id: &Identity,
    addr: SocketAddr,
    server_name: &str,
    extra: &[&str],
    input: &[u8],
) -> Output {
    let mut child = Command::new("openssl")
        .args(["s_client", "-ign_eof", "-verify_return_error"])
        .args(["-connect", &addr.to_string(), "-servername", server_name])
        .args(id.args())
        .args(extra)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("run openssl s_client");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input)
        .await
        .expect("write to s_client");
    tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("s_client finished within 60 s")
        .expect("s_client output")
}

/// A running `openssl s_server`, killed on drop.
pub struct SServer {
    pub addr: SocketAddr,
    _child: Child,
}

impl SServer {
    /// `s_server -rev` (each line answered reversed) as the workload `server`, speaking only
    /// `version` (`-tls1_3`, `-tls1_2`) and requiring a client certificate that verifies.
    pub async fn reversing(pki: &TestPki, version: &str) -> Self {
        Self::reversing_as(&Identity::new(pki, &pki.workload("server")), &[version]).await
    }

    /// [`SServer::reversing`] as `id`, with `extra` flags (e.g. `-tls1_3 -ciphersuites ...`).
    pub async fn reversing_as(id: &Identity, extra: &[&str]) -> Self {
        let flags = [&["-rev", "-Verify", "2", "-verify_return_error"], extra].concat();
        Self::start(id, &flags).await
    }

    /// Starts `openssl s_server` with `extra` flags (e.g. `-rev -tls1_3 -Verify 2`) and waits
    /// until it accepts TCP connections. s_server cannot report a port it picked, so a free one
    /// is chosen and the start retried if it was taken meanwhile.
    pub async fn start(id: &Identity, extra: &[&str]) -> Self {
        for _ in 0..10 {
            let addr = crate::pair::unused_port();
            let mut child = Command::new("openssl")
                .args(["s_server", "-accept", &addr.to_string()])
                .args(id.args())
                .args(extra)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .kill_on_drop(true)
                .spawn()
                .expect("run openssl s_server");
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                if TcpStream::connect(addr).await.is_ok() {
                    return Self {
                        addr,
                        _child: child,
                    };
                }
                if child.try_wait().expect("try_wait").is_some() || Instant::now() > deadline {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            let _ = child.kill().await;
        }
        panic!("openssl s_server did not start");
    }
}
