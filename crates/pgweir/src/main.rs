//! The pgweir binary: parse the command line, load the configuration, run the proxy
//! with its admin console, HTTP endpoint and stats log line; SIGHUP reloads, SIGTERM
//! drains, SIGINT stops at once.

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::Parser;
use pgweir::admin::Loader;
use pgweir::cli::{Cli, Command};
use pgweir::serve::Started;
use pgweir::{demo, logging, serve, signals};
use weir_config::{Config, LogFormat};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Some(Command::Check) => check(&cli),
        Some(Command::Demo) => run_demo(&cli),
        Some(Command::Import {
            ref ini,
            ref userlist,
        }) => import(ini, userlist.as_deref()),
        Some(Command::Healthcheck) => healthcheck(&cli),
        Some(Command::MetricsDoc) => {
            print!("{}", weir_admin::metrics_doc::render());
            Ok(())
        }
        None => cli
            .load_config()
            .context("invalid configuration")
            .and_then(|config| serve(config, &cli)),
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

/// `pgweir import`: proxy.toml on stdout, one line per note on stderr.
fn import(ini: &std::path::Path, userlist: Option<&std::path::Path>) -> anyhow::Result<()> {
    let imported = pgweir::import::import(ini, userlist)?;
    print!("{}", imported.toml);
    for note in &imported.notes {
        eprintln!("{note}");
    }
    Ok(())
}

/// `pgweir healthcheck`: the container's HEALTHCHECK, without curl in the image.
fn healthcheck(cli: &Cli) -> anyhow::Result<()> {
    let default = std::net::SocketAddr::from(([127, 0, 0, 1], weir_config::DEFAULT_HTTP_PORT));
    let listen = match cli.http_listen {
        Some(pgweir::cli::HttpListen(Some(addr))) => addr,
        Some(pgweir::cli::HttpListen(None)) => anyhow::bail!("the HTTP endpoint is off"),
        None => default,
    };
    pgweir::healthcheck::probe(listen, "/healthz", std::time::Duration::from_secs(3))?;
    Ok(())
}

fn run_demo(cli: &Cli) -> anyhow::Result<()> {
    logging::init(cli.log_format.unwrap_or(LogFormat::Text));
    let (cluster, config) = demo::prepare(&cli.overrides())?;
    // Built once bound: the demo may have asked for port 0.
    let banner = |started: &Started| demo::banner(started.addr, started.http_addr, &cluster);
    let result = run_proxy(config, cli.workers, cli.no_io_uring, Some(&banner), None);
    drop(cluster);
    result
}

fn serve(config: Config, cli: &Cli) -> anyhow::Result<()> {
    logging::init(config.log_format);
    // RELOAD and SIGHUP re-read the file with the same flags and environment on top.
    let loader: Option<Loader> = cli.has_config_file().then(|| {
        let cli = cli.clone();
        Arc::new(move || {
            cli.load_config()
                .map_err(|e| format!("invalid configuration: {e}"))
        }) as Loader
    });
    run_proxy(config, cli.workers, cli.no_io_uring, None, loader)
}

/// What to print on stdout once the listeners are bound (the demo's banner).
type Banner<'a> = &'a dyn Fn(&Started) -> String;

fn run_proxy(
    config: Config,
    workers: Option<usize>,
    no_io_uring: bool,
    banner: Option<Banner<'_>>,
    loader: Option<Loader>,
) -> anyhow::Result<()> {
    let workers = workers.unwrap_or_else(default_workers).max(1);
    if no_io_uring {
        weir_proxy::uring::disable();
    }
    let runtime = weir_proxy::uring::runtime_builder(workers)
        .enable_all()
        .thread_name("pgweir-worker")
        .build()
        .context("cannot start the runtime")?;
    let result = runtime.block_on(async move {
        let started = serve::start(config, loader).await?;
        if let Some(banner) = banner {
            println!("{}", banner(&started));
        }
        tokio::spawn(signals::on_signals(started.admin.clone()));
        started.run().await
    });
    // The last turn's writes (shutdown notices to clients) are still queued.
    weir_proxy::uring::drain(weir_proxy::uring::DRAIN_LIMIT);
    result
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
