//! A fake [`AdminBackend`] with fixed rows and a log of the commands it received.

#![allow(dead_code)]

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::BytesMut;
use hdrhistogram::Histogram;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio_postgres::Client;
use weir_admin::backend::*;
use weir_admin::{serve_console, AdminCommand, BoxFuture, Role, StatsAverager};

/// A console session over an in-memory stream with a tokio-postgres client.
pub async fn start(role: Role) -> (Client, Arc<Fake>, tokio::task::JoinHandle<()>) {
    let backend = Arc::new(Fake::new());
    let (client_io, mut server_io): (DuplexStream, DuplexStream) = tokio::io::duplex(64 * 1024);
    let b = Arc::clone(&backend);
    let server = tokio::spawn(async move {
        // Startup packet, then AuthenticationOk: what the proxy does before handing over.
        let len = server_io.read_i32().await.expect("startup length");
        let mut body = vec![0u8; usize::try_from(len).expect("length") - 4];
        server_io.read_exact(&mut body).await.expect("startup body");
        server_io
            .write_all(&[b'R', 0, 0, 0, 8, 0, 0, 0, 0])
            .await
            .expect("auth ok");
        let _ = serve_console(&mut server_io, BytesMut::new(), "alice", role, &*b).await;
    });
    let mut config = tokio_postgres::Config::new();
    config.user("alice").dbname("pgbouncer");
    let (client, conn) = config
        .connect_raw(client_io, tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(conn);
    (client, backend, server)
}

/// A console session over an in-memory stream, past `AuthenticationOk`, for
/// tests that speak the protocol byte by byte.
pub fn start_raw(role: Role) -> (DuplexStream, Arc<Fake>, tokio::task::JoinHandle<()>) {
    let backend = Arc::new(Fake::new());
    let (client_io, mut server_io) = tokio::io::duplex(64 * 1024);
    let b = Arc::clone(&backend);
    let server = tokio::spawn(async move {
        let _ = serve_console(&mut server_io, BytesMut::new(), "alice", role, &*b).await;
    });
    (client_io, backend, server)
}

pub struct Fake {
    pub commands: Mutex<Vec<AdminCommand>>,
    pub ready: Mutex<Readiness>,
    pub xacts: Mutex<u64>,
    averager: StatsAverager,
}

impl Fake {
    pub fn new() -> Self {
        Self {
            commands: Mutex::new(Vec::new()),
            ready: Mutex::new(Readiness {
                listening: true,
                draining: false,
                upstream_reachable: true,
            }),
            xacts: Mutex::new(7),
            averager: StatsAverager::new(Duration::from_secs(60)),
        }
    }
}

fn hist(values: &[u64]) -> Histogram<u64> {
    let mut h = Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("bounds");
    for &v in values {
        h.record(v).expect("in range");
    }
    h
}

impl AdminBackend for Fake {
    fn pools(&self) -> Vec<PoolRow> {
        let mut p = PoolRow {
            database: "app".into(),
            user: "alice".into(),
            cl_active: 3,
            cl_waiting: 1,
            sv_active: 2,
            sv_idle: 4,
            pool_mode: "transaction".into(),
            ..PoolRow::default()
        };
        p.set_maxwait(Duration::from_micros(2_500_000));
        vec![p]
    }
    fn clients(&self) -> Vec<SocketRow> {
        vec![SocketRow {
            kind: "C",
            user: "alice".into(),
            database: "app".into(),
            state: "active".into(),
            addr: "127.0.0.1".into(),
            port: 40000,
            local_addr: "127.0.0.1".into(),
            local_port: 6432,
            connect_time: UNIX_EPOCH + Duration::from_secs(1_700_000_000),
            request_time: None,
            wait: Duration::ZERO,
            close_needed: false,
            ptr: "17".into(),
            link: "".into(),
            remote_pid: 0,
            tls: "".into(),
            application_name: "psql".into(),
            pinned: "".into(),
        }]
    }
    fn servers(&self) -> Vec<SocketRow> {
        Vec::new()
    }
    fn databases(&self) -> Vec<DatabaseRow> {
        vec![DatabaseRow {
            name: "app".into(),
            host: Some("127.0.0.1".into()),
            port: 5432,
            database: "app".into(),
            pool_size: 20,
            reserve_pool: 5,
            ..DatabaseRow::default()
        }]
    }
    fn users(&self) -> Vec<UserRow> {
        vec![UserRow {
            name: "alice".into(),
            pool_mode: None,
        }]
    }
    fn config(&self) -> Vec<ConfigRow> {
        vec![ConfigRow {
            key: "max_client_conn".into(),
            value: "100".into(),
            default: "100".into(),
            changeable: true,
        }]
    }
    fn lists(&self) -> ListsRow {
        ListsRow {
            databases: 1,
            users: 1,
            pools: 1,
            used_clients: 4,
            used_servers: 6,
            ..ListsRow::default()
        }
    }
    fn mem(&self) -> Vec<MemRow> {
        Vec::new()
    }
    fn state(&self) -> StateRow {
        StateRow {
            active: true,
            paused: false,
            suspended: false,
        }
    }
    fn stats(&self) -> Vec<StatsTotals> {
        let x = *self.xacts.lock().unwrap();
        vec![StatsTotals {
            database: "app".into(),
            total_xact_count: x,
            total_query_count: 2 * x,
            total_received: 1000,
            total_sent: 5000,
            total_xact_time: 700,
            total_query_time: 600,
            total_wait_time: 10,
        }]
    }
    fn averager(&self) -> &StatsAverager {
        &self.averager
    }
    fn pool_counters(&self) -> Vec<PoolCounters> {
        let x = *self.xacts.lock().unwrap();
        vec![PoolCounters {
            database: "app".into(),
            user: "alice".into(),
            transactions: x,
            queries: 2 * x,
            bytes_received: 1000,
            errors_by_class: vec![("23".into(), 2)],
            ..PoolCounters::default()
        }]
    }
    fn latency(&self) -> Vec<PoolLatency> {
        vec![PoolLatency {
            database: "app".into(),
            user: "alice".into(),
            query: hist(&[100, 200, 300, 5000]),
            transaction: hist(&[1000, 2000]),
            wait: hist(&[]),
            wait_by_class: Vec::new(),
        }]
    }
    fn queries(&self, limit: usize) -> Vec<QueryRow> {
        let q = weir_pool::query_stats::QueryStats::default();
        q.record(
            b"SELECT abalance FROM pgbench_accounts WHERE aid = 1",
            Duration::from_micros(80),
        );
        q.record(
            b"select abalance from pgbench_accounts where aid = 2",
            Duration::from_micros(120),
        );
        q.top(limit)
    }
    fn readiness(&self) -> Readiness {
        *self.ready.lock().unwrap()
    }
    fn command(&self, cmd: AdminCommand) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move {
            if cmd == AdminCommand::Kill("nope".into()) {
                return Err("no such database: nope".into());
            }
            self.commands.lock().unwrap().push(cmd);
            Ok(())
        })
    }
}

/// Keeps the SystemTime import used on all paths.
pub fn now() -> SystemTime {
    SystemTime::now()
}
