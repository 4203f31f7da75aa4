//! NetworkPolicies, evaluated the way Kubernetes does: traffic from A to B on a port flows when
//! A's egress and B's ingress both allow it (a pod no policy selects is open in that direction).
//! Checked: every declared route is allowed, nothing undeclared reaches the services, and no
//! plaintext port is reachable except the scrape ports from Prometheus.

use std::collections::BTreeMap;

use serde_json::Value;

use super::operators::operator_workloads;
use super::sidecar::SCRAPE_PORTS;
use super::support::*;

#[derive(Clone, Debug)]
struct Ep {
    who: String,
    ns: String,
    labels: BTreeMap<String, String>,
    ports: Vec<(String, i64)>,
}

fn ep(who: &str, ns: &str, labels: &[(&str, &str)], ports: &[i64]) -> Ep {
    Ep {
        who: who.into(),
        ns: ns.into(),
        labels: labels
            .iter()
            .map(|(k, v)| ((*k).into(), (*v).into()))
            .collect(),
        ports: ports.iter().map(|p| (String::new(), *p)).collect(),
    }
}

/// Pods the layout does not define but talks to (installed by Istio, Helm charts, operators).
fn outside_pods() -> Vec<Ep> {
    vec![
        // istio/gateway chart: Envoy binds the Gateway ports 80/443 itself; status on 15021.
        ep(
            "ingress-gateway",
            "istio-system",
            &[("istio", "ingressgateway"), ("app", "istio-ingressgateway")],
            &[80, 443, 15021],
        ),
        ep(
            "istiod",
            "istio-system",
            &[("app", "istiod"), ("istio", "pilot")],
            &[15010, 15012, 15014, 15017],
        ),
        ep(
            "prometheus",
            "monitoring",
            &[("app.kubernetes.io/name", "prometheus")],
            &[9090],
        ),
        ep(
            "grafana",
            "monitoring",
            &[("app.kubernetes.io/name", "grafana")],
            &[3000],
        ),
        ep(
            "redis-node",
            "redis",
            &[("app", "redis-enterprise"), ("redis.io/role", "node")],
            &[12000, 12001, 12002, 12003, 9443, 8070],
        ),
        // The operators' admission webhooks (their Services target these pod ports).
        ep(
            "redis-operator",
            "redis",
            &[("name", "redis-enterprise-operator")],
            &[8443, 8080],
        ),
        ep(
            "jaeger-operator",
            "monitoring",
            &[
                ("app.kubernetes.io/name", "jaeger-operator"),
                ("app.kubernetes.io/instance", "jaeger-operator"),
            ],
            &[9443, 8383],
        ),
        ep("kube-dns", "kube-system", &[("k8s-app", "kube-dns")], &[53]),
        ep("stranger", "default", &[("app", "stranger")], &[8080]),
    ]
}

/// The layout's pods, the operators' (the Jaeger collector, by its role: "jaeger-collector"
/// whatever the strategy), and the ones installed otherwise.
fn pods(objs: &[Value]) -> Vec<Ep> {
    let made = operator_workloads(objs);
    let ep = |p: &PodTemplate<'_>, who: String| Ep {
        who,
        ns: p.namespace().into(),
        labels: p.labels(),
        ports: p.container_ports(),
    };
    pod_templates(objs)
        .iter()
        .map(|p| ep(p, p.app()))
        .chain(
            pod_templates(&made)
                .iter()
                .map(|p| ep(p, "jaeger-collector".into())),
        )
        .chain(outside_pods())
        .collect()
}

fn find_ep<'a>(eps: &'a [Ep], who: &str) -> &'a Ep {
    eps.iter()
        .find(|e| e.who == who)
        .unwrap_or_else(|| panic!("no endpoint {who}"))
}

struct Policies<'a> {
    objs: &'a [Value],
}

impl Policies<'_> {
    fn allowed(&self, src: &Ep, dst: &Ep, port: i64, proto: &str) -> bool {
        self.side(src, dst, port, proto, "Egress") && self.side(dst, src, port, proto, "Ingress")
    }

    /// Does `subject`'s policy for `dir` let traffic with `peer` on `port` through?
    /// For Ingress the port is the subject's; for Egress it is the peer's.
    fn side(&self, subject: &Ep, peer: &Ep, port: i64, proto: &str, dir: &str) -> bool {
        let (rules_key, peers_key, port_owner) = match dir {
            "Ingress" => ("ingress", "from", subject),
            _ => ("egress", "to", peer),
        };
        let selecting: Vec<&Value> = of_kind(self.objs, "NetworkPolicy")
            .filter(|np| namespace(np) == subject.ns)
            .filter(|np| selector_matches(&np["spec"]["podSelector"], &subject.labels))
            .filter(|np| policy_types(np).contains(&dir))
            .collect();
        if selecting.is_empty() {
            return true;
        }
        selecting.iter().any(|np| {
            arr(&np["spec"][rules_key]).iter().any(|rule| {
                let peers = arr(&rule[peers_key]);
                let peer_ok = peers.is_empty()
                    || peers
                        .iter()
                        .any(|p| self.peer_matches(p, namespace(np), peer));
                let ports = arr(&rule["ports"]);
                let port_ok = ports.is_empty()
                    || ports
                        .iter()
                        .any(|p| port_matches(p, port, proto, port_owner));
                peer_ok && port_ok
            })
        })
    }

    fn peer_matches(&self, peer: &Value, policy_ns: &str, ep: &Ep) -> bool {
        if let Some(cidr) = peer["ipBlock"]["cidr"].as_str() {
            // Pod IPs fall in 0.0.0.0/0; narrower blocks are taken as outside the cluster.
            return cidr == "0.0.0.0/0";
        }
        let ns_ok = match peer.get("namespaceSelector") {
            Some(sel) => selector_matches(sel, &namespace_labels(self.objs, &ep.ns)),
            None => ep.ns == policy_ns,
        };
        let pod_ok = match peer.get("podSelector") {
            Some(sel) => selector_matches(sel, &ep.labels),
            None => true,
        };
        ns_ok && pod_ok
    }
}

fn policy_types(np: &Value) -> Vec<&str> {
    let explicit: Vec<&str> = arr(&np["spec"]["policyTypes"])
        .iter()
        .filter_map(Value::as_str)
        .collect();
    if !explicit.is_empty() {
        return explicit;
    }
    let mut t = vec!["Ingress"];
    if np["spec"].get("egress").is_some() {
        t.push("Egress");
    }
    t
}

fn port_matches(p: &Value, port: i64, proto: &str, owner: &Ep) -> bool {
    if p["protocol"].as_str().unwrap_or("TCP") != proto {
        return false;
    }
    match &p["port"] {
        Value::Null => true,
        Value::Number(n) => {
            let start = n.as_i64().unwrap_or(-1);
            let end = p["endPort"].as_i64().unwrap_or(start);
            (start..=end).contains(&port)
        }
        Value::String(name) => owner.ports.iter().any(|(n, v)| n == name && *v == port),
        _ => false,
    }
}

/// Declared routes of the rendered layout: (caller app, callee endpoint who, port).
fn declared_routes(objs: &[Value]) -> Vec<(String, String, i64)> {
    let mut out = Vec::new();
    let made = operator_workloads(objs);
    let templates = pod_templates(objs);
    let operators = pod_templates(&made);
    for p in templates.iter().filter(|p| p.namespace() == APP_NAMESPACE) {
        let ann = p.annotations();
        for (_, host, port) in outbound_routes(
            ann.get("gembok.io/outbound")
                .map(String::as_str)
                .unwrap_or(""),
        ) {
            let Some((svc, ns)) = service_host(&host) else {
                continue;
            };
            if ns == "redis" {
                out.push((p.app(), "redis-node".into(), port));
            } else if let Some(s) = find(objs, "Service", &ns, &svc) {
                let sp = arr(&s["spec"]["ports"]).iter().find(|x| x["port"] == port);
                let target = sp.and_then(|x| x["targetPort"].as_i64()).unwrap_or(port);
                let selects = |d: &&PodTemplate<'_>| {
                    d.namespace() == ns && map_selector_matches(&s["spec"]["selector"], &d.labels())
                };
                for d in templates.iter().filter(selects) {
                    out.push((p.app(), d.app(), target));
                }
                for _ in operators.iter().filter(selects) {
                    out.push((p.app(), "jaeger-collector".into(), target));
                }
            }
        }
    }
    out
}

/// TLS ports of a pod and whether its allowed SANs admit the ingress gateway.
fn inbound_of(objs: &[Value], app: &str) -> (Vec<i64>, bool) {
    let gateway = spiffe_id("istio-system", "istio-ingressgateway");
    pod_templates(objs)
        .iter()
        .find(|p| p.namespace() == APP_NAMESPACE && p.app() == app)
        .map(|p| {
            let ann = p.annotations();
            let tls = inbound_ports(
                ann.get("gembok.io/inbound")
                    .map(String::as_str)
                    .unwrap_or(""),
            )
            .into_iter()
            .map(|(t, _)| t)
            .collect();
            let sans = allowed_sans(objs, p).unwrap_or_else(|e| panic!("{e}"));
            (tls, sans.iter().any(|s| glob(s, &gateway)))
        })
        .unwrap_or_default()
}

#[test]
fn every_owned_namespace_denies_by_default() {
    let mut f = Failures::default();
    for target in TARGETS {
        let objs = render(target);
        for (ns, types) in [
            ("ecommerce", &["Ingress", "Egress"][..]),
            ("redis", &["Ingress", "Egress"][..]),
            ("gembok-system", &["Ingress", "Egress"][..]),
            ("istio-system", &["Ingress", "Egress"][..]),
            ("monitoring", &["Ingress"][..]),
        ] {
            let ok = of_kind(&objs, "NetworkPolicy").any(|np| {
                namespace(np) == ns
                    && np["spec"]["podSelector"]
                        .as_object()
                        .is_some_and(|m| m.is_empty())
                    && types.iter().all(|t| policy_types(np).contains(t))
                    && arr(&np["spec"]["ingress"]).is_empty()
                    && arr(&np["spec"]["egress"]).is_empty()
            });
            f.check(ok, || {
                format!("{target}: no default-deny {types:?} policy in {ns}")
            });
        }
    }
    f.assert_none("default deny");
}

#[test]
fn every_declared_flow_is_allowed() {
    let mut f = Failures::default();
    for target in TARGETS {
        let objs = injected(target);
        let eps = pods(&objs);
        let np = Policies { objs: &objs };
        let routes = declared_routes(&objs);
        f.check(routes.len() >= 5, || {
            format!("{target}: only {} declared routes", routes.len())
        });
        // The two service-to-service calls of the shop, by name (issue 4).
        for (from, to) in SERVICE_CALLS {
            f.check(
                routes
                    .iter()
                    .any(|(a, b, p)| a == from && b == to && *p == 8443),
                || format!("{target}: no declared route {from} -> {to}:8443 ({routes:?})"),
            );
        }
        for (from, to, port) in &routes {
            let (s, d) = (find_ep(&eps, from), find_ep(&eps, to));
            f.check(np.allowed(s, d, *port, "TCP"), || {
                format!("{target}: {from} -> {to}:{port} (declared route) is blocked")
            });
        }
        let gw = find_ep(&eps, "ingress-gateway");
        let prom = find_ep(&eps, "prometheus");
        let dns = find_ep(&eps, "kube-dns");
        let istiod = find_ep(&eps, "istiod");
        let jaeger = find_ep(&eps, "jaeger-collector");
        for svc in SERVICES {
            let d = find_ep(&eps, svc);
            let (tls, admits_gateway) = inbound_of(&objs, svc);
            if admits_gateway {
                for t in &tls {
                    f.check(np.allowed(gw, d, *t, "TCP"), || {
                        format!("{target}: ingress gateway -> {svc}:{t} is blocked")
                    });
                }
            }
            for p in SCRAPE_PORTS {
                f.check(np.allowed(prom, d, p, "TCP"), || {
                    format!("{target}: Prometheus cannot scrape {svc}:{p}")
                });
            }
            f.check(
                np.allowed(d, dns, 53, "UDP") && np.allowed(d, dns, 53, "TCP"),
                || format!("{target}: {svc} cannot resolve names"),
            );
            f.check(np.allowed(d, istiod, 15012, "TCP"), || {
                format!("{target}: {svc}'s istio-proxy cannot reach istiod")
            });
            f.check(np.allowed(d, jaeger, 8443, "TCP"), || {
                format!("{target}: {svc} cannot send spans (Gembok port 8443)")
            });
        }
        let injector = find_ep(&eps, "gembok-injector");
        let api_server = ep("api-server", "host-network", &[], &[443, 6443]);
        f.check(np.allowed(prom, injector, 15780, "TCP"), || {
            format!("{target}: Prometheus cannot scrape the injector")
        });
        // Admission webhooks: the API server calls them on the pods' ports.
        for (who, port) in [
            ("gembok-injector", 8443),
            ("istiod", 15017),
            ("redis-operator", 8443),
            ("jaeger-operator", 9443),
        ] {
            f.check(
                np.allowed(&api_server, find_ep(&eps, who), port, "TCP"),
                || format!("{target}: the API server cannot call {who}'s webhook on {port}"),
            );
        }
        // istio-system: the gateway's own flows, istiod's way out, the ACME challenge.
        let internet = ep("internet", "outside", &[], &[]);
        for port in [80, 443, 15021] {
            f.check(np.allowed(&internet, gw, port, "TCP"), || {
                format!("{target}: the ingress gateway does not accept {port} from outside")
            });
        }
        f.check(np.allowed(gw, istiod, 15012, "TCP"), || {
            format!("{target}: the ingress gateway cannot reach istiod")
        });
        f.check(np.allowed(gw, jaeger, 8443, "TCP"), || {
            format!("{target}: the ingress gateway cannot send spans (Gembok port 8443)")
        });
        f.check(np.allowed(istiod, &api_server, 443, "TCP"), || {
            format!("{target}: istiod cannot reach the API server")
        });
        f.check(np.allowed(istiod, dns, 53, "UDP"), || {
            format!("{target}: istiod cannot resolve names")
        });
        // Redis: Prometheus scrapes the nodes' metrics (the proxy certificate alert needs them).
        let redis = find_ep(&eps, "redis-node");
        f.check(np.allowed(prom, redis, 8070, "TCP"), || {
            format!("{target}: Prometheus cannot scrape Redis Enterprise")
        });
        // Regions: active-active through the ingress gateway, Istio mTLS through the east-west one.
        if target.starts_with("clusters/") {
            for port in [9443, 12003] {
                f.check(np.allowed(gw, redis, port, "TCP"), || {
                    format!("{target}: ingress gateway -> redis:{port} (active-active) is blocked")
                });
            }
            let eastwest = eps.iter().find(|e| {
                e.ns == "istio-system"
                    && e.labels.get("istio").map(String::as_str) == Some("eastwestgateway")
            });
            match eastwest {
                Some(ew) => {
                    f.check(np.allowed(&internet, ew, 15443, "TCP"), || {
                        format!("{target}: the east-west gateway does not accept 15443")
                    });
                    f.check(np.allowed(ew, istiod, 15012, "TCP"), || {
                        format!("{target}: the east-west gateway cannot reach istiod")
                    });
                }
                None => f.push(format!("{target}: no east-west gateway pods")),
            }
        }
    }
    f.assert_none("allowed flows");
}

#[test]
fn nothing_undeclared_and_nothing_plaintext_reaches_the_services() {
    let mut f = Failures::default();
    for target in TARGETS {
        let objs = injected(target);
        let eps = pods(&objs);
        let np = Policies { objs: &objs };
        let routes = declared_routes(&objs);
        for svc in SERVICES {
            let d = find_ep(&eps, svc);
            let (tls, admits_gateway) = inbound_of(&objs, svc);
            let app_ports: Vec<i64> = pod_templates(&objs)
                .iter()
                .find(|p| p.namespace() == APP_NAMESPACE && p.app() == svc)
                .map(|p| {
                    inbound_ports(
                        p.annotations()
                            .get("gembok.io/inbound")
                            .map(String::as_str)
                            .unwrap_or(""),
                    )
                    .into_iter()
                    .map(|(_, a)| a)
                    .collect()
                })
                .unwrap_or_default();
            let mut ports: Vec<i64> = d.ports.iter().map(|(_, p)| *p).collect();
            ports.extend([
                80, 443, 8080, 8443, 9090, 15000, 15006, 15090, 15700, 15701, 15710,
            ]);
            ports.sort_unstable();
            ports.dedup();
            for s in eps.iter().filter(|s| s.who != svc) {
                for &port in &ports {
                    // The service's ingress alone must hold the line: a source's own egress
                    // policy (or the lack of one, outside our namespaces) is not a defence.
                    if !np.side(d, s, port, "TCP", "Ingress") {
                        continue;
                    }
                    let expected = routes
                        .iter()
                        .any(|(a, b, p)| *a == s.who && b == svc && *p == port)
                        || (s.who == "ingress-gateway" && admits_gateway && tls.contains(&port))
                        || (s.who == "prometheus" && SCRAPE_PORTS.contains(&port));
                    f.check(expected, || {
                        format!(
                            "{target}: {} ({}) may reach {svc}:{port}, which no route declares",
                            s.who, s.ns
                        )
                    });
                    f.check(!app_ports.contains(&port), || {
                        format!(
                            "{target}: {} may reach {svc}'s plaintext app port {port}",
                            s.who
                        )
                    });
                }
            }
        }
        // Each service reaches only its own database.
        let redis = find_ep(&eps, "redis-node");
        for svc in SERVICES {
            let s = find_ep(&eps, svc);
            for port in [12000, 12001, 12002, 12003, 6379, 9443, 8070] {
                let expected = routes
                    .iter()
                    .any(|(a, b, p)| a == svc && b == "redis-node" && *p == port);
                f.check(np.allowed(s, redis, port, "TCP") == expected, || {
                    format!(
                        "{target}: {svc} -> redis:{port} is {} but {} declared",
                        if expected { "blocked" } else { "allowed" },
                        if expected { "is" } else { "is not" }
                    )
                });
            }
        }
        // istio-system: istiod serves xDS to the mesh only, and nothing but its webhook port
        // (15017, for the API server) and the gateways' public ports is open to everyone.
        let stranger = find_ep(&eps, "stranger");
        let istiod = find_ep(&eps, "istiod");
        let gw = find_ep(&eps, "ingress-gateway");
        for port in [15010, 15012, 15014] {
            f.check(!np.side(istiod, stranger, port, "TCP", "Ingress"), || {
                format!("{target}: a pod outside the mesh may reach istiod:{port}")
            });
        }
        for port in [15000, 15020, 15090, 8080, 8443] {
            f.check(!np.side(gw, stranger, port, "TCP", "Ingress"), || {
                format!("{target}: anyone may reach the ingress gateway's port {port}")
            });
        }
        for port in [12000, 12001, 12002, 12003, 9443, 6379] {
            f.check(
                target.starts_with("clusters/") && (port == 9443 || port == 12003)
                    || !np.side(gw, redis, port, "TCP", "Egress"),
                || format!("{target}: the ingress gateway may connect to redis:{port}"),
            );
        }
        // Spans arrive over Gembok mTLS only: no pod outside monitoring reaches the collector's
        // plaintext ports (OTLP gRPC and HTTP, Zipkin, Jaeger's gRPC and Thrift, the UI).
        let jaeger = find_ep(&eps, "jaeger-collector");
        for s in eps.iter().filter(|e| e.ns != "monitoring") {
            for port in [4317, 4318, 9411, 14250, 14268, 16686] {
                f.check(!np.side(jaeger, s, port, "TCP", "Ingress"), || {
                    format!(
                        "{target}: {} ({}) may reach the Jaeger collector's plaintext port {port}",
                        s.who, s.ns
                    )
                });
            }
        }
        // The injector makes no outbound connections at all.
        let injector = find_ep(&eps, "gembok-injector");
        for other in eps.iter().filter(|e| e.who != "gembok-injector") {
            for port in [53, 443, 6443, 8443] {
                f.check(!np.allowed(injector, other, port, "TCP"), || {
                    format!("{target}: the injector may connect to {}:{port}", other.who)
                });
            }
        }
    }
    f.assert_none("denied flows");
}
