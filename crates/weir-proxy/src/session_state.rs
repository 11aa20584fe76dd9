//! What the proxy remembers across transactions: per client (its statement names,
//! settings, session-feature pins, its last unnamed statement) and per server connection
//! (the statements it has prepared and the settings it has now).

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use bytes::BytesMut;
use weir_config::SessionFeatures;
use weir_pool::PoolMetrics;

use crate::features::{pin, Effects};
use crate::params::{ClientParams, ServerParamsState};
use crate::prepared::{ClientStatements, ServerStatements, Statement, StatementRegistry};
use crate::registry::ClientTag;

/// Longer query texts are scanned every time rather than kept per client.
const MAX_PLAIN_TEXT: usize = 4096;

/// One client's state that outlives its server connections.
#[derive(Debug, Default)]
pub struct ClientSession {
    /// Its named statements.
    pub statements: ClientStatements,
    /// Its settings.
    pub params: ClientParams,
    /// Its class in the pool's wait queue.
    pub class: weir_pool::Class,
    /// Its own `pgweir.dedup` (`None`: the database's `dedup` setting decides).
    pub dedup: Option<bool>,
    /// Session features in use (bits of [`crate::features::pin`]): while non-zero, the
    /// client keeps its server connection.
    pub pins: u8,
    /// A statement since the last check may have started or ended a session feature:
    /// ask the server which remain before the server connection can be released.
    pub pin_check: bool,
    /// The Parse body (after the empty name) of its last unnamed statement, so it can be
    /// parsed again on another server connection before a Bind or Describe that needs it.
    pub unnamed: Option<BytesMut>,
    /// With `cache_unnamed_statements`: the statement its last unnamed statement is (kept
    /// alive so a repeat is recognised, also after a simple query ended it) and whether
    /// it is served from the named server copy now.
    pub unnamed_mapped: Option<(Arc<Statement>, bool)>,
    /// The text of the query being timed for `SHOW QUERIES` (buffer reused).
    pub sample: BytesMut,
    /// `sample` holds a query whose answer has not come yet.
    pub sampled: bool,
    /// The fingerprint of `sample`, once computed: a client that repeats its query text
    /// (every prepared or parameterised query), or repeats it with other numbers inlined
    /// (`weir_wire::sql::same_shape`), is fingerprinted once, not per execution.
    pub sample_fingerprint: Option<u64>,
    /// `sample`'s shape was found to do nothing to the session, read with
    /// `standard_conforming_strings` off (`Some(true)`) or on: see
    /// [`ClientSession::simple_query_effects`].
    pub sample_plain: Option<bool>,
    /// The last parsed query text found to do nothing to the session: a driver that
    /// parses the same statement every transaction is scanned once (~380 instructions
    /// per transaction otherwise). Boxed: a parked client keeps its session.
    pub plain_text: Option<Box<PlainText>>,
}

/// A query text without session effects, as [`ClientSession::effects_of`] read it.
#[derive(Debug, Default)]
pub struct PlainText {
    text: BytesMut,
    /// Read with `standard_conforming_strings` off.
    backslash_quotes: bool,
}

impl ClientSession {
    /// [`crate::features::effects_with`], remembered for the last text that had none.
    pub fn effects_of(&mut self, sql: &[u8], backslash_quotes: bool) -> Effects {
        if self
            .plain_text
            .as_ref()
            .is_some_and(|p| p.backslash_quotes == backslash_quotes && p.text[..] == *sql)
        {
            return Effects::default();
        }
        let effects = crate::features::effects_with(sql, backslash_quotes);
        if effects.is_none() && sql.len() <= MAX_PLAIN_TEXT {
            let plain = self.plain_text.get_or_insert_with(Box::default);
            plain.text.clear();
            plain.text.extend_from_slice(sql);
            plain.backslash_quotes = backslash_quotes;
        }
        effects
    }

    /// Notes `sql` as the query being timed, unless one already is (`None`); else
    /// whether it has the shape of the query timed before it (`weir_wire::sql::same_shape`:
    /// the same text but for inlined numbers), which keeps that one's fingerprint.
    pub fn note_query(&mut self, sql: &[u8]) -> Option<bool> {
        if self.sampled {
            return None;
        }
        self.sampled = true;
        if self.sample[..] == *sql {
            return Some(true);
        }
        let same = weir_wire::sql::same_shape(&self.sample, sql);
        if !same {
            self.sample_fingerprint = None;
            self.sample_plain = None;
        }
        self.sample.clear();
        self.sample.extend_from_slice(sql);
        Some(same)
    }

    /// Notes a simple query's `sql` ([`ClientSession::note_query`]) and returns its
    /// [`crate::features::effects_with`], not scanned again when it has the shape of
    /// the last timed query and that had none: effects come from keywords, names,
    /// strings and punctuation, never from the numbers two texts of one shape may differ
    /// in. A client that inlines its literals (`WHERE id = 42`, then `= 43`) is scanned
    /// once, not per query (~400 instructions per transaction).
    pub fn simple_query_effects(&mut self, sql: &[u8], backslash_quotes: bool) -> Effects {
        let noted = self.note_query(sql);
        if noted == Some(true) && self.sample_plain == Some(backslash_quotes) {
            return Effects::default();
        }
        let effects = crate::features::effects_with(sql, backslash_quotes);
        if noted.is_some() {
            self.sample_plain = effects.is_none().then_some(backslash_quotes);
        }
        effects
    }
}

impl ClientSession {
    /// Pins the client for the session features `bits`, unless that would make more
    /// than `max_pinned` clients of the pool pinned (a client already pinned only adds
    /// features). Returns false if the cap refused it.
    pub fn pin(
        &mut self,
        bits: u8,
        metrics: &PoolMetrics,
        max_pinned: u32,
        who: ClientTag<'_>,
    ) -> bool {
        if self.pins == 0 {
            let reserved = metrics
                .pinned_clients
                .fetch_update(Relaxed, Relaxed, |n| {
                    (n < u64::from(max_pinned)).then_some(n + 1)
                })
                .is_ok();
            if !reserved {
                return false;
            }
            metrics.pins.fetch_add(1, Relaxed);
            tracing::info!(
                client = %who,
                feature = %pin::describe_all(bits),
                "client pinned to its server connection"
            );
        }
        self.pins |= bits;
        true
    }

    /// Sets the features in use to what the server says remain (`bits`), releasing the
    /// pin when none do.
    pub fn settle_pins(&mut self, bits: u8, metrics: &PoolMetrics, who: ClientTag<'_>) {
        let before = std::mem::replace(&mut self.pins, bits);
        if before != 0 && bits == 0 {
            metrics.pinned_clients.fetch_sub(1, Relaxed);
            tracing::info!(
                client = %who,
                ended = %pin::describe_all(before),
                "client unpinned: its session features ended"
            );
        } else if before == 0 && bits != 0 {
            // State the token check missed: it binds the client to this server all the
            // same, cap or not.
            metrics.pinned_clients.fetch_add(1, Relaxed);
            metrics.pins.fetch_add(1, Relaxed);
            tracing::info!(
                client = %who,
                feature = %pin::describe_all(bits),
                "client pinned to its server connection"
            );
        }
    }

    /// The client left: a pin no longer counts.
    pub fn leave(&mut self, metrics: &PoolMetrics) {
        if self.pins != 0 {
            metrics.pinned_clients.fetch_sub(1, Relaxed);
            self.pins = 0;
        }
    }
}

/// One server connection's state that outlives its clients.
#[derive(Debug, Default)]
pub struct ServerSession {
    /// Statements prepared on it under proxy-wide names.
    pub statements: ServerStatements,
    /// Its settings now.
    pub params: ServerParamsState,
    /// Statements whose cached plan went stale: closed before they are parsed again.
    pub stale: Vec<Arc<Statement>>,
}

impl ServerSession {
    /// `DISCARD ALL` ran: no statements, settings back to their defaults.
    pub fn discarded(&mut self) {
        self.statements.clear();
        self.stale.clear();
        self.params.extras.clear();
    }
}

/// What the conversation needs besides its own state: both sessions and the policy.
pub struct Ctx<'a> {
    /// The client's state.
    pub client: &'a mut ClientSession,
    /// The server connection's state.
    pub server: &'a mut ServerSession,
    /// Proxy-wide statement names.
    pub registry: &'a StatementRegistry,
    /// The pool's counters.
    pub metrics: &'a PoolMetrics,
    /// Transaction mode: names are mapped, session features detected.
    pub transaction_mode: bool,
    /// `max_prepared_statements` (0 = named statements refused in transaction mode).
    pub max_prepared: usize,
    /// `session_features`.
    pub features: SessionFeatures,
    /// Most clients of the pool pinned at once (`max_pinned`).
    pub max_pinned: u32,
    /// The upstream's circuit breaker, told of "server unwell" errors.
    pub breaker: &'a weir_pool::breaker::Breaker,
    /// `cache_unnamed_statements` (and mapping on).
    pub cache_unnamed: bool,
    /// The client, as log lines name it.
    pub who: crate::registry::ClientTag<'a>,
}

/// Shared handle type for the registry.
pub type Registry = Arc<StatementRegistry>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_text_without_effects_is_remembered_and_only_in_its_quoting() {
        let mut s = ClientSession::default();
        let plain = b"SELECT abalance FROM t WHERE aid = $1";
        assert!(s.effects_of(plain, false).is_none());
        let kept = |s: &ClientSession| s.plain_text.as_ref().unwrap().text.to_vec();
        assert_eq!(kept(&s), plain);
        // A text with effects is scanned every time and never remembered.
        let listen = b"LISTEN jobs";
        assert_ne!(s.effects_of(listen, false).pins, 0);
        assert_ne!(s.effects_of(listen, false).pins, 0);
        assert_eq!(kept(&s), plain);
        // The same bytes read with backslash quotes are another text: `'x\''` is one
        // string there, and the call after it is a call.
        let hidden = br"SELECT 'x\'', pg_advisory_lock(1) --'";
        assert!(s.effects_of(hidden, false).is_none());
        assert_ne!(s.effects_of(hidden, true).pins, 0);
        // Long texts are not kept.
        let long = format!("SELECT {}", "x".repeat(MAX_PLAIN_TEXT));
        assert!(s.effects_of(long.as_bytes(), false).is_none());
        assert_eq!(kept(&s), hidden);
    }

    /// One simple query, timed and answered (`sampled` cleared as the answer does).
    fn simple(s: &mut ClientSession, sql: &str, backslash_quotes: bool) -> Effects {
        let e = s.simple_query_effects(sql.as_bytes(), backslash_quotes);
        s.sampled = false;
        e
    }

    #[test]
    fn a_query_shaped_like_the_last_plain_one_is_not_scanned_again() {
        let mut s = ClientSession::default();
        let first = "SELECT abalance FROM t WHERE aid = 42;";
        assert!(simple(&mut s, first, false).is_none());
        assert_eq!(s.sample_plain, Some(false));
        // Other numbers inlined: the same shape, still known plain.
        assert!(simple(&mut s, "SELECT abalance FROM t WHERE aid = 7;", false).is_none());
        assert_eq!(s.sample_plain, Some(false));
        // Another shape is scanned: its effects count, and nothing stays known plain.
        assert_eq!(simple(&mut s, "LISTEN jobs1", false).pins, pin::LISTEN);
        assert_eq!(s.sample_plain, None);
        // Numbers inside a word make another shape.
        assert_eq!(simple(&mut s, "LISTEN jobs2", false).pins, pin::LISTEN);
        assert!(simple(&mut s, "SELECT 1", false).is_none());
        assert_eq!(
            simple(&mut s, "SELECT pg_advisory_lock(1)", false).pins,
            pin::ADVISORY_LOCK
        );
        assert_eq!(
            simple(&mut s, "SELECT pg_advisory_lock(2)", false).pins,
            pin::ADVISORY_LOCK
        );
        // Known plain with standard strings says nothing of backslash quotes: `'x\''`
        // is one string there, and the call after it a call.
        let hidden = r"SELECT 'x\'', pg_advisory_lock(1) --'";
        assert!(simple(&mut s, hidden, false).is_none());
        assert_eq!(s.sample_plain, Some(false));
        assert_ne!(simple(&mut s, hidden, true).pins, 0);
        assert_eq!(s.sample_plain, None);
    }

    #[test]
    fn a_query_behind_a_timed_one_is_scanned_and_leaves_the_mark_alone() {
        let mut s = ClientSession::default();
        assert!(simple(&mut s, "SELECT 1", false).is_none());
        // Pipelined behind a query still timed: not the sample, scanned on its own.
        assert!(s.simple_query_effects(b"SELECT 2", false).is_none());
        assert_eq!(s.simple_query_effects(b"LISTEN x", false).pins, pin::LISTEN);
        assert_eq!(s.sample_plain, Some(false));
        assert_eq!(&s.sample[..], b"SELECT 2");
    }
}
