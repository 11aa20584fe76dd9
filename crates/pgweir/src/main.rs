//! The pgweir binary: parse the command line, load the configuration, run the proxy
//! until SIGINT/SIGTERM.

use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use pgweir::cli::{Cli, Command};
use pgweir::{demo, logging};
use tokio_util::sync::CancellationToken;
use weir_config::{Config, LogFormat};
use weir_proxy::Proxy;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Some(Command::Check) => check(&cli),
        Some(Command::Demo) => run_demo(&cli),
        None => cli
            .load_config()
            .context("invalid configuration")
            .and_then(|config| serve(config, cli.workers)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pgweir: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn check(cli: &Cli) -> anyhow::Result<()> {
    let config = cli.load_config()?;
    let databases: Vec<&str> = config.databases.keys().map(String::as_str).collect();
    println!(
        "configuration OK: listen {}, {} mode, databases: {}, users: {}",
        config.listen,
        config.pool_mode,
        databases.join(", "),
        config.users.len()
    );
    Ok(())
}

fn run_demo(cli: &Cli) -> anyhow::Result<()> {
    logging::init(cli.log_format.unwrap_or(LogFormat::Text));
    let (cluster, config) = demo::prepare(&cli.overrides())?;
    let listen = config.listen;
    let banner = demo::banner(listen, &cluster);
    let result = run_proxy(config, cli.workers, Some(banner));
    drop(cluster);
    result
}

fn serve(config: Config, workers: Option<usize>) -> anyhow::Result<()> {
    logging::init(config.log_format);
    run_proxy(config, workers, None)
}

fn run_proxy(config: Config, workers: Option<usize>, banner: Option<String>) -> anyhow::Result<()> {
    let workers = workers.unwrap_or_else(default_workers).max(1);
    // One worker: a current-thread runtime, PgBouncer's shape, with none of the
    // work-stealing scheduler's cross-thread bookkeeping.
    let mut builder = if workers == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(workers);
        b
    };
    let runtime = builder
        .enable_all()
        .thread_name("pgweir-worker")
        .build()
        .context("cannot start the runtime")?;
    runtime.block_on(async move {
        let proxy = Proxy::bind(config).await?;
        if let Some(banner) = banner {
            println!("{banner}");
        }
        let shutdown = CancellationToken::new();
        tokio::spawn(stop_on_signal(shutdown.clone()));
        proxy.run(shutdown).await?;
        Ok(())
    })
}

/// One worker on machines with up to two CPUs, one per CPU above that.
///
/// On a small box the proxy shares its CPUs with the application and often the
/// database: there, a second worker thread measured ~10-15% more proxy CPU per
/// transaction (cross-thread wakeups) for no throughput gain (benches/e2e.sh).
fn default_workers() -> usize {
    match std::thread::available_parallelism().map(usize::from) {
        Ok(n) if n > 2 => n,
        _ => 1,
    }
}

async fn stop_on_signal(shutdown: CancellationToken) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers");
        return;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
        _ = int.recv() => tracing::info!("SIGINT: shutting down"),
    }
    shutdown.cancel();
}
