//! Static checks of the Dockerfile (no container engine here): multi-stage, every image built
//! from the workspace (the proxy also as its FIPS build), distroless runtime, numeric non-root USER in every runtime stage,
//! exec-form entrypoints, and a build context that leaves out build outputs and secrets.

use std::fs;

use super::support::*;

struct Stage {
    base: String,
    name: String,
    lines: Vec<String>,
}

/// Logical lines (continuations joined, comments dropped) grouped by FROM.
fn stages(text: &str) -> Vec<Stage> {
    let mut logical = Vec::new();
    let mut cur = String::new();
    for raw in text.lines() {
        let line = raw.trim();
        if line.starts_with('#') || line.is_empty() && cur.is_empty() {
            continue;
        }
        match line.strip_suffix('\\') {
            Some(part) => cur.push_str(part),
            None => {
                cur.push_str(line);
                logical.push(std::mem::take(&mut cur));
            }
        }
    }
    let mut out: Vec<Stage> = Vec::new();
    for l in logical {
        let mut words = l.split_whitespace();
        if words.next().is_some_and(|w| w.eq_ignore_ascii_case("FROM")) {
            let rest: Vec<&str> = words.filter(|w| !w.starts_with("--")).collect();
            let name = match rest.as_slice() {
                [_, as_, n] if as_.eq_ignore_ascii_case("AS") => n.to_string(),
                _ => String::new(),
            };
            out.push(Stage {
                base: rest.first().unwrap_or(&"").to_string(),
                name,
                lines: vec![],
            });
        } else if let Some(s) = out.last_mut() {
            s.lines.push(l);
        }
    }
    out
}

fn instr<'a>(s: &'a Stage, word: &str) -> Vec<&'a str> {
    s.lines
        .iter()
        .filter_map(|l| {
            let (w, rest) = l.split_once(char::is_whitespace)?;
            w.eq_ignore_ascii_case(word).then_some(rest.trim())
        })
        .collect()
}

#[test]
fn dockerfile_builds_both_images_as_non_root_distroless() {
    let text =
        fs::read_to_string(repo().join("Dockerfile")).expect("Dockerfile at the repository root");
    let all = stages(&text);
    let mut f = Failures::default();
    f.check(all.len() >= 3, || {
        format!(
            "{} stages; want a build stage and two runtime stages",
            all.len()
        )
    });
    let build = all.iter().find(|s| s.name == "build");
    // Each binary from a `cargo build` of its own package only: built together, cargo unifies
    // their dependencies' features and the proxy carries what only the injector needs.
    let cargo_builds: Vec<&str> = build
        .map(|b| instr(b, "RUN"))
        .unwrap_or_default()
        .into_iter()
        .flat_map(|r| r.split("&&"))
        .filter(|c| c.contains("cargo build"))
        .collect();
    for package in ["gembok-proxy", "gembok-injector"] {
        f.check(
            cargo_builds.iter().any(|c| {
                c.contains("--release")
                    && c.contains("--locked")
                    && c.split_whitespace().filter(|w| *w == "-p").count() == 1
                    && c.contains(&format!("-p {package}"))
            }),
            || format!("the build stage does not build {package} on its own with --release --locked: {cargo_builds:?}"),
        );
    }
    // The FIPS build: the proxy alone, with the feature, in a target directory of its own.
    let fips_builds: Vec<&str> = all
        .iter()
        .filter(|s| s.name == "build-fips")
        .flat_map(|b| instr(b, "RUN"))
        .flat_map(|r| r.split("&&"))
        .filter(|c| c.contains("cargo build"))
        .collect();
    f.check(
        fips_builds.len() == 1
            && fips_builds.iter().all(|c| {
                c.contains("--release")
                    && c.contains("--locked")
                    && c.contains("-p gembok-proxy --features fips")
                    && c.contains("--target-dir target/fips")
            }),
        || {
            format!(
                "the build-fips stage does not build the proxy's FIPS build alone: {fips_builds:?}"
            )
        },
    );
    for (target, binary, from, ports) in [
        ("gembok-proxy", "gembok-proxy", "build", &["15700"][..]),
        (
            "gembok-proxy-fips",
            "gembok-proxy",
            "build-fips",
            &["15700"][..],
        ),
        (
            "gembok-injector",
            "gembok-injector",
            "build",
            &["8443", "15780"][..],
        ),
    ] {
        let Some(s) = all.iter().find(|s| s.name == target) else {
            f.push(format!("no stage named {target}"));
            continue;
        };
        f.check(
            s.base.starts_with("gcr.io/distroless/") || s.base == "scratch",
            || format!("{target}: runtime base {} is not distroless/static", s.base),
        );
        f.check(!s.base.contains(":latest") && s.base.contains(':'), || {
            format!("{target}: base image {} is not pinned", s.base)
        });
        let users = instr(s, "USER");
        let last = users.last().copied().unwrap_or("");
        let uid = last.split(':').next().unwrap_or("");
        f.check(uid.parse::<u32>().is_ok_and(|u| u != 0), || {
            format!("{target}: USER {last:?} is not a numeric non-root uid")
        });
        f.check(
            !users
                .iter()
                .any(|u| u.starts_with("root") || u.starts_with("0")),
            || format!("{target}: switches to root"),
        );
        let copies = instr(s, "COPY");
        f.check(
            copies.iter().any(|c| {
                c.split_whitespace().any(|w| w == format!("--from={from}")) && c.contains(binary)
            }),
            || format!("{target}: does not copy {binary} from the {from} stage"),
        );
        f.check(instr(s, "RUN").is_empty(), || {
            format!("{target}: runtime stage runs commands (distroless has no shell)")
        });
        let entry = instr(s, "ENTRYPOINT");
        f.check(
            entry.len() == 1
                && entry[0].starts_with('[')
                && entry[0].contains(&format!("/usr/local/bin/{binary}")),
            || format!("{target}: ENTRYPOINT {entry:?} is not exec form of {binary}"),
        );
        let exposed = instr(s, "EXPOSE").join(" ");
        for p in ports {
            f.check(exposed.split_whitespace().any(|e| e == *p), || {
                format!("{target}: does not EXPOSE {p}")
            });
        }
    }
    let ignore = fs::read_to_string(repo().join(".dockerignore")).expect(".dockerignore");
    for must in ["target", ".git"] {
        f.check(ignore.lines().any(|l| l.trim() == must), || {
            format!(".dockerignore does not exclude {must}")
        });
    }
    // The images the manifests run are the ones this Dockerfile builds.
    let objs = render("overlays/production");
    let inj = find(&objs, "Deployment", "gembok-system", "gembok-injector").map(|d| {
        d["spec"]["template"]["spec"]["containers"][0]["image"]
            .as_str()
            .unwrap_or("")
            .to_owned()
    });
    f.check(
        inj.is_some_and(|i| i.starts_with("ghcr.io/gembok/gembok-injector:")),
        || "the injector Deployment does not run ghcr.io/gembok/gembok-injector".into(),
    );
    f.assert_none("Dockerfile");
}
