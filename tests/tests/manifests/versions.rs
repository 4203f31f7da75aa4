//! Kubernetes versions: the shipped configuration injects native sidecars (Kubernetes 1.29+);
//! `components/classic-sidecars` switches the injector to classic sidecars for 1.25-1.28 and
//! changes nothing else. run.sh validates the rendered and injected output against the schemas of
//! those versions; these checks tie each configuration to the sidecar shape it produces.

use serde_json::Value;

use super::support::*;

fn proxies_in<'a>(p: &'a PodTemplate<'a>, field: &str) -> Vec<&'a Value> {
    arr(&p.spec()[field])
        .iter()
        .filter(|c| c["name"] == PROXY_CONTAINER)
        .collect()
}

/// Injects `target` exactly as its rendered injector is configured and checks the sidecar shape.
fn check_sidecar_shape(target: &str, want_native: bool, f: &mut Failures) {
    let objs = injected(target);
    let mode = injector_settings(&render(target))
        .into_iter()
        .find(|(k, _)| k == "GEMBOK_INJECTOR_SIDECAR_MODE")
        .map(|(_, v)| v)
        .unwrap_or_default();
    let want_mode = if want_native { "native" } else { "classic" };
    f.check(mode == want_mode, || {
        format!(
            "{target}: the injector's GEMBOK_INJECTOR_SIDECAR_MODE is {mode:?}, want {want_mode}"
        )
    });
    let pods: Vec<_> = pod_templates(&objs)
        .into_iter()
        .filter(|p| p.namespace() == APP_NAMESPACE)
        .collect();
    f.check(!pods.is_empty(), || {
        format!("{target}: no ecommerce workloads")
    });
    for p in &pods {
        let init = proxies_in(p, "initContainers");
        let regular = proxies_in(p, "containers");
        let native = init.len() == 1 && regular.is_empty() && init[0]["restartPolicy"] == "Always";
        let classic = regular.len() == 1 && init.is_empty();
        f.check(if want_native { native } else { classic }, || {
            format!(
                "{target}: {}: gembok-proxy is not a {want_mode} sidecar (init {}, containers {})",
                id(p.owner),
                init.len(),
                regular.len()
            )
        });
        // No native sidecar of any kind may remain in the classic configuration (1.25-1.28
        // would drop restartPolicy and run it as a blocking init container).
        if !want_native {
            let native_any = arr(&p.spec()["initContainers"])
                .iter()
                .any(|c| c.get("restartPolicy").is_some());
            f.check(!native_any, || {
                format!(
                    "{target}: {} still has an init container with restartPolicy",
                    id(p.owner)
                )
            });
        }
    }
}

#[test]
fn shipped_configuration_injects_native_sidecars() {
    let mut f = Failures::default();
    for target in TARGETS {
        check_sidecar_shape(target, true, &mut f);
    }
    f.assert_none("native sidecars (Kubernetes 1.29+)");
}

#[test]
fn classic_component_switches_only_the_sidecar_mode() {
    let mut f = Failures::default();
    check_sidecar_shape(CLASSIC_FIXTURE, false, &mut f);
    // The fixture is production plus the component; nothing but the injector's mode differs
    // (the strategic merge may move the variable within env, whose order does not matter here).
    let normalise = |mut objs: Vec<Value>| {
        for o in objs.iter_mut() {
            if kind(o) != "Deployment" || name(o) != "gembok-injector" {
                continue;
            }
            if let Some(env) = o["spec"]["template"]["spec"]["containers"][0]["env"].as_array_mut()
            {
                for e in env.iter_mut() {
                    if e["name"] == "GEMBOK_INJECTOR_SIDECAR_MODE" {
                        e["value"] = Value::from("native");
                    }
                }
                env.sort_by_key(|e| e["name"].as_str().unwrap_or("").to_owned());
            }
        }
        objs
    };
    let classic = normalise(render(CLASSIC_FIXTURE));
    let production = normalise(render("overlays/production"));
    f.check(classic == production, || {
        format!("{CLASSIC_FIXTURE} differs from overlays/production beyond the sidecar mode")
    });
    f.assert_none("classic sidecars (Kubernetes 1.25-1.28)");
}

#[test]
fn readme_states_the_versions_the_tests_validate() {
    let readme = readme();
    let run = std::fs::read_to_string(manifests_dir().join("tests/run.sh")).unwrap();
    let mut f = Failures::default();
    f.check(
        readme.contains(
            "| Kubernetes | 1.29 or later (1.25–1.28 with `components/classic-sidecars`)",
        ),
        || "README prerequisites do not state 1.29+ (1.25-1.28 classic)".into(),
    );
    f.check(!readme.contains("1.24"), || {
        "README still mentions Kubernetes 1.24, which nothing validates".into()
    });
    // run.sh validates every rendered object at 1.25/1.29/1.30, native output at 1.29/1.30 and
    // classic output at 1.25.
    for needle in [
        "for k in 1.30 1.29 1.25",
        "for k in 1.30 1.29; do\n        step \"validate injected $t (native",
        "-k 1.25 \"${out%.yaml}.classic.yaml\"",
        "tests/classic-sidecars",
    ] {
        f.check(run.contains(needle), || {
            format!("manifests/tests/run.sh no longer has `{needle}`")
        });
    }
    f.assert_none("stated Kubernetes versions");
}
