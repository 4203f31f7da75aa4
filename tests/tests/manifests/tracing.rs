//! Spans carry request attributes, so they leave a pod only over Gembok mTLS: the services'
//! SDKs send them to their own sidecar, the ingress gateway originates Gembok mTLS itself, no
//! other Envoy reports any, and the Jaeger collector takes them through its own sidecar.

use std::collections::BTreeMap;

use serde_json::Value;

use super::layout::{pem_sans, secret_data};
use super::mesh::istio_values;
use super::operators::{arg, injected_operator_workloads, operator_workloads};
use super::sidecar::proxies;
use super::support::*;

/// The SDK settings that name where spans go.
const OTLP_ENDPOINTS: [&str; 2] = [
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
];

/// `(host, port)` of Istio's "jaeger" tracing provider; the same in every region (a test in
/// mesh.rs keeps the regions' values apart only where they must differ).
fn provider() -> (String, i64) {
    let values = istio_values("us");
    let providers = arr(&values["meshConfig"]["extensionProviders"]);
    let jaeger = providers
        .iter()
        .find(|p| p["name"] == "jaeger")
        .expect("a \"jaeger\" extension provider");
    let otel = &jaeger["opentelemetry"];
    for region in REGIONS {
        let other = istio_values(region);
        assert!(
            arr(&other["meshConfig"]["extensionProviders"]).contains(jaeger),
            "{region}: another jaeger provider"
        );
    }
    (
        otel["service"].as_str().unwrap_or("").to_owned(),
        otel["port"].as_i64().unwrap_or(-1),
    )
}

/// The Service that `host` (`<service>.<namespace>.svc...`) names.
fn collector_service<'a>(objs: &'a [Value], host: &str) -> Option<&'a Value> {
    let (svc, ns) = service_host(host)?;
    find(objs, "Service", &ns, &svc)
}

#[test]
fn the_jaeger_collector_takes_spans_through_its_own_sidecar() {
    let mut f = Failures::default();
    let (host, port) = provider();
    for target in TARGETS {
        let objs = render(target);
        let made = operator_workloads(&objs);
        let [collector] = &pod_templates(&made)[..] else {
            f.push(format!("{target}: not exactly one Jaeger collector"));
            continue;
        };
        // Its OTLP ports listen on loopback only: the sidecar is the way in.
        let jaeger = &arr(&collector.spec()["containers"])[0];
        let grpc = arg(jaeger, "collector.otlp.grpc.host-port");
        f.check(grpc == Some("127.0.0.1:4317"), || {
            format!("{target}: the collector's OTLP gRPC port listens on {grpc:?}")
        });
        let http = arg(jaeger, "collector.otlp.http.host-port");
        f.check(http == Some("127.0.0.1:4318"), || {
            format!("{target}: the collector's OTLP HTTP port listens on {http:?}")
        });

        // The real injector gives it a sidecar whose inbound hands spans to that port.
        let injected = match injected_operator_workloads(&objs) {
            Ok(docs) => docs,
            Err(e) => {
                f.push(format!("{target}: injecting the collector: {e:#}"));
                continue;
            }
        };
        let pods = pod_templates(&injected);
        let Some(pod) = pods.first() else {
            f.push(format!("{target}: the injector returned no workload"));
            continue;
        };
        let sidecars = proxies(pod);
        let [proxy] = &sidecars[..] else {
            f.push(format!(
                "{target}: the collector got {} proxies",
                sidecars.len()
            ));
            continue;
        };
        let env: BTreeMap<&str, &str> = arr(&proxy["env"])
            .iter()
            .filter_map(|e| Some((e["name"].as_str()?, e["value"].as_str()?)))
            .collect();
        let inbound = env.get("GEMBOK_INBOUND").copied().unwrap_or("");
        f.check(inbound.contains(":8443=127.0.0.1:4317"), || {
            format!("{target}: the collector's sidecar has GEMBOK_INBOUND {inbound:?}")
        });

        // The Service of the provider and of the services' routes targets that port.
        match collector_service(&objs, &host) {
            Some(svc) => {
                f.check(
                    map_selector_matches(&svc["spec"]["selector"], &pod.labels()),
                    || format!("{target}: Service {host} does not select the collector"),
                );
                let sp = arr(&svc["spec"]["ports"])
                    .iter()
                    .find(|p| p["port"] == port);
                f.check(sp.is_some_and(|p| p["targetPort"] == 8443), || {
                    format!("{target}: Service {host} port {port} is not the sidecar's 8443")
                });
            }
            None => f.push(format!("{target}: no Service {host}")),
        }

        // Its certificate: the Secret the sidecar mounts, for the names callers verify.
        let secret = arr(&pod.spec()["volumes"])
            .iter()
            .find_map(|v| v["secret"]["secretName"].as_str())
            .filter(|s| s.ends_with("gembok-tls"));
        let account = pod.service_account();
        let spiffe = spiffe_id("monitoring", account);
        let names = match secret {
            None => {
                f.push(format!(
                    "{target}: the collector's sidecar mounts no certificate"
                ));
                continue;
            }
            Some(name) => match (
                find(&objs, "Secret", "monitoring", name),
                of_kind(&objs, "Certificate")
                    .find(|c| namespace(c) == "monitoring" && c["spec"]["secretName"] == name),
            ) {
                (Some(s), _) => pem_sans(&secret_data(s, "tls.crt")),
                (None, Some(c)) => (
                    arr(&c["spec"]["dnsNames"])
                        .iter()
                        .filter_map(|v| v.as_str().map(str::to_owned))
                        .collect(),
                    arr(&c["spec"]["uris"])
                        .iter()
                        .filter_map(|v| v.as_str().map(str::to_owned))
                        .collect(),
                ),
                (None, None) => {
                    f.push(format!(
                        "{target}: nothing makes the Secret monitoring/{name}"
                    ));
                    continue;
                }
            },
        };
        f.check(names.0.contains(&host), || {
            format!(
                "{target}: the collector's certificate lacks {host}: {:?}",
                names.0
            )
        });
        f.check(names.1.contains(&spiffe), || {
            format!(
                "{target}: the collector's certificate lacks {spiffe}: {:?}",
                names.1
            )
        });
    }
    f.assert_none("the Jaeger collector");
}

#[test]
fn spans_leave_every_pod_only_over_gembok_mtls() {
    let mut f = Failures::default();
    let (host, port) = provider();
    let collector = spiffe_id("monitoring", "jaeger");
    for target in TARGETS {
        let objs = render(target);
        // The SDKs: to a loopback port where their sidecar originates mTLS to the collector.
        let mut senders = 0;
        for p in pod_templates(&objs) {
            let routes = outbound_routes(
                p.annotations()
                    .get("gembok.io/outbound")
                    .map(String::as_str)
                    .unwrap_or(""),
            );
            for c in p.all_containers() {
                for e in arr(&c["env"])
                    .iter()
                    .filter(|e| OTLP_ENDPOINTS.iter().any(|n| e["name"] == *n))
                {
                    senders += 1;
                    let value = e["value"].as_str().unwrap_or("");
                    let who = format!("{target}: {} {}={value}", p.app(), e["name"]);
                    let local = value
                        .strip_prefix("http://127.0.0.1:")
                        .and_then(|p| p.trim_end_matches('/').parse::<i64>().ok());
                    let Some(local) = local else {
                        f.push(format!("{who}: not a loopback port of the pod's sidecar"));
                        continue;
                    };
                    f.check(
                        routes.iter().any(|(l, h, p)| *l == local && *h == host && *p == port),
                        || format!("{who}: no gembok.io/outbound route {local}={host}:{port} ({routes:?})"),
                    );
                }
            }
        }
        f.check(senders >= SERVICES.len(), || {
            format!("{target}: only {senders} span exporters")
        });

        // Envoy: reporting is off mesh-wide and on only where a DestinationRule makes the
        // Envoy originate Gembok mTLS to the provider, verifying the collector.
        let mutual: Vec<BTreeMap<String, String>> = of_kind(&objs, "DestinationRule")
            .filter(|d| d["spec"]["host"] == host.as_str())
            .filter(|d| {
                let tls = &d["spec"]["trafficPolicy"]["tls"];
                tls["mode"] == "MUTUAL"
                    && tls["credentialName"]
                        .as_str()
                        .is_some_and(|c| c.ends_with("-gembok-tls"))
                    && arr(&tls["subjectAltNames"]).contains(&Value::from(collector.as_str()))
            })
            .map(|d| str_map(&d["spec"]["workloadSelector"]["matchLabels"]))
            .collect();
        let telemetry: Vec<&Value> = of_kind(&objs, "Telemetry").collect();
        let mesh_wide = telemetry
            .iter()
            .find(|t| namespace(t) == "istio-system" && t["spec"]["selector"].is_null());
        match mesh_wide {
            Some(t) => f.check(
                arr(&t["spec"]["tracing"])
                    .iter()
                    .all(|tr| tr["disableSpanReporting"] == true),
                || format!("{target}: {} reports spans mesh-wide", id(t)),
            ),
            None => f.push(format!("{target}: no mesh-wide Telemetry")),
        }
        for t in &telemetry {
            let reports = arr(&t["spec"]["tracing"])
                .iter()
                .any(|tr| tr["disableSpanReporting"] != true);
            if !reports {
                continue;
            }
            let selects = str_map(&t["spec"]["selector"]["matchLabels"]);
            f.check(
                !selects.is_empty() && namespace(t) == "istio-system" && mutual.contains(&selects),
                || format!("{target}: {} reports spans from {selects:?}, which has no Gembok DestinationRule to {host}", id(t)),
            );
        }
    }
    f.assert_none("spans");
}
