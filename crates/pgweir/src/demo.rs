//! `pgweir demo`: a throwaway PostgreSQL 15 with pgweir in front of it, for trying
//! pgweir in one command beside whatever already runs on the machine. Everything is
//! removed on Ctrl-C.

use std::net::{SocketAddr, TcpListener};

use weir_config::{Config, Overrides};

use crate::cluster::{AuthMethod, ClusterOptions, ClusterUser, TempCluster};

/// The demo's user, password and database.
pub const DEMO_USER: &str = "app";
/// The demo user's password.
pub const DEMO_PASSWORD: &str = "secret";

/// Starts the throwaway cluster and returns it with a pgweir config in front of it.
///
/// Addresses given on the command line (or in `PGWEIR_*`) are used as they are. The
/// defaults, 127.0.0.1:6432 for clients and 127.0.0.1:9930 for HTTP, are used when
/// free; when taken (say by a pgweir already running) the demo asks for port 0 and
/// the kernel picks a free one: [`banner`] prints the addresses actually bound.
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
    let defaults = Config::default();
    let listen = overrides
        .listen
        .unwrap_or_else(|| free_or_any_port(defaults.listen, "client"));
    let http_listen = overrides
        .http_listen
        .unwrap_or_else(|| defaults.http_listen.map(|a| free_or_any_port(a, "HTTP")));
    let mut config = defaults;
    config.apply_overrides(&Overrides {
        listen: Some(listen),
        upstream: Some(cluster.url(DEMO_USER, DEMO_PASSWORD, DEMO_USER)),
        http_listen: Some(http_listen),
        ..overrides.clone()
    })?;
    Ok((cluster, config))
}

/// What the demo prints once it is up, with the addresses it bound: clients on
/// `listen`, the HTTP endpoint (when on) on `http`.
pub fn banner(listen: SocketAddr, http: Option<SocketAddr>, cluster: &TempCluster) -> String {
    let url = format!(
        "postgres://{DEMO_USER}:{DEMO_PASSWORD}@{}:{}/{DEMO_USER}",
        listen.ip(),
        listen.port()
    );
    let http = http.map_or_else(String::new, |addr| {
        format!(
            "  metrics: http://{addr}/metrics\n  health:  http://{addr}/healthz  \
             http://{addr}/readyz\n  pools:   http://{addr}/api/v1/pools\n\n"
        )
    });
    format!(
        "pgweir demo is running (PostgreSQL from {} on port {}, data in a temp dir).\n\n  \
         DATABASE_URL={url}\n\n  psql '{url}'\n\n{http}Press Ctrl-C to stop and clean up.\n",
        cluster.bin_dir().display(),
        cluster.port()
    )
}

/// `preferred` if it can be bound now, else the same IP with port 0 (any free port).
fn free_or_any_port(preferred: SocketAddr, what: &str) -> SocketAddr {
    if TcpListener::bind(preferred).is_ok() {
        return preferred;
    }
    tracing::info!(%preferred, "{what} address in use; the demo takes a free port instead");
    SocketAddr::new(preferred.ip(), 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_free_address_is_kept() {
        let addr = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port");
        // Released at once: free again (SO_REUSEADDR covers TIME_WAIT; nothing connected).
        assert_eq!(free_or_any_port(addr, "test"), addr);
    }

    #[test]
    fn a_taken_address_becomes_port_zero_on_the_same_ip() {
        let taken = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
        let addr = taken.local_addr().expect("local addr");
        assert_eq!(
            free_or_any_port(addr, "test"),
            SocketAddr::new(addr.ip(), 0)
        );
    }
}
