//! `auth_query`: users who are in no file log in with the secret the server itself
//! holds, fetched by `auth_user`; SCRAM users then reach the server with the ClientKey
//! from their own proof (no password anywhere in pgweir).

use std::collections::HashSet;
use std::time::Duration;

use pgweir::cluster::{AuthMethod, ClusterOptions, ClusterUser, TempCluster};
use tokio_postgres::error::SqlState;
use weir_config::Config;
use weir_tests::pg::run_psql;
use weir_tests::{
    connect, start_proxy, APP_DB, MD5_PASSWORD, MD5_USER, SCRAM_PASSWORD, SCRAM_USER,
};

/// The role pgweir runs the lookup as: it may only call the lookup function.
const AUTH_USER: &str = "pgweir_auth";
const AUTH_PASSWORD: &str = "pw_auth";

/// A cluster with a SCRAM user, an md5 user and the auth role, plus PgBouncer's
/// recommended SECURITY DEFINER lookup function (`pg_shadow` needs a superuser).
fn cluster() -> TempCluster {
    let pg = TempCluster::start(ClusterOptions {
        users: vec![
            ClusterUser::new(SCRAM_USER, SCRAM_PASSWORD, AuthMethod::Scram),
            ClusterUser::new(MD5_USER, MD5_PASSWORD, AuthMethod::Md5),
            ClusterUser::new(AUTH_USER, AUTH_PASSWORD, AuthMethod::Scram),
        ],
        databases: vec![(APP_DB.to_owned(), SCRAM_USER.to_owned())],
        ..ClusterOptions::default()
    })
    .expect("start a cluster");
    pg.psql(
        APP_DB,
        &format!(
            "CREATE SCHEMA pgweir_auth;
             CREATE TABLE pgweir_auth.calls (usename text);
             CREATE FUNCTION pgweir_auth.lookup(i_user text, OUT usename text, OUT passwd text)
               RETURNS record LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog AS
               $$ INSERT INTO pgweir_auth.calls VALUES (i_user);
                  SELECT rolname::text, rolpassword FROM pg_catalog.pg_authid
                  WHERE rolname = i_user AND rolcanlogin $$;
             REVOKE ALL ON FUNCTION pgweir_auth.lookup(text) FROM public;
             GRANT USAGE ON SCHEMA pgweir_auth TO {AUTH_USER};
             GRANT EXECUTE ON FUNCTION pgweir_auth.lookup(text) TO {AUTH_USER};"
        ),
    )
    .expect("create the lookup function");
    pg
}

fn config(pg: &TempCluster, extra: &str) -> Config {
    let text = format!(
        "listen = \"127.0.0.1:0\"\nhttp_listen = \"\"\npool_mode = \"transaction\"\n\
         default_pool_size = 3\n{extra}\n\
         [databases.{APP_DB}]\nhost = \"127.0.0.1\"\nport = {}\n",
        pg.port()
    );
    Config::from_toml_str(&text, "test.toml").expect("valid test config")
}

fn lookup_config(pg: &TempCluster) -> Config {
    config(
        pg,
        &format!(
            "auth_user = \"{AUTH_USER}\"\n\
             auth_query = \"SELECT usename, passwd FROM pgweir_auth.lookup($1)\"\n\
             [users.{AUTH_USER}]\npassword = \"{AUTH_PASSWORD}\"\n"
        ),
    )
}

fn db_message(e: &tokio_postgres::Error) -> String {
    e.as_db_error()
        .map(|d| d.message().to_owned())
        .unwrap_or_default()
}

fn code(r: Result<tokio_postgres::Client, tokio_postgres::Error>) -> Option<SqlState> {
    r.err().and_then(|e| e.code().cloned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scram_user_in_no_file_logs_in_and_runs_transactions_on_several_servers() {
    let pg = cluster();
    let proxy = start_proxy(lookup_config(&pg)).await;

    // psql, a real libpq client, with SCRAM against the verifier from pg_authid.
    let out = run_psql(
        &proxy.url(SCRAM_USER, SCRAM_PASSWORD, APP_DB),
        &["-At", "-c", "select current_user"],
    );
    assert!(
        out.status.success(),
        "psql: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), SCRAM_USER);

    // Several clients at once, each transaction on whichever server is free: the
    // server logins use the ClientKey recovered from the client's proof.
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let url = proxy.url(SCRAM_USER, SCRAM_PASSWORD, APP_DB);
        tasks.push(tokio::spawn(async move {
            let mut client = connect(&url).await.expect("SCRAM login via auth_query");
            let mut pids = HashSet::new();
            for _ in 0..5 {
                let tx = client.transaction().await.expect("begin");
                let row = tx
                    .query_one(
                        "select pg_backend_pid(), current_user::text, pg_sleep(0.02)::text",
                        &[],
                    )
                    .await
                    .expect("query in a transaction");
                assert_eq!(row.get::<_, String>(1), SCRAM_USER);
                pids.insert(row.get::<_, i32>(0));
                tx.commit().await.expect("commit");
            }
            pids
        }));
    }
    let mut pids = HashSet::new();
    for t in tasks {
        pids.extend(t.await.expect("client task"));
    }
    assert!(
        pids.len() >= 2,
        "transactions ran on {} server connection(s)",
        pids.len()
    );

    // A wrong password and a user the server does not know get the same answer.
    let wrong = connect(&proxy.url(SCRAM_USER, "nope", APP_DB)).await;
    assert_eq!(code(wrong), Some(SqlState::INVALID_PASSWORD));
    let ghost = connect(&proxy.url("no_such_user", "nope", APP_DB)).await;
    let Err(ghost) = ghost else {
        panic!("unknown user logged in")
    };
    assert_eq!(ghost.code(), Some(&SqlState::INVALID_PASSWORD));
    assert!(
        db_message(&ghost).contains("password authentication failed for user \"no_such_user\""),
        "{ghost:?}"
    );

    // An md5 user fetched the same way logs in with md5 and reaches its md5 server.
    let md5 = connect(&proxy.url(MD5_USER, MD5_PASSWORD, APP_DB))
        .await
        .expect("md5 login via auth_query");
    let rows = md5.simple_query("select current_user").await.unwrap();
    assert!(
        matches!(&rows[1], tokio_postgres::SimpleQueryMessage::Row(r) if r.get(0) == Some(MD5_USER))
    );
    let wrong = connect(&proxy.url(MD5_USER, "nope", APP_DB)).await;
    assert_eq!(code(wrong), Some(SqlState::INVALID_PASSWORD));
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_password_is_seen_after_the_cache_ttl() {
    let pg = cluster();
    let mut config = lookup_config(&pg);
    config.auth_query_cache_ttl = Duration::ZERO;
    let proxy = start_proxy(config).await;
    let client = connect(&proxy.url(SCRAM_USER, SCRAM_PASSWORD, APP_DB))
        .await
        .expect("login");
    client.simple_query("select 1").await.unwrap();
    pg.psql(
        "postgres",
        &format!(
            "SET password_encryption = 'scram-sha-256'; ALTER ROLE {SCRAM_USER} PASSWORD 'pw_new'"
        ),
    )
    .unwrap();
    let old = connect(&proxy.url(SCRAM_USER, SCRAM_PASSWORD, APP_DB)).await;
    assert_eq!(code(old), Some(SqlState::INVALID_PASSWORD));
    let new = connect(&proxy.url(SCRAM_USER, "pw_new", APP_DB))
        .await
        .expect("login with the new password");
    // The pool's server logins now use the new ClientKey too.
    new.simple_query("select 1")
        .await
        .expect("query with the new key");
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_query_works_for_a_superuser_auth_user() {
    let pg = cluster();
    // PgBouncer's default query reads pg_shadow, which on PostgreSQL 15 needs a
    // superuser; the test cluster trusts `postgres` on 127.0.0.1.
    let proxy = start_proxy(config(&pg, "auth_user = \"postgres\"\n")).await;
    let client = connect(&proxy.url(SCRAM_USER, SCRAM_PASSWORD, APP_DB))
        .await
        .expect("login via the default auth_query");
    client.simple_query("select 1").await.unwrap();
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_lookup_is_a_clear_connection_error() {
    let pg = cluster();
    // auth_dbname on a port nobody listens on: the lookup cannot connect.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_port = dead.local_addr().unwrap().port();
    drop(dead);
    let mut config = lookup_config(&pg);
    config.auth_dbname = Some("authdb".to_owned());
    config.databases.insert(
        "authdb".to_owned(),
        weir_config::DatabaseConfig {
            port: dead_port,
            dbname: Some(APP_DB.to_owned()),
            ..weir_config::DatabaseConfig::default()
        },
    );
    config.validate().expect("valid");
    let proxy = start_proxy(config).await;
    let Err(err) = connect(&proxy.url(SCRAM_USER, SCRAM_PASSWORD, APP_DB)).await else {
        panic!("logged in without the lookup")
    };
    assert_eq!(err.code(), Some(&SqlState::CONNECTION_FAILURE), "{err}");
    assert!(db_message(&err).contains("auth_query"), "{err:?}");
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_per_database_auth_user_applies_to_that_database_only() {
    let pg = cluster();
    let mut config = config(&pg, "");
    let mut other = config.databases[APP_DB].clone();
    other.dbname = Some(APP_DB.to_owned());
    config.databases.insert("other".to_owned(), other);
    config.databases.get_mut(APP_DB).expect("app").auth_user = Some("postgres".to_owned());
    config.validate().expect("valid");
    let proxy = start_proxy(config).await;
    connect(&proxy.url(SCRAM_USER, SCRAM_PASSWORD, APP_DB))
        .await
        .expect("app has an auth_user")
        .simple_query("select 1")
        .await
        .unwrap();
    // `other` has none, and the user is in no file: refused like a wrong password.
    let refused = connect(&proxy.url(SCRAM_USER, SCRAM_PASSWORD, "other")).await;
    assert_eq!(code(refused), Some(SqlState::INVALID_PASSWORD));
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_logins_runs_one_lookup() {
    let pg = cluster();
    let proxy = start_proxy(lookup_config(&pg)).await;
    let logins: Vec<_> = (0..16)
        .map(|_| {
            let url = proxy.url(SCRAM_USER, SCRAM_PASSWORD, APP_DB);
            tokio::spawn(async move { connect(&url).await.map(|_| ()) })
        })
        .collect();
    for login in logins {
        login.await.unwrap().expect("login via auth_query");
    }
    let calls = pg
        .psql(APP_DB, "select count(*) from pgweir_auth.calls")
        .unwrap();
    assert_eq!(calls, "1", "16 logins at once, one lookup (then the cache)");
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channel_binding_works_with_a_verifier_from_auth_query() {
    let pg = cluster();
    let tmp = tempfile::tempdir().unwrap();
    let certs = weir_tests::certs::make_certs(tmp.path(), "pgweir auth_query CA");
    let mut config = lookup_config(&pg);
    config.client_tls_sslmode = weir_config::SslMode::Prefer;
    config.client_tls_cert_file = Some(certs.server_cert());
    config.client_tls_key_file = Some(certs.server_key());
    let proxy = start_proxy(config).await;
    let url = format!(
        "{}?sslmode=require&channel_binding=require",
        proxy.url(SCRAM_USER, SCRAM_PASSWORD, APP_DB)
    );
    let out =
        tokio::task::spawn_blocking(move || run_psql(&url, &["-At", "-c", "select current_user"]))
            .await
            .unwrap();
    assert!(
        out.status.success(),
        "SCRAM-SHA-256-PLUS: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), SCRAM_USER);
    proxy.stop().await;
}
