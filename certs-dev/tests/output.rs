//! The real binary: what it writes, where, with which modes; the Kubernetes manifests; `--force`;
//! and bad flags.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context as _, Result, bail};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use gembok_certs_dev::{DevPki, Existing, Options, WriteError, layout};
use serde_yaml_ng::Value;

use common::{certs, ensure, manifest_dir, run, sans};

const REGIONS: [&str; 3] = ["us", "eu", "asia"];
const SERVICES: [&str; 4] = ["product-catalog", "payment", "recommendation", "auth"];

fn generate(cwd: &Path, extra: &[&str]) -> Result<PathBuf> {
    let out = cwd.join("out");
    let mut args = vec!["--out", out.to_str().unwrap()];
    args.extend_from_slice(extra);
    let output = run(&args, cwd)?;
    ensure(output.status.success(), || format!("{output:?}"))?;
    Ok(out)
}

/// Every regular file under `dir`, relative, with its permission bits.
fn walk(dir: &Path) -> Result<BTreeMap<PathBuf, u32>> {
    let mut files = BTreeMap::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for entry in fs::read_dir(&d)? {
            let entry = entry?;
            let meta = entry.metadata()?;
            if meta.is_dir() {
                stack.push(entry.path());
            } else {
                let rel = entry.path().strip_prefix(dir)?.to_owned();
                files.insert(rel, meta.permissions().mode() & 0o777);
            }
        }
    }
    Ok(files)
}

/// The layout table of README.md, expanded for the given regions and services, no clients and
/// no Redis proxy certificate.
fn readme_layout(regions: &[&str], services: &[&str]) -> Result<BTreeMap<PathBuf, u32>> {
    readme_layout_with(regions, services, &[], &[], false)
}

/// The same with clients and revoked clients, and with the `redis-proxy` lines when `redis` is
/// set. Every service is in the default namespace.
fn readme_layout_with(
    regions: &[&str],
    services: &[&str],
    clients: &[&str],
    revoked: &[&str],
    redis: bool,
) -> Result<BTreeMap<PathBuf, u32>> {
    let readme = fs::read_to_string(manifest_dir().join("README.md"))?;
    let block = readme
        .split("<!-- layout:begin -->")
        .nth(1)
        .and_then(|rest| rest.split("<!-- layout:end -->").next())
        .context("README.md has no layout block")?;
    let mut files = BTreeMap::new();
    for line in block
        .lines()
        .filter(|l| !l.starts_with("```") && !l.trim().is_empty())
    {
        let mut cols = line.split_whitespace();
        let (Some(pattern), Some(mode)) = (cols.next(), cols.next()) else {
            bail!("README layout line without a mode: {line:?}");
        };
        let mode = u32::from_str_radix(mode, 8).with_context(|| format!("mode in {line:?}"))?;
        if pattern.contains("redis-proxy") && !redis {
            continue;
        }
        let mut paths = vec![pattern.to_owned()];
        for (placeholder, values) in [
            ("<region>", regions),
            ("<service>", services),
            ("<client>", clients),
            ("<revoked>", revoked),
            ("<namespace>", &["ecommerce"]),
        ] {
            if pattern.contains(placeholder) {
                paths = paths
                    .iter()
                    .flat_map(|p| values.iter().map(move |v| p.replace(placeholder, v)))
                    .collect();
            }
        }
        for p in paths {
            files.insert(PathBuf::from(p), mode);
        }
    }
    Ok(files)
}

#[test]
fn layout_matches_the_readme() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let out = generate(tmp.path(), &[])?;
    let expected = readme_layout(&REGIONS, &SERVICES)?;
    assert_eq!(
        expected.len(),
        4 + 3 * (3 + 4 * 3 + 3 + 4 + 3),
        "README table size"
    );
    assert_eq!(walk(&out)?, expected);

    // And for non-default lists, so the table's placeholders mean what they say.
    let other = tmp.path().join("other");
    fs::create_dir(&other)?;
    let out = generate(&other, &["--regions=lab", "--services=cart,orders"])?;
    assert_eq!(walk(&out)?, readme_layout(&["lab"], &["cart", "orders"])?);

    // With clients and a Redis proxy certificate.
    let more = tmp.path().join("more");
    fs::create_dir(&more)?;
    let out = generate(
        &more,
        &[
            "--regions=lab",
            "--clients=alice,bob",
            "--revoked-clients=bob",
            "--redis-proxy-names=db.redis.svc",
        ],
    )?;
    assert_eq!(
        walk(&out)?,
        readme_layout_with(&["lab"], &SERVICES, &["alice", "bob"], &["bob"], true)?
    );
    Ok(())
}

#[test]
fn the_redis_proxy_secret_has_redis_shape_and_decodes_to_the_pem_files() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let out = generate(
        tmp.path(),
        &[
            "--regions=dev",
            "--redis-proxy-names=a.redis.svc,b.redis.svc",
        ],
    )?;
    let doc = yaml(&layout::k8s_dir(&out, "dev").join("redis-proxy-tls.yaml"))?;
    assert_eq!(str_at(&doc, &["kind"]), Some("Secret"));
    assert_eq!(str_at(&doc, &["type"]), Some("Opaque"));
    assert_eq!(str_at(&doc, &["metadata", "name"]), Some("redis-proxy-tls"));
    assert_eq!(str_at(&doc, &["metadata", "namespace"]), Some("redis"));
    assert_eq!(
        str_at(&doc, &["metadata", "labels", "gembok.io/development-only"]),
        Some("true")
    );
    let data = doc
        .get("data")
        .and_then(Value::as_mapping)
        .context("data")?;
    let decode = |key: &str| -> Result<Vec<u8>> {
        let b64 = data
            .get(key)
            .and_then(Value::as_str)
            .context(key.to_owned())?;
        Ok(STANDARD.decode(b64)?)
    };
    assert_eq!(data.len(), 3, "exactly name, certificate, key");
    assert_eq!(decode("name")?, b"proxy");
    let dir = layout::cert_dir(&out, "dev", "redis-proxy");
    assert_eq!(decode("certificate")?, fs::read(dir.join("tls.crt"))?);
    assert_eq!(decode("key")?, fs::read(dir.join("tls.key"))?);
    let kustomization = yaml(&layout::k8s_dir(&out, "dev").join("kustomization.yaml"))?;
    assert!(
        kustomization["resources"]
            .as_sequence()
            .context("resources")?
            .iter()
            .any(|r| r.as_str() == Some("redis-proxy-tls.yaml")),
        "the kustomization lists the Redis Secret"
    );
    Ok(())
}

#[test]
fn default_output_directory_is_certs_dev_out() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let output = run(&["--regions=us", "--services=payment"], tmp.path())?;
    ensure(output.status.success(), || format!("{output:?}"))?;
    let stdout = String::from_utf8(output.stdout)?;
    assert!(stdout.contains("DEVELOPMENT ONLY"), "{stdout}");
    assert!(
        tmp.path()
            .join("certs-dev/out/us/payment/tls.crt")
            .is_file()
    );
    // The default is git-ignored in this crate.
    let ignore = fs::read_to_string(manifest_dir().join(".gitignore"))?;
    assert!(ignore.lines().any(|l| l.trim() == "/out/"), "{ignore}");
    Ok(())
}

#[test]
fn pem_files_hold_what_they_should() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let out = generate(tmp.path(), &[])?;
    let root = fs::read_to_string(out.join("root/ca.crt"))?;
    assert_eq!(common::certs(&root)?.len(), 1);
    assert!(
        fs::read_to_string(out.join("root/ca.key"))?.starts_with("-----BEGIN PRIVATE KEY-----")
    );
    for region in REGIONS {
        let inter = fs::read_to_string(layout::intermediate_dir(&out, region).join("tls.crt"))?;
        assert_eq!(common::certs(&inter)?.len(), 1);
        for svc in SERVICES.iter().copied().chain(["gembok-injector"]) {
            let dir = layout::cert_dir(&out, region, svc);
            let chain = common::certs(&fs::read_to_string(dir.join("tls.crt"))?)?;
            assert_eq!(chain.len(), 2, "{region}/{svc}");
            assert_eq!(
                chain[1],
                common::certs(&inter)?[0],
                "{region}/{svc}: second is the intermediate"
            );
            assert_eq!(
                fs::read_to_string(dir.join("ca.crt"))?,
                root,
                "{region}/{svc}"
            );
        }
    }
    let marker = fs::read_to_string(out.join(layout::MARKER))?;
    assert!(marker.contains("never use in production"), "{marker}");
    let regenerate = format!(
        "cargo run -p gembok-certs-dev -- --out {} --force\n",
        out.display()
    );
    assert!(marker.contains(&regenerate), "{marker}");
    Ok(())
}

fn yaml(path: &Path) -> Result<Value> {
    let text = fs::read_to_string(path).with_context(|| path.display().to_string())?;
    ensure(
        text.starts_with(
            "# DEVELOPMENT ONLY — generated by gembok-certs-dev, never use in production",
        ),
        || format!("{}: no warning header", path.display()),
    )?;
    Ok(serde_yaml_ng::from_str(&text)?)
}

fn str_at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    path.iter().try_fold(v, |v, k| v.get(*k))?.as_str()
}

#[test]
fn secrets_decode_back_to_the_pem_files() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let out = generate(tmp.path(), &[])?;
    for region in REGIONS {
        let k8s = layout::k8s_dir(&out, region);
        let mut secrets = Vec::new();
        for (name, app, ns) in SERVICES
            .iter()
            .map(|s| (format!("{s}-gembok-tls"), *s, "ecommerce"))
            .chain([(
                "gembok-injector-tls".to_owned(),
                "gembok-injector",
                "gembok-system",
            )])
        {
            let file = format!("{name}.yaml");
            let doc = yaml(&k8s.join(&file))?;
            assert_eq!(str_at(&doc, &["apiVersion"]), Some("v1"));
            assert_eq!(str_at(&doc, &["kind"]), Some("Secret"));
            assert_eq!(str_at(&doc, &["type"]), Some("kubernetes.io/tls"));
            assert_eq!(str_at(&doc, &["metadata", "name"]), Some(name.as_str()));
            assert_eq!(str_at(&doc, &["metadata", "namespace"]), Some(ns));
            let labels = ["metadata", "labels"];
            let label = |k: &str| str_at(&doc, &[labels[0], labels[1], k]);
            assert_eq!(label("gembok.io/development-only"), Some("true"));
            assert_eq!(label("gembok.io/region"), Some(region));
            assert_eq!(label("app.kubernetes.io/name"), Some(app));
            assert_eq!(
                label("app.kubernetes.io/managed-by"),
                Some("gembok-certs-dev")
            );
            assert!(
                str_at(&doc, &["metadata", "annotations", "gembok.io/warning"])
                    .is_some_and(|w| w.contains("DEVELOPMENT ONLY")),
            );
            let data = doc
                .get("data")
                .and_then(Value::as_mapping)
                .context("data")?;
            assert_eq!(data.len(), 3, "{file}: exactly tls.crt, tls.key, ca.crt");
            let dir = layout::cert_dir(&out, region, app);
            for key in ["tls.crt", "tls.key", "ca.crt"] {
                let b64 = data.get(key).and_then(Value::as_str).context(key)?;
                let decoded = STANDARD.decode(b64)?;
                assert_eq!(decoded, fs::read(dir.join(key))?, "{region}/{file} {key}");
            }
            secrets.push(file);
        }
        // The revocation lists' ConfigMap holds crl/ca.crl as it is on disk.
        let file = "gembok-crl.ecommerce.yaml".to_owned();
        let doc = yaml(&k8s.join(&file))?;
        assert_eq!(str_at(&doc, &["kind"]), Some("ConfigMap"));
        assert_eq!(str_at(&doc, &["metadata", "name"]), Some("gembok-crl"));
        assert_eq!(str_at(&doc, &["metadata", "namespace"]), Some("ecommerce"));
        assert_eq!(
            str_at(&doc, &["metadata", "labels", "gembok.io/development-only"]),
            Some("true")
        );
        assert_eq!(
            str_at(&doc, &["data", "ca.crl"]).map(str::as_bytes),
            Some(&fs::read(layout::crl_file(&out))?[..]),
            "{region}: ca.crl"
        );
        secrets.push(file);
        let kustomization = yaml(&k8s.join("kustomization.yaml"))?;
        assert_eq!(str_at(&kustomization, &["kind"]), Some("Kustomization"));
        let resources: BTreeSet<&str> = kustomization["resources"]
            .as_sequence()
            .context("resources")?
            .iter()
            .filter_map(Value::as_str)
            .collect();
        assert_eq!(resources, secrets.iter().map(String::as_str).collect());
    }
    Ok(())
}

/// A service in another namespace (`NAMESPACE/NAME`, e.g. a tracing collector): its Secret
/// and its names are in that namespace, the others stay in `--namespace`.
#[test]
fn a_service_in_another_namespace_gets_its_secret_and_names_there() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let out = generate(
        tmp.path(),
        &["--regions=dev", "--services=payment,auth,monitoring/jaeger"],
    )?;
    let k8s = layout::k8s_dir(&out, "dev");
    for (app, ns) in [("payment", "ecommerce"), ("jaeger", "monitoring")] {
        let doc = yaml(&k8s.join(format!("{app}-gembok-tls.yaml")))?;
        assert_eq!(str_at(&doc, &["metadata", "namespace"]), Some(ns));
        assert_eq!(
            str_at(&doc, &["metadata", "labels", "app.kubernetes.io/name"]),
            Some(app)
        );
        let pem = fs::read_to_string(layout::cert_dir(&out, "dev", app).join("tls.crt"))?;
        let s = sans(&certs(&pem)?[0])?;
        assert_eq!(
            s.dns,
            [
                format!("{app}.{ns}.svc.cluster.local"),
                format!("{app}.{ns}.svc")
            ]
        );
        assert_eq!(s.uri, [format!("spiffe://cluster.local/ns/{ns}/sa/{app}")]);
        // The revocation lists reach that namespace too, once.
        let doc = yaml(&k8s.join(format!("gembok-crl.{ns}.yaml")))?;
        assert_eq!(str_at(&doc, &["metadata", "namespace"]), Some(ns));
    }
    // Two services in ecommerce, one in monitoring: one ConfigMap for each namespace.
    let kustomization = fs::read_to_string(k8s.join("kustomization.yaml"))?;
    let maps: Vec<&str> = kustomization
        .lines()
        .filter(|l| l.contains("gembok-crl."))
        .collect();
    assert_eq!(
        maps,
        [
            "- gembok-crl.ecommerce.yaml",
            "- gembok-crl.monitoring.yaml"
        ]
    );
    Ok(())
}

#[test]
fn kustomize_renders_and_the_manifests_validate() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let out = generate(tmp.path(), &[])?;
    let validator = manifest_dir().join("../../shared/k8s/validate-manifests");
    ensure(validator.is_file(), || {
        format!(
            "{} missing: ../shared must sit beside the checkout",
            validator.display()
        )
    })?;
    for region in REGIONS {
        let rendered = Command::new("kubectl")
            .args(["kustomize"])
            .arg(layout::k8s_dir(&out, region))
            .output()
            .context("kubectl kustomize")?;
        ensure(rendered.status.success(), || format!("{rendered:?}"))?;
        let docs: Vec<Value> = serde_yaml_ng::Deserializer::from_slice(&rendered.stdout)
            .map(serde::Deserialize::deserialize)
            .collect::<Result<_, _>>()?;
        assert_eq!(
            docs.len(),
            6,
            "{region}: four service Secrets, the injector's, the revocation lists' ConfigMap"
        );

        let mut child = Command::new("python3")
            .arg(&validator)
            .arg("-")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        std::io::Write::write_all(&mut child.stdin.take().unwrap(), &rendered.stdout)?;
        let result = child.wait_with_output()?;
        let stderr = String::from_utf8_lossy(&result.stderr);
        ensure(result.status.success(), || {
            format!(
                "{region}: validate-manifests failed (run certs-dev/tests/setup.sh if modules are missing):\n{}{stderr}",
                String::from_utf8_lossy(&result.stdout)
            )
        })?;
        assert!(stderr.contains("6 object(s), 0 error(s)"), "{stderr}");
    }
    Ok(())
}

#[test]
fn existing_output_is_kept_without_force_and_replaced_with_it() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let out = generate(tmp.path(), &[])?;
    let root_before = fs::read(out.join("root/ca.crt"))?;

    let again = run(&["--out", out.to_str().unwrap()], tmp.path())?;
    assert_eq!(again.status.code(), Some(73), "{again:?}");
    let stderr = String::from_utf8(again.stderr)?;
    assert!(stderr.contains("--force"), "{stderr}");
    assert_eq!(
        fs::read(out.join("root/ca.crt"))?,
        root_before,
        "untouched without --force"
    );

    // --force with fewer regions: a fresh PKI, and nothing stale left behind.
    generate(tmp.path(), &["--force", "--regions=us"])?;
    assert_ne!(fs::read(out.join("root/ca.crt"))?, root_before, "new root");
    assert!(
        !out.join("eu").exists() && !out.join("k8s/eu").exists(),
        "stale region removed"
    );
    assert_eq!(walk(&out)?, readme_layout(&["us"], &SERVICES)?);
    let leftovers: Vec<_> = fs::read_dir(tmp.path())?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<Result<_, _>>()?;
    assert_eq!(leftovers, ["out"], "no staging directories left behind");
    Ok(())
}

#[test]
fn force_never_replaces_a_directory_it_did_not_write() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let precious = tmp.path().join("out");
    fs::create_dir(&precious)?;
    fs::write(precious.join("thesis.txt"), "do not delete")?;
    for extra in [&[][..], &["--force"][..]] {
        let mut args = vec!["--out", precious.to_str().unwrap()];
        args.extend_from_slice(extra);
        let output = run(&args, tmp.path())?;
        assert_eq!(output.status.code(), Some(73), "{extra:?}: {output:?}");
        assert_eq!(
            fs::read_to_string(precious.join("thesis.txt"))?,
            "do not delete"
        );
        assert_eq!(fs::read_dir(&precious)?.count(), 1);
    }
    let output = run(
        &[
            "--force",
            "--out",
            precious.join("thesis.txt").to_str().unwrap(),
        ],
        tmp.path(),
    )?;
    assert_eq!(output.status.code(), Some(73), "{output:?}");
    assert!(String::from_utf8(output.stderr)?.contains("not a directory"));

    // An empty existing directory holds nothing to lose.
    let empty = tmp.path().join("empty");
    fs::create_dir(&empty)?;
    let output = run(&["--out", empty.to_str().unwrap()], tmp.path())?;
    ensure(output.status.success(), || format!("{output:?}"))?;
    assert!(empty.join(layout::MARKER).is_file());
    Ok(())
}

#[test]
fn library_write_reports_the_same_conditions() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let pki = DevPki::generate(&Options {
        regions: vec!["eu".into()],
        ..Options::default()
    })?;
    let out = tmp.path().join("nested/dir/out");
    let written = pki.write(&out, Existing::Refuse)?;
    let on_disk: Vec<PathBuf> = walk(&out)?.into_keys().collect();
    assert_eq!(
        written.files, on_disk,
        "Written lists exactly the files on disk, sorted"
    );
    assert!(matches!(
        pki.write(&out, Existing::Refuse),
        Err(WriteError::Exists(_))
    ));
    pki.write(&out, Existing::Replace)?;
    Ok(())
}

#[test]
fn write_cert_dir_replaces_files_with_the_right_modes() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let pki = DevPki::generate(&Options {
        regions: vec!["eu".into()],
        services: vec!["payment".into()],
        ..Options::default()
    })?;
    let leaf = pki.region("eu").unwrap().service("payment").unwrap();
    let dir = tmp.path().join("certs");
    leaf.write_cert_dir(&dir)?;
    let second = pki.region("eu").unwrap().injector.clone();
    second.write_cert_dir(&dir)?;
    assert_eq!(fs::read_to_string(dir.join("tls.crt"))?, second.chain_pem);
    assert_eq!(fs::read_to_string(dir.join("tls.key"))?, second.key_pem);
    let modes = walk(&dir)?;
    let expect: BTreeMap<PathBuf, u32> =
        [("ca.crt", 0o644), ("tls.crt", 0o644), ("tls.key", 0o600)]
            .into_iter()
            .map(|(f, m)| (PathBuf::from(f), m))
            .collect();
    assert_eq!(modes, expect, "no temporary files left, modes exact");
    Ok(())
}

#[test]
fn bad_flags_exit_64_listing_every_problem_and_write_nothing() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let out = tmp.path().join("out");
    let output = run(
        &[
            "--out",
            out.to_str().unwrap(),
            "--bogus",
            "--regions=US,eu,eu",
            "--services=../etc",
            "--namespace=Shop",
            "--trust-domain=bad domain",
            "--days=abc",
            "--ca-days=0",
        ],
        tmp.path(),
    )?;
    assert_eq!(output.status.code(), Some(64), "{output:?}");
    let stderr = String::from_utf8(output.stderr)?;
    let problems: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("  "))
        .map(str::trim)
        .collect();
    let flags: Vec<&str> = problems
        .iter()
        .map(|p| p.split(':').next().unwrap())
        .collect();
    assert_eq!(
        flags,
        [
            "--bogus",
            "--days",
            "--regions",
            "--regions",
            "--services",
            "--namespace",
            "--trust-domain",
            "--ca-days",
        ],
        "{stderr}"
    );
    assert!(!out.exists(), "nothing written on bad flags");
    assert!(output.stdout.is_empty());
    Ok(())
}

#[test]
fn help_and_version_exit_0() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let help = run(&["--help"], tmp.path())?;
    assert!(help.status.success(), "{help:?}");
    let text = String::from_utf8(help.stdout)?;
    for needle in [
        "DEVELOPMENT ONLY",
        "--force",
        "--regions",
        "GEMBOK_CERTS_DEV_OUT",
        "[default: us,eu,asia]",
    ] {
        assert!(text.contains(needle), "--help lacks {needle}: {text}");
    }
    let version = run(&["--version"], tmp.path())?;
    assert!(version.status.success());
    assert!(String::from_utf8(version.stdout)?.starts_with("gembok-certs-dev "));
    Ok(())
}

/// The command every manifest and the marker name writes the same output again: same flags, same
/// files with the same modes (a new PKI: each run's CAs carry an id of their own).
#[test]
fn the_regenerate_command_written_in_the_output_reproduces_it() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let out = generate(
        tmp.path(),
        &[
            "--regions",
            "dev",
            "--days",
            "30",
            "--clients",
            "dev-client",
        ],
    )?;
    let secret = fs::read_to_string(
        layout::k8s_dir(&out, "dev").join(layout::secret_file(&layout::secret_name("payment"))),
    )?;
    let line = secret
        .lines()
        .find_map(|l| l.strip_prefix("# Regenerate (from where it was run): "))
        .context("no regenerate line")?;
    let marker = fs::read_to_string(out.join(layout::MARKER))?;
    assert!(marker.contains(line), "{marker}");
    let words: Vec<&str> = line
        .strip_prefix("cargo run -p gembok-certs-dev -- ")
        .context(line.to_owned())?
        .split(' ')
        .collect();
    let expected_out = out.to_str().unwrap();
    assert_eq!(
        words,
        [
            "--out",
            expected_out,
            "--force",
            "--regions",
            "dev",
            "--days",
            "30",
            "--clients",
            "dev-client"
        ]
    );
    let before = walk(&out)?;
    let again = run(&words, tmp.path())?;
    assert!(again.status.success(), "{again:?}");
    assert_eq!(walk(&out)?, before);
    Ok(())
}

#[test]
fn directories_are_not_writable_by_others_whatever_the_umask() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let out = tmp.path().join("a/b/out");
    let status = Command::new("sh")
        .arg("-c")
        .arg("umask 000 && exec \"$0\" --out \"$1\" --regions us --services payment")
        .arg(env!("CARGO_BIN_EXE_gembok-certs-dev"))
        .arg(&out)
        .status()?;
    assert!(status.success());
    // What it creates; the parents on the way are the caller's and follow the umask.
    let mut stack = vec![out];
    let mut seen = 0;
    while let Some(dir) = stack.pop() {
        let mode = fs::metadata(&dir)?.permissions().mode() & 0o777;
        assert_eq!(mode, 0o755, "{}", dir.display());
        seen += 1;
        for entry in fs::read_dir(&dir)? {
            let entry = entry?;
            if entry.file_type()?.is_dir() {
                stack.push(entry.path());
            }
        }
    }
    assert!(seen >= 8, "only {seen} directories");
    Ok(())
}

#[test]
fn a_symlinked_output_directory_is_refused_saying_so() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let real = generate(tmp.path(), &["--regions", "us"])?;
    let link = tmp.path().join("link");
    std::os::unix::fs::symlink(&real, &link)?;
    let out = run(&["--out", link.to_str().unwrap(), "--force"], tmp.path())?;
    assert_eq!(out.status.code(), Some(73), "{out:?}");
    let stderr = String::from_utf8(out.stderr)?;
    assert!(stderr.contains("is a symbolic link"), "{stderr}");
    assert!(fs::symlink_metadata(&link)?.file_type().is_symlink());
    Ok(())
}
