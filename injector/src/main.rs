//! `gembok-injector`: parse the command line (exit 64 listing every problem), set up logging,
//! then hand over to the library.

#![forbid(unsafe_code)]

use std::process::ExitCode;

use gembok_injector::config::{Cli, Config, LogConfig, LogFormat};

fn main() -> ExitCode {
    let (cli, mut usage) = match gembok_cliargs::read::<Cli>("gembok-injector") {
        Ok(read) => read,
        Err(exit) => return exit,
    };
    let config = cli.validate();
    if let Err(errors) = &config {
        // A value from a GEMBOK_INJECTOR_* variable is reported under the variable's name.
        usage.add(errors);
    }
    let config = match usage.finish(config.ok()) {
        Ok(config) => config,
        Err(exit) => return exit,
    };
    match config {
        Config::Inject(config) => {
            init_logging(&config.log);
            ExitCode::from(gembok_injector::cli::run(&config))
        }
        Config::Audit(config) => {
            init_logging(&config.log);
            ExitCode::from(gembok_injector::cli::run_audit(&config))
        }
        Config::Serve(mut config) => {
            init_logging(&config.log);
            // Before the runtime starts, on the only thread so far: every thread is covered.
            let allowed = gembok_injector::sandbox::allowed(&config);
            match gembok_net::sandbox::enforce(config.sandbox, &allowed, None) {
                Ok(achieved) => config.sandboxed = achieved,
                Err(e) => {
                    tracing::error!(error = %e, "cannot start sandboxed");
                    return ExitCode::FAILURE;
                }
            }
            match gembok_injector::server::run_blocking(config) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!(error = %e, "gembok-injector stopped");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

fn init_logging(log: &LogConfig) {
    use tracing_subscriber::prelude::*;
    // Checked with the rest of the configuration; levels per target, as the proxy's --log.
    let filter: tracing_subscriber::filter::Targets = log.filter.parse().unwrap_or_else(|_| {
        tracing_subscriber::filter::Targets::new().with_default(tracing::Level::INFO)
    });
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let registry = tracing_subscriber::registry().with(filter);
    match log.format {
        LogFormat::Text => registry.with(fmt).init(),
        LogFormat::Json => registry.with(fmt.json()).init(),
    }
}
