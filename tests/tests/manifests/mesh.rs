//! Istio multi-primary settings per region, Istio/Gembok coexistence, and the injector's
//! webhook registration and Deployment.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;

use serde_json::Value;

use super::operators::{labels_of, operator_workloads};
use super::support::*;

pub fn istio_values(region: &str) -> Value {
    let path = manifests_dir().join(format!("clusters/{region}/istio-values.yaml"));
    let text = fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_yaml_ng::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn every_region_is_one_cluster_and_network_of_one_mesh() {
    let mut f = Failures::default();
    let mut mesh_ids = BTreeSet::new();
    let mut clusters = BTreeSet::new();
    let mut networks = BTreeSet::new();
    let mut rec_names = BTreeSet::new();
    // Each region rendered once: the checks below compare the regions with each other.
    let rendered: BTreeMap<String, Vec<Value>> = REGIONS
        .iter()
        .map(|r| (r.to_string(), render(&format!("clusters/{r}"))))
        .collect();
    // The istio-system network label is set at install time (README step 1), with the one
    // network name pattern that the regions' istio-values follow (checked below).
    f.check(
        readme().contains(
            "kubectl label namespace istio-system topology.istio.io/network=network-<region>",
        ),
        || "README lacks the istio-system network label command of install step 1".into(),
    );
    for region in REGIONS {
        let target = format!("clusters/{region}");
        let v = istio_values(region);
        let network = v["global"]["network"].as_str().unwrap_or("").to_owned();
        mesh_ids.insert(v["global"]["meshID"].as_str().unwrap_or("").to_owned());
        clusters.insert(
            v["global"]["multiCluster"]["clusterName"]
                .as_str()
                .unwrap_or("")
                .to_owned(),
        );
        networks.insert(network.clone());
        let objs = &rendered[region];
        // The namespace's network label is set at install time (`kubectl label`, README step 1),
        // never declared: a declared label would be removed by `kubectl apply -f
        // base/namespaces/` (see operations.rs). The network name follows one pattern, which the
        // README's label command uses.
        f.check(network == format!("network-{region}"), || {
            format!("{target}: istio-values network {network:?} is not network-{region}")
        });
        let ns = namespace_labels(objs, "istio-system");
        f.check(!ns.contains_key("topology.istio.io/network"), || {
            format!("{target}: the rendered istio-system declares topology.istio.io/network; it is set at install time")
        });
        match find(objs, "Deployment", "istio-system", "istio-eastwestgateway") {
            Some(gw) => {
                let t = &gw["spec"]["template"];
                f.check(
                    t["metadata"]["labels"]["topology.istio.io/network"] == network.as_str(),
                    || format!("{target}: east-west gateway pod network label"),
                );
                let env = arr(&t["spec"]["containers"][0]["env"]);
                let view = env
                    .iter()
                    .find(|e| e["name"] == "ISTIO_META_REQUESTED_NETWORK_VIEW");
                f.check(view.is_some_and(|e| e["value"] == network.as_str()), || {
                    format!("{target}: east-west gateway network view")
                });
            }
            None => f.push(format!("{target}: no east-west gateway")),
        }
        match find(objs, "Service", "istio-system", "istio-eastwestgateway") {
            Some(s) => {
                f.check(
                    s["metadata"]["labels"]["topology.istio.io/network"] == network.as_str(),
                    || format!("{target}: east-west Service network label"),
                );
                f.check(
                    arr(&s["spec"]["ports"]).iter().any(|p| p["port"] == 15443),
                    || format!("{target}: east-west Service lacks 15443"),
                );
            }
            None => f.push(format!("{target}: no east-west Service")),
        }
        let passthrough = of_kind(objs, "Gateway").any(|g| {
            g["spec"]["selector"]["istio"] == "eastwestgateway"
                && arr(&g["spec"]["servers"])
                    .iter()
                    .any(|s| s["port"]["number"] == 15443 && s["tls"]["mode"] == "AUTO_PASSTHROUGH")
        });
        f.check(passthrough, || {
            format!("{target}: no AUTO_PASSTHROUGH cross-network Gateway")
        });
        // Telemetry providers must be declared in meshConfig.
        let providers: BTreeSet<&str> = arr(&v["meshConfig"]["extensionProviders"])
            .iter()
            .filter_map(|p| p["name"].as_str())
            .collect();
        for t in of_kind(objs, "Telemetry") {
            for tr in arr(&t["spec"]["tracing"]) {
                for p in arr(&tr["providers"]) {
                    let n = p["name"].as_str().unwrap_or("");
                    f.check(providers.contains(n), || {
                        format!("{target}: {} uses provider {n} not in meshConfig", id(t))
                    });
                }
            }
        }
        // The regional issuer and Redis cluster.
        let issuer = of_kind(objs, "ClusterIssuer").find(|i| name(i) == "gembok-ca");
        f.check(
            issuer.is_some_and(|i| {
                i["spec"]["ca"]["secretName"] == format!("gembok-intermediate-ca-{region}").as_str()
            }),
            || format!("{target}: gembok-ca does not sign with the {region} intermediate"),
        );
        // One Redis Enterprise cluster with a name unique across the regions (active-active
        // requires it), reachable from the other regions on this region's FQDN; every region's
        // RedisEnterpriseRemoteCluster for this region names exactly this REC and FQDN.
        let recs: Vec<&Value> = of_kind(objs, "RedisEnterpriseCluster").collect();
        f.check(recs.len() == 1, || {
            format!("{target}: {} RedisEnterpriseClusters", recs.len())
        });
        let rec = recs.first().copied();
        let rec_name = rec.map(name).unwrap_or("").to_owned();
        f.check(rec_name == format!("rec-{region}"), || {
            format!("{target}: the REC is named {rec_name:?}, not rec-{region}")
        });
        rec_names.insert(rec_name.clone());
        let api = rec
            .and_then(|r| r["spec"]["ingressOrRouteSpec"]["apiFqdnUrl"].as_str())
            .unwrap_or("")
            .to_owned();
        f.check(api.contains(&format!(".{region}.")), || {
            format!("{target}: REC API FQDN {api:?} is not this region's")
        });
        for other in REGIONS {
            let rerc = find(
                &rendered[other],
                "RedisEnterpriseRemoteCluster",
                "redis",
                &format!("rerc-{region}"),
            );
            f.check(
                rerc.is_some_and(|r| {
                    r["spec"]["apiFqdnUrl"] == api.as_str()
                        && r["spec"]["recName"] == rec_name.as_str()
                        && r["spec"]["recNamespace"] == "redis"
                }),
                || {
                    format!(
                        "clusters/{other}: rerc-{region} does not describe {target}'s REC {rec_name} ({api})"
                    )
                },
            );
        }
        // Databases bind to this REC: by name, or implicitly (one REC per namespace).
        for db in of_kind(objs, "RedisEnterpriseDatabase")
            .chain(of_kind(objs, "RedisEnterpriseActiveActiveDatabase"))
        {
            let bound = &db["spec"]["redisEnterpriseCluster"]["name"];
            f.check(bound.is_null() || *bound == rec_name.as_str(), || {
                format!("{target}: {} names REC {bound}, not {rec_name}", id(db))
            });
        }
        // The active-active database never shares a name or port with a regional one.
        let regional: Vec<(&str, &Value)> = of_kind(objs, "RedisEnterpriseDatabase")
            .map(|d| (name(d), &d["spec"]["databasePort"]))
            .collect();
        for aa in of_kind(&rendered["us"], "RedisEnterpriseActiveActiveDatabase") {
            let port = &aa["spec"]["globalConfigurations"]["databasePort"];
            f.check(
                regional.iter().all(|(n, p)| *n != name(aa) && *p != port),
                || format!("{target}: active-active {} ({port}) clashes with a regional database {regional:?}", name(aa)),
            );
        }
        let rercs: BTreeSet<String> = of_kind(objs, "RedisEnterpriseRemoteCluster")
            .map(|r| name(r).to_owned())
            .collect();
        f.check(
            rercs == REGIONS.iter().map(|r| format!("rerc-{r}")).collect(),
            || format!("{target}: remote clusters {rercs:?}"),
        );
        let fqdns: BTreeSet<&str> = of_kind(objs, "RedisEnterpriseRemoteCluster")
            .filter_map(|r| r["spec"]["apiFqdnUrl"].as_str())
            .collect();
        f.check(fqdns.len() == REGIONS.len(), || {
            format!("{target}: remote cluster FQDNs are not distinct: {fqdns:?}")
        });
        for aa in of_kind(objs, "RedisEnterpriseActiveActiveDatabase") {
            for pc in arr(&aa["spec"]["participatingClusters"]) {
                let n = pc["name"].as_str().unwrap_or("");
                f.check(
                    find(objs, "RedisEnterpriseRemoteCluster", "redis", n).is_some(),
                    || format!("{target}: {} lists unknown {n}", id(aa)),
                );
            }
        }
        // Region label on every pod template.
        for p in pod_templates(objs) {
            f.check(
                p.labels().get("gembok.io/region").map(String::as_str) == Some(region),
                || format!("{target}: {} lacks gembok.io/region={region}", id(p.owner)),
            );
        }
    }
    f.check(mesh_ids.len() == 1 && !mesh_ids.contains(""), || {
        format!("mesh IDs differ: {mesh_ids:?}")
    });
    f.check(clusters.len() == REGIONS.len(), || {
        format!("cluster names not unique: {clusters:?}")
    });
    f.check(networks.len() == REGIONS.len(), || {
        format!("networks not unique: {networks:?}")
    });
    f.check(rec_names.len() == REGIONS.len(), || {
        format!("Redis Enterprise cluster names not unique: {rec_names:?}")
    });
    let aa_in: Vec<&str> = REGIONS
        .iter()
        .copied()
        .filter(|r| of_kind(&rendered[*r], "RedisEnterpriseActiveActiveDatabase").count() > 0)
        .collect();
    f.check(aa_in == ["us"], || format!("the active-active database must be declared in exactly one region (us), found in {aa_in:?}"));
    f.assert_none("Istio multi-primary and regions");
}

#[test]
fn istio_mtls_is_strict_and_scrape_ports_are_the_only_exception() {
    let mut f = Failures::default();
    for target in TARGETS {
        let objs = render(target);
        let mesh = find(&objs, "PeerAuthentication", "istio-system", "default");
        f.check(
            mesh.is_some_and(|p| p["spec"]["mtls"]["mode"] == "STRICT"),
            || format!("{target}: mesh-wide PeerAuthentication is not STRICT"),
        );
        for pa in of_kind(&objs, "PeerAuthentication") {
            f.check(pa["spec"]["mtls"]["mode"] == "STRICT", || {
                format!("{target}: {} is not STRICT", id(pa))
            });
            for (port, setting) in pa["spec"]["portLevelMtls"]
                .as_object()
                .into_iter()
                .flatten()
            {
                let p: i64 = port.parse().unwrap_or(-1);
                let ok = setting["mode"] == "STRICT" || super::sidecar::SCRAPE_PORTS.contains(&p);
                f.check(ok, || format!("{target}: {} relaxes port {port}", id(pa)));
            }
        }
        // The gateway originates Gembok mTLS with a Gembok client certificate.
        for dr in of_kind(&objs, "DestinationRule") {
            let tls = &dr["spec"]["trafficPolicy"]["tls"];
            f.check(
                tls["mode"] == "MUTUAL"
                    && tls["credentialName"] == "istio-ingressgateway-gembok-tls",
                || format!("{target}: {} does not originate Gembok mTLS", id(dr)),
            );
            f.check(!arr(&tls["subjectAltNames"]).is_empty(), || {
                format!("{target}: {} does not pin the service identity", id(dr))
            });
        }
    }
    f.assert_none("Istio mTLS");
}

/// `target`'s rendered `gembok-injector` MutatingWebhookConfiguration; `None`, with a failure,
/// where there is none.
fn gembok_webhook_config<'a>(
    target: &str,
    objs: &'a [Value],
    f: &mut Failures,
) -> Option<&'a Value> {
    let mwc = of_kind(objs, "MutatingWebhookConfiguration").find(|m| name(m) == "gembok-injector");
    if mwc.is_none() {
        f.push(format!(
            "{target}: no MutatingWebhookConfiguration gembok-injector"
        ));
    }
    mwc
}

/// Whether the API server calls webhook entry `w` for a pod with `pod` labels in a namespace
/// with `ns` labels.
fn calls(w: &Value, ns: &BTreeMap<String, String>, pod: &BTreeMap<String, String>) -> bool {
    selector_matches(&w["namespaceSelector"], ns) && selector_matches(&w["objectSelector"], pod)
}

/// `gembok-injector audit` judges a pod by the rules it assumes the webhook registration has
/// (`injector/src/audit.rs`, `selected`); the rendered registration is the truth. For every
/// combination of namespace (labelled or not, Istio by label or revision, the excluded ones) and
/// pod label (none, opted in, opted out), some webhook entry matches exactly when the audit says
/// the pod is selected, so a change to `base/gembok/webhook.yaml` cannot leave the audit behind.
#[test]
fn the_audit_selects_the_pods_the_webhook_registration_does() {
    let mut f = Failures::default();
    for target in TARGETS {
        let objs = render(target);
        let Some(mwc) = gembok_webhook_config(target, &objs, &mut f) else {
            continue;
        };
        let hooks = arr(&mwc["webhooks"]);
        let pods: [&[(&str, &str)]; 4] = [
            &[],
            &[("gembok.io/inject", "true")],
            &[("gembok.io/inject", "false")],
            &[("app", "x")],
        ];
        let extras: [&[(&str, &str)]; 4] = [
            &[],
            &[("gembok-injection", "enabled")],
            &[("istio-injection", "enabled")],
            &[("gembok-injection", "enabled"), ("istio.io/rev", "stable")],
        ];
        for ns in ["shop", "kube-system", "gembok-system", "default"] {
            for extra in extras {
                let mut ns_labels = labels_of(extra);
                ns_labels.insert("kubernetes.io/metadata.name".into(), ns.into());
                for pod in pods {
                    let pod_labels = labels_of(pod);
                    let webhook = hooks.iter().any(|w| calls(w, &ns_labels, &pod_labels));
                    let audit = gembok_injector::audit::selected(ns, Some(&ns_labels), &pod_labels);
                    f.check(webhook == audit, || {
                        format!(
                            "{target}: namespace {ns} {extra:?}, pod {pod:?}: the webhook \
                             {} it, the audit {}",
                            if webhook { "selects" } else { "skips" },
                            if audit { "selects" } else { "skips" },
                        )
                    });
                }
            }
        }
    }
    f.assert_none("audit and webhook selection");
}

#[test]
fn webhook_registration_follows_the_contract() {
    let mut f = Failures::default();
    for target in TARGETS {
        let objs = render(target);
        let Some(mwc) = gembok_webhook_config(target, &objs, &mut f) else {
            continue;
        };
        let hooks = arr(&mwc["webhooks"]);
        f.check(!hooks.is_empty(), || format!("{target}: no webhooks"));
        for w in hooks {
            let wn = w["name"].as_str().unwrap_or("?");
            f.check(
                arr(&w["admissionReviewVersions"]) == [Value::from("v1")],
                || format!("{target}: {wn}: admissionReviewVersions"),
            );
            f.check(w["sideEffects"] == "None", || {
                format!("{target}: {wn}: sideEffects")
            });
            f.check(w["reinvocationPolicy"] == "IfNeeded", || {
                format!("{target}: {wn}: reinvocationPolicy")
            });
            f.check(w["failurePolicy"] == "Fail", || {
                format!("{target}: {wn}: failurePolicy (documented as Fail)")
            });
            f.check(
                w["timeoutSeconds"]
                    .as_i64()
                    .is_some_and(|t| (1..=10).contains(&t)),
                || format!("{target}: {wn}: timeoutSeconds"),
            );
            let svc = &w["clientConfig"]["service"];
            f.check(
                svc["name"] == "gembok-injector"
                    && svc["namespace"] == "gembok-system"
                    && svc["port"] == 443,
                || format!("{target}: {wn}: clientConfig {svc}"),
            );
            f.check(
                arr(&w["rules"]).iter().any(|r| {
                    arr(&r["resources"]).contains(&Value::from("pods"))
                        && arr(&r["operations"]).contains(&Value::from("CREATE"))
                }),
                || format!("{target}: {wn}: rules"),
            );
        }
        // Which entries a pod calls, evaluated on its namespace's labels and its own, as the API
        // server does: exactly one entry for a pod to inject, on the path that tells the injector
        // whether Istio is there; none for the others.
        let matching =
            |ns: &BTreeMap<String, String>, pod: &BTreeMap<String, String>| -> Vec<String> {
                hooks
                    .iter()
                    .filter(|w| calls(w, ns, pod))
                    .map(|w| {
                        w["clientConfig"]["service"]["path"]
                            .as_str()
                            .unwrap_or("")
                            .to_owned()
                    })
                    .collect()
            };
        let ordinary = BTreeMap::new();
        let opted_out = labels_of(&[("gembok.io/inject", "false")]);
        let opted_in = labels_of(&[("gembok.io/inject", "true")]);
        let variants: [&[(&str, &str)]; 3] = [
            &[],
            &[("istio-injection", "enabled")],
            &[("istio.io/rev", "stable")],
        ];
        for (i, extra) in variants.iter().enumerate() {
            let want = if i == 0 { "/mutate" } else { "/mutate/istio" };
            let mut plain = namespace_labels(&objs, "shop");
            plain.extend(labels_of(extra));
            let mut enabled = plain.clone();
            enabled.insert("gembok-injection".into(), "enabled".into());
            // An enabled namespace: every pod but the opted-out ones, once.
            for (pod, expected) in [
                (&ordinary, vec![want]),
                (&opted_in, vec![want]),
                (&opted_out, vec![]),
            ] {
                let got = matching(&enabled, pod);
                f.check(got == expected, || {
                    format!("{target}: pod {pod:?} in namespace {enabled:?} calls {got:?}, want {expected:?}")
                });
            }
            // Any other namespace: only the pods that opt in, once.
            for (pod, expected) in [
                (&ordinary, vec![]),
                (&opted_in, vec![want]),
                (&opted_out, vec![]),
            ] {
                let got = matching(&plain, pod);
                f.check(got == expected, || {
                    format!("{target}: pod {pod:?} in namespace {plain:?} calls {got:?}, want {expected:?}")
                });
            }
            for ns in ["kube-system", "gembok-system"] {
                for base in [&enabled, &plain] {
                    let mut l = base.clone();
                    l.insert("kubernetes.io/metadata.name".into(), ns.into());
                    for pod in [&ordinary, &opted_in] {
                        f.check(matching(&l, pod).is_empty(), || {
                            format!("{target}: {ns} is not excluded (pod {pod:?})")
                        });
                    }
                }
            }
        }
        let ecommerce = matching(&namespace_labels(&objs, APP_NAMESPACE), &ordinary);
        f.check(ecommerce == ["/mutate/istio"], || {
            format!("{target}: ecommerce calls {ecommerce:?}")
        });
        for ns in ["monitoring", "redis", "default", "istio-system"] {
            let got = matching(&namespace_labels(&objs, ns), &ordinary);
            f.check(got.is_empty(), || {
                format!("{target}: {ns} calls the webhook: {got:?}")
            });
        }
        // The pods an operator makes from our custom resources (the Jaeger collector).
        let made = operator_workloads(&objs);
        f.check(!made.is_empty(), || {
            format!("{target}: no Jaeger collector")
        });
        for pod in pod_templates(&made) {
            let ns = namespace_labels(&objs, pod.namespace());
            let got = matching(&ns, &pod.labels());
            f.check(got == ["/mutate"], || {
                format!("{target}: {} calls {got:?}", id(pod.owner))
            });
        }
        // Where the CA bundle comes from.
        let ca_from = mwc["metadata"]["annotations"]["cert-manager.io/inject-ca-from"].as_str();
        if target == "overlays/development" {
            f.check(ca_from.is_none(), || {
                format!("{target}: development has no cert-manager, but inject-ca-from is set")
            });
            let secret = find(&objs, "Secret", "gembok-system", "gembok-injector-tls");
            for hook in hooks {
                let bundle = hook["clientConfig"]["caBundle"].as_str().unwrap_or("");
                f.check(
                    !bundle.is_empty() && secret.is_some_and(|s| s["data"]["ca.crt"] == bundle),
                    || {
                        format!(
                            "{target}: {}: caBundle is not the serving Secret's ca.crt",
                            hook["name"]
                        )
                    },
                );
            }
        } else {
            let cert = ca_from
                .and_then(|a| a.split_once('/'))
                .and_then(|(ns, n)| find(&objs, "Certificate", ns, n));
            match cert {
                Some(c) => {
                    f.check(c["spec"]["secretName"] == "gembok-injector-tls", || {
                        format!("{target}: serving Secret name")
                    });
                    let dns: Vec<&str> = arr(&c["spec"]["dnsNames"])
                        .iter()
                        .filter_map(Value::as_str)
                        .collect();
                    f.check(dns.contains(&"gembok-injector.gembok-system.svc"), || {
                        format!("{target}: serving certificate lacks the service DNS name: {dns:?}")
                    });
                }
                None => f.push(format!(
                    "{target}: inject-ca-from {ca_from:?} names no Certificate"
                )),
            }
        }
    }
    f.assert_none("webhook");
}

#[test]
fn injector_is_highly_available_and_serves_the_contract_ports() {
    let mut f = Failures::default();
    for target in TARGETS {
        let objs = render(target);
        let Some(d) = find(&objs, "Deployment", "gembok-system", "gembok-injector") else {
            f.push(format!("{target}: no injector"));
            continue;
        };
        let spec = &d["spec"]["template"]["spec"];
        let replicas = d["spec"]["replicas"].as_i64().unwrap_or(1);
        if target != "overlays/development" {
            f.check(replicas == 2, || {
                format!("{target}: injector replicas {replicas}")
            });
        }
        // The replicas are kept on different nodes by a hard hostname spread that counts one
        // revision at a time and ignores cordoned/tainted nodes ...
        let spread = arr(&spec["topologySpreadConstraints"]).iter().any(|t| {
            t["topologyKey"] == "kubernetes.io/hostname"
                && t["maxSkew"] == 1
                && t["whenUnsatisfiable"] == "DoNotSchedule"
                && t["nodeTaintsPolicy"] == "Honor"
                && arr(&t["matchLabelKeys"]).contains(&Value::from("pod-template-hash"))
        });
        f.check(spread, || {
            format!("{target}: no per-revision hard hostname spread for the injector")
        });
        // ... not by a required anti-affinity: with maxUnavailable 0 the surge pod of a rollout
        // (or a drained pod's replacement) could never schedule on a two-node cluster.
        let rollout = &d["spec"]["strategy"]["rollingUpdate"];
        let required_self_anti = arr(
            &spec["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"],
        )
        .iter()
        .any(|t| {
            t["topologyKey"] == "kubernetes.io/hostname"
                && selector_matches(
                    &t["labelSelector"],
                    &str_map(&d["spec"]["template"]["metadata"]["labels"]),
                )
        });
        f.check(!(required_self_anti && rollout["maxUnavailable"] == 0), || {
            format!("{target}: required hostname anti-affinity with maxUnavailable 0 stalls rollouts on two nodes")
        });
        f.check(rollout["maxUnavailable"] == 0 || replicas > 1, || {
            format!("{target}: a rollout may take the only injector replica down")
        });
        f.check(
            find(
                &objs,
                "PodDisruptionBudget",
                "gembok-system",
                "gembok-injector",
            )
            .is_some(),
            || format!("{target}: no injector PDB"),
        );
        let c = &spec["containers"][0];
        let env: Vec<(String, String)> = arr(&c["env"])
            .iter()
            .map(|e| {
                (
                    e["name"].as_str().unwrap_or("").into(),
                    e["value"].as_str().unwrap_or("").into(),
                )
            })
            .collect();
        let get = |k: &str| {
            env.iter()
                .find(|(n, _)| n == k)
                .map(|(_, v)| v.as_str())
                .unwrap_or("")
        };
        f.check(get("GEMBOK_INJECTOR_LISTEN").ends_with(":8443"), || {
            format!("{target}: listen")
        });
        f.check(get("GEMBOK_INJECTOR_ADMIN").ends_with(":15780"), || {
            format!("{target}: admin")
        });
        let mounts = arr(&c["volumeMounts"]);
        let cert_dir = get("GEMBOK_INJECTOR_CERT_DIR");
        f.check(
            mounts
                .iter()
                .any(|m| m["mountPath"] == cert_dir && m["readOnly"] == true),
            || format!("{target}: cert dir {cert_dir} is not a read-only mount"),
        );
        f.check(
            arr(&spec["volumes"])
                .iter()
                .any(|v| v["secret"]["secretName"] == "gembok-injector-tls"),
            || format!("{target}: serving Secret not mounted"),
        );
        let ports: Vec<i64> = arr(&c["ports"])
            .iter()
            .filter_map(|p| p["containerPort"].as_i64())
            .collect();
        f.check(ports.contains(&8443) && ports.contains(&15780), || {
            format!("{target}: container ports {ports:?}")
        });
        let svc = find(&objs, "Service", "gembok-system", "gembok-injector");
        let https = svc.and_then(|s| {
            arr(&s["spec"]["ports"])
                .iter()
                .find(|p| p["port"] == 443)
                .cloned()
        });
        f.check(
            https.is_some_and(|p| p["targetPort"] == "https" || p["targetPort"] == 8443),
            || format!("{target}: Service 443 -> 8443"),
        );
        let labels = str_map(&d["spec"]["template"]["metadata"]["labels"]);
        f.check(
            labels.get("gembok.io/inject").map(String::as_str) == Some("false"),
            || format!("{target}: the injector does not opt out of itself"),
        );
    }
    f.assert_none("injector Deployment");
}

#[test]
fn edge_routes_retry_safely_and_eject_failing_endpoints() {
    let mut f = Failures::default();
    // Development has no public ingress (no Gateway, VirtualService or DestinationRules).
    for target in TARGETS.iter().filter(|t| **t != "overlays/development") {
        let objs = render(target);
        let routes: Vec<&Value> = of_kind(&objs, "VirtualService")
            .flat_map(|vs| arr(&vs["spec"]["http"]))
            .collect();
        let to = |svc: &str| {
            let host = format!("{svc}.ecommerce.svc.cluster.local");
            routes
                .iter()
                .copied()
                .filter(move |r| {
                    arr(&r["route"])
                        .iter()
                        .any(|d| d["destination"]["host"] == host.as_str())
                })
                .collect::<Vec<_>>()
        };
        let payment = to("payment");
        f.check(!payment.is_empty(), || {
            format!("{target}: no VirtualService route to payment")
        });
        for r in payment {
            let timeout = go_duration(r["timeout"].as_str().unwrap_or(""));
            let per_try = go_duration(r["retries"]["perTryTimeout"].as_str().unwrap_or(""));
            let attempts = r["retries"]["attempts"].as_i64().unwrap_or(0);
            f.check(timeout.is_some_and(|t| t > 0.0), || {
                format!("{target}: payment route {} has no timeout", r["name"])
            });
            f.check(attempts >= 1 && per_try.is_some(), || {
                format!(
                    "{target}: payment route {} has no retries with a per-try timeout",
                    r["name"]
                )
            });
            f.check(
                matches!((timeout, per_try), (Some(t), Some(p)) if p * (attempts as f64 + 1.0) <= t),
                || format!("{target}: payment route {}: the retries do not fit in the timeout", r["name"]),
            );
            // Payments are not idempotent: retry only when the request never reached the service.
            let retry_on = r["retries"]["retryOn"].as_str().unwrap_or("");
            f.check(
                !retry_on.is_empty()
                    && retry_on.split(',').all(|c| {
                        ["connect-failure", "refused-stream", "reset-before-request"]
                            .contains(&c.trim())
                    }),
                || format!("{target}: payment retries on {retry_on:?}, which may repeat a charge"),
            );
        }
        for svc in ["product-catalog", "payment", "auth"] {
            f.check(!to(svc).is_empty(), || {
                format!("{target}: no VirtualService route to {svc}")
            });
            let host = format!("{svc}.ecommerce.svc.cluster.local");
            let dr = of_kind(&objs, "DestinationRule").find(|d| d["spec"]["host"] == host.as_str());
            let od = dr.map(|d| &d["spec"]["trafficPolicy"]["outlierDetection"]);
            f.check(
                od.is_some_and(|o| {
                    (o["consecutive5xxErrors"].as_i64().unwrap_or(0) > 0
                        || o["consecutiveGatewayErrors"].as_i64().unwrap_or(0) > 0)
                        && go_duration(o["baseEjectionTime"].as_str().unwrap_or(""))
                            .is_some_and(|t| t > 0.0)
                        && o["maxEjectionPercent"].as_i64().is_some_and(|p| p > 0 && p < 100)
                }),
                || format!("{target}: the DestinationRule for {svc} has no outlier detection that can eject and keeps some endpoints"),
            );
        }
    }
    f.assert_none("edge routes");
}

/// The public host names one target serves: its Gateways' servers, its VirtualServices and the
/// gateway's AuthorizationPolicy, each as a set, beside the public Certificates' names.
fn public_hosts(objs: &[Value]) -> BTreeMap<&'static str, BTreeSet<String>> {
    let strings = |v: &Value| -> Vec<String> {
        arr(v)
            .iter()
            .filter_map(|h| h.as_str())
            .map(|h| h.trim_end_matches(":*").to_owned())
            .collect()
    };
    let gateway = of_kind(objs, "Gateway")
        .filter(|g| name(g) == "storefront")
        .flat_map(|g| {
            arr(&g["spec"]["servers"])
                .iter()
                .flat_map(|s| strings(&s["hosts"]))
        });
    let routes = of_kind(objs, "VirtualService")
        .filter(|v| {
            arr(&v["spec"]["gateways"])
                .iter()
                .any(|g| g == "ecommerce/storefront")
        })
        .flat_map(|v| strings(&v["spec"]["hosts"]));
    let authz = find(
        objs,
        "AuthorizationPolicy",
        "istio-system",
        "storefront-ingress",
    )
    .into_iter()
    .flat_map(|p| arr(&p["spec"]["rules"]))
    .flat_map(|r| arr(&r["to"]))
    .flat_map(|t| strings(&t["operation"]["hosts"]));
    let certificate = find(objs, "Certificate", "istio-system", "storefront-public")
        .into_iter()
        .flat_map(|c| strings(&c["spec"]["dnsNames"]));
    BTreeMap::from([
        ("Gateway", gateway.collect()),
        ("VirtualService", routes.collect()),
        ("AuthorizationPolicy", authz.collect()),
        ("Certificate", certificate.collect()),
    ])
}

#[test]
fn the_public_certificate_covers_what_is_served_and_can_be_issued_in_every_region() {
    let mut f = Failures::default();
    let mut hosts_of: Vec<(&str, BTreeSet<String>)> = Vec::new();
    // Development has no public ingress.
    for target in TARGETS.iter().filter(|t| **t != "overlays/development") {
        let objs = render(target);
        let hosts = public_hosts(&objs);
        let served = &hosts["Gateway"];
        f.check(!served.is_empty(), || {
            format!("{target}: the storefront Gateway serves no host")
        });
        for (what, names) in &hosts {
            f.check(names == served, || {
                format!("{target}: the {what} names {names:?}, the Gateway serves {served:?}")
            });
        }
        // HTTP-01 cannot work here: the regions serve one host behind one DNS name and Let's
        // Encrypt checks from several places at once (one region's token fails in another),
        // and the gateway redirects port 80 to an HTTPS server that has no certificate before
        // the first issuance.
        let cert = find(&objs, "Certificate", "istio-system", "storefront-public");
        let issuer = cert.and_then(|c| {
            let r = &c["spec"]["issuerRef"];
            (r["kind"] == "ClusterIssuer")
                .then(|| find(&objs, "ClusterIssuer", "", r["name"].as_str().unwrap_or("")))
                .flatten()
        });
        let solvers = issuer
            .map(|i| arr(&i["spec"]["acme"]["solvers"]))
            .unwrap_or(&[]);
        f.check(!solvers.is_empty(), || {
            format!("{target}: the public certificate has no ACME ClusterIssuer with solvers")
        });
        for s in solvers {
            f.check(s["http01"].is_null() && !s["dns01"].is_null(), || {
                format!(
                    "{target}: the public certificate's issuer has a solver other than DNS-01: {s}"
                )
            });
        }
        hosts_of.push((target, served.clone()));
    }
    // Only the production regions share the production host; staging has its own.
    let production = |t: &str| t == "overlays/production" || t.starts_with("clusters/");
    for (a, ha) in &hosts_of {
        for (b, hb) in &hosts_of {
            if a < b && production(a) != production(b) {
                f.check(ha.is_disjoint(hb), || {
                    format!(
                        "{a} and {b} both serve {:?}",
                        ha.intersection(hb).collect::<Vec<_>>()
                    )
                });
            }
        }
    }
    f.assert_none("public certificate");
}

/// Production and the regions refuse a pod in an enabled namespace that says nothing to encrypt
/// (it would run without a sidecar); development and staging let it run, with a warning. Checked
/// with the real injector, configured like each rendered injector Deployment.
#[test]
fn production_refuses_pods_it_would_leave_unencrypted() {
    let unannotated = "apiVersion: apps/v1\nkind: Deployment\n\
        metadata: {name: debug, namespace: ecommerce}\n\
        spec:\n  selector: {matchLabels: {app: debug}}\n  template:\n    \
        metadata: {labels: {app: debug}}\n    \
        spec: {containers: [{name: debug, image: busybox}]}\n";
    let mut f = Failures::default();
    for target in TARGETS {
        let settings = injector_settings(&render(target));
        // Refused for that reason, not for any failure of the run.
        let refused = inject_text_with(unannotated, &[], &settings)
            .err()
            .is_some_and(|e| format!("{e:#}").contains("--unannotated-pods deny"));
        let production = target == "overlays/production" || target.starts_with("clusters/");
        f.check(refused == production, || {
            format!(
                "{target}: an unannotated ecommerce pod is {}",
                if refused {
                    "refused"
                } else {
                    "let run without a sidecar"
                }
            )
        });
    }
    f.assert_none("unannotated pods");
}
