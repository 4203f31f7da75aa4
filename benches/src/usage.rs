//! One check of every value on the command line, after clap has read it and before anything is
//! installed, started or measured: every problem is listed at once and the run exits 64
//! ([`Usage`]). Nothing here changes the machine; the output directories are created only
//! once every value passed ([`create_dirs`]).

use std::collections::BTreeSet;
use std::fmt;
use std::io::ErrorKind;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use crate::contender::{Kind, Variant};

/// Bad usage: every problem found, one a line, each starting with the flag it is about. `main`
/// prints them and exits 64.
#[derive(Debug)]
pub struct Usage(pub Vec<String>);

impl fmt::Display for Usage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.join("\n"))
    }
}

impl std::error::Error for Usage {}

/// The most `--workers` a run takes: haproxy's `nbthread` stops at 64 without thread groups,
/// and nginx would fork that many worker processes per side.
pub const MAX_WORKERS: usize = 64;

/// Collects the problems of one command line.
#[derive(Debug, Default)]
pub struct Problems(pub Vec<String>);

impl Problems {
    pub fn push(&mut self, problem: impl Into<String>) {
        self.0.push(problem.into());
    }

    /// `Ok(value)` if nothing was found, else every problem as a [`Usage`] error.
    pub fn into_result<T>(self, value: T) -> Result<T, Usage> {
        if self.0.is_empty() {
            Ok(value)
        } else {
            Err(Usage(self.0))
        }
    }
}

/// A count flag that must be at least 1 (`--reps 0` is no run at all, not one repetition).
pub fn at_least_one(p: &mut Problems, flag: &str, value: Option<u64>) {
    if value == Some(0) {
        p.push(format!("{flag} 0: must be at least 1"));
    }
}

/// `--workers N`: 1 to [`MAX_WORKERS`].
pub fn workers(p: &mut Problems, value: Option<usize>) {
    match value {
        Some(0) => p.push("--workers 0: must be at least 1"),
        Some(n) if n > MAX_WORKERS => p.push(format!(
            "--workers {n}: at most {MAX_WORKERS} (haproxy's nbthread limit; nginx forks that many \
             processes per side)"
        )),
        _ => {}
    }
}

/// `--memory-steps`: every count at least 1.
pub fn memory_steps(p: &mut Problems, steps: &[usize]) {
    if steps.contains(&0) {
        let list: Vec<String> = steps.iter().map(usize::to_string).collect();
        p.push(format!(
            "--memory-steps {}: every step must hold at least 1 connection",
            list.join(",")
        ));
    }
}

/// `--contenders`: every name known, none twice. Empty when none was given.
pub fn contenders(p: &mut Problems, names: &[String]) -> Vec<Kind> {
    let mut kinds = Vec::new();
    let mut unknown = Vec::new();
    let mut twice = BTreeSet::new();
    for name in names {
        match Kind::parse(name) {
            Some(k) if kinds.contains(&k) => {
                twice.insert(name.clone());
            }
            Some(k) => kinds.push(k),
            None => unknown.push(format!("`{name}`")),
        }
    }
    if !unknown.is_empty() {
        p.push(format!(
            "--contenders: unknown contender(s) {}; known: {}",
            unknown.join(", "),
            Kind::ALL.map(Kind::id).join(", ")
        ));
    }
    for name in twice {
        p.push(format!(
            "--contenders: {name} is named more than once (it would be measured as one row)"
        ));
    }
    kinds
}

/// Why `path` cannot be run as a program, if it cannot.
fn not_executable(path: &Path) -> Option<String> {
    match std::fs::metadata(path) {
        Err(e) if e.kind() == ErrorKind::NotFound => Some("does not exist".into()),
        Err(e) => Some(format!("cannot be read: {e}")),
        Ok(m) if !m.is_file() => Some("is not a file".into()),
        Ok(m) if m.permissions().mode() & 0o111 == 0 => Some("is not executable".into()),
        Ok(_) => None,
    }
}

/// `--gembok-bin` (or the default next to this binary, `given` false).
pub fn gembok_bin(p: &mut Problems, path: &Path, given: bool) {
    if let Some(why) = not_executable(path) {
        if given {
            p.push(format!("--gembok-bin {}: {why}", path.display()));
        } else {
            p.push(format!(
                "--gembok-bin (default {}): {why}; build it first (cargo build --release -p \
                 gembok-proxy) or pass --gembok-bin",
                path.display()
            ));
        }
    }
}

/// `--variant NAME=BINARY[,ARG...]` specs: the form, the binary, and names that are no other
/// contender's (`aws-lc-rs` would be reported as gembok-aws-lc-rs, merged into the built-in's
/// row).
pub fn variants(p: &mut Problems, specs: &[String]) -> Vec<Variant> {
    let mut out: Vec<Variant> = Vec::new();
    for spec in specs {
        let Some((name, rest)) = spec.split_once('=') else {
            p.push(format!("--variant {spec}: expected NAME=BINARY[,ARG...]"));
            continue;
        };
        let name_ok = !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
        if !name_ok {
            p.push(format!(
                "--variant {spec}: NAME `{name}` must be letters, digits, '-', '_' or '.'"
            ));
        }
        let mut parts = rest.split(',');
        let bin = PathBuf::from(parts.next().unwrap_or_default());
        let mut ok = name_ok;
        if bin.as_os_str().is_empty() {
            p.push(format!("--variant {spec}: no BINARY after `=`"));
            ok = false;
        } else if let Some(why) = not_executable(&bin) {
            p.push(format!("--variant {spec}: {} {why}", bin.display()));
            ok = false;
        }
        let id = format!("gembok-{name}");
        if name_ok {
            if Kind::parse(&id).is_some() {
                p.push(format!(
                    "--variant {spec}: {id} is a built-in contender already; give the variant \
                     another NAME"
                ));
                ok = false;
            } else if out.iter().any(|v| v.id == id) {
                p.push(format!(
                    "--variant {spec}: {id} is named by an earlier --variant already"
                ));
                ok = false;
            }
        }
        if ok {
            out.push(Variant {
                id: Box::leak(id.into_boxed_str()),
                bin,
                args: parts.map(str::to_owned).collect(),
            });
        }
    }
    out
}

/// `--congestion`: `host`, a congestion control the kernel has loaded, or one of its modules
/// (`tcp_NAME`, loaded when the run sets it).
pub fn congestion(p: &mut Problems, name: &str) {
    if name == crate::netns::HOST {
        return;
    }
    if let Err(why) = crate::netns::available(name) {
        p.push(format!("--congestion {name}: {why}"));
    }
}

const EXISTS_NOT_DIR: &str = "exists and is not a directory";

/// Why directory `dir` could not be created or written, if it could not, without creating it:
/// it, or the nearest of its ancestors that exists, must be a directory.
pub fn dir_problem(dir: &Path) -> Option<String> {
    let mut at = dir;
    loop {
        let here = if at.as_os_str().is_empty() {
            Path::new(".")
        } else {
            at
        };
        match std::fs::metadata(here) {
            Ok(m) if m.is_dir() => return None,
            Ok(_) if at == dir => return Some(EXISTS_NOT_DIR.into()),
            Ok(_) => return Some(format!("{} is not a directory", at.display())),
            Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::NotADirectory) => {
                match at.parent() {
                    Some(parent) => at = parent,
                    None => return None,
                }
            }
            Err(e) => return Some(format!("{}: {e}", at.display())),
        }
    }
}

/// An output directory flag (`--out`, `--profile`): `label` names the flag and, when the
/// directory is a default, says so.
pub fn out_dir(p: &mut Problems, label: &str, dir: &Path) {
    if let Some(why) = dir_problem(dir) {
        p.push(format!("{label} {}: {why}", dir.display()));
    }
}

/// `--report FILE`: not a directory, and its directory can be made.
pub fn report_file(p: &mut Problems, label: &str, file: &Path) {
    if file.is_dir() {
        p.push(format!("{label} {}: is a directory", file.display()));
    } else if let Some(parent) = file.parent()
        && let Some(why) = dir_problem(parent)
    {
        let why = if why == EXISTS_NOT_DIR {
            format!("{} is not a directory", parent.display())
        } else {
            why
        };
        p.push(format!("{label} {}: {why}", file.display()));
    }
}

/// Creates the output directories once every value passed (the run writes into them after it
/// measured); a failure is bad usage too, naming the flag.
pub fn create_dirs(dirs: &[(String, PathBuf)]) -> Result<(), Usage> {
    let mut p = Problems::default();
    for (label, dir) in dirs {
        if dir.as_os_str().is_empty() {
            continue;
        }
        if let Err(e) = std::fs::create_dir_all(dir) {
            p.push(format!("{label} {}: cannot create it: {e}", dir.display()));
        } else if let Err(e) = tempfile::tempfile_in(dir) {
            p.push(format!(
                "{label} {}: cannot write in it: {e}",
                dir.display()
            ));
        }
    }
    p.into_result(())
}

/// The flag's name for a path that may be a default: `--out`, or `--out (default)`.
pub fn label(flag: &str, given: bool) -> String {
    if given {
        flag.to_owned()
    } else {
        format!("{flag} (default)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(f: impl FnOnce(&mut Problems)) -> Vec<String> {
        let mut p = Problems::default();
        f(&mut p);
        p.0
    }

    #[test]
    fn zero_counts_and_absurd_workers_are_problems() {
        assert_eq!(
            problems(|p| at_least_one(p, "--reps", Some(0))),
            ["--reps 0: must be at least 1"]
        );
        assert!(problems(|p| at_least_one(p, "--reps", Some(1))).is_empty());
        assert!(problems(|p| at_least_one(p, "--reps", None)).is_empty());
        assert_eq!(problems(|p| workers(p, Some(0))).len(), 1);
        let absurd = problems(|p| workers(p, Some(100_000)));
        assert!(
            absurd[0].starts_with("--workers 100000: at most 64"),
            "{absurd:?}"
        );
        assert!(problems(|p| workers(p, Some(MAX_WORKERS))).is_empty());
        assert_eq!(
            problems(|p| memory_steps(p, &[1000, 0])),
            ["--memory-steps 1000,0: every step must hold at least 1 connection"]
        );
    }

    #[test]
    fn a_contender_named_twice_or_unknown_is_a_problem() {
        let mut p = Problems::default();
        let kinds = contenders(
            &mut p,
            &["haproxy".into(), "envoy".into(), "haproxy".into()],
        );
        assert_eq!(kinds, [Kind::Haproxy]);
        assert_eq!(p.0.len(), 2, "{:?}", p.0);
        assert!(p.0[0].contains("`envoy`") && p.0[0].contains("known: "));
        assert!(p.0[1].contains("haproxy is named more than once"));
    }

    #[test]
    fn a_variant_must_be_name_equals_an_executable_and_no_other_contenders_name() {
        let dir = tempfile::tempdir().unwrap();
        let exe = dir.path().join("proxy");
        std::fs::write(&exe, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
        let plain = dir.path().join("plain");
        std::fs::write(&plain, "").unwrap();
        let exe = exe.display().to_string();
        let specs = [
            "foo".to_owned(),
            "foo=/nonexistent/x".to_owned(),
            format!("noexec={}", plain.display()),
            format!("dir={}", dir.path().display()),
            format!("aws-lc-rs={exe}"),
            format!("w1={exe},--workers=1"),
            format!("w1={exe}"),
        ];
        let mut p = Problems::default();
        let v = variants(&mut p, &specs);
        assert_eq!(v.len(), 1);
        assert_eq!(
            (v[0].id, v[0].args.as_slice()),
            ("gembok-w1", &["--workers=1".to_owned()][..])
        );
        let p = p.0;
        assert_eq!(p.len(), 6, "{p:#?}");
        assert!(p[0].contains("expected NAME=BINARY"), "{}", p[0]);
        assert!(p[1].ends_with("/nonexistent/x does not exist"), "{}", p[1]);
        assert!(p[2].ends_with("is not executable"), "{}", p[2]);
        assert!(p[3].ends_with("is not a file"), "{}", p[3]);
        assert!(
            p[4].contains("gembok-aws-lc-rs is a built-in contender"),
            "{}",
            p[4]
        );
        assert!(
            p[5].contains("gembok-w1 is named by an earlier --variant"),
            "{}",
            p[5]
        );
    }

    #[test]
    fn an_output_directory_under_a_file_is_found_without_creating_anything() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("file");
        std::fs::write(&file, "").unwrap();
        assert_eq!(
            dir_problem(&file).as_deref(),
            Some("exists and is not a directory")
        );
        let under = file.join("a/b");
        assert_eq!(
            dir_problem(&under),
            Some(format!("{} is not a directory", file.display()))
        );
        let fresh = dir.path().join("new/deeper");
        assert_eq!(dir_problem(&fresh), None);
        assert!(!fresh.exists(), "the check created it");
        assert_eq!(dir_problem(Path::new("relative/not/yet")), None);
        let mut p = Problems::default();
        report_file(&mut p, "--report", &under.join("RESULTS.md"));
        report_file(&mut p, "--report", dir.path());
        assert_eq!(p.0.len(), 2, "{:?}", p.0);
        assert!(
            p.0[0].ends_with(&format!(": {} is not a directory", file.display())),
            "{}",
            p.0[0]
        );
        assert!(p.0[1].ends_with("is a directory"));
        report_file(&mut p, "--report", &file.join("RESULTS.md"));
        assert!(
            p.0[2].ends_with(&format!(": {} is not a directory", file.display())),
            "{}",
            p.0[2]
        );
    }
}
