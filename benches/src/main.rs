//! `gembok-bench`: read the command line with gembok-cliargs, check every value at once (exit 64
//! with every problem listed on bad usage), then hand over to the library.

#![forbid(unsafe_code)]

use std::process::ExitCode;

use gembok_bench::cli::Cli;
use gembok_bench::usage::Usage as BadUsage;

#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    let (cli, mut usage) = match gembok_cliargs::read::<Cli>("gembok-bench") {
        Ok(read) => read,
        Err(exit) => return exit,
    };
    let job = gembok_bench::check(cli.command);
    if let Err(BadUsage(errors)) = &job {
        usage.add(errors);
    }
    let job = match usage.finish(job.ok()) {
        Ok(job) => job,
        Err(exit) => return exit,
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
            match e.downcast_ref::<BadUsage>() {
                Some(BadUsage(problems)) => gembok_cliargs::report("gembok-bench", problems),
                None => {
                    eprintln!("gembok-bench: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
