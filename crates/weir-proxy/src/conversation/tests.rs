//! The conversation as pure logic: client frames in, server frames in, what each side
//! gets out. No sockets.

use std::sync::atomic::Ordering::Relaxed;

use bytes::BytesMut;
use weir_config::SessionFeatures;
use weir_pool::PoolMetrics;
use weir_wire::build::{put_frame, put_query, put_ready_for_query, put_simple_error, Severity};

use super::*;
use crate::prepared::StatementRegistry;
use crate::session_state::{ClientSession, ServerSession};

fn frames(parts: &[(u8, &[u8])]) -> BytesMut {
    let mut b = BytesMut::new();
    for (tag, body) in parts {
        put_frame(&mut b, *tag, |x| x.extend_from_slice(body));
    }
    b
}

fn ready(status: u8) -> BytesMut {
    let mut b = BytesMut::new();
    put_ready_for_query(&mut b, status);
    b
}

/// Tags of the frames in `buf`.
fn tags(buf: &[u8]) -> String {
    let mut out = String::new();
    let mut rest = buf;
    while let Ok(Some(h)) = Header::peek(rest, 1 << 20) {
        out.push(h.tag as char);
        rest = &rest[h.frame_len()..];
    }
    out
}

/// One client and one server connection, with the conversation between them.
struct Harness {
    conv: Conversation,
    client: ClientSession,
    server: ServerSession,
    registry: StatementRegistry,
    metrics: PoolMetrics,
    cache_unnamed: bool,
}

impl Harness {
    fn new() -> Self {
        Harness {
            conv: Conversation::default(),
            client: ClientSession::default(),
            server: ServerSession::default(),
            registry: StatementRegistry::default(),
            metrics: PoolMetrics::new(),
            cache_unnamed: false,
        }
    }

    /// A new server connection for the same client (as after a checkout).
    fn switch_server(&mut self) {
        self.server = ServerSession::default();
        self.conv = Conversation::default();
    }

    /// Client bytes in: (bytes sent to the server, bytes the proxy answered itself).
    fn client_sends(&mut self, buf: &[u8]) -> (BytesMut, BytesMut) {
        let (mut to_server, mut to_client) = (BytesMut::new(), BytesMut::new());
        let mut ctx = ctx(
            &mut self.client,
            &mut self.server,
            &self.registry,
            &self.metrics,
            self.cache_unnamed,
        );
        let scan = self
            .conv
            .scan_client(buf, 1 << 20, &mut ctx, &mut to_server, &mut to_client)
            .expect("valid client input");
        assert_eq!(scan.consumed, buf.len(), "whole frames");
        if !scan.edited {
            to_server.extend_from_slice(&buf[..scan.consumed]);
        }
        (to_server, to_client)
    }

    /// Server bytes in: what the client gets.
    fn server_sends(&mut self, buf: &[u8]) -> BytesMut {
        let mut to_client = BytesMut::new();
        let mut ctx = ctx(
            &mut self.client,
            &mut self.server,
            &self.registry,
            &self.metrics,
            self.cache_unnamed,
        );
        let scan = self
            .conv
            .scan_server(buf, 1 << 20, &mut ctx, &mut to_client)
            .expect("valid server output");
        assert_eq!(scan.consumed, buf.len());
        if !scan.edited {
            to_client.extend_from_slice(&buf[..scan.consumed]);
        }
        to_client
    }
}

/// A breaker that lives as long as the tests.
fn breaker() -> &'static weir_pool::breaker::Breaker {
    static BREAKER: std::sync::OnceLock<weir_pool::breaker::Breaker> = std::sync::OnceLock::new();
    BREAKER.get_or_init(|| weir_pool::breaker::Breaker::new(Default::default()))
}

/// The conversation's view of the harness, transaction mode.
fn ctx<'a>(
    client: &'a mut ClientSession,
    server: &'a mut ServerSession,
    registry: &'a StatementRegistry,
    metrics: &'a PoolMetrics,
    cache_unnamed: bool,
) -> Ctx<'a> {
    Ctx {
        client,
        server,
        registry,
        metrics,
        transaction_mode: true,
        max_prepared: 100,
        features: SessionFeatures::Pin,
        max_pinned: 1,
        breaker: breaker(),
        cache_unnamed,
        who: crate::registry::ClientTag::NONE,
    }
}

const PARSE_S1: (u8, &[u8]) = (b'P', b"s1\0select 1\0\0\0");
const BIND_S1: (u8, &[u8]) = (b'B', b"\0s1\0\0\0\0\0\0\0");
const EXECUTE: (u8, &[u8]) = (b'E', b"\0\0\0\0\0");
const SYNC: (u8, &[u8]) = (b'S', b"");

#[test]
fn released_only_after_the_last_sync_is_answered() {
    let mut h = Harness::new();
    let group: &[(u8, &[u8])] = &[
        (b'P', b"\0select 1\0\0\0"),
        (b'B', b"\0\0\0\0\0\0\0\0"),
        EXECUTE,
        SYNC,
    ];
    let mut batch = frames(group);
    batch.extend_from_slice(&frames(group));
    h.client_sends(&batch);
    assert!(!h.conv.is_idle());
    h.server_sends(&frames(&[(b'1', b""), (b'2', b""), (b'C', b"SELECT 1\0")]));
    h.server_sends(&ready(b'I'));
    assert!(!h.conv.is_idle(), "one Sync still owed");
    h.server_sends(&frames(&[(b'1', b""), (b'2', b""), (b'C', b"SELECT 1\0")]));
    h.server_sends(&ready(b'I'));
    assert!(h.conv.is_idle());
}

#[test]
fn flush_without_sync_keeps_the_server() {
    let mut h = Harness::new();
    h.client_sends(&frames(&[(b'P', b"\0select 1\0\0\0"), (b'H', b"")]));
    h.server_sends(&frames(&[(b'1', b"")]));
    assert!(h.conv.all_answered());
    assert!(!h.conv.is_idle(), "mid-sequence until a Sync");
    h.client_sends(&frames(&[SYNC]));
    h.server_sends(&ready(b'I'));
    assert!(h.conv.is_idle());
}

#[test]
fn a_named_statement_is_renamed_and_parsed_once_per_server() {
    let mut h = Harness::new();
    let (to_server, to_client) = h.client_sends(&frames(&[PARSE_S1, SYNC]));
    assert_eq!(tags(&to_server), "PS");
    assert!(to_server.windows(9).any(|w| w == b"_pgweir_1"), "renamed");
    assert!(to_client.is_empty());
    assert_eq!(
        tags(&h.server_sends(&frames(&[(b'1', b""), (b'Z', b"I")]))),
        "1Z"
    );
    assert!(h.conv.is_idle());

    // Next transaction on the same server: Bind renamed, no Parse.
    h.conv = Conversation::default();
    let (to_server, _) = h.client_sends(&frames(&[BIND_S1, EXECUTE, SYNC]));
    assert_eq!(tags(&to_server), "BES");

    // On another server: the Parse goes first and its answer is swallowed.
    h.switch_server();
    let (to_server, _) = h.client_sends(&frames(&[BIND_S1, EXECUTE, SYNC]));
    assert_eq!(tags(&to_server), "PBES");
    let got = h.server_sends(&frames(&[
        (b'1', b""),
        (b'2', b""),
        (b'D', b"\0\x01\0\0\0\x011"),
        (b'C', b"SELECT 1\0"),
        (b'Z', b"I"),
    ]));
    assert_eq!(tags(&got), "2DCZ");
    assert!(h.conv.is_idle());

    // A second Parse of the same text under another name: answered by the proxy.
    h.conv = Conversation::default();
    let (to_server, to_client) = h.client_sends(&frames(&[(b'P', b"s2\0select 1\0\0\0"), SYNC]));
    assert_eq!(tags(&to_server), "S");
    assert_eq!(
        tags(&to_client),
        "1",
        "ParseComplete at once: nothing was owed before it"
    );
    assert_eq!(
        h.registry.intern(b"select 1\0\0\0").id,
        1,
        "one server name for both"
    );
}

#[test]
fn an_error_skips_to_sync_and_undoes_what_the_batch_recorded() {
    let mut h = Harness::new();
    let bad: (u8, &[u8]) = (b'P', b"s1\0selec\0\0\0");
    let (to_server, _) = h.client_sends(&frames(&[bad, BIND_S1, EXECUTE, SYNC]));
    assert_eq!(tags(&to_server), "PBES");
    let mut err = BytesMut::new();
    put_simple_error(&mut err, Severity::Error, "42601", "syntax error");
    let got = h.server_sends(&err);
    assert_eq!(tags(&got), "E");
    assert!(
        h.client.statements.get(b"s1").is_none(),
        "the failed Parse is undone"
    );
    assert!(h.server.statements.is_empty());
    assert_eq!(tags(&h.server_sends(&ready(b'I'))), "Z");
    assert!(h.conv.is_idle());
}

#[test]
fn close_is_answered_in_order_and_keeps_the_servers_copy() {
    let mut h = Harness::new();
    h.client_sends(&frames(&[PARSE_S1, SYNC]));
    h.server_sends(&frames(&[(b'1', b""), (b'Z', b"I")]));
    h.conv = Conversation::default();
    let mut close = BytesMut::new();
    put_query(&mut close, "select 2");
    close.extend_from_slice(&frames(&[(b'C', b"Ss1\0"), SYNC]));
    let (to_server, to_client) = h.client_sends(&close);
    assert_eq!(tags(&to_server), "QS", "the Close stays with the proxy");
    assert!(
        to_client.is_empty(),
        "CloseComplete waits for the query's answers"
    );
    let got = h.server_sends(&frames(&[(b'C', b"SELECT 1\0"), (b'Z', b"I")]));
    assert_eq!(tags(&got), "CZ3");
    assert_eq!(tags(&h.server_sends(&ready(b'I'))), "Z");
    assert!(h.client.statements.get(b"s1").is_none());
    assert_eq!(
        h.server.statements.len(),
        1,
        "still prepared for other clients"
    );
}

#[test]
fn fatal_error_is_never_idle() {
    let mut h = Harness::new();
    let mut q = BytesMut::new();
    put_query(&mut q, "select 1");
    h.client_sends(&q);
    let mut err = BytesMut::new();
    put_simple_error(&mut err, Severity::Fatal, "57P01", "terminating");
    h.server_sends(&err);
    assert!(h.conv.server_fatal());
    assert!(!h.conv.is_idle());
}

#[test]
fn a_repeated_unnamed_statement_is_served_from_a_named_server_copy() {
    let mut h = Harness::new();
    h.cache_unnamed = true;
    let group: &[(u8, &[u8])] = &[
        (b'P', b"\0select $1\0\0\0"),
        (b'B', b"\0\0\0\0\0\0\0\0"),
        EXECUTE,
        SYNC,
    ];
    let answers = frames(&[
        (b'1', b""),
        (b'2', b""),
        (b'C', b"SELECT 1\0"),
        (b'Z', b"I"),
    ]);
    // First sighting: an ordinary unnamed statement.
    let (to_server, _) = h.client_sends(&frames(group));
    assert!(!to_server.windows(8).any(|w| w == b"_pgweir_"));
    assert_eq!(tags(&h.server_sends(&answers)), "12CZ");
    // Second: parsed under its server name, Bind renamed.
    h.conv = Conversation::default();
    let (to_server, _) = h.client_sends(&frames(group));
    assert_eq!(tags(&to_server), "PBES");
    assert_eq!(
        to_server.windows(9).filter(|w| *w == b"_pgweir_1").count(),
        2
    );
    assert_eq!(tags(&h.server_sends(&answers)), "12CZ");
    // Third, on the same server: no Parse at all; ParseComplete from the proxy.
    h.conv = Conversation::default();
    let (to_server, to_client) = h.client_sends(&frames(group));
    assert_eq!(tags(&to_server), "BES");
    assert_eq!(tags(&to_client), "1");
    let got = h.server_sends(&frames(&[(b'2', b""), (b'C', b"SELECT 1\0"), (b'Z', b"I")]));
    assert_eq!(tags(&got), "2CZ");
    assert!(h.conv.is_idle());
}

#[test]
fn the_proxys_own_set_inside_a_transaction_is_answered_in_turn_and_never_sent() {
    let mut h = Harness::new();
    let mut begin = BytesMut::new();
    put_query(&mut begin, "BEGIN");
    h.client_sends(&begin);
    let mut answer = frames(&[(b'C', b"BEGIN\0")]);
    answer.extend_from_slice(&ready(b'T'));
    h.server_sends(&answer);

    // Pipelined behind a query the server still owes an answer to.
    let mut batch = BytesMut::new();
    put_query(&mut batch, "select 1");
    put_query(&mut batch, "SET pgweir.priority = 'high'");
    let (to_server, to_client) = h.client_sends(&batch);
    assert_eq!(tags(&to_server), "Q", "only the select reaches the server");
    assert!(!to_server.windows(6).any(|w| w == b"pgweir"));
    assert!(
        to_client.is_empty(),
        "the SET's answer waits for the select's"
    );
    assert_eq!(h.client.class, weir_pool::Class::High);

    let mut answer = frames(&[(b'C', b"SELECT 1\0")]);
    answer.extend_from_slice(&ready(b'T'));
    let out = h.server_sends(&answer);
    assert_eq!(tags(&out), "CZCZ");
    assert!(out.windows(4).any(|w| w == b"SET\0"));
    assert_eq!(out.last(), Some(&b'T'), "still inside the transaction");

    // A bad value: an error in its place, the session unchanged.
    let mut bad = BytesMut::new();
    put_query(&mut bad, "SET pgweir.dedup = 'maybe'");
    let (to_server, to_client) = h.client_sends(&bad);
    assert!(to_server.is_empty());
    assert_eq!(tags(&to_client), "EZ");
    assert_eq!(h.client.dedup, None);
}

/// Runs one unnamed Parse/Bind/Execute/Sync group of `sql` (empty result) through the
/// harness and answers it: (tags sent to the server, tags the client got).
fn run_unnamed(h: &mut Harness, parse_body: &[u8]) -> (String, String) {
    h.conv = Conversation::default();
    let group = frames(&[
        (b'P', parse_body),
        (b'B', b"\0\0\0\0\0\0\0\0"),
        EXECUTE,
        SYNC,
    ]);
    let (to_server, mut to_client) = h.client_sends(&group);
    let mut answers = BytesMut::new();
    for tag in tags(&to_server).bytes() {
        match tag {
            b'P' => answers.extend_from_slice(&frames(&[(b'1', b"")])),
            b'C' => answers.extend_from_slice(&frames(&[(b'3', b"")])),
            b'B' => answers.extend_from_slice(&frames(&[(b'2', b"")])),
            b'E' => answers.extend_from_slice(&frames(&[(b'C', b"SELECT 1\0")])),
            b'S' => answers.extend_from_slice(&ready(b'I')),
            other => panic!("unexpected {}", other as char),
        }
    }
    to_client.extend_from_slice(&h.server_sends(&answers));
    assert!(h.conv.is_idle());
    (tags(&to_server), tags(&to_client))
}

/// A cached unnamed statement with parameters is closed and parsed again ahead of
/// every sixth Bind of its server copy, before PostgreSQL would consider a generic plan;
/// the client sees exactly the answers of a direct connection.
#[test]
fn a_cached_statement_with_parameters_is_renewed_before_its_sixth_bind() {
    let mut h = Harness::new();
    h.cache_unnamed = true;
    let body: &[u8] = b"\0select $1\0\0\0";
    let sent: Vec<(String, String)> = (0..13).map(|_| run_unnamed(&mut h, body)).collect();
    let to_server: Vec<&str> = sent.iter().map(|(s, _)| s.as_str()).collect();
    assert_eq!(
        to_server,
        [
            "PBES", // first sighting: an ordinary unnamed statement
            "PBES", // parsed under its server name: Bind 1 of this copy
            "BES", "BES", "BES", "BES",   // Binds 2 to 5
            "CPBES", // renewed: Bind 1 of the new copy
            "BES", "BES", "BES", "BES", "CPBES", "BES",
        ]
    );
    assert!(sent.iter().all(|(_, c)| c == "12CZ"), "{sent:?}");
    // Parses: 1 unnamed + 3 under the server name, for 13 executions.
    assert_eq!(h.metrics.prepares.load(Relaxed), 3);
}

/// Without parameters a statement has one plan: served from its server copy for good.
#[test]
fn a_cached_statement_without_parameters_is_never_renewed() {
    let mut h = Harness::new();
    h.cache_unnamed = true;
    let sent: Vec<String> = (0..12)
        .map(|_| run_unnamed(&mut h, b"\0select 1\0\0\0").0)
        .collect();
    assert_eq!(sent[1], "PBES");
    assert!(sent[2..].iter().all(|s| s == "BES"), "{sent:?}");
    assert_eq!(h.metrics.prepares.load(Relaxed), 1);
}

/// A renewal skipped after an earlier error in the batch leaves the old copy on the
/// server: it is closed before the next Parse, which would otherwise fail (42P05).
#[test]
fn a_skipped_renewal_closes_the_old_copy_next_time() {
    let mut h = Harness::new();
    h.cache_unnamed = true;
    let body: &[u8] = b"\0select $1\0\0\0";
    for _ in 0..6 {
        run_unnamed(&mut h, body);
    }
    // The copy has had its five Binds; an Execute of a missing portal fails first.
    h.conv = Conversation::default();
    let group = frames(&[
        (b'E', b"nope\0\0\0\0\0"),
        (b'P', body),
        (b'B', b"\0\0\0\0\0\0\0\0"),
        EXECUTE,
        SYNC,
    ]);
    let (to_server, _) = h.client_sends(&group);
    assert_eq!(tags(&to_server), "ECPBES");
    let mut err = BytesMut::new();
    put_simple_error(
        &mut err,
        Severity::Error,
        "34000",
        "portal \"nope\" does not exist",
    );
    err.extend_from_slice(&ready(b'I'));
    assert_eq!(tags(&h.server_sends(&err)), "EZ");
    assert!(h.conv.is_idle());
    let (to_server, to_client) = run_unnamed(&mut h, body);
    assert_eq!(to_server, "CPBES", "old copy closed, then parsed");
    assert_eq!(to_client, "12CZ");
    assert_eq!(run_unnamed(&mut h, body).0, "BES");
}

/// A simple query ends the unnamed statement but not the memory of its text: a client
/// that sends BEGIN and COMMIT as simple queries around the same statement repeats it.
#[test]
fn a_simple_query_between_repeats_keeps_the_text_known() {
    let mut h = Harness::new();
    h.cache_unnamed = true;
    let body: &[u8] = b"\0select $1\0\0\0";
    let mut sent = Vec::new();
    for _ in 0..3 {
        sent.push(run_unnamed(&mut h, body).0);
        h.conv = Conversation::default();
        let mut q = BytesMut::new();
        put_query(&mut q, "COMMIT");
        h.client_sends(&q);
        let mut answer = frames(&[(b'C', b"COMMIT\0")]);
        answer.extend_from_slice(&ready(b'I'));
        h.server_sends(&answer);
    }
    assert_eq!(sent, ["PBES", "PBES", "BES"]);
    // The unnamed statement itself is gone, as on a direct connection: a Bind alone
    // goes to the server unchanged, which reports it missing.
    h.conv = Conversation::default();
    let (to_server, _) = h.client_sends(&frames(&[(b'B', b"\0\0\0\0\0\0\0\0"), SYNC]));
    assert_eq!(tags(&to_server), "BS");
    assert!(!to_server.windows(8).any(|w| w == b"_pgweir_"));
}
