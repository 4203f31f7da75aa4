//! Cross-object consistency of the rendered layout: selectors, scaling targets, monitors,
//! references, security settings, images and API versions.

use std::collections::BTreeSet;

use serde_json::Value;

use super::operators::{injected_operator_workloads, operator_workloads};
use super::support::*;

/// Secrets that no manifest can produce because they hold credentials or key material that is
/// created out of band at install time (manifests/README.md, "Secrets created at install time").
/// (namespace, name, why)
const OUT_OF_BAND_SECRETS: &[(&str, &str, &str)] = &[
    (
        "redis",
        "redis-proxy-tls",
        "Redis Enterprise's Secret shape of redis-proxy-gembok-tls",
    ),
    (
        "redis",
        "gembok-client-ca",
        "Gembok root certificate in Redis Enterprise's shape",
    ),
    (
        "redis",
        "redis-enterprise-rerc-us",
        "credentials of the us Redis Enterprise cluster",
    ),
    (
        "redis",
        "redis-enterprise-rerc-eu",
        "credentials of the eu Redis Enterprise cluster",
    ),
    (
        "redis",
        "redis-enterprise-rerc-asia",
        "credentials of the asia Redis Enterprise cluster",
    ),
    (
        "monitoring",
        "jaeger-es-credentials",
        "Elasticsearch credentials for Jaeger",
    ),
    (
        "cert-manager",
        "gembok-intermediate-ca",
        "regional intermediate CA (staging)",
    ),
    (
        "cert-manager",
        "gembok-intermediate-ca-us",
        "us intermediate CA key, from the offline root",
    ),
    (
        "cert-manager",
        "gembok-intermediate-ca-eu",
        "eu intermediate CA key, from the offline root",
    ),
    (
        "cert-manager",
        "gembok-intermediate-ca-asia",
        "asia intermediate CA key, from the offline root",
    ),
];

/// Group/versions of the built-in kinds the layout uses; each is served by Kubernetes 1.25, the
/// oldest version the layout supports (with components/classic-sidecars; the shipped native
/// sidecars need 1.29). run.sh validates every object against the 1.25 schemas as well.
const SERVED_BY_1_25: &[&str] = &[
    "v1",
    "apps/v1",
    "batch/v1",
    "policy/v1",
    "autoscaling/v2",
    "networking.k8s.io/v1",
    "rbac.authorization.k8s.io/v1",
    "admissionregistration.k8s.io/v1",
    "scheduling.k8s.io/v1",
];

/// Metric names the proxy must export and the Gembok dashboard must show (docs/contracts.md).
const PROXY_METRICS: &[&str] = &[
    "gembok_connections_opened_total",
    "gembok_connections_closed_total",
    "gembok_connections_active",
    "gembok_bytes_total",
    "gembok_handshake_duration_seconds",
    "gembok_handshake_failures_total",
    "gembok_tls_handshakes_total",
    "gembok_truncations_total",
    "gembok_cert_reloads_total",
    "gembok_cert_not_after_timestamp_seconds",
    "gembok_build_info",
    "gembok_sandbox_info",
];

#[test]
fn every_service_selects_a_pod_template() {
    let mut f = Failures::default();
    for target in TARGETS {
        let objs = render(target);
        // The operators' pods count too (Service monitoring/jaeger selects the collector).
        let made = operator_workloads(&objs);
        let mut pods = pod_templates(&objs);
        pods.extend(pod_templates(&made));
        for svc in of_kind(&objs, "Service") {
            let sel = &svc["spec"]["selector"];
            let hit = pods
                .iter()
                .any(|p| p.namespace() == namespace(svc) && map_selector_matches(sel, &p.labels()));
            f.check(hit, || {
                format!("{target}: {} selects no pod template", id(svc))
            });
        }
    }
    f.assert_none("Service selectors");
}

/// The fewest replicas a workload runs with: its HPA's minimum, or its own count.
fn least_replicas(objs: &[Value], workload: &Value) -> i64 {
    of_kind(objs, "HorizontalPodAutoscaler")
        .find(|h| {
            namespace(h) == namespace(workload)
                && h["spec"]["scaleTargetRef"]["kind"] == workload["kind"]
                && h["spec"]["scaleTargetRef"]["name"] == workload["metadata"]["name"]
        })
        .map(|h| h["spec"]["minReplicas"].as_i64().unwrap_or(1))
        .unwrap_or_else(|| workload["spec"]["replicas"].as_i64().unwrap_or(1))
}

#[test]
fn every_hpa_and_pdb_targets_an_existing_workload() {
    let mut f = Failures::default();
    for target in TARGETS {
        let objs = render(target);
        for hpa in of_kind(&objs, "HorizontalPodAutoscaler") {
            let r = &hpa["spec"]["scaleTargetRef"];
            let k = r["kind"].as_str().unwrap_or("");
            let n = r["name"].as_str().unwrap_or("");
            let scaled = find(&objs, k, namespace(hpa), n);
            f.check(scaled.is_some(), || {
                format!("{target}: {} scales missing {k}/{n}", id(hpa))
            });
            // The HPA owns the count: a declared one would be put back on every apply.
            f.check(
                scaled.is_none_or(|w| w["spec"]["replicas"].is_null()),
                || {
                    format!(
                        "{target}: {k}/{n} declares replicas although {} scales it",
                        id(hpa)
                    )
                },
            );
            let min = hpa["spec"]["minReplicas"].as_i64().unwrap_or(1);
            let max = hpa["spec"]["maxReplicas"].as_i64().unwrap_or(0);
            f.check(min <= max, || format!("{target}: {} min > max", id(hpa)));
        }
        let pods = pod_templates(&objs);
        for pdb in of_kind(&objs, "PodDisruptionBudget") {
            let hits: Vec<_> = pods
                .iter()
                .filter(|p| {
                    p.namespace() == namespace(pdb)
                        && selector_matches(&pdb["spec"]["selector"], &p.labels())
                })
                .collect();
            f.check(!hits.is_empty(), || {
                format!("{target}: {} selects no workload", id(pdb))
            });
            // A minAvailable equal to the replica count would block every node drain.
            if let (Some(min), [one]) = (pdb["spec"]["minAvailable"].as_i64(), hits.as_slice()) {
                let replicas = least_replicas(&objs, one.owner);
                f.check(min < replicas, || {
                    format!(
                        "{target}: {} minAvailable {min} >= replicas {replicas}",
                        id(pdb)
                    )
                });
            }
        }
        // Every ecommerce workload has both.
        for svc in SERVICES {
            f.check(
                find(&objs, "HorizontalPodAutoscaler", APP_NAMESPACE, svc).is_some(),
                || format!("{target}: no HPA for {svc}"),
            );
            f.check(
                find(&objs, "PodDisruptionBudget", APP_NAMESPACE, svc).is_some(),
                || format!("{target}: no PDB for {svc}"),
            );
        }
    }
    f.assert_none("HPAs and PDBs");
}

#[test]
fn hpas_scale_on_cpu_and_a_custom_metric_the_adapter_serves() {
    let mut f = Failures::default();
    for target in TARGETS {
        let objs = render(target);
        let adapter = find(&objs, "ConfigMap", "monitoring", "prometheus-adapter-rules")
            .map(|cm| cm["data"]["config.yaml"].as_str().unwrap_or("").to_owned())
            .unwrap_or_default();
        let served = adapter_metric_names(&adapter);
        for hpa in
            of_kind(&objs, "HorizontalPodAutoscaler").filter(|h| namespace(h) == APP_NAMESPACE)
        {
            let metrics = arr(&hpa["spec"]["metrics"]);
            let cpu = metrics.iter().any(|m| {
                m["resource"]["name"] == "cpu"
                    && m["resource"]["target"]["averageUtilization"] == 70
            });
            f.check(cpu, || {
                format!("{target}: {} lacks the CPU 70% target", id(hpa))
            });
            let custom: Vec<&str> = metrics
                .iter()
                .filter(|m| m["type"] == "Pods")
                .filter_map(|m| m["pods"]["metric"]["name"].as_str())
                .collect();
            f.check(!custom.is_empty(), || {
                format!("{target}: {} has no per-pod metric", id(hpa))
            });
            for m in custom {
                f.check(served.contains(m), || {
                    format!("{target}: {} scales on {m}, which no prometheus-adapter rule serves (served: {served:?})", id(hpa))
                });
            }
            if target.starts_with("clusters/") || target == "overlays/production" {
                f.check(
                    hpa["spec"]["minReplicas"] == 3 && hpa["spec"]["maxReplicas"] == 10,
                    || format!("{target}: {} is not 3..10", id(hpa)),
                );
            }
        }
    }
    f.assert_none("HPA metrics");
}

/// Metric names prometheus-adapter exposes: each rule's seriesQuery metric renamed by name.as.
fn adapter_metric_names(config: &str) -> BTreeSet<String> {
    let v: Value = serde_yaml_ng::from_str(config).unwrap_or(Value::Null);
    arr(&v["rules"])
        .iter()
        .filter_map(|r| {
            let series = r["seriesQuery"].as_str()?;
            let metric = series.split('{').next()?.trim().trim_matches('\'');
            let matches = r["name"]["matches"].as_str().unwrap_or("^(.*)$");
            let as_ = r["name"]["as"].as_str().unwrap_or("${1}");
            // The rules use one capture group anchored at both ends: "^(.*)<suffix>$".
            let inner = matches.trim_start_matches('^').trim_end_matches('$');
            let suffix = inner.strip_prefix("(.*)")?;
            let stem = metric.strip_suffix(suffix)?;
            Some(as_.replace("${1}", stem))
        })
        .collect()
}

#[test]
fn monitors_select_existing_services_pods_and_ports() {
    let mut f = Failures::default();
    for target in TARGETS {
        // Pod monitors scrape the sidecar's gembok-admin port, which exists after injection
        // (the operators' pods too: the Jaeger collector has a sidecar).
        let objs = injected(target);
        let made = injected_operator_workloads(&objs).unwrap_or_else(|e| panic!("{target}: {e:#}"));
        let mut pods = pod_templates(&objs);
        pods.extend(pod_templates(&made));
        let mut scraped = std::collections::BTreeSet::new();
        let services: Vec<Value> = of_kind(&objs, "Service")
            .cloned()
            .chain(operator_services(&objs))
            .collect();
        let mut monitors = 0;
        for sm in of_kind(&objs, "ServiceMonitor") {
            monitors += 1;
            let nss = selected_namespaces(&sm["spec"]["namespaceSelector"], namespace(sm));
            for ep in arr(&sm["spec"]["endpoints"]) {
                let port = ep["port"].as_str().unwrap_or("");
                let hit = services.iter().any(|s| {
                    nss.contains(namespace(s))
                        && selector_matches(
                            &sm["spec"]["selector"],
                            &str_map(&s["metadata"]["labels"]),
                        )
                        && arr(&s["spec"]["ports"]).iter().any(|p| p["name"] == port)
                });
                f.check(hit, || {
                    format!("{target}: {} finds no Service with port {port:?}", id(sm))
                });
            }
        }
        for pm in of_kind(&objs, "PodMonitor") {
            monitors += 1;
            let nss = selected_namespaces(&pm["spec"]["namespaceSelector"], namespace(pm));
            for ep in arr(&pm["spec"]["podMetricsEndpoints"]) {
                let port = ep["port"].as_str().unwrap_or("");
                let hits: Vec<String> = pods
                    .iter()
                    .filter(|p| {
                        nss.contains(p.namespace())
                            && selector_matches(&pm["spec"]["selector"], &p.labels())
                            && p.container_ports().iter().any(|(n, _)| n == port)
                    })
                    .map(|p| id(p.owner))
                    .collect();
                f.check(!hits.is_empty(), || {
                    format!("{target}: {} finds no pod with port {port:?}", id(pm))
                });
                if port == "gembok-admin" {
                    scraped.extend(hits);
                }
            }
        }
        // Every sidecar is scraped: each ecommerce workload and every other injected pod.
        for p in &pods {
            let sidecar = p.container_ports().iter().any(|(n, _)| n == "gembok-admin");
            f.check(!sidecar || scraped.contains(&id(p.owner)), || {
                format!(
                    "{target}: no PodMonitor scrapes the sidecar of {}",
                    id(p.owner)
                )
            });
            f.check(p.namespace() != APP_NAMESPACE || sidecar, || {
                format!("{target}: {} has no sidecar admin port", id(p.owner))
            });
        }
        f.check(
            pods.iter()
                .any(|p| p.namespace() == "monitoring" && scraped.contains(&id(p.owner))),
            || format!("{target}: the Jaeger collector's sidecar is not scraped"),
        );
        f.check(monitors >= 3, || {
            format!("{target}: only {monitors} monitors")
        });
    }
    f.assert_none("ServiceMonitors/PodMonitors");
}

/// Services an operator creates for a custom resource of the layout (they are not in the
/// rendered output): the Redis Enterprise operator's metrics Service `<rec>-prom` (label
/// redis.io/service=prom-metrics, port "prometheus" 8070).
fn operator_services(objs: &[Value]) -> Vec<Value> {
    of_kind(objs, "RedisEnterpriseCluster")
        .map(|rec| {
            serde_json::json!({
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {
                    "name": format!("{}-prom", name(rec)),
                    "namespace": namespace(rec),
                    "labels": {"app": "redis-enterprise", "redis.io/cluster": name(rec), "redis.io/service": "prom-metrics"},
                },
                "spec": {"ports": [{"name": "prometheus", "port": 8070}]},
            })
        })
        .collect()
}

fn selected_namespaces<'a>(sel: &'a Value, own: &'a str) -> BTreeSet<&'a str> {
    let names: BTreeSet<&str> = arr(&sel["matchNames"])
        .iter()
        .filter_map(Value::as_str)
        .collect();
    if names.is_empty() {
        BTreeSet::from([own])
    } else {
        names
    }
}

#[test]
fn every_referenced_secret_configmap_and_service_account_exists() {
    let mut f = Failures::default();
    for target in TARGETS {
        let objs = injected(target);
        let secrets: BTreeSet<(String, String)> = of_kind(&objs, "Secret")
            .map(|s| (namespace(s).to_owned(), name(s).to_owned()))
            .chain(of_kind(&objs, "Certificate").map(|c| {
                (
                    namespace(c).to_owned(),
                    c["spec"]["secretName"].as_str().unwrap_or("").to_owned(),
                )
            }))
            .collect();
        let has_secret = |ns: &str, n: &str| {
            secrets.contains(&(ns.to_owned(), n.to_owned()))
                || OUT_OF_BAND_SECRETS
                    .iter()
                    .any(|(o_ns, o_n, _)| *o_ns == ns && *o_n == n)
        };
        let mut need_secret = |ns: &str, n: &str, who: String| {
            f.check(has_secret(ns, n), || {
                format!("{target}: {who} needs Secret {ns}/{n}")
            });
        };
        for p in pod_templates(&objs) {
            let ns = p.namespace();
            let who = id(p.owner);
            for v in arr(&p.spec()["volumes"]) {
                if let Some(s) = v["secret"]["secretName"].as_str() {
                    need_secret(ns, s, who.clone());
                }
            }
            for c in p.all_containers() {
                for e in arr(&c["env"]) {
                    let r = &e["valueFrom"]["secretKeyRef"];
                    if let (Some(s), false) = (r["name"].as_str(), r["optional"] == true) {
                        need_secret(ns, s, who.clone());
                    }
                }
            }
        }
        for gw in of_kind(&objs, "Gateway") {
            for s in arr(&gw["spec"]["servers"]) {
                if let Some(c) = s["tls"]["credentialName"].as_str() {
                    // Istio reads gateway credentials from the gateway workload's namespace.
                    need_secret("istio-system", c, id(gw));
                }
            }
        }
        for dr in of_kind(&objs, "DestinationRule") {
            if let Some(c) = dr["spec"]["trafficPolicy"]["tls"]["credentialName"].as_str() {
                need_secret(namespace(dr), c, id(dr));
            }
        }
        for rec in of_kind(&objs, "RedisEnterpriseCluster") {
            for (_, v) in str_map(&rec["spec"]["certificates"]) {
                need_secret(namespace(rec), &v, id(rec));
            }
        }
        for db in of_kind(&objs, "RedisEnterpriseDatabase") {
            for s in arr(&db["spec"]["clientAuthenticationCertificates"]) {
                need_secret(namespace(db), s.as_str().unwrap_or(""), id(db));
            }
        }
        for db in of_kind(&objs, "RedisEnterpriseActiveActiveDatabase") {
            for s in arr(&db["spec"]["globalConfigurations"]["clientAuthenticationCertificates"]) {
                need_secret(namespace(db), s.as_str().unwrap_or(""), id(db));
            }
        }
        for rerc in of_kind(&objs, "RedisEnterpriseRemoteCluster") {
            if let Some(s) = rerc["spec"]["secretName"].as_str() {
                need_secret(namespace(rerc), s, id(rerc));
            }
        }
        for j in of_kind(&objs, "Jaeger") {
            if let Some(s) = j["spec"]["storage"]["secretName"].as_str() {
                need_secret(namespace(j), s, id(j));
            }
        }
        for ci in of_kind(&objs, "ClusterIssuer") {
            if let Some(s) = ci["spec"]["ca"]["secretName"].as_str() {
                need_secret("cert-manager", s, id(ci));
            }
        }
        for is in of_kind(&objs, "Issuer") {
            if let Some(s) = is["spec"]["ca"]["secretName"].as_str() {
                need_secret(namespace(is), s, id(is));
            }
        }
        // Issuers referenced by Certificates.
        for c in of_kind(&objs, "Certificate") {
            let r = &c["spec"]["issuerRef"];
            let n = r["name"].as_str().unwrap_or("");
            let ok = match r["kind"].as_str().unwrap_or("Issuer") {
                "ClusterIssuer" => of_kind(&objs, "ClusterIssuer").any(|i| name(i) == n),
                _ => find(&objs, "Issuer", namespace(c), n).is_some(),
            };
            f.check(ok, || {
                format!("{target}: {} uses missing issuer {n}", id(c))
            });
        }
        // ConfigMaps and ServiceAccounts used by pods.
        for p in pod_templates(&objs) {
            let ns = p.namespace();
            for v in arr(&p.spec()["volumes"]) {
                if let Some(cm) = v["configMap"]["name"].as_str() {
                    f.check(find(&objs, "ConfigMap", ns, cm).is_some(), || {
                        format!("{target}: {} needs ConfigMap {ns}/{cm}", id(p.owner))
                    });
                }
            }
            for c in p.all_containers() {
                for e in arr(&c["env"]) {
                    if let Some(cm) = e["valueFrom"]["configMapKeyRef"]["name"].as_str() {
                        f.check(find(&objs, "ConfigMap", ns, cm).is_some(), || {
                            format!("{target}: {} needs ConfigMap {ns}/{cm}", id(p.owner))
                        });
                    }
                }
            }
            let sa = p.service_account();
            f.check(find(&objs, "ServiceAccount", ns, sa).is_some(), || {
                format!(
                    "{target}: {} runs as missing ServiceAccount {ns}/{sa}",
                    id(p.owner)
                )
            });
        }
        // Every namespace objects live in is created by the layout (or is cert-manager's).
        for o in &objs {
            let ns = namespace(o);
            if !ns.is_empty() {
                f.check(of_kind(&objs, "Namespace").any(|n| name(n) == ns), || {
                    format!(
                        "{target}: {} is in namespace {ns}, which the layout does not create",
                        id(o)
                    )
                });
            }
        }
    }
    f.assert_none("references");
}

#[test]
fn every_container_is_locked_down_and_probed() {
    let mut f = Failures::default();
    for target in TARGETS {
        let objs = injected(target);
        for p in pod_templates(&objs) {
            let pod_sc = &p.spec()["securityContext"];
            let who = id(p.owner);
            for c in p.all_containers() {
                let cn = c["name"].as_str().unwrap_or("?");
                let sc = &c["securityContext"];
                let either = |k: &str| sc[k].as_bool().or(pod_sc[k].as_bool());
                f.check(either("runAsNonRoot") == Some(true), || {
                    format!("{target}: {who}/{cn}: runAsNonRoot")
                });
                let uid = sc["runAsUser"].as_i64().or(pod_sc["runAsUser"].as_i64());
                f.check(uid.is_some_and(|u| u > 0), || {
                    format!("{target}: {who}/{cn}: runAsUser must be a non-zero uid")
                });
                f.check(sc["readOnlyRootFilesystem"] == true, || {
                    format!("{target}: {who}/{cn}: readOnlyRootFilesystem")
                });
                f.check(sc["allowPrivilegeEscalation"] == false, || {
                    format!("{target}: {who}/{cn}: allowPrivilegeEscalation")
                });
                f.check(
                    arr(&sc["capabilities"]["drop"]).iter().any(|d| d == "ALL"),
                    || format!("{target}: {who}/{cn}: drop ALL"),
                );
                let seccomp = sc["seccompProfile"]["type"]
                    .as_str()
                    .or(pod_sc["seccompProfile"]["type"].as_str());
                f.check(seccomp == Some("RuntimeDefault"), || {
                    format!("{target}: {who}/{cn}: seccomp RuntimeDefault")
                });
                let res = &c["resources"];
                for k in ["requests", "limits"] {
                    for r in ["cpu", "memory"] {
                        f.check(res[k][r].is_string() || res[k][r].is_number(), || {
                            format!("{target}: {who}/{cn}: resources.{k}.{r}")
                        });
                    }
                }
            }
            for c in p.long_running() {
                let cn = c["name"].as_str().unwrap_or("?");
                f.check(
                    c["readinessProbe"].is_object() || c["startupProbe"].is_object(),
                    || format!("{target}: {who}/{cn}: no readiness/startup probe"),
                );
                f.check(c["livenessProbe"].is_object(), || {
                    format!("{target}: {who}/{cn}: no liveness probe")
                });
            }
            let replicas = least_replicas(&objs, p.owner);
            if replicas > 1 || kind(p.owner) == "Deployment" && p.namespace() == APP_NAMESPACE {
                let spread = !arr(&p.spec()["topologySpreadConstraints"]).is_empty();
                f.check(spread, || {
                    format!("{target}: {who}: no topologySpreadConstraints")
                });
            }
        }
    }
    f.assert_none("security context, resources, probes");
}

#[test]
fn images_are_consistent_and_tagged_per_overlay() {
    let mut f = Failures::default();
    for target in TARGETS {
        let objs = render(target);
        let mut app_tags = BTreeSet::new();
        for svc in SERVICES {
            let Some(d) = find(&objs, "Deployment", APP_NAMESPACE, svc) else {
                f.push(format!("{target}: no Deployment {svc}"));
                continue;
            };
            let image = d["spec"]["template"]["spec"]["containers"][0]["image"]
                .as_str()
                .unwrap_or("");
            let (repo, tag) = image.rsplit_once(':').unwrap_or((image, ""));
            f.check(
                repo == format!("registry.example.com/ecommerce/{svc}"),
                || {
                    format!(
                        "{target}: {svc} image {image} is not registry.example.com/ecommerce/{svc}"
                    )
                },
            );
            app_tags.insert(tag.to_owned());
        }
        f.check(app_tags.len() == 1 && !app_tags.contains(""), || {
            format!("{target}: service image tags differ or are empty: {app_tags:?}")
        });
        // Nobody writes the sidecar by hand: it only appears through injection.
        for p in pod_templates(&objs) {
            for c in p.all_containers() {
                let hand_written = c["name"] == PROXY_CONTAINER
                    || c["image"].as_str().unwrap_or("").contains("gembok-proxy");
                f.check(!hand_written, || {
                    format!("{target}: {} has a hand-written gembok-proxy", id(p.owner))
                });
            }
        }
        let Some(inj) = find(&objs, "Deployment", "gembok-system", "gembok-injector") else {
            f.push(format!("{target}: no injector Deployment"));
            continue;
        };
        let c = &inj["spec"]["template"]["spec"]["containers"][0];
        let image = c["image"].as_str().unwrap_or("");
        let proxy = arr(&c["env"])
            .iter()
            .find(|e| e["name"] == "GEMBOK_INJECTOR_PROXY_IMAGE")
            .and_then(|e| e["value"].as_str())
            .unwrap_or("");
        let tag = |s: &str| {
            s.rsplit_once(':')
                .map(|(_, t)| t.to_owned())
                .unwrap_or_default()
        };
        f.check(image.starts_with("ghcr.io/gembok/gembok-injector:"), || {
            format!("{target}: injector image {image}")
        });
        f.check(proxy.starts_with("ghcr.io/gembok/gembok-proxy:"), || {
            format!("{target}: proxy image {proxy}")
        });
        f.check(tag(image) == tag(proxy), || {
            format!("{target}: injector {image} and injected proxy {proxy} are different releases")
        });
        let fips = arr(&c["env"])
            .iter()
            .find(|e| e["name"] == "GEMBOK_INJECTOR_PROXY_IMAGE_FIPS")
            .and_then(|e| e["value"].as_str())
            .unwrap_or("");
        f.check(fips == format!("{proxy}-fips"), || {
            format!("{target}: the FIPS proxy image {fips:?} is not {proxy}-fips, the same release's FIPS build")
        });
    }
    f.assert_none("images");
}

#[test]
fn built_in_api_versions_are_served_by_the_oldest_supported_kubernetes() {
    let mut f = Failures::default();
    for target in TARGETS {
        for o in render(target) {
            let v = o["apiVersion"].as_str().unwrap_or("");
            let group = v.split('/').next().unwrap_or("");
            let built_in = !v.contains('/') || !group.contains('.') || group.ends_with(".k8s.io");
            if built_in {
                f.check(SERVED_BY_1_25.contains(&v), || {
                    format!(
                        "{target}: {} uses {v}, not served by Kubernetes 1.25",
                        id(&o)
                    )
                });
            }
        }
    }
    f.assert_none("API versions");
}

#[test]
fn dashboards_and_alerts_use_metrics_the_binaries_export() {
    let objs = render("overlays/production");
    let mut f = Failures::default();
    let mut texts = Vec::new();
    for cm in
        of_kind(&objs, "ConfigMap").filter(|c| c["metadata"]["labels"]["grafana_dashboard"] == "1")
    {
        for (file, body) in str_map(&cm["data"]) {
            match serde_json::from_str::<Value>(&body) {
                Ok(d) => {
                    f.check(d["uid"].is_string() && d["panels"].is_array(), || {
                        format!("{}: {file} is not a dashboard", id(cm))
                    });
                    for p in arr(&d["panels"]) {
                        for t in arr(&p["targets"]) {
                            texts.push(t["expr"].as_str().unwrap_or("").to_owned());
                        }
                    }
                }
                Err(e) => f.push(format!("{}: {file}: {e}", id(cm))),
            }
        }
    }
    let gembok_dash = texts.join("\n");
    for m in PROXY_METRICS {
        f.check(gembok_dash.contains(m), || {
            format!("the Gembok dashboard does not show {m}")
        });
    }
    for rule in of_kind(&objs, "PrometheusRule") {
        for g in arr(&rule["spec"]["groups"]) {
            for r in arr(&g["rules"]) {
                texts.push(r["expr"].as_str().unwrap_or("").to_owned());
            }
        }
    }
    let injector_metrics = injector_metric_names();
    let proxy_metrics = proxy_metric_names();
    for m in PROXY_METRICS {
        f.check(proxy_metrics.contains(*m), || {
            format!("proxy/src/metrics.rs does not define {m}")
        });
    }
    for expr in &texts {
        for word in expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
            if !word.starts_with("gembok_") {
                continue;
            }
            let base = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| word.strip_suffix(s))
                .unwrap_or(word);
            let known = proxy_metrics.contains(base)
                || (base.starts_with("gembok_injector_")
                    && injector_metrics.as_ref().is_none_or(|m| m.contains(base)));
            f.check(known, || format!("unknown metric {word} in `{expr}`"));
        }
    }
    f.assert_none("dashboards and alerts");
}

/// The proxy's metric names: the constants in `proxy/src/metrics.rs` plus the certificate
/// metrics `gembok-certwatch` registers under the proxy's `gembok_` prefix.
fn proxy_metric_names() -> BTreeSet<String> {
    let src = std::fs::read_to_string(repo().join("proxy/src/metrics.rs")).unwrap_or_default();
    let mut names: BTreeSet<String> = src
        .split('"')
        .filter(|w| w.starts_with("gembok_") && w.len() > "gembok_".len() && !w.contains(' '))
        .map(str::to_owned)
        .collect();
    names.insert("gembok_cert_reloads_total".into());
    names.insert("gembok_cert_not_after_timestamp_seconds".into());
    names
}

/// The injector's metric names: the constants in its `src/metrics.rs` plus the certificate
/// metrics `gembok-certwatch` registers under the injector's prefix (injector/README.md).
/// `None` while the injector has no metrics module.
fn injector_metric_names() -> Option<BTreeSet<String>> {
    let src = std::fs::read_to_string(repo().join("injector/src/metrics.rs")).ok()?;
    let mut names: BTreeSet<String> = src
        .split('"')
        .filter(|w| w.starts_with("gembok_injector_") && w.len() > "gembok_injector_".len())
        .map(str::to_owned)
        .collect();
    if names.is_empty() {
        return None;
    }
    names.insert("gembok_injector_cert_reloads_total".into());
    names.insert("gembok_injector_cert_not_after_timestamp_seconds".into());
    Some(names)
}
