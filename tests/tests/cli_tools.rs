//! psql and pgbench through pgweir against real PostgreSQL 15: one-liners, scripts with
//! transactions, `\copy` both ways in both pool modes, ON_ERROR_STOP, and pgbench's
//! initialization (COPY) and runs with the simple, extended and prepared protocols.

mod clientkit;

use std::path::Path;
use std::process::Output;

use clientkit::{describe_output, superuser_sql, unique_name};
use weir_config::PoolMode;
use weir_tests::pg::{run_pgbench, run_psql};
use weir_tests::{app_config, start_proxy, TestProxy, APP_DB, SCRAM_PASSWORD, SCRAM_USER};

/// Runs psql against `url` off the runtime (the proxy runs on it).
async fn psql(url: &str, args: &[&str]) -> Output {
    let url = url.to_owned();
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        run_psql(&url, &args)
    })
    .await
    .expect("psql thread")
}

/// Runs psql and asserts success; returns stdout.
async fn psql_ok(url: &str, args: &[&str]) -> String {
    let out = psql(url, args).await;
    assert!(
        out.status.success(),
        "psql {args:?}: {}",
        describe_output(&out)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs pgbench through `proxy` as the SCRAM user off the runtime.
async fn pgbench(proxy: &TestProxy, args: &[&str]) -> Output {
    let port = proxy.addr.port().to_string();
    let host = proxy.addr.ip().to_string();
    let mut all: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    all.extend(["-h", &host, "-p", &port, "-U", SCRAM_USER, APP_DB].map(str::to_owned));
    tokio::task::spawn_blocking(move || {
        let all: Vec<&str> = all.iter().map(String::as_str).collect();
        run_pgbench(&all, &[("PGPASSWORD", SCRAM_PASSWORD)])
    })
    .await
    .expect("pgbench thread")
}

/// `pgbench -i -s 1` through `proxy` (COPY through the proxy), asserted to succeed.
async fn pgbench_init(proxy: &TestProxy) {
    let init = pgbench(proxy, &["-i", "-q", "-s", "1"]).await;
    assert!(
        init.status.success(),
        "pgbench -i: {}",
        describe_output(&init)
    );
}

/// Asserts a pgbench run succeeded with no failed transaction and did real work.
fn assert_bench_ok(out: &Output, what: &str) {
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{what}: {}", describe_output(out));
    assert!(
        stdout.contains("number of failed transactions: 0 ("),
        "{what}: {}",
        describe_output(out)
    );
    let processed = stdout
        .lines()
        .find_map(|l| l.strip_prefix("number of transactions actually processed: "))
        .and_then(|rest| rest.split('/').next())
        .and_then(|n| n.trim().parse::<u64>().ok())
        .unwrap_or(0);
    assert!(
        processed >= 50,
        "{what}: only {processed} transactions\n{stdout}"
    );
}

/// TPC-B's invariant: every balance change is in the history, once.
async fn assert_pgbench_balances_agree() {
    let sums = superuser_sql(
        "select (select sum(abalance) from pgbench_accounts), \
                (select sum(bbalance) from pgbench_branches), \
                (select sum(tbalance) from pgbench_tellers), \
                (select coalesce(sum(delta), 0) from pgbench_history), \
                (select count(*) from pgbench_history)",
    )
    .await;
    let parts: Vec<&str> = sums.split('|').collect();
    assert_eq!(parts.len(), 5, "{sums}");
    assert!(
        parts[..4].iter().all(|p| *p == parts[0]),
        "balances disagree (accounts|branches|tellers|history): {sums}"
    );
    assert_ne!(parts[4], "0", "no history rows: {sums}");
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

/// `-c`, a script with committed and rolled-back transactions, and ON_ERROR_STOP both
/// outside and inside a transaction; pool size 1, so every psql reuses the one server
/// connection and a dirty one would show.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_commands_scripts_and_errors() {
    let proxy = start_proxy(app_config(PoolMode::Transaction, 1)).await;
    let url = proxy.app_url();
    assert_eq!(psql_ok(&url, &["-At", "-c", "select 1"]).await.trim(), "1");

    let dir = tempfile::tempdir().expect("temp dir");
    let table = unique_name("psql_script");
    let script = dir.path().join("script.sql");
    write(
        &script,
        &format!(
            "create table {table} (i int, t text);\n\
             begin;\n\
             insert into {table} values (1, 'a');\n\
             insert into {table} select g, 'x' || g from generate_series(2, 100) g;\n\
             commit;\n\
             begin;\n\
             insert into {table} values (999, 'gone');\n\
             rollback;\n\
             select count(*), sum(i) from {table};\n"
        ),
    );
    let script_arg = script.to_string_lossy().into_owned();
    let out = psql_ok(&url, &["-At", "-q", "-f", &script_arg]).await;
    assert_eq!(out.trim(), "100|5050");

    let failing = dir.path().join("failing.sql");
    write(&failing, "select 'before';\nselect 1/0;\nselect 'after';\n");
    let failing_arg = failing.to_string_lossy().into_owned();
    let out = psql(&url, &["-At", "-f", &failing_arg]).await;
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert_eq!(out.status.code(), Some(3), "{}", describe_output(&out));
    assert!(
        stdout.contains("before") && !stdout.contains("after"),
        "{stdout}"
    );
    assert!(stderr.contains("division by zero"), "{stderr}");

    // psql quits inside an aborted transaction: that server connection must not be reused dirty.
    let in_tx = dir.path().join("in_tx.sql");
    write(
        &in_tx,
        &format!("begin;\ninsert into {table} values (500, 'no');\nselect 1/0;\ncommit;\n"),
    );
    let in_tx_arg = in_tx.to_string_lossy().into_owned();
    let out = psql(&url, &["-At", "-f", &in_tx_arg]).await;
    assert_eq!(out.status.code(), Some(3), "{}", describe_output(&out));
    let after = psql_ok(
        &url,
        &[
            "-At",
            "-c",
            &format!("select now() = statement_timestamp(), count(*) from {table}"),
        ],
    )
    .await;
    assert_eq!(
        after.trim(),
        "t|100",
        "next client inherited a transaction or saw its rows"
    );
}

/// `\copy` from and to files (COPY FROM STDIN / TO STDOUT passthrough) in both modes,
/// outside and inside a transaction, and a COPY that fails mid-stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_copy_both_ways_in_both_modes() {
    const ROWS: usize = 50_000;
    let dir = tempfile::tempdir().expect("temp dir");
    let input = dir.path().join("in.tsv");
    let mut data = String::new();
    for i in 1..=ROWS {
        data.push_str(&format!("{i}\tvalue number {i} with some padding text\n"));
    }
    write(&input, &data);
    let bad = dir.path().join("bad.tsv");
    write(
        &bad,
        &format!(
            "{}not_a_number\toops\n{}",
            &data[..2000],
            &data[2000..20_000]
        ),
    );

    for mode in [PoolMode::Transaction, PoolMode::Session] {
        let proxy = start_proxy(app_config(mode, 1)).await;
        let url = proxy.app_url();
        let table = unique_name("psql_copy");
        let output = dir.path().join(format!("out-{table}.tsv"));
        let script = dir.path().join(format!("{table}.sql"));
        write(
            &script,
            &format!(
                "create table {table} (i int, t text);\n\
                 \\copy {table} from '{input}'\n\
                 begin;\n\
                 \\copy {table} from '{input}'\n\
                 rollback;\n\
                 select count(*), sum(i) from {table};\n\
                 \\copy (select * from {table} order by i) to '{output}'\n",
                input = input.display(),
                output = output.display()
            ),
        );
        let script_arg = script.to_string_lossy().into_owned();
        let out = psql_ok(&url, &["-At", "-q", "-f", &script_arg]).await;
        assert_eq!(
            out.trim(),
            format!("{ROWS}|{}", ROWS * (ROWS + 1) / 2),
            "{mode:?}"
        );
        let copied = std::fs::read_to_string(&output).expect("copy output");
        assert!(
            copied == data,
            "{mode:?}: \\copy to file differs from the input"
        );

        let copy_bad = format!("\\copy {table} from '{}'", bad.display());
        let out = psql(&url, &["-At", "-c", &copy_bad]).await;
        assert!(!out.status.success(), "{mode:?}: {}", describe_output(&out));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("invalid input syntax"),
            "{mode:?}: {stderr}"
        );
        let count = psql_ok(
            &url,
            &["-At", "-c", &format!("select count(*) from {table}")],
        )
        .await;
        assert_eq!(
            count.trim(),
            ROWS.to_string(),
            "{mode:?}: failed COPY left rows"
        );
    }
}

/// pgbench -i (COPY through the proxy) then TPC-B with -M simple and -M extended, 8
/// clients over 4 server connections in transaction mode: no failed transaction, and
/// the balances agree with the history afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgbench_simple_and_extended_in_transaction_mode() {
    let proxy = start_proxy(app_config(PoolMode::Transaction, 4)).await;
    pgbench_init(&proxy).await;
    let accounts = superuser_sql("select count(*) from pgbench_accounts").await;
    assert_eq!(accounts, "100000");

    // The first run vacuums and truncates pgbench_history through the proxy; the second
    // skips that (-n) so the history holds both runs for the balance check.
    let out = pgbench(&proxy, &["-M", "simple", "-c", "8", "-j", "2", "-T", "3"]).await;
    assert_bench_ok(&out, "simple");
    let out = pgbench(
        &proxy,
        &["-n", "-M", "extended", "-c", "8", "-j", "2", "-T", "3"],
    )
    .await;
    assert_bench_ok(&out, "extended");
    assert_pgbench_balances_agree().await;
}

/// pgbench -M prepared (named statements) works in session mode.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgbench_prepared_in_session_mode() {
    let proxy = start_proxy(app_config(PoolMode::Session, 4)).await;
    pgbench_init(&proxy).await;
    let out = pgbench(&proxy, &["-M", "prepared", "-c", "4", "-j", "2", "-T", "3"]).await;
    assert_bench_ok(&out, "prepared");
    assert_pgbench_balances_agree().await;
}

/// pgbench -M prepared in transaction mode: select-only (pgbench prepares each statement
/// with a blocking PQprepare, so a TPC-B run with more clients than server connections
/// deadlocks its own thread, through any transaction pooler) with 8 clients over 4
/// server connections; then TPC-B with -M extended and `cache_unnamed_statements`: no
/// failed transaction, balances agree, and the unnamed statements really ran as the
/// proxy's named server statements.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgbench_prepared_and_cached_unnamed_in_transaction_mode() {
    let mut config = app_config(PoolMode::Transaction, 4);
    config.cache_unnamed_statements = true;
    let proxy = start_proxy(config).await;
    pgbench_init(&proxy).await;
    let out = pgbench(
        &proxy,
        &[
            "-n", "-S", "-M", "prepared", "-c", "8", "-j", "2", "-T", "3",
        ],
    )
    .await;
    assert_bench_ok(&out, "prepared");
    let out = pgbench(&proxy, &["-M", "extended", "-c", "8", "-j", "2", "-T", "3"]).await;
    assert_bench_ok(&out, "extended, cached");
    assert_pgbench_balances_agree().await;
    let out = psql_ok(
        &proxy.app_url(),
        &[
            "-Atc",
            "select count(*) > 0 from pg_prepared_statements where name like '\\_pgweir\\_%'",
        ],
    )
    .await;
    assert_eq!(out.trim(), "t", "server-side statements in use");
}

/// Pitfall 19: pgbench -M prepared with 15 clients on 2 threads over a pool of 10. Each
/// thread prepares a client's statements with a blocking Parse+Sync while its other
/// clients hold servers mid-transaction (TPC-B holds one across several round trips);
/// a Parse the proxy has seen parse before is answered without a server, so nothing
/// waits on the blocked thread. TPC-B-like and select-only, no failed transaction.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgbench_prepared_tpcb_with_fewer_threads_than_clients_on_a_small_pool() {
    let mut config = app_config(PoolMode::Transaction, 10);
    // A deadlock shows as a wait timeout, not a hung test.
    config.query_wait_timeout = std::time::Duration::from_secs(20);
    let proxy = start_proxy(config).await;
    pgbench_init(&proxy).await;
    let out = pgbench(
        &proxy,
        &["-M", "prepared", "-c", "15", "-j", "2", "-T", "4"],
    )
    .await;
    assert_bench_ok(&out, "prepared TPC-B, -c 15 -j 2");
    let out = pgbench(
        &proxy,
        &[
            "-n", "-S", "-M", "prepared", "-c", "15", "-j", "2", "-T", "3",
        ],
    )
    .await;
    assert_bench_ok(&out, "prepared select-only, -c 15 -j 2");
    assert_pgbench_balances_agree().await;
}
