//! Credentials the proxy can use to log in to PostgreSQL, beyond a plaintext password:
//! a SCRAM verifier only (the ClientKey from the client's own login is reused), an md5
//! secret only; and `max_db_connections` shared by every user's pool of a database.

use std::time::Duration;

use weir_config::Config;
use weir_tests::{
    connect, shared_cluster, start_proxy, stored_secret, APP_DB, MD5_PASSWORD, MD5_USER,
    SCRAM_PASSWORD, SCRAM_USER,
};

/// A proxy config for the shared cluster's `app` database with the given extra TOML.
fn config(extra: &str) -> Config {
    let pg = shared_cluster();
    let text = format!(
        "listen = \"127.0.0.1:0\"\n{extra}\n[databases.{APP_DB}]\nhost = \"127.0.0.1\"\nport = {}\n",
        pg.port()
    );
    Config::from_toml_str(&text, "test.toml").expect("valid test config")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scram_verifier_only_reuses_the_clients_client_key() {
    let verifier = stored_secret(SCRAM_USER);
    assert!(verifier.starts_with("SCRAM-SHA-256$"), "{verifier}");
    let proxy = start_proxy(config(&format!(
        "[users.{SCRAM_USER}]\npassword = \"{verifier}\"\n"
    )))
    .await;
    // The first login has no password to give PostgreSQL but the ClientKey from this very
    // SCRAM exchange; the proxy checks it against the verifier and logs in with it.
    let client = connect(&proxy.url(SCRAM_USER, SCRAM_PASSWORD, APP_DB))
        .await
        .expect("login with the verifier only");
    let rows = client.simple_query("select current_user").await.unwrap();
    assert!(
        matches!(&rows[1], tokio_postgres::SimpleQueryMessage::Row(r) if r.get(0) == Some(SCRAM_USER))
    );
    let wrong = connect(&proxy.url(SCRAM_USER, "nope", APP_DB)).await;
    assert_eq!(
        wrong.err().and_then(|e| e.code().cloned()),
        Some(tokio_postgres::error::SqlState::INVALID_PASSWORD)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn md5_secret_only_logs_in_to_an_md5_server() {
    let secret = stored_secret(MD5_USER);
    assert!(secret.starts_with("md5"), "{secret}");
    let proxy = start_proxy(config(&format!(
        "auth_type = \"md5\"\n[users.{MD5_USER}]\npassword = \"{secret}\"\n"
    )))
    .await;
    let client = connect(&proxy.url(MD5_USER, MD5_PASSWORD, APP_DB))
        .await
        .expect("md5 login with the stored secret");
    client.simple_query("select 1").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_db_connections_caps_all_pools_of_a_database() {
    let proxy = start_proxy(config(&format!(
        "max_db_connections = 2\ndefault_pool_size = 5\nquery_wait_timeout = \"20s\"\n\
         [users.{SCRAM_USER}]\npassword = \"{SCRAM_PASSWORD}\"\n\
         [users.{MD5_USER}]\npassword = \"{MD5_PASSWORD}\"\n"
    )))
    .await;
    let mut tasks = Vec::new();
    for i in 0..8 {
        let (user, password) = if i % 2 == 0 {
            (SCRAM_USER, SCRAM_PASSWORD)
        } else {
            (MD5_USER, MD5_PASSWORD)
        };
        let url = proxy.url(user, password, APP_DB);
        tasks.push(tokio::spawn(async move {
            let client = connect(&url).await.expect("login");
            for _ in 0..3 {
                client
                    .simple_query("select pg_sleep(0.05)")
                    .await
                    .expect("query waits for a connection, then runs");
            }
        }));
    }
    let mut peak = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while tasks.iter().any(|t| !t.is_finished()) && tokio::time::Instant::now() < deadline {
        let n: u32 = shared_cluster()
            .psql(
                "postgres",
                "select count(*) from pg_stat_activity where datname = 'app' and usename in ('app_scram', 'app_md5')",
            )
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        peak = peak.max(n);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for t in tasks {
        t.await.expect("client task succeeded");
    }
    assert!(peak >= 1, "saw the server connections");
    assert!(peak <= 2, "max_db_connections = 2 but saw {peak} backends");
}

/// Peak number of backends per user while `tasks` run (sampled from pg_stat_activity).
async fn peak_backends(
    tasks: &[tokio::task::JoinHandle<()>],
    users: &[&str],
) -> std::collections::HashMap<String, u32> {
    let mut peak = std::collections::HashMap::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let list = users
        .iter()
        .map(|u| format!("'{u}'"))
        .collect::<Vec<_>>()
        .join(",");
    while tasks.iter().any(|t| !t.is_finished()) && tokio::time::Instant::now() < deadline {
        let out = shared_cluster()
            .psql(
                "postgres",
                &format!("select usename, count(*) from pg_stat_activity where usename in ({list}) group by usename"),
            )
            .unwrap();
        for line in out.lines() {
            if let Some((user, n)) = line.split_once('|') {
                let n: u32 = n.trim().parse().unwrap();
                let p = peak.entry(user.to_owned()).or_insert(0);
                *p = (*p).max(n);
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    peak
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_user_connections_caps_a_users_pools_across_databases() {
    let mut config = config(&format!(
        "max_user_connections = 2\ndefault_pool_size = 5\nquery_wait_timeout = \"20s\"\n\
         [users.{SCRAM_USER}]\npassword = \"{SCRAM_PASSWORD}\"\n\
         [users.{MD5_USER}]\npassword = \"{MD5_PASSWORD}\"\nmax_user_connections = 1\n"
    ));
    // A second name for the same database: a second pool of each user.
    let mut other = config.databases[APP_DB].clone();
    other.dbname = Some(APP_DB.to_owned());
    config.databases.insert("app2".to_owned(), other);
    let proxy = start_proxy(config).await;
    let mut tasks = Vec::new();
    for i in 0..12 {
        let (user, password) = if i % 3 == 0 {
            (MD5_USER, MD5_PASSWORD)
        } else {
            (SCRAM_USER, SCRAM_PASSWORD)
        };
        let db = if i % 2 == 0 { APP_DB } else { "app2" };
        let url = proxy.url(user, password, db);
        tasks.push(tokio::spawn(async move {
            let client = connect(&url).await.expect("login");
            for _ in 0..3 {
                client
                    .simple_query("select pg_sleep(0.05)")
                    .await
                    .expect("query waits for a connection, then runs");
            }
        }));
    }
    let peak = peak_backends(&tasks, &[SCRAM_USER, MD5_USER]).await;
    for t in tasks {
        t.await.expect("client task succeeded");
    }
    let scram = peak.get(SCRAM_USER).copied().unwrap_or(0);
    let md5 = peak.get(MD5_USER).copied().unwrap_or(0);
    assert!(
        scram >= 1 && md5 >= 1,
        "saw the server connections: {peak:?}"
    );
    assert!(
        scram <= 2,
        "max_user_connections = 2 but saw {scram} backends of {SCRAM_USER}"
    );
    assert!(
        md5 <= 1,
        "{MD5_USER}'s max_user_connections = 1 but saw {md5}"
    );
}

/// A connection closed while a connect waits for the budget gives its share back only
/// when its backend has exited: seen from the new connection itself, PostgreSQL never
/// counts more of the user's backends than the limit. The closed backend is made slow
/// to exit (it drops many temporary tables on the way out).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_connection_holds_its_budget_until_the_backend_exits() {
    let mut config = config(&format!(
        "pool_mode = \"transaction\"\nserver_reset_query = \"\"\nmax_user_connections = 1\n\
         query_wait_timeout = \"20s\"\n[users.{SCRAM_USER}]\npassword = \"{SCRAM_PASSWORD}\"\n"
    ));
    let mut other = config.databases[APP_DB].clone();
    other.dbname = Some(APP_DB.to_owned());
    config.databases.insert("app2".to_owned(), other);
    let proxy = start_proxy(config).await;
    let waiting = connect(&proxy.url(SCRAM_USER, SCRAM_PASSWORD, "app2"))
        .await
        .expect("login to app2");
    let leaving = connect(&proxy.url(SCRAM_USER, SCRAM_PASSWORD, APP_DB))
        .await
        .expect("login to app");
    // Temporary tables pin `leaving` to its server connection; with no reset query
    // the connection is closed when the client goes, and its backend drops them all.
    leaving
        .batch_execute(
            "DO $$ BEGIN FOR i IN 1..1500 LOOP \
             EXECUTE format('CREATE TEMP TABLE t%s (a int)', i); END LOOP; END $$",
        )
        .await
        .expect("temp tables created");
    drop(leaving);
    let rows = waiting
        .simple_query(&format!(
            "select count(*) from pg_stat_activity where usename = '{SCRAM_USER}'"
        ))
        .await
        .expect("query runs once the budget is free");
    let n = rows.iter().find_map(|m| match m {
        tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_owned),
        _ => None,
    });
    assert_eq!(
        n.as_deref(),
        Some("1"),
        "max_user_connections = 1, but PostgreSQL counted more of the user's backends"
    );
}
