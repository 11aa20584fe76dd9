//! The steady state of a session: relay frames between the client and a server
//! connection, checking one out when a transaction starts and giving it back when the
//! transaction is over (transaction mode) or when the client leaves (session mode).
//!
//! The client's own task drives both sockets (no task hop per message). Client bytes are
//! scanned frame by frame, because the proxy must count Syncs and refuse what it cannot
//! pool safely; server bytes stream through a frame scanner that only stops at
//! ReadyForQuery and ErrorResponse.

use std::pin::pin;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use weir_config::{Config, PoolMode};
use weir_pool::PooledConnection;

use crate::cancel::CancelGuard;
use crate::conversation::Conversation;
use crate::error::ClientError;
use crate::pools::{PoolEntry, ServerManager};
use crate::registry::{ClientInfo, ClientState};
use crate::session::{checkout, Shared};
use crate::session_state::{ClientSession, Ctx, ServerSession};
use crate::stream::{Stream, WriteOrRead};
use crate::upstream::Upstream;

mod idle;

use idle::Idle;

/// Read size for client sockets; client buffers are released while the client is idle.
const CLIENT_READ: usize = 8 * 1024;
/// Read size for server sockets (results can be large; fewer, bigger reads).
const SERVER_READ: usize = 32 * 1024;
/// How long the reset query may take before the connection is closed instead.
const RESET_TIMEOUT: Duration = Duration::from_secs(10);

/// One client's relay loop; see the module docs.
pub struct Relay<'a> {
    shared: &'a Shared,
    /// The configuration in force, re-read at each checkout (follows RELOAD and SET).
    config: Arc<Config>,
    entry: Arc<PoolEntry>,
    client: &'a mut Stream,
    cbuf: BytesMut,
    cancel: CancelGuard,
    /// This client's entry in the registry: state for `SHOW CLIENTS`, `KILL`.
    info: Arc<ClientInfo>,
    transaction_mode: bool,
    max_message: usize,
    /// `max_pinned` for this pool, from the config in force (re-read at each checkout).
    max_pinned: u32,
    /// The upstream of the server held (its breaker hears how queries end).
    upstream: Arc<Upstream>,
    server: Option<PooledConnection<ServerManager>>,
    /// The exchange on the server connection held now (fresh at each checkout).
    conv: Conversation,
    /// What outlives server connections: statement names, settings, pins.
    session: ClientSession,
    /// Rewritten client bytes (and the proxy's own messages) waiting to go to the server.
    to_server: BytesMut,
    /// Bytes for the client that had to be assembled (answers the proxy gives itself).
    to_client: BytesMut,
    /// When the oldest unanswered query was sent (for `query_timeout`).
    query_started: Option<Instant>,
    /// Bytes of a stray CopyData message (no server held) still to drop.
    discard_remaining: usize,
    /// A checkout was refused inside an extended-protocol batch: the client's messages
    /// are dropped up to its Sync, which gets ReadyForQuery (as PostgreSQL skips after
    /// an error).
    skip_to_sync: bool,
    /// Client bytes were written to the server since the relay loop last looked.
    sent_to_server: bool,
    /// When the client's current transaction started (its first message after the last
    /// ReadyForQuery 'I'), for the transaction count and histogram.
    xact_started: Option<Instant>,
    /// Counts not yet added to the pool's metrics (see `flush_counters`).
    counters: Counters,
}

/// Per-session counts, flushed to the pool's shared atomics once per transaction.
#[derive(Default)]
struct Counters {
    bytes_from_client: u64,
    bytes_from_server: u64,
}

impl<'a> Relay<'a> {
    /// A relay for a logged-in client; `cbuf` holds any bytes already read after login.
    pub fn new(
        shared: &'a Shared,
        entry: Arc<PoolEntry>,
        client: &'a mut Stream,
        cbuf: BytesMut,
        cancel: CancelGuard,
        info: Arc<ClientInfo>,
        session: ClientSession,
    ) -> Self {
        let transaction_mode = entry.mode == PoolMode::Transaction;
        let config = shared.config();
        Relay {
            max_message: config.max_message_size as usize,
            max_pinned: config.max_pinned_for(&entry.database),
            upstream: entry.pool.manager().upstream(),
            config,
            shared,
            entry,
            client,
            cbuf,
            cancel,
            info,
            transaction_mode,
            server: None,
            conv: Conversation::default(),
            session,
            to_server: BytesMut::new(),
            to_client: BytesMut::new(),
            query_started: None,
            discard_remaining: 0,
            skip_to_sync: false,
            sent_to_server: false,
            xact_started: None,
            counters: Counters::default(),
        }
    }

    /// Runs until the client leaves (`Ok`) or something ends the session (`Err`).
    ///
    /// # Errors
    /// See [`ClientError`]; the caller reports it to the client.
    pub async fn run(mut self) -> Result<(), ClientError> {
        let result = self.relay().await;
        self.finish().await;
        result
    }

    async fn relay(&mut self) -> Result<(), ClientError> {
        let mut shutdown = pin!(self.shared.shutdown.clone().cancelled_owned());
        let mut killed = pin!(self.info.kill.clone().cancelled_owned());
        loop {
            // From the config in force (checkout re-reads it), so RELOAD reaches here.
            let idle_timeout = self.config.client_idle_timeout;
            let idle_tx_timeout = self.config.idle_transaction_timeout;
            let query_timeout = self.config.query_timeout;
            if self.server.is_none() {
                loop {
                    let decision = self.idle_decision()?;
                    if !self.to_client.is_empty() {
                        // Answers the proxy gave without a server (a known Parse).
                        self.client.write_all(&self.to_client).await?;
                        self.to_client.clear();
                    }
                    match decision {
                        // A drain lets running transactions finish but starts no new
                        // one, even when the query raced the shutdown signal here.
                        Idle::NeedServer if self.shared.shutdown.is_cancelled() => {
                            return Err(ClientError::Shutdown)
                        }
                        Idle::NeedServer => break,
                        Idle::Terminate => return Ok(()),
                        Idle::NeedMore => {}
                    }
                    if self.cbuf.is_empty() {
                        // Idle between transactions: hold no buffer memory while waiting.
                        self.cbuf = BytesMut::new();
                    }
                    tokio::select! {
                        r = self.client.readable() => r?,
                        _ = &mut shutdown => return Err(ClientError::Shutdown),
                        _ = &mut killed => return Err(ClientError::Killed),
                        _ = armed_sleep(idle_timeout), if !idle_timeout.is_zero() => {
                            return Err(ClientError::IdleTimeout(idle_timeout));
                        }
                    }
                    reserve(&mut self.cbuf, CLIENT_READ);
                    // read_buf rather than try_read_buf: a short read clears the cached
                    // readiness, so the next poll waits for epoll instead of paying a
                    // recvfrom that returns EAGAIN.
                    match self.client.read_buf(&mut self.cbuf).await? {
                        0 => return Ok(()),
                        n => self.count_client_bytes(n),
                    }
                }
                // Boxed: a checkout that waits holds a large future; inline it would size
                // the future every idle session keeps (one small allocation per checkout).
                match Box::pin(self.checkout()).await {
                    Ok(()) => {}
                    Err(e) if e.is_refusal() => {
                        self.refuse_request(&e).await?;
                        continue;
                    }
                    Err(e) => return Err(e),
                }
            }

            if self.forward_client().await? {
                return Ok(());
            }
            // Bytes that need no answer (the tail of a COPY the server already failed)
            // may complete the transaction without the server sending anything more.
            if std::mem::take(&mut self.sent_to_server) && self.try_release() {
                continue;
            }

            let Some(server) = self.server.as_mut() else {
                continue;
            };
            if !self.to_server.is_empty() {
                self.send_to_server(Source::Buffered).await?;
                continue;
            }
            let in_transaction = self.conv.idle_in_transaction();
            let query_deadline = match self.query_started {
                Some(t) if !query_timeout.is_zero() => Some(t + query_timeout),
                _ => None,
            };
            // Session mode holds a server between transactions: shutdown may end the
            // session there, never mid-transaction.
            let between_transactions = self.conv.between_transactions();
            let conn: &mut crate::server::ServerConn = server;
            let (sstream, srbuf) = (&mut conn.stream, &mut conn.rbuf);
            reserve(srbuf, SERVER_READ);
            reserve(&mut self.cbuf, CLIENT_READ);
            tokio::select! {
                biased;
                r = sstream.read_buf(srbuf) => {
                    match r {
                        Ok(0) => return Err(self.server_gone("server closed the connection".into())),
                        Ok(n) => {
                            self.counters.bytes_from_server += n as u64;
                            self.forward_server().await?;
                        }
                        Err(e) => return Err(self.server_gone(e.to_string())),
                    }
                }
                r = self.client.read_buf(&mut self.cbuf) => {
                    match r? {
                        0 => return Ok(()),
                        n => self.count_client_bytes(n),
                    }
                }
                _ = &mut shutdown, if between_transactions => return Err(ClientError::Shutdown),
                _ = &mut killed => return Err(ClientError::Killed),
                // Session mode keeps the server between transactions: idle there is still idle.
                _ = armed_sleep(idle_timeout), if between_transactions && !idle_timeout.is_zero() => {
                    return Err(ClientError::IdleTimeout(idle_timeout));
                }
                _ = armed_sleep(idle_tx_timeout), if in_transaction && !idle_tx_timeout.is_zero() => {
                    return Err(ClientError::IdleInTransaction(idle_tx_timeout));
                }
                _ = sleep_until(query_deadline), if query_deadline.is_some() => {
                    return Err(self.query_timed_out(query_timeout).await);
                }
            }
        }
    }

    fn count_client_bytes(&mut self, n: usize) {
        self.counters.bytes_from_client += n as u64;
    }

    /// Adds this session's counts to the pool's shared counters: once per transaction,
    /// not per read, so workers don't bounce those cache lines on every message.
    fn flush_counters(&mut self) {
        let c = std::mem::take(&mut self.counters);
        let metrics = self.entry.pool.metrics();
        if c.bytes_from_client > 0 {
            metrics
                .bytes_from_client
                .fetch_add(c.bytes_from_client, Relaxed);
        }
        if c.bytes_from_server > 0 {
            metrics
                .bytes_from_server
                .fetch_add(c.bytes_from_server, Relaxed);
        }
    }

    fn server_gone(&mut self, why: String) -> ClientError {
        if let Some(server) = self.server.take() {
            server.discard();
        }
        self.cancel.slot().clear_target();
        if self.conv.server_fatal() {
            // The server already told the client why it is closing.
            ClientError::Io(std::io::ErrorKind::ConnectionAborted.into())
        } else {
            ClientError::ServerLost(why)
        }
    }

    async fn checkout(&mut self) -> Result<(), ClientError> {
        self.info.set_state(ClientState::Waiting);
        let config = self.shared.config();
        if !Arc::ptr_eq(&config, &self.config) {
            // RELOAD or SET: what derives from the config (a RELOAD may also have moved
            // the pool to another upstream).
            self.max_pinned = config.max_pinned_for(&self.entry.database);
            self.upstream = self.entry.pool.manager().upstream();
            self.config = config;
        }
        let mut conn = checkout(
            &self.entry,
            &self.upstream,
            self.config.mode,
            self.session.class,
        )
        .await?;
        self.info.set_state(ClientState::Active);
        self.info.set_server_pid(conn.cancel.pid);
        conn.clean = false;
        self.cancel.slot().set_target(conn.cancel.clone());
        self.conv = Conversation::default();
        if let Some(sql) = self.session.params.replay_query(&conn.state.params) {
            // The client's settings go first, in the same write as its own messages.
            self.conv.replay(&sql, &mut self.to_server);
        }
        self.server = Some(conn);
        Ok(())
    }

    /// At an idle point (every Query and Sync answered, no extended-protocol batch
    /// open, nothing half relayed): first sets reset startup settings back (both
    /// modes), then in transaction mode reads back unreported settings a statement may
    /// have changed and releases the server unless a session feature pins the client.
    /// Returns true if the server was released.
    fn try_release(&mut self) -> bool {
        let Some(server) = self.server.as_ref() else {
            return false;
        };
        if !(self.conv.is_idle() && server.rbuf.is_empty()) {
            return false;
        }
        if let Some(sql) = self.session.params.restore_query() {
            self.conv.refresh(&sql, true, &mut self.to_server);
            return false;
        }
        if !self.transaction_mode {
            return false;
        }
        if self.session.params.extras_dirty {
            // Cleared now, not when the answer comes: a SET the client sends meanwhile
            // must cause another read-back.
            self.session.params.extras_dirty = false;
            let sql = self.session.params.refresh_query();
            self.conv.refresh(&sql, false, &mut self.to_server);
            return false;
        }
        if self.session.pins != 0 && std::mem::take(&mut self.session.pin_check) {
            self.conv.check_pins(&mut self.to_server);
            return false;
        }
        self.info.set_pins(self.session.pins);
        if self.session.pins != 0 {
            return false;
        }
        self.release();
        true
    }

    /// Gives the server connection back: it is idle, all answers relayed.
    fn release(&mut self) {
        if let Some(mut server) = self.server.take() {
            // A cancel on its way to this server could hit the next client's query:
            // close the connection instead of reusing it.
            server.clean = !self.cancel.slot().clear_target();
            drop(server);
            self.info.set_state(ClientState::Idle);
            self.info.set_server_pid(0);
            self.flush_counters();
        }
    }

    /// Forwards every complete client frame to the server (rewritten where the proxy
    /// maps statements). Returns true on Terminate.
    async fn forward_client(&mut self) -> Result<bool, ClientError> {
        if self.cbuf.is_empty() && self.to_server.is_empty() {
            return Ok(false);
        }
        let Some(server) = self.server.as_mut() else {
            return Ok(self.cbuf.first() == Some(&b'X'));
        };
        let conn: &mut crate::server::ServerConn = server;
        let mut ctx = ctx(
            &mut self.session,
            &mut conn.state,
            self.shared,
            &self.config,
            &self.entry,
            self.transaction_mode,
            self.max_pinned,
            &self.upstream.breaker,
        );
        let scan = self.conv.scan_client(
            &self.cbuf,
            self.max_message,
            &mut ctx,
            &mut self.to_server,
            &mut self.to_client,
        )?;
        if scan.edited {
            self.cbuf.advance(scan.consumed);
            self.send_to_server(Source::Buffered).await?;
        } else if scan.consumed > 0 {
            self.send_to_server(Source::Client(scan.consumed)).await?;
        }
        // Answers the proxy gave itself wait for the server's next answers (one write
        // instead of two) unless nothing more is owed.
        if !self.to_client.is_empty() && self.conv.owes_nothing() {
            self.client.write_all(&self.to_client).await?;
            self.to_client.clear();
        }
        if !self.conv.all_answered()
            && (self.query_started.is_none() || self.xact_started.is_none())
        {
            let now = Instant::now();
            self.query_started.get_or_insert(now);
            self.xact_started.get_or_insert(now);
        }
        Ok(scan.terminate)
    }

    /// Writes client bytes (the first `n` of the client buffer, or the rewritten ones) to
    /// the server and consumes them, relaying whatever the server sends meanwhile. A big
    /// pipeline or COPY must not wait for the server to read while the server waits for
    /// us to read its results: PostgreSQL stops reading when its output is blocked, so a
    /// blocking write here would deadlock where a direct (non-blocking) client would not.
    async fn send_to_server(&mut self, source: Source) -> Result<(), ClientError> {
        let n = match source {
            Source::Client(n) => n,
            Source::Buffered => self.to_server.len(),
        };
        let mut written = 0;
        while written < n {
            let Some(server) = self.server.as_mut() else {
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
            let conn: &mut crate::server::ServerConn = server;
            reserve(&mut conn.rbuf, SERVER_READ);
            let data = match source {
                Source::Client(_) => &self.cbuf[written..n],
                Source::Buffered => &self.to_server[written..n],
            };
            // The write first, as a biased select would.
            match conn.stream.write_or_read(data, &mut conn.rbuf).await {
                WriteOrRead::Wrote(r) => match r {
                    Ok(0) => return Err(self.server_gone("server closed the connection".into())),
                    Ok(k) => written += k,
                    Err(e) => return Err(self.server_gone(e.to_string())),
                },
                WriteOrRead::Read(r) => match r {
                    Ok(0) => return Err(self.server_gone("server closed the connection".into())),
                    Ok(k) => {
                        self.counters.bytes_from_server += k as u64;
                        self.forward_server().await?;
                    }
                    Err(e) => return Err(self.server_gone(e.to_string())),
                },
            }
        }
        match source {
            Source::Client(_) => self.cbuf.advance(n),
            // Not clear(): a read-back query may have been queued behind these bytes.
            Source::Buffered => self.to_server.advance(n),
        }
        self.sent_to_server = true;
        Ok(())
    }

    /// Relays what the server sent to the client and releases the server when the
    /// transaction is over.
    async fn forward_server(&mut self) -> Result<(), ClientError> {
        let Some(server) = self.server.as_mut() else {
            return Ok(());
        };
        let conn: &mut crate::server::ServerConn = server;
        let mut ctx = ctx(
            &mut self.session,
            &mut conn.state,
            self.shared,
            &self.config,
            &self.entry,
            self.transaction_mode,
            self.max_pinned,
            &self.upstream.breaker,
        );
        let scan = self
            .conv
            .scan_server(&conn.rbuf, self.max_message, &mut ctx, &mut self.to_client)
            .map_err(|e| {
                ClientError::ServerLost(format!("server sent a malformed message: {e}"))
            })?;
        // Counted before the client hears the answer, so whatever it does next (such as
        // scraping /metrics) sees this query.
        // One clock read serves the transaction and the query timing.
        let answered = self.conv.all_answered();
        if scan.transactions > 0 || answered {
            let now = Instant::now();
            if scan.transactions > 0 {
                count_transactions(
                    &mut self.xact_started,
                    &self.conv,
                    self.entry.pool.metrics(),
                    scan.transactions,
                    now,
                );
            }
            // Taken only once everything is answered: a pipeline keeps its start.
            if let Some(started) = answered.then(|| self.query_started.take()).flatten() {
                let elapsed = now.saturating_duration_since(started);
                self.entry.pool.metrics().record_query(elapsed);
                self.upstream.breaker.record_ok();
                if self.session.sampled {
                    self.session.sampled = false;
                    self.shared.queries.record(&self.session.sample, elapsed);
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
                self.client.write_all(&self.to_client).await?;
                self.to_client.clear();
            }
        } else if scan.consumed > 0 {
            self.client.write_all(&conn.rbuf[..scan.consumed]).await?;
            conn.rbuf.advance(scan.consumed);
        }
        if let Some(e) = self.conv.replay_error() {
            let e = ClientError::SettingsRestore(e.to_owned());
            if let Some(server) = self.server.take() {
                server.discard();
            }
            return Err(e);
        }
        let released = self.try_release();
        if !released && !self.transaction_mode && scan.answered > 0 && self.conv.all_answered() {
            // Session mode keeps the server: publish counts at each transaction's end.
            self.flush_counters();
        }
        Ok(())
    }

    /// `query_timeout` passed: cancel the query on the server (the connection is then
    /// closed, never reused) and tell the client why.
    async fn query_timed_out(&mut self, limit: Duration) -> ClientError {
        if let Some(server) = self.server.as_ref() {
            let target = server.cancel.clone();
            if let Err(e) = crate::server::send_cancel(&target).await {
                tracing::warn!(error = %e, "could not cancel a query over query_timeout");
            }
        }
        ClientError::QueryTimeout(limit)
    }

    /// The client left: give the server back clean (session mode, or a pinned client:
    /// after the reset query) or close it if its state is unknown.
    async fn finish(&mut self) {
        self.flush_counters();
        let pinned = self.session.pins != 0;
        self.session.leave(self.entry.pool.metrics());
        let Some(mut server) = self.server.take() else {
            return;
        };
        let cancel_in_flight = self.cancel.slot().clear_target();
        let idle = self.conv.is_idle() && server.rbuf.is_empty();
        if !idle || cancel_in_flight {
            // Mid-transaction or mid-result, or a cancel may still land on it: closing is
            // the only state we can vouch for.
            server.discard();
            return;
        }
        let config = self.shared.config();
        let reset = config.server_reset_query.trim();
        if (self.transaction_mode && !pinned) || reset.is_empty() {
            server.clean = !pinned;
            if pinned {
                server.discard();
            }
            return;
        }
        let ok = tokio::time::timeout(RESET_TIMEOUT, server.reset(reset))
            .await
            .unwrap_or(false);
        if ok {
            server.clean = true;
        } else {
            server.discard();
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

/// Sleeps until `deadline` (forever if none; the branch is disabled then anyway).
async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d.into()).await,
        None => std::future::pending().await,
    }
}

/// A timer that reads the clock only when polled: `select!` builds every branch's future
/// even when its precondition disables it, and most timeouts are off.
async fn armed_sleep(d: Duration) {
    tokio::time::sleep(d).await;
}

fn reserve(buf: &mut BytesMut, chunk: usize) {
    if buf.capacity() - buf.len() < chunk / 4 {
        buf.reserve(chunk);
    }
}
