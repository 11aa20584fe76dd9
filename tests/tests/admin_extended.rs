//! The admin console through the real proxy with drivers that use only the
//! extended query protocol (pitfall 16): tokio-postgres `query()` with binary
//! results, and psycopg 3 in its default non-autocommit mode (implicit BEGIN,
//! then COMMIT/ROLLBACK), with binary cursors, prepared statements and errors.

mod admin_support;

use std::path::{Path, PathBuf};
use std::process::Command;

use admin_support::{admin_config, start};
use weir_config::PoolMode;
use weir_tests::connect;

/// psycopg 3 against the console; `APP_URL`, `ADMIN_URL` and `STATS_URL` come from the test.
const PSYCOPG_SCRIPT: &str = r#"
import os
from decimal import Decimal
import psycopg
from psycopg.pq import TransactionStatus

app = psycopg.connect(os.environ["APP_URL"], autocommit=True)
app.execute("SELECT 1")  # so the app pool exists

with psycopg.connect(os.environ["ADMIN_URL"]) as conn:
    cur = conn.execute("SHOW POOLS")
    cols = [d.name for d in cur.description]
    assert cols[:3] == ["database", "user", "cl_active"], cols
    rows = {r[0]: r for r in cur.fetchall()}
    assert isinstance(rows["app"][2], int), rows
    assert conn.info.transaction_status == TransactionStatus.INTRANS
    conn.commit()
    assert conn.info.transaction_status == TransactionStatus.IDLE

    # Text and binary numeric both decode to Decimal.
    stats = {r[0]: r for r in conn.execute("SHOW STATS").fetchall()}
    text_count = stats["app"][1]
    assert isinstance(text_count, Decimal) and text_count >= 1, stats
    with conn.cursor(binary=True) as cur:
        cur.execute("SHOW STATS")
        row = next(r for r in cur.fetchall() if r[0] == "app")
        assert isinstance(row[1], Decimal) and row[1] >= text_count, row
        cur.execute("SHOW POOLS")
        assert isinstance(cur.fetchone()[2], int)
    conn.rollback()

    # An error fails the block until ROLLBACK; then the session goes on.
    try:
        conn.execute("SHOW NOTHING")
        raise AssertionError("SHOW NOTHING succeeded")
    except psycopg.errors.SyntaxError as e:
        assert "SHOW HELP" in str(e), e
    assert conn.info.transaction_status == TransactionStatus.INERROR
    conn.rollback()

    # Server-side prepared statements (psycopg prepares after prepare=True).
    for _ in range(3):
        (version,) = conn.execute("SHOW VERSION", prepare=True).fetchone()
        assert version.startswith("PgBouncer 1.18.0"), version
    conn.commit()

with psycopg.connect(os.environ["ADMIN_URL"], autocommit=True) as conn:
    conn.execute("PAUSE app")
    state = dict(conn.execute("SHOW STATE").fetchall())
    conn.execute("RESUME app")
    assert set(state) == {"active", "paused", "suspended"}, state

with psycopg.connect(os.environ["STATS_URL"], autocommit=True) as conn:
    try:
        conn.execute("PAUSE")
        raise AssertionError("a stats user paused")
    except psycopg.errors.InsufficientPrivilege:
        pass
    assert conn.execute("SHOW LISTS").fetchone()[0] == "databases"

app.close()
print("psycopg admin console: ok")
"#;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokio_postgres_query_reads_typed_rows() {
    let pgweir = start(admin_config(PoolMode::Transaction, 2), None).await;
    let app = connect(&pgweir.app_url()).await.expect("app login");
    app.simple_query("SELECT 1").await.expect("app query");

    let mut admin = connect(&pgweir.admin_url()).await.expect("console login");
    let rows = admin.query("SHOW POOLS", &[]).await.expect("show pools");
    let app_row = rows
        .iter()
        .find(|r| r.get::<_, &str>("database") == "app")
        .expect("app pool");
    assert!(app_row.get::<_, i32>("sv_idle") + app_row.get::<_, i32>("sv_active") >= 1);
    let servers = admin.query("SHOW SERVERS", &[]).await.expect("servers");
    assert!(servers[0].get::<_, i32>("remote_pid") > 0);

    let stmt = admin.prepare("SHOW LATENCY").await.expect("prepare");
    for _ in 0..2 {
        let rows = admin.query(&stmt, &[]).await.expect("latency");
        assert!(rows.iter().all(|r| r.get::<_, i64>("query_max_us") >= 0));
    }
    let tx = admin.transaction().await.expect("begin");
    tx.query_one("SHOW VERSION", &[]).await.expect("version");
    tx.commit().await.expect("commit");

    let err = admin
        .query("SELECT 1", &[])
        .await
        .expect_err("not a command");
    assert_eq!(err.code().map(|c| c.code()), Some("42601"));
    assert!(admin.query("SHOW STATE", &[]).await.is_ok());
    drop(admin);
    pgweir.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psycopg3_uses_the_console() {
    let setup = Command::new(repo().join("tests/drivers/setup.sh"))
        .arg("python")
        .status()
        .expect("run setup.sh");
    assert!(setup.success(), "tests/drivers/setup.sh python: {setup}");

    let pgweir = start(admin_config(PoolMode::Transaction, 2), None).await;
    let python = repo().join("target/drivers/venv/bin/python");
    let mut cmd = Command::new(python);
    cmd.arg("-c")
        .arg(PSYCOPG_SCRIPT)
        .env("APP_URL", pgweir.app_url())
        .env("ADMIN_URL", pgweir.admin_url())
        .env("STATS_URL", pgweir.stats_url());
    let out = tokio::task::spawn_blocking(move || cmd.output())
        .await
        .expect("join")
        .expect("run python");
    assert!(
        out.status.success(),
        "psycopg script failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    pgweir.stop().await;
}
