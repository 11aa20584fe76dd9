//! The Grafana dashboard (`deploy/grafana/pgweir.json`) cannot rot: every metric name
//! any of its PromQL expressions or template-variable queries uses must be a series in a
//! live `/metrics` scrape of pgweir (real PostgreSQL, real clients, an error and a
//! waiting-free workload so histograms and the error family have series).
//!
//! Names are matched against the scrape's sample names (`pgweir_transactions_total`,
//! `pgweir_wait_duration_seconds_bucket`), which is what PromQL selects: stricter than
//! matching family names, so a `_total` dropped or added in either place fails.

mod admin_support;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

use admin_support::{admin_config, start};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use weir_config::PoolMode;
use weir_tests::connect;

/// Words that are never metric names: binary/set operators, modifiers, and the
/// aggregation operators (which may be followed by `by (...)` instead of `(`).
const KEYWORDS: [&str; 25] = [
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "offset",
    "bool",
    "and",
    "or",
    "unless",
    "inf",
    "nan",
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
];

/// Removes every `open ... close` span (not nested across kinds), keeping the rest.
fn strip_between(s: &str, open: char, close: char) -> String {
    let mut out = String::with_capacity(s.len());
    let mut depth = 0usize;
    for c in s.chars() {
        if c == open {
            depth += 1;
        } else if c == close && depth > 0 {
            depth -= 1;
        } else if depth == 0 {
            out.push(c);
        }
    }
    out
}

/// The metric names a PromQL expression (or a Grafana `label_values(...)` query) selects.
fn metric_names(expr: &str) -> BTreeSet<String> {
    // Grafana's label_values(selector, label): the label is not a metric.
    let mut e = expr.trim().to_owned();
    if let Some(inner) = e
        .strip_prefix("label_values(")
        .and_then(|r| r.strip_suffix(')'))
    {
        e = match inner.rsplit_once(',') {
            Some((selector, _label)) => selector.to_owned(),
            None => inner.to_owned(),
        };
    }
    // String literals (label values, regexes), then label matchers and range/subquery
    // brackets, where no metric name can appear.
    let mut no_strings = String::new();
    let mut quote: Option<char> = None;
    let mut escaped = false;
    for c in e.chars() {
        match quote {
            Some(q) => {
                if escaped {
                    escaped = false;
                } else if c == '\\' {
                    escaped = true;
                } else if c == q {
                    quote = None;
                }
            }
            None if c == '"' || c == '\'' || c == '`' => quote = Some(c),
            None => no_strings.push(c),
        }
    }
    let bare = strip_between(&strip_between(&no_strings, '{', '}'), '[', ']');
    let chars: Vec<char> = bare.chars().collect();
    let mut names = BTreeSet::new();
    let mut i = 0;
    let mut skip_list = false;
    while i < chars.len() {
        let c = chars[i];
        if c.is_ascii_alphabetic() || c == '_' || c == ':' {
            let start = i;
            while i < chars.len()
                && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == ':')
            {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let mut j = i;
            while j < chars.len() && chars[j].is_whitespace() {
                j += 1;
            }
            let call = chars.get(j) == Some(&'(');
            let lower = word.to_ascii_lowercase();
            if KEYWORDS.contains(&lower.as_str()) {
                // `by (a, b)` & co: the list holds label names.
                skip_list = call
                    && matches!(
                        lower.as_str(),
                        "by" | "without" | "on" | "ignoring" | "group_left" | "group_right"
                    );
                continue;
            }
            if !call && !word.starts_with('$') {
                names.insert(word);
            }
            continue;
        }
        if c == '(' && skip_list {
            while i < chars.len() && chars[i] != ')' {
                i += 1;
            }
            skip_list = false;
        }
        // Numbers (0.99, 1e3) and Grafana variables ($__rate_interval) are not names.
        if c.is_ascii_digit() || c == '$' {
            while i + 1 < chars.len()
                && (chars[i + 1].is_ascii_alphanumeric()
                    || chars[i + 1] == '_'
                    || chars[i + 1] == '.')
            {
                i += 1;
            }
        }
        i += 1;
    }
    names
}

/// Every PromQL string in the dashboard: panel target `expr`s and templating queries.
fn queries(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(map) => {
            for (k, v) in map {
                match (k.as_str(), v) {
                    ("expr", serde_json::Value::String(s)) => out.push(s.clone()),
                    ("query", serde_json::Value::String(s)) if s.contains('(') => {
                        out.push(s.clone());
                    }
                    _ => queries(v, out),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| queries(v, out)),
        _ => {}
    }
}

/// Sample names of an OpenMetrics scrape.
fn sample_names(scrape: &str) -> BTreeSet<String> {
    scrape
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(str::to_owned)
        .collect()
}

async fn http_get(addr: SocketAddr, path: &str) -> String {
    let mut s = TcpStream::connect(addr).await.expect("connect to /metrics");
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await
        .expect("write");
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut raw))
        .await
        .expect("scrape in time")
        .expect("read");
    let text = String::from_utf8_lossy(&raw).into_owned();
    assert!(
        text.starts_with("HTTP/1.1 200") || text.starts_with("HTTP/1.0 200"),
        "{text}"
    );
    text.split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default()
}

#[test]
fn promql_names_are_found_and_labels_functions_and_variables_are_not() {
    let names = |e: &str| metric_names(e).into_iter().collect::<Vec<_>>();
    assert_eq!(
        names(
            r#"histogram_quantile(0.99, sum by (le, database) (rate(pgweir_wait_duration_seconds_bucket{instance=~"$instance", x="a{b}"}[$__rate_interval])))"#
        ),
        ["pgweir_wait_duration_seconds_bucket"]
    );
    assert_eq!(
        names("sum(rate(a_total[5m])) / on (db) group_left (x) sum(b) unless c offset 5m"),
        ["a_total", "b", "c"]
    );
    assert_eq!(
        names(r#"label_values(pgweir_pool_clients{instance=~"$instance"}, database)"#),
        ["pgweir_pool_clients"]
    );
    assert_eq!(names("1e3 * 0.5"), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_the_dashboard_queries_is_in_a_live_scrape() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/grafana/pgweir.json");
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).expect("read the dashboard"))
            .expect("the dashboard is JSON");
    let mut exprs = Vec::new();
    queries(&dashboard, &mut exprs);
    assert!(exprs.len() >= 20, "found only {} queries", exprs.len());

    let mut config = admin_config(PoolMode::Transaction, 4);
    config.http_listen = Some(([127, 0, 0, 1], 0).into());
    let running = start(config, None).await;
    let http = running.http_addr.expect("HTTP endpoint on");
    let client = connect(&running.app_url()).await.expect("login");
    for _ in 0..5 {
        client.simple_query("select 1").await.expect("query");
    }
    client
        .batch_execute("begin; select 2; commit")
        .await
        .expect("transaction");
    // An error, so the errors family has a series (class 42).
    assert!(client
        .simple_query("select * from no_such_table")
        .await
        .is_err());
    let scrape = http_get(http, "/metrics").await;
    let live = sample_names(&scrape);

    let mut used = BTreeSet::new();
    for e in &exprs {
        used.extend(metric_names(e));
    }
    let missing: Vec<&String> = used.iter().filter(|n| !live.contains(*n)).collect();
    assert!(
        missing.is_empty(),
        "the dashboard queries metrics a live pgweir does not serve: {missing:?}\nserved: {live:?}"
    );
    let families: BTreeSet<&str> = scrape
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split(' ').next())
        .collect();
    let unused: Vec<&&str> = families
        .iter()
        .filter(|f| !used.iter().any(|u| u.starts_with(**f)))
        .collect();
    eprintln!(
        "dashboard: {} queries over {} metrics, all served; families not on it: {unused:?}",
        exprs.len(),
        used.len()
    );
    running.stop().await;
}
