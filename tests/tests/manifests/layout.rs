//! The layout itself: every kustomization renders, the paths the operations guide uses exist,
//! and the directories it applies with `kubectl apply -f` hold nothing but Kubernetes objects.

use std::fs;
use std::process::Command;

use serde_json::Value;

use super::support::*;

/// Paths from the operations guide (issue 4's layout) that must exist exactly.
const REQUIRED_PATHS: &[&str] = &[
    "base/namespaces",
    "base/deployments",
    "base/services",
    "base/config/redis-config.yaml",
    "base/config/prometheus-config.yaml",
    "base/config/grafana-dashboard.yaml",
    "base/config/jaeger.yaml",
    "base/networking/network-policies.yaml",
    "base/networking/service-mesh/peer-authentication.yaml",
    "base/scaling/hpa-config.yaml",
    "base/gembok",
    "overlays/development",
    "overlays/staging",
    "overlays/production",
    "clusters/us",
    "clusters/eu",
    "clusters/asia",
    "README.md",
];

/// Directories of plain manifests (what `kubectl apply -f <dir>` may be pointed at).
const PLAIN_DIRS: &[&str] = &[
    "base/namespaces",
    "base/deployments",
    "base/services",
    "base/config",
    "base/networking",
    "base/networking/service-mesh",
    "base/scaling",
];

/// The operations guide's commands, each of which must appear in manifests/README.md.
const SEED_COMMANDS: &[&str] = &[
    "kubectl apply -f base/namespaces/",
    "kubectl apply -f base/config/redis-config.yaml",
    "kubectl apply -f base/config/prometheus-config.yaml",
    "kubectl apply -f base/config/grafana-dashboard.yaml",
    "kubectl apply -k overlays/production/",
    "kubectl apply -k clusters/us/",
    "kubectl scale deployment product-catalog --replicas=5 -n ecommerce",
    "kubectl get hpa -n ecommerce",
    "kubectl port-forward -n monitoring",
];

const CLUSTER_SCOPED: &[&str] = &[
    "Namespace",
    "ClusterIssuer",
    "ClusterRole",
    "ClusterRoleBinding",
    "MutatingWebhookConfiguration",
    "ValidatingWebhookConfiguration",
    "PriorityClass",
    "CustomResourceDefinition",
];

#[test]
fn every_overlay_and_cluster_renders() {
    let mut f = Failures::default();
    for target in TARGETS {
        match render_text(target).and_then(|t| parse_docs(&t)) {
            Ok(docs) => f.check(docs.len() > 20, || {
                format!("{target}: only {} objects rendered", docs.len())
            }),
            Err(e) => f.push(format!("{target}: {e:#}")),
        }
    }
    f.assert_none("kubectl kustomize");
}

#[test]
fn paths_of_the_operations_guide_exist() {
    let mut f = Failures::default();
    for p in REQUIRED_PATHS {
        f.check(manifests_dir().join(p).exists(), || {
            format!("manifests/{p} is missing")
        });
    }
    f.assert_none("layout");
}

#[test]
fn directories_applied_with_dash_f_hold_only_kubernetes_objects() {
    let mut f = Failures::default();
    for dir in PLAIN_DIRS {
        let path = manifests_dir().join(dir);
        for k in ["kustomization.yaml", "kustomization.yml", "Kustomization"] {
            // kubectl apply -f <dir> would try to create a "Kustomization" object and fail.
            f.check(!path.join(k).exists(), || {
                format!("manifests/{dir}/{k}: `kubectl apply -f {dir}/` would fail on it")
            });
        }
        for file in yaml_files(&path) {
            let rel = file
                .strip_prefix(manifests_dir())
                .unwrap()
                .display()
                .to_string();
            let text = fs::read_to_string(&file).expect("read");
            let docs = match parse_docs(&text) {
                Ok(d) => d,
                Err(e) => {
                    f.push(format!("{rel}: {e:#}"));
                    continue;
                }
            };
            f.check(!docs.is_empty(), || format!("{rel}: no objects"));
            for d in &docs {
                let ok = d["apiVersion"].is_string() && !kind(d).is_empty() && !name(d).is_empty();
                f.check(ok, || {
                    format!("{rel}: a document is not a Kubernetes object")
                });
                // Applied on its own with -f, an object must say where it goes.
                if !CLUSTER_SCOPED.contains(&kind(d)) {
                    f.check(!namespace(d).is_empty(), || {
                        format!("{rel}: {} has no metadata.namespace", id(d))
                    });
                }
            }
        }
    }
    f.assert_none("plain manifest directories");
}

#[test]
fn base_kustomization_lists_every_plain_manifest() {
    let base = manifests_dir().join("base");
    let k: serde_json::Value =
        serde_yaml_ng::from_str(&fs::read_to_string(base.join("kustomization.yaml")).unwrap())
            .unwrap();
    let listed: Vec<&str> = arr(&k["resources"])
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    let mut f = Failures::default();
    for dir in PLAIN_DIRS {
        for file in yaml_files(&base.join(dir.trim_start_matches("base/"))) {
            let rel = file.strip_prefix(&base).unwrap().display().to_string();
            f.check(listed.contains(&rel.as_str()), || {
                format!("base/{rel} is not listed in base/kustomization.yaml")
            });
        }
    }
    f.check(listed.contains(&"gembok"), || {
        "base/gembok is not in the base".into()
    });
    f.assert_none("base/kustomization.yaml");
}

#[test]
fn operations_guide_commands_are_documented_and_valid() {
    let readme = readme();
    let mut f = Failures::default();
    for cmd in SEED_COMMANDS {
        f.check(readme.contains(cmd), || format!("README.md lacks `{cmd}`"));
    }
    // The objects those commands act on exist where they say.
    for target in ["overlays/production", "clusters/us"] {
        let objs = render(target);
        f.check(
            find(&objs, "Deployment", APP_NAMESPACE, "product-catalog").is_some(),
            || format!("{target}: no Deployment ecommerce/product-catalog to scale"),
        );
        f.check(
            of_kind(&objs, "HorizontalPodAutoscaler").any(|h| namespace(h) == APP_NAMESPACE),
            || format!("{target}: no HPA in ecommerce"),
        );
        // The Jaeger operator names the query Service "<instance>-query" (port-forward target).
        f.check(
            find(&objs, "Jaeger", "monitoring", "jaeger").is_some(),
            || format!("{target}: no Jaeger monitoring/jaeger (svc/jaeger-query)"),
        );
    }
    f.assert_none("operations guide");
}

#[test]
fn development_fixtures_are_marked_and_name_the_script_that_regenerates_them() {
    let mut f = Failures::default();
    let script = "manifests/overlays/development/regenerate-certs.sh";
    f.check(repo().join(script).is_file(), || {
        format!("{script} is missing")
    });
    let certs = manifests_dir().join("overlays/development/certs");
    for file in yaml_files(&certs) {
        let text = fs::read_to_string(&file).expect("fixture");
        let mut lines = text.lines();
        let shown = file.display();
        f.check(
            lines
                .next()
                .is_some_and(|l| l.starts_with("# DEVELOPMENT ONLY")),
            || format!("{shown}: does not open with the DEVELOPMENT ONLY warning"),
        );
        f.check(
            lines.next() == Some(format!("# Regenerate: {script}").as_str()),
            || format!("{shown}: its second line does not name {script}"),
        );
    }
    f.assert_none("development fixtures");
}

/// `(DNS SANs, URI SANs)` of the first certificate in a PEM text.
pub fn pem_sans(pem: &[u8]) -> (Vec<String>, Vec<String>) {
    let (_, pem) = x509_parser::pem::parse_x509_pem(pem).expect("PEM");
    let leaf = gembok_certwatch::LeafInfo::from_der(&pem.contents).expect("X.509");
    (leaf.dns_names, leaf.uris)
}

pub use gembok_tests::repo::secret_data;

#[test]
fn development_redis_and_client_certificates_match_what_production_and_the_overlay_expect() {
    let mut f = Failures::default();
    let dev = render("overlays/development");
    let base = render("base");
    // Redis Enterprise's proxy certificate: the production Certificate's names and identity.
    let wanted = find(&base, "Certificate", "redis", "redis-proxy-gembok")
        .expect("base has the Certificate redis-proxy-gembok");
    let strings = |v: &Value| -> Vec<String> {
        arr(v)
            .iter()
            .filter_map(|s| s.as_str())
            .map(str::to_owned)
            .collect()
    };
    match find(&dev, "Secret", "redis", "redis-proxy-tls") {
        None => f.push("development has no Secret redis/redis-proxy-tls".to_owned()),
        Some(secret) => {
            f.check(secret_data(secret, "name") == b"proxy", || {
                "redis-proxy-tls: data.name is not \"proxy\"".to_owned()
            });
            let (dns, uri) = pem_sans(&secret_data(secret, "certificate"));
            f.check(dns == strings(&wanted["spec"]["dnsNames"]), || {
                format!(
                    "redis-proxy-tls names {dns:?}, redis-proxy-gembok {}",
                    wanted["spec"]["dnsNames"]
                )
            });
            f.check(uri == strings(&wanted["spec"]["uris"]), || {
                format!(
                    "redis-proxy-tls has URIs {uri:?}, redis-proxy-gembok {}",
                    wanted["spec"]["uris"]
                )
            });
        }
    }
    // The developers' client: same root as the sidecars, admitted by every service here only.
    let client = manifests_dir().join("overlays/development/dev-client");
    let read = |name: &str| fs::read(client.join(name)).unwrap_or_default();
    f.check(client.join("DEVELOPMENT-ONLY.txt").is_file(), || {
        "dev-client/ has no DEVELOPMENT-ONLY.txt".to_owned()
    });
    let sidecar = find(&dev, "Secret", APP_NAMESPACE, "product-catalog-gembok-tls")
        .expect("development has product-catalog's Secret");
    f.check(read("ca.crt") == secret_data(sidecar, "ca.crt"), || {
        "dev-client/ca.crt is not the sidecars' root".to_owned()
    });
    let (dns, uri) = pem_sans(&read("tls.crt"));
    f.check(dns.is_empty() && uri.len() == 1, || {
        format!("dev-client: DNS {dns:?}, URIs {uri:?}: want one SPIFFE ID and no DNS name")
    });
    let id = uri.first().cloned().unwrap_or_default();
    for target in TARGETS {
        let objs = render(target); // rendered once per run (support caches kustomize)
        for t in pod_templates(&objs)
            .iter()
            .filter(|t| t.namespace() == APP_NAMESPACE)
        {
            let admitted = match allowed_sans(&objs, t) {
                Ok(patterns) => patterns.iter().any(|p| glob(p, &id)),
                Err(e) => {
                    f.push(format!("{target}: {e}"));
                    continue;
                }
            };
            let want = target == "overlays/development";
            f.check(admitted == want, || {
                format!(
                    "{target}: {} {} the dev-client ({id})",
                    t.app(),
                    if admitted { "admits" } else { "does not admit" }
                )
            });
        }
    }
    f.assert_none("development certificates");
}

/// Revocation in development: every sidecar there (the four services, the Jaeger collector)
/// names the ConfigMap `gembok-crl`, it is in their namespace, and its lists, checked by
/// OpenSSL, revoke `dev-client-revoked/` and not `dev-client/` (same identity).
#[test]
fn development_sidecars_take_lists_that_revoke_the_revoked_client_only() {
    let mut f = Failures::default();
    let dev = render("overlays/development");
    const ANNOTATION: &str = "gembok.io/crl-configmap";
    let mut lists = Vec::new();
    let mut named = |who: String, namespace: &str, name: Option<&str>, f: &mut Failures| {
        if name != Some("gembok-crl") {
            f.push(format!("{who}: {ANNOTATION} is {name:?}, want gembok-crl"));
            return;
        }
        match find(&dev, "ConfigMap", namespace, "gembok-crl") {
            Some(cm) => lists.push(cm["data"]["ca.crl"].as_str().unwrap_or_default().to_owned()),
            None => f.push(format!("{who}: no ConfigMap {namespace}/gembok-crl")),
        }
    };
    let services: Vec<_> = pod_templates(&dev)
        .into_iter()
        .filter(|t| t.namespace() == APP_NAMESPACE && kind(t.owner) == "Deployment")
        .filter(|t| {
            t.labels()
                .get("app.kubernetes.io/part-of")
                .map(String::as_str)
                == Some("ecommerce")
        })
        .collect();
    f.check(services.len() == 4, || {
        format!("{} service Deployments, want 4", services.len())
    });
    for t in &services {
        let ann = t.annotations();
        named(
            t.app(),
            APP_NAMESPACE,
            ann.get(ANNOTATION).map(String::as_str),
            &mut f,
        );
    }
    match find(&dev, "Jaeger", "monitoring", "jaeger") {
        Some(jaeger) => {
            let name = jaeger["spec"]["allInOne"]["annotations"][ANNOTATION].as_str();
            named("jaeger".into(), "monitoring", name, &mut f);
        }
        None => f.push("development has no Jaeger monitoring/jaeger"),
    }
    lists.sort();
    lists.dedup();
    f.check(lists.len() == 1, || {
        format!("{} different lists, want one", lists.len())
    });

    let tmp = tempfile::tempdir().expect("tempdir");
    let crl = tmp.path().join("ca.crl");
    fs::write(&crl, lists.first().cloned().unwrap_or_default()).expect("write ca.crl");
    for (client, revoked) in [("dev-client", false), ("dev-client-revoked", true)] {
        let dir = manifests_dir().join("overlays/development").join(client);
        let path = |name: &str| dir.join(name).to_str().expect("UTF-8 path").to_owned();
        let out = Command::new("openssl")
            .args(["verify", "-crl_check_all", "-CAfile", &path("ca.crt")])
            .args(["-untrusted", &path("tls.crt"), "-CRLfile"])
            .arg(&crl)
            .arg(path("tls.crt"))
            .output()
            .expect("run openssl verify");
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        let seen_revoked = text.contains("certificate revoked");
        f.check(
            out.status.success() != revoked && seen_revoked == revoked,
            || format!("{client}: openssl verify says {text}"),
        );
        f.check(
            pem_sans(&fs::read(dir.join("tls.crt")).unwrap_or_default()).1
                == ["spiffe://cluster.local/ns/ecommerce/sa/dev-client"],
            || format!("{client}: not the dev-client identity"),
        );
    }
    f.assert_none("development revocation lists");
}
