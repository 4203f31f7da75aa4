//! The Gembok wiring of every service: annotations agree with the containers and Services, and
//! the real `gembok-injector inject` turns each ecommerce workload into one with exactly one
//! gembok-proxy whose ports, certificate and Istio exclusions match.

use std::collections::BTreeSet;

use serde_json::Value;

use super::operators::operator_workloads;
use super::support::*;

const ADMIN_PORT: i64 = 15700;
const OUTBOUND_PORTS: std::ops::RangeInclusive<i64> = 15701..=15799;
/// Ports that may be reached in plaintext: the apps' ops port and gembok-admin (metrics only).
pub const SCRAPE_PORTS: [i64; 2] = [9090, ADMIN_PORT];

pub fn proxies<'a>(p: &'a PodTemplate<'a>) -> Vec<&'a Value> {
    p.all_containers()
        .filter(|c| c["name"] == PROXY_CONTAINER)
        .collect()
}

#[test]
fn every_ecommerce_workload_gets_exactly_one_proxy_from_the_real_injector() {
    let mut f = Failures::default();
    for target in TARGETS {
        let objs = injected(target);
        let pods: Vec<_> = pod_templates(&objs)
            .into_iter()
            .filter(|p| p.namespace() == APP_NAMESPACE)
            .collect();
        f.check(pods.len() >= SERVICES.len(), || {
            format!("{target}: {} ecommerce workloads", pods.len())
        });
        for p in &pods {
            let n = proxies(p).len();
            f.check(n == 1, || {
                format!("{target}: {} has {n} gembok-proxy containers", id(p.owner))
            });
        }
        // Outside injection-enabled namespaces nothing is injected.
        for p in pod_templates(&objs)
            .iter()
            .filter(|p| p.namespace() != APP_NAMESPACE)
        {
            f.check(proxies(p).is_empty(), || {
                format!("{target}: {} was injected", id(p.owner))
            });
        }
    }
    f.assert_none("injection");
}

#[test]
fn injecting_the_injected_output_changes_nothing() {
    let mut f = Failures::default();
    for target in ["overlays/production", "clusters/eu"] {
        let once = inject_text(&render_text(target).unwrap(), &[]).unwrap();
        let twice = inject_text(&once, &[]).unwrap();
        f.check(
            parse_docs(&once).unwrap() == parse_docs(&twice).unwrap(),
            || format!("{target}: a second injection changed the output"),
        );
    }
    f.assert_none("idempotence");
}

#[test]
fn sidecar_annotations_match_the_containers() {
    let mut f = Failures::default();
    for target in TARGETS {
        let objs = render(target);
        for p in pod_templates(&objs)
            .iter()
            .filter(|p| p.namespace() == APP_NAMESPACE)
        {
            let who = format!("{target}: {}", id(p.owner));
            let ann = p.annotations();
            let app_ports: BTreeSet<i64> =
                p.container_ports().into_iter().map(|(_, n)| n).collect();
            let inbound = inbound_ports(
                ann.get("gembok.io/inbound")
                    .map(String::as_str)
                    .unwrap_or(""),
            );
            f.check(!inbound.is_empty(), || {
                format!("{who}: no gembok.io/inbound")
            });
            for (tls, app) in &inbound {
                f.check(app_ports.contains(app), || {
                    format!("{who}: inbound app port {app} is not a container port")
                });
                f.check(!app_ports.contains(tls), || {
                    format!("{who}: TLS port {tls} collides with a container port")
                });
                f.check(*tls != ADMIN_PORT && !OUTBOUND_PORTS.contains(tls), || {
                    format!("{who}: TLS port {tls} is reserved")
                });
            }
            f.check(!app_ports.contains(&ADMIN_PORT), || {
                format!("{who}: the app uses gembok-admin's port")
            });
            let mut locals = BTreeSet::new();
            for (local, host, port) in outbound_routes(
                ann.get("gembok.io/outbound")
                    .map(String::as_str)
                    .unwrap_or(""),
            ) {
                f.check(OUTBOUND_PORTS.contains(&local), || {
                    format!("{who}: outbound port {local} outside 15701-15799")
                });
                f.check(locals.insert(local), || {
                    format!("{who}: outbound port {local} used twice")
                });
                f.check(!app_ports.contains(&local), || {
                    format!("{who}: outbound port {local} collides with a container port")
                });
                f.check(service_host(&host).is_some() && port > 0, || {
                    format!("{who}: outbound target {host}:{port}")
                });
            }
            // The app is told to use the loopback ports the sidecar listens on.
            let env: String = p
                .all_containers()
                .flat_map(|c| arr(&c["env"]))
                .filter_map(|e| e["value"].as_str())
                .collect::<Vec<_>>()
                .join(" ");
            for local in &locals {
                f.check(env.contains(&format!("127.0.0.1:{local}")), || {
                    format!("{who}: no app env points at 127.0.0.1:{local}")
                });
            }
        }
    }
    f.assert_none("sidecar annotations");
}

#[test]
fn injected_pods_expose_the_annotated_ports_and_mount_their_certificate() {
    let mut f = Failures::default();
    for target in TARGETS {
        let objs = injected(target);
        let certs: BTreeSet<String> = of_kind(&objs, "Certificate")
            .filter(|c| namespace(c) == APP_NAMESPACE)
            .filter_map(|c| c["spec"]["secretName"].as_str().map(str::to_owned))
            .chain(
                of_kind(&objs, "Secret")
                    .filter(|s| namespace(s) == APP_NAMESPACE)
                    .map(|s| name(s).to_owned()),
            )
            .collect();
        let ns_istio = namespace_labels(&objs, APP_NAMESPACE)
            .get("istio-injection")
            .map(String::as_str)
            == Some("enabled");
        for p in pod_templates(&objs)
            .iter()
            .filter(|p| p.namespace() == APP_NAMESPACE)
        {
            let who = format!("{target}: {}", id(p.owner));
            let Some(proxy) = proxies(p).into_iter().next() else {
                continue;
            };
            let ports: Vec<(String, i64)> = arr(&proxy["ports"])
                .iter()
                .map(|x| {
                    (
                        x["name"].as_str().unwrap_or("").to_owned(),
                        x["containerPort"].as_i64().unwrap_or(-1),
                    )
                })
                .collect();
            f.check(ports.contains(&("gembok-admin".into(), ADMIN_PORT)), || {
                format!("{who}: gembok-proxy lacks port gembok-admin/15700 ({ports:?})")
            });
            // Pulled on every start like the app images (the injector's
            // GEMBOK_INJECTOR_PROXY_PULL_POLICY; checkov CKV_K8S_15).
            f.check(proxy["imagePullPolicy"] == "Always", || {
                format!(
                    "{who}: gembok-proxy imagePullPolicy is {}",
                    proxy["imagePullPolicy"]
                )
            });
            let ann = p.annotations();
            let inbound = inbound_ports(
                ann.get("gembok.io/inbound")
                    .map(String::as_str)
                    .unwrap_or(""),
            );
            for (tls, _) in &inbound {
                f.check(ports.iter().any(|(_, n)| n == tls), || {
                    format!("{who}: gembok-proxy does not expose TLS port {tls}")
                });
            }
            // The certificate Secret the sidecar mounts is <serviceAccountName>-gembok-tls and
            // is produced by a Certificate (or a development Secret).
            let want = format!("{}-gembok-tls", p.service_account());
            let mounted: Vec<&str> = arr(&p.spec()["volumes"])
                .iter()
                .filter_map(|v| v["secret"]["secretName"].as_str())
                .collect();
            f.check(mounted.contains(&want.as_str()), || {
                format!("{who}: sidecar certificate {want} is not mounted ({mounted:?})")
            });
            f.check(certs.contains(&want), || {
                format!("{who}: nothing produces Secret {want}")
            });
            // Istio coexistence: Gembok's TLS ports bypass istio-proxy in both directions.
            if ns_istio {
                let list = |k: &str| -> BTreeSet<i64> {
                    ann.get(k)
                        .map(|v| v.split(',').filter_map(|x| x.trim().parse().ok()).collect())
                        .unwrap_or_default()
                };
                let excl_in = list("traffic.sidecar.istio.io/excludeInboundPorts");
                for (tls, _) in &inbound {
                    f.check(excl_in.contains(tls), || {
                        format!("{who}: TLS port {tls} not in excludeInboundPorts {excl_in:?}")
                    });
                }
                let excl_out = list("traffic.sidecar.istio.io/excludeOutboundPorts");
                for (_, _, port) in outbound_routes(
                    ann.get("gembok.io/outbound")
                        .map(String::as_str)
                        .unwrap_or(""),
                ) {
                    f.check(excl_out.contains(&port), || {
                        format!(
                            "{who}: outbound port {port} not in excludeOutboundPorts {excl_out:?}"
                        )
                    });
                }
            }
        }
        // Services reach the pods only through the sidecar's TLS port (or the ops port).
        let pods = pod_templates(&objs);
        for svc in of_kind(&objs, "Service").filter(|s| namespace(s) == APP_NAMESPACE) {
            let Some(p) = pods.iter().find(|p| {
                p.namespace() == APP_NAMESPACE
                    && map_selector_matches(&svc["spec"]["selector"], &p.labels())
            }) else {
                continue;
            };
            let tls: BTreeSet<i64> = inbound_ports(
                p.annotations()
                    .get("gembok.io/inbound")
                    .map(String::as_str)
                    .unwrap_or(""),
            )
            .into_iter()
            .map(|(t, _)| t)
            .collect();
            let pod_ports = p.container_ports();
            for sp in arr(&svc["spec"]["ports"]) {
                let target_port = match &sp["targetPort"] {
                    Value::Number(n) => n.as_i64(),
                    Value::String(s) => pod_ports.iter().find(|(n, _)| n == s).map(|(_, p)| *p),
                    _ => sp["port"].as_i64(),
                };
                let ok = target_port.is_some_and(|t| tls.contains(&t) || SCRAPE_PORTS.contains(&t));
                f.check(ok, || format!("{target}: {} port {} targets {target_port:?}, neither a Gembok TLS port {tls:?} nor an ops port", id(svc), sp["name"]));
                f.check(target_port.is_some_and(|t| pod_ports.iter().any(|(_, p)| *p == t)), || {
                    format!("{target}: {} port {} targets {target_port:?}, which the injected pod does not expose", id(svc), sp["name"])
                });
            }
        }
    }
    f.assert_none("injected pods");
}

#[test]
fn outbound_routes_reach_tls_endpoints_that_admit_the_caller() {
    let mut f = Failures::default();
    // In eu/asia the active-active databases exist by propagation from their declaration in
    // clusters/us.
    let us = render("clusters/us");
    let declared_in_us: Vec<&Value> = of_kind(&us, "RedisEnterpriseActiveActiveDatabase").collect();
    for target in TARGETS {
        let objs = render(target);
        // Callees include the operators' pods (the Jaeger collector takes spans over Gembok).
        let made = operator_workloads(&objs);
        let mut pods = pod_templates(&objs);
        pods.extend(pod_templates(&made));
        let mut routes = 0;
        let mut calls = BTreeSet::new();
        for p in pods.iter().filter(|p| p.namespace() == APP_NAMESPACE) {
            let caller = spiffe_id(p.namespace(), p.service_account());
            for (_, host, port) in outbound_routes(
                p.annotations()
                    .get("gembok.io/outbound")
                    .map(String::as_str)
                    .unwrap_or(""),
            ) {
                routes += 1;
                let who = format!("{target}: {} -> {host}:{port}", p.app());
                let Some((svc, ns)) = service_host(&host) else {
                    f.push(format!("{who}: not a Service host"));
                    continue;
                };
                calls.insert((p.app(), svc.clone()));
                if ns == "redis" {
                    // A Redis Enterprise database that requires TLS on that port.
                    let db = of_kind(&objs, "RedisEnterpriseDatabase")
                        .find(|d| name(d) == svc)
                        .map(|d| &d["spec"])
                        .or_else(|| {
                            of_kind(&objs, "RedisEnterpriseActiveActiveDatabase")
                                .find(|d| name(d) == svc)
                                .map(|d| &d["spec"]["globalConfigurations"])
                        });
                    // In eu/asia the active-active session store is created by the operator
                    // from the declaration in clusters/us: it must be declared there.
                    let propagated = target.starts_with("clusters/")
                        && declared_in_us.iter().any(|d| {
                            name(d) == svc
                                && d["spec"]["globalConfigurations"]["databasePort"] == port
                        });
                    match db {
                        Some(db) => {
                            f.check(db["databasePort"] == port, || {
                                format!("{who}: database port is {}", db["databasePort"])
                            });
                            f.check(db["tlsMode"] == "enabled", || {
                                format!("{who}: database does not require TLS")
                            });
                        }
                        None => f.check(propagated, || format!("{who}: no such database")),
                    }
                    continue;
                }
                let Some(s) = find(&objs, "Service", &ns, &svc) else {
                    f.push(format!("{who}: no Service {ns}/{svc}"));
                    continue;
                };
                let Some(sp) = arr(&s["spec"]["ports"]).iter().find(|x| x["port"] == port) else {
                    f.push(format!("{who}: Service has no port {port}"));
                    continue;
                };
                let Some(dst) = pods.iter().find(|d| {
                    d.namespace() == ns && map_selector_matches(&s["spec"]["selector"], &d.labels())
                }) else {
                    f.push(format!("{who}: the Service selects no pod"));
                    continue;
                };
                let dst_ann = dst.annotations();
                let inbound = dst_ann
                    .get("gembok.io/inbound")
                    .map(String::as_str)
                    .unwrap_or("");
                let tls_ports: Vec<i64> =
                    inbound_ports(inbound).into_iter().map(|(t, _)| t).collect();
                f.check(tls_ports.iter().any(|t| sp["targetPort"] == *t), || {
                    format!(
                        "{who}: Service port targets {} , not a Gembok TLS port {tls_ports:?}",
                        sp["targetPort"]
                    )
                });
                // The callee's Gembok authorisation admits the caller's identity.
                let mut patterns = allowed_sans(&objs, dst).unwrap_or_else(|e| {
                    f.push(format!("{who}: {e}"));
                    Vec::new()
                });
                patterns.extend(
                    inbound
                        .split([';', ','])
                        .filter_map(|x| x.strip_prefix("allow-san="))
                        .map(str::to_owned),
                );
                f.check(patterns.iter().any(|pat| glob(pat, &caller)), || {
                    format!("{who}: {caller} is not in the callee's allowed SANs {patterns:?}")
                });
            }
        }
        f.check(routes >= 5, || {
            format!("{target}: only {routes} outbound routes")
        });
        // The shop's service-to-service calls, by name (issue 4).
        for (from, to) in SERVICE_CALLS {
            f.check(calls.contains(&(from.to_owned(), to.to_owned())), || {
                format!("{target}: {from} has no outbound route to {to} ({calls:?})")
            });
        }
    }
    f.assert_none("outbound routes");
}

/// Who may call each service (manifests README, "Gembok in this layout"): the one place each
/// list lives is a ConfigMap the sidecar reads and reloads, so a caller is admitted or cut off
/// without a rollout. Each list names exactly these callers (no wildcard, nobody else), plus the
/// development client in development only; the injected sidecar mounts that ConfigMap's key and
/// reads it as an allow-san file.
#[test]
fn each_service_reads_exactly_its_callers_from_a_configmap() {
    let gateway = spiffe_id("istio-system", "istio-ingressgateway");
    let shop = |sa: &str| spiffe_id(APP_NAMESPACE, sa);
    let callers = |app: &str| -> Vec<String> {
        match app {
            "product-catalog" | "payment" => vec![gateway.clone()],
            "recommendation" => vec![shop("product-catalog")],
            "auth" => vec![shop("payment"), gateway.clone()],
            other => panic!("no callers declared for {other}"),
        }
    };
    // The shop's service-to-service calls are among them.
    for (from, to) in SERVICE_CALLS {
        assert!(callers(to).contains(&shop(from)), "{from} -> {to}");
    }
    let mut f = Failures::default();
    for target in TARGETS {
        let objs = injected(target);
        for p in pod_templates(&objs)
            .iter()
            .filter(|p| p.namespace() == APP_NAMESPACE && SERVICES.contains(&p.app().as_str()))
        {
            let who = format!("{target}: {}", p.app());
            let ann = p.annotations();
            f.check(!ann.contains_key("gembok.io/allowed-sans"), || {
                format!("{who}: an inline gembok.io/allowed-sans beside the ConfigMap's list")
            });
            let Some(cm) = ann.get("gembok.io/allowed-sans-configmap") else {
                f.push(format!("{who}: no gembok.io/allowed-sans-configmap"));
                continue;
            };
            let mut want = callers(&p.app());
            if target == "overlays/development" {
                want.push(shop("dev-client"));
            }
            match allowed_sans(&objs, p) {
                Ok(got) => f.check(got == want, || {
                    format!("{who}: ConfigMap {cm} admits {got:?}, want exactly {want:?}")
                }),
                Err(e) => f.push(format!("{target}: {e}")),
            }
            // The injected pod mounts that key, required, and the proxy reads it.
            let volume = arr(&p.spec()["volumes"])
                .iter()
                .find(|v| v["configMap"]["name"] == cm.as_str());
            f.check(
                volume.is_some_and(|v| {
                    v["configMap"]["optional"] == false
                        && arr(&v["configMap"]["items"])
                            .iter()
                            .any(|i| i["key"] == ALLOWED_SANS_KEY)
                }),
                || format!("{who}: no required volume of ConfigMap {cm}'s {ALLOWED_SANS_KEY}"),
            );
            let proxy = proxies(p);
            let reads = proxy.first().is_some_and(|c| {
                c.to_string().contains(&format!(
                    "allow-san-file={}",
                    gembok_injector::sidecar::allowed_sans_file()
                ))
            });
            f.check(reads, || {
                format!("{who}: the proxy is not given the list's file")
            });
        }
    }
    f.assert_none("callers ConfigMaps");
}
