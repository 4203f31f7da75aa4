//! `gembok-certs-dev`: parse flags, generate, write, say what was written. Development only.

#![forbid(unsafe_code)]

use std::process::ExitCode;

use gembok_certs_dev::cli::{self, CliError};
use gembok_certs_dev::{DevPki, WriteError, Written, k8s, layout};

/// sysexits.h: internal error, cannot create output, I/O error (usage errors exit 64 through
/// `gembok_cliargs::report`).
const EX_SOFTWARE: u8 = 70;
const EX_CANTCREAT: u8 = 73;
const EX_IOERR: u8 = 74;

fn main() -> ExitCode {
    let config = match cli::parse(std::env::args_os()) {
        Ok(config) => config,
        Err(CliError::Info(e)) => {
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(CliError::Invalid(problems)) => {
            return gembok_cliargs::report("gembok-certs-dev", &problems);
        }
    };
    let pki = match DevPki::generate(&config.options) {
        Ok(pki) => pki,
        Err(e) => {
            eprintln!("gembok-certs-dev: {e}");
            return ExitCode::from(EX_SOFTWARE);
        }
    };
    match pki.write(&config.out, config.existing) {
        Ok(written) => {
            summary(&pki, &written);
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("gembok-certs-dev: {e}");
            ExitCode::from(match e {
                WriteError::Exists(_)
                | WriteError::NotOurs(_)
                | WriteError::NotADirectory(_)
                | WriteError::Symlink(_) => EX_CANTCREAT,
                WriteError::Io { .. } | WriteError::Yaml { .. } => EX_IOERR,
            })
        }
    }
}

fn summary(pki: &DevPki, written: &Written) {
    let out = &written.dir;
    println!("{}.", k8s::WARNING);
    println!("Wrote {} files to {}:", written.files.len(), out.display());
    println!("  root CA      {}", layout::root_dir(out).display());
    println!(
        "  revocation   {} (the root's and every intermediate's lists)",
        layout::crl_file(out).display()
    );
    for region in &pki.regions {
        let r = &region.name;
        let mut leaves = pki.options.services.clone();
        leaves.push(pki.options.injector_service.clone());
        leaves.extend(region.clients.iter().map(|(c, _)| format!("{c} (client)")));
        leaves.extend(
            region
                .revoked_clients
                .iter()
                .map(|(c, _)| format!("{} (client, revoked)", layout::revoked_client_dir(c))),
        );
        if region.redis_proxy.is_some() {
            leaves.push(layout::REDIS_PROXY_DIR.to_owned());
        }
        println!(
            "  {r:<12} intermediate {}, certificates for {} in {}, Secrets and ConfigMaps in {}",
            layout::intermediate_dir(out, r).display(),
            leaves.join(", "),
            out.join(r).display(),
            layout::k8s_dir(out, r).display(),
        );
    }
}
