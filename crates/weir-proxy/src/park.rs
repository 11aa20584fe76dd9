//! Parked clients: a logged-in client that holds no server and has nothing to say costs
//! a small record here instead of a task, a session future and the runtime's socket
//! registration (together ~1.4 KiB of the ~2 KiB an idle client cost).
//!
//! A session parks once idle for [`LOGIN_GRACE`] after login, when a later login or the
//! watcher looks (most pooled clients log in and wait; one that sends its first query at
//! once should not pay for a park and a resume on the way), and, later, when the sweep
//! finds it idle for a whole [`SWEEP`] period: a client that pauses between queries is
//! never parked, so the hot path pays nothing. Parking hands the socket from tokio to one epoll set of the proxy's own ([`mio::Poll`]),
//! watched by one task; when the socket turns readable (a query, or the client leaving)
//! the watcher takes the record out and spawns the session again where it stopped.
//!
//! What else reaches a parked client: a stop (`KILL`, drain, shutdown) wakes the lot
//! through the client's [`crate::stop::StopSignal`] waker and resumes it, so it is told
//! as an unparked one would be; a `client_idle_timeout` resumes it at its deadline.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed, Ordering::SeqCst};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::task::{Wake, Waker};
use std::time::{Duration, Instant};

use mio::unix::SourceFd;
use mio::{Interest, Token};
use tokio::io::unix::AsyncFd;
use tokio::sync::Notify;
use tracing::{debug, warn};

use crate::registry::{ClientHandle, ClientInfo, ClientState};
use crate::relay::RelayParts;
use crate::session::{Shared, Ticket};
use crate::stream::Stream;

/// How often the watcher looks for clients to park; a client idle since before the
/// previous look is asked to park.
pub const SWEEP: Duration = Duration::from_secs(1);
/// How long a client that just logged in may stay quiet before it is asked to park:
/// long enough for a first query sent right after login (one round trip, tens of µs
/// here), short enough that a burst of logins that then idle holds few unparked
/// sessions at once: the resident memory keeps their peak (with 10 ms, 1 000 idle
/// clients cost 1.11 KiB each instead of 0.85; with 2 ms, 0.88).
pub const LOGIN_GRACE: Duration = Duration::from_millis(2);
/// Readiness events taken per epoll call.
const EVENTS: usize = 256;

/// Why a parked session runs again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resume {
    /// Its socket turned readable (a message, or EOF), or it was asked to stop.
    Woken,
    /// Its `client_idle_timeout` passed while parked.
    IdleTimeout,
}

/// A parked session: everything it needs to run again.
pub struct Parked {
    socket: Socket,
    client: ClientHandle,
    ticket: Ticket,
    relay: RelayParts,
    /// When `client_idle_timeout` ends it, if set.
    deadline: Option<Instant>,
}

/// The client's socket while no tokio registration holds it.
enum Socket {
    Tcp(std::net::TcpStream),
    Unix(std::os::unix::net::UnixStream),
}

impl Parked {
    /// Its session was asked to stop (`KILL`, drain, shutdown).
    fn stop_asked(&self) -> bool {
        self.client.info().stop.requested().is_some()
    }
}

impl Socket {
    fn fd(&self) -> RawFd {
        match self {
            Socket::Tcp(s) => s.as_raw_fd(),
            Socket::Unix(s) => s.as_raw_fd(),
        }
    }

    /// Back to tokio (needs the runtime's context).
    fn into_stream(self) -> std::io::Result<Stream> {
        Ok(match self {
            Socket::Tcp(s) => Stream::from(tokio::net::TcpStream::from_std(s)?),
            Socket::Unix(s) => Stream::from(tokio::net::UnixStream::from_std(s)?),
        })
    }
}

/// What parks in one proxy: the records, their deadlines, the epoll set and its watcher.
#[derive(Default)]
pub struct ParkingLot {
    inner: Mutex<Lot>,
    /// The epoll set's registry, created with the watcher at the first park; `None` if
    /// that failed (then nothing parks).
    registry: OnceLock<Option<mio::Registry>>,
    wake: Arc<LotWake>,
    parked: AtomicUsize,
    /// Clients that just logged in, oldest first (see [`ParkingLot::park_soon`]).
    fresh: Mutex<VecDeque<Fresh>>,
}

/// A client in its [`LOGIN_GRACE`].
struct Fresh {
    due: Instant,
    client: Weak<ClientInfo>,
    /// Its state's timestamp when it went idle: a different one at `due` means it has
    /// been busy since, and a client that talks is not asked to park.
    idle_since_us: u64,
}

#[derive(Default)]
struct Lot {
    clients: HashMap<u64, Box<Parked>>,
    /// Idle-timeout deadlines by client id; stale entries (resumed clients) are skipped.
    deadlines: BinaryHeap<Reverse<(Instant, u64)>>,
    /// The watcher is gone: park no more.
    closed: bool,
}

impl Lot {
    /// A resumed client's deadline stays in the heap until it comes due; with a long
    /// `client_idle_timeout` and clients that park often, that would grow without
    /// bound, so the heap is rebuilt from the live deadlines once it is twice their
    /// number (amortized O(1) per park).
    fn drop_stale_deadlines(&mut self) {
        if self.deadlines.len() <= 2 * self.clients.len() + 64 {
            return;
        }
        let Lot {
            clients, deadlines, ..
        } = self;
        deadlines
            .retain(|Reverse((d, id))| clients.get(id).is_some_and(|p| p.deadline == Some(*d)));
    }
}

/// Wakes the watcher: a parked client's stop waker, or a park with an earlier deadline.
#[derive(Default)]
struct LotWake {
    notify: Notify,
    /// A parked client may have been asked to stop: look at each.
    scan: AtomicBool,
}

impl Wake for LotWake {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.scan.store(true, SeqCst);
        self.notify.notify_one();
    }
}

impl ParkingLot {
    /// How many clients are parked now.
    pub fn len(&self) -> usize {
        self.parked.load(Relaxed)
    }

    /// No client is parked.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether `info`'s session may park now. If so, its stop waker is the lot's from
    /// now on: a stop asked after this wakes the watcher, not the session's task.
    pub(crate) fn may_park(&self, shared: &Arc<Shared>, info: &ClientInfo) -> bool {
        if shared.shutdown.is_cancelled() || self.registry(shared).is_none() {
            return false;
        }
        info.stop.register(&Waker::from(self.wake.clone()));
        // After registering: a stop asked before it is seen here.
        info.stop.requested().is_none()
    }

    /// `info`'s client just logged in and is idle: once [`LOGIN_GRACE`] has passed it is
    /// asked to park, unless it has been busy since, by the next login or the watcher's
    /// next look, whichever comes first. No timer: a timer per login cost a syscall
    /// (tokio wakes its driver for a timer due before the one it sleeps towards), and
    /// one to look at the queue would wake an idle proxy once per login when logins
    /// are rare. A burst of logins parks itself as it goes; the last few of it wait
    /// for the watcher's next look, at most a sweep.
    pub(crate) fn park_soon(&self, shared: &Arc<Shared>, info: &Arc<ClientInfo>) {
        if self.registry(shared).is_some() {
            let now = Instant::now();
            self.ask_fresh_to_park(now);
            self.enqueue_fresh(info, now);
        }
    }

    /// Queues a fresh login idle since `now`; true if the queue was empty.
    fn enqueue_fresh(&self, info: &Arc<ClientInfo>, now: Instant) -> bool {
        let entry = Fresh {
            due: now + LOGIN_GRACE,
            client: Arc::downgrade(info),
            idle_since_us: info.changed_at_us(),
        };
        let mut fresh = self.fresh.lock().unwrap_or_else(|p| p.into_inner());
        fresh.push_back(entry);
        fresh.len() == 1
    }

    /// Asks the fresh clients whose grace has passed, and that stayed idle, to park;
    /// returns when the next one's grace ends.
    fn ask_fresh_to_park(&self, now: Instant) -> Option<Instant> {
        let mut fresh = self.fresh.lock().unwrap_or_else(|p| p.into_inner());
        while let Some(f) = fresh.front() {
            if f.due > now {
                return Some(f.due);
            }
            if let Some(info) = f.client.upgrade() {
                if info.state() == ClientState::Idle && info.changed_at_us() == f.idle_since_us {
                    info.stop.request_park();
                }
            }
            fresh.pop_front();
        }
        None
    }

    /// Parks a session that [`ParkingLot::may_park`] allowed. The socket leaves tokio
    /// here; a failure to hand it over ends the session (nothing can be told then).
    pub(crate) fn park(
        &self,
        shared: &Arc<Shared>,
        stream: Stream,
        client: ClientHandle,
        ticket: Ticket,
        relay: RelayParts,
        deadline: Option<Instant>,
    ) {
        let socket = match stream {
            Stream::Tcp(s) => s.into_inner().into_std().map(Socket::Tcp),
            Stream::Unix(s) => s.into_inner().into_std().map(Socket::Unix),
            _ => Err(std::io::Error::other("only plain sockets park")),
        };
        let socket = match socket {
            Ok(s) => s,
            Err(e) => {
                warn!(client = %client.info().tag(), error = %e, "could not park a client; closing it");
                return;
            }
        };
        let id = client.info().id;
        let fd = socket.fd();
        let parked = Box::new(Parked {
            socket,
            client,
            ticket,
            relay,
            deadline,
        });
        let Some(registry) = self.registry(shared) else {
            return spawn_resume(shared, parked, Resume::Woken);
        };
        {
            let mut lot = self.inner.lock().unwrap_or_else(|p| p.into_inner());
            if lot.closed {
                drop(lot);
                return spawn_resume(shared, parked, Resume::Woken);
            }
            if let Some(d) = deadline {
                let earliest = lot.deadlines.peek().is_none_or(|Reverse((e, _))| d < *e);
                lot.deadlines.push(Reverse((d, id)));
                if earliest {
                    // The watcher sleeps until the earliest deadline it knew of.
                    self.wake.notify.notify_one();
                }
            }
            lot.clients.insert(id, parked);
            lot.drop_stale_deadlines();
            self.parked.fetch_add(1, Relaxed);
        }
        // Registered after the insert: a readiness event always finds the record. The
        // kernel reports data that is already there at once.
        if let Err(e) =
            registry.register(&mut SourceFd(&fd), Token(id as usize), Interest::READABLE)
        {
            debug!(error = %e, "epoll registration failed; resuming the client");
            self.resume(shared, id, Resume::Woken);
            return;
        }
        // A stop asked between `may_park` and the insert found no record to resume.
        let stopped = self
            .inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clients
            .get(&id)
            .is_some_and(|p| p.stop_asked());
        if stopped {
            self.resume(shared, id, Resume::Woken);
        }
    }

    /// Takes client `id` out (if still parked) and runs its session again.
    fn resume(&self, shared: &Arc<Shared>, id: u64, why: Resume) {
        let parked = {
            let mut lot = self.inner.lock().unwrap_or_else(|p| p.into_inner());
            lot.clients.remove(&id)
        };
        let Some(parked) = parked else { return };
        self.parked.fetch_sub(1, Relaxed);
        if let Some(Some(registry)) = self.registry.get() {
            // Before tokio registers the socket again; fails only if it was never added.
            let _ = registry.deregister(&mut SourceFd(&parked.socket.fd()));
        }
        spawn_resume(shared, parked, why);
    }

    /// The registry of the lot's epoll set, starting its watcher on first use.
    fn registry(&self, shared: &Arc<Shared>) -> Option<&mio::Registry> {
        self.registry
            .get_or_init(|| match start_watcher(shared, self.wake.clone()) {
                Ok(registry) => Some(registry),
                Err(e) => {
                    warn!(error = %e, "cannot watch parked clients; idle clients stay tasks");
                    None
                }
            })
            .as_ref()
    }

    /// Resumes every parked client `pick` chooses; with `close`, nothing parks from
    /// then on.
    fn resume_where(&self, shared: &Arc<Shared>, close: bool, pick: impl Fn(&Parked) -> bool) {
        let ids: Vec<u64> = {
            let mut lot = self.inner.lock().unwrap_or_else(|p| p.into_inner());
            lot.closed |= close;
            lot.clients
                .iter()
                .filter(|(_, p)| pick(p))
                .map(|(id, _)| *id)
                .collect()
        };
        for id in ids {
            self.resume(shared, id, Resume::Woken);
        }
    }

    /// Resumes the clients whose idle timeout has passed; returns the next deadline.
    fn resume_timed_out(&self, shared: &Arc<Shared>, now: Instant) -> Option<Instant> {
        let mut due = Vec::new();
        let next = {
            let mut lot = self.inner.lock().unwrap_or_else(|p| p.into_inner());
            loop {
                let Some(&Reverse((deadline, id))) = lot.deadlines.peek() else {
                    break None;
                };
                let live = lot
                    .clients
                    .get(&id)
                    .is_some_and(|p| p.deadline == Some(deadline));
                if live && deadline > now {
                    break Some(deadline);
                }
                lot.deadlines.pop();
                if live {
                    due.push(id);
                }
            }
        };
        for id in due {
            self.resume(shared, id, Resume::IdleTimeout);
        }
        next
    }

    /// If none is parked, nothing parks from now on (the watcher ends); returns whether
    /// that is so.
    fn close_if_empty(&self) -> bool {
        let mut lot = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        lot.closed = lot.clients.is_empty();
        lot.closed
    }
}

fn spawn_resume(shared: &Arc<Shared>, parked: Box<Parked>, why: Resume) {
    // Boxed, as `serve` is at accept: a task's end moves its whole future twice.
    tokio::spawn(Box::pin(resume_session(shared.clone(), parked, why)));
}

/// Runs a parked session again in a task of its own.
async fn resume_session(shared: Arc<Shared>, parked: Box<Parked>, why: Resume) {
    let Parked {
        socket,
        client,
        ticket,
        relay,
        ..
    } = *parked;
    match socket.into_stream() {
        Ok(stream) => {
            let relay = crate::relay::Relay::new(shared, stream, client, ticket, relay, why);
            crate::session::relay_phase(relay).await;
        }
        Err(e) => {
            debug!(client = %client.info().tag(), error = %e, "a parked client's socket failed")
        }
    }
}

/// Creates the epoll set and spawns its watcher; returns the set's registry.
fn start_watcher(shared: &Arc<Shared>, wake: Arc<LotWake>) -> std::io::Result<mio::Registry> {
    let poll = mio::Poll::new()?;
    let registry = poll.registry().try_clone()?;
    // SAFETY: the `Poll` owns its epoll descriptor and closes it only when dropped,
    // which is after the `AsyncFd` that owns the `Poll` has deregistered it.
    let fd = unsafe { AsyncFd::register(poll) }.map_err(std::io::Error::from)?;
    tokio::spawn(watch(Arc::downgrade(shared), fd, wake));
    Ok(registry)
}

/// The watcher: resumes parked clients whose socket turned readable, that were asked to
/// stop or whose idle timeout passed, and asks long-idle sessions to park. Ends once
/// the proxy shuts down and no client is parked.
async fn watch(shared: Weak<Shared>, mut fd: AsyncFd<mio::Poll>, wake: Arc<LotWake>) {
    let mut events = mio::Events::with_capacity(EVENTS);
    let mut next_sweep = Instant::now() + SWEEP;
    let mut next_deadline: Option<Instant> = None;
    loop {
        let until = next_deadline.map_or(next_sweep, |d| d.min(next_sweep));
        let mut ready = Vec::new();
        tokio::select! {
            guard = fd.readable_mut() => {
                let Ok(mut guard) = guard else { break };
                events.clear();
                if let Err(e) = guard.get_inner_mut().poll(&mut events, Some(Duration::ZERO)) {
                    if e.kind() != std::io::ErrorKind::Interrupted {
                        warn!(error = %e, "polling parked clients failed");
                    }
                }
                ready.extend(events.iter().map(|e| e.token().0 as u64));
                if ready.len() < EVENTS {
                    guard.clear_ready();
                }
            }
            () = wake.notify.notified() => {}
            () = tokio::time::sleep_until(until.into()) => {}
        }
        let Some(shared) = shared.upgrade() else {
            break;
        };
        let lot = &shared.parking;
        for id in ready {
            lot.resume(&shared, id, Resume::Woken);
        }
        if wake.scan.swap(false, SeqCst) {
            lot.resume_where(&shared, false, Parked::stop_asked);
        }
        let now = Instant::now();
        next_deadline = lot.resume_timed_out(&shared, now);
        lot.ask_fresh_to_park(now);
        if now >= next_sweep {
            next_sweep = now + SWEEP;
            ask_idle_to_park(&shared);
        }
        if shared.shutdown.is_cancelled() && lot.close_if_empty() {
            return;
        }
    }
    // The epoll set failed or the proxy is gone: whoever is parked runs again.
    if let Some(shared) = shared.upgrade() {
        shared.parking.resume_where(&shared, true, |_| true);
    }
}

/// Asks every session idle since before the previous sweep to park.
fn ask_idle_to_park(shared: &Shared) {
    let cutoff = crate::registry::now_us().saturating_sub(SWEEP.as_micros() as u64);
    shared.clients.for_each(|info| {
        if info.state() == ClientState::Idle
            && info.changed_at_us() <= cutoff
            && !info.stop.park_requested()
        {
            info.stop.request_park();
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh login is asked to park once its grace has passed, unless it has been
    /// busy since or is gone.
    #[test]
    fn fresh_logins_that_stay_idle_are_asked_to_park_after_their_grace() {
        let registry = Arc::new(crate::registry::ClientRegistry::default());
        let lot = ParkingLot::default();
        let clients: Vec<_> = (1..=3)
            .map(|port| registry.register(([127, 0, 0, 1], port).into(), false))
            .collect();
        let now = Instant::now();
        for c in &clients {
            c.info().set_state(ClientState::Idle);
        }
        assert!(
            lot.enqueue_fresh(clients[0].info(), now),
            "first in an empty queue"
        );
        for c in &clients[1..] {
            assert!(!lot.enqueue_fresh(c.info(), now));
        }
        let mut clients = clients;
        drop(clients.pop()); // the third leaves during its grace
        let (idle, busy) = (&clients[0], &clients[1]);
        // A later state timestamp: the coarse clock ticks every few milliseconds.
        std::thread::sleep(Duration::from_millis(25));
        busy.info().set_state(ClientState::Active);
        busy.info().set_state(ClientState::Idle);

        assert_eq!(
            lot.ask_fresh_to_park(now),
            Some(now + LOGIN_GRACE),
            "not yet due"
        );
        assert!(!idle.info().stop.park_requested());
        assert_eq!(lot.ask_fresh_to_park(now + LOGIN_GRACE), None);
        assert!(idle.info().stop.park_requested());
        assert!(
            !busy.info().stop.park_requested(),
            "it talked during its grace"
        );
        assert!(lot.fresh.lock().unwrap().is_empty());
    }

    /// Deadlines of clients no longer parked do not pile up.
    #[test]
    fn stale_deadlines_are_dropped_once_they_outnumber_the_live_ones() {
        let mut lot = Lot::default();
        let now = Instant::now();
        for id in 0..1000u64 {
            lot.deadlines
                .push(Reverse((now + Duration::from_secs(3600), id)));
            lot.drop_stale_deadlines();
        }
        assert!(
            lot.deadlines.len() <= 65,
            "{} deadlines kept",
            lot.deadlines.len()
        );
    }

    /// A parked client costs this record (boxed) besides its registry entry and cancel
    /// key: it must stay well under the ~1 KiB an idle client may cost in all.
    #[test]
    fn a_parked_record_stays_small() {
        let size = std::mem::size_of::<Parked>();
        assert!(size <= 384, "a parked client's record takes {size} bytes");
    }
}
