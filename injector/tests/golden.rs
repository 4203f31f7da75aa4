//! Golden files: `tests/golden/<case>.yaml` is the input; `<case>.injected.yaml` the expected
//! `inject` output (absent when the input is refused) and `<case>.explain.txt` the expected
//! `inject --explain` output. `UPDATE_GOLDEN=1 cargo nextest run -p gembok-injector --test golden`
//! rewrites them; review the diff.
//!
//! A `# flags: ...` line in an input sets injector-wide flags for that case (`--sidecar-mode
//! classic`, `--unannotated-pods deny`, ...), parsed by the real command line.
//!
//! For every case this also checks that the webhook answers each pod template as the CLI does
//! (the same patched pod, the same skip reason, or a denial with the same errors); that the
//! patched pod sent back (reinvocation) is allowed unchanged; that injecting twice equals
//! injecting once; and that the outputs pass `../shared/k8s/validate-manifests` (strict schemas)
//! and read the same in YAML 1.1.

use std::path::{Path, PathBuf};
use std::process::Command;

use clap::Parser as _;
use gembok_injector::annotations::AnnotationError;
use gembok_injector::cli::transform;
use gembok_injector::config::{Cli, Config, InjectConfig};
use gembok_injector::review::{self, Verdict};
use gembok_injector::workload::{self, Verdict as CliVerdict, template_pointer};
use gembok_injector::{Context, InjectorConfig};
use serde_json::{Value, json};

const IMAGE: &str = "ghcr.io/gembok/gembok-proxy:golden";
const IMAGE_FIPS: &str = "ghcr.io/gembok/gembok-proxy:golden-fips";

/// The configuration `inject -f - --proxy-image IMAGE` plus the flags of the input's
/// `# flags: ...` line, through the real command-line parser.
fn config_for(input: &str) -> InjectConfig {
    let flags: Vec<&str> = input
        .lines()
        .find_map(|l| l.strip_prefix("# flags:"))
        .map(|f| f.split_whitespace().collect())
        .unwrap_or_default();
    let args = [
        "gembok-injector",
        "inject",
        "-f",
        "-",
        "--proxy-image",
        IMAGE,
        "--proxy-image-fips",
        IMAGE_FIPS,
    ];
    let cli = Cli::try_parse_from(args.into_iter().chain(flags)).expect("flags parse");
    match cli.validate() {
        Ok(Config::Inject(config)) => config,
        other => panic!("bad # flags: line in a golden input: {other:?}"),
    }
}

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

struct Case {
    name: String,
    input: String,
    config: InjectConfig,
}

impl Case {
    fn path(&self, suffix: &str) -> PathBuf {
        golden_dir().join(format!("{}{suffix}", self.name))
    }
}

fn cases() -> Vec<Case> {
    let mut cases: Vec<Case> = std::fs::read_dir(golden_dir())
        .expect("golden dir")
        .filter_map(|e| {
            let path = e.ok()?.path();
            let file = path.file_name()?.to_str()?.to_owned();
            let name = file.strip_suffix(".yaml")?;
            if name.ends_with(".injected") {
                return None;
            }
            let input = std::fs::read_to_string(&path).ok()?;
            Some(Case {
                name: name.to_owned(),
                config: config_for(&input),
                input,
            })
        })
        .collect();
    cases.sort_by(|a, b| a.name.cmp(&b.name));
    cases
}

fn updating() -> bool {
    std::env::var_os("UPDATE_GOLDEN").is_some_and(|v| v == "1")
}

fn parse_docs(text: &str) -> Vec<Value> {
    workload::read_documents(text).expect("YAML reads")
}

#[test]
fn there_are_at_least_25_golden_inputs() {
    let n = cases().len();
    assert!(n >= 25, "only {n} golden inputs");
}

#[test]
fn cli_output_matches_the_golden_files() {
    let mut failures = Vec::new();
    for case in cases() {
        let (output, code) = transform(&case.input, &case.config);
        let explain = transform(
            &case.input,
            &InjectConfig {
                explain: true,
                ..case.config.clone()
            },
        )
        .0
        .unwrap_or_default();
        let injected_path = case.path(".injected.yaml");
        let explain_path = case.path(".explain.txt");
        if updating() {
            match &output {
                Some(out) => std::fs::write(&injected_path, out).unwrap(),
                None => {
                    let _ = std::fs::remove_file(&injected_path);
                }
            }
            std::fs::write(&explain_path, &explain).unwrap();
            continue;
        }
        let expected_explain = std::fs::read_to_string(&explain_path).unwrap_or_default();
        if explain != expected_explain {
            failures.push(format!(
                "{}: --explain differs\n--- expected\n{expected_explain}--- actual\n{explain}",
                case.name
            ));
        }
        let expected = std::fs::read_to_string(&injected_path).ok();
        match (&output, &expected) {
            (Some(out), Some(exp)) if parse_docs(out) == parse_docs(exp) => {}
            (None, None) => assert_ne!(code, 0, "{}: no output but exit 0", case.name),
            _ => failures.push(format!(
                "{}: output differs (exit {code})\n--- expected\n{}\n--- actual\n{}",
                case.name,
                expected.as_deref().unwrap_or("(none: refused)"),
                output.as_deref().unwrap_or("(none: refused)")
            )),
        }
    }
    assert!(
        failures.is_empty(),
        "{} golden failures (UPDATE_GOLDEN=1 rewrites):\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn injecting_twice_equals_injecting_once() {
    for case in cases() {
        let Some(once) = transform(&case.input, &case.config).0 else {
            continue;
        };
        let twice = transform(&once, &case.config)
            .0
            .expect("injected output is accepted again");
        assert_eq!(
            parse_docs(&once),
            parse_docs(&twice),
            "{}: second pass changed the output",
            case.name
        );
    }
}

/// The kube-apiserver shape of a Pod CREATE review.
fn admission_review(uid: &str, namespace: &str, pod: &Value) -> Value {
    json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": uid,
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "requestKind": {"group": "", "version": "v1", "kind": "Pod"},
            "requestResource": {"group": "", "version": "v1", "resource": "pods"},
            "name": pod.pointer("/metadata/name").cloned().unwrap_or(json!("")),
            "namespace": namespace,
            "operation": "CREATE",
            "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller", "groups": ["system:serviceaccounts"]},
            "object": pod,
            "oldObject": null,
            "dryRun": false,
            "options": {"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions"}
        }
    })
}

/// Every pod template in a stream, as `(namespace, {metadata, spec})`, in document order.
fn templates(docs: &[Value]) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    for doc in docs {
        if doc["kind"] == "List" {
            out.extend(templates(doc["items"].as_array().unwrap()));
            continue;
        }
        let (Some(api), Some(kind)) = (doc["apiVersion"].as_str(), doc["kind"].as_str()) else {
            continue;
        };
        let Some(pointer) = template_pointer(api, kind) else {
            continue;
        };
        let template = doc.pointer(pointer).unwrap();
        let namespace = doc
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .unwrap_or("default");
        let mut metadata = template.get("metadata").cloned().unwrap_or(json!({}));
        if let Some(m) = metadata.as_object_mut() {
            m.remove("namespace");
        }
        out.push((
            namespace.to_owned(),
            json!({"metadata": metadata, "spec": template["spec"]}),
        ));
    }
    out
}

/// The webhook's answer to a Pod CREATE review of `pod`, and its wire `response`.
fn ask(pod: &Value, uid: &str, config: &InjectorConfig, context: &Context) -> (Verdict, Value) {
    let namespace = pod["metadata"]["namespace"].as_str().unwrap();
    let body = serde_json::to_vec(&admission_review(uid, namespace, pod)).unwrap();
    let answer = review::review(&body, config, context).expect("review is answered");
    let response = wire(&answer.review);
    assert_eq!(response["uid"], json!(uid), "uid not echoed");
    (answer.result, response)
}

/// `pod` with the response's JSON Patch applied (unchanged when there is none).
fn apply(pod: &Value, response: &Value) -> Value {
    let mut patched = pod.clone();
    if let Some(patch) = response["patch"].as_str() {
        assert_eq!(response["patchType"], "JSONPatch");
        let patch: json_patch::Patch = serde_json::from_slice(&base64_decode(patch)).unwrap();
        json_patch::patch(&mut patched, &patch).unwrap();
    }
    patched
}

#[test]
fn webhook_answers_every_pod_template_as_the_cli_does() {
    for case in cases() {
        let (config, name) = (&case.config, &case.name);
        let docs = parse_docs(&case.input);
        let istio = workload::istio_namespaces(&docs);
        // What the CLI decided for each object; the documents are patched in place.
        let mut cli_docs = docs.clone();
        let reports: Vec<_> =
            workload::inject_documents(&mut cli_docs, &config.injector, config.istio)
                .into_iter()
                .filter(|r| !matches!(r.verdict, CliVerdict::NotAWorkload))
                .collect();
        if let Some(out) = transform(&case.input, config).0 {
            assert_eq!(parse_docs(&out), cli_docs, "{name}: CLI output");
        }
        let cli_templates = templates(&cli_docs);
        let originals = templates(&docs);
        assert_eq!(originals.len(), reports.len(), "{name}");
        for (i, ((namespace, template), report)) in originals.into_iter().zip(&reports).enumerate()
        {
            let mut pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": template["metadata"], "spec": template["spec"]});
            pod["metadata"]["namespace"] = json!(namespace);
            let context = Context {
                namespace_istio: config.istio || istio.contains(&namespace),
            };
            let uid = format!("{name}-{i}");
            let (result, response) = ask(&pod, &uid, &config.injector, &context);
            let message = response["status"]["message"].as_str().unwrap_or_default();
            let again = match &report.verdict {
                CliVerdict::Rejected { errors, .. } => {
                    // Only what no annotation can change counts as the pod's own fault.
                    let pod_at_fault = errors
                        .iter()
                        .any(|e| matches!(e, AnnotationError::Pod { .. }));
                    let reason = if pod_at_fault {
                        "incompatible_pod"
                    } else {
                        "invalid_annotations"
                    };
                    assert_eq!(result, Verdict::Rejected(reason), "{name}");
                    assert_eq!(response["allowed"], false, "{name}");
                    for e in errors {
                        let e = e.to_string();
                        assert!(message.contains(&e), "{name}: {message:?} lacks {e:?}");
                    }
                    continue;
                }
                CliVerdict::Denied { reason, .. } => {
                    assert_eq!(result, Verdict::Rejected("nothing_to_encrypt"), "{name}");
                    assert_eq!(response["allowed"], false, "{name}");
                    assert!(message.contains(reason.as_str()), "{name}: {message:?}");
                    continue;
                }
                CliVerdict::Invalid(why) => {
                    assert_eq!(result, Verdict::Unreadable, "{name}: CLI said {why}");
                    assert_eq!(response["allowed"], false, "{name}");
                    continue;
                }
                CliVerdict::NotAWorkload => unreachable!("filtered out"),
                CliVerdict::Skipped { reason, .. } => {
                    assert_eq!(result, Verdict::Skipped(reason.label()), "{name}");
                    assert!(
                        response.get("patch").is_none(),
                        "{name}: skipped with a patch"
                    );
                    Verdict::Skipped(reason.label())
                }
                CliVerdict::Injected { .. } => {
                    assert_eq!(result, Verdict::Injected, "{name}");
                    Verdict::Skipped("already_injected")
                }
            };
            assert_eq!(response["allowed"], json!(true), "{name}");
            let patched = apply(&pod, &response);
            let mut compared = patched.clone();
            compared["metadata"]
                .as_object_mut()
                .unwrap()
                .remove("namespace");
            let expected = &cli_templates[i].1;
            assert_eq!(
                compared["metadata"], expected["metadata"],
                "{name}: metadata differs"
            );
            assert_eq!(compared["spec"], expected["spec"], "{name}: spec differs");

            // Reinvocation (reinvocationPolicy: IfNeeded): the patched pod comes back and is
            // allowed as it is.
            let (result, response) = ask(
                &patched,
                &format!("{uid}-again"),
                &config.injector,
                &context,
            );
            assert_eq!(result, again, "{name}: second pass");
            assert_eq!(response["allowed"], json!(true), "{name}: second pass");
            assert!(
                response.get("patch").is_none(),
                "{name}: second pass patched {response}"
            );
        }
    }
}

/// The checked-in outputs (cases the CLI refuses have none); most cases have one, so a test
/// over them cannot pass by reading nothing.
fn golden_outputs() -> Vec<PathBuf> {
    let files: Vec<PathBuf> = cases()
        .iter()
        .map(|c| c.path(".injected.yaml"))
        .filter(|p| p.exists())
        .collect();
    assert!(
        files.len() >= 20,
        "expected most cases to produce output, got {}",
        files.len()
    );
    files
}

#[test]
fn golden_outputs_validate_strictly() {
    let files = golden_outputs();
    let validator =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/k8s/validate-manifests");
    assert!(
        validator.exists(),
        "{} is missing: shared/ must sit beside the checkout",
        validator.display()
    );
    let out = Command::new("python3")
        .arg(&validator)
        .arg("-q")
        .args(&files)
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "validate-manifests failed (exit {:?}; run injector/tests/setup.sh if packages are missing):\n{}{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// kubectl reads YAML 1.1: every output, read by an independent YAML 1.1 reader (PyYAML), is the
/// same data as the CLI meant to write. An unquoted `on`, `y`, `0644` or `1:30` would come back
/// as a bool, an integer or a sexagesimal number.
#[test]
fn outputs_read_the_same_with_a_yaml_1_1_reader() {
    let files = golden_outputs();
    let script = "import json, sys, yaml\n\
                  print(json.dumps([[d for d in yaml.safe_load_all(open(f)) if d is not None] \
                  for f in sys.argv[1:]]))";
    let out = Command::new("python3")
        .args(["-c", script])
        .args(&files)
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "PyYAML could not read the outputs (run injector/tests/setup.sh):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pyyaml: Vec<Vec<Value>> = serde_json::from_slice(&out.stdout).unwrap();
    for (file, docs) in files.iter().zip(pyyaml) {
        let ours = parse_docs(&std::fs::read_to_string(file).unwrap());
        assert_eq!(
            docs,
            ours,
            "{} reads differently in YAML 1.1",
            file.display()
        );
    }
}

/// Fields k8s-openapi does not know (a newer Kubernetes, another webhook) must survive both the
/// webhook patch and the CLI, at pod spec level and inside an existing init container.
#[test]
fn fields_the_injector_does_not_know_survive() {
    let pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "future", "namespace": "shop", "annotations": {"gembok.io/inbound": "8443=8080"}},
        "spec": {
            "futurePodField": {"enabled": true},
            "initContainers": [{"name": "setup", "image": "setup:1", "futureContainerField": "keep-me"}],
            "containers": [{"name": "app", "image": "app:1", "futureContainerField": 7}]
        }
    });
    let body = serde_json::to_vec(&admission_review("u-future", "shop", &pod)).unwrap();
    let answer = review::review(&body, &config_for("").injector, &Context::default()).unwrap();
    let response = wire(&answer.review);
    let patch: json_patch::Patch =
        serde_json::from_slice(&base64_decode(response["patch"].as_str().unwrap())).unwrap();
    let mut patched = pod.clone();
    json_patch::patch(&mut patched, &patch).unwrap();
    assert_eq!(patched["spec"]["futurePodField"], json!({"enabled": true}));
    assert_eq!(patched["spec"]["initContainers"][0]["name"], "gembok-proxy");
    assert_eq!(
        patched["spec"]["initContainers"][1]["futureContainerField"],
        "keep-me"
    );
    assert_eq!(patched["spec"]["containers"][0]["futureContainerField"], 7);
    // No operation may rewrite an existing element wholesale.
    for op in &patch.0 {
        let path = op.path().to_string();
        assert!(
            !path.starts_with("/spec/initContainers/1"),
            "existing init container touched: {path}"
        );
        assert!(
            !path.starts_with("/spec/containers"),
            "app container touched: {path}"
        );
    }

    let yaml = gembok_injector::yaml::write_document(&pod);
    let (out, code) = transform(&yaml, &config_for(""));
    assert_eq!(code, 0);
    let out = parse_docs(&out.unwrap()).remove(0);
    assert_eq!(out["spec"]["futurePodField"], json!({"enabled": true}));
    assert_eq!(
        out["spec"]["initContainers"][1]["futureContainerField"],
        "keep-me"
    );
}

/// The response as the API server receives it.
fn wire(review: &kube_core::admission::AdmissionReview<kube_core::DynamicObject>) -> Value {
    let bytes = review::to_wire(review).expect("answer encodes");
    serde_json::from_slice::<Value>(&bytes).unwrap()["response"].clone()
}

/// The patch field is `[]byte` in Go: standard base64 in JSON.
fn base64_decode(text: &str) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .expect("patch is base64")
}
