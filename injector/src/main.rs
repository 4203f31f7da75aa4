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
        Config::Serve(config) => {
            init_logging(&config.log);
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
    let filter = tracing_subscriber::EnvFilter::new(&log.filter);
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match log.format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
