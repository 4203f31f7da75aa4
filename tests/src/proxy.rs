//! A running `gembok-proxy` process.
//!
//! Listeners are given port 0; the harness learns the real addresses from the proxy's JSON
//! start-up log (`"listening"` per listener, then `"gembok-proxy started"` with the admin address),
//! so tests never race for ports.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::admin::{self, Metrics};
use crate::pki::CertDir;

/// Arguments for a proxy; build with the methods, then [`ProxyBuilder::start`].
#[derive(Debug, Clone, Default)]
pub struct ProxyBuilder {
    args: Vec<String>,
    env: Vec<(String, String)>,
    /// A program and its arguments that start the proxy (its path and arguments follow):
    /// a shell setting a limit, a new PID namespace.
    launcher: Vec<String>,
    /// Another build of the proxy (the FIPS one) instead of the workspace's.
    program: Option<std::path::PathBuf>,
}

impl ProxyBuilder {
    pub fn cert_dir(self, dir: &CertDir) -> Self {
        self.args(["--cert-dir", &dir.arg()])
    }

    /// `--inbound 127.0.0.1:0=127.0.0.1:<app>` plus `options` (e.g. `,allow-san=...`).
    pub fn inbound(self, app: SocketAddr, options: &str) -> Self {
        self.args(["--inbound", &format!("127.0.0.1:0={app}{options}")])
    }

    /// `--outbound 127.0.0.1:0=<upstream>` plus `options` (e.g. `,server-name=...`).
    pub fn outbound(self, upstream: &str, options: &str) -> Self {
        self.args(["--outbound", &format!("127.0.0.1:0={upstream}{options}")])
    }

    pub fn args<S: AsRef<str>>(mut self, args: impl IntoIterator<Item = S>) -> Self {
        self.args
            .extend(args.into_iter().map(|a| a.as_ref().to_owned()));
        self
    }

    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_owned(), value.to_owned()));
        self
    }

    /// Runs the proxy with at most `n` open file descriptors (soft and hard limit).
    pub fn fd_limit(self, n: u32) -> Self {
        self.ulimit(&format!("-n {n}"))
    }

    /// Starts the proxy with a soft open-file limit of `n`, the hard limit left as it is.
    pub fn soft_fd_limit(self, n: u32) -> Self {
        self.ulimit(&format!("-S -n {n}"))
    }

    /// RLIMIT_NOFILE for the process: the shell's `ulimit` options (`-n 40`, `-S -n 256`).
    fn ulimit(self, options: &str) -> Self {
        self.launcher(&[
            "sh",
            "-c",
            &format!("ulimit {options} && exec \"$0\" \"$@\""),
        ])
    }

    /// Starts the proxy through `argv`, which is given the proxy's path and arguments after its
    /// own (`sh -c SCRIPT` sees them as `$0 "$@"`). [`Proxy::pid`] is then the launcher's.
    pub fn launcher(mut self, argv: &[&str]) -> Self {
        self.launcher = argv.iter().map(|a| (*a).to_owned()).collect();
        self
    }

    /// Runs `program` (another build of `gembok-proxy`) instead of the workspace's binary.
    pub fn program(mut self, program: &std::path::Path) -> Self {
        self.program = Some(program.to_owned());
        self
    }

    /// Starts the proxy and waits for its start-up log line (not for readiness).
    pub fn start(self) -> Proxy {
        Proxy::spawn(self)
    }
}

/// A `gembok-proxy` child process, killed on drop.
pub struct Proxy {
    child: Child,
    pub admin: SocketAddr,
    /// Bound inbound listeners, in the order given.
    pub inbound: Vec<SocketAddr>,
    /// Bound outbound listeners, in the order given.
    pub outbound: Vec<SocketAddr>,
    logs: Arc<Mutex<Vec<String>>>,
    /// The thread that collects `logs`; it ends at the end of the process's stderr.
    reader: std::thread::JoinHandle<()>,
}

impl Proxy {
    /// Logs in JSON (the harness reads them); `--admin 127.0.0.1:0` and `--log info` unless
    /// the caller sets them.
    pub fn builder() -> ProxyBuilder {
        ProxyBuilder::default()
    }

    fn spawn(b: ProxyBuilder) -> Proxy {
        let proxy = b.program.clone().unwrap_or_else(crate::bins::proxy);
        let mut cmd = match b.launcher.split_first() {
            None => Command::new(proxy),
            Some((program, args)) => {
                let mut launcher = Command::new(program);
                launcher.args(args).arg(proxy);
                launcher
            }
        };
        let given = |flag: &str, var: &str| {
            b.args.iter().any(|a| a == flag) || b.env.iter().any(|(k, _)| k == var)
        };
        for (flag, var, default) in [
            ("--admin", "GEMBOK_ADMIN", "127.0.0.1:0"),
            ("--log", "GEMBOK_LOG", "info"),
            ("--log-format", "GEMBOK_LOG_FORMAT", "json"),
        ] {
            if !given(flag, var) {
                cmd.args([flag, default]);
            }
        }
        cmd.args(&b.args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in &b.env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn gembok-proxy");
        let stderr = child.stderr.take().expect("piped stderr");
        let logs = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel::<Value>();
        let sink = logs.clone();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str::<Value>(&line) {
                    let _ = tx.send(v);
                }
                sink.lock().unwrap().push(line);
            }
        });

        let deadline = Instant::now() + Duration::from_secs(20);
        let (mut inbound, mut outbound) = (Vec::new(), Vec::new());
        let admin = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left.min(Duration::from_millis(200))) {
                Ok(event) => match event["message"].as_str() {
                    Some("listening") => {
                        let addr: SocketAddr = event["listen"]
                            .as_str()
                            .expect("listen field")
                            .parse()
                            .expect("listen addr");
                        match event["direction"].as_str() {
                            Some("inbound") => inbound.push(addr),
                            Some("outbound") => outbound.push(addr),
                            other => panic!("unexpected direction {other:?}"),
                        }
                    }
                    Some("gembok-proxy started") => {
                        break event["admin"]
                            .as_str()
                            .expect("admin field")
                            .parse()
                            .expect("admin addr");
                    }
                    _ => {}
                },
                Err(_) => {
                    if let Ok(Some(status)) = child.try_wait() {
                        std::thread::sleep(Duration::from_millis(50)); // let the reader finish
                        panic!(
                            "gembok-proxy exited with {status} before starting:\n{}",
                            logs.lock().unwrap().join("\n")
                        );
                    }
                    assert!(
                        Instant::now() < deadline,
                        "gembok-proxy did not start within 20 s:\n{}",
                        logs.lock().unwrap().join("\n")
                    );
                }
            }
        };
        Proxy {
            child,
            admin,
            inbound,
            outbound,
            logs,
            reader,
        }
    }

    /// Polls `/ready` until it answers 200.
    pub async fn ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match admin::get(self.admin, "/ready").await {
                Ok((200, _)) => return,
                Ok(_) | Err(_) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(20)).await
                }
                other => panic!("proxy not ready after 10 s: {other:?}\n{}", self.logs()),
            }
        }
    }

    pub async fn get(&self, path: &str) -> (u16, String) {
        admin::get(self.admin, path).await.expect("admin request")
    }

    pub async fn metrics(&self) -> Metrics {
        let (status, body) = self.get("/metrics").await;
        assert_eq!(status, 200, "{body}");
        Metrics::parse(&body)
    }

    /// Polls `/metrics` until the sum of `name` over samples matching `labels` equals `want`
    /// (5 s at most); returns the scrape that showed it.
    pub async fn wait_metric(&self, name: &str, labels: &[(&str, &str)], want: f64) -> Metrics {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let metrics = self.metrics().await;
            let got = metrics.sum(name, labels);
            if got == want {
                return metrics;
            }
            assert!(
                Instant::now() < deadline,
                "{name}{labels:?} is {got}, want {want}; every sample:\n{}\nlogs:\n{}",
                metrics.show(name),
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Sends `signal` (e.g. `libc::SIGTERM`) to the proxy.
    pub fn signal(&self, signal: i32) {
        let rc = send_signal(self.pid(), signal);
        assert_eq!(rc, 0, "kill -{signal} {}", self.pid());
    }

    /// Waits for the process to exit and for everything it logged to be in [`Proxy::logs`].
    pub async fn wait_exit(&mut self, within: Duration) -> ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait")
                && self.reader.is_finished()
            {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "gembok-proxy still running, or its log still open, after {within:?}:\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until a log line contains `needle`.
    pub async fn wait_log(&self, needle: &str, within: Duration) {
        let deadline = Instant::now() + within;
        while !self.logs().contains(needle) {
            assert!(
                Instant::now() < deadline,
                "no log line with {needle:?} after {within:?}:\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Everything the proxy logged so far.
    pub fn logs(&self) -> String {
        self.logs.lock().unwrap().join("\n")
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sends a signal with the `kill` command, which keeps this crate free of `unsafe`; its exit
/// code.
pub fn send_signal(pid: i32, signal: i32) -> i32 {
    let status = Command::new("kill")
        .args([format!("-{signal}"), pid.to_string()])
        .status()
        .expect("run kill");
    status.code().unwrap_or(-1)
}
