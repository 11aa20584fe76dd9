//! Relaying while the client holds a server connection: client frames to the server
//! (rewritten where the proxy maps statements), server output to the client through
//! the sink, and the server given back at the first idle point (transaction mode) or
//! when the client leaves. Everything here lives in the per-checkout future.

use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use tokio::io::AsyncReadExt;
use weir_config::Config;
use weir_pool::PooledConnection;

use super::phase::{self, Parting, Phase, Reuse};
use super::{
    armed_sleep, reserve, sleep_until, Parted, Relay, CLIENT_READ, RESET_TIMEOUT, SERVER_READ,
};
use crate::conversation::Conversation;
use crate::error::{ClientError, ServerLoss};
use crate::pools::{PoolEntry, ServerManager};
use crate::registry::ClientState;
use crate::server::ServerConn;
use crate::session::Shared;
use crate::session_state::{ClientSession, Ctx, ServerSession};
use crate::stream::WriteOrRead;

/// A server connection the client holds, and the exchange on it.
pub(super) struct Held {
    /// `None` once it went back or failed.
    server: Option<PooledConnection<ServerManager>>,
    /// The exchange on it (fresh at each checkout).
    pub(super) conv: Conversation,
    /// Rewritten client bytes (and the proxy's own messages) waiting to go to the server.
    pub(super) to_server: BytesMut,
    /// When the oldest unanswered query was sent (for `query_timeout`).
    query_started: Option<Instant>,
    /// When the client's current transaction started (its first message after the last
    /// ReadyForQuery 'I'), for the transaction count and histogram.
    xact_started: Option<Instant>,
    /// Client bytes were written to the server since the relay loop last looked.
    sent_to_server: bool,
    /// Times client messages were forwarded on this checkout (a dedup leader's flight
    /// covers only the first).
    forwards: u32,
    /// When the server last finished answering (the clock read that timed the query,
    /// reused as the check-in time).
    answered_at: Option<Instant>,
}

impl Held {
    pub(super) fn new(mut server: PooledConnection<ServerManager>) -> Held {
        let mut conv = Conversation::default();
        conv.queue = std::mem::take(&mut server.spare_queue);
        let to_server = std::mem::take(&mut server.spare_out);
        Held {
            server: Some(server),
            conv,
            to_server,
            query_started: None,
            xact_started: None,
            sent_to_server: false,
            forwards: 0,
            answered_at: None,
        }
    }
}

/// Where the bytes for the server are.
#[derive(Debug, Clone, Copy)]
enum Source {
    /// The first `n` bytes of the client buffer, unchanged.
    Client(usize),
    /// The rewrite buffer.
    Buffered,
}

impl Relay {
    /// Relays until the server goes back (`Released`) or the client leaves.
    pub(super) async fn relay_held(&mut self, h: &mut Held) -> Result<Parted, ClientError> {
        // The client sent more while answers were owed (it pipelines): from then on this
        // checkout watches it, through reads that count against tokio's budget.
        let mut pipelining = false;
        loop {
            if self.forward_client(h).await? {
                return Ok(Parted::ClientLeft);
            }
            // Bytes that need no answer (the tail of a COPY the server already failed)
            // may complete the transaction without the server sending anything more.
            if std::mem::take(&mut h.sent_to_server) && self.try_release(h) {
                return Ok(Parted::Released);
            }
            if h.server.is_none() {
                return Ok(Parted::Released);
            }
            if !h.to_server.is_empty() {
                self.send_to_server(h, Source::Buffered).await?;
                continue;
            }
            let idle_timeout = self.config.client_idle_timeout;
            let idle_tx_timeout = self.config.idle_transaction_timeout;
            let query_timeout = self.config.query_timeout;
            let in_transaction = h.conv.idle_in_transaction();
            let query_deadline = match h.query_started {
                Some(t) if !query_timeout.is_zero() => Some(t + query_timeout),
                _ => None,
            };
            // Session mode and pins hold a server between transactions: shutdown may end
            // the session there, never mid-transaction.
            let between_transactions = self.phase.between_transactions();
            let Some(conn) = h.server.as_mut() else {
                return Ok(Parted::Released);
            };
            let conn: &mut ServerConn = conn;
            let (sstream, srbuf) = (&mut conn.stream, &mut conn.rbuf);
            reserve(srbuf, SERVER_READ);
            reserve(&mut self.cbuf, CLIENT_READ);
            // While the server owes whole answers, the client is not watched: nothing
            // the server owes waits for it, and each answer wakes the relay, which then
            // looks (without a waker) for anything the client sent meanwhile. That spares
            // registering the client's socket for every query (~250 instructions); a
            // plain socket only (TLS records need a waker to be read).
            let watch_client =
                pipelining || !(h.conv.owes_whole_answers() && self.client.is_plain());
            if !watch_client {
                match self.client.stream().try_read_buf(&mut self.cbuf) {
                    Some(Ok(0)) => return Ok(Parted::ClientLeft),
                    Some(Ok(n)) => {
                        self.counters.bytes_from_client += n as u64;
                        pipelining = true;
                        continue;
                    }
                    Some(Err(e)) => return Err(e.into()),
                    None => {}
                }
            }
            tokio::select! {
                biased;
                r = sstream.read_buf(srbuf) => {
                    match r {
                        Ok(0) => return Err(self.server_gone(h, ServerLoss::Closed)),
                        Ok(n) => {
                            self.counters.bytes_from_server += n as u64;
                            if self.forward_server(h).await? {
                                return Ok(Parted::Released);
                            }
                        }
                        Err(e) => return Err(self.server_gone(h, ServerLoss::Io(e))),
                    }
                }
                r = self.client.stream().read_buf(&mut self.cbuf), if watch_client => {
                    match r? {
                        0 => return Ok(Parted::ClientLeft),
                        n => self.counters.bytes_from_client += n as u64,
                    }
                }
                stop = self.handle.info().stop.stopped(between_transactions) => return Err(stop.into()),
                // Session mode keeps the server between transactions: idle there is still idle.
                _ = armed_sleep(idle_timeout), if between_transactions && !idle_timeout.is_zero() => {
                    return Err(ClientError::IdleTimeout(idle_timeout));
                }
                _ = armed_sleep(idle_tx_timeout), if in_transaction && !idle_tx_timeout.is_zero() => {
                    return Err(ClientError::IdleInTransaction(idle_tx_timeout));
                }
                _ = sleep_until(query_deadline), if query_deadline.is_some() => {
                    // Boxed: rare, and ~1.5 KiB inline in every busy client's future.
                    return Err(Box::pin(self.query_timed_out(h, query_timeout)).await);
                }
            }
        }
    }

    /// The server connection failed: it is closed, never reused.
    fn server_gone(&mut self, h: &mut Held, why: ServerLoss) -> ClientError {
        if let Some(server) = h.server.take() {
            server.discard();
        }
        self.cancel.slot().clear_target();
        if h.conv.server_fatal() {
            // The server already told the client why it is closing.
            ClientError::Io(std::io::ErrorKind::ConnectionAborted.into())
        } else {
            ClientError::ServerLost(why)
        }
    }

    /// At an idle point (every Query and Sync answered, no extended-protocol batch
    /// open, nothing half relayed): first sets reset startup settings back (both
    /// modes), then in transaction mode reads back unreported settings a statement may
    /// have changed and releases the server unless a session feature pins the client.
    /// Returns true if the server was released.
    fn try_release(&mut self, h: &mut Held) -> bool {
        let Some(server) = h.server.as_ref() else {
            return false;
        };
        if !(h.conv.is_idle() && server.rbuf.is_empty()) {
            return false;
        }
        if let Some(sql) = self.session.params.restore_query() {
            h.conv.refresh(&sql, true, &mut h.to_server);
            self.phase = Phase::Draining;
            return false;
        }
        if !self.transaction_mode {
            self.phase = Phase::Pinned;
            return false;
        }
        if self.session.params.extras_dirty {
            // Cleared now, not when the answer comes: a SET the client sends meanwhile
            // must cause another read-back.
            self.session.params.extras_dirty = false;
            let sql = self.session.params.refresh_query();
            h.conv.refresh(&sql, false, &mut h.to_server);
            self.phase = Phase::Draining;
            return false;
        }
        if self.session.pins != 0 && std::mem::take(&mut self.session.pin_check) {
            h.conv.check_pins(&mut h.to_server);
            self.phase = Phase::Draining;
            return false;
        }
        self.handle.info().set_pins(self.session.pins);
        if self.session.pins != 0 {
            self.phase = Phase::Pinned;
            return false;
        }
        self.release(h);
        true
    }

    /// Gives the server connection back at the end of a transaction.
    fn release(&mut self, h: &mut Held) {
        let Some(mut server) = h.server.take() else {
            return;
        };
        let cancel_in_flight = self.cancel.slot().clear_target();
        let reuse = phase::verdict(
            Parting::TransactionDone,
            true,
            cancel_in_flight,
            false,
            false,
        );
        server.clean = reuse == Reuse::Clean;
        h.conv.queue.clear();
        server.spare_queue = std::mem::take(&mut h.conv.queue);
        if h.to_server.is_empty() {
            server.spare_out = std::mem::take(&mut h.to_server);
        }
        match h.answered_at {
            Some(at) => server.check_in_at(at.into()),
            None => drop(server),
        }
        self.phase = Phase::Idle;
        self.handle.info().set_state(ClientState::Idle);
        self.handle.info().set_server_pid(0);
        self.flush_counters();
    }

    /// The client left or its session ended while holding the server: give it back
    /// clean, after the reset query, or closed, as [`phase::verdict`] says.
    pub(super) async fn let_go(&mut self, h: &mut Held, parting: Parting) {
        let Some(mut server) = h.server.take() else {
            return;
        };
        let cancel_in_flight = self.cancel.slot().clear_target();
        let idle = h.conv.is_idle() && server.rbuf.is_empty();
        let pinned = self.session.pins != 0;
        let config = self.shared.config();
        let reset_query = config.server_reset_query.trim();
        let reset = !reset_query.is_empty() && (pinned || !self.transaction_mode);
        match phase::verdict(parting, idle, cancel_in_flight, pinned, reset) {
            Reuse::Clean => server.clean = true,
            Reuse::Close => server.discard(),
            Reuse::Reset => {
                let ok = tokio::time::timeout(RESET_TIMEOUT, server.reset(reset_query))
                    .await
                    .unwrap_or(false);
                if ok {
                    server.clean = true;
                } else {
                    server.discard();
                }
            }
        }
    }

    /// Forwards every complete client frame to the server (rewritten where the proxy
    /// maps statements). Returns true on Terminate.
    async fn forward_client(&mut self, h: &mut Held) -> Result<bool, ClientError> {
        if self.cbuf.is_empty() && h.to_server.is_empty() {
            return Ok(false);
        }
        let Some(server) = h.server.as_mut() else {
            return Ok(self.cbuf.first() == Some(&b'X'));
        };
        let conn: &mut ServerConn = server;
        let mut ctx = ctx(
            &mut self.session,
            &mut conn.state,
            &self.shared,
            &self.config,
            &self.entry,
            self.transaction_mode,
            self.max_pinned,
            &self.upstream.breaker,
            self.handle.info().tag(),
        );
        let scan = h.conv.scan_client(
            &self.cbuf,
            self.max_message,
            &mut ctx,
            &mut h.to_server,
            &mut self.to_client,
        )?;
        if scan.consumed > 0 {
            h.forwards += 1;
            if h.forwards > 1 && self.client.leading() {
                // More requests on the same server: the answer is no longer one request's.
                self.client.end_flight(false);
            }
        }
        if scan.edited {
            self.cbuf.advance(scan.consumed);
            self.send_to_server(h, Source::Buffered).await?;
        } else if scan.consumed > 0 {
            self.send_to_server(h, Source::Client(scan.consumed))
                .await?;
        }
        // Answers the proxy gave itself wait for the server's next answers (one write
        // instead of two) unless nothing more is owed.
        if !self.to_client.is_empty() && h.conv.owes_nothing() {
            self.client.server_output(&self.to_client).await?;
            self.to_client.clear();
        }
        if !h.conv.all_answered() {
            if self.phase == Phase::Pinned {
                self.phase = Phase::Transaction;
            }
            if h.query_started.is_none() || h.xact_started.is_none() {
                let now = Instant::now();
                h.query_started.get_or_insert(now);
                h.xact_started.get_or_insert(now);
            }
        }
        Ok(scan.terminate)
    }

    /// Writes client bytes (the first `n` of the client buffer, or the rewritten ones) to
    /// the server and consumes them, relaying whatever the server sends meanwhile. A big
    /// pipeline or COPY must not wait for the server to read while the server waits for
    /// us to read its results: PostgreSQL stops reading when its output is blocked, so a
    /// blocking write here would deadlock where a direct (non-blocking) client would not.
    async fn send_to_server(&mut self, h: &mut Held, source: Source) -> Result<(), ClientError> {
        let n = match source {
            Source::Client(n) => n,
            Source::Buffered => h.to_server.len(),
        };
        let mut written = 0;
        while written < n {
            let Some(server) = h.server.as_mut() else {
                // The server finished everything it owed while the rest was still being
                // written: then the rest is only CopyData/CopyDone/CopyFail after a failed
                // COPY (every other message is counted and keeps the server), which
                // PostgreSQL would ignore. Drop it.
                tracing::debug!(
                    bytes = n - written,
                    "dropped copy messages after a failed COPY"
                );
                break;
            };
            let conn: &mut ServerConn = server;
            reserve(&mut conn.rbuf, SERVER_READ);
            let data = match source {
                Source::Client(_) => &self.cbuf[written..n],
                Source::Buffered => &h.to_server[written..n],
            };
            // The write first, as a biased select would.
            match conn.stream.write_or_read(data, &mut conn.rbuf).await {
                WriteOrRead::Wrote(r) => match r {
                    Ok(0) => return Err(self.server_gone(h, ServerLoss::Closed)),
                    Ok(k) => written += k,
                    Err(e) => return Err(self.server_gone(h, ServerLoss::Io(e))),
                },
                WriteOrRead::Read(r) => match r {
                    Ok(0) => return Err(self.server_gone(h, ServerLoss::Closed)),
                    Ok(k) => {
                        self.counters.bytes_from_server += k as u64;
                        self.forward_server(h).await?;
                    }
                    Err(e) => return Err(self.server_gone(h, ServerLoss::Io(e))),
                },
            }
        }
        match source {
            Source::Client(_) => self.cbuf.advance(n),
            // Not clear(): a read-back query may have been queued behind these bytes.
            Source::Buffered => h.to_server.advance(n),
        }
        h.sent_to_server = true;
        Ok(())
    }

    /// Relays what the server sent to the client and releases the server when the
    /// transaction is over. Returns true if it was released.
    async fn forward_server(&mut self, h: &mut Held) -> Result<bool, ClientError> {
        let Some(server) = h.server.as_mut() else {
            return Ok(false);
        };
        let conn: &mut ServerConn = server;
        let mut ctx = ctx(
            &mut self.session,
            &mut conn.state,
            &self.shared,
            &self.config,
            &self.entry,
            self.transaction_mode,
            self.max_pinned,
            &self.upstream.breaker,
            self.handle.info().tag(),
        );
        let scan = h
            .conv
            .scan_server(&conn.rbuf, self.max_message, &mut ctx, &mut self.to_client)
            .map_err(|e| ClientError::ServerLost(ServerLoss::Malformed(e)))?;
        // Counted before the client hears the answer, so whatever it does next (such as
        // scraping /metrics) sees this query.
        // One clock read serves the transaction and the query timing.
        let answered = h.conv.all_answered();
        if scan.transactions > 0 || answered {
            let now = Instant::now();
            h.answered_at = Some(now);
            if scan.transactions > 0 {
                count_transactions(
                    &mut h.xact_started,
                    &h.conv,
                    self.entry.pool.metrics(),
                    scan.transactions,
                    now,
                );
            }
            // Taken only once everything is answered: a pipeline keeps its start.
            if let Some(started) = answered.then(|| h.query_started.take()).flatten() {
                let elapsed = now.saturating_duration_since(started);
                self.entry.pool.metrics().record_query(elapsed);
                self.upstream.breaker.record_ok();
                if self.session.sampled {
                    self.session.sampled = false;
                    let s = &mut self.session;
                    let fp = *s
                        .sample_fingerprint
                        .get_or_insert_with(|| weir_wire::sql::fingerprint(&s.sample).hash);
                    self.query_batch
                        .record(&self.shared.queries, fp, &s.sample, elapsed);
                }
            }
        }
        if scan.edited || !self.to_client.is_empty() {
            if !scan.edited {
                self.to_client
                    .extend_from_slice(&conn.rbuf[..scan.consumed]);
            }
            conn.rbuf.advance(scan.consumed);
            if !self.to_client.is_empty() {
                self.client.server_output(&self.to_client).await?;
                self.to_client.clear();
            }
        } else if scan.consumed > 0 {
            self.client
                .server_output(&conn.rbuf[..scan.consumed])
                .await?;
            conn.rbuf.advance(scan.consumed);
        }
        if self.client.leading() && h.conv.all_answered() {
            // The flight's request is answered, ReadyForQuery included.
            self.client.end_flight(true);
        }
        if let Some(e) = h.conv.replay_error() {
            let e = ClientError::SettingsRestore {
                server_message: e.to_owned(),
            };
            if let Some(server) = h.server.take() {
                server.discard();
            }
            return Err(e);
        }
        let released = self.try_release(h);
        if !released && !self.transaction_mode && scan.answered > 0 && h.conv.all_answered() {
            // Session mode keeps the server: publish counts at each transaction's end.
            self.flush_counters();
        }
        Ok(released)
    }

    /// `query_timeout` passed: cancel the query on the server (the connection is then
    /// closed, never reused) and tell the client why.
    async fn query_timed_out(&mut self, h: &mut Held, limit: Duration) -> ClientError {
        if let Some(server) = h.server.as_ref() {
            let target = server.cancel.clone();
            if let Err(e) = crate::server::send_cancel(&target).await {
                tracing::warn!(client = %self.handle.info().tag(), error = %e, "could not cancel a query over query_timeout");
            }
        }
        ClientError::QueryTimeout(limit)
    }
}

/// The conversation's view of both sessions, borrowed field by field (the relay's
/// fields are split so the two sessions can be borrowed mutably beside the rest).
#[allow(clippy::too_many_arguments)]
fn ctx<'b>(
    client: &'b mut ClientSession,
    server: &'b mut ServerSession,
    shared: &'b Shared,
    config: &'b Config,
    entry: &'b PoolEntry,
    transaction_mode: bool,
    max_pinned: u32,
    breaker: &'b weir_pool::breaker::Breaker,
    who: crate::registry::ClientTag<'b>,
) -> Ctx<'b> {
    Ctx {
        client,
        server,
        registry: &shared.statements,
        metrics: entry.pool.metrics(),
        transaction_mode,
        max_prepared: config.max_prepared_statements as usize,
        features: config.session_features,
        max_pinned,
        breaker,
        cache_unnamed: config.cache_unnamed_statements && config.max_prepared_statements > 0,
        who,
    }
}

/// The client finished `n` transactions (ReadyForQuery 'I'): each is counted, the first
/// timed from its first message; pipelined ones after it ended in this same read.
fn count_transactions(
    started: &mut Option<Instant>,
    conv: &Conversation,
    metrics: &weir_pool::PoolMetrics,
    n: u64,
    now: Instant,
) {
    metrics.record_transaction(started.map_or(Duration::ZERO, |t| now - t));
    for _ in 1..n {
        metrics.record_transaction(Duration::ZERO);
    }
    // Pipelined messages already sent belong to the next transaction.
    *started = (!conv.all_answered()).then_some(now);
}
