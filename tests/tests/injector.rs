//! Black-box tests of `gembok-injector serve` and `inject`: the real binary, real TLS (rustls
//! client and curl), certificates generated here with rcgen, readiness by polling `/ready`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, anyhow, bail, ensure};
use rcgen::{CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};
use serde_json::{Value, json};

// === the binary ===

/// The built `gembok-injector` (the test command builds the workspace's binaries first).
fn binary() -> &'static Path {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| gembok_tests::bins::path("gembok-injector"))
}

// === certificates ===

struct Pki {
    ca_pem: String,
    ca_der: CertificateDer<'static>,
    issuer: Issuer<'static, KeyPair>,
}

impl Pki {
    fn new() -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, "gembok-injector test CA");
        params.is_ca = IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        Self {
            ca_pem: cert.pem(),
            ca_der: cert.der().clone(),
            issuer: Issuer::new(params, key),
        }
    }

    /// A serving certificate for localhost/127.0.0.1; returns (chain PEM, key PEM, leaf DER).
    fn leaf(&self) -> (String, String, Vec<u8>) {
        let mut params =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, "gembok-injector.gembok-system.svc");
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem(), cert.der().to_vec())
    }

    fn client_config(&self) -> Arc<ClientConfig> {
        let mut roots = RootCertStore::empty();
        roots.add(self.ca_der.clone()).unwrap();
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        Arc::new(config)
    }
}

/// A directory laid out like a mounted Secret: `..data -> ..<gen>/`, `tls.crt -> ..data/tls.crt`.
/// [`SecretDir::swap`] replaces the contents the way the kubelet's AtomicWriter does.
struct SecretDir {
    root: PathBuf,
    generation: usize,
}

impl SecretDir {
    fn new(root: &Path) -> Self {
        Self {
            root: root.to_owned(),
            generation: 0,
        }
    }

    fn swap(&mut self, cert: &str, key: &str) -> Result<()> {
        self.generation += 1;
        let name = format!("..2026_01_01_00_00_00.{:04}", self.generation);
        let dir = self.root.join(&name);
        std::fs::create_dir(&dir)?;
        std::fs::write(dir.join("tls.crt"), cert)?;
        std::fs::write(dir.join("tls.key"), key)?;
        let data = self.root.join("..data");
        let previous = std::fs::read_link(&data).ok();
        let tmp = self.root.join("..data_tmp");
        std::os::unix::fs::symlink(&name, &tmp)?;
        std::fs::rename(&tmp, &data)?;
        for file in ["tls.crt", "tls.key"] {
            let link = self.root.join(file);
            if std::fs::symlink_metadata(&link).is_err() {
                std::os::unix::fs::symlink(Path::new("..data").join(file), &link)?;
            }
        }
        if let Some(previous) = previous {
            std::fs::remove_dir_all(self.root.join(previous))?;
        }
        Ok(())
    }
}

// === the running webhook ===

struct Webhook {
    child: Child,
    admin: SocketAddr,
    logs: Arc<Mutex<Vec<String>>>,
    _dir: tempfile::TempDir,
    secret: SecretDir,
    pki: Pki,
    /// Talks to the webhook port (`client.https`).
    client: Client,
}

impl Webhook {
    /// Starts `serve` on ephemeral ports with a freshly issued certificate and waits until the
    /// addresses are logged.
    fn start(extra: &[&str]) -> Result<Self> {
        Self::start_env(extra, &[])
    }

    /// [`Webhook::start`] with `GEMBOK_INJECTOR_*` variables set.
    fn start_env(extra: &[&str], env: &[(&str, &str)]) -> Result<Self> {
        let pki = Pki::new();
        let dir = tempfile::tempdir()?;
        let mut secret = SecretDir::new(dir.path());
        let (cert, key, _) = pki.leaf();
        secret.swap(&cert, &key)?;
        Self::start_with(pki, dir, secret, extra, env)
    }

    fn start_with(
        pki: Pki,
        dir: tempfile::TempDir,
        secret: SecretDir,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Result<Self> {
        Self::start_on(pki, dir, secret, ("127.0.0.1:0", "127.0.0.1:0"), extra, env)
    }

    /// [`Webhook::start_with`] on the given `--listen` and `--admin` addresses.
    fn start_on(
        pki: Pki,
        dir: tempfile::TempDir,
        secret: SecretDir,
        (listen, admin): (&str, &str),
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Result<Self> {
        // No shutdown delay unless the test sets one (a flag may be given once).
        let delay = match extra.contains(&"--shutdown-delay") {
            true => &[][..],
            false => &["--shutdown-delay", "0s"][..],
        };
        let mut child = Command::new(binary())
            .args(["serve", "--listen", listen, "--admin", admin])
            .arg("--cert-dir")
            .arg(dir.path())
            .args([
                "--log-format",
                "json",
                "--proxy-image",
                "ghcr.io/gembok/gembok-proxy:test",
            ])
            .args(delay)
            .args(extra)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()?;
        let logs = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let stderr = child.stderr.take().context("stderr")?;
        let sink = logs.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str::<Value>(&line)
                    && v["fields"]["message"] == "listening"
                {
                    let _ = tx.send((v["fields"]["https"].clone(), v["fields"]["admin"].clone()));
                }
                sink.lock().unwrap().push(line);
            }
        });
        let (https, admin) = match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(addrs) => addrs,
            Err(_) => {
                let _ = child.kill();
                bail!("no 'listening' log line; logs: {:?}", logs.lock().unwrap());
            }
        };
        let parse = |v: Value| -> Result<SocketAddr> {
            v.as_str()
                .context("address field")?
                .parse()
                .context("address")
        };
        let client = Client {
            https: parse(https)?,
            config: pki.client_config(),
        };
        Ok(Self {
            child,
            admin: parse(admin)?,
            logs,
            _dir: dir,
            secret,
            pki,
            client,
        })
    }

    fn wait_ready(&self) -> Result<()> {
        poll(Duration::from_secs(20), || {
            Ok(admin_get(self.admin, "/ready")?.0 == 200)
        })
        .context("webhook never became ready")
    }

    /// [`Client::request`] to this webhook.
    fn request(&self, raw_head: &str, body: &[u8]) -> Result<(u16, String, Vec<u8>, Vec<u8>)> {
        self.client.request(raw_head, body)
    }

    /// [`Client::post`] to this webhook.
    fn post(&self, path: &str, content_type: &str, body: &[u8]) -> Result<(u16, String, Vec<u8>)> {
        self.client.post(path, content_type, body)
    }

    /// [`Client::review`] by this webhook.
    fn review(&self, review: &Value) -> Result<Value> {
        self.client.review(review)
    }

    /// curl (an independent TLS 1.3 + HTTP/1.1 client) POSTing `body` as JSON to `path`,
    /// trusting this webhook's CA, with `extra` arguments; what it printed and exited with.
    fn curl_post(&self, path: &str, body: &[u8], extra: &[&str]) -> Result<std::process::Output> {
        let dir = tempfile::tempdir()?;
        let ca = dir.path().join("ca.crt");
        std::fs::write(&ca, &self.pki.ca_pem)?;
        let body_file = dir.path().join("body.json");
        std::fs::write(&body_file, body)?;
        Ok(Command::new("curl")
            .args(["--silent", "--show-error", "--tlsv1.3", "--cacert"])
            .arg(&ca)
            .args(["-H", "Content-Type: application/json", "--data-binary"])
            .arg(format!("@{}", body_file.display()))
            .args(extra)
            .arg(format!(
                "https://localhost:{}{path}",
                self.client.https.port()
            ))
            .output()?)
    }

    fn sigterm(&self) {
        assert!(kill(self.child.id(), "-TERM"), "kill -TERM failed");
    }

    fn child_alive(&self) -> bool {
        kill(self.child.id(), "-0")
    }

    /// Waits up to `within` for the process to exit; its exit code.
    fn wait_exit(&mut self, within: Duration) -> Result<Option<i32>> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status.code());
            }
            ensure!(
                Instant::now() < deadline,
                "still running after {within:?}; logs: {:?}",
                self.logs.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn logged(&self, needle: &str) -> bool {
        self.logs.lock().unwrap().iter().any(|l| l.contains(needle))
    }
}

impl Drop for Webhook {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A TLS connection to the webhook port.
type Tls = StreamOwned<ClientConnection, TcpStream>;

/// HTTPS to the webhook port; a clone can be moved to another thread while the test keeps the
/// [`Webhook`].
#[derive(Clone)]
struct Client {
    https: SocketAddr,
    config: Arc<ClientConfig>,
}

impl Client {
    /// A fresh connection, handshake done.
    fn connect(&self) -> Result<Tls> {
        let tcp = TcpStream::connect(self.https)?;
        tcp.set_read_timeout(Some(Duration::from_secs(20)))?;
        let conn = ClientConnection::new(
            self.config.clone(),
            ServerName::try_from("localhost")?.to_owned(),
        )?;
        let mut tls = StreamOwned::new(conn, tcp);
        while tls.conn.is_handshaking() {
            tls.conn.complete_io(&mut tls.sock)?;
        }
        Ok(tls)
    }

    /// One HTTPS request on a fresh connection, which must go cleanly: the whole body written,
    /// the answer read to the server's close_notify, no reset on the way. Returns (status,
    /// headers, body, leaf DER).
    fn request(&self, raw_head: &str, body: &[u8]) -> Result<(u16, String, Vec<u8>, Vec<u8>)> {
        let mut tls = self.connect()?;
        tls.write_all(raw_head.as_bytes())?;
        tls.write_all(body)?;
        tls.flush()?;
        let mut response = Vec::new();
        tls.read_to_end(&mut response)?;
        let leaf = tls
            .conn
            .peer_certificates()
            .and_then(|c| c.first())
            .map(|c| c.to_vec())
            .unwrap_or_default();
        let (status, headers, body) = split_response(&response)?;
        Ok((status, headers, body, leaf))
    }

    fn post(&self, path: &str, content_type: &str, body: &[u8]) -> Result<(u16, String, Vec<u8>)> {
        let head = request_head("POST", path, content_type, body.len(), true);
        let (status, headers, body, _) = self.request(&head, body)?;
        Ok((status, headers, body))
    }

    /// POSTs a review to /mutate and returns the decoded `response`.
    fn review(&self, review: &Value) -> Result<Value> {
        self.review_at("/mutate", review)
    }

    /// POSTs a review to `path` and returns the decoded `response`.
    fn review_at(&self, path: &str, review: &Value) -> Result<Value> {
        let (status, _, body) =
            self.post(path, "application/json", &serde_json::to_vec(review)?)?;
        ensure!(
            status == 200,
            "status {status}: {}",
            String::from_utf8_lossy(&body)
        );
        let answer: Value = serde_json::from_slice(&body)?;
        ensure!(
            answer["kind"] == "AdmissionReview" && answer["apiVersion"] == "admission.k8s.io/v1",
            "not a review: {answer}"
        );
        Ok(answer["response"].clone())
    }
}

/// Sends a signal to a process this test started (`-0` only checks that it exists).
fn kill(pid: u32, signal: &str) -> bool {
    Command::new("kill")
        .args([signal, &pid.to_string()])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn split_response(raw: &[u8]) -> Result<(u16, String, Vec<u8>)> {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .context("no header end")?;
    let head = String::from_utf8_lossy(&raw[..end]).to_string();
    let status = head.split(' ').nth(1).context("status line")?.parse()?;
    Ok((status, head, raw[end + 4..].to_vec()))
}

/// The admin listener's `/metrics`, after checking that it has every one of `lines`.
fn metrics_with(admin: SocketAddr, lines: &[&str]) -> Result<String> {
    let (_, metrics) = admin_get(admin, "/metrics")?;
    for line in lines {
        assert!(metrics.contains(line), "missing {line:?} in\n{metrics}");
    }
    Ok(metrics)
}

fn admin_get(addr: SocketAddr, path: &str) -> Result<(u16, String)> {
    let mut tcp = TcpStream::connect(addr)?;
    tcp.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        tcp,
        "GET {path} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    tcp.read_to_end(&mut raw)?;
    let (status, _, body) = split_response(&raw)?;
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

/// Retries `check` every 20 ms until it returns true or `limit` passes.
fn poll(limit: Duration, mut check: impl FnMut() -> Result<bool>) -> Result<()> {
    let deadline = Instant::now() + limit;
    let mut last = None;
    while Instant::now() < deadline {
        match check() {
            Ok(true) => return Ok(()),
            Ok(false) => last = None,
            Err(e) => last = Some(e),
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Err(anyhow!(
        "condition not met within {limit:?}; last error: {last:?}"
    ))
}

// === reviews ===

/// A Pod CREATE review as kube-apiserver sends it (fields and nesting from a captured request).
fn pod_review(uid: &str, annotations: Value, labels: Value, dry_run: bool) -> Value {
    json!({
        "kind": "AdmissionReview",
        "apiVersion": "admission.k8s.io/v1",
        "request": {
            "uid": uid,
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "requestKind": {"group": "", "version": "v1", "kind": "Pod"},
            "requestResource": {"group": "", "version": "v1", "resource": "pods"},
            "name": "",
            "namespace": "ecommerce",
            "operation": "CREATE",
            "userInfo": {
                "username": "system:serviceaccount:kube-system:replicaset-controller",
                "uid": "4b4a3d6e-0c0b-4f44-9d55-0b4c3e2f6a11",
                "groups": ["system:serviceaccounts", "system:serviceaccounts:kube-system", "system:authenticated"]
            },
            "object": {
                "kind": "Pod",
                "apiVersion": "v1",
                "metadata": {
                    "generateName": "payment-6c9f7d8b5-",
                    "namespace": "ecommerce",
                    "creationTimestamp": null,
                    "labels": labels,
                    "annotations": annotations,
                    "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "payment-6c9f7d8b5", "uid": "9f3c2b1a-1111-4222-8333-444455556666", "controller": true, "blockOwnerDeletion": true}],
                    "managedFields": [{"manager": "kube-controller-manager", "operation": "Update", "apiVersion": "v1", "time": "2026-01-01T00:00:00Z", "fieldsType": "FieldsV1", "fieldsV1": {"f:metadata": {"f:generateName": {}}}}]
                },
                "spec": {
                    "volumes": [{"name": "kube-api-access-x7k2p", "projected": {"sources": [{"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}}], "defaultMode": 420}}],
                    "containers": [{
                        "name": "payment",
                        "image": "registry.example.com/ecommerce/payment:1.0.0",
                        "ports": [{"name": "http", "containerPort": 8080, "protocol": "TCP"}],
                        "resources": {},
                        "volumeMounts": [{"name": "kube-api-access-x7k2p", "readOnly": true, "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount"}],
                        "terminationMessagePath": "/dev/termination-log",
                        "terminationMessagePolicy": "File",
                        "imagePullPolicy": "IfNotPresent"
                    }],
                    "restartPolicy": "Always",
                    "terminationGracePeriodSeconds": 30,
                    "dnsPolicy": "ClusterFirst",
                    "serviceAccountName": "payment",
                    "serviceAccount": "payment",
                    "securityContext": {},
                    "schedulerName": "default-scheduler",
                    "tolerations": [{"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}],
                    "priority": 0,
                    "enableServiceLinks": true,
                    "preemptionPolicy": "PreemptLowerPriority"
                },
                "status": {}
            },
            "oldObject": null,
            "dryRun": dry_run,
            "options": {"kind": "CreateOptions", "apiVersion": "meta.k8s.io/v1"}
        }
    })
}

fn injectable(uid: &str) -> Value {
    pod_review(
        uid,
        json!({"gembok.io/inbound": "8443=8080"}),
        json!({"app": "payment"}),
        false,
    )
}

/// Decodes the base64 JSON Patch of a response.
fn patch_of(response: &Value) -> Result<Vec<Value>> {
    let text = response["patch"]
        .as_str()
        .context("patch is a base64 string")?;
    let bytes = base64_decode(text)?;
    Ok(serde_json::from_slice(&bytes)?)
}

fn base64_decode(text: &str) -> Result<Vec<u8>> {
    let output = fed(Command::new("base64").arg("-d"), text)?;
    ensure!(output.status.success(), "not base64: {text}");
    Ok(output.stdout)
}

/// Runs `command` with `stdin` as its standard input; what it printed and exited with.
fn fed(command: &mut Command, stdin: impl AsRef<[u8]>) -> Result<std::process::Output> {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let written = child
        .stdin
        .take()
        .context("stdin")?
        .write_all(stdin.as_ref());
    // A command refused on its flags exits before reading its input: the pipe is closed then.
    match written {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => return Err(e.into()),
        _ => {}
    }
    Ok(child.wait_with_output()?)
}

// === tests ===

#[test]
fn answers_a_kube_apiserver_review_over_tls_with_its_uid_and_a_patch() -> Result<()> {
    let webhook = Webhook::start(&[])?;
    webhook.wait_ready()?;
    // curl as the client: an independent TLS 1.3 + HTTP/1.1 implementation.
    let body = serde_json::to_vec(&injectable("705ab4f5-6393-11e8-b7cc-42010a800002"))?;
    let out = webhook.curl_post("/mutate?timeout=10s", &body, &["--fail-with-body"])?;
    ensure!(
        out.status.success(),
        "curl failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let answer: Value = serde_json::from_slice(&out.stdout)?;
    let response = &answer["response"];
    assert_eq!(answer["apiVersion"], "admission.k8s.io/v1");
    assert_eq!(response["uid"], "705ab4f5-6393-11e8-b7cc-42010a800002");
    assert_eq!(response["allowed"], true);
    assert_eq!(response["patchType"], "JSONPatch");
    let patch = patch_of(response)?;
    let sidecar = patch
        .iter()
        .find(|op| op["path"] == "/spec/initContainers")
        .context("adds initContainers")?;
    assert_eq!(sidecar["op"], "add");
    assert_eq!(sidecar["value"][0]["name"], "gembok-proxy");
    assert_eq!(
        sidecar["value"][0]["image"],
        "ghcr.io/gembok/gembok-proxy:test"
    );
    assert!(patch.iter().any(|op| op["path"] == "/spec/volumes/1"
        && op["value"]["secret"]["secretName"] == "payment-gembok-tls"));
    assert!(
        patch
            .iter()
            .all(|op| !op["path"].as_str().unwrap().starts_with("/spec/containers")),
        "app container untouched: {patch:?}"
    );
    assert!(
        patch
            .iter()
            .all(|op| !op["path"].as_str().unwrap().contains("managedFields"))
    );

    // dryRun changes nothing: same answer (the injector has no side effects).
    let mut dry = injectable("dry-1");
    dry["request"]["dryRun"] = json!(true);
    let dry_response = webhook.review(&dry)?;
    assert_eq!(dry_response["uid"], "dry-1");
    assert_eq!(patch_of(&dry_response)?, patch);
    Ok(())
}

#[test]
fn skipped_and_refused_pods_get_reviews_that_say_why() -> Result<()> {
    let webhook = Webhook::start(&[])?;
    webhook.wait_ready()?;

    let opted_out = pod_review(
        "skip-1",
        json!({"gembok.io/inbound": "8443=8080"}),
        json!({"gembok.io/inject": "false"}),
        false,
    );
    let response = webhook.review(&opted_out)?;
    assert_eq!(response["uid"], "skip-1");
    assert_eq!(response["allowed"], true);
    assert!(
        response.get("patch").is_none(),
        "skipped pod got a patch: {response}"
    );
    let warnings = response["warnings"].to_string();
    assert!(
        warnings.contains("opts out with the label gembok.io/inject"),
        "{warnings}"
    );

    // A pod injected already comes back when a later webhook changes it (reinvocation):
    // allowed unchanged, and no "not injected" warning for a pod that is.
    let mut reinvoked = pod_review(
        "again-1",
        json!({"gembok.io/inbound": "8443=8080", "gembok.io/status": "{}"}),
        json!({}),
        false,
    );
    // Marked injected, but the sidecar is not there (edited out): injected again, with a word.
    let response = webhook.review(&reinvoked)?;
    assert_eq!(response["allowed"], true, "{response}");
    assert_eq!(response["patchType"], "JSONPatch", "{response}");
    assert!(
        response["warnings"]
            .to_string()
            .contains("has no gembok-proxy container"),
        "{response}"
    );
    reinvoked["request"]["object"]["spec"]["initContainers"] =
        json!([{"name": "gembok-proxy", "image": "ghcr.io/gembok/gembok-proxy:test"}]);
    let response = webhook.review(&reinvoked)?;
    assert_eq!(response["allowed"], true, "{response}");
    assert!(response.get("patch").is_none(), "{response}");
    assert!(
        response
            .get("warnings")
            .is_none_or(|w| w.as_array().is_some_and(Vec::is_empty)),
        "{response}"
    );

    let bad = pod_review(
        "deny-1",
        json!({"gembok.io/inbound": "8443:8080", "gembok.io/proxy-memory-limit": "1GB"}),
        json!({}),
        false,
    );
    let response = webhook.review(&bad)?;
    assert_eq!(response["uid"], "deny-1");
    assert_eq!(response["allowed"], false);
    let message = response["status"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("gembok.io/inbound=\"8443:8080\""),
        "{message}"
    );
    assert!(
        response["warnings"]
            .to_string()
            .contains("gembok.io/proxy-memory-limit"),
        "{response}"
    );

    // A pod no annotation can fix (Windows) is refused too, and counted apart from typos.
    let mut windows = pod_review(
        "deny-2",
        json!({"gembok.io/inbound": "8443=8080"}),
        json!({}),
        false,
    );
    windows["request"]["object"]["spec"]["os"] = json!({"name": "windows"});
    let response = webhook.review(&windows)?;
    assert_eq!(response["allowed"], false, "{response}");
    let message = response["status"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("Linux only"), "{message}");

    // By default a pod without gembok.io/inbound or gembok.io/outbound is allowed unchanged.
    let unannotated = pod_review("skip-2", json!({}), json!({"app": "payment"}), false);
    let response = webhook.review(&unannotated)?;
    assert_eq!(response["allowed"], true);
    assert!(response.get("patch").is_none(), "{response}");
    assert!(
        response["warnings"]
            .to_string()
            .contains("nothing to encrypt"),
        "{response}"
    );

    // A Deployment review (misconfigured rules) and a Pod UPDATE: allowed untouched.
    let mut deployment = injectable("other-1");
    deployment["request"]["kind"] = json!({"group": "apps", "version": "v1", "kind": "Deployment"});
    deployment["request"]["object"] = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "x"}, "spec": {}});
    let mut update = injectable("update-1");
    update["request"]["operation"] = json!("UPDATE");
    for (review, uid) in [(deployment, "other-1"), (update, "update-1")] {
        let response = webhook.review(&review)?;
        assert_eq!(response["uid"], uid);
        assert_eq!(response["allowed"], true);
        assert!(response.get("patch").is_none(), "{response}");
    }

    // Every answer was counted under its reason.
    metrics_with(
        webhook.admin,
        &[
            "gembok_injector_skipped_total{reason=\"opted_out\"} 1",
            "gembok_injector_skipped_total{reason=\"nothing_to_encrypt\"} 1",
            "gembok_injector_skipped_total{reason=\"already_injected\"} 1",
            "gembok_injector_rejected_total{reason=\"invalid_annotations\"} 1",
            "gembok_injector_rejected_total{reason=\"incompatible_pod\"} 1",
            "gembok_injector_requests_total{result=\"skipped\"} 3",
            "gembok_injector_requests_total{result=\"rejected\"} 2",
            "gembok_injector_requests_total{result=\"ignored\"} 2",
            // The pod marked injected without its sidecar.
            "gembok_injector_injected_total 1",
            "gembok_injector_requests_total{result=\"injected\"} 1",
        ],
    )?;
    Ok(())
}

/// The injector-wide settings, through flags and `GEMBOK_INJECTOR_*` variables: unannotated pods
/// denied, classic sidecars by default (a pod may still ask for native), the pull policy.
#[test]
fn injector_wide_policies_deny_unannotated_pods_and_pick_the_sidecar() -> Result<()> {
    let webhook = Webhook::start_env(
        &["--unannotated-pods", "deny"],
        &[
            ("GEMBOK_INJECTOR_SIDECAR_MODE", "classic"),
            ("GEMBOK_INJECTOR_PROXY_PULL_POLICY", "Always"),
        ],
    )?;
    webhook.wait_ready()?;

    let unannotated = pod_review("deny-2", json!({}), json!({"app": "payment"}), false);
    let response = webhook.review(&unannotated)?;
    assert_eq!(response["uid"], "deny-2");
    assert_eq!(response["allowed"], false);
    let message = response["status"]["message"].as_str().unwrap_or_default();
    for needle in [
        "gembok.io/inbound: \"TLSPORT=APPPORT\"",
        "gembok.io/outbound: \"LOCALPORT=HOST:PORT\"",
        "gembok.io/inject: \"false\"",
    ] {
        assert!(message.contains(needle), "{needle:?} not in {message:?}");
    }

    // Classic by default: first in containers, kubectl's default container is the app.
    let patch = patch_of(&webhook.review(&injectable("classic-1"))?)?;
    let sidecar = patch
        .iter()
        .find(|op| op["path"] == "/spec/containers/0")
        .context("classic sidecar first in containers")?;
    assert_eq!(sidecar["value"]["name"], "gembok-proxy");
    assert_eq!(sidecar["value"]["imagePullPolicy"], "Always");
    let default_container = "/metadata/annotations/kubectl.kubernetes.io~1default-container";
    assert!(
        patch
            .iter()
            .any(|op| op["path"] == default_container && op["value"] == "payment"),
        "{patch:?}"
    );
    // The pod's own gembok.io/sidecar-mode wins.
    let native = pod_review(
        "native-1",
        json!({"gembok.io/inbound": "8443=8080", "gembok.io/sidecar-mode": "native"}),
        json!({}),
        false,
    );
    let patch = patch_of(&webhook.review(&native)?)?;
    let sidecar = patch
        .iter()
        .find(|op| op["path"] == "/spec/initContainers")
        .context("native sidecar")?;
    assert_eq!(sidecar["value"][0]["restartPolicy"], "Always");
    assert!(patch.iter().all(|op| op["path"] != default_container));

    let metrics = metrics_with(
        webhook.admin,
        &[
            "gembok_injector_rejected_total{reason=\"nothing_to_encrypt\"} 1",
            "gembok_injector_injected_total 2",
        ],
    )?;
    assert!(
        !metrics.contains("gembok_injector_skipped_total"),
        "{metrics}"
    );
    Ok(())
}

/// `/mutate/istio` is `/mutate` for a namespace Istio also injects: Gembok's ports are excluded
/// from Istio's capture, and a warning says so.
#[test]
fn mutate_istio_excludes_gembok_ports_from_istio() -> Result<()> {
    let webhook = Webhook::start(&[])?;
    webhook.wait_ready()?;
    let review = pod_review(
        "istio-1",
        json!({
            "gembok.io/inbound": "8443=8080",
            "gembok.io/outbound": "15701=recommendation.ecommerce.svc.cluster.local:9443",
            "traffic.sidecar.istio.io/excludeOutboundPorts": "5432",
        }),
        json!({"app": "payment"}),
        false,
    );
    let response = webhook.client.review_at("/mutate/istio", &review)?;
    assert_eq!(response["uid"], "istio-1");
    assert_eq!(response["allowed"], true);
    let patch = patch_of(&response)?;
    let value = |path: &str| {
        patch
            .iter()
            .find(|op| op["path"] == path)
            .map(|op| (op["op"].clone(), op["value"].clone()))
    };
    assert_eq!(
        value("/metadata/annotations/traffic.sidecar.istio.io~1excludeInboundPorts"),
        Some((json!("add"), json!("8443,15700")))
    );
    assert_eq!(
        value("/metadata/annotations/traffic.sidecar.istio.io~1excludeOutboundPorts"),
        Some((json!("replace"), json!("5432,9443")))
    );
    let warnings = response["warnings"].to_string();
    assert!(
        warnings.contains("Istio also injects this pod (namespace is Istio-injected)"),
        "{warnings}"
    );

    // The same pod on /mutate: no Istio annotations.
    let patch = patch_of(&webhook.review(&review)?)?;
    assert!(
        patch
            .iter()
            .all(|op| !op["path"].as_str().unwrap().contains("istio")),
        "{patch:?}"
    );
    Ok(())
}

/// One response read by its `Content-Length`, without waiting for the connection to close.
fn read_one_response(tls: &mut Tls) -> Result<(u16, String, Vec<u8>)> {
    let mut raw = Vec::new();
    let mut buf = [0u8; 16384];
    loop {
        if let Ok((status, head, body)) = split_response(&raw) {
            let length: usize = head
                .lines()
                .find_map(|l| {
                    let (name, value) = l.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse().ok())?
                })
                .context("no Content-Length in the answer")?;
            if body.len() >= length {
                return Ok((status, head, body[..length].to_vec()));
            }
        }
        let n = tls.read(&mut buf)?;
        ensure!(n > 0, "closed before a whole answer: {raw:?}");
        raw.extend_from_slice(&buf[..n]);
    }
}

/// True when nothing of an answer, not even a close, has arrived on this connection yet. The
/// read goes through TLS so that the records that follow a handshake (session tickets) count as
/// nothing.
fn nothing_received(tls: &mut Tls) -> Result<bool> {
    tls.sock.set_nonblocking(true)?;
    let read = tls.read(&mut [0u8; 1]);
    tls.sock.set_nonblocking(false)?;
    match read {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Ok(true),
        Ok(_) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Everything the server sends until it closes (a missing close_notify is not an error).
fn read_until_closed(tls: &mut Tls) -> Result<Vec<u8>> {
    let mut raw = Vec::new();
    let mut buf = [0u8; 16384];
    loop {
        match tls.read(&mut buf) {
            Ok(0) => return Ok(raw),
            Ok(n) => raw.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(raw),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return Ok(raw),
            Err(e) => return Err(e.into()),
        }
    }
}

/// Never a hang: a client that stops halfway through its body gets 408 once --body-timeout has
/// passed, one that stops inside its headers is disconnected after --header-timeout, and other
/// requests are answered meanwhile.
#[test]
fn slow_clients_time_out_while_others_are_served() -> Result<()> {
    let webhook = Webhook::start(&["--body-timeout", "2s", "--header-timeout", "2s"])?;
    webhook.wait_ready()?;
    let body = serde_json::to_vec(&injectable("slow-1"))?;

    let mut slow_body = webhook.client.connect()?;
    let started = Instant::now();
    let head = request_head("POST", "/mutate", "application/json", body.len(), false);
    slow_body.write_all(head.as_bytes())?;
    slow_body.write_all(&body[..body.len() / 2])?;
    slow_body.flush()?;
    let mut slow_headers = webhook.client.connect()?;
    slow_headers.write_all(b"POST /mutate HTTP/1.1\r\nHost: x\r\nContent-Type: appl")?;
    slow_headers.flush()?;

    // Meanwhile a whole request is answered, before either slow client is dealt with: a server
    // that served one connection at a time would answer it only after their timeouts.
    let response = webhook.review(&injectable("fast-1"))?;
    assert_eq!(response["uid"], "fast-1");
    for (slow, what) in [
        (&mut slow_body, "half a body"),
        (&mut slow_headers, "half the headers"),
    ] {
        assert!(
            nothing_received(slow)?,
            "the client stalled in {what} was answered or closed before the fast request \
             ({:?} after the start)",
            started.elapsed()
        );
    }

    let raw = read_until_closed(&mut slow_body)?;
    let waited = started.elapsed();
    let (status, _, text) = split_response(&raw)?;
    assert_eq!(status, 408, "{}", String::from_utf8_lossy(&text));
    assert!(
        (Duration::from_millis(1900)..Duration::from_secs(10)).contains(&waited),
        "408 after {waited:?} with --body-timeout 2s"
    );

    let raw = read_until_closed(&mut slow_headers)?;
    let waited = started.elapsed();
    assert!(
        raw.is_empty() || split_response(&raw)?.0 == 408,
        "incomplete headers answered: {}",
        String::from_utf8_lossy(&raw)
    );
    assert!(
        (Duration::from_millis(1900)..Duration::from_secs(10)).contains(&waited),
        "disconnected after {waited:?} with --header-timeout 2s"
    );

    metrics_with(
        webhook.admin,
        &["gembok_injector_requests_total{result=\"timeout\"} 1"],
    )?;
    assert_eq!(webhook.review(&injectable("after-1"))?["uid"], "after-1");
    Ok(())
}

/// --max-connections: past the cap a new connection waits (its handshake does not start) until
/// an open one closes, then it is served.
#[test]
fn connections_beyond_the_cap_wait_for_a_free_slot() -> Result<()> {
    let webhook = Webhook::start(&["--max-connections", "1"])?;
    webhook.wait_ready()?;
    let holder = webhook.client.connect()?;

    let (tx, rx) = std::sync::mpsc::channel();
    let client = webhook.client.clone();
    let waiting = std::thread::spawn(move || {
        let _ = tx.send(
            client
                .review(&injectable("queued-1"))
                .map_err(|e| e.to_string()),
        );
    });
    // Not served while the only slot is taken (a bounded wait for something that must not happen).
    assert!(
        rx.recv_timeout(Duration::from_millis(700)).is_err(),
        "a second connection was served past --max-connections 1"
    );
    drop(holder);
    let response = rx
        .recv_timeout(Duration::from_secs(10))
        .context("not served after the slot was freed")?
        .map_err(|e| anyhow!(e))?;
    assert_eq!(response["uid"], "queued-1");
    waiting.join().unwrap();
    Ok(())
}

/// The head of a request with a `length`-byte body of `content_type`; `close` asks the server to
/// close the connection after its answer.
fn request_head(
    method: &str,
    path: &str,
    content_type: &str,
    length: usize,
    close: bool,
) -> String {
    let connection = if close { "Connection: close\r\n" } else { "" };
    format!(
        "{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Type: {content_type}\r\nContent-Length: {length}\r\n{connection}\r\n"
    )
}

/// Request head of a review POSTed with `Transfer-Encoding: chunked` (see [`chunked`]).
const CHUNKED_HEAD: &str = "POST /mutate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n";

/// `body` in HTTP/1.1 chunked encoding, `size` bytes a chunk.
fn chunked(body: &[u8], size: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + body.len() / size * 12 + 16);
    for chunk in body.chunks(size) {
        out.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        out.extend_from_slice(chunk);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"0\r\n\r\n");
    out
}

/// A review under the limit but streamed in many small chunks is joined and answered as any.
#[test]
fn a_review_streamed_in_small_chunks_is_answered() -> Result<()> {
    let webhook = Webhook::start(&[])?;
    webhook.wait_ready()?;
    let review = serde_json::to_vec(&injectable("in-chunks"))?;
    let (status, _, body, _) = webhook
        .client
        .request(CHUNKED_HEAD, &chunked(&review, 97))?;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let answer: Value = serde_json::from_slice(&body)?;
    assert_eq!(answer["response"]["uid"], "in-chunks");
    assert_eq!(answer["response"]["allowed"], true);
    Ok(())
}

#[test]
fn bad_requests_get_http_errors_and_the_server_keeps_serving() -> Result<()> {
    let webhook = Webhook::start(&[])?;
    webhook.wait_ready()?;
    let (status, _, body) = webhook.post("/mutate", "application/json", b"{not json")?;
    assert_eq!(status, 400);
    assert!(String::from_utf8_lossy(&body).contains("not an admission.k8s.io/v1 AdmissionReview"));
    let (status, _, body) = webhook.post(
        "/mutate",
        "application/json",
        br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}"#,
    )?;
    assert_eq!(status, 400, "{}", String::from_utf8_lossy(&body));
    let (status, _, _) = webhook.post(
        "/mutate",
        "application/json",
        br#"{"apiVersion":"admission.k8s.io/v1beta1","kind":"AdmissionReview","request":{}}"#,
    )?;
    assert_eq!(status, 400);
    let (status, _, _) = webhook.post("/mutate", "text/plain", b"{}")?;
    assert_eq!(status, 415);
    let (status, _, _) = webhook.post("/mutate", "application/yaml", b"{}")?;
    assert_eq!(status, 415);
    let (status, head, _) = webhook
        .request(
            "GET /mutate HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            b"",
        )
        .map(|(s, h, b, _)| (s, h, b))?;
    assert_eq!(status, 405);
    assert!(head.to_ascii_lowercase().contains("allow: post"));
    let (status, _, _) = webhook.post("/validate", "application/json", b"{}")?;
    assert_eq!(status, 404);

    // Over the limit, declared up front and streamed without a length.
    let big = vec![b' '; 7 * 1024 * 1024];
    let head = request_head("POST", "/mutate", "application/json", big.len(), true);
    // The answer comes before any of the body is sent; the server then waits for the body
    // (to read it and throw it away), so the client reads one answer and does not wait for
    // the close.
    let mut tls = webhook.client.connect()?;
    tls.write_all(head.as_bytes())?;
    tls.flush()?;
    let (status, _, body) = read_one_response(&mut tls)?;
    assert_eq!(
        status,
        413,
        "declared length over the limit is refused before the body: {}",
        String::from_utf8_lossy(&body)
    );
    // Streamed: 10 MiB past the limit, more than the socket buffers between the two hold, so
    // a server that stopped reading at the limit would leave the client's writes hanging until
    // it closed, and then failing.
    let big = vec![b' '; 16 * 1024 * 1024];
    // The server answers, then reads the rest and throws it away, so the client writes every
    // byte and reads the 413 without the reset that unread data would cause.
    let (status, _, body, _) = webhook
        .client
        .request(CHUNKED_HEAD, &chunked(&big, 1024 * 1024))?;
    assert_eq!(status, 413, "a streamed body is cut at the limit");
    assert!(String::from_utf8_lossy(&body).contains("larger than"));

    // Plaintext HTTP on the TLS port: the handshake fails, nothing else happens.
    let mut plain = TcpStream::connect(webhook.client.https)?;
    plain.set_read_timeout(Some(Duration::from_secs(10)))?;
    plain.write_all(b"POST /mutate HTTP/1.1\r\nHost: x\r\n\r\n")?;
    let mut sink = Vec::new();
    let _ = plain.read_to_end(&mut sink);

    // Still serving, and the errors were counted.
    let response = webhook.review(&injectable("after-errors"))?;
    assert_eq!(response["uid"], "after-errors");
    assert_eq!(response["allowed"], true);
    metrics_with(
        webhook.admin,
        &[
            "gembok_injector_requests_total{result=\"bad_request\"} 3",
            "gembok_injector_requests_total{result=\"unsupported_media_type\"} 2",
            "gembok_injector_requests_total{result=\"method_not_allowed\"} 1",
            "gembok_injector_requests_total{result=\"not_found\"} 1",
            "gembok_injector_requests_total{result=\"too_large\"} 2",
            "gembok_injector_requests_total{result=\"injected\"} 1",
            "gembok_injector_injected_total 1",
            "gembok_injector_errors_total{kind=\"tls_handshake\"} 1",
            "gembok_injector_request_duration_seconds_bucket",
            "gembok_injector_cert_not_after_timestamp_seconds",
        ],
    )?;
    assert!(webhook.child_alive());
    Ok(())
}

/// A request refused on its head (404, 405, 415, a declared length over the limit) still has its
/// body read and thrown away: a client that writes all of it before reading gets the answer,
/// not a reset, and a keep-alive connection goes on to its next request. A client waiting for
/// `100 Continue` gets the refusal instead, without sending the body.
#[test]
fn refused_requests_have_their_body_read_so_the_answer_arrives() -> Result<()> {
    let webhook = Webhook::start(&["--body-timeout", "60s"])?;
    webhook.wait_ready()?;
    // More than the socket buffers between client and server hold: a server that answered
    // without reading would leave these writes blocked until it closed, and then failing.
    let big = vec![b' '; 11 * 1024 * 1024];
    let head = |method, path, media, close| request_head(method, path, media, big.len(), close);
    for (head, expected) in [
        (head("POST", "/validate", "application/json", true), 404),
        (head("PUT", "/mutate", "application/json", true), 405),
        (head("POST", "/mutate", "text/plain", true), 415),
        (head("POST", "/mutate", "application/json", true), 413),
    ] {
        let (status, _, body, _) = webhook
            .client
            .request(&head, &big)
            .with_context(|| format!("{head:?}"))?;
        assert_eq!(status, expected, "{head}{}", String::from_utf8_lossy(&body));
    }

    // curl, with its default `Expect: 100-continue` for a large body (the refusal comes
    // instead of `100 Continue` and the body is never sent) and without it (the body is sent
    // whole, read and thrown away): the 404 arrives either way and curl exits 0.
    let status_only = ["--output", "/dev/null", "--write-out", "%{http_code}"];
    for expect in [None, Some("Expect:")] {
        let mut extra = status_only.to_vec();
        extra.extend(expect.map(|header| ["-H", header]).into_iter().flatten());
        let out = webhook.curl_post("/validate", &big, &extra)?;
        ensure!(
            out.status.success(),
            "curl ({expect:?}) failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(String::from_utf8_lossy(&out.stdout), "404", "{expect:?}");
    }

    // Keep-alive: a review follows a refused request with a large body on one connection.
    let review = serde_json::to_vec(&injectable("same-connection"))?;
    let mut tls = webhook.client.connect()?;
    tls.write_all(head("POST", "/validate", "application/json", false).as_bytes())?;
    tls.write_all(&big)?;
    let second = request_head("POST", "/mutate", "application/json", review.len(), true);
    tls.write_all(second.as_bytes())?;
    tls.write_all(&review)?;
    tls.flush()?;
    let mut raw = Vec::new();
    tls.read_to_end(&mut raw)?;
    let (status, ..) = split_response(&raw)?;
    assert_eq!(status, 404, "{}", String::from_utf8_lossy(&raw));
    let second = raw
        .windows(12)
        .position(|w| w == b"HTTP/1.1 200")
        .with_context(|| format!("no second answer in {}", String::from_utf8_lossy(&raw)))?;
    let (_, _, body) = split_response(&raw[second..])?;
    let answer: Value = serde_json::from_slice(&body)?;
    assert_eq!(answer["response"]["uid"], "same-connection");

    // No wait for a body that will not come: one held back for `100 Continue`, and one declared
    // longer than the server would ever read. The refusal comes alone and the connection
    // closes at once; a server waiting for the body would hold it open for the 60 s body
    // timeout, past the client's 20 s read timeout.
    let expecting = head("POST", "/mutate", "application/json", true)
        .replace("Host: x\r\n", "Host: x\r\nExpect: 100-continue\r\n");
    let huge = head("POST", "/mutate", "application/json", true).replace(
        &format!("Content-Length: {}", big.len()),
        "Content-Length: 1073741824",
    );
    for head in [expecting, huge] {
        let mut tls = webhook.client.connect()?;
        tls.write_all(head.as_bytes())?;
        tls.flush()?;
        let mut raw = Vec::new();
        tls.read_to_end(&mut raw)
            .with_context(|| format!("{head:?}"))?;
        let (status, _, body) = split_response(&raw)?;
        assert_eq!(status, 413, "{head}{}", String::from_utf8_lossy(&raw));
        assert!(
            !body.windows(8).any(|w| w == b"HTTP/1.1"),
            "one answer: {raw:?}"
        );
    }

    metrics_with(
        webhook.admin,
        &[
            "gembok_injector_requests_total{result=\"not_found\"} 4",
            "gembok_injector_requests_total{result=\"method_not_allowed\"} 1",
            "gembok_injector_requests_total{result=\"unsupported_media_type\"} 1",
            "gembok_injector_requests_total{result=\"too_large\"} 3",
            "gembok_injector_requests_total{result=\"injected\"} 1",
        ],
    )?;
    Ok(())
}

#[test]
fn reloads_a_rotated_certificate_while_requests_flow() -> Result<()> {
    let mut webhook = Webhook::start(&[])?;
    webhook.wait_ready()?;
    let (_, _, _, first_leaf) = webhook.request(
        "GET /live HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        b"",
    )?;

    // Clients keep sending reviews during the swap; every one must succeed.
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(Mutex::new(Vec::new()));
    let load = {
        let (stop, ok, failures) = (stop.clone(), ok.clone(), failures.clone());
        let client = webhook.client.clone();
        std::thread::spawn(move || {
            let mut n = 0;
            while !stop.load(Ordering::SeqCst) {
                n += 1;
                match client.review(&injectable(&format!("flow-{n}"))) {
                    Ok(r) if r["uid"] == format!("flow-{n}") && r["allowed"] == true => {
                        ok.fetch_add(1, Ordering::SeqCst);
                    }
                    Ok(r) => failures.lock().unwrap().push(format!("bad answer {r}")),
                    Err(e) => failures.lock().unwrap().push(e.to_string()),
                }
            }
        })
    };
    poll(Duration::from_secs(10), || {
        Ok(ok.load(Ordering::SeqCst) >= 5)
    })?;

    let (cert, key, new_leaf) = webhook.pki.leaf();
    assert_ne!(new_leaf, first_leaf);
    webhook.secret.swap(&cert, &key)?;
    poll(Duration::from_secs(20), || {
        let (.., leaf) = webhook.request(
            "GET /live HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            b"",
        )?;
        Ok(leaf == new_leaf)
    })
    .context("the rotated certificate was never served")?;
    let before = ok.load(Ordering::SeqCst);
    poll(Duration::from_secs(10), || {
        Ok(ok.load(Ordering::SeqCst) >= before + 5)
    })?;
    stop.store(true, Ordering::SeqCst);
    load.join().unwrap();
    let failures = failures.lock().unwrap();
    assert!(
        failures.is_empty(),
        "{} of {} requests failed during the swap: {:?}",
        failures.len(),
        ok.load(Ordering::SeqCst),
        &failures[..failures.len().min(5)]
    );

    // A broken update keeps the last good certificate.
    webhook.secret.swap("not a certificate", "not a key")?;
    let metric = "gembok_injector_cert_reloads_total{result=\"failure\"";
    poll(Duration::from_secs(20), || {
        Ok(admin_get(webhook.admin, "/metrics")?.1.contains(metric))
    })?;
    let (status, .., leaf) = webhook.request(
        "GET /live HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        b"",
    )?;
    assert_eq!(leaf, new_leaf);
    assert_eq!(status, 404, "the webhook port serves only /mutate");
    assert_eq!(admin_get(webhook.admin, "/ready")?.0, 200);
    Ok(())
}

/// `serve` sandboxes itself by default (`injector/src/sandbox.rs`): it reads only beneath its
/// certificate's directory and connects to no TCP port, every thread runs under the seccomp
/// filters, and it still answers reviews (the rotation
/// test above reloads under the same sandbox). `--sandbox off` says it is off. Skipped, saying
/// so, on a kernel without Landlock.
#[test]
fn serves_sandboxed_reading_its_certificate_and_connecting_nowhere() -> Result<()> {
    let webhook = Webhook::start(&[])?;
    webhook.wait_ready()?;
    let sandbox_line = |w: &Webhook| {
        let logs = w.logs.lock().unwrap();
        logs.iter()
            .find(|l| l.contains("sandboxed (Landlock)") || l.contains("not sandboxed"))
            .cloned()
    };
    let mut line = None;
    poll(Duration::from_secs(10), || {
        line = sandbox_line(&webhook);
        Ok(line.is_some())
    })
    .context("no sandbox line in the log")?;
    let line = line.unwrap_or_default();
    if line.contains("this kernel has no Landlock") {
        eprintln!("SKIP: this kernel has no Landlock (the injector said so)");
        return Ok(());
    }
    assert!(line.contains("sandboxed (Landlock)"), "{line}");
    let dir = webhook._dir.path().display().to_string();
    assert!(
        line.contains(&dir),
        "its certificate directory {dir}: {line}"
    );
    let older = (webhook.logs.lock().unwrap().iter()).any(|l| l.contains("is older"));
    if !older {
        assert!(line.contains(r#""tcp_connect":"{}""#), "{line}");
    }
    // It has no thread before the sandbox (no jemalloc), so every one is covered on any kernel.
    let logs = webhook.logs.lock().unwrap().join("\n");
    assert!(!logs.contains("purge thread"), "{logs}");
    // And the seccomp filters, on every thread.
    assert!(logs.contains("system calls refused (seccomp)"), "{logs}");
    let threads = gembok_tests::seccomp_of(&webhook.child.id().to_string());
    assert!(threads.iter().all(|t| t.mode == 2), "{threads:?}");
    assert_eq!(
        webhook.review(&injectable("sandboxed"))?["uid"],
        "sandboxed"
    );
    // /metrics says so, as the proxy's does: seccomp on every thread, Landlock as logged.
    let landlock = if older { "partial" } else { "full" };
    metrics_with(
        webhook.admin,
        &[&format!(
            r#"gembok_injector_sandbox_info{{landlock="{landlock}",seccomp="all_threads"}} 1"#
        )],
    )?;

    let off = Webhook::start(&["--sandbox", "off"])?;
    off.wait_ready()?;
    poll(Duration::from_secs(10), || Ok(sandbox_line(&off).is_some()))?;
    let line = sandbox_line(&off).unwrap_or_default();
    assert!(line.contains("not sandboxed: --sandbox off"), "{line}");
    metrics_with(
        off.admin,
        &[r#"gembok_injector_sandbox_info{landlock="off",seccomp="off"} 1"#],
    )?;
    Ok(())
}

#[test]
fn is_ready_only_once_a_certificate_has_loaded() -> Result<()> {
    let pki = Pki::new();
    let dir = tempfile::tempdir()?;
    let secret = SecretDir::new(dir.path());
    let mut webhook = Webhook::start_with(pki, dir, secret, &[], &[])?;
    assert_eq!(admin_get(webhook.admin, "/live")?.0, 200);
    let (status, body) = admin_get(webhook.admin, "/ready")?;
    assert_eq!(status, 503);
    assert!(body.contains("no valid serving certificate"), "{body}");
    // TLS connections are closed while there is nothing to serve.
    assert!(webhook.review(&injectable("early")).is_err());

    let (cert, key, _) = webhook.pki.leaf();
    webhook.secret.swap(&cert, &key)?;
    webhook.wait_ready()?;
    assert_eq!(webhook.review(&injectable("late"))?["uid"], "late");
    Ok(())
}

/// The default listen addresses, `[::]`, serve IPv4 and IPv6 clients alike (IPv6-only
/// clusters reach the webhook too): admin and HTTPS, over 127.0.0.1 and ::1. On a host whose
/// `net.ipv6.bindv6only` is 0 this passes without the injector's own socket option; the next
/// test sets it to 1.
#[test]
fn wildcard_ipv6_listeners_serve_both_families() -> Result<()> {
    let pki = Pki::new();
    let dir = tempfile::tempdir()?;
    let mut secret = SecretDir::new(dir.path());
    let (cert, key, _) = pki.leaf();
    secret.swap(&cert, &key)?;
    let webhook = Webhook::start_on(pki, dir, secret, ("[::]:0", "[::]:0"), &[], &[])?;
    webhook.wait_ready()?;
    for ip in ["127.0.0.1", "::1"] {
        let ip: std::net::IpAddr = ip.parse()?;
        let (status, _) = admin_get(SocketAddr::new(ip, webhook.admin.port()), "/ready")?;
        assert_eq!(status, 200, "{ip}");
        let client = Client {
            https: SocketAddr::new(ip, webhook.client.https.port()),
            config: webhook.client.config.clone(),
        };
        assert_eq!(
            client.review(&injectable(&ip.to_string()))?["uid"],
            ip.to_string()
        );
    }
    Ok(())
}

/// Where the host makes IPv6 sockets IPv6-only by default (`net.ipv6.bindv6only = 1`) the
/// `[::]` listeners still answer IPv4 (the injector clears `IPV6_V6ONLY` itself): the test above
/// cannot tell on a host whose setting is 0. Run in a network namespace of its own (root only).
#[test]
fn wildcard_ipv6_listeners_stay_dual_stack_where_the_host_says_ipv6_only() -> Result<()> {
    use gembok_tests::netns;
    if !netns::available() {
        eprintln!("skipped: needs root for a network namespace");
        return Ok(());
    }
    let pki = Pki::new();
    let dir = tempfile::tempdir()?;
    let mut secret = SecretDir::new(dir.path());
    let (cert, key, _) = pki.leaf();
    secret.swap(&cert, &key)?;
    let mut injector = netns::spawn_ipv6_only(
        Command::new(binary())
            .args(["serve", "--listen", "[::]:8443", "--admin", "[::]:15780"])
            .arg("--cert-dir")
            .arg(dir.path())
            .args(["--proxy-image", "ghcr.io/gembok/gembok-proxy:test"])
            .args(["--shutdown-delay", "0s"]),
    )?;
    let admin = netns::curl_status(&injector, "http://127.0.0.1:15780/ready", &[], "200");
    // A GET is refused with 405, which only an answering webhook listener can say.
    let https = netns::curl_status(&injector, "https://127.0.0.1:8443/mutate", &["-k"], "405");
    let _ = injector.kill();
    let out = injector.wait_with_output()?;
    let logs = String::from_utf8_lossy(&out.stderr);
    assert_eq!(admin, "200", "no IPv4 answer on the admin [::]: {logs}");
    assert_eq!(https, "405", "no IPv4 answer on the webhook [::]: {logs}");
    Ok(())
}

#[test]
fn sigterm_finishes_in_flight_requests_then_exits_zero() -> Result<()> {
    let mut webhook = Webhook::start(&["--drain-grace", "20s", "--log", "gembok_injector=debug"])?;
    webhook.wait_ready()?;
    let body = serde_json::to_vec(&injectable("in-flight"))?;
    // Headers and half of the body, then SIGTERM, then the rest.
    let mut tls = webhook.client.connect()?;
    let head = request_head("POST", "/mutate", "application/json", body.len(), false);
    tls.write_all(head.as_bytes())?;
    let (first, rest) = body.split_at(body.len() / 2);
    tls.write_all(first)?;
    tls.flush()?;
    // The server has parsed the headers and is waiting for the body.
    poll(Duration::from_secs(10), || {
        Ok(webhook
            .logs
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains("request received")))
    })?;

    webhook.sigterm();
    poll(Duration::from_secs(10), || {
        Ok(admin_get(webhook.admin, "/ready")?.0 == 503)
    })
    .context("/ready did not turn 503")?;
    // New connections are refused once the listener is closed.
    poll(Duration::from_secs(10), || {
        Ok(TcpStream::connect(webhook.client.https).is_err())
    })?;

    tls.write_all(rest)?;
    tls.flush()?;
    let raw = read_until_closed(&mut tls)?;
    let (status, _, body) = split_response(&raw)?;
    assert_eq!(status, 200);
    assert_eq!(
        serde_json::from_slice::<Value>(&body)?["response"]["uid"],
        "in-flight"
    );

    let exit = webhook.wait_exit(Duration::from_secs(20))?;
    assert_eq!(exit, Some(0), "logs: {:?}", webhook.logs.lock().unwrap());
    Ok(())
}

/// A second signal ends the shutdown delay at once (an operator's second Ctrl-C), and during the
/// drain it closes what is still in flight instead of waiting out the grace period.
#[test]
fn a_second_signal_stops_at_once() -> Result<()> {
    // During the shutdown delay.
    let mut webhook = Webhook::start(&["--shutdown-delay", "60s", "--drain-grace", "60s"])?;
    webhook.wait_ready()?;
    webhook.sigterm();
    poll(Duration::from_secs(10), || {
        Ok(admin_get(webhook.admin, "/ready")?.0 == 503)
    })?;
    webhook.sigterm();
    assert_eq!(webhook.wait_exit(Duration::from_secs(10))?, Some(0));
    assert!(webhook.logged("second signal (SIGTERM): stopping now"));

    // During the drain, with a request whose body never comes.
    let mut webhook = Webhook::start(&["--drain-grace", "60s"])?;
    webhook.wait_ready()?;
    let mut tls = webhook.client.connect()?;
    let head = request_head("POST", "/mutate", "application/json", 1000, false);
    tls.write_all(head.as_bytes())?;
    tls.flush()?;
    webhook.sigterm();
    poll(Duration::from_secs(10), || {
        Ok(TcpStream::connect(webhook.client.https).is_err())
    })?;
    assert!(webhook.child_alive(), "it waits for the request in flight");
    assert!(kill(webhook.child.id(), "-INT"), "kill -INT failed");
    assert_eq!(webhook.wait_exit(Duration::from_secs(10))?, Some(0));
    assert!(webhook.logged("second signal (SIGINT): stopping now"));
    assert!(webhook.logged("requests still in flight; closing them"));
    Ok(())
}

#[test]
fn bad_flags_exit_64_listing_every_problem() -> Result<()> {
    let out = Command::new(binary())
        .args([
            "serve",
            "--listen",
            "nowhere",
            "--sidecar-mode",
            "sidecar",
            "--cert",
            "only-cert.pem",
            "--log-format",
            "xml",
        ])
        .env_remove("GEMBOK_INJECTOR_CERT_DIR")
        .output()?;
    assert_eq!(out.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&out.stderr);
    for needle in [
        "--listen",
        "--sidecar-mode",
        "--cert and --key",
        "--log-format",
    ] {
        assert!(stderr.contains(needle), "no mention of {needle}: {stderr}");
    }
    // Unknown flags are listed with the bad values, not instead of them; a value starting with
    // a dash is its flag's value.
    let out = Command::new(binary())
        .args([
            "serve",
            "--no-such-flag",
            "--listen",
            "x",
            "--header-timeout",
            "-1s",
            "--proxy-image",
            "ghcr.io/gembok/gembok-proxy:",
        ])
        .args(["--cert-dir", "certs"])
        .output()?;
    assert_eq!(out.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&out.stderr);
    for needle in [
        "gembok-injector: invalid configuration (4 problems):\n",
        "\n  --proxy-image: \"ghcr.io/gembok/gembok-proxy:\" is not an image reference: the tag ``",
        "\n  --no-such-flag: unknown flag",
        "\n  --listen: \"x\"",
        "\n  --header-timeout: \"-1s\"",
        "\nRun `gembok-injector --help` for usage.",
    ] {
        assert!(stderr.contains(needle), "no {needle:?}: {stderr}");
    }
    // Environment variables are read like flags (docs/contracts.md section 3), and a bad one is
    // named.
    let out = Command::new(binary())
        .args(["serve", "--cert-dir", "certs"])
        .env("GEMBOK_INJECTOR_ADMIN", "not-an-address")
        .output()?;
    assert_eq!(out.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("GEMBOK_INJECTOR_ADMIN (--admin): \"not-an-address\""),
        "{stderr}"
    );
    Ok(())
}

/// Runs the injector's command line with `args` and `stdin`: exit code, stdout, stderr.
fn run(args: &[&str], stdin: &str) -> Result<(Option<i32>, String, String)> {
    let out = fed(Command::new(binary()).args(args), stdin)?;
    Ok((
        out.status.code(),
        String::from_utf8(out.stdout)?,
        String::from_utf8(out.stderr)?,
    ))
}

/// `audit` on a cluster listing (`kubectl get namespaces,pods -A -o yaml` prints a List): a pod
/// the real `inject` produced passes, its uninjected twin is reported with what to restart, and
/// an injector configured with another image reports the injected one as stale. Exit 1 when
/// anything is found, 0 when nothing is, 65 for input that is not Kubernetes YAML.
#[test]
fn audit_finds_running_pods_without_the_sidecar_or_with_another_image() -> Result<()> {
    let pod = |name: &str| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: shop\n  annotations:\n    gembok.io/inbound: \"8443=8080\"\n  ownerReferences:\n  - {{apiVersion: apps/v1, kind: ReplicaSet, name: {name}-rs, uid: u, controller: true}}\nspec:\n  containers:\n  - name: app\n    image: shop/app:1\n"
        )
    };
    let image = ["--proxy-image", "ghcr.io/gembok/gembok-proxy:test"];
    let (code, injected, _) = run(&[&["inject", "-f", "-"][..], &image].concat(), &pod("new"))?;
    assert_eq!(code, Some(0));
    let indent = |doc: &str| {
        doc.trim_start_matches("---\n")
            .lines()
            .enumerate()
            .map(|(i, l)| format!("{}{l}\n", if i == 0 { "- " } else { "  " }))
            .collect::<String>()
    };
    let list = |pods: &[&str]| {
        let mut text = "apiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: Namespace\n  metadata: {name: shop, labels: {gembok-injection: enabled}}\n".to_owned();
        for p in pods {
            text.push_str(&indent(p));
        }
        text
    };
    let audit = [&["audit", "-f", "-"][..], &image].concat();

    let (code, out, err) = run(&audit, &list(&[&injected, &pod("old")]))?;
    assert_eq!(code, Some(1), "{out}{err}");
    assert_eq!(out.lines().count(), 1, "{out}");
    assert!(
        out.starts_with("shop/old (ReplicaSet/old-rs): runs without gembok-proxy"),
        "{out}"
    );
    assert!(
        err.contains("2 running pods, 2 selected by the webhook, 1 to fix"),
        "{err}"
    );

    let (code, out, err) = run(&audit, &list(&[&injected]))?;
    assert_eq!((code, out.as_str()), (Some(0), ""), "{err}");

    let upgraded = [
        "audit",
        "-f",
        "-",
        "--proxy-image",
        "ghcr.io/gembok/gembok-proxy:next",
    ];
    let (code, out, _) = run(&upgraded, &list(&[&injected]))?;
    assert_eq!(code, Some(1));
    assert!(
        out.contains("shop/new (ReplicaSet/new-rs): gembok-proxy runs ghcr.io/gembok/gembok-proxy:test, the injector now gives ghcr.io/gembok/gembok-proxy:next"),
        "{out}"
    );

    // The same findings as JSON, for automation: the report on stdout, the exit code as before.
    let json = [&audit[..], &["--output", "json"]].concat();
    let (code, out, err) = run(&json, &list(&[&injected, &pod("old")]))?;
    assert_eq!(code, Some(1), "{out}{err}");
    let report: serde_json::Value = serde_json::from_str(&out).context(out.clone())?;
    assert_eq!(
        (report["pods"].as_u64(), report["inScope"].as_u64()),
        (Some(2), Some(2))
    );
    let findings = report["findings"].as_array().context("findings")?;
    assert_eq!(findings.len(), 1, "{report}");
    let f = &findings[0];
    assert_eq!(
        (&f["namespace"], &f["pod"], &f["owner"], &f["problem"]),
        (
            &"shop".into(),
            &"old".into(),
            &"ReplicaSet/old-rs".into(),
            &"Missing".into()
        ),
        "{f}"
    );
    assert!(
        f["message"]
            .as_str()
            .is_some_and(|m| m.contains("runs without")),
        "{f}"
    );
    let stale = [&upgraded[..], &["-o", "json"]].concat();
    let (code, out, _) = run(&stale, &list(&[&injected]))?;
    assert_eq!(code, Some(1));
    let report: serde_json::Value = serde_json::from_str(&out).context(out.clone())?;
    let f = &report["findings"][0];
    assert_eq!(f["problem"], "StaleImage", "{f}");
    assert_eq!(f["wanted"], "ghcr.io/gembok/gembok-proxy:next", "{f}");
    let (code, out, _) = run(&json, &list(&[&injected]))?;
    assert_eq!(code, Some(0));
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&out)?["findings"],
        serde_json::json!([])
    );
    let (code, _, err) = run(&[&audit[..], &["-o", "yaml"]].concat(), "")?;
    assert_eq!(code, Some(64), "{err}");
    assert!(
        err.contains("--output: \"yaml\" is not text or json"),
        "{err}"
    );

    let (code, _, err) = run(&audit, "- not: [a kubernetes object")?;
    assert_eq!(code, Some(65), "{err}");
    Ok(())
}

/// A pod the injector injects: one container, one inbound mapping.
const ANNOTATED_POD: &str = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: a\n  annotations:\n    gembok.io/inbound: \"8443=8080\"\nspec:\n  containers:\n  - name: a\n    image: a:1\n";

/// `--proxy-uid none` (OpenShift's restricted SCC assigns the UID) leaves the sidecar's user and
/// group unset but keeps it non-root; the default fixes both at 65532; 0 is refused (exit 64).
#[test]
fn the_real_injector_fixes_the_proxy_user_unless_told_to_leave_it_to_the_platform() -> Result<()> {
    let (code, fixed, err) = run(&["inject", "-f", "-"], ANNOTATED_POD)?;
    assert_eq!(code, Some(0), "{err}");
    assert!(
        fixed.contains("runAsUser: 65532") && fixed.contains("runAsGroup: 65532"),
        "{fixed}"
    );
    let (code, left, err) = run(&["inject", "-f", "-", "--proxy-uid", "none"], ANNOTATED_POD)?;
    assert_eq!(code, Some(0), "{err}");
    assert!(
        !left.contains("runAsUser") && !left.contains("runAsGroup"),
        "{left}"
    );
    assert!(left.contains("runAsNonRoot: true"), "{left}");
    let (code, _, err) = run(&["inject", "-f", "-", "--proxy-uid", "0"], ANNOTATED_POD)?;
    assert_eq!(code, Some(64), "{err}");
    assert!(err.contains("--proxy-uid: 0 is root"), "{err}");
    Ok(())
}

#[test]
fn inject_command_reads_stdin_and_refuses_bad_annotations_without_output() -> Result<()> {
    let good = ANNOTATED_POD;
    let (code, once, _) = run(&["inject", "-f", "-"], good)?;
    assert_eq!(code, Some(0));
    assert!(
        once.contains("name: gembok-proxy") && once.contains("gembok.io/status"),
        "{once}"
    );
    let (code, twice, _) = run(&["inject", "-f", "-"], &once)?;
    assert_eq!(code, Some(0));
    assert_eq!(twice, once, "injecting twice changed the output");

    let bad = good.replace("8443=8080", "8443=http");
    let (code, stdout, stderr) = run(&["inject", "-f", "-"], &bad)?;
    assert_eq!(code, Some(65));
    assert!(
        stdout.is_empty(),
        "nothing may be written when refused: {stdout}"
    );
    assert!(
        stderr.contains("Pod a: annotation gembok.io/inbound=\"8443=http\""),
        "{stderr}"
    );
    let (code, stdout, _) = run(&["inject", "-f", "-", "--explain"], &bad)?;
    assert_eq!(code, Some(65));
    assert!(stdout.contains("reject"), "{stdout}");
    let (code, _, stderr) = run(&["inject", "-f", "/nonexistent/file.yaml"], "")?;
    assert_eq!(code, Some(66), "{stderr}");
    let (code, _, stderr) = run(&["inject", "-f", "-"], "a: [unclosed")?;
    assert_eq!(code, Some(65), "{stderr}");

    // --istio: every namespace counts as Istio-injected.
    let (code, stdout, stderr) = run(&["inject", "-f", "-", "--istio"], good)?;
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stdout.contains("traffic.sidecar.istio.io/excludeInboundPorts: 8443,15700"),
        "{stdout}"
    );
    assert!(
        stderr.contains("warning: Istio also injects this pod (namespace is Istio-injected)"),
        "{stderr}"
    );
    assert!(!once.contains("istio"), "{once}");

    // kubectl's YAML 1.1: plain 0644 is an integer, and strings it could misread come out quoted.
    let yaml11 = format!(
        "{good}  volumes:\n  - name: config\n    configMap:\n      name: c\n      defaultMode: 0644\n"
    )
    .replace("annotations:\n", "annotations:\n    example.com/flag: \"on\"\n");
    let (code, stdout, stderr) = run(&["inject", "-f", "-"], &yaml11)?;
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.contains("defaultMode: 420"), "{stdout}");
    assert!(stdout.contains("example.com/flag: 'on'"), "{stdout}");
    Ok(())
}

/// `inject` prints every skip reason on stderr, naming the object (the README's promise), and
/// still exits 0 with the object unchanged; input that is not UTF-8 is unreadable input (65),
/// not a missing file (66), whether it comes from stdin or a file.
#[test]
fn inject_command_prints_skip_reasons_and_refuses_input_that_is_not_text() -> Result<()> {
    let plain = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: plain\nspec:\n  containers:\n  - name: a\n    image: a:1\n";
    let (code, stdout, stderr) = run(&["inject", "-f", "-"], plain)?;
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stdout.contains("name: plain") && !stdout.contains("gembok-proxy"),
        "{stdout}"
    );
    assert!(
        stderr.contains(
            "gembok-injector: Pod plain: warning: sidecar not injected: neither \
             gembok.io/inbound nor gembok.io/outbound is set"
        ),
        "{stderr}"
    );
    let opted_out = plain.replace(
        "name: plain\n",
        "name: plain\n  labels:\n    gembok.io/inject: \"false\"\n",
    );
    let (code, _, stderr) = run(&["inject", "-f", "-"], &opted_out)?;
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stderr.contains("Pod plain: warning: sidecar not injected: the pod opts out"),
        "{stderr}"
    );

    let not_text = b"apiVersion: v1\nkind: Pod\nmetadata:\n  name: \xff\n";
    let out = fed(Command::new(binary()).args(["inject", "-f", "-"]), not_text)?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(65), "{stderr}");
    assert!(out.stdout.is_empty());
    assert!(stderr.contains("stdin is not UTF-8 text"), "{stderr}");
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("pod.yaml");
    std::fs::write(&file, not_text)?;
    let path = file.to_str().context("temp path")?;
    let out = fed(Command::new(binary()).args(["inject", "-f", path]), "")?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(65), "{stderr}");
    assert!(stderr.contains("pod.yaml is not UTF-8 text"), "{stderr}");
    Ok(())
}

/// `inject` on a one-container Pod with `annotation: value`: (exit code, stdout, stderr).
fn inject_annotated(annotation: &str, value: &str) -> Result<(Option<i32>, String, String)> {
    inject_annotations(&[(annotation, value)])
}

/// [`inject_annotated`] with several annotations.
fn inject_annotations(annotations: &[(&str, &str)]) -> Result<(Option<i32>, String, String)> {
    let annotations: String = annotations
        .iter()
        .map(|(key, value)| format!("    {key}: \"{value}\"\n"))
        .collect();
    let pod = format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: a\n  annotations:\n    gembok.io/inbound: \"8443=8080\"\n{annotations}spec:\n  containers:\n  - name: a\n    image: a:1\n"
    );
    run(&["inject", "-f", "-"], &pod)
}

/// The proxy's configuration check with `variable=value` in its environment: every problem
/// listed, exit 64 (a bad `--max-connections` makes sure it never starts serving). Its stderr.
fn proxy_config_check(variable: &str, value: &str) -> Result<String> {
    config_check_of(&gembok_tests::bins::proxy(), variable, value)
}

/// [`proxy_config_check`] of another build of the proxy (the FIPS one).
fn config_check_of(proxy: &Path, variable: &str, value: &str) -> Result<String> {
    let out = Command::new(proxy)
        .args([
            "--inbound",
            "127.0.0.1:1=127.0.0.1:2",
            "--cert-dir",
            "/nonexistent",
        ])
        .arg("--max-connections=-3")
        .env(variable, value)
        .env_remove("GEMBOK_TLS12")
        .output()?;
    ensure!(out.status.code() == Some(64), "{out:?}");
    Ok(String::from_utf8(out.stderr)?)
}

/// The `, `-separated names after `before` in `text`, up to the line's end or a `)`; `auto`
/// left out.
fn names_listed(text: &str, before: &str) -> Vec<String> {
    let from = text.find(before).map_or("", |i| &text[i + before.len()..]);
    let list = from.split(['\n', ')']).next().unwrap_or_default();
    list.split(", ")
        .filter(|g| *g != "auto")
        .map(str::to_owned)
        .collect()
}

/// The value of `variable` in the env of the sidecar `inject` wrote into `injected`.
fn sidecar_env(injected: &str, variable: &str) -> Result<String> {
    let pod: Value = serde_yaml_ng::from_str(injected)?;
    let env = pod
        .pointer("/spec/initContainers/0/env")
        .and_then(Value::as_array)
        .context("the sidecar's env")?;
    env.iter()
        .find(|e| e["name"] == variable)
        .and_then(|e| e["value"].as_str())
        .map(str::to_owned)
        .with_context(|| format!("{variable} in the sidecar's env"))
}

/// What `gembok.io/key-exchange` writes, the proxy takes: both binaries name the same groups (each
/// lists them when refusing an unknown one), and the `GEMBOK_KEY_EXCHANGE` that `inject` writes
/// for all of them passes the proxy's own configuration check.
#[test]
fn the_proxy_takes_every_key_exchange_group_the_injector_writes() -> Result<()> {
    let (annotation, variable) = ("gembok.io/key-exchange", "GEMBOK_KEY_EXCHANGE");
    let (code, _, injector_err) = inject_annotated(annotation, "X448")?;
    assert_eq!(code, Some(65), "{injector_err}");
    let injector_groups = names_listed(&injector_err, "is not a key exchange group (one of ");
    let proxy_err = proxy_config_check(variable, "X448")?;
    // The value came from GEMBOK_KEY_EXCHANGE, and the problem says so.
    assert!(
        proxy_err.contains("GEMBOK_KEY_EXCHANGE (--key-exchange): `X448`"),
        "{proxy_err}"
    );
    let proxy_groups = names_listed(&proxy_err, "is not one of ");
    assert!(injector_groups.len() >= 7, "{injector_groups:?}");
    assert_eq!(injector_groups, proxy_groups);

    let all = injector_groups.join(",").to_lowercase();
    let (code, injected, stderr) = inject_annotated(annotation, &all)?;
    assert_eq!(code, Some(0), "{stderr}");
    let written = sidecar_env(&injected, variable)?;
    assert_eq!(written, injector_groups.join(","));
    let proxy_err = proxy_config_check(variable, &written)?;
    assert!(!proxy_err.contains("--key-exchange"), "{proxy_err}");
    Ok(())
}

/// What `gembok.io/cipher-suites` writes, the proxy takes: the injector's suites are the
/// proxy's TLS 1.3 ones (each binary lists its own when refusing an unknown name; the proxy's
/// others need `--tls12`, which an injected sidecar never has), and the `GEMBOK_CIPHER_SUITES`
/// that `inject` writes for all of them, given in IANA spelling, passes the proxy's own check.
#[test]
fn the_proxy_takes_every_cipher_suite_the_injector_writes() -> Result<()> {
    let (annotation, variable) = ("gembok.io/cipher-suites", "GEMBOK_CIPHER_SUITES");
    let (code, _, injector_err) = inject_annotated(annotation, "TLS_AES_128_CCM_SHA256")?;
    assert_eq!(code, Some(65), "{injector_err}");
    let injector_suites = names_listed(&injector_err, "is not a TLS 1.3 cipher suite (one of ");
    let proxy_err = proxy_config_check(variable, "TLS_AES_128_CCM_SHA256")?;
    assert!(
        proxy_err.contains("GEMBOK_CIPHER_SUITES (--cipher-suites): `TLS_AES_128_CCM_SHA256`"),
        "{proxy_err}"
    );
    let proxy_tls13: Vec<String> = names_listed(&proxy_err, "is not one of ")
        .into_iter()
        .filter(|s| s.starts_with("TLS13_"))
        .collect();
    assert_eq!(injector_suites.len(), 3, "{injector_suites:?}");
    assert_eq!(injector_suites, proxy_tls13);

    let iana: Vec<String> = injector_suites
        .iter()
        .map(|s| s.replacen("TLS13_", "tls_", 1).to_lowercase())
        .collect();
    let (code, injected, stderr) = inject_annotated(annotation, &iana.join(","))?;
    assert_eq!(code, Some(0), "{stderr}");
    let written = sidecar_env(&injected, variable)?;
    assert_eq!(written, injector_suites.join(","));
    let proxy_err = proxy_config_check(variable, &written)?;
    assert!(!proxy_err.contains("--cipher-suites"), "{proxy_err}");
    Ok(())
}

/// Under `gembok.io/fips: "true"` the injector refuses exactly the suites and groups the proxy's
/// FIPS build refuses to start with: every name the injector knows, one at a time, is either
/// refused by the injector or written and then taken by the FIPS build's configuration check.
/// The pod gets the FIPS image. Needs the FIPS build (`gembok_tests::bins::fips_proxy`).
#[test]
fn under_fips_the_injector_refuses_what_the_fips_proxy_refuses() -> Result<()> {
    let Some(fips) = gembok_tests::bins::fips_proxy() else {
        return Ok(());
    };
    let lists = [
        (
            "gembok.io/key-exchange",
            "GEMBOK_KEY_EXCHANGE",
            "--key-exchange",
            "X448",
            "is not a key exchange group (one of ",
        ),
        (
            "gembok.io/cipher-suites",
            "GEMBOK_CIPHER_SUITES",
            "--cipher-suites",
            "TLS_AES_128_CCM_SHA256",
            "is not a TLS 1.3 cipher suite (one of ",
        ),
    ];
    let mut refused = Vec::new();
    for (annotation, variable, flag, unknown, listing) in lists {
        let (_, _, err) = inject_annotated(annotation, unknown)?;
        let names = names_listed(&err, listing);
        assert!(names.len() >= 3, "{err}");
        for name in names {
            let (code, injected, stderr) =
                inject_annotations(&[("gembok.io/fips", "true"), (annotation, &name)])?;
            let proxy_err = config_check_of(&fips, variable, &name)?;
            let proxy_refuses =
                proxy_err.contains(&format!("({flag}): {name} is not FIPS-approved"));
            match code {
                Some(65) => {
                    assert!(stderr.contains("is not FIPS-approved"), "{stderr}");
                    assert!(proxy_refuses, "the FIPS proxy takes {name}: {proxy_err}");
                    refused.push(name);
                }
                Some(0) => {
                    assert_eq!(sidecar_env(&injected, variable)?, name);
                    assert!(
                        injected.contains(&format!(
                            "image: ghcr.io/gembok/gembok-proxy:{}-fips",
                            env!("CARGO_PKG_VERSION")
                        )),
                        "{injected}"
                    );
                    assert!(!proxy_err.contains(flag), "{name}: {proxy_err}");
                }
                other => panic!("{other:?}: {stderr}"),
            }
        }
    }
    assert_eq!(refused, ["X25519", "TLS13_CHACHA20_POLY1305_SHA256"]);
    Ok(())
}

/// `gembok.io/crl-configmap`: the file `GEMBOK_CRL` names is where the ConfigMap's key is
/// mounted in the sidecar, and the proxy's configuration check takes it.
#[test]
fn the_proxy_takes_the_revocation_list_file_the_injector_mounts() -> Result<()> {
    let (code, injected, stderr) = inject_annotated("gembok.io/crl-configmap", "gembok-crl")?;
    assert_eq!(code, Some(0), "{stderr}");
    let written = sidecar_env(&injected, "GEMBOK_CRL")?;
    let pod: Value = serde_yaml_ng::from_str(&injected)?;
    let mount = pod
        .pointer("/spec/initContainers/0/volumeMounts")
        .and_then(Value::as_array)
        .and_then(|m| m.iter().find(|m| m["name"] == "gembok-crl"))
        .context("the list's mount")?;
    let volume = pod
        .pointer("/spec/volumes")
        .and_then(Value::as_array)
        .and_then(|v| v.iter().find(|v| v["name"] == "gembok-crl"))
        .context("the list's volume")?;
    let key = volume
        .pointer("/configMap/items/0/path")
        .and_then(Value::as_str)
        .context("the mapped key")?;
    let mounted = format!("{}/{key}", mount["mountPath"].as_str().unwrap_or_default());
    assert_eq!(written, mounted);
    assert_eq!(
        volume.pointer("/configMap/name"),
        Some(&Value::from("gembok-crl"))
    );
    assert_eq!(
        volume.pointer("/configMap/optional"),
        Some(&Value::from(false))
    );
    let proxy_err = proxy_config_check("GEMBOK_CRL", &written)?;
    assert!(!proxy_err.contains("--crl"), "{proxy_err}");
    Ok(())
}

/// What the injector accepts in SAN patterns, host and server names and the log filter, the
/// proxy's own configuration check takes (it would exit 64 and crash-loop the sidecar
/// otherwise); what the proxy refuses, the injector refuses at admission (or, for the tuning
/// `log-level`, replaces by the default with a warning).
#[test]
fn the_proxy_takes_the_routes_and_log_filter_the_injector_writes() -> Result<()> {
    let inject = |annotations: &[(&str, &str)]| {
        let lines: String = annotations
            .iter()
            .map(|(k, v)| format!("    {k}: '{v}'\n"))
            .collect();
        let pod = format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: a\n  annotations:\n{lines}spec:\n  containers:\n  - name: a\n    image: a:1\n"
        );
        run(&["inject", "-f", "-"], &pod)
    };
    let refused = [
        (
            "gembok.io/allowed-sans",
            "spiffe://cluster.local/ns/a/sa/foo*",
        ),
        ("gembok.io/allowed-sans", "user@example.com"),
        ("gembok.io/allowed-sans", "spiffe:///x"),
        ("gembok.io/inbound", "8443=8080,allow-san=a=b"),
        ("gembok.io/inbound", "8443=15700"),
        ("gembok.io/outbound", "15701=999.1.1.1:8443"),
        ("gembok.io/outbound", "15701=1.2.3:8443"),
        ("gembok.io/outbound", "15701=svc:8443,server-name=123"),
    ];
    for (key, value) in refused {
        let mut annotations = vec![(key, value)];
        if key != "gembok.io/inbound" {
            annotations.push(("gembok.io/inbound", "8443=8080"));
        }
        let (code, stdout, stderr) = inject(&annotations)?;
        assert_eq!(code, Some(65), "{key}={value}: {stderr}");
        assert!(stdout.is_empty(), "{stdout}");
        assert!(stderr.contains(&format!("annotation {key}=")), "{stderr}");
    }
    for value in ["gembok_proxy=verbose", "[{", "debug,=x"] {
        let (code, stdout, stderr) = inject(&[
            ("gembok.io/inbound", "8443=8080"),
            ("gembok.io/log-level", value),
        ])?;
        assert_eq!(code, Some(0), "{stderr}");
        assert!(!stdout.contains("GEMBOK_LOG"), "{stdout}");
        assert!(
            stderr.contains("annotation gembok.io/log-level=") && stderr.contains("ignored"),
            "{stderr}"
        );
    }

    let (code, injected, stderr) = inject(&[
        (
            "gembok.io/inbound",
            "8443=8080,allow-san=spiffe://td/ns/*/sa/a;9443=9090,proxy-protocol=v2",
        ),
        ("gembok.io/allowed-sans", "*.shop.svc.cluster.local"),
        ("gembok.io/allowed-sans-configmap", "shop-callers"),
        (
            "gembok.io/outbound",
            "15701=1a.example:1;15702=[fd00::1]:1,server-name=fd00::1;15703=svc:1,server-name=10.0.0.1",
        ),
        ("gembok.io/log-level", "warn,gembok_proxy::conn=debug"),
    ])?;
    assert_eq!(code, Some(0), "{stderr}");
    assert!(injected.contains(",allow-san-file=/etc/gembok/allowed-sans/allowed-sans"));
    let pod: Value = serde_yaml_ng::from_str(&injected)?;
    let env = pod
        .pointer("/spec/initContainers/0/env")
        .and_then(Value::as_array)
        .context("the sidecar's env")?;
    let mut proxy = Command::new(gembok_tests::bins::proxy());
    // The bad --max-connections makes sure it never starts serving: exit 64, every problem listed.
    proxy.args(["--cert-dir", "/nonexistent", "--max-connections=-3"]);
    for name in ["GEMBOK_INBOUND", "GEMBOK_OUTBOUND", "GEMBOK_LOG"] {
        let value = env
            .iter()
            .find(|e| e["name"] == name)
            .and_then(|e| e["value"].as_str())
            .context(name)?;
        proxy.env(name, value);
    }
    let out = proxy.output()?;
    let proxy_err = String::from_utf8(out.stderr)?;
    assert_eq!(out.status.code(), Some(64), "{proxy_err}");
    assert!(proxy_err.contains("--max-connections"), "{proxy_err}");
    for flag in ["--inbound", "--outbound", "--log:"] {
        assert!(!proxy_err.contains(flag), "{flag}: {proxy_err}");
    }
    Ok(())
}

/// The drain delay the injector gives classic sidecars must fit the drain grace the proxy ends
/// up with (the injector keeps its own copy of the proxy's default grace): the proxy's own check
/// takes every combination, the annotation's and the default.
#[test]
fn the_proxy_takes_the_drain_settings_the_injector_writes_for_classic_sidecars() -> Result<()> {
    for drain in [None, Some("0"), Some("1"), Some("6"), Some("3600")] {
        let annotation = drain
            .map(|d| format!("    gembok.io/drain-seconds: '{d}'\n"))
            .unwrap_or_default();
        let pod = format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: a\n  annotations:\n    gembok.io/inbound: '8443=8080'\n    gembok.io/sidecar-mode: classic\n{annotation}spec:\n  containers:\n  - name: a\n    image: a:1\n"
        );
        let (code, injected, stderr) = run(&["inject", "-f", "-"], &pod)?;
        assert_eq!(code, Some(0), "{drain:?}: {stderr}");
        let pod: Value = serde_yaml_ng::from_str(&injected)?;
        let env = pod
            .pointer("/spec/containers/0/env")
            .and_then(Value::as_array)
            .context("the classic sidecar's env")?;
        let mut proxy = Command::new(gembok_tests::bins::proxy());
        // The bad --max-connections makes sure it never starts serving: exit 64, all listed.
        proxy.args(["--cert-dir", "/nonexistent", "--max-connections=-3"]);
        for e in env {
            if let (Some(name), Some(value)) = (e["name"].as_str(), e["value"].as_str()) {
                proxy.env(name, value);
            }
        }
        let out = proxy.output()?;
        let proxy_err = String::from_utf8(out.stderr)?;
        assert_eq!(out.status.code(), Some(64), "{proxy_err}");
        assert!(!proxy_err.contains("drain"), "{drain:?}: {proxy_err}");
        let delay = env.iter().any(|e| e["name"] == "GEMBOK_DRAIN_DELAY");
        assert_eq!(delay, !matches!(drain, Some("0" | "1")), "{drain:?}");
    }
    Ok(())
}

/// In a pod Istio injects, the sidecar's probes are exec probes (Istio rewrites HTTP, TCP and
/// gRPC probes to go through its own agent, which may not run yet): each command the injector
/// writes is one the proxy takes, and answers as a probe should (0 when ready and live, not 0
/// while unready, and quickly).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_proxy_answers_the_exec_probes_the_injector_writes_for_istio_pods() -> Result<()> {
    let pod = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: a\n  annotations:\n    gembok.io/inbound: '8443=8080'\nspec:\n  containers:\n  - name: a\n    image: a:1\n";
    let (code, injected, stderr) = run(&["inject", "--istio", "-f", "-"], pod)?;
    assert_eq!(code, Some(0), "{stderr}");
    let pod: Value = serde_yaml_ng::from_str(&injected)?;
    let sidecar = pod
        .pointer("/spec/initContainers")
        .and_then(Value::as_array)
        .and_then(|c| c.iter().find(|c| c["name"] == "gembok-proxy"))
        .context("the native sidecar")?;
    let pki = gembok_tests::pki::TestPki::new();
    let dir = gembok_tests::pki::CertDir::new(&pki.workload("server"));
    let app = gembok_tests::traffic::ExchangeApp::start().await;
    let proxy = gembok_tests::proxy::Proxy::builder()
        .cert_dir(&dir)
        .inbound(app.addr, "")
        .start();
    proxy.ready().await;
    for probe in ["startupProbe", "livenessProbe", "readinessProbe"] {
        assert!(
            sidecar[probe].get("httpGet").is_none(),
            "{probe}: {sidecar}"
        );
        let command: Vec<String> =
            serde_json::from_value(sidecar[probe]["exec"]["command"].clone())
                .with_context(|| format!("{probe}: {sidecar}"))?;
        assert_eq!(command[..2], ["gembok-proxy", "wait-ready"], "{probe}");
        // The pod's admin port is 15700; this proxy's is wherever it could bind.
        let args: Vec<String> = command[1..]
            .iter()
            .map(|a| match a.as_str() {
                "127.0.0.1:15700" => proxy.admin.to_string(),
                _ => a.clone(),
            })
            .collect();
        let started = Instant::now();
        let out = Command::new(gembok_tests::bins::proxy())
            .args(&args)
            .output()?;
        assert_eq!(
            out.status.code(),
            Some(0),
            "{probe} {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let timeout = sidecar[probe]["timeoutSeconds"]
            .as_u64()
            .context("timeoutSeconds")?;
        assert!(
            started.elapsed() < Duration::from_secs(timeout),
            "{probe} too slow"
        );
    }
    // Without a certificate the proxy is live but not ready: the probes say so.
    let empty = tempfile::tempdir()?;
    let unready = gembok_tests::proxy::Proxy::builder()
        .args(["--cert-dir", empty.path().to_str().context("path")?])
        .inbound(app.addr, "")
        .start();
    for (probe, ok) in [("readinessProbe", false), ("livenessProbe", true)] {
        let command: Vec<String> =
            serde_json::from_value(sidecar[probe]["exec"]["command"].clone())?;
        let args: Vec<String> = command[1..]
            .iter()
            .map(|a| match a.as_str() {
                "127.0.0.1:15700" => unready.admin.to_string(),
                _ => a.clone(),
            })
            .collect();
        let out = Command::new(gembok_tests::bins::proxy())
            .args(&args)
            .output()?;
        assert_eq!(out.status.success(), ok, "{probe}: {out:?}");
    }
    Ok(())
}

/// `inject` on a file kept in git: the binary writes a document it leaves alone exactly as it
/// read it, and an injected one with its comment lines and its key order.
#[test]
fn inject_changes_a_file_only_where_it_injects() -> Result<()> {
    let service = "# front door\napiVersion: v1\nkind: Service\nmetadata: {name: web}  # flow\nspec:\n  ports:\n  - port: \"443\"\n";
    let pod = "---\n# the web pod\napiVersion: v1\nkind: Pod\nmetadata:\n  name: web\n  annotations:\n    gembok.io/inbound: \"8443=8080\"\nspec:\n  containers:\n  - name: web\n    image: web:1\n";
    let (code, out, stderr) = run(&["inject", "-f", "-"], &format!("{service}{pod}"))?;
    assert_eq!(code, Some(0), "{stderr}");
    let (kept, injected) = out.split_at(service.len().min(out.len()));
    assert_eq!(kept, service);
    assert!(
        injected
            .starts_with("---\n# the web pod\napiVersion: v1\nkind: Pod\nmetadata:\n  name: web\n"),
        "{injected}"
    );
    assert!(
        injected.contains("  - name: web\n    image: web:1\n  initContainers:\n"),
        "{injected}"
    );
    Ok(())
}
