//! The operations guide against the rendered layout: the files it re-applies with
//! `kubectl apply -f` are rendered unchanged by every overlay and region (so re-applying one
//! never undoes a kustomization's setting), its install steps come in dependency order, and
//! every certificate renews before any certificate-expiry alert could fire.

use std::collections::BTreeSet;
use std::fs;
use std::path::PathBuf;

use serde_json::Value;

use super::support::*;

/// Every path the README applies with `kubectl apply -f base/...`, expanded to its YAML files.
fn dash_f_files(readme: &str) -> BTreeSet<PathBuf> {
    let mut out = BTreeSet::new();
    for (i, _) in readme.match_indices("kubectl apply -f base/") {
        let rest = &readme[i + "kubectl apply -f ".len()..];
        let arg: String = rest
            .chars()
            .take_while(|c| !c.is_whitespace() && *c != '`')
            .collect();
        let path = manifests_dir().join(&arg);
        if path.is_dir() {
            out.extend(yaml_files(&path));
        } else {
            out.insert(path);
        }
    }
    out
}

/// Label keys that every overlay/cluster stamps on all its objects (`labels:` of their
/// kustomization.yaml). `kubectl apply -f` of a base file removes them from that file's objects
/// until the next `apply -k`; that is harmless only while no selector uses them (checked).
fn bookkeeping_label_keys() -> BTreeSet<String> {
    let mut keys = BTreeSet::new();
    for target in TARGETS {
        let path = manifests_dir().join(target).join("kustomization.yaml");
        let k: Value = serde_yaml_ng::from_str(&fs::read_to_string(&path).unwrap()).unwrap();
        for l in arr(&k["labels"]) {
            keys.extend(str_map(&l["pairs"]).into_keys());
        }
    }
    keys
}

/// Paths (JSON-pointer-like) where two values differ.
fn diff(a: &Value, b: &Value, path: String, out: &mut Vec<String>) {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let keys: BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            for k in keys {
                let (va, vb) = (
                    x.get(k).unwrap_or(&Value::Null),
                    y.get(k).unwrap_or(&Value::Null),
                );
                diff(va, vb, format!("{path}/{k}"), out);
            }
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
            for (i, (va, vb)) in x.iter().zip(y).enumerate() {
                diff(va, vb, format!("{path}/{i}"), out);
            }
        }
        _ if a != b => out.push(format!("{path}: {a} (file) vs {b} (rendered)")),
        _ => {}
    }
}

/// All label keys a selector anywhere in `v` matches on.
fn selector_keys(v: &Value, in_selector: bool, out: &mut BTreeSet<String>) {
    const SELECTORS: [&str; 6] = [
        "selector",
        "podSelector",
        "namespaceSelector",
        "labelSelector",
        "objectSelector",
        "matchLabels",
    ];
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                if in_selector {
                    match k.as_str() {
                        "matchExpressions" => {
                            for e in arr(x) {
                                out.extend(e["key"].as_str().map(str::to_owned));
                            }
                            continue;
                        }
                        "matchLabels" => {}
                        _ if x.is_string() => {
                            out.insert(k.clone());
                        }
                        _ => {}
                    }
                }
                selector_keys(x, in_selector || SELECTORS.contains(&k.as_str()), out);
            }
        }
        Value::Array(a) => a.iter().for_each(|x| selector_keys(x, in_selector, out)),
        _ => {}
    }
}

#[test]
fn dash_f_files_of_the_guide_agree_with_every_overlay_and_region() {
    let readme = readme();
    let files = dash_f_files(&readme);
    let mut f = Failures::default();
    for must in [
        "base/namespaces/istio-system.yaml",
        "base/config/redis-config.yaml",
        "base/config/prometheus-config.yaml",
        "base/config/grafana-dashboard.yaml",
    ] {
        f.check(files.contains(&manifests_dir().join(must)), || {
            format!("the README's -f commands do not cover {must}")
        });
    }
    let bookkeeping = bookkeeping_label_keys();
    f.check(!bookkeeping.is_empty(), || {
        "no overlay stamps labels: the bookkeeping-label exemption is stale".into()
    });
    // The objects each file creates, read once for all targets.
    let file_docs: Vec<(String, Vec<Value>)> = files
        .iter()
        .map(|file| {
            let rel = file.strip_prefix(manifests_dir()).unwrap().display();
            let docs = parse_docs(&fs::read_to_string(file).unwrap()).unwrap();
            (rel.to_string(), docs)
        })
        .collect();
    for target in TARGETS {
        let objs = render(target);
        // The exemption below holds only while nothing selects on those labels.
        let mut used = BTreeSet::new();
        for o in &objs {
            selector_keys(o, false, &mut used);
        }
        for k in &bookkeeping {
            f.check(!used.contains(k), || {
                format!(
                    "{target}: a selector uses {k}, which `kubectl apply -f` of a base file removes"
                )
            });
        }
        for (rel, docs) in &file_docs {
            for d in docs {
                let Some(r) = objs.iter().find(|o| {
                    kind(o) == kind(d)
                        && name(o) == name(d)
                        && namespace(o) == namespace(d)
                        && o["apiVersion"] == d["apiVersion"]
                }) else {
                    f.push(format!(
                        "{target}: `kubectl apply -f {rel}` creates {}, which the {target} does not have",
                        id(d)
                    ));
                    continue;
                };
                let mut r = r.clone();
                if let Some(labels) = r["metadata"]["labels"].as_object_mut() {
                    let own = &d["metadata"]["labels"];
                    labels.retain(|k, _| !bookkeeping.contains(k) || own.get(k).is_some());
                }
                let mut out = Vec::new();
                diff(d, &r, String::new(), &mut out);
                f.check(out.is_empty(), || {
                    format!(
                        "{target}: `kubectl apply -f {rel}` would change {}: {}",
                        id(d),
                        out.join("; ")
                    )
                });
            }
        }
    }
    f.assert_none("kubectl apply -f of the operations guide");
}

// ---- certificates and expiry alerts ------------------------------------------------------

/// The threshold (seconds) of an expiry alert: the right-hand side of its `<` comparison, a
/// product of numbers such as `7 * 24 * 3600`. `None` when the expression has another shape.
fn expiry_threshold(expr: &str) -> Option<f64> {
    let (_, rhs) = expr.rsplit_once('<')?;
    let rhs = rhs.trim_start_matches('=');
    rhs.split('*')
        .map(|x| x.trim().parse::<f64>().ok())
        .product::<Option<f64>>()
}

/// Alerts on a certificate's remaining lifetime, with their thresholds.
fn expiry_alerts(objs: &[Value]) -> Vec<(String, Option<f64>)> {
    of_kind(objs, "PrometheusRule")
        .flat_map(|r| arr(&r["spec"]["groups"]))
        .flat_map(|g| arr(&g["rules"]))
        .filter_map(|r| {
            let alert = r["alert"].as_str()?;
            let expr = r["expr"].as_str()?;
            (expr.contains("cert_not_after_timestamp_seconds")
                || expr.contains("cert_expiration_seconds"))
            .then(|| (alert.to_owned(), expiry_threshold(expr)))
        })
        .collect()
}

#[test]
fn every_certificate_renews_before_any_expiry_alert_fires() {
    const DEFAULT_DURATION: f64 = 2160.0 * 3600.0; // cert-manager's default: 90 days
    let mut f = Failures::default();
    for target in TARGETS {
        let objs = render(target);
        let alerts = expiry_alerts(&objs);
        f.check(alerts.len() >= 3, || {
            format!(
                "{target}: expected the sidecar, injector and Redis expiry alerts, found {alerts:?}"
            )
        });
        for (a, t) in &alerts {
            f.check(t.is_some(), || {
                format!("{target}: cannot read the threshold of {a} (want `... < N * N * N`)")
            });
        }
        let Some(threshold) = alerts.iter().filter_map(|(_, t)| *t).reduce(f64::max) else {
            continue;
        };
        for c in of_kind(&objs, "Certificate") {
            let spec = &c["spec"];
            let duration = match spec["duration"].as_str() {
                Some(d) => go_duration(d),
                None => Some(DEFAULT_DURATION),
            };
            let renew_before = match (spec["renewBefore"].as_str(), &spec["renewBeforePercentage"])
            {
                (Some(r), _) => go_duration(r),
                (None, Value::Number(p)) => duration.zip(p.as_f64()).map(|(d, p)| d * p / 100.0),
                // cert-manager's default: renew when a third of the lifetime is left.
                _ => duration.map(|d| d / 3.0),
            };
            let (Some(duration), Some(renew_before)) = (duration, renew_before) else {
                f.push(format!(
                    "{target}: {}: unreadable duration/renewBefore",
                    id(c)
                ));
                continue;
            };
            f.check(renew_before > threshold, || {
                format!(
                    "{target}: {} renews {:.1} days before expiry, but an expiry alert fires at {:.1} days: it would fire on every healthy certificate",
                    id(c),
                    renew_before / 86400.0,
                    threshold / 86400.0
                )
            });
            f.check(renew_before < duration, || {
                format!(
                    "{target}: {}: renewBefore is not shorter than the lifetime",
                    id(c)
                )
            });
        }
    }
    f.assert_none("certificate lifetimes vs expiry alerts");
}

#[test]
fn expiry_thresholds_are_read_correctly() {
    // The parser the test above relies on, on the shapes it must accept and refuse.
    assert_eq!(
        expiry_threshold("(min(x) - time()) < 7 * 24 * 3600"),
        Some(604800.0)
    );
    assert_eq!(expiry_threshold("min(y) <= 86400"), Some(86400.0));
    assert_eq!(expiry_threshold("min(y) < 7d"), None);
    assert_eq!(expiry_threshold("min(y) > 3"), None);
    assert_eq!(go_duration("720h"), Some(2_592_000.0));
    assert_eq!(go_duration("1h30m"), Some(5400.0));
    assert_eq!(go_duration("16"), None);
}

// ---- install order --------------------------------------------------------------------------

/// What `kubectl apply -k clusters/<region>/ -l app.kubernetes.io/part-of=gembok` applies.
fn gembok_subset(objs: &[Value]) -> Vec<&Value> {
    objs.iter()
        .filter(|o| o["metadata"]["labels"]["app.kubernetes.io/part-of"] == "gembok")
        .collect()
}

#[test]
fn install_steps_run_in_dependency_order() {
    let readme = readme();
    let mut f = Failures::default();
    // The steps, in the order the README gives them.
    let install = readme
        .split("## Install a production region")
        .nth(1)
        .and_then(|s| s.split("\n## ").next())
        .unwrap_or("");
    let steps = [
        "kubectl label namespace istio-system topology.istio.io/network=network-<region>",
        "helm install istiod",
        "kubectl apply -f base/namespaces/",
        "gembok-intermediate-ca-<region>",
        "-l app.kubernetes.io/part-of=gembok",
        "kubectl wait --for=condition=Ready certificates",
        "create secret generic redis-proxy-tls",
        "kubectl apply -k clusters/<region>/",
    ];
    let mut from = 0;
    for s in steps {
        match install[from..].find(s) {
            Some(pos) => from += pos + s.len(),
            None => f.push(format!(
                "install steps lack `{s}` after the previous step{}",
                if install.contains(s) {
                    " (it comes too early)"
                } else {
                    ""
                }
            )),
        }
    }
    // Step "Gembok first" applies the part-of=gembok subset of the region; it must stand on its
    // own: every Certificate (the Redis proxy's included) with its issuer, the injector and its
    // webhook, in namespaces that base/namespaces/ creates.
    let namespaces: BTreeSet<String> = yaml_files(&manifests_dir().join("base/namespaces"))
        .iter()
        .flat_map(|p| parse_docs(&fs::read_to_string(p).unwrap()).unwrap())
        .map(|n| name(&n).to_owned())
        .chain(["cert-manager".to_owned()])
        .collect();
    for region in REGIONS {
        let target = format!("clusters/{region}");
        let objs = render(&target);
        let subset = gembok_subset(&objs);
        let has = |k: &str, ns: &str, n: &str| {
            subset
                .iter()
                .any(|o| kind(o) == k && namespace(o) == ns && name(o) == n)
        };
        for (k, ns, n) in [
            ("ClusterIssuer", "", "gembok-ca"),
            ("Certificate", "redis", "redis-proxy-gembok"),
            ("Deployment", "gembok-system", "gembok-injector"),
            ("Service", "gembok-system", "gembok-injector"),
            ("MutatingWebhookConfiguration", "", "gembok-injector"),
            ("PriorityClass", "", "gembok-critical"),
        ] {
            f.check(has(k, ns, n), || {
                format!("{target}: the part-of=gembok subset lacks {k} {ns}/{n}")
            });
        }
        let issuers: BTreeSet<(&str, &str)> = subset
            .iter()
            .filter(|o| kind(o) == "Issuer" || kind(o) == "ClusterIssuer")
            .map(|o| (namespace(o), name(o)))
            .collect();
        for c in of_kind(&objs, "Certificate") {
            let r = &c["spec"]["issuerRef"];
            let n = r["name"].as_str().unwrap_or("");
            let ns = if r["kind"] == "ClusterIssuer" {
                ""
            } else {
                namespace(c)
            };
            let gembok_pki = issuers.contains(&(ns, n));
            if n == "gembok-ca" || gembok_pki {
                f.check(subset.iter().any(|o| std::ptr::eq(*o, c)), || {
                    format!("{target}: {} is issued by the Gembok PKI but not in the part-of=gembok step", id(c))
                });
                f.check(gembok_pki, || {
                    format!(
                        "{target}: {}'s issuer {n} is not in the part-of=gembok step",
                        id(c)
                    )
                });
            }
        }
        for o in &subset {
            let ns = namespace(o);
            f.check(ns.is_empty() || namespaces.contains(ns), || {
                format!(
                    "{target}: {} is in {ns}, which step 2 does not create",
                    id(o)
                )
            });
        }
    }
    f.assert_none("install order");
}

#[test]
fn every_alert_and_recording_rule_is_valid_promql() {
    let mut f = Failures::default();
    for target in TARGETS {
        let objs = render(target);
        let rules = of_kind(&objs, "PrometheusRule")
            .flat_map(|p| arr(&p["spec"]["groups"]).iter().map(move |g| (p, g)))
            .flat_map(|(p, g)| arr(&g["rules"]).iter().map(move |r| (p, r)));
        let mut parsed = 0;
        for (p, rule) in rules {
            let what = rule["alert"]
                .as_str()
                .or(rule["record"].as_str())
                .unwrap_or("?");
            let expr = rule["expr"].as_str().unwrap_or("");
            match promql_parser::parser::parse(expr) {
                Ok(_) => parsed += 1,
                Err(e) => f.push(format!("{target}: {} {what}: {e}\n{expr}", id(p))),
            }
        }
        f.check(parsed > 0, || {
            format!("{target}: no PrometheusRule expression")
        });
    }
    // The parser does refuse what Prometheus refuses.
    assert!(promql_parser::parser::parse("rate(x[5m]) <").is_err());
    assert!(promql_parser::parser::parse("sum by (a) (rate(x[5m]))").is_ok());
    f.assert_none("PromQL");
}
