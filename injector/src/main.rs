//! `gembok-injector`: parse the command line (exit 64 listing every problem), set up logging,
//! then hand over to the library.

#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;
use gembok_injector::config::{Cli, Config, LogConfig, LogFormat};

/// sysexits EX_USAGE.
const EXIT_USAGE: u8 = 64;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => {
            // --help and --version.
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let config = match cli.validate() {
        Ok(config) => config,
        Err(errors) => {
            for e in &errors {
                eprintln!("gembok-injector: {e}");
            }
            return ExitCode::from(EXIT_USAGE);
        }
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
