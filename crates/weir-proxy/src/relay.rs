//! The steady state of a session: relay frames between the client and a server
//! connection, checking one out when a transaction starts and giving it back when the
//! transaction is over (transaction mode) or when the client leaves (session mode).
//!
//! The client's own task drives both sockets (no task hop per message). Client bytes are
//! scanned frame by frame, because the proxy must count Syncs and refuse what it cannot
//! pool safely; server bytes stream through a frame scanner that only stops at
//! ReadyForQuery and ErrorResponse.
//!
//! An idle client costs little: [`Relay`] keeps only what outlives server connections,
//! and everything that exists while a server is held (the connection, the exchange on
//! it, the buffers, the futures that read and write both sockets) lives in one boxed
//! future per checkout ([`held`]), freed when the server goes back. The session's own
//! future, which the task keeps for its whole life, stays small.

use std::pin::Pin;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::AsyncReadExt;
use weir_config::{Config, PoolMode};

use crate::cancel::CancelGuard;
use crate::error::ClientError;
use crate::pools::PoolEntry;
use crate::registry::{ClientInfo, ClientState};
use crate::session::Shared;
use crate::session_state::ClientSession;
use crate::upstream::Upstream;

mod dedup;
mod held;
mod idle;
pub mod phase;
mod sink;

use held::Held;
use idle::Idle;
use phase::Phase;
use sink::Sink;

/// Read size for client sockets; client buffers are released while the client is idle.
const CLIENT_READ: usize = 8 * 1024;
/// Read size for server sockets (results can be large; fewer, bigger reads).
const SERVER_READ: usize = 32 * 1024;
/// How long the reset query may take before the connection is closed instead.
const RESET_TIMEOUT: Duration = Duration::from_secs(10);

/// One client's relay: what outlives its server connections; see the module docs.
pub struct Relay<'a> {
    shared: &'a Shared,
    /// The configuration in force, re-read at each checkout (follows RELOAD and SET).
    config: Arc<Config>,
    entry: Arc<PoolEntry>,
    client: Sink<'a>,
    cbuf: BytesMut,
    cancel: CancelGuard,
    /// This client's entry in the registry: state for `SHOW CLIENTS`, `KILL`.
    info: Arc<ClientInfo>,
    transaction_mode: bool,
    max_message: usize,
    /// `max_pinned` for this pool, from the config in force (re-read at each checkout).
    max_pinned: u32,
    /// The upstream of this pool (its breaker hears how queries end).
    upstream: Arc<Upstream>,
    /// Where the relay stands.
    phase: Phase,
    /// The database's `dedup` (the client's own `pgweir.dedup`, which `SET` may change
    /// at any time, wins: [`Relay::dedup_wanted`]).
    dedup: bool,
    /// What outlives server connections: statement names, settings, pins.
    session: ClientSession,
    /// Bytes for the client that had to be assembled (answers the proxy gives itself).
    to_client: BytesMut,
    /// Bytes of a stray CopyData message (no server held) still to drop.
    discard_remaining: usize,
    /// A checkout was refused inside an extended-protocol batch: the client's messages
    /// are dropped up to its Sync, which gets ReadyForQuery (as PostgreSQL skips after
    /// an error).
    skip_to_sync: bool,
    /// Counts not yet added to the pool's metrics (see `flush_counters`).
    counters: Counters,
}

/// Per-session counts, flushed to the pool's shared atomics once per transaction.
#[derive(Default)]
struct Counters {
    bytes_from_client: u64,
    bytes_from_server: u64,
}

/// How a held server connection was let go.
enum Parted {
    /// It went back; the client is idle again.
    Released,
    /// The client left (Terminate or EOF).
    ClientLeft,
}

impl<'a> Relay<'a> {
    /// A relay for a logged-in client; `cbuf` holds any bytes already read after login.
    pub fn new(
        shared: &'a Shared,
        entry: Arc<PoolEntry>,
        client: &'a mut crate::stream::Stream,
        cbuf: BytesMut,
        cancel: CancelGuard,
        info: Arc<ClientInfo>,
        session: ClientSession,
    ) -> Self {
        let transaction_mode = entry.mode == PoolMode::Transaction;
        let config = shared.config();
        let dedup = config.dedup_for(&entry.database);
        Relay {
            max_message: config.max_message_size as usize,
            max_pinned: config.max_pinned_for(&entry.database),
            upstream: entry.pool.manager().upstream(),
            config,
            shared,
            entry,
            client: Sink::new(client),
            cbuf,
            cancel,
            info,
            transaction_mode,
            phase: Phase::Idle,
            dedup,
            session,
            to_client: BytesMut::new(),
            discard_remaining: 0,
            skip_to_sync: false,
            counters: Counters::default(),
        }
    }

    /// Runs until the client leaves (`Ok`) or something ends the session (`Err`).
    ///
    /// # Errors
    /// See [`ClientError`]; the caller reports it to the client.
    pub async fn run(&mut self) -> Result<(), ClientError> {
        let result = self.relay().await;
        self.flush_counters();
        self.session.leave(self.entry.pool.metrics());
        result
    }

    async fn relay(&mut self) -> Result<(), ClientError> {
        loop {
            if !self.wait_for_request().await? {
                return Ok(());
            }
            // Boxed: everything that exists while a server is held lives in this future,
            // allocated per checkout and freed when the server goes back, so the future
            // an idle session keeps stays small.
            match Box::pin(self.hold_server()).await? {
                Parted::Released => {}
                Parted::ClientLeft => return Ok(()),
            }
        }
    }

    /// Idle, holding no server: reads the client's messages and answers what needs no
    /// server. Returns true once a message needs one, false when the client leaves.
    async fn wait_for_request(&mut self) -> Result<bool, ClientError> {
        self.phase = Phase::Idle;
        loop {
            // From the config in force (checkout re-reads it), so RELOAD reaches here.
            let idle_timeout = self.config.client_idle_timeout;
            let decision = self.idle_decision()?;
            if !self.to_client.is_empty() {
                // Answers the proxy gave without a server (a known Parse).
                self.client.proxy_output(&self.to_client).await?;
                self.to_client.clear();
            }
            match decision {
                // A drain lets running transactions finish but starts no new one, even
                // when the query raced the shutdown signal here.
                Idle::NeedServer if self.shared.shutdown.is_cancelled() => {
                    return Err(ClientError::Shutdown)
                }
                // Boxed: only a client that follows a flight needs the waiting future.
                Idle::NeedServer
                    if self.dedup_wanted() && Box::pin(self.follow_or_lead()).await? =>
                {
                    continue
                }
                Idle::NeedServer => return Ok(true),
                Idle::Terminate => return Ok(false),
                Idle::NeedMore => {}
            }
            if self.cbuf.is_empty() {
                // Idle between transactions: hold no buffer memory while waiting.
                self.cbuf = BytesMut::new();
                if self.to_client.capacity() > 0 {
                    self.to_client = BytesMut::new();
                }
            }
            // Boxed and only when configured: a timer inline would make every idle
            // session's future bigger by its size, timeout or not.
            let mut idle_timer =
                (!idle_timeout.is_zero()).then(|| Box::pin(tokio::time::sleep(idle_timeout)));
            tokio::select! {
                // poll_read_ready keeps the waker in the socket's own slot: unlike
                // readable(), its future holds no waiter node (~150 bytes per idle client).
                // Under TLS it is ready only once a whole record's plaintext is there.
                r = std::future::poll_fn(|cx| self.client.stream().poll_read_ready(cx)) => r?,
                stop = self.info.stop.stopped(true) => return Err(stop.into()),
                _ = boxed_sleep(&mut idle_timer), if idle_timer.is_some() => {
                    return Err(ClientError::IdleTimeout(idle_timeout));
                }
            }
            reserve(&mut self.cbuf, CLIENT_READ);
            // read_buf rather than try_read_buf: a short read clears the cached
            // readiness, so the next poll waits for epoll instead of paying a recvfrom
            // that returns EAGAIN.
            match self.client.stream().read_buf(&mut self.cbuf).await? {
                0 => return Ok(false),
                n => self.counters.bytes_from_client += n as u64,
            }
        }
    }

    /// Checks a server out for the client's request, relays until the server goes
    /// back or the session ends, and lets the server go in the one way its state
    /// allows ([`phase::verdict`]).
    async fn hold_server(&mut self) -> Result<Parted, ClientError> {
        let result = self.hold_server_once().await;
        // A flight this client led and did not finish: its followers run it themselves.
        self.client.end_flight(false);
        result
    }

    async fn hold_server_once(&mut self) -> Result<Parted, ClientError> {
        let mut held = match self.checkout().await {
            Ok(held) => held,
            Err(e) if e.is_refusal() => {
                self.refuse_request(&e).await?;
                return Ok(Parted::Released);
            }
            Err(e) => return Err(e),
        };
        let result = self.relay_held(&mut held).await;
        let parting = match &result {
            Ok(Parted::Released) => return result,
            Ok(Parted::ClientLeft) => phase::Parting::ClientLeft,
            Err(e) if e.is_server_failure() => phase::Parting::ServerFailed,
            Err(_) => phase::Parting::ClientLeft,
        };
        self.let_go(&mut held, parting).await;
        result
    }

    async fn checkout(&mut self) -> Result<Held, ClientError> {
        self.phase = Phase::Waiting;
        self.info.set_state(ClientState::Waiting);
        let config = self.shared.config();
        if !Arc::ptr_eq(&config, &self.config) {
            // RELOAD or SET: what derives from the config (a RELOAD may also have moved
            // the pool to another upstream).
            self.max_pinned = config.max_pinned_for(&self.entry.database);
            self.upstream = self.entry.pool.manager().upstream();
            self.dedup = config.dedup_for(&self.entry.database);
            self.config = config;
        }
        let mut conn = crate::session::checkout(
            &self.entry,
            &self.upstream,
            self.config.mode,
            self.session.class,
        )
        .await?;
        self.phase = Phase::Transaction;
        self.info.set_state(ClientState::Active);
        self.info.set_server_pid(conn.cancel.pid);
        conn.clean = false;
        self.cancel.slot().set_target(conn.cancel.clone());
        let replay = self.session.params.replay_query(&conn.state.params);
        let mut held = Held::new(conn);
        if let Some(sql) = replay {
            // The client's settings go first, in the same write as its own messages.
            held.conv.replay(&sql, &mut held.to_server);
        }
        Ok(held)
    }

    /// Whether query dedup is on for this client: transaction mode only, then its own
    /// `pgweir.dedup` if it set one, else its database's setting.
    fn dedup_wanted(&self) -> bool {
        self.transaction_mode && self.session.dedup.unwrap_or(self.dedup)
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
}

/// Sleeps until `deadline` (forever if none; the branch is disabled then anyway).
async fn sleep_until(deadline: Option<std::time::Instant>) {
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

/// Waits out a boxed timer (forever if none; the branch is disabled then anyway).
async fn boxed_sleep(timer: &mut Option<Pin<Box<tokio::time::Sleep>>>) {
    match timer {
        Some(t) => t.await,
        None => std::future::pending().await,
    }
}

fn reserve(buf: &mut BytesMut, chunk: usize) {
    if buf.capacity() - buf.len() < chunk / 4 {
        buf.reserve(chunk);
    }
}
