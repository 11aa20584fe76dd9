//! sqlx through pgweir, in its default settings: every `query()` with binds goes
//! through the connection's statement cache (named server-side statements, prepared
//! once, bound again in later transactions), a `PgPool`, transactions, errors, COPY,
//! and session SETs.
//!
//! Run: `DATABASE_URL=postgres://... pgweir-driver-sqlx` (exit 0 = all passed).
//! `PGWEIR_POOL_MODE=transaction` also asserts that work really moved between
//! server connections (it cannot in session mode or straight to PostgreSQL).

use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;
use std::time::Instant;

use futures_util::TryStreamExt;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection, PgConnection, Row};

type Result<T = ()> = std::result::Result<T, Box<dyn std::error::Error + Send + Sync>>;
type Step = fn(String) -> Pin<Box<dyn Future<Output = Result>>>;

/// Fails the step with `what` unless `cond` holds.
fn check(cond: bool, what: impl FnOnce() -> String) -> Result {
    if cond {
        Ok(())
    } else {
        Err(what().into())
    }
}

/// Checks that `res` is a database error with SQLSTATE `code`.
fn expect_code<T>(res: sqlx::Result<T>, code: &str) -> Result {
    match res {
        Ok(_) => Err(format!("expected SQLSTATE {code}, got success").into()),
        Err(e) => {
            let got = e
                .as_database_error()
                .and_then(|d| d.code().map(|c| c.into_owned()));
            check(got.as_deref() == Some(code), || {
                format!("expected SQLSTATE {code}, got {e}")
            })
        }
    }
}

async fn schema(url: String) -> Result {
    let mut c = PgConnection::connect(&url).await?;
    sqlx::raw_sql(
        "DROP SCHEMA IF EXISTS sqlx CASCADE;
         CREATE SCHEMA sqlx;
         CREATE TABLE sqlx.items (id int PRIMARY KEY, owner int NOT NULL, label text);
         CREATE TABLE sqlx.marker (v text);
         INSERT INTO sqlx.marker VALUES ('from sqlx')",
    )
    .execute(&mut c)
    .await?;
    Ok(c.close().await?)
}

async fn insert(c: &mut PgConnection, id: i32, owner: i32, label: &str) -> sqlx::Result<()> {
    sqlx::query("INSERT INTO sqlx.items VALUES ($1, $2, $3)")
        .bind(id)
        .bind(owner)
        .bind(label)
        .execute(c)
        .await
        .map(drop)
}

async fn ids(c: &mut PgConnection, from: i32, to: i32) -> sqlx::Result<Vec<i32>> {
    sqlx::query_scalar("SELECT id FROM sqlx.items WHERE id BETWEEN $1 AND $2 ORDER BY id")
        .bind(from)
        .bind(to)
        .fetch_all(c)
        .await
}

async fn transactions(url: String) -> Result {
    let mut c = PgConnection::connect(&url).await?;
    let mut tx = c.begin().await?;
    insert(&mut tx, 1, 0, "kept").await?;
    tx.commit().await?;
    let mut tx = c.begin().await?;
    insert(&mut tx, 2, 0, "rolled back").await?;
    tx.rollback().await?;
    {
        let mut tx = c.begin().await?;
        insert(&mut tx, 3, 0, "dropped, so rolled back").await?;
    }
    let mut tx = c.begin().await?;
    insert(&mut tx, 4, 0, "outer").await?;
    let mut nested = tx.begin().await?; // a savepoint
    insert(&mut nested, 5, 0, "back to the savepoint").await?;
    nested.rollback().await?;
    tx.commit().await?;
    let got = ids(&mut c, 0, 999).await?;
    check(got == [1, 4], || {
        format!("committed rows only, got {got:?}")
    })?;
    Ok(c.close().await?)
}

async fn errors_and_recovery(url: String) -> Result {
    let mut c = PgConnection::connect(&url).await?;
    let div = "SELECT 10 / $1::int";
    for i in 1..6 {
        let v: i32 = sqlx::query_scalar(div).bind(i).fetch_one(&mut c).await?;
        check(v == 10 / i, || format!("10 / {i} = {v}"))?;
    }
    expect_code(sqlx::query(div).bind(0).fetch_one(&mut c).await, "22012")?;
    let v: i32 = sqlx::query_scalar(div).bind(2).fetch_one(&mut c).await?;
    check(v == 5, || "cached statement after an error".into())?;
    expect_code(
        sqlx::query("SELECT * FROM sqlx.nope")
            .fetch_all(&mut c)
            .await,
        "42P01",
    )?;
    let one: i32 = sqlx::query_scalar("SELECT 1").fetch_one(&mut c).await?;
    check(one == 1, || "connection works after an error".into())?;

    insert(&mut c, 10, 0, "before the error").await?;
    let mut tx = c.begin().await?;
    insert(&mut tx, 11, 0, "lost").await?;
    expect_code(sqlx::query(div).bind(0).fetch_one(&mut *tx).await, "22012")?;
    expect_code(sqlx::query(div).bind(1).fetch_one(&mut *tx).await, "25P02")?;
    tx.rollback().await?;
    let got = ids(&mut c, 10, 999).await?;
    check(got == [10], || {
        format!("the failed transaction left {got:?}")
    })?;
    Ok(c.close().await?)
}

async fn prepared_across_transactions(url: String) -> Result {
    let pool = PgPoolOptions::new()
        .max_connections(4)
        .min_connections(4)
        .connect(&url)
        .await?;
    let workers = (1..=6).map(|w: i32| {
        let pool = pool.clone();
        tokio::spawn(async move {
            let mut seen = HashSet::new();
            for i in 0..25 {
                let mut tx = pool.begin().await?;
                let row = sqlx::query("SELECT $1::int * 1000 + $2::int, pg_backend_pid()")
                    .bind(w)
                    .bind(i)
                    .fetch_one(&mut *tx)
                    .await?;
                let v: i32 = row.try_get(0)?;
                check(v == w * 1000 + i, || format!("worker {w} got {v}"))?;
                seen.insert(row.try_get::<i32, _>(1)?);
                insert(&mut tx, 100_000 + w * 1000 + i, w, &format!("w{w}")).await?;
                sqlx::query("SELECT pg_sleep(0.002)")
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                let n: i64 = sqlx::query_scalar("SELECT count(*) FROM sqlx.items WHERE owner = $1")
                    .bind(w)
                    .fetch_one(&pool)
                    .await?;
                check(n == i64::from(i) + 1, || {
                    format!("worker {w} sees {n} own rows, expected {}", i + 1)
                })?;
            }
            Result::Ok(seen)
        })
    });
    let mut all = HashSet::new();
    let mut moved = false;
    for handle in workers.collect::<Vec<_>>() {
        let seen = handle.await??;
        moved |= seen.len() >= 2;
        all.extend(seen);
    }
    pool.close().await;
    println!("  workers ran on {} server connections", all.len());
    if std::env::var("PGWEIR_POOL_MODE").as_deref() == Ok("transaction") {
        check(all.len() >= 2, || {
            "transaction mode spreads work over server connections".into()
        })?;
        check(moved, || "a client's statements moved servers".into())?;
    }
    Ok(())
}

async fn copy(url: String) -> Result {
    let mut c = PgConnection::connect(&url).await?;
    let mut copy_in = c
        .copy_in_raw("COPY sqlx.items (id, owner, label) FROM STDIN")
        .await?;
    let data: String = (0..500)
        .map(|i| format!("{}\t99\tcopied {i}\n", 200_000 + i))
        .collect();
    copy_in.send(data.as_bytes()).await?;
    let n = copy_in.finish().await?;
    check(n == 500, || format!("copy in count {n}"))?;
    let chunks: Vec<_> = c
        .copy_out_raw(
            "COPY (SELECT id, label FROM sqlx.items WHERE owner = 99 ORDER BY id) TO STDOUT",
        )
        .await?
        .try_collect()
        .await?;
    let text: String = chunks.iter().map(|b| String::from_utf8_lossy(b)).collect();
    let lines: Vec<&str> = text.lines().collect();
    check(
        lines.len() == 500 && lines.get(7) == Some(&"200007\tcopied 7"),
        || format!("copy out: {} lines", lines.len()),
    )?;
    let mut dup = c
        .copy_in_raw("COPY sqlx.items (id, owner, label) FROM STDIN")
        .await?;
    dup.send(&b"200000\t99\tduplicate\n"[..]).await?;
    expect_code(dup.finish().await, "23505")?;
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM sqlx.items WHERE owner = 99")
        .fetch_one(&mut c)
        .await?;
    check(n == 500, || format!("the failed COPY left {n} rows"))?;
    Ok(c.close().await?)
}

async fn session_settings(url: String) -> Result {
    let mut a = PgConnection::connect(&url).await?;
    let b_opts: PgConnectOptions = url.parse::<PgConnectOptions>()?.application_name("sqlx-b");
    let mut b = PgConnection::connect_with(&b_opts).await?;
    let b_zone: String = sqlx::query_scalar("SHOW TimeZone")
        .fetch_one(&mut b)
        .await?;
    for set in [
        "SET TimeZone = 'Asia/Tokyo'",
        "SET application_name = 'sqlx-suite'",
        "SET search_path = sqlx, public",
        "SET statement_timeout = '7s'",
    ] {
        sqlx::raw_sql(set).execute(&mut a).await?;
    }
    let q = "SELECT current_setting('TimeZone'), current_setting('application_name'), \
             current_setting('statement_timeout')";
    for _ in 0..8 {
        let mut ta = a.begin().await?;
        let mut tb = b.begin().await?;
        let got: (String, String, String) = sqlx::query_as(q).fetch_one(&mut *ta).await?;
        let marker: String = sqlx::query_scalar("SELECT v FROM marker")
            .fetch_one(&mut *ta)
            .await?;
        check(
            got == ("Asia/Tokyo".into(), "sqlx-suite".into(), "7s".into()) && marker == "from sqlx",
            || format!("client A settings {got:?} {marker}"),
        )?;
        let got: (String, String, String) = sqlx::query_as(q).fetch_one(&mut *tb).await?;
        check(got == (b_zone.clone(), "sqlx-b".into(), "0".into()), || {
            format!("client B sees only its own settings {got:?}")
        })?;
        ta.commit().await?;
        tb.commit().await?;
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    sqlx::raw_sql("RESET TimeZone").execute(&mut a).await?;
    let zone: String = sqlx::query_scalar("SHOW TimeZone")
        .fetch_one(&mut a)
        .await?;
    check(zone == b_zone, || {
        format!("RESET gives back {b_zone}, got {zone}")
    })?;
    a.close().await?;
    Ok(b.close().await?)
}

#[tokio::main]
async fn main() {
    let url = std::env::var("DATABASE_URL").expect("DATABASE_URL is set");
    let started = Instant::now();
    let steps: [(&str, Step); 6] = [
        ("schema", |u| Box::pin(schema(u))),
        ("transactions", |u| Box::pin(transactions(u))),
        ("errors_and_recovery", |u| Box::pin(errors_and_recovery(u))),
        ("prepared_across_transactions", |u| {
            Box::pin(prepared_across_transactions(u))
        }),
        ("copy", |u| Box::pin(copy(u))),
        ("session_settings", |u| Box::pin(session_settings(u))),
    ];
    let mut failed = Vec::new();
    for (name, step) in steps {
        let t = Instant::now();
        match tokio::time::timeout(std::time::Duration::from_secs(30), step(url.clone())).await {
            Ok(Ok(())) => println!("ok {name} ({:.2} s)", t.elapsed().as_secs_f64()),
            Ok(Err(e)) => {
                println!("FAIL {name}: {e}");
                failed.push(name);
            }
            Err(_) => {
                println!("FAIL {name}: timed out after 30 s");
                failed.push(name);
            }
        }
    }
    if !failed.is_empty() {
        println!("sqlx suite FAILED: {}", failed.join(", "));
        std::process::exit(1);
    }
    println!(
        "sqlx suite passed in {:.2} s",
        started.elapsed().as_secs_f64()
    );
}
