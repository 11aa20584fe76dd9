//! Cancel keys: the proxy hands every client its own BackendKeyData and forwards a
//! CancelRequest carrying it to the server that is running that client's query.

use std::sync::{Arc, Mutex};

use dashmap::DashMap;

use crate::server::CancelTarget;

/// One client's slot: its proxy-issued key and the server it currently holds.
#[derive(Debug)]
pub struct CancelSlot {
    /// Room for the longest key issued (protocol 3.2); `key_len` bytes are used.
    key: [u8; LONG_KEY_LEN],
    key_len: usize,
    state: Mutex<SlotState>,
}

#[derive(Debug, Default)]
struct SlotState {
    /// The server running this client's transaction, if it holds one.
    target: Option<Arc<CancelTarget>>,
    /// Cancels looked up for `target` and not yet delivered to PostgreSQL.
    in_flight: u32,
}

impl CancelSlot {
    /// The proxy-issued secret key for this client: 4 bytes under protocol 3.0, 32
    /// under 3.2 (as PostgreSQL 18 issues).
    pub fn key(&self) -> &[u8] {
        &self.key[..self.key_len]
    }

    /// Records the server this client now holds.
    pub fn set_target(&self, target: Arc<CancelTarget>) {
        self.lock().target = Some(target);
    }

    /// Forgets the server (it is being released). True if a cancel aimed at it may still
    /// be on its way: then the server must not serve another client, or that client's
    /// query could be the one cancelled (pgbouncer PR #717).
    pub fn clear_target(&self) -> bool {
        let mut state = self.lock();
        state.target = None;
        state.in_flight > 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SlotState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A cancel on its way to PostgreSQL; while it lives, the target server is not reused.
#[derive(Debug)]
pub struct CancelTicket {
    slot: Arc<CancelSlot>,
    /// Where to send the CancelRequest, with the server's real key.
    pub target: Arc<CancelTarget>,
}

impl Drop for CancelTicket {
    fn drop(&mut self) {
        let mut state = self.slot.lock();
        state.in_flight = state.in_flight.saturating_sub(1);
    }
}

/// Cancel key length under protocol 3.0.
pub const SHORT_KEY_LEN: usize = 4;
/// Cancel key length issued under protocol 3.2 (PostgreSQL 18's).
pub const LONG_KEY_LEN: usize = 32;

/// All live clients' cancel slots, keyed by proxy-issued process id.
#[derive(Debug, Default)]
pub struct CancelRegistry {
    slots: DashMap<i32, Arc<CancelSlot>>,
}

impl CancelRegistry {
    /// Registers a new client under a fresh random (pid, 4-byte key); the guard
    /// unregisters it on drop.
    pub fn register(self: &Arc<Self>) -> CancelGuard {
        self.register_with_key_len(SHORT_KEY_LEN)
    }

    /// As [`CancelRegistry::register`] with a key of `key_len` bytes (at most
    /// [`LONG_KEY_LEN`]): 32 for protocol 3.2 clients.
    pub fn register_with_key_len(self: &Arc<Self>, key_len: usize) -> CancelGuard {
        let key_len = key_len.clamp(SHORT_KEY_LEN, LONG_KEY_LEN);
        loop {
            // Positive pids only: some drivers print or parse them as such.
            let pid = (rand::random::<u32>() >> 1) as i32;
            if pid == 0 {
                continue;
            }
            let slot = Arc::new(CancelSlot {
                key: rand::random(),
                key_len,
                state: Mutex::new(SlotState::default()),
            });
            if let dashmap::Entry::Vacant(v) = self.slots.entry(pid) {
                v.insert(slot.clone());
                return CancelGuard {
                    registry: self.clone(),
                    pid,
                    slot,
                };
            }
        }
    }

    /// Starts a cancel for a client's (pid, key): the server it holds now, if the key
    /// matches and it holds one. The ticket keeps that server from being reused until
    /// the cancel has been delivered.
    pub fn begin_cancel(&self, pid: i32, key: &[u8]) -> Option<CancelTicket> {
        let slot = self.slots.get(&pid)?.clone();
        let matches = key.len() == slot.key_len
            && key
                .iter()
                .zip(slot.key().iter())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0;
        if !matches {
            return None;
        }
        let target = {
            let mut state = slot.lock();
            let target = state.target.clone()?;
            state.in_flight += 1;
            target
        };
        Some(CancelTicket { slot, target })
    }

    /// Number of registered clients.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// True when no client is registered.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }
}

/// A registered client's cancel slot; unregisters on drop.
#[derive(Debug)]
pub struct CancelGuard {
    registry: Arc<CancelRegistry>,
    pid: i32,
    slot: Arc<CancelSlot>,
}

impl CancelGuard {
    /// Proxy-issued process id.
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// The slot to update on checkout and release.
    pub fn slot(&self) -> &CancelSlot {
        &self.slot
    }
}

impl Drop for CancelGuard {
    fn drop(&mut self) {
        self.registry.slots.remove(&self.pid);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cancel_needs_the_right_key_and_a_target() {
        let reg = Arc::new(CancelRegistry::default());
        let guard = reg.register();
        let key = guard.slot().key().to_vec();
        assert!(
            reg.begin_cancel(guard.pid(), &key).is_none(),
            "no server held yet"
        );
        guard.slot().set_target(target());
        assert_eq!(reg.begin_cancel(guard.pid(), &key).unwrap().target.pid, 99);
        let mut wrong = key.clone();
        wrong[0] ^= 1;
        assert!(reg.begin_cancel(guard.pid(), &wrong).is_none());
        assert!(reg.begin_cancel(guard.pid(), &key[..3]).is_none());
        let pid = guard.pid();
        drop(guard);
        assert!(reg.begin_cancel(pid, &key).is_none());
        assert!(reg.is_empty());
    }

    #[test]
    fn a_server_with_a_cancel_in_flight_is_not_reused() {
        let reg = Arc::new(CancelRegistry::default());
        let guard = reg.register();
        let key = guard.slot().key().to_vec();
        guard.slot().set_target(target());
        assert!(!guard.slot().clear_target(), "no cancel: reusable");

        guard.slot().set_target(target());
        let ticket = reg.begin_cancel(guard.pid(), &key).unwrap();
        assert!(
            guard.slot().clear_target(),
            "cancel on its way: discard the server"
        );
        assert!(
            reg.begin_cancel(guard.pid(), &key).is_none(),
            "released: later cancels go nowhere"
        );
        drop(ticket);
        guard.slot().set_target(target());
        assert!(!guard.slot().clear_target(), "delivered: reusable again");
    }

    #[test]
    fn protocol_3_2_keys_are_32_bytes_and_must_match_whole() {
        let reg = Arc::new(CancelRegistry::default());
        let guard = reg.register_with_key_len(LONG_KEY_LEN);
        let key = guard.slot().key().to_vec();
        assert_eq!(key.len(), 32);
        guard.slot().set_target(target());
        assert!(reg.begin_cancel(guard.pid(), &key[..4]).is_none());
        let mut longer = key.clone();
        longer.push(0);
        assert!(reg.begin_cancel(guard.pid(), &longer).is_none());
        assert!(reg.begin_cancel(guard.pid(), &key).is_some());
    }

    fn target() -> Arc<CancelTarget> {
        Arc::new(CancelTarget {
            addr: crate::server::ServerAddr::Tcp("127.0.0.1:5432".parse().unwrap()),
            host: "127.0.0.1".into(),
            tls: None,
            pid: 99,
            key: vec![1, 2, 3, 4],
        })
    }
}
