//! Cancel keys: the proxy hands every client its own BackendKeyData and forwards a
//! CancelRequest carrying it to the server that is running that client's query.

use std::sync::{Arc, Mutex};

use dashmap::DashMap;

use crate::server::CancelTarget;

/// One client's slot: its proxy-issued key and the server it currently holds.
#[derive(Debug)]
pub struct CancelSlot {
    key: [u8; 4],
    target: Mutex<Option<Arc<CancelTarget>>>,
}

impl CancelSlot {
    /// The proxy-issued secret key for this client.
    pub fn key(&self) -> [u8; 4] {
        self.key
    }

    /// Records the server this client now holds (or `None` once released).
    pub fn set_target(&self, target: Option<Arc<CancelTarget>>) {
        *self.target.lock().unwrap_or_else(|e| e.into_inner()) = target;
    }

    fn target(&self) -> Option<Arc<CancelTarget>> {
        self.target
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// All live clients' cancel slots, keyed by proxy-issued process id.
#[derive(Debug, Default)]
pub struct CancelRegistry {
    slots: DashMap<i32, Arc<CancelSlot>>,
}

impl CancelRegistry {
    /// Registers a new client under a fresh random (pid, key); the guard unregisters it on drop.
    pub fn register(self: &Arc<Self>) -> CancelGuard {
        loop {
            // Positive pids only: some drivers print or parse them as such.
            let pid = (rand::random::<u32>() >> 1) as i32;
            if pid == 0 {
                continue;
            }
            let slot = Arc::new(CancelSlot {
                key: rand::random(),
                target: Mutex::new(None),
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

    /// The server to cancel for a client's (pid, key), if the key matches and the client holds one now.
    pub fn lookup(&self, pid: i32, key: &[u8]) -> Option<Arc<CancelTarget>> {
        let slot = self.slots.get(&pid)?.clone();
        let matches = key.len() == 4
            && key
                .iter()
                .zip(slot.key.iter())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0;
        if matches {
            slot.target()
        } else {
            None
        }
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
    fn lookup_needs_the_right_key_and_a_target() {
        let reg = Arc::new(CancelRegistry::default());
        let guard = reg.register();
        let key = guard.slot().key();
        assert!(
            reg.lookup(guard.pid(), &key).is_none(),
            "no server held yet"
        );
        let target = Arc::new(CancelTarget {
            addr: "127.0.0.1:5432".parse().unwrap(),
            pid: 99,
            key: vec![1, 2, 3, 4],
        });
        guard.slot().set_target(Some(target));
        assert_eq!(reg.lookup(guard.pid(), &key).unwrap().pid, 99);
        let mut wrong = key;
        wrong[0] ^= 1;
        assert!(reg.lookup(guard.pid(), &wrong).is_none());
        let pid = guard.pid();
        drop(guard);
        assert!(reg.lookup(pid, &key).is_none());
        assert!(reg.is_empty());
    }
}
