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
use tokio::net::TcpStream;
use weir_config::PoolMode;
use weir_pool::PooledConnection;
use weir_wire::backend::{parse_ready_for_query, ErrorFields};
use weir_wire::frame::Header;

use crate::cancel::CancelGuard;
use crate::conversation::{frame_error, invalid_message_type, ClientScan, Conversation};
use crate::error::ClientError;
use crate::io::read_frame;
use crate::pools::{PoolEntry, ServerManager};
use crate::registry::{ClientInfo, ClientState};
use crate::session::{pool_error, Shared};

/// Read size for client sockets; client buffers are released while the client is idle.
const CLIENT_READ: usize = 8 * 1024;
/// Read size for server sockets (results can be large; fewer, bigger reads).
const SERVER_READ: usize = 32 * 1024;
/// How long the reset query may take before the connection is closed instead.
const RESET_TIMEOUT: Duration = Duration::from_secs(10);

/// What an idle client's buffered bytes need.
enum Idle {
    /// A message that needs a server connection.
    NeedServer,
    /// Terminate: the client is leaving.
    Terminate,
    /// Nothing (more) to act on yet: read more.
    NeedMore,
}

/// One client's relay loop; see the module docs.
pub struct Relay<'a> {
    shared: &'a Shared,
    entry: Arc<PoolEntry>,
    client: &'a mut TcpStream,
    cbuf: BytesMut,
    cancel: CancelGuard,
    /// This client's entry in the registry: state for `SHOW CLIENTS`, `KILL`.
    info: Arc<ClientInfo>,
    transaction_mode: bool,
    max_message: usize,
    server: Option<PooledConnection<ServerManager>>,
    /// The exchange on the server connection held now (fresh at each checkout).
    conv: Conversation,
    /// Bytes of a stray CopyData message (no server held) still to drop.
    discard_remaining: usize,
    /// Client bytes were written to the server since the relay loop last looked.
    sent_to_server: bool,
    checkout_at: Instant,
    /// Counts not yet added to the pool's metrics (see `flush_counters`).
    counters: Counters,
}

/// Per-session counts, flushed to the pool's shared atomics once per transaction.
#[derive(Default)]
struct Counters {
    bytes_from_client: u64,
    bytes_from_server: u64,
    queries: u64,
}

impl<'a> Relay<'a> {
    /// A relay for a logged-in client; `cbuf` holds any bytes already read after login.
    pub fn new(
        shared: &'a Shared,
        entry: Arc<PoolEntry>,
        client: &'a mut TcpStream,
        cbuf: BytesMut,
        cancel: CancelGuard,
        info: Arc<ClientInfo>,
    ) -> Self {
        let transaction_mode = entry.mode == PoolMode::Transaction;
        Relay {
            max_message: shared.config.max_message_size as usize,
            shared,
            entry,
            client,
            cbuf,
            cancel,
            info,
            transaction_mode,
            server: None,
            conv: Conversation::default(),
            discard_remaining: 0,
            sent_to_server: false,
            checkout_at: Instant::now(),
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
        let config = &self.shared.config;
        let idle_timeout = config.client_idle_timeout;
        let idle_tx_timeout = config.idle_transaction_timeout;
        let mut shutdown = pin!(self.shared.shutdown.clone().cancelled_owned());
        let mut killed = pin!(self.info.kill.clone().cancelled_owned());
        loop {
            if self.server.is_none() {
                loop {
                    match self.idle_decision()? {
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
                self.checkout().await?;
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
            let in_transaction = self.conv.idle_in_transaction();
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
            }
        }
    }

    /// Decides what an idle client's buffered bytes need, dropping the messages that
    /// PostgreSQL itself ignores outside a COPY or an extended-protocol batch: CopyData,
    /// CopyDone and CopyFail arriving after a COPY already failed (the server answered
    /// and was released), and a lone Flush. Checking out a server for them would hold
    /// it forever, since no answer ever comes to release it (pgbouncer#1471).
    fn idle_decision(&mut self) -> Result<Idle, ClientError> {
        loop {
            if self.discard_remaining > 0 {
                let n = self.discard_remaining.min(self.cbuf.len());
                self.cbuf.advance(n);
                self.discard_remaining -= n;
                if self.discard_remaining > 0 {
                    return Ok(Idle::NeedMore);
                }
            }
            let Some(&tag) = self.cbuf.first() else {
                return Ok(Idle::NeedMore);
            };
            match tag {
                b'X' => return Ok(Idle::Terminate),
                b'd' | b'c' | b'f' | b'H' => {}
                b'Q' | b'P' | b'B' | b'E' | b'D' | b'C' | b'S' | b'F' => {
                    // Refuse a bad length before it costs a server connection.
                    Header::peek(&self.cbuf, self.max_message).map_err(frame_error)?;
                    return Ok(Idle::NeedServer);
                }
                other => return Err(invalid_message_type(other)),
            }
            let header = match Header::peek(&self.cbuf, self.max_message) {
                Ok(Some(h)) => h,
                Ok(None) => return Ok(Idle::NeedMore),
                Err(e) => return Err(frame_error(e)),
            };
            let frame_len = header.frame_len();
            if tag == b'd' {
                let n = frame_len.min(self.cbuf.len());
                self.cbuf.advance(n);
                self.discard_remaining = frame_len - n;
            } else if self.cbuf.len() >= frame_len {
                self.cbuf.advance(frame_len);
            } else {
                return Ok(Idle::NeedMore);
            }
            tracing::debug!(tag = %(tag as char), "dropped a message that needs no server");
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
        if c.queries > 0 {
            metrics.queries.fetch_add(c.queries, Relaxed);
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
        let mut conn = self.entry.pool.get().await.map_err(pool_error)?;
        self.info.set_state(ClientState::Active);
        conn.clean = false;
        self.cancel.slot().set_target(conn.cancel.clone());
        self.server = Some(conn);
        self.conv = Conversation::default();
        self.checkout_at = Instant::now();
        Ok(())
    }

    /// Releases the server (transaction mode) if the transaction is over: every Query
    /// and Sync answered, no extended-protocol batch open, nothing half relayed.
    fn try_release(&mut self) -> bool {
        let Some(server) = self.server.as_ref() else {
            return false;
        };
        let done = self.transaction_mode && self.conv.is_idle() && server.rbuf.is_empty();
        if done {
            self.release();
        }
        done
    }

    /// Gives the server connection back: it is idle, all answers relayed.
    fn release(&mut self) {
        if let Some(mut server) = self.server.take() {
            // A cancel on its way to this server could hit the next client's query:
            // close the connection instead of reusing it.
            server.clean = !self.cancel.slot().clear_target();
            self.entry
                .pool
                .metrics()
                .record_transaction(self.checkout_at.elapsed());
            drop(server);
            self.info.set_state(ClientState::Idle);
            self.flush_counters();
        }
    }

    /// Forwards every complete client frame to the server. Returns true on Terminate.
    async fn forward_client(&mut self) -> Result<bool, ClientError> {
        loop {
            if self.cbuf.is_empty() {
                return Ok(false);
            }
            let scan =
                self.conv
                    .scan_client(&self.cbuf, self.max_message, self.transaction_mode)?;
            if self.server.is_none() {
                return Ok(matches!(scan, ClientScan::Terminate { .. }));
            }
            let (forward, skip, with, terminate) = match scan {
                ClientScan::Forward(n) => (n, 0, None, false),
                ClientScan::Replace {
                    forward,
                    skip,
                    with,
                } => (forward, skip, Some(with), false),
                ClientScan::Terminate { forward } => (forward, 0, None, true),
            };
            if forward > 0 {
                self.send_to_server(forward).await?;
            }
            if let Some(mut with) = with {
                // Splice the replacement in place of the refused frame (already counted).
                let len = with.len();
                with.extend_from_slice(&self.cbuf[skip..]);
                self.cbuf = with;
                self.send_to_server(len).await?;
                continue;
            }
            return Ok(terminate);
        }
    }

    /// Writes the first `n` bytes of the client buffer to the server and consumes them,
    /// relaying whatever the server sends meanwhile. A big pipeline or COPY must not
    /// wait for the server to read while the server waits for us to read its results:
    /// PostgreSQL stops reading when its output is blocked, so a blocking write here
    /// would deadlock where a direct (non-blocking) client would not.
    async fn send_to_server(&mut self, n: usize) -> Result<(), ClientError> {
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
            let (mut rd, mut wr) = conn.stream.split();
            tokio::select! {
                biased;
                r = wr.write(&self.cbuf[written..n]) => match r {
                    Ok(0) => return Err(self.server_gone("server closed the connection".into())),
                    Ok(k) => written += k,
                    Err(e) => return Err(self.server_gone(e.to_string())),
                },
                r = rd.read_buf(&mut conn.rbuf) => match r {
                    Ok(0) => return Err(self.server_gone("server closed the connection".into())),
                    Ok(k) => {
                        self.counters.bytes_from_server += k as u64;
                        self.forward_server().await?;
                    }
                    Err(e) => return Err(self.server_gone(e.to_string())),
                },
            }
        }
        self.cbuf.advance(n);
        self.sent_to_server = true;
        Ok(())
    }

    /// Relays what the server sent to the client and releases the server when the
    /// transaction is over.
    async fn forward_server(&mut self) -> Result<(), ClientError> {
        let Some(server) = self.server.as_mut() else {
            return Ok(());
        };
        let (n, answered) = self
            .conv
            .scan_server(&server.rbuf, self.max_message)
            .map_err(|e| {
                ClientError::ServerLost(format!("server sent a malformed message: {e}"))
            })?;
        self.counters.queries += answered;
        if n > 0 {
            self.client.write_all(&server.rbuf[..n]).await?;
            server.rbuf.advance(n);
        }
        let released = self.try_release();
        if !released && !self.transaction_mode && answered > 0 && self.conv.all_answered() {
            // Session mode keeps the server: publish counts at each transaction's end.
            self.flush_counters();
        }
        Ok(())
    }

    /// The client left: give the server back clean (session mode: after the reset
    /// query) or close it if its state is unknown.
    async fn finish(&mut self) {
        self.flush_counters();
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
        let reset = self.shared.config.server_reset_query.trim();
        if self.transaction_mode || reset.is_empty() {
            server.clean = true;
            return;
        }
        let ok = tokio::time::timeout(RESET_TIMEOUT, run_reset(&mut server, reset))
            .await
            .unwrap_or(false);
        if ok {
            server.clean = true;
            self.entry
                .pool
                .metrics()
                .record_transaction(self.checkout_at.elapsed());
        } else {
            server.discard();
        }
    }
}

/// Runs the reset query on an idle server; true if it ended with ReadyForQuery `I`.
async fn run_reset(server: &mut crate::server::ServerConn, sql: &str) -> bool {
    let mut out = BytesMut::new();
    weir_wire::build::put_query(&mut out, sql);
    if server.stream.write_all(&out).await.is_err() {
        return false;
    }
    loop {
        let Ok(f) = read_frame(&mut server.stream, &mut server.rbuf, 1 << 20).await else {
            return false;
        };
        match f.tag() {
            b'Z' => return parse_ready_for_query(f.body()) == Some(b'I') && server.rbuf.is_empty(),
            b'E' => {
                tracing::warn!(error = %ErrorFields::parse(f.body()).message_lossy(), "server_reset_query failed");
            }
            _ => {}
        }
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
