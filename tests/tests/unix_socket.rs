//! `unix_socket_dir`: pgweir listens on `<dir>/.s.PGSQL.<port>` too, as PgBouncer, so a
//! sidecar's application reaches it without loopback TCP. Real clients over the socket
//! (tokio-postgres with `host=<dir>`, psql), clients sharing server connections in
//! transaction mode, `SHOW CLIENTS` naming them `unix`, the file's mode, its removal at
//! exit, and `local` lines of an `auth_hba_file` that match only the socket. And the
//! server side: a database whose `host` is PostgreSQL's socket directory is reached
//! over that socket, cancels included, and `SHOW SERVERS` says `unix`.

mod admin_support;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use admin_support::{admin_config, start, table};
use tokio_postgres::error::SqlState;
use tokio_postgres::NoTls;
use weir_config::{AuthType, PoolMode};
use weir_tests::pg::psql_output;
use weir_tests::{shared_cluster, APP_DB, SCRAM_PASSWORD, SCRAM_USER};

/// tokio-postgres over the Unix socket in `dir` for `port`.
async fn connect_unix(
    dir: &Path,
    port: u16,
    password: Option<&str>,
) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let mut config = tokio_postgres::Config::new();
    config
        .host_path(dir)
        .port(port)
        .user(SCRAM_USER)
        .dbname(APP_DB);
    if let Some(p) = password {
        config.password(p);
    }
    let (client, connection) = config.connect(NoTls).await?;
    tokio::spawn(connection);
    Ok(client)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_log_in_over_the_unix_socket_and_share_server_connections() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut config = admin_config(PoolMode::Transaction, 1);
    config.unix_socket_dir = Some(dir.path().to_owned());
    config.unix_socket_mode = 0o770;
    let pgweir = start(config, None).await;
    let port = pgweir.addr.port();
    let socket = dir.path().join(format!(".s.PGSQL.{port}"));
    let mode = std::fs::metadata(&socket)
        .expect("socket file")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o770, "unix_socket_mode");

    // Three clients over the socket share the one server connection of the pool.
    let mut clients = Vec::new();
    for _ in 0..3 {
        clients.push(
            connect_unix(dir.path(), port, Some(SCRAM_PASSWORD))
                .await
                .expect("login"),
        );
    }
    let mut pids = std::collections::BTreeSet::new();
    for round in 0..3 {
        for c in &clients {
            let row = c
                .query_one("select pg_backend_pid(), $1::int + 1", &[&round])
                .await
                .expect("query over the socket");
            pids.insert(row.get::<_, i32>(0));
            assert_eq!(row.get::<_, i32>(1), round + 1);
        }
    }
    assert_eq!(pids.len(), 1, "one server connection served them all");
    let shown = table(&pgweir.admin_url(), "SHOW CLIENTS");
    let unix_rows = shown
        .rows
        .iter()
        .filter(|r| r.iter().any(|v| v == "unix"))
        .count();
    assert!(
        unix_rows >= 3,
        "SHOW CLIENTS names them unix: {:?}",
        shown.rows
    );

    // psql finds the socket by directory and port, as it finds PostgreSQL's.
    let url = format!(
        "host={} port={port} user={SCRAM_USER} password={SCRAM_PASSWORD} dbname={APP_DB}",
        dir.path().display()
    );
    let (ok, text) = psql_output(url, &["-tA", "-c", "select 'over the socket'"]).await;
    assert!(ok && text.contains("over the socket"), "{text}");

    drop(clients);
    pgweir.stop().await;
    assert!(!socket.exists(), "the socket file is removed at exit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_hba_lines_match_the_unix_socket_and_only_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let hba = dir.path().join("hba.conf");
    std::fs::write(&hba, "local all all trust\nhost all all 0.0.0.0/0 reject\n").expect("hba");
    let mut config = admin_config(PoolMode::Transaction, 2);
    config.unix_socket_dir = Some(dir.path().to_owned());
    config.auth_type = AuthType::Hba;
    config.auth_hba_file = Some(hba);
    config.read_hba_file().expect("hba file parses");
    let pgweir = start(config, None).await;
    let port = pgweir.addr.port();

    let local = connect_unix(dir.path(), port, None)
        .await
        .expect("trusted over the socket");
    let n: i32 = local
        .query_one("select 7", &[])
        .await
        .expect("query")
        .get(0);
    assert_eq!(n, 7);

    let tcp = tokio_postgres::connect(
        &format!(
            "host=127.0.0.1 port={port} user={SCRAM_USER} password={SCRAM_PASSWORD} dbname={APP_DB}"
        ),
        NoTls,
    )
    .await;
    let err = tcp.err().expect("TCP is refused by the host line");
    let db = err.as_db_error().expect("an ErrorResponse");
    assert_eq!(db.code(), &SqlState::INVALID_AUTHORIZATION_SPECIFICATION);
    assert!(
        db.message()
            .contains("rejects connection for host \"127.0.0.1\""),
        "{}",
        db.message()
    );
    pgweir.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_socket_directory_host_reaches_postgresql_over_its_unix_socket() {
    let pg = shared_cluster();
    let mut config = admin_config(PoolMode::Transaction, 2);
    let db = config.databases.get_mut(APP_DB).expect("app database");
    db.host = pg.socket_dir().to_str().expect("UTF-8 path").to_owned();
    db.port = pg.port();
    let pgweir = start(config, None).await;
    let (client, connection) = tokio_postgres::connect(&pgweir.app_url(), NoTls)
        .await
        .expect("login");
    tokio::spawn(connection);

    // PostgreSQL sees the connection come over its socket: no client address.
    let row = client
        .query_one(
            "select client_addr is null from pg_stat_activity where pid = pg_backend_pid()",
            &[],
        )
        .await
        .expect("query over the socket");
    assert!(row.get::<_, bool>(0), "the server connection is not TCP");

    let servers = table(&pgweir.admin_url(), "SHOW SERVERS");
    assert_eq!(
        servers.get("database", APP_DB, "addr").as_deref(),
        Some("unix")
    );
    assert_eq!(
        servers.get("database", APP_DB, "port"),
        Some(pg.port().to_string())
    );

    // A cancel goes to the backend over the same socket.
    let token = client.cancel_token();
    let sleeper = tokio::spawn(async move { client.simple_query("select pg_sleep(20)").await });
    let running = async {
        for _ in 0..200 {
            let n = pg
                .psql(
                    "postgres",
                    "select count(*) from pg_stat_activity where query = 'select pg_sleep(20)' \
                     and state = 'active'",
                )
                .expect("superuser psql");
            if n.trim() == "1" {
                return true;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        false
    };
    assert!(running.await, "the query started");
    let started = std::time::Instant::now();
    token.cancel_query(NoTls).await.expect("cancel sent");
    let err = tokio::time::timeout(std::time::Duration::from_secs(10), sleeper)
        .await
        .expect("the query ends well before pg_sleep(20)")
        .expect("task")
        .expect_err("the query was cancelled");
    assert_eq!(err.code(), Some(&SqlState::QUERY_CANCELED));
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
    pgweir.stop().await;
}
