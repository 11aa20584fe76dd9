//! `pgweir demo`: a throwaway PostgreSQL 15 with pgweir in front of it, for trying
//! pgweir in one command. Everything is removed on Ctrl-C.

use std::net::{SocketAddr, TcpListener};

use weir_config::{Config, Overrides};

use crate::cluster::{AuthMethod, ClusterOptions, ClusterUser, TempCluster};

/// The demo's user, password and database.
pub const DEMO_USER: &str = "app";
/// The demo user's password.
pub const DEMO_PASSWORD: &str = "secret";

/// Starts the throwaway cluster and returns it with a pgweir config in front of it:
/// listening on 127.0.0.1:6432 if free, else on a free port.
///
/// # Errors
/// PostgreSQL cannot be found or started, or the config does not validate.
pub fn prepare(overrides: &Overrides) -> anyhow::Result<(TempCluster, Config)> {
    let cluster = TempCluster::start(ClusterOptions {
        users: vec![ClusterUser::new(
            DEMO_USER,
            DEMO_PASSWORD,
            AuthMethod::Scram,
        )],
        databases: vec![(DEMO_USER.to_owned(), DEMO_USER.to_owned())],
        ..ClusterOptions::default()
    })?;
    // Ctrl-C and SIGTERM clean up through Drop; this also covers SIGKILL.
    if let Err(e) = cluster.stop_on_exit() {
        tracing::warn!(error = %e, "no watchdog for the demo cluster; it is stopped on a normal exit only");
    }
    let listen = overrides.listen.unwrap_or_else(default_listen);
    let mut config = Config::default();
    config.apply_overrides(&Overrides {
        listen: Some(listen),
        upstream: Some(cluster.url(DEMO_USER, DEMO_PASSWORD, DEMO_USER)),
        ..overrides.clone()
    })?;
    Ok((cluster, config))
}

/// What the demo prints once it is up.
pub fn banner(listen: SocketAddr, cluster: &TempCluster) -> String {
    let url = format!(
        "postgres://{DEMO_USER}:{DEMO_PASSWORD}@{}:{}/{DEMO_USER}",
        listen.ip(),
        listen.port()
    );
    format!(
        "pgweir demo is running (PostgreSQL from {} on port {}, data in a temp dir).\n\n  \
         DATABASE_URL={url}\n\n  psql '{url}'\n\nPress Ctrl-C to stop and clean up.\n",
        cluster.bin_dir().display(),
        cluster.port()
    )
}

fn default_listen() -> SocketAddr {
    let preferred: SocketAddr = ([127, 0, 0, 1], 6432).into();
    if TcpListener::bind(preferred).is_ok() {
        return preferred;
    }
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap_or(preferred)
}
