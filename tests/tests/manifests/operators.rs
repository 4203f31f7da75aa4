//! The workloads operators make from our custom resources, modelled from their source, so the
//! checks that read pods (webhook selection, injection, NetworkPolicies, routes) see them too.
//! Only what the checks read: name, namespace, pod labels and annotations, service account,
//! container arguments and ports.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::support::*;

/// The Jaeger operator (v1): the all-in-one Deployment (`strategy: allInOne`, the default) or
/// the collector's (`production`; the query Deployment is left out: it takes no spans). Pod
/// labels and annotations are the component's, then the instance-wide ones, then the operator's
/// own (`pkg/deployment/all_in_one.go`, `collector.go`: `util.Merge`, first wins); the service
/// account is the component's, the instance's, or the instance name; options become `--k=v`
/// arguments.
pub fn operator_workloads(objs: &[Value]) -> Vec<Value> {
    of_kind(objs, "Jaeger")
        .map(|jaeger| {
            let spec = &jaeger["spec"];
            let instance = name(jaeger);
            let (section, component, deployment) = match spec["strategy"].as_str() {
                Some("production") => (
                    &spec["collector"],
                    "collector",
                    format!("{instance}-collector"),
                ),
                _ => (&spec["allInOne"], "all-in-one", instance.to_owned()),
            };
            let mut labels = str_map(&spec["labels"]);
            labels.extend(str_map(&section["labels"]));
            for (k, v) in [
                ("app", "jaeger"),
                ("app.kubernetes.io/name", deployment.as_str()),
                ("app.kubernetes.io/instance", instance),
                ("app.kubernetes.io/component", component),
                ("app.kubernetes.io/part-of", "jaeger"),
                ("app.kubernetes.io/managed-by", "jaeger-operator"),
            ] {
                labels.entry(k.to_owned()).or_insert_with(|| v.to_owned());
            }
            let mut annotations = str_map(&spec["annotations"]);
            annotations.extend(str_map(&section["annotations"]));
            annotations
                .entry("sidecar.istio.io/inject".to_owned())
                .or_insert_with(|| "false".to_owned());
            let account = section["serviceAccount"]
                .as_str()
                .or(spec["serviceAccount"].as_str())
                .unwrap_or(instance);
            let mut args = Vec::new();
            flags("", &section["options"], &mut args);
            args.sort();
            let ports: Vec<Value> = [4317, 4318, 9411, 14250, 14268, 14269, 16686]
                .iter()
                .map(|p| json!({"containerPort": p, "protocol": "TCP"}))
                .collect();
            json!({
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": {"name": deployment, "namespace": namespace(jaeger), "labels": labels},
                "spec": {
                    "selector": {"matchLabels": labels},
                    "template": {
                        "metadata": {"labels": labels, "annotations": annotations},
                        "spec": {
                            "serviceAccountName": account,
                            "securityContext": spec["securityContext"],
                            "containers": [{
                                "name": "jaeger",
                                "image": "jaegertracing/all-in-one:1.62.0",
                                "args": args,
                                "ports": ports,
                                "securityContext": spec["containerSecurityContext"],
                            }],
                        },
                    },
                },
            })
        })
        .collect()
}

/// [`operator_workloads`] after the real injector, configured like the layout's (`objs`).
pub fn injected_operator_workloads(objs: &[Value]) -> anyhow::Result<Vec<Value>> {
    let settings = injector_settings(objs);
    let mut out = Vec::new();
    for workload in operator_workloads(objs) {
        let text = serde_json::to_string(&workload)?;
        out.extend(parse_docs(&inject_text_with(&text, &[], &settings)?)?);
    }
    Ok(out)
}

/// Jaeger's nested `options` as the operator passes them: `--a.b.c=value`.
fn flags(prefix: &str, options: &Value, out: &mut Vec<String>) {
    match options {
        Value::Object(map) => {
            for (k, v) in map {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flags(&key, v, out);
            }
        }
        Value::String(s) => out.push(format!("--{prefix}={s}")),
        Value::Null => {}
        other => out.push(format!("--{prefix}={other}")),
    }
}

/// The value of `--name=` among a container's arguments.
pub fn arg<'a>(container: &'a Value, name: &str) -> Option<&'a str> {
    arr(&container["args"])
        .iter()
        .filter_map(Value::as_str)
        .find_map(|a| a.strip_prefix(&format!("--{name}=")))
}

/// A label map from pairs.
pub fn labels_of(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}
