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
//! future stays small, and a client idle for long gives even that up: the relay ends
//! with [`Ended::Parked`] and keeps only its [`RelayParts`] in the parking lot
//! ([`crate::park`]) until the client speaks again.

use std::pin::Pin;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::AsyncReadExt;
use weir_config::{Config, PoolMode};

use crate::cancel::CancelGuard;
use crate::error::ClientError;
use crate::park::Resume;
use crate::pools::PoolEntry;
use crate::registry::{ClientHandle, ClientState};
use crate::session::{Shared, Ticket};
use crate::session_state::ClientSession;
use crate::stop::IdleWake;
use crate::stream::Stream;
use crate::upstream::Upstream;

mod dedup;
mod held;
mod idle;
pub mod phase;
mod room;
mod sink;

use held::Held;
use idle::Idle;
use phase::Phase;
use room::{reserve, reserve_for_request};
use sink::Sink;

/// Read size for client sockets; client buffers are released while the client is idle.
const CLIENT_READ: usize = 8 * 1024;
/// Read size for server sockets (results can be large; fewer, bigger reads).
const SERVER_READ: usize = 32 * 1024;
/// How long the reset query may take before the connection is closed instead.
const RESET_TIMEOUT: Duration = Duration::from_secs(10);

/// One client's relay: what outlives its server connections; see the module docs.
pub struct Relay {
    shared: Arc<Shared>,
    /// The configuration in force, re-read at each checkout (follows RELOAD and SET).
    config: Arc<Config>,
    entry: Arc<PoolEntry>,
    client: Sink,
    /// Its registration (its [`crate::registry::ClientInfo`]: state for `SHOW CLIENTS`,
    /// `KILL`), and its place under `max_client_conn` and in the drain's count: held
    /// here so the relay can hand them to the parking lot.
    handle: ClientHandle,
    ticket: Ticket,
    cbuf: BytesMut,
    cancel: CancelGuard,
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
    /// Park at the first idle moment (a fresh login), not only when the sweep asks.
    park_at_once: bool,
    /// A park was asked when the session could not park (TLS, bytes pending): ignore
    /// the request until the next transaction clears it.
    park_declined: bool,
    /// Resumed because its idle timeout passed while parked: end at once.
    timed_out: bool,
    /// `SHOW QUERIES` executions not yet in the shared store (flushed at park and end).
    query_batch: weir_pool::query_stats::Batch,
}

/// What a relay keeps when it is not running: before its first run, and while its
/// client is parked. Small on purpose: a parked client costs this and little more.
pub struct RelayParts {
    entry: Arc<PoolEntry>,
    cancel: CancelGuard,
    session: ClientSession,
    /// Bytes already read (after login: a first query sent with the startup packet).
    cbuf: BytesMut,
    park_at_once: bool,
}

impl RelayParts {
    /// A fresh login's relay; `cbuf` holds any bytes already read after login.
    pub fn new(
        entry: Arc<PoolEntry>,
        cancel: CancelGuard,
        session: ClientSession,
        cbuf: BytesMut,
    ) -> Self {
        RelayParts {
            entry,
            cancel,
            session,
            cbuf,
            park_at_once: true,
        }
    }
}

/// How a relay's run ended without error.
#[derive(Debug)]
pub enum Ended {
    /// The client left (Terminate or EOF).
    Left,
    /// The client is idle and may park, until this deadline (`client_idle_timeout`).
    Parked(Option<std::time::Instant>),
}

/// What an idle wait ended with.
enum Wait {
    /// A message that needs a server.
    Request,
    /// The client left.
    Left,
    /// Park, until this idle-timeout deadline.
    Park(Option<std::time::Instant>),
    /// Asked to park and unable to (TLS, bytes pending): idle from now on, so the busy
    /// loop's future goes (only a wait inside [`Relay::busy`] ends so).
    Shrink,
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

impl Relay {
    /// A logged-in client's relay, fresh or resumed from the parking lot for `why`.
    pub fn new(
        shared: Arc<Shared>,
        client: Stream,
        handle: ClientHandle,
        ticket: Ticket,
        parts: RelayParts,
        why: Resume,
    ) -> Self {
        let RelayParts {
            entry,
            cancel,
            session,
            cbuf,
            park_at_once,
        } = parts;
        handle.info().stop.clear_park();
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
            handle,
            ticket,
            cbuf,
            cancel,
            transaction_mode,
            phase: Phase::Idle,
            dedup,
            session,
            to_client: BytesMut::new(),
            discard_remaining: 0,
            skip_to_sync: false,
            counters: Counters::default(),
            park_at_once,
            park_declined: false,
            timed_out: why == Resume::IdleTimeout,
            query_batch: Default::default(),
        }
    }

    /// Hands the client to the parking lot (after [`Ended::Parked`]): what outlives
    /// this run, and its socket. Its last query's text goes: a parked client holds no
    /// buffer.
    pub fn park(self, deadline: Option<std::time::Instant>) {
        let Relay {
            shared,
            client,
            handle,
            ticket,
            entry,
            cancel,
            mut session,
            ..
        } = self;
        session.sample = BytesMut::new();
        session.sample_fingerprint = None;
        session.sample_plain = None;
        session.sampled = false;
        session.plain_text = None;
        let parts = RelayParts {
            entry,
            cancel,
            session,
            cbuf: BytesMut::new(),
            park_at_once: false,
        };
        let stream = client.into_stream();
        shared
            .parking
            .park(&shared, stream, handle, ticket, parts, deadline);
    }

    /// Waits until everything written to the client is with the kernel (see
    /// [`crate::uring`]): before its socket is parked.
    pub async fn flush_client(&mut self) -> std::io::Result<()> {
        tokio::io::AsyncWriteExt::flush(self.client.stream()).await
    }

    /// Ends the session after [`Relay::run`]: tells the client the error, logs the
    /// disconnection. Dropping the relay then frees its registration and ticket.
    // Not an `async fn`: that would keep a second copy of `result` in the future.
    pub fn finish(
        &mut self,
        result: Result<(), ClientError>,
    ) -> impl std::future::Future<Output = ()> + Send + '_ {
        crate::session::finish(
            &self.shared,
            self.client.stream(),
            self.handle.info(),
            result,
        )
    }

    /// Runs until the client leaves or parks (`Ok`), or something ends the session
    /// (`Err`).
    ///
    /// # Errors
    /// See [`ClientError`]; the caller reports it to the client.
    pub async fn run(&mut self) -> Result<Ended, ClientError> {
        let result = if self.timed_out {
            Err(ClientError::IdleTimeout(self.config.client_idle_timeout))
        } else {
            self.relay().await
        };
        self.flush_counters();
        self.query_batch.flush(&self.shared.queries);
        if !matches!(result, Ok(Ended::Parked(_))) {
            self.session.leave(self.entry.pool.metrics());
        }
        result
    }

    async fn relay(&mut self) -> Result<Ended, ClientError> {
        loop {
            match self.wait_for_request(false).await? {
                Wait::Request => {}
                Wait::Left => return Ok(Ended::Left),
                Wait::Park(deadline) => return Ok(Ended::Parked(deadline)),
                Wait::Shrink => continue,
            }
            // Boxed: everything that exists while a server is held lives in this future,
            // so the future an idle session keeps stays small. It is allocated when the
            // client turns busy and lives across its transactions until the client idles
            // long enough to be asked to park: one allocation per transaction (~2 KiB,
            // past malloc's per-thread cache) was ~5 % of the proxy's instructions.
            match Box::pin(self.busy()).await? {
                Wait::Request | Wait::Shrink => {}
                Wait::Left => return Ok(Ended::Left),
                Wait::Park(deadline) => return Ok(Ended::Parked(deadline)),
            }
        }
    }

    /// Serves the request that made the client busy, then each next one, until the
    /// client leaves, parks, or idles long enough to be asked to park (`Shrink`).
    async fn busy(&mut self) -> Result<Wait, ClientError> {
        loop {
            let held = self.hold_server().await;
            // A flight this client led and did not finish: its followers run it themselves.
            self.client.end_flight(false);
            match held? {
                Parted::Released => {}
                Parted::ClientLeft => return Ok(Wait::Left),
            }
            match self.wait_for_request(true).await? {
                Wait::Request => {}
                ended => return Ok(ended),
            }
        }
    }

    /// Whether the client may park now: a plain socket, nothing buffered or owed either
    /// way, and the lot takes it (which from then on hears its stop requests).
    fn can_park(&self) -> bool {
        self.client.is_plain()
            && self.cbuf.is_empty()
            && self.to_client.is_empty()
            && self.discard_remaining == 0
            && !self.skip_to_sync
            && !self.client.leading()
            && self
                .shared
                .parking
                .may_park(&self.shared, self.handle.info())
    }

    /// Idle for a while and unable to park (TLS): at least its buffers go.
    fn release_buffers(&mut self) {
        if self.cbuf.is_empty() {
            self.cbuf = BytesMut::new();
        }
        if self.to_client.is_empty() {
            self.to_client = BytesMut::new();
        }
    }

    /// Idle, holding no server: reads the client's messages and answers what needs no
    /// server, until a message needs one, the client leaves, or it parks. Inside the
    /// busy loop (`busy`), a declined park request ends the wait too ([`Wait::Shrink`]).
    async fn wait_for_request(&mut self, busy: bool) -> Result<Wait, ClientError> {
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
                Idle::NeedServer => return Ok(Wait::Request),
                Idle::Terminate => return Ok(Wait::Left),
                Idle::NeedMore => {}
            }
            // The read buffer is kept between transactions (a client that pauses
            // between them would allocate 8 KiB per transaction otherwise); a client
            // that idles longer parks and gives it up, or releases it if it cannot.
            // Just logged in, it is asked to park unless it speaks within a grace
            // period (crate::park::LOGIN_GRACE): most clients that will idle do so from
            // the start, and one that sends its first query at once (connect, query,
            // close) should not pay for a park and a resume (four epoll_ctl calls and
            // a task) on the way.
            if self.cbuf.is_empty()
                && std::mem::take(&mut self.park_at_once)
                && self.client.is_plain()
            {
                // What login left in the buffers is not needed to wait: during a burst
                // of logins every client in its grace holds only its session.
                self.release_buffers();
                self.shared
                    .parking
                    .park_soon(&self.shared, self.handle.info());
            }
            // Boxed and only when configured: a timer inline would make every idle
            // session's future bigger by its size, timeout or not.
            let mut idle_timer =
                (!idle_timeout.is_zero()).then(|| Box::pin(tokio::time::sleep(idle_timeout)));
            loop {
                tokio::select! {
                    // In this order, without select!'s random start (a thread-local RNG
                    // draw per poll): a stop first, so a client that always has a query
                    // ready still hears it.
                    biased;
                    wake = std::future::poll_fn(|cx| self.handle.info().stop.poll_idle(cx, !self.park_declined)) => {
                        match wake {
                            IdleWake::Stop(stop) => return Err(stop.into()),
                            IdleWake::Park if self.can_park() => {
                                let deadline = idle_timer.as_ref().map(|t| t.deadline().into_std());
                                return Ok(Wait::Park(deadline));
                            }
                            IdleWake::Park => {
                                self.park_declined = true;
                                self.release_buffers();
                                self.query_batch.flush(&self.shared.queries);
                                if busy {
                                    return Ok(Wait::Shrink);
                                }
                            }
                        }
                    }
                    // poll_read_ready keeps the waker in the socket's own slot: unlike
                    // readable(), its future holds no waiter node (~150 bytes per idle
                    // client). Under TLS it is ready only once a whole record's
                    // plaintext is there.
                    r = std::future::poll_fn(|cx| self.client.stream().poll_read_ready(cx)) => {
                        r?;
                        break;
                    }
                    _ = boxed_sleep(&mut idle_timer), if idle_timer.is_some() => {
                        return Err(ClientError::IdleTimeout(idle_timeout));
                    }
                }
            }
            reserve_for_request(&mut self.cbuf, CLIENT_READ);
            // read_buf rather than try_read_buf: a short read clears the cached
            // readiness, so the next poll waits for epoll instead of paying a recvfrom
            // that returns EAGAIN.
            match self.client.stream().read_buf(&mut self.cbuf).await? {
                0 => return Ok(Wait::Left),
                n => self.counters.bytes_from_client += n as u64,
            }
        }
    }

    /// Checks a server out for the client's request, relays until the server goes
    /// back or the session ends, and lets the server go in the one way its state
    /// allows ([`phase::verdict`]).
    /// The caller, `busy`, ends a dedup flight this client led and did not finish
    /// (one nested future less to poll per wake than a wrapper here).
    async fn hold_server(&mut self) -> Result<Parted, ClientError> {
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
        self.handle.info().set_state(ClientState::Waiting);
        self.handle.info().stop.clear_park();
        self.park_declined = false;
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
        self.handle.info().set_state(ClientState::Active);
        self.handle.info().set_server_pid(conn.cancel.pid);
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
