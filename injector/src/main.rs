//! `gembok-injector`: parse the command line (exit 64 listing every problem), set up logging,
//! then hand over to the library.

#![forbid(unsafe_code)]

use std::process::ExitCode;

use gembok_cliargs::Parsed;
use gembok_injector::config::{Cli, Config, LogConfig, LogFormat};

/// sysexits EX_USAGE.
const EXIT_USAGE: u8 = 64;

fn main() -> ExitCode {
    let (cli, mut problems, sources) = match gembok_cliargs::parse::<Cli>(std::env::args_os()) {
        Parsed::Read(cli, problems, sources) => (cli, problems, sources),
        Parsed::Info(help) => {
            let _ = help.print(); // --help, --version
            return ExitCode::SUCCESS;
        }
        Parsed::Unreadable(problems) => return usage(&problems),
    };
    let config = cli.validate();
    if let Err(errors) = &config {
        // A value from a GEMBOK_INJECTOR_* variable is reported under the variable's name.
        problems.extend(errors.iter().map(|e| sources.attribute(e)));
    }
    let config = match config {
        Ok(config) if problems.is_empty() => config,
        _ => return usage(&problems),
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

/// Every problem on a line of its own; exit 64.
fn usage(problems: &[String]) -> ExitCode {
    for problem in problems {
        eprintln!("gembok-injector: {problem}");
    }
    ExitCode::from(EXIT_USAGE)
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
