//! The `audit` command: which running pods of a cluster should carry the sidecar and do not, or
//! carry an image other than the one the injector would give them now. Reads what
//! `kubectl get namespaces,pods -A -o yaml` prints (a `List`, or any stream of Namespace and Pod
//! objects) and decides with the webhook's own rules: the namespace selectors of
//! `manifests/base/gembok/webhook.yaml` and the core's [`inject`] verdict. It needs no access to
//! the cluster and no RBAC; a pod the webhook never saw (created before its namespace was
//! labelled, or while the webhook was not registered) is what it finds.

use std::collections::BTreeMap;
use std::fmt;

use k8s_openapi::api::core::v1::Pod;
use serde::Serialize;
use serde_json::Value;

use crate::annotations::{self, INJECT_LABEL};
use crate::inject::{Context, Decision, InjectorConfig, inject};
use crate::sidecar::{CONTAINER_NAME, proxy_container};
use crate::workload::{istio_namespaces, objects};

/// The namespace label that turns injection on (`gembok-injection=enabled`).
pub const NAMESPACE_LABEL: &str = "gembok-injection";
/// Namespaces the webhook never sees (its own and the cluster's).
pub const EXCLUDED_NAMESPACES: [&str; 2] = ["kube-system", "gembok-system"];

/// One pod the audit flags. In `--output json`: `namespace`, `pod`, `owner` (null without a
/// controller), `problem` (the variant's name) with its fields, and `message` (the text line).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub namespace: String,
    pub pod: String,
    /// `Kind/name` of the pod's controller, when it has one (what to restart).
    pub owner: Option<String>,
    #[serde(flatten)]
    pub problem: Problem,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "problem")]
pub enum Problem {
    /// The webhook would inject it now, and it runs without the sidecar.
    Missing,
    /// The webhook would refuse it now (an annotation it cannot honour, `--unannotated-pods
    /// deny`): it runs without the sidecar and could not be recreated as it is.
    WouldBeRefused { reason: String },
    /// It carries the sidecar, but not the image the injector would give it now.
    StaleImage { running: String, wanted: String },
    /// Selected, but not a Pod the injector can read (a field of the wrong type): judged by hand.
    Unreadable { reason: String },
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.pod)?;
        if let Some(owner) = &self.owner {
            write!(f, " ({owner})")?;
        }
        match &self.problem {
            Problem::Missing => write!(
                f,
                ": runs without {CONTAINER_NAME}, which the webhook would inject; recreate it \
                 (created before its namespace was labelled, or while the webhook was not registered)"
            ),
            Problem::WouldBeRefused { reason: why } => write!(
                f,
                ": runs without {CONTAINER_NAME}, and the webhook would refuse it now: {why}"
            ),
            Problem::Unreadable { reason: why } => {
                write!(f, ": cannot be read as a Pod ({why}); check it by hand")
            }
            Problem::StaleImage { running, wanted } => write!(
                f,
                ": {CONTAINER_NAME} runs {running}, the injector now gives {wanted}; recreate it to upgrade"
            ),
        }
    }
}

/// What the audit found (`--output json` writes it, keys in camelCase).
#[derive(Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    /// Running pods read.
    pub pods: usize,
    /// Of them, those the webhook selects.
    pub in_scope: usize,
    #[serde(serialize_with = "with_messages")]
    pub findings: Vec<Finding>,
    /// Namespaces pods were found in but no Namespace object was given for (their pods are
    /// judged by the pod label alone).
    pub unknown_namespaces: Vec<String>,
}

/// Each finding with its text line as `message`.
fn with_messages<S: serde::Serializer>(findings: &[Finding], s: S) -> Result<S::Ok, S::Error> {
    #[derive(Serialize)]
    struct WithMessage<'a> {
        #[serde(flatten)]
        finding: &'a Finding,
        message: String,
    }
    s.collect_seq(findings.iter().map(|finding| WithMessage {
        finding,
        message: finding.to_string(),
    }))
}

fn kind(v: &Value) -> &str {
    v["kind"].as_str().unwrap_or("")
}

fn labels(v: &Value) -> BTreeMap<String, String> {
    v["metadata"]["labels"]
        .as_object()
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
                .collect()
        })
        .unwrap_or_default()
}

/// Whether the webhook selects a pod with `pod_labels` in a namespace with `ns_labels`
/// (`None`: the Namespace was not given), as `manifests/base/gembok/webhook.yaml` does (a test
/// in `tests/tests/manifests/mesh.rs` checks every combination against the rendered one).
pub fn selected(
    namespace: &str,
    ns_labels: Option<&BTreeMap<String, String>>,
    pod_labels: &BTreeMap<String, String>,
) -> bool {
    if EXCLUDED_NAMESPACES.contains(&namespace) {
        return false;
    }
    let pod = pod_labels.get(INJECT_LABEL).map(String::as_str);
    let enabled =
        ns_labels.is_some_and(|l| l.get(NAMESPACE_LABEL).map(String::as_str) == Some("enabled"));
    if enabled {
        pod != Some("false")
    } else {
        pod == Some("true")
    }
}

/// Audits the Namespaces and Pods of `docs` against `config` (the injector's settings).
pub fn audit(docs: &[Value], config: &InjectorConfig) -> Report {
    let istio = istio_namespaces(docs);
    let objects = objects(docs);
    let namespaces: BTreeMap<&str, BTreeMap<String, String>> = objects
        .iter()
        .filter(|o| kind(o) == "Namespace")
        .filter_map(|o| Some((o["metadata"]["name"].as_str()?, labels(o))))
        .collect();
    let mut report = Report::default();
    for obj in objects.iter().filter(|o| kind(o) == "Pod") {
        // Finished pods (a Job's) run nothing any more.
        if matches!(
            obj["status"]["phase"].as_str(),
            Some("Succeeded" | "Failed")
        ) {
            continue;
        }
        report.pods += 1;
        let namespace = obj["metadata"]["namespace"].as_str().unwrap_or("default");
        let ns_labels = namespaces.get(namespace);
        if ns_labels.is_none() && !report.unknown_namespaces.iter().any(|n| n == namespace) {
            report.unknown_namespaces.push(namespace.to_owned());
        }
        if !selected(namespace, ns_labels, &labels(obj)) {
            continue;
        }
        report.in_scope += 1;
        let finding = |problem| Finding {
            namespace: namespace.to_owned(),
            pod: obj["metadata"]["name"].as_str().unwrap_or("").to_owned(),
            owner: owner(obj),
            problem,
        };
        let pod = match serde_json::from_value::<Pod>((*obj).clone()) {
            Ok(pod) => pod,
            Err(e) => {
                report.findings.push(finding(Problem::Unreadable {
                    reason: e.to_string(),
                }));
                continue;
            }
        };
        if let Some(sidecar) = pod.spec.as_ref().and_then(proxy_container) {
            // The pod's annotations as the webhook reads them (an invalid value is no choice).
            let annotations = pod.metadata.annotations.clone().unwrap_or_default();
            let wanted = config.image_for(&annotations::parse(&annotations).settings);
            let running = sidecar.image.clone().unwrap_or_default();
            if running != wanted {
                report
                    .findings
                    .push(finding(Problem::StaleImage { running, wanted }));
            }
            continue;
        }
        let context = Context {
            namespace_istio: istio.contains(namespace),
        };
        match inject(&pod, config, &context).decision {
            // Not injected, or marked injected with the container edited out since.
            Decision::Inject { .. } => report.findings.push(finding(Problem::Missing)),
            Decision::Deny(why) => report
                .findings
                .push(finding(Problem::WouldBeRefused { reason: why })),
            Decision::Reject(errors) => {
                let why = errors.iter().map(ToString::to_string).collect::<Vec<_>>();
                report.findings.push(finding(Problem::WouldBeRefused {
                    reason: why.join("; "),
                }));
            }
            // hostNetwork, a name taken, nothing to encrypt under `--unannotated-pods skip`:
            // the webhook lets such a pod run without the sidecar too.
            Decision::Skip(_) => {}
        }
    }
    report
}

/// `Kind/name` of the pod's controller.
fn owner(pod: &Value) -> Option<String> {
    let refs = pod["metadata"]["ownerReferences"].as_array()?;
    let r = refs
        .iter()
        .find(|r| r["controller"] == true)
        .or(refs.first())?;
    Some(format!("{}/{}", r["kind"].as_str()?, r["name"].as_str()?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::Unannotated;
    use crate::workload::read_documents;

    /// What `kubectl get namespaces,pods -A -o yaml` prints for a small cluster, cut down.
    const CLUSTER: &str = r#"
apiVersion: v1
kind: List
items:
- {apiVersion: v1, kind: Namespace, metadata: {name: shop, labels: {gembok-injection: enabled}}}
- {apiVersion: v1, kind: Namespace, metadata: {name: legacy}}
- {apiVersion: v1, kind: Namespace, metadata: {name: kube-system, labels: {gembok-injection: enabled}}}
- apiVersion: v1
  kind: Pod
  metadata:
    name: catalog-7d9-x1
    namespace: shop
    annotations: {gembok.io/inbound: "8443=8080"}
    ownerReferences: [{apiVersion: apps/v1, kind: ReplicaSet, name: catalog-7d9, uid: u1, controller: true}]
  spec: {containers: [{name: app, image: shop/catalog:1}]}
- apiVersion: v1
  kind: Pod
  metadata: {name: payment-1, namespace: shop, annotations: {gembok.io/inbound: "8443=8080"}}
  spec:
    containers: [{name: app, image: shop/payment:1}]
    initContainers: [{name: gembok-proxy, image: "ghcr.io/gembok/gembok-proxy:0.0.1", restartPolicy: Always}]
- apiVersion: v1
  kind: Pod
  metadata: {name: auth-1, namespace: shop, annotations: {gembok.io/inbound: "8443=8080", gembok.io/image: "registry.local/gembok-proxy:pinned"}}
  spec:
    containers: [{name: app, image: shop/auth:1}]
    initContainers: [{name: gembok-proxy, image: "registry.local/gembok-proxy:pinned", restartPolicy: Always}]
- apiVersion: v1
  kind: Pod
  metadata: {name: opted-out, namespace: shop, labels: {gembok.io/inject: "false"}, annotations: {gembok.io/inbound: "8443=8080"}}
  spec: {containers: [{name: app, image: shop/batch:1}]}
- apiVersion: v1
  kind: Pod
  metadata: {name: job-done, namespace: shop, annotations: {gembok.io/inbound: "8443=8080"}}
  spec: {containers: [{name: app, image: shop/job:1}]}
  status: {phase: Succeeded}
- apiVersion: v1
  kind: Pod
  metadata: {name: unannotated, namespace: shop}
  spec: {containers: [{name: app, image: shop/tool:1}]}
- apiVersion: v1
  kind: Pod
  metadata: {name: bad, namespace: shop, annotations: {gembok.io/inbound: "not a mapping"}}
  spec: {containers: [{name: app, image: shop/bad:1}]}
- apiVersion: v1
  kind: Pod
  metadata: {name: opted-in, namespace: legacy, labels: {gembok.io/inject: "true"}, annotations: {gembok.io/outbound: "15701=db.legacy.svc:5432"}}
  spec: {containers: [{name: app, image: legacy/app:1}]}
- apiVersion: v1
  kind: Pod
  metadata: {name: plain, namespace: legacy, annotations: {gembok.io/inbound: "8443=8080"}}
  spec: {containers: [{name: app, image: legacy/plain:1}]}
- apiVersion: v1
  kind: Pod
  metadata: {name: coredns, namespace: kube-system, annotations: {gembok.io/inbound: "8443=8080"}}
  spec: {containers: [{name: coredns, image: coredns:1}]}
- apiVersion: v1
  kind: Pod
  metadata: {name: garbled, namespace: shop}
  spec: {containers: "not a list"}
- apiVersion: v1
  kind: Pod
  metadata: {name: elsewhere, namespace: unlisted, labels: {gembok.io/inject: "true"}, annotations: {gembok.io/inbound: "8443=8080"}}
  spec: {containers: [{name: app, image: x:1}]}
"#;

    fn run(config: &InjectorConfig) -> Report {
        audit(&read_documents(CLUSTER).unwrap(), config)
    }

    fn problems(report: &Report) -> Vec<(String, &Problem)> {
        report
            .findings
            .iter()
            .map(|f| (format!("{}/{}", f.namespace, f.pod), &f.problem))
            .collect()
    }

    #[test]
    fn finds_pods_the_webhook_would_inject_that_lack_the_sidecar_or_run_another_image() {
        let config = InjectorConfig {
            proxy_image: "ghcr.io/gembok/gembok-proxy:0.2.0".into(),
            ..InjectorConfig::default()
        };
        let report = run(&config);
        // job-done has finished; the rest run.
        assert_eq!(report.pods, 11);
        // shop's seven running pods but the opted-out one, legacy's opted-in one, and the pod
        // opted in in a namespace that was not given.
        assert_eq!(report.in_scope, 8, "{report:?}");
        assert_eq!(report.unknown_namespaces, ["unlisted"]);
        let got = problems(&report);
        let refused = |p: &Problem| matches!(p, Problem::WouldBeRefused { reason } if reason.contains("gembok.io/inbound"));
        assert_eq!(got.len(), 6, "{got:#?}");
        assert_eq!(got[0], ("shop/catalog-7d9-x1".into(), &Problem::Missing));
        assert_eq!(
            got[1],
            (
                "shop/payment-1".into(),
                &Problem::StaleImage {
                    running: "ghcr.io/gembok/gembok-proxy:0.0.1".into(),
                    wanted: "ghcr.io/gembok/gembok-proxy:0.2.0".into(),
                }
            )
        );
        assert_eq!(got[2].0, "shop/bad");
        assert!(refused(got[2].1), "{:?}", got[2]);
        assert_eq!(got[3], ("legacy/opted-in".into(), &Problem::Missing));
        assert_eq!(got[4].0, "shop/garbled");
        assert!(
            matches!(got[4].1, Problem::Unreadable { .. }),
            "{:?}",
            got[4]
        );
        assert_eq!(got[5], ("unlisted/elsewhere".into(), &Problem::Missing));
        // What to restart is named.
        let line = report.findings[0].to_string();
        assert!(
            line.starts_with(
                "shop/catalog-7d9-x1 (ReplicaSet/catalog-7d9): runs without gembok-proxy"
            ),
            "{line}"
        );
    }

    #[test]
    fn an_unannotated_pod_is_a_finding_only_where_the_webhook_would_refuse_it() {
        let skip = run(&InjectorConfig::default());
        assert!(!skip.findings.iter().any(|f| f.pod == "unannotated"));
        let deny = run(&InjectorConfig {
            unannotated: Unannotated::Deny,
            ..InjectorConfig::default()
        });
        let found = deny.findings.iter().find(|f| f.pod == "unannotated");
        assert!(
            matches!(
                found.map(|f| &f.problem),
                Some(Problem::WouldBeRefused { .. })
            ),
            "{found:?}"
        );
    }

    #[test]
    fn a_cluster_with_every_pod_injected_as_wanted_has_nothing_to_fix() {
        let docs = read_documents(
            r#"
apiVersion: v1
kind: List
items:
- {apiVersion: v1, kind: Namespace, metadata: {name: shop, labels: {gembok-injection: enabled}}}
- apiVersion: v1
  kind: Pod
  metadata: {name: auth-1, namespace: shop, annotations: {gembok.io/inbound: "8443=8080"}}
  spec:
    containers: [{name: app, image: shop/auth:1}, {name: gembok-proxy, image: "ghcr.io/gembok/gembok-proxy:9"}]
"#,
        )
        .unwrap();
        let config = InjectorConfig {
            proxy_image: "ghcr.io/gembok/gembok-proxy:9".into(),
            ..InjectorConfig::default()
        };
        let report = audit(&docs, &config);
        assert_eq!((report.pods, report.in_scope), (1, 1));
        assert!(report.findings.is_empty(), "{report:?}");
    }
    /// A pod annotated `gembok.io/fips: "true"` should run the FIPS build's image: one that runs
    /// the default image is stale (it is not in FIPS mode), one that runs the FIPS image is not.
    #[test]
    fn a_fips_pod_is_judged_against_the_fips_image() {
        let cluster = |image: &str| {
            read_documents(&format!(
                r#"
apiVersion: v1
kind: List
items:
- {{apiVersion: v1, kind: Namespace, metadata: {{name: shop, labels: {{gembok-injection: enabled}}}}}}
- apiVersion: v1
  kind: Pod
  metadata: {{name: pay-1, namespace: shop, annotations: {{gembok.io/inbound: "8443=8080", gembok.io/fips: "true"}}}}
  spec:
    containers: [{{name: app, image: shop/pay:1}}, {{name: gembok-proxy, image: "{image}"}}]
"#
            ))
            .unwrap()
        };
        let config = InjectorConfig {
            proxy_image: "ghcr.io/gembok/gembok-proxy:9".into(),
            proxy_image_fips: "ghcr.io/gembok/gembok-proxy:9-fips".into(),
            ..InjectorConfig::default()
        };
        let report = audit(&cluster("ghcr.io/gembok/gembok-proxy:9"), &config);
        assert_eq!(
            report
                .findings
                .iter()
                .map(|f| &f.problem)
                .collect::<Vec<_>>(),
            [&Problem::StaleImage {
                running: "ghcr.io/gembok/gembok-proxy:9".into(),
                wanted: "ghcr.io/gembok/gembok-proxy:9-fips".into(),
            }]
        );
        let report = audit(&cluster("ghcr.io/gembok/gembok-proxy:9-fips"), &config);
        assert!(report.findings.is_empty(), "{report:?}");
    }

    /// `--output json`: each finding flat, `problem` naming the variant beside its fields, and
    /// the text line as `message`; keys in camelCase.
    #[test]
    fn the_json_report_names_each_problem_with_its_fields_and_message() {
        let at = |pod: &str, problem| Finding {
            namespace: "shop".into(),
            pod: pod.into(),
            owner: (pod == "a").then(|| "ReplicaSet/a-1".to_owned()),
            problem,
        };
        let report = Report {
            pods: 5,
            in_scope: 4,
            findings: vec![
                at("a", Problem::Missing),
                at("b", Problem::WouldBeRefused { reason: "r".into() }),
                at(
                    "c",
                    Problem::StaleImage {
                        running: "p:1".into(),
                        wanted: "p:2".into(),
                    },
                ),
                at("d", Problem::Unreadable { reason: "u".into() }),
            ],
            unknown_namespaces: vec!["lost".into()],
        };
        let json = serde_json::to_value(&report).unwrap();
        let f = &json["findings"];
        assert_eq!(json["inScope"], 4);
        assert_eq!(json["unknownNamespaces"], serde_json::json!(["lost"]));
        assert_eq!(
            f[0],
            serde_json::json!({"namespace": "shop", "pod": "a", "owner": "ReplicaSet/a-1",
                "problem": "Missing", "message": report.findings[0].to_string()})
        );
        assert_eq!(
            (&f[1]["problem"], &f[1]["reason"]),
            (&"WouldBeRefused".into(), &"r".into())
        );
        assert_eq!(
            (&f[2]["running"], &f[2]["wanted"]),
            (&"p:1".into(), &"p:2".into())
        );
        assert_eq!(
            (&f[3]["problem"], &f[3]["owner"]),
            (&"Unreadable".into(), &serde_json::Value::Null)
        );
    }
}
