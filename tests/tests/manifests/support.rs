//! Shared helpers: where things are, rendering with `kubectl kustomize`, running the real
//! `gembok-injector inject`, and reading Kubernetes objects as JSON values.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, OnceLock, PoisonError};

use anyhow::{Context as _, Result, bail};
use serde::Deserialize as _;
use serde_json::Value;

/// Every deployable kustomization: the three environments and the three production regions.
pub const TARGETS: [&str; 6] = [
    "overlays/development",
    "overlays/staging",
    "overlays/production",
    "clusters/us",
    "clusters/eu",
    "clusters/asia",
];
pub const REGIONS: [&str; 3] = ["us", "eu", "asia"];
/// Production with `components/classic-sidecars` (Kubernetes 1.25-1.28): a test fixture, not a
/// deployment target.
pub const CLASSIC_FIXTURE: &str = "tests/classic-sidecars";
/// Production with `components/fips` (every sidecar on the proxy's FIPS build): a test fixture.
pub const FIPS_FIXTURE: &str = "tests/fips";
pub const SERVICES: [&str; 4] = ["product-catalog", "payment", "recommendation", "auth"];
/// The shop's service-to-service calls (caller, callee), by name (issue 4).
pub const SERVICE_CALLS: [(&str, &str); 2] =
    [("product-catalog", "recommendation"), ("payment", "auth")];
pub const APP_NAMESPACE: &str = "ecommerce";
pub const PROXY_CONTAINER: &str = "gembok-proxy";

pub use gembok_tests::repo::root as repo;

pub fn manifests_dir() -> PathBuf {
    repo().join("manifests")
}

/// `manifests/README.md`, the operations guide.
pub fn readme() -> String {
    fs::read_to_string(manifests_dir().join("README.md")).expect("manifests/README.md")
}

/// The manifest files of `dir` (what `kubectl apply -f <dir>` reads), sorted.
pub fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<_> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("dir entry").path())
        .filter(|p| {
            p.is_file()
                && matches!(
                    p.extension().and_then(|e| e.to_str()),
                    Some("yaml" | "yml" | "json")
                )
        })
        .collect();
    files.sort();
    files
}

/// `kubectl kustomize manifests/<target>` as text. Rendered once per test process: tests that
/// compare targets (regions against each other, injection against the rendered injector) ask
/// for the same target several times.
pub fn render_text(target: &str) -> Result<String> {
    static RENDERED: OnceLock<Mutex<HashMap<String, String>>> = OnceLock::new();
    let cache = RENDERED.get_or_init(Default::default);
    let cached = cache
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .get(target)
        .cloned();
    if let Some(text) = cached {
        return Ok(text);
    }
    let text = kustomize(target)?;
    cache
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .insert(target.to_owned(), text.clone());
    Ok(text)
}

fn kustomize(target: &str) -> Result<String> {
    let dir = manifests_dir().join(target);
    let out = Command::new("kubectl")
        .arg("kustomize")
        .arg(&dir)
        .output()
        .context("running kubectl (is it installed?)")?;
    if !out.status.success() {
        bail!(
            "kubectl kustomize {} failed: {}",
            dir.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8(out.stdout)?)
}

pub fn render(target: &str) -> Vec<Value> {
    let text = render_text(target).unwrap_or_else(|e| panic!("{target}: {e:#}"));
    parse_docs(&text).unwrap_or_else(|e| panic!("{target}: {e:#}"))
}

/// Multi-document YAML to JSON values (empty documents dropped).
pub fn parse_docs(text: &str) -> Result<Vec<Value>> {
    let mut docs = Vec::new();
    for doc in serde_yaml_ng::Deserializer::from_str(text) {
        let value = Value::deserialize(doc).context("parsing YAML")?;
        if !value.is_null() {
            docs.push(value);
        }
    }
    Ok(docs)
}

/// The `gembok-injector` binary: `GEMBOK_INJECTOR_BIN`, else next to this test's target dir.
pub fn injector_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("GEMBOK_INJECTOR_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("current_exe");
    // target/<profile>/deps/manifests-<hash> -> target/<profile>/gembok-injector
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test binary lives in target/<profile>/deps");
    profile_dir.join("gembok-injector")
}

/// The environment variables of the rendered injector Deployment that shape what it does to a pod
/// (`inject` reads the same variables as `serve`), so offline injection matches the deployed one.
pub const INJECTOR_SIDECAR_SETTINGS: [&str; 6] = [
    "GEMBOK_INJECTOR_PROXY_IMAGE",
    "GEMBOK_INJECTOR_PROXY_IMAGE_FIPS",
    "GEMBOK_INJECTOR_FIPS",
    "GEMBOK_INJECTOR_PROXY_PULL_POLICY",
    "GEMBOK_INJECTOR_SIDECAR_MODE",
    "GEMBOK_INJECTOR_UNANNOTATED_PODS",
];

/// `INJECTOR_SIDECAR_SETTINGS` as set on the rendered `gembok-system/gembok-injector`.
pub fn injector_settings(objs: &[Value]) -> Vec<(String, String)> {
    let Some(d) = find(objs, "Deployment", "gembok-system", "gembok-injector") else {
        return Vec::new();
    };
    arr(&d["spec"]["template"]["spec"]["containers"][0]["env"])
        .iter()
        .filter_map(|e| {
            let n = e["name"].as_str()?;
            let v = e["value"].as_str()?;
            INJECTOR_SIDECAR_SETTINGS
                .contains(&n)
                .then(|| (n.to_owned(), v.to_owned()))
        })
        .collect()
}

/// Runs the real `gembok-injector inject -f -` over the rendered target, configured like the
/// rendered injector Deployment (unless `extra` overrides a setting with a flag).
pub fn inject_text(input: &str, extra: &[&str]) -> Result<String> {
    let settings = injector_settings(&parse_docs(input)?);
    inject_text_with(input, extra, &settings)
}

/// Runs the real `gembok-injector inject -f -` with exactly these settings in its environment.
pub fn inject_text_with(input: &str, extra: &[&str], env: &[(String, String)]) -> Result<String> {
    let bin = injector_bin();
    if !bin.exists() {
        bail!(
            "{} not found: build it first (cargo build -p gembok-injector) or set GEMBOK_INJECTOR_BIN",
            bin.display()
        );
    }
    let mut child = Command::new(&bin)
        .args(["inject", "-f", "-"])
        .args(extra)
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    let mut stdin = child.stdin.take().expect("piped stdin");
    let input = input.to_owned();
    let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
    let out = child.wait_with_output()?;
    writer.join().expect("stdin writer")?;
    if !out.status.success() {
        bail!(
            "gembok-injector inject failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8(out.stdout)?)
}

/// The rendered target after injection.
pub fn injected(target: &str) -> Vec<Value> {
    let text = render_text(target).unwrap_or_else(|e| panic!("{target}: {e:#}"));
    let out = inject_text(&text, &[]).unwrap_or_else(|e| panic!("{target}: {e:#}"));
    parse_docs(&out).unwrap_or_else(|e| panic!("{target}: injector output: {e:#}"))
}

/// Collects failures and panics once with all of them, so one run shows every problem.
#[derive(Default)]
pub struct Failures(Vec<String>);

impl Failures {
    pub fn push(&mut self, msg: impl Into<String>) {
        self.0.push(msg.into());
    }
    pub fn check(&mut self, ok: bool, msg: impl FnOnce() -> String) {
        if !ok {
            self.0.push(msg());
        }
    }
    pub fn assert_none(self, what: &str) {
        assert!(
            self.0.is_empty(),
            "{what}: {} problem(s):\n  - {}",
            self.0.len(),
            self.0.join("\n  - ")
        );
    }
}

// ---- object accessors ------------------------------------------------------------------

pub fn kind(o: &Value) -> &str {
    o["kind"].as_str().unwrap_or("")
}
pub fn name(o: &Value) -> &str {
    o["metadata"]["name"].as_str().unwrap_or("")
}
pub fn namespace(o: &Value) -> &str {
    o["metadata"]["namespace"].as_str().unwrap_or("")
}
pub fn id(o: &Value) -> String {
    match namespace(o) {
        "" => format!("{}/{}", kind(o), name(o)),
        ns => format!("{}/{}/{}", kind(o), ns, name(o)),
    }
}
pub fn str_map(v: &Value) -> BTreeMap<String, String> {
    v.as_object()
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| v.as_str().map(|s| (k.clone(), s.to_owned())))
                .collect()
        })
        .unwrap_or_default()
}
pub fn arr(v: &Value) -> &[Value] {
    v.as_array().map(Vec::as_slice).unwrap_or(&[])
}
pub fn of_kind<'a>(objs: &'a [Value], k: &'a str) -> impl Iterator<Item = &'a Value> + 'a {
    objs.iter().filter(move |o| kind(o) == k)
}
pub fn find<'a>(objs: &'a [Value], k: &str, ns: &str, n: &str) -> Option<&'a Value> {
    objs.iter()
        .find(|o| kind(o) == k && namespace(o) == ns && name(o) == n)
}

/// A workload's pod template (or the Pod itself), with the workload it came from.
pub struct PodTemplate<'a> {
    pub owner: &'a Value,
    pub template: &'a Value,
}
impl PodTemplate<'_> {
    pub fn namespace(&self) -> &str {
        namespace(self.owner)
    }
    pub fn labels(&self) -> BTreeMap<String, String> {
        str_map(&self.template["metadata"]["labels"])
    }
    pub fn annotations(&self) -> BTreeMap<String, String> {
        str_map(&self.template["metadata"]["annotations"])
    }
    pub fn spec(&self) -> &Value {
        &self.template["spec"]
    }
    /// App containers followed by init containers.
    pub fn all_containers(&self) -> impl Iterator<Item = &Value> {
        arr(&self.spec()["containers"])
            .iter()
            .chain(arr(&self.spec()["initContainers"]))
    }
    /// Containers that run for the pod's lifetime: app containers and native sidecars.
    pub fn long_running(&self) -> impl Iterator<Item = &Value> {
        self.all_containers().filter(|c| {
            arr(&self.spec()["containers"]).contains(c) || c["restartPolicy"] == "Always"
        })
    }
    pub fn container_ports(&self) -> Vec<(String, i64)> {
        self.long_running()
            .flat_map(|c| arr(&c["ports"]))
            .map(|p| {
                (
                    p["name"].as_str().unwrap_or("").to_owned(),
                    p["containerPort"].as_i64().unwrap_or(-1),
                )
            })
            .collect()
    }
    pub fn service_account(&self) -> &str {
        self.spec()["serviceAccountName"]
            .as_str()
            .unwrap_or("default")
    }
    pub fn app(&self) -> String {
        self.labels()
            .get("app.kubernetes.io/name")
            .cloned()
            .unwrap_or_default()
    }
}

/// The ConfigMap key that `gembok.io/allowed-sans-configmap` mounts (injector README).
pub use gembok_injector::sidecar::ALLOWED_SANS_KEY;

/// Who the pod's inbound ports admit where a port has no list of its own: the patterns of
/// `gembok.io/allowed-sans` and of the `allowed-sans` key of the ConfigMap that
/// `gembok.io/allowed-sans-configmap` names, found in the same render (the injector passes
/// both to the proxy; a peer either admits is admitted). The ConfigMap's text goes through the
/// proxy's own parser (`gembok_certwatch::san::parse_list`): a list the proxy would refuse, or a
/// named ConfigMap that is not in the render or lacks the key, is an error.
pub fn allowed_sans(objs: &[Value], pod: &PodTemplate<'_>) -> Result<Vec<String>, String> {
    let ann = pod.annotations();
    let mut patterns: Vec<String> = ann
        .get("gembok.io/allowed-sans")
        .map(|v| v.split(',').map(|s| s.trim().to_owned()).collect())
        .unwrap_or_default();
    if let Some(cm) = ann.get("gembok.io/allowed-sans-configmap") {
        let who = format!("{}/{} names ConfigMap {cm}", pod.namespace(), pod.app());
        let obj = find(objs, "ConfigMap", pod.namespace(), cm)
            .ok_or_else(|| format!("{who}, which is not in the render"))?;
        let text = obj["data"][ALLOWED_SANS_KEY]
            .as_str()
            .ok_or_else(|| format!("{who}, which has no data key {ALLOWED_SANS_KEY:?}"))?;
        let list = gembok_certwatch::san::parse_list(text.as_bytes())
            .map_err(|e| format!("{who}, whose list the proxy refuses: {e}"))?;
        patterns.extend(list.iter().map(ToString::to_string));
    }
    Ok(patterns)
}

pub fn pod_templates(objs: &[Value]) -> Vec<PodTemplate<'_>> {
    objs.iter()
        .filter_map(|o| {
            let template = match kind(o) {
                "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet" | "Job" => {
                    &o["spec"]["template"]
                }
                "CronJob" => &o["spec"]["jobTemplate"]["spec"]["template"],
                "Pod" => o,
                _ => return None,
            };
            Some(PodTemplate { owner: o, template })
        })
        .collect()
}

/// Kubernetes label selector semantics (matchLabels + matchExpressions). `None` selects nothing.
pub fn selector_matches(selector: &Value, labels: &BTreeMap<String, String>) -> bool {
    let Some(sel) = selector.as_object() else {
        return false;
    };
    for (k, v) in str_map(&selector["matchLabels"]) {
        if labels.get(&k) != Some(&v) {
            return false;
        }
    }
    for e in arr(sel.get("matchExpressions").unwrap_or(&Value::Null)) {
        let key = e["key"].as_str().unwrap_or("");
        let values: Vec<&str> = arr(&e["values"]).iter().filter_map(Value::as_str).collect();
        let have = labels.get(key).map(String::as_str);
        let ok = match e["operator"].as_str().unwrap_or("") {
            "In" => have.is_some_and(|h| values.contains(&h)),
            "NotIn" => have.is_none_or(|h| !values.contains(&h)),
            "Exists" => have.is_some(),
            "DoesNotExist" => have.is_none(),
            _ => false,
        };
        if !ok {
            return false;
        }
    }
    true
}

/// A Service-style selector (plain map).
pub fn map_selector_matches(selector: &Value, labels: &BTreeMap<String, String>) -> bool {
    let sel = str_map(selector);
    !sel.is_empty() && sel.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// Labels of a namespace as the API server sees them (including kubernetes.io/metadata.name).
pub fn namespace_labels(objs: &[Value], ns: &str) -> BTreeMap<String, String> {
    let mut labels = of_kind(objs, "Namespace")
        .find(|o| name(o) == ns)
        .map(|o| str_map(&o["metadata"]["labels"]))
        .unwrap_or_default();
    labels.insert("kubernetes.io/metadata.name".into(), ns.into());
    labels
}

/// `gembok.io/inbound`: `TLSPORT=APPPORT[,allow-san=...]` entries separated by `;`.
pub fn inbound_ports(annotation: &str) -> Vec<(i64, i64)> {
    annotation
        .split(';')
        .filter(|e| !e.trim().is_empty())
        .map(|e| {
            let mapping = e.split(',').next().unwrap_or("");
            let (tls, app) = mapping.split_once('=').unwrap_or(("", ""));
            (
                tls.trim().parse().unwrap_or(-1),
                app.trim().parse().unwrap_or(-1),
            )
        })
        .collect()
}

/// `gembok.io/outbound`: `LOCALPORT=HOST:PORT[,...]` entries separated by `;`.
pub fn outbound_routes(annotation: &str) -> Vec<(i64, String, i64)> {
    annotation
        .split(';')
        .filter(|e| !e.trim().is_empty())
        .map(|e| {
            let mapping = e.split(',').next().unwrap_or("");
            let (local, target) = mapping.split_once('=').unwrap_or(("", ""));
            let (host, port) = target.rsplit_once(':').unwrap_or(("", ""));
            (
                local.trim().parse().unwrap_or(-1),
                host.trim().to_owned(),
                port.trim().parse().unwrap_or(-1),
            )
        })
        .collect()
}

/// `<svc>.<ns>.svc.cluster.local` (or `.svc`) to (svc, ns).
pub fn service_host(host: &str) -> Option<(String, String)> {
    let rest = host
        .strip_suffix(".svc.cluster.local")
        .or_else(|| host.strip_suffix(".svc"))?;
    let (svc, ns) = rest.split_once('.')?;
    Some((svc.to_owned(), ns.to_owned()))
}

pub fn spiffe_id(ns: &str, sa: &str) -> String {
    format!("spiffe://cluster.local/ns/{ns}/sa/{sa}")
}

/// Go/protobuf duration ("720h", "90m", "1h30m", "15s", "500ms") in seconds; `None` for
/// anything else (a bare number included).
pub fn go_duration(s: &str) -> Option<f64> {
    let mut total = 0.0;
    let mut num = String::new();
    let mut chars = s.trim().chars().peekable();
    chars.peek()?;
    while let Some(c) = chars.next() {
        if c.is_ascii_digit() || c == '.' {
            num.push(c);
            continue;
        }
        let mut unit = c.to_string();
        if c == 'm' && chars.peek() == Some(&'s') {
            unit.push(chars.next()?);
        }
        let n: f64 = num.parse().ok()?;
        num.clear();
        total += n * match unit.as_str() {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 0.001,
            _ => return None,
        };
    }
    num.is_empty().then_some(total)
}

/// Glob match with `*` (allow-san patterns).
pub fn glob(pattern: &str, s: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == s,
        Some((pre, rest)) => {
            s.starts_with(pre) && (0..=s.len() - pre.len()).any(|i| glob(rest, &s[pre.len() + i..]))
        }
    }
}
