//! Per-connection bookkeeping for `SHOW SERVERS` and `WAIT_CLOSE`: every open
//! connection has a small shared record (id, times, state, generation) that lives
//! in the pool's registry from connect to close.
//!
//! The record is owned by a [`ConnTicket`] inside the pooled connection, so it
//! leaves the registry exactly when the connection is dropped, whichever path
//! closes it. The hot path only stores two relaxed atomics per checkout/checkin.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::SystemTime;

/// What a [`crate::ManageConnection`] can tell about a connection for the admin
/// console; everything is optional.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConnLabel {
    /// The server process id (PostgreSQL's BackendKeyData pid).
    pub backend_pid: Option<i32>,
    /// The server's address (TCP).
    pub remote: Option<SocketAddr>,
    /// Set instead for a Unix socket: the server's port, its socket file's suffix.
    pub unix_port: Option<u16>,
    /// The local end of the connection.
    pub local: Option<SocketAddr>,
}

/// Where a server connection stands, as `SHOW SERVERS` reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum ServerState {
    /// In the idle list, ready for a client.
    Idle = 0,
    /// Checked out by a client.
    Active = 1,
    /// Taken by the pool itself (liveness probe or on its way to be closed).
    Used = 2,
}

impl ServerState {
    fn from_u8(v: u8) -> ServerState {
        match v {
            1 => ServerState::Active,
            2 => ServerState::Used,
            _ => ServerState::Idle,
        }
    }
}

/// A snapshot of one open server connection.
#[derive(Clone, Debug)]
pub struct ServerInfo {
    /// Pool-wide unique id (`ptr` in `SHOW SERVERS`).
    pub id: u64,
    /// When the connection was opened.
    pub connected_at: SystemTime,
    /// When it was last checked out or in.
    pub last_used: SystemTime,
    /// Its state now.
    pub state: ServerState,
    /// The pool generation it belongs to (see [`crate::Pool::reconnect`]).
    pub generation: u64,
    /// It belongs to an older generation and will be closed when released.
    pub close_needed: bool,
    /// What the manager told about it.
    pub label: ConnLabel,
}

/// The shared record of one connection.
#[derive(Debug)]
pub(crate) struct ConnMeta {
    id: u64,
    connected_at: SystemTime,
    pub(crate) generation: u64,
    label: ConnLabel,
    state: AtomicU8,
    /// Microseconds since the Unix epoch.
    last_used_us: AtomicU64,
}

impl ConnMeta {
    pub(crate) fn set_state(&self, state: ServerState) {
        self.state.store(state as u8, Relaxed);
        self.last_used_us
            .store(crate::clock::coarse_epoch_us(), Relaxed);
    }
}

/// Every open connection of one pool.
#[derive(Debug, Default)]
pub(crate) struct ServerRegistry {
    map: Mutex<HashMap<u64, Arc<ConnMeta>>>,
    next_id: AtomicU64,
}

impl ServerRegistry {
    /// Records a newly opened connection; the ticket removes it again when dropped.
    pub(crate) fn register(
        self: &Arc<Self>,
        generation: u64,
        label: ConnLabel,
        state: ServerState,
    ) -> ConnTicket {
        let now = SystemTime::now();
        let meta = Arc::new(ConnMeta {
            id: self.next_id.fetch_add(1, Relaxed) + 1,
            connected_at: now,
            generation,
            label,
            state: AtomicU8::new(state as u8),
            last_used_us: AtomicU64::new(epoch_us(now)),
        });
        self.lock().insert(meta.id, meta.clone());
        ConnTicket {
            meta,
            registry: self.clone(),
        }
    }

    /// A snapshot of every open connection, oldest first.
    pub(crate) fn snapshot(&self, generation: u64) -> Vec<ServerInfo> {
        let mut rows: Vec<ServerInfo> = self
            .lock()
            .values()
            .map(|m| ServerInfo {
                id: m.id,
                connected_at: m.connected_at,
                last_used: SystemTime::UNIX_EPOCH
                    + std::time::Duration::from_micros(m.last_used_us.load(Relaxed)),
                state: ServerState::from_u8(m.state.load(Relaxed)),
                generation: m.generation,
                close_needed: m.generation < generation,
                label: m.label,
            })
            .collect();
        rows.sort_by_key(|r| r.id);
        rows
    }

    /// How many open connections belong to a generation older than `generation`.
    pub(crate) fn older_than(&self, generation: u64) -> usize {
        self.lock()
            .values()
            .filter(|m| m.generation < generation)
            .count()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<ConnMeta>>> {
        self.map.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A connection's registration; deregisters on drop.
#[derive(Debug)]
pub(crate) struct ConnTicket {
    pub(crate) meta: Arc<ConnMeta>,
    registry: Arc<ServerRegistry>,
}

impl Drop for ConnTicket {
    fn drop(&mut self) {
        self.registry.lock().remove(&self.meta.id);
    }
}

fn epoch_us(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tickets_register_and_deregister() {
        let reg = Arc::new(ServerRegistry::default());
        let a = reg.register(0, ConnLabel::default(), ServerState::Active);
        let b = reg.register(1, ConnLabel::default(), ServerState::Idle);
        assert_eq!(reg.snapshot(1).len(), 2);
        assert_eq!(reg.older_than(1), 1);
        assert!(reg.snapshot(1)[0].close_needed);
        a.meta.set_state(ServerState::Idle);
        drop(a);
        assert_eq!(reg.older_than(1), 0);
        let rows = reg.snapshot(1);
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].id, b.meta.id);
        assert_eq!(rows[0].state, ServerState::Idle);
    }
}
