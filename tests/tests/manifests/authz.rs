//! Istio authorization at the ingress gateway, evaluated the way Istio evaluates it for the
//! TLS-passthrough connections the gateway carries besides the shop's HTTPS: Redis Enterprise's
//! active-active traffic between the regions.

use std::collections::BTreeMap;

use serde_json::Value;

use super::support::*;

/// Fields Istio can only read from HTTP. A rule that uses any of them never matches a TCP
/// connection (for an ALLOW policy the rule is skipped, so it allows nothing there).
const HTTP_ONLY_OPERATION: [&str; 6] = [
    "hosts",
    "notHosts",
    "paths",
    "notPaths",
    "methods",
    "notMethods",
];

fn gateway_labels() -> BTreeMap<String, String> {
    BTreeMap::from([("istio".to_owned(), "ingressgateway".to_owned())])
}

/// The AuthorizationPolicies that apply to the ingress gateway: its own namespace's (the root
/// namespace's too, as that is istio-system) without a selector or with one that selects it.
fn gateway_policies(objs: &[Value]) -> Vec<&Value> {
    of_kind(objs, "AuthorizationPolicy")
        .filter(|p| namespace(p) == "istio-system")
        .filter(|p| {
            let sel = &p["spec"]["selector"]["matchLabels"];
            sel.is_null() || map_selector_matches(sel, &gateway_labels())
        })
        .collect()
}

/// Whether a rule matches a passthrough connection on 443 with this SNI coming from another
/// region. Only the SNI and the port are known of such a connection, so a rule that needs
/// anything else (a source, another condition) is taken not to match.
fn rule_admits_passthrough(rule: &Value, sni: &str) -> bool {
    let to_matches = |to: &Value| {
        let op = &to["operation"];
        HTTP_ONLY_OPERATION.iter().all(|f| op[*f].is_null())
            && op["notPorts"].is_null()
            && (op["ports"].is_null() || arr(&op["ports"]).iter().any(|p| p == "443"))
    };
    let when_matches = |c: &Value| {
        c["key"] == "connection.sni"
            && (c["values"].is_null()
                || arr(&c["values"])
                    .iter()
                    .any(|v| v.as_str().is_some_and(|v| glob(v, sni))))
            && !arr(&c["notValues"])
                .iter()
                .any(|v| v.as_str().is_some_and(|v| glob(v, sni)))
    };
    arr(&rule["from"]).is_empty()
        && (arr(&rule["to"]).is_empty() || arr(&rule["to"]).iter().any(to_matches))
        && arr(&rule["when"]).iter().all(when_matches)
}

/// Whether the gateway lets a passthrough connection with this SNI through. Models ALLOW
/// policies only; the caller checks that no other action applies to the gateway.
fn gateway_admits(policies: &[&Value], sni: &str) -> bool {
    let allow: Vec<&&Value> = policies
        .iter()
        .filter(|p| p["spec"]["action"].as_str().unwrap_or("ALLOW") == "ALLOW")
        .collect();
    allow.is_empty()
        || allow.iter().any(|p| {
            arr(&p["spec"]["rules"])
                .iter()
                .any(|r| rule_admits_passthrough(r, sni))
        })
}

#[test]
fn ingress_gateway_admits_the_other_regions_redis_traffic_and_nothing_else_by_sni() {
    let mut f = Failures::default();
    let renders: Vec<(&str, Vec<Value>)> = REGIONS
        .iter()
        .map(|r| (*r, render(&format!("clusters/{r}"))))
        .collect();
    // The active-active databases are declared in one region and created by the operator in
    // every participant, so each region's gateway must pass all of them.
    let databases: Vec<String> = renders
        .iter()
        .flat_map(|(_, objs)| of_kind(objs, "RedisEnterpriseActiveActiveDatabase"))
        .map(|d| name(d).to_owned())
        .collect();
    f.check(!databases.is_empty(), || {
        "no RedisEnterpriseActiveActiveDatabase in any region".to_owned()
    });
    for (region, objs) in &renders {
        let policies = gateway_policies(objs);
        for p in &policies {
            let action = p["spec"]["action"].as_str().unwrap_or("ALLOW");
            f.check(action == "ALLOW", || {
                format!(
                    "clusters/{region}: {} applies to the ingress gateway with action {action}, which this test does not model",
                    id(p)
                )
            });
        }
        let Some(rec) = of_kind(objs, "RedisEnterpriseCluster").next() else {
            f.push(format!("clusters/{region}: no RedisEnterpriseCluster"));
            continue;
        };
        let route = &rec["spec"]["ingressOrRouteSpec"];
        let api = route["apiFqdnUrl"].as_str().unwrap_or("");
        let suffix = route["dbFqdnSuffix"].as_str().unwrap_or("");
        f.check(route["method"] == "istio" && !api.is_empty() && !suffix.is_empty(), || {
            format!("clusters/{region}: the REC is not routed through Istio with an API name and a database suffix")
        });
        let names = std::iter::once(api.to_owned())
            .chain(databases.iter().map(|db| format!("{db}{suffix}")));
        for sni in names {
            f.check(gateway_admits(&policies, &sni), || {
                format!("clusters/{region}: the ingress gateway's AuthorizationPolicies refuse passthrough to {sni}")
            });
        }
        // Not an allow-all: neither a stranger's name nor another region's.
        let other = REGIONS
            .iter()
            .find(|r| *r != region)
            .expect("three regions");
        for sni in [
            "attacker.example.com".to_owned(),
            format!("x-db-rec-{other}-redis.{other}.shop.example.com"),
        ] {
            f.check(!gateway_admits(&policies, &sni), || {
                format!("clusters/{region}: the ingress gateway lets passthrough to {sni} through")
            });
        }
    }
    f.assert_none("ingress gateway authorization");
}

#[test]
fn the_passthrough_model_reads_rules_as_istio_does() {
    // HTTP fields never match TCP.
    assert!(!rule_admits_passthrough(
        &serde_json::json!({"to": [{"operation": {"hosts": ["a.example"]}}]}),
        "a.example"
    ));
    assert!(!rule_admits_passthrough(
        &serde_json::json!({"to": [{"operation": {"paths": ["/x"]}}]}),
        "a.example"
    ));
    // SNI prefix and suffix matches, and an empty rule matches everything.
    let sni =
        serde_json::json!({"when": [{"key": "connection.sni", "values": ["*-db.r.example"]}]});
    assert!(rule_admits_passthrough(&sni, "s-db.r.example"));
    assert!(!rule_admits_passthrough(&sni, "s-db.q.example"));
    assert!(rule_admits_passthrough(&serde_json::json!({}), "anything"));
    // Conditions on what a passthrough connection does not tell are not taken to match.
    assert!(!rule_admits_passthrough(
        &serde_json::json!({"from": [{"source": {"principals": ["p"]}}]}),
        "a.example"
    ));
    assert!(!rule_admits_passthrough(
        &serde_json::json!({"when": [{"key": "source.ip", "values": ["10.0.0.0/8"]}]}),
        "a.example"
    ));
    // Policies: none allows all; one with only HTTP rules allows no TCP.
    let http_only =
        serde_json::json!({"spec": {"rules": [{"to": [{"operation": {"hosts": ["a"]}}]}]}});
    assert!(gateway_admits(&[], "a"));
    assert!(!gateway_admits(&[&http_only], "a"));
}
