//! `gembok-bench`: read the command line with gembok-cliargs, check every value at once (exit 64
//! with every problem listed on bad usage), then hand over to the library.

#![forbid(unsafe_code)]

use std::process::ExitCode;

use gembok_bench::cli::Cli;
use gembok_bench::usage::Usage;
use gembok_cliargs::Parsed;

#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

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
    let job = gembok_bench::check(cli.command);
    if let Err(Usage(errors)) = &job {
        problems.extend(errors.iter().map(|e| sources.attribute(e)));
    }
    let job = match job {
        Ok(job) if problems.is_empty() => job,
        _ => return usage(&problems),
    };
    let argv = std::env::args()
        .enumerate()
        .map(|(i, a)| if i == 0 { "gembok-bench".to_owned() } else { a })
        .collect::<Vec<_>>()
        .join(" ");
    match gembok_bench::execute(job, argv) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            gembok_bench::procs::cleanup();
            match e.downcast_ref::<Usage>() {
                Some(Usage(problems)) => usage(problems),
                None => {
                    eprintln!("gembok-bench: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

/// Every problem on a line of its own; exit 64.
fn usage(problems: &[String]) -> ExitCode {
    for problem in problems {
        eprintln!("gembok-bench: {problem}");
    }
    ExitCode::from(EXIT_USAGE)
}
