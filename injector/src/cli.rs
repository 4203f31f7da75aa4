//! The `inject` command: read YAML, inject, write YAML (or the `--explain` text) to stdout.
//! Problems go to stderr; nothing is written to stdout when any object is refused, so
//! `gembok-injector inject -f app.yaml | kubectl apply -f -` never applies half a result.

use std::io::{Read, Write};

use crate::config::InjectConfig;
use crate::workload::{self, Verdict};

/// sysexits: the input was read but is wrong (bad YAML, an object the webhook would refuse).
pub const EXIT_DATA: u8 = 65;
/// sysexits: the input file cannot be opened.
pub const EXIT_NO_INPUT: u8 = 66;
/// sysexits: stdout cannot be written.
pub const EXIT_IO: u8 = 74;

/// Runs `inject` and returns the process exit code.
pub fn run(config: &InjectConfig) -> u8 {
    let mut text = String::new();
    let read = match &config.file {
        None => std::io::stdin().read_to_string(&mut text).map(|_| ()),
        Some(path) => std::fs::read_to_string(path).map(|t| text = t),
    };
    if let Err(e) = read {
        let name = config
            .file
            .as_ref()
            .map_or("stdin".into(), |p| p.display().to_string());
        eprintln!("gembok-injector: cannot read {name}: {e}");
        return EXIT_NO_INPUT;
    }
    let (output, code) = transform(&text, config);
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
            Verdict::Injected { warnings, .. } | Verdict::Skipped { warnings, .. } => {
                for w in warnings {
                    eprintln!("gembok-injector: {}: warning: {w}", report.object);
                }
            }
            Verdict::NotAWorkload => {}
        }
    }
    if failed {
        return (None, EXIT_DATA);
    }
    (Some(workload::write_documents(&docs)), 0)
}
