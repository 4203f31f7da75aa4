//! The `inject` edge: multi-document YAML in, the same documents out, with every pod template
//! injected by the core. The result is applied to each document as a JSON Patch (the same diff
//! the webhook sends), so fields k8s-openapi does not know survive, and other kinds pass through
//! unchanged.

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::Pod;
use serde_json::{Map, Value, json};
use thiserror::Error;

use crate::annotations::AnnotationError;
use crate::inject::{Context, Decision, InjectorConfig, inject};
use crate::istio;
use crate::patch;
use crate::policy::SkipReason;
use crate::sidecar::{self, Plan};
use crate::yaml;

/// Input the command cannot read.
#[derive(Debug, Error)]
pub enum ReadError {
    #[error(transparent)]
    Yaml(#[from] yaml::YamlError),
    #[error(
        "YAML document {index} is not a Kubernetes object (a mapping with kind and apiVersion)"
    )]
    NotAnObject { index: usize },
}

/// Splits a YAML stream into objects, reading it as kubectl does (YAML 1.1 scalars, see
/// [`yaml`]); empty documents are dropped.
pub fn read_documents(text: &str) -> Result<Vec<Value>, ReadError> {
    let mut docs = Vec::new();
    for (i, value) in yaml::read_stream(text)?.into_iter().enumerate() {
        match value {
            Value::Null => {}
            Value::Object(_) => docs.push(value),
            _ => return Err(ReadError::NotAnObject { index: i + 1 }),
        }
    }
    Ok(docs)
}

/// Writes objects back as one YAML stream that kubectl reads back unchanged.
pub fn write_documents(docs: &[Value]) -> String {
    let mut out = String::new();
    for doc in docs {
        out.push_str("---\n");
        out.push_str(&yaml::write_document(doc));
    }
    out
}

/// Writes `after` (what injection made of `before`, the objects read from `text`) as a YAML
/// stream in which every document injection left alone is the input's own text, comments,
/// quoting and layout included, and every other one keeps the comment lines above it; so that
/// the diff of a file run through `inject` is the sidecar and nothing else. Where the input does
/// not split into documents that read as the whole stream does, every document is written anew
/// ([`write_documents`]).
pub fn write_documents_over(text: &str, before: &[Value], after: &[Value]) -> String {
    let pieces = split_documents(text);
    let mut counts = Vec::new();
    let mut reread = Vec::new();
    for piece in &pieces {
        match read_documents(piece) {
            Ok(docs) => {
                counts.push(docs.len());
                reread.extend(docs);
            }
            Err(_) => return write_documents(after),
        }
    }
    if reread != before || before.len() != after.len() {
        return write_documents(after);
    }
    let mut out = String::new();
    let mut next = 0;
    for (piece, count) in pieces.iter().zip(counts) {
        let range = next..next + count;
        next += count;
        if before[range.clone()] == after[range.clone()] {
            out.push_str(piece);
            continue;
        }
        if !out.is_empty() && !out.ends_with('\n') {
            out.push('\n');
        }
        out.push_str(&leading_comments(piece));
        for (i, doc) in after[range].iter().enumerate() {
            if i > 0 {
                out.push_str("---\n");
            }
            out.push_str(&yaml::write_document(doc));
        }
    }
    out
}

/// `text` cut before every line that starts a document (`---` at the start of a line, alone or
/// followed by a space; YAML allows no such line inside a scalar), so that the pieces put back
/// together are `text`. A piece may hold several documents (after a `...` line) or none.
fn split_documents(text: &str) -> Vec<&str> {
    let mut pieces = Vec::new();
    let mut start = 0;
    let mut at = 0;
    for line in text.split_inclusive('\n') {
        if at > start && is_document_start(line) {
            pieces.push(&text[start..at]);
            start = at;
        }
        at += line.len();
    }
    pieces.push(&text[start..]);
    pieces
}

fn is_document_start(line: &str) -> bool {
    line.strip_prefix("---")
        .is_some_and(|rest| rest.is_empty() || rest.starts_with(char::is_whitespace))
}

/// The lines a piece opens with that say nothing to YAML: its `---` line (or a fresh one when it
/// has none or carries content) and the comment and blank lines after it.
fn leading_comments(piece: &str) -> String {
    let mut lines = piece.split_inclusive('\n').peekable();
    let mut out = String::from("---\n");
    if let Some(first) = lines.peek()
        && is_document_start(first)
    {
        let rest = first[3..].trim();
        if rest.is_empty() || rest.starts_with('#') {
            out = (*first).to_owned();
        }
        lines.next();
    }
    if !out.ends_with('\n') {
        out.push('\n');
    }
    for line in lines {
        if !(line.starts_with('#') || line.trim().is_empty()) {
            break;
        }
        out.push_str(line);
        if !out.ends_with('\n') {
            out.push('\n');
        }
    }
    out
}

/// Where the pod template sits in an object of a given kind, as a JSON pointer.
pub fn template_pointer(api_version: &str, kind: &str) -> Option<&'static str> {
    match (api_version, kind) {
        ("v1", "Pod") => Some(""),
        ("v1", "ReplicationController") => Some("/spec/template"),
        ("v1", "PodTemplate") => Some("/template"),
        ("apps/v1", "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet")
        | ("batch/v1", "Job") => Some("/spec/template"),
        ("batch/v1", "CronJob") => Some("/spec/jobTemplate/spec/template"),
        _ => None,
    }
}

/// What happened to one object.
#[derive(Debug)]
pub enum Verdict {
    NotAWorkload,
    Injected {
        plan: Box<Plan>,
        warnings: Vec<String>,
    },
    Skipped {
        reason: SkipReason,
        warnings: Vec<String>,
    },
    Rejected {
        errors: Vec<AnnotationError>,
        warnings: Vec<String>,
    },
    /// Refused by injector-wide policy (`--unannotated-pods deny`).
    Denied {
        reason: String,
        warnings: Vec<String>,
    },
    /// The pod template does not read as a Pod (wrong types); left unchanged.
    Invalid(String),
}

#[derive(Debug)]
pub struct Report {
    /// `Kind namespace/name`, for messages.
    pub object: String,
    pub verdict: Verdict,
}

impl Report {
    pub fn failed(&self) -> bool {
        matches!(
            self.verdict,
            Verdict::Rejected { .. } | Verdict::Denied { .. } | Verdict::Invalid(_)
        )
    }
}

/// Injects every pod template in `docs` in place. `istio_everywhere` treats every namespace as
/// Istio-injected; Namespace objects in `docs` labelled for Istio count too.
pub fn inject_documents(
    docs: &mut [Value],
    config: &InjectorConfig,
    istio_everywhere: bool,
) -> Vec<Report> {
    let istio_namespaces = istio_namespaces(docs);
    let mut reports = Vec::new();
    for doc in docs.iter_mut() {
        inject_object(
            doc,
            config,
            istio_everywhere,
            &istio_namespaces,
            &mut reports,
        );
    }
    reports
}

fn inject_object(
    doc: &mut Value,
    config: &InjectorConfig,
    istio_everywhere: bool,
    istio_namespaces: &BTreeSet<String>,
    reports: &mut Vec<Report>,
) {
    let text = |pointer: &str| {
        doc.pointer(pointer)
            .and_then(Value::as_str)
            .unwrap_or_default()
    };
    let (api_version, kind) = (text("/apiVersion").to_owned(), text("/kind").to_owned());
    let namespace = text("/metadata/namespace").to_owned();
    let name = match text("/metadata/name") {
        "" => format!("{}*", text("/metadata/generateName")),
        name => name.to_owned(),
    };
    let object = match namespace.as_str() {
        "" => format!("{kind} {name}"),
        ns => format!("{kind} {ns}/{name}"),
    };
    if kind == "List" {
        if let Some(items) = doc.get_mut("items").and_then(Value::as_array_mut) {
            for item in items {
                inject_object(item, config, istio_everywhere, istio_namespaces, reports);
            }
        }
        return;
    }
    let Some(pointer) = template_pointer(&api_version, &kind) else {
        reports.push(Report {
            object,
            verdict: Verdict::NotAWorkload,
        });
        return;
    };
    let context = Context {
        namespace_istio: istio_everywhere || istio_namespaces.contains(&namespace),
    };
    let verdict = match doc.pointer_mut(pointer) {
        Some(template @ Value::Object(_)) => inject_template(template, config, &context),
        _ => Verdict::Invalid(format!("no pod template at {pointer}")),
    };
    reports.push(Report { object, verdict });
}

/// Runs the core on one pod template (`{metadata, spec}`, or a whole Pod) and patches it.
fn inject_template(template: &mut Value, config: &InjectorConfig, context: &Context) -> Verdict {
    let pod = match pod_from_template(template) {
        Ok(pod) => pod,
        Err(e) => return Verdict::Invalid(format!("pod template does not read as a Pod: {e}")),
    };
    let outcome = inject(&pod, config, context);
    match outcome.decision {
        Decision::Skip(reason) => Verdict::Skipped {
            reason,
            warnings: outcome.warnings,
        },
        Decision::Reject(errors) => Verdict::Rejected {
            errors,
            warnings: outcome.warnings,
        },
        Decision::Deny(reason) => Verdict::Denied {
            reason,
            warnings: outcome.warnings,
        },
        Decision::Inject {
            pod: injected,
            plan,
        } => {
            let before = serde_json::to_value(&pod);
            let after = serde_json::to_value(&*injected);
            let (Ok(before), Ok(after)) = (before, after) else {
                return Verdict::Invalid("pod does not serialise".into());
            };
            if !template.get("metadata").is_some_and(Value::is_object) {
                template["metadata"] = Value::Object(Map::new());
            }
            match json_patch::patch(template, &patch::diff(&before, &after).0) {
                Ok(()) => {
                    name_first(template);
                    Verdict::Injected {
                        plan,
                        warnings: outcome.warnings,
                    }
                }
                Err(e) => Verdict::Invalid(format!("patch does not apply: {e}")),
            }
        }
    }
}

/// The sidecar container as a person writes one: `name` first (the typed Pod it comes from
/// writes its fields in alphabetical order). Only in files: the webhook's patch has no order.
fn name_first(template: &mut Value) {
    for list in ["/spec/initContainers", "/spec/containers"] {
        let Some(Value::Array(containers)) = template.pointer_mut(list) else {
            continue;
        };
        for container in containers {
            if let Value::Object(fields) = container
                && fields.get("name") == Some(&Value::from(sidecar::CONTAINER_NAME))
                && let Some(name) = fields.shift_remove("name")
            {
                fields.shift_insert(0, "name".to_owned(), name);
            }
        }
    }
}

/// The typed Pod for a template: its metadata and spec under Pod's type meta.
pub fn pod_from_template(template: &Value) -> Result<Pod, serde_json::Error> {
    let field = |name: &str| template.get(name).cloned().unwrap_or(Value::Null);
    serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": field("metadata"),
        "spec": field("spec"),
    }))
}

/// Every object in the stream, with the items of `kind: List` in place of the List (nested Lists
/// too), the way [`inject_documents`] walks it.
pub(crate) fn objects(docs: &[Value]) -> Vec<&Value> {
    let mut out = Vec::new();
    for doc in docs {
        match doc.get("items").and_then(Value::as_array) {
            Some(items) if doc.get("kind").and_then(Value::as_str) == Some("List") => {
                out.extend(objects(items));
            }
            _ => out.push(doc),
        }
    }
    out
}

/// Namespaces in the stream (also inside `List`s) whose labels turn on Istio's injection.
pub fn istio_namespaces(docs: &[Value]) -> BTreeSet<String> {
    objects(docs)
        .into_iter()
        .filter(|d| d.get("kind").and_then(Value::as_str) == Some("Namespace"))
        .filter(|d| {
            let label = |k: &str| d.pointer(&format!("/metadata/labels/{}", k.replace('/', "~1")));
            let injection = label(istio::NAMESPACE_LABEL).and_then(Value::as_str);
            injection == Some("enabled")
                || (injection.is_none() && label(istio::REV_LABEL).is_some())
        })
        .filter_map(|d| {
            d.pointer("/metadata/name")
                .and_then(Value::as_str)
                .map(str::to_owned)
        })
        .collect()
}

/// The `--explain` text for one object.
pub fn explain(report: &Report) -> String {
    let mut out = String::new();
    let warn = |warnings: &[String], out: &mut String| {
        for w in warnings {
            out.push_str(&format!("  warning: {w}\n"));
        }
    };
    match &report.verdict {
        Verdict::NotAWorkload => {
            out.push_str(&format!("{}: not a workload, unchanged\n", report.object))
        }
        Verdict::Invalid(why) => out.push_str(&format!("{}: error: {why}\n", report.object)),
        Verdict::Skipped { reason, warnings } => {
            out.push_str(&format!("{}: skip: {reason}\n", report.object));
            warn(warnings, &mut out);
        }
        Verdict::Rejected { errors, warnings } => {
            out.push_str(&format!(
                "{}: reject: the webhook would refuse this pod\n",
                report.object
            ));
            for e in errors {
                out.push_str(&format!("  error: {e}\n"));
            }
            warn(warnings, &mut out);
        }
        Verdict::Denied { reason, warnings } => {
            out.push_str(&format!(
                "{}: reject: the webhook would refuse this pod\n  error: {reason}\n",
                report.object
            ));
            warn(warnings, &mut out);
        }
        Verdict::Injected { plan, warnings } => {
            out.push_str(&format!(
                "{}: inject: {} sidecar, image {}, certificates from Secret {}\n",
                report.object,
                plan.mode.as_str(),
                plan.image,
                plan.cert_secret
            ));
            for m in &plan.inbound {
                let mut lists = m.allow_sans.clone();
                if let (Some(_), Some(name)) = (&m.allow_san_file, &plan.allowed_sans_configmap) {
                    lists.push(format!(
                        "those in ConfigMap {name} key {} (reloaded when it changes)",
                        sidecar::ALLOWED_SANS_LIST.key
                    ));
                }
                let sans = if lists.is_empty() {
                    "any peer certified by the mesh CA".to_owned()
                } else {
                    lists.join(", ")
                };
                let header = if m.proxy_protocol {
                    ", PROXY protocol v2 header first"
                } else {
                    ""
                };
                out.push_str(&format!(
                    "  inbound  mTLS :{} -> app 127.0.0.1:{} (peers: {sans}{header})\n",
                    m.tls_port, m.app_port
                ));
            }
            for r in &plan.outbound {
                out.push_str(&format!(
                    "  outbound app 127.0.0.1:{} -> mTLS {}:{}\n",
                    r.local_port, r.host, r.port
                ));
            }
            if let Some(groups) = &plan.key_exchange {
                out.push_str(&format!(
                    "  key exchange {groups} (gembok.io/key-exchange)\n"
                ));
            }
            if let Some(name) = &plan.crl_configmap {
                out.push_str(&format!(
                    "  revocation lists in ConfigMap {name} key {} ({}; reloaded when it changes)\n",
                    sidecar::CRL_LIST.key,
                    sidecar::CRL_LIST.annotation
                ));
            }
            if let Some(suites) = &plan.cipher_suites {
                out.push_str(&format!(
                    "  cipher suites {suites} (gembok.io/cipher-suites)\n"
                ));
            }
            if plan.fips {
                out.push_str(
                    "  FIPS build: all cryptography in AWS-LC's FIPS module, FIPS-approved \
                     suites and groups only (gembok.io/fips)\n",
                );
            }
            warn(warnings, &mut out);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Injection as the CLI does it, with the default configuration.
    fn injected(text: &str) -> String {
        let mut docs = read_documents(text).unwrap();
        let before = docs.clone();
        let config = InjectorConfig::default();
        let reports = inject_documents(&mut docs, &config, false);
        assert!(!reports.iter().any(Report::failed), "{reports:?}");
        let out = write_documents_over(text, &before, &docs);
        // Whatever is kept or rewritten, kubectl reads the result as the injected objects.
        assert_eq!(read_documents(&out).unwrap(), docs, "{out}");
        out
    }

    const SERVICE: &str = "# the shop's front\r\napiVersion: v1\r\nkind: Service\r\nmetadata: {name: web, labels: {\"on\": 'yes'}}   # flow style\r\nspec:\r\n  ports:\r\n  - port: 0443\r\n";
    const POD: &str = "--- # the web pod\n# serves the shop\n\napiVersion: v1\nkind: Pod\nmetadata:\n  name: web\n  annotations:\n    gembok.io/inbound: \"8443=8080\"  # TLS in\nspec:\n  containers:\n  - name: web\n    image: web:1\n";

    #[test]
    fn documents_left_alone_are_kept_as_written() {
        let configmap = "---\n# settings\nkind: ConfigMap\napiVersion: v1\nmetadata:\n  name: c\ndata:\n  mode: \"on\"\n...\n";
        let text = format!("{SERVICE}{configmap}");
        assert_eq!(injected(&text), text);
    }

    #[test]
    fn an_injected_document_keeps_its_comment_lines_and_its_key_order() {
        let text = format!("{SERVICE}{POD}");
        let out = injected(&text);
        let (service, pod) = out.split_at(SERVICE.len());
        assert_eq!(service, SERVICE);
        assert!(
            pod.starts_with("--- # the web pod\n# serves the shop\n\napiVersion: v1\nkind: Pod\nmetadata:\n  name: web\n  annotations:\n"),
            "{pod}"
        );
        assert!(
            pod.contains("  containers:\n  - name: web\n    image: web:1\n  initContainers:\n"),
            "{pod}"
        );
        // The sidecar reads as a person writes a container: its name first.
        assert!(
            pod.contains("  initContainers:\n  - name: gembok-proxy\n    env:\n"),
            "{pod}"
        );
        // A comment inside an injected document is not kept: the document is written anew.
        assert!(!pod.contains("# TLS in"), "{pod}");
    }

    #[test]
    fn pieces_put_back_together_are_the_input() {
        for text in [
            "",
            "a: 1",
            "---\na: 1\n--- \nb: 2\n---\n",
            "a: |\n  ---\n  text\nb: '---'\n---x: 1\n",
            "# only a comment\n",
        ] {
            assert_eq!(split_documents(text).concat(), text);
        }
        assert_eq!(
            split_documents("a: 1\n---\nb: 2\n--- # c\nc: 3\n"),
            ["a: 1\n", "---\nb: 2\n", "--- # c\nc: 3\n"]
        );
        // `---x` is not a document start; indented or quoted `---` is content.
        assert_eq!(split_documents("a: |\n  ---\n---x: 1\n").len(), 1);
    }

    #[test]
    fn a_document_with_content_on_its_marker_line_gets_a_fresh_one() {
        assert_eq!(
            leading_comments("--- !!map\n# c\nkind: Pod\n"),
            "---\n# c\n"
        );
        assert_eq!(leading_comments("# c\n\nkind: Pod\n"), "---\n# c\n\n");
        assert_eq!(leading_comments("---\nkind: Pod\n"), "---\n");
    }

    #[test]
    fn a_stream_whose_pieces_do_not_read_alone_is_written_anew() {
        // A directive belongs to the document after the next `---`: cut there, the first piece
        // does not read, so every document is written out as before.
        let text = format!("%YAML 1.1\n{POD}");
        let out = injected(&text);
        assert!(!out.contains("%YAML"), "{out}");
        assert!(!out.contains("# serves the shop"), "{out}");
        assert!(out.starts_with("---\napiVersion: v1\nkind: Pod\n"), "{out}");
    }
}
