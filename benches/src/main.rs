//! `gembok-bench`: parse the command line (exit 64 on bad usage), then hand over to the library.

#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;
use gembok_bench::cli::Cli;

#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if e.use_stderr() => {
            let _ = e.print();
            return ExitCode::from(64);
        }
        Err(e) => {
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
    };
    let argv = std::env::args()
        .enumerate()
        .map(|(i, a)| if i == 0 { "gembok-bench".to_owned() } else { a })
        .collect::<Vec<_>>()
        .join(" ");
    match gembok_bench::execute(cli.command, argv) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            gembok_bench::procs::cleanup();
            eprintln!("gembok-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}
