//! `gembok-proxy`: parse the configuration (exit 64 on any problem, listing all of them), set up
//! logs and the runtime, bind, and hand over to [`gembok_proxy::run`].

#![forbid(unsafe_code)]

use std::process::ExitCode;
use std::time::Duration;

use gembok_proxy::cli::{self, Command};
use gembok_proxy::config::{Config, LogConfig};
use gembok_proxy::{Listeners, fd_limit, sandbox, wait_ready};

#[cfg(feature = "jemalloc")]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    let (cli, mut usage) = match gembok_cliargs::read::<cli::Cli>("gembok-proxy") {
        Ok(read) => read,
        Err(exit) => return exit,
    };
    if let Some(Command::WaitReady {
        admin,
        timeout,
        path,
    }) = cli.command
    {
        let mut usage = usage.within("wait-ready");
        let target = wait_ready::Target::parse(&admin, &timeout, &path);
        if let Err(errors) = &target {
            usage.add(errors);
        }
        let target = match usage.finish(target.ok()) {
            Ok(target) => target,
            Err(exit) => return exit,
        };
        return match wait_ready::wait(target) {
            Ok(()) => ExitCode::SUCCESS,
            Err(why) => {
                eprintln!("gembok-proxy at {admin}: {path} not 200 after {timeout}: {why}");
                ExitCode::FAILURE
            }
        };
    }
    // Probes the kernel for kTLS too, so that `--ktls require` where it cannot be met is
    // reported with the other problems, not after they are fixed.
    let config = Config::from_cli(&cli.proxy);
    if let Err(errors) = &config {
        // A value from a GEMBOK_* variable is reported under the variable's name.
        usage.add(&errors.0);
    }
    let mut config = match usage.finish(config.ok()) {
        Ok(config) => config,
        Err(exit) => return exit,
    };
    init_tracing(&config.log);
    tracing::info!(version = env!("CARGO_PKG_VERSION"), certs = %gembok_proxy::describe_certs(&config.certs), "starting");
    open_files(&config);
    // Before the sandbox: counting the CPUs reads the cgroup's quota in /proc and /sys.
    let workers = config
        .workers
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, std::num::NonZero::get));
    match sandbox(&config) {
        Ok(achieved) => config.sandboxed = achieved,
        Err(e) => {
            tracing::error!(error = %e, "cannot start sandboxed");
            return ExitCode::FAILURE;
        }
    }

    let runtime = match runtime(workers) {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the runtime");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        let signals = gembok_net::signals::stop_signals()?;
        let listeners = Listeners::bind(&config)?;
        gembok_proxy::run(config, listeners, signals).await?;
        Ok::<_, Box<dyn std::error::Error>>(())
    });
    // Connections still open after the grace period are dropped here, not waited for.
    runtime.shutdown_timeout(Duration::from_millis(100));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "gembok-proxy failed");
            ExitCode::FAILURE
        }
    }
}

/// Raises the open-file limit to the hard limit, and warns when even that is below what the
/// connection limits need (see [`fd_limit`]).
fn open_files(config: &Config) {
    let limit = match fd_limit::raise() {
        Ok(limit) => limit,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read or raise the open-file limit");
            return;
        }
    };
    let ktls = config.kernel_tls();
    let directions = [!config.inbound.is_empty(), !config.outbound.is_empty()]
        .into_iter()
        .filter(|&d| d)
        .count();
    let needed = fd_limit::needed(config.limits.max_connections, directions, ktls);
    if needed > limit.now {
        let fits = fd_limit::connections_within(limit.now, ktls);
        tracing::warn!(
            open_files = %limit,
            needed,
            max_connections = config.limits.max_connections,
            "the open-file limit is below what --max-connections needs: beyond about {fits} \
             connections new ones will fail (EMFILE: the connect onward fails and the connection \
             is reset, or accepting backs off); raise the hard limit (ulimit -Hn, the container \
             runtime's default) or lower --max-connections"
        );
    } else {
        tracing::info!(open_files = %limit, needed, "open-file limit");
    }
}

fn init_tracing(log: &LogConfig) {
    use tracing_subscriber::prelude::*;
    // Levels per target, applied to every event.
    let filter = log.filter.clone();
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let registry = tracing_subscriber::registry().with(filter);
    if log.json {
        let json = fmt
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false);
        registry.with(json).init();
    } else {
        registry.with(fmt).init();
    }
}

/// Applies `--sandbox` to this thread, before any other starts, so it covers them all.
fn sandbox(config: &Config) -> Result<sandbox::Achieved, sandbox::SandboxError> {
    // jemalloc starts its purge thread with the allocator, before `main`.
    let started_before = cfg!(feature = "jemalloc").then_some("jemalloc's purge thread");
    sandbox::enforce(config.sandbox, &sandbox::allowed(config), started_before)
}

/// Worker threads = the CPUs this process may use (cgroup quota aware, counted by the
/// caller before the sandbox), current-thread at one.
fn runtime(n: usize) -> std::io::Result<tokio::runtime::Runtime> {
    let mut builder = if n == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(n);
        b
    };
    builder.enable_all().thread_name("gembok-proxy").build()
}
