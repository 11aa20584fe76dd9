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
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = workers {
        builder.worker_threads(n.max(1));
    }
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
