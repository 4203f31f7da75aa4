//! `components/fips`: the injector gives every pod the proxy's FIPS build. The fixture is
//! production plus the component; these checks inject it with the real injector, configured as
//! its rendered Deployment is.

use serde_json::Value;

use super::support::*;

/// The sidecar images of the injected `target`, with the workload each belongs to.
fn sidecar_images(target: &str) -> Vec<(String, String)> {
    pod_templates(&injected(target))
        .iter()
        .flat_map(|p| {
            p.all_containers()
                .filter(|c| c["name"] == PROXY_CONTAINER)
                .map(|c| (id(p.owner), c["image"].as_str().unwrap_or("").to_owned()))
                .collect::<Vec<_>>()
        })
        .collect()
}

#[test]
fn the_fips_component_puts_every_sidecar_on_the_fips_build_and_changes_nothing_else() {
    let mut f = Failures::default();
    let settings = injector_settings(&render(FIPS_FIXTURE));
    let setting = |name: &str| {
        settings
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    f.check(setting("GEMBOK_INJECTOR_FIPS") == "true", || {
        format!("{FIPS_FIXTURE}: the injector's GEMBOK_INJECTOR_FIPS is not \"true\": {settings:?}")
    });
    let fips_image = setting("GEMBOK_INJECTOR_PROXY_IMAGE_FIPS");
    let fips = sidecar_images(FIPS_FIXTURE);
    // Every ecommerce service (the operators' pods, such as the Jaeger collector's, are injected
    // by the webhook when the operator creates them: `operators.rs`).
    for service in SERVICES {
        let workload = format!("Deployment/{APP_NAMESPACE}/{service}");
        f.check(fips.iter().any(|(w, _)| *w == workload), || {
            format!("{FIPS_FIXTURE}: no sidecar in {workload}: {fips:?}")
        });
    }
    for (workload, image) in &fips {
        f.check(*image == fips_image, || {
            format!("{FIPS_FIXTURE}: {workload} runs {image}, not the FIPS build {fips_image}")
        });
    }
    // Without the component, nobody is on the FIPS build.
    for (workload, image) in sidecar_images("overlays/production") {
        f.check(!image.ends_with("-fips"), || {
            format!("overlays/production: {workload} runs {image}")
        });
    }
    // Nothing but the injector's setting differs from production.
    let normalise = |mut objs: Vec<Value>| {
        for o in objs.iter_mut() {
            if kind(o) != "Deployment" || name(o) != "gembok-injector" {
                continue;
            }
            if let Some(env) = o["spec"]["template"]["spec"]["containers"][0]["env"].as_array_mut()
            {
                env.retain(|e| e["name"] != "GEMBOK_INJECTOR_FIPS");
                env.sort_by_key(|e| e["name"].as_str().unwrap_or("").to_owned());
            }
        }
        objs
    };
    f.check(
        normalise(render(FIPS_FIXTURE)) == normalise(render("overlays/production")),
        || format!("{FIPS_FIXTURE} differs from overlays/production beyond GEMBOK_INJECTOR_FIPS"),
    );
    f.assert_none("components/fips");
}
