//! The `inject` command: read YAML, inject, write YAML (or the `--explain` text) to stdout.
//! Problems go to stderr; nothing is written to stdout when any object is refused, so
//! `gembok-injector inject -f app.yaml | kubectl apply -f -` never applies half a result.

use std::io::{Read, Write};
use std::path::Path;

use thiserror::Error;

use crate::audit;
use crate::config::{AuditConfig, AuditOutput, InjectConfig};
use crate::workload::{self, Verdict};

/// sysexits-style "found something": `audit` found pods to fix.
pub const EXIT_FINDINGS: u8 = 1;

/// sysexits: the input was read but is wrong (bad YAML, an object the webhook would refuse).
pub const EXIT_DATA: u8 = 65;
/// sysexits: the input file cannot be opened.
pub const EXIT_NO_INPUT: u8 = 66;
/// sysexits: stdout cannot be written.
pub const EXIT_IO: u8 = 74;

/// Input that cannot be turned into text.
#[derive(Debug, Error)]
pub enum InputError {
    /// The file (or stdin) cannot be opened or read.
    #[error("cannot read {name}: {source}")]
    Unreadable {
        name: String,
        source: std::io::Error,
    },
    /// It was read, but it is not UTF-8, so it is not YAML kubectl would take.
    #[error("{name} is not UTF-8 text: {source}")]
    NotText {
        name: String,
        source: std::string::FromUtf8Error,
    },
}

impl InputError {
    /// 66 when there is nothing to read; 65 when what was read is not text.
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Unreadable { .. } => EXIT_NO_INPUT,
            Self::NotText { .. } => EXIT_DATA,
        }
    }
}

/// Reads the whole input (a file, or stdin when `file` is `None`) as UTF-8 text.
pub fn read_input(file: Option<&Path>) -> Result<String, InputError> {
    let name = file.map_or("stdin".into(), |p| p.display().to_string());
    let mut bytes = Vec::new();
    let read = match file {
        None => std::io::stdin().read_to_end(&mut bytes).map(|_| ()),
        Some(path) => std::fs::read(path).map(|b| bytes = b),
    };
    if let Err(source) = read {
        return Err(InputError::Unreadable { name, source });
    }
    String::from_utf8(bytes).map_err(|source| InputError::NotText { name, source })
}

/// Runs `inject` and returns the process exit code.
pub fn run(config: &InjectConfig) -> u8 {
    read_then_write(config.file.as_deref(), |text| transform(text, config))
}

/// The shell of both commands: reads the input, hands its text to `pure` and writes what that
/// returns to stdout; returns the exit code (`pure`'s, or the input's or stdout's failure).
fn read_then_write(file: Option<&Path>, pure: impl FnOnce(&str) -> (Option<String>, u8)) -> u8 {
    let text = match read_input(file) {
        Ok(text) => text,
        Err(e) => {
            eprintln!("gembok-injector: {e}");
            return e.exit_code();
        }
    };
    let (output, code) = pure(&text);
    if let Some(output) = output {
        let mut stdout = std::io::stdout().lock();
        if stdout
            .write_all(output.as_bytes())
            .and_then(|()| stdout.flush())
            .is_err()
        {
            return EXIT_IO;
        }
    }
    code
}

/// The pure part of [`run`]: input text to (stdout text, exit code); problems are printed to
/// stderr.
pub fn transform(text: &str, config: &InjectConfig) -> (Option<String>, u8) {
    let mut docs = match workload::read_documents(text) {
        Ok(docs) => docs,
        Err(e) => {
            eprintln!("gembok-injector: {e}");
            return (None, EXIT_DATA);
        }
    };
    let before = docs.clone();
    let reports = workload::inject_documents(&mut docs, &config.injector, config.istio);
    let failed = reports.iter().any(workload::Report::failed);
    if config.explain {
        let text: String = reports.iter().map(workload::explain).collect();
        return (Some(text), if failed { EXIT_DATA } else { 0 });
    }
    for report in &reports {
        match &report.verdict {
            Verdict::Rejected { errors, .. } => {
                for e in errors {
                    eprintln!("gembok-injector: {}: {e}", report.object);
                }
            }
            Verdict::Invalid(why) | Verdict::Denied { reason: why, .. } => {
                eprintln!("gembok-injector: {}: {why}", report.object);
            }
            Verdict::Skipped { reason, warnings } => {
                eprintln!(
                    "gembok-injector: {}: warning: sidecar not injected: {reason}",
                    report.object
                );
                print_warnings(&report.object, warnings);
            }
            Verdict::Injected { warnings, .. } => print_warnings(&report.object, warnings),
            Verdict::NotAWorkload => {}
        }
    }
    if failed {
        return (None, EXIT_DATA);
    }
    (
        Some(workload::write_documents_over(text, &before, &docs)),
        0,
    )
}

fn print_warnings(object: &str, warnings: &[String]) {
    for w in warnings {
        eprintln!("gembok-injector: {object}: warning: {w}");
    }
}

/// Runs `audit`: one line per finding on stdout, the tally on stderr; the exit code says whether
/// anything was found (0 nothing, 1 findings, 65 input that is not Kubernetes YAML, 66 no input).
pub fn run_audit(config: &AuditConfig) -> u8 {
    read_then_write(config.file.as_deref(), |text| {
        let (output, code) = audit_text(text, config);
        (Some(output), code)
    })
}

/// The pure part of [`run_audit`]: input text to (stdout text, exit code); the tally and
/// warnings are printed to stderr.
pub fn audit_text(text: &str, config: &AuditConfig) -> (String, u8) {
    let docs = match workload::read_documents(text) {
        Ok(docs) => docs,
        Err(e) => {
            eprintln!("gembok-injector: {e}");
            return (String::new(), EXIT_DATA);
        }
    };
    let report = audit::audit(&docs, &config.injector);
    for ns in &report.unknown_namespaces {
        eprintln!(
            "gembok-injector: warning: no Namespace object for {ns:?}: its pods are judged by \
             their gembok.io/inject label alone (give `kubectl get namespaces,pods -A -o yaml`)"
        );
    }
    eprintln!(
        "gembok-injector: audit: {} running pods, {} selected by the webhook, {} to fix",
        report.pods,
        report.in_scope,
        report.findings.len()
    );
    let output = match config.output {
        AuditOutput::Text => report.findings.iter().map(|f| format!("{f}\n")).collect(),
        AuditOutput::Json => {
            let mut json = serde_json::to_string_pretty(&report).expect("a report serializes");
            json.push('\n');
            json
        }
    };
    let code = if report.findings.is_empty() {
        0
    } else {
        EXIT_FINDINGS
    };
    (output, code)
}
