//! Live clients, for the admin console (`SHOW CLIENTS`), `KILL` and shutdown: each
//! session registers itself at accept and is removed when its handle drops. The relay
//! updates a client's state with one relaxed atomic store per transition.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicI32, AtomicU64, AtomicU8, Ordering::Relaxed, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use dashmap::DashMap;

use crate::stop::{Stop, StopSignal};

/// Where a client stands, as `SHOW CLIENTS` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum ClientState {
    /// Still in startup or authentication.
    Login = 0,
    /// Logged in, holding no server connection.
    Idle = 1,
    /// Waiting for a server connection.
    Waiting = 2,
    /// Holding a server connection.
    Active = 3,
}

impl ClientState {
    fn from_u8(v: u8) -> ClientState {
        match v {
            1 => ClientState::Idle,
            2 => ClientState::Waiting,
            3 => ClientState::Active,
            _ => ClientState::Login,
        }
    }
}

/// What is known of one client connection.
#[derive(Debug)]
pub struct ClientInfo {
    /// Proxy-wide unique id (`ptr` in `SHOW CLIENTS`).
    pub id: u64,
    /// The client's address (over the Unix socket: unspecified, and the listen port).
    pub peer: SocketAddr,
    /// Connected over the Unix socket.
    pub unix: bool,
    /// When it connected.
    pub connected_at: SystemTime,
    /// Asks the session to end (`KILL`, `RECONNECT`, shutdown) and wakes it.
    pub stop: StopSignal,
    state: AtomicU8,
    /// Backend pid of the server connection held now (0: none), for SHOW's `link`.
    server_pid: AtomicI32,
    /// Session features pinning it to its server connection (bits of
    /// [`crate::features::pin`]), for `SHOW CLIENTS`.
    pins: AtomicU8,
    /// Microseconds since the Unix epoch of the last state change.
    changed_at_us: AtomicU64,
    login: Mutex<Option<LoginInfo>>,
}

/// Who a client logged in as. Shared strings ([`crate::params::intern`]): most clients
/// of a proxy have the same few users, databases and application names.
#[derive(Debug, Clone)]
pub struct LoginInfo {
    /// User name.
    pub user: Arc<str>,
    /// Database name as the client gave it.
    pub database: Arc<str>,
    /// `application_name` from the startup packet.
    pub application_name: Arc<str>,
}

impl ClientInfo {
    /// The client's current state.
    pub fn state(&self) -> ClientState {
        ClientState::from_u8(self.state.load(Relaxed))
    }

    /// Records a state change; cheap enough for every transaction.
    pub fn set_state(&self, state: ClientState) {
        self.state.store(state as u8, Relaxed);
        self.changed_at_us.store(now_us(), Relaxed);
    }

    /// Notes the backend pid of the server connection this client holds (0: none).
    pub fn set_server_pid(&self, pid: i32) {
        self.server_pid.store(pid, Relaxed);
    }

    /// Notes the session features pinning the client (0: none).
    pub fn set_pins(&self, pins: u8) {
        if self.pins.load(Relaxed) != pins {
            self.pins.store(pins, Relaxed);
        }
    }

    /// Session features pinning the client to its server connection (0: none).
    pub fn pins(&self) -> u8 {
        self.pins.load(Relaxed)
    }

    /// Backend pid of the server connection held now, if any.
    pub fn server_pid(&self) -> Option<i32> {
        Some(self.server_pid.load(Relaxed)).filter(|p| *p != 0)
    }

    /// When the state last changed, in microseconds since the Unix epoch.
    pub fn changed_at_us(&self) -> u64 {
        self.changed_at_us.load(Relaxed)
    }

    /// How log lines name this client.
    pub fn tag(&self) -> ClientTag<'_> {
        ClientTag(Some(self))
    }

    /// Who the client logged in as; `None` while it is still logging in.
    pub fn login(&self) -> Option<LoginInfo> {
        self.login.lock().ok().and_then(|l| l.clone())
    }

    /// Records the login.
    pub fn set_login(&self, login: LoginInfo) {
        if let Ok(mut l) = self.login.lock() {
            *l = Some(login);
        }
        self.set_state(ClientState::Idle);
    }
}

/// A client as its log lines name it, PgBouncer's way: `db/user@address:port`
/// (`@address:port` before login). Log lines carry it as a field instead of a span
/// per session: a span cost each idle client ~480 bytes at the default log level.
#[derive(Debug, Clone, Copy)]
pub struct ClientTag<'a>(Option<&'a ClientInfo>);

impl ClientTag<'_> {
    /// No client known (unit tests, fuzzing).
    pub const NONE: ClientTag<'static> = ClientTag(None);
}

impl std::fmt::Display for ClientTag<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let Some(info) = self.0 else {
            return f.write_str("-");
        };
        // Plain writes: a login logs this twice, and the formatting machinery (an
        // address is five padded integers) was most of what logging it cost.
        if let Some(l) = info.login.lock().ok().as_deref().and_then(Option::as_ref) {
            f.write_str(&l.database)?;
            f.write_str("/")?;
            f.write_str(&l.user)?;
        }
        match info.peer {
            _ if info.unix => write!(f, "@unix:{}", info.peer.port()),
            SocketAddr::V4(v4) => {
                let mut text = [0u8; 22];
                let n = put_v4(&mut text, &v4);
                f.write_str(std::str::from_utf8(&text[..n]).unwrap_or("@?"))
            }
            SocketAddr::V6(_) => write!(f, "@{}", info.peer),
        }
    }
}

/// Writes `@a.b.c.d:port` into `out` (22 bytes hold the longest); returns its length.
fn put_v4(out: &mut [u8; 22], addr: &std::net::SocketAddrV4) -> usize {
    out[0] = b'@';
    let mut n = 1;
    for (i, octet) in addr.ip().octets().into_iter().enumerate() {
        if i > 0 {
            out[n] = b'.';
            n += 1;
        }
        n += put_decimal(&mut out[n..], u32::from(octet));
    }
    out[n] = b':';
    n + 1 + put_decimal(&mut out[n + 1..], u32::from(addr.port()))
}

/// Writes `v` in decimal at the start of `out`; returns its length.
fn put_decimal(out: &mut [u8], v: u32) -> usize {
    let mut buf = [0; 10];
    let digits = weir_wire::build::decimal(v, &mut buf).as_bytes();
    out[..digits.len()].copy_from_slice(digits);
    digits.len()
}

/// Every live client, by id.
#[derive(Debug, Default)]
pub struct ClientRegistry {
    clients: DashMap<u64, Arc<ClientInfo>>,
    next_id: AtomicU64,
    /// The stop asked of every client ([`Stop`] as u8, 0: none), so a client that
    /// registers while [`ClientRegistry::stop_all`] runs is not missed.
    stopping: AtomicU8,
}

impl ClientRegistry {
    /// Registers a freshly accepted client; it is removed when the handle drops.
    pub fn register(self: &Arc<Self>, peer: SocketAddr, unix: bool) -> ClientHandle {
        let id = self.next_id.fetch_add(1, Relaxed) + 1;
        let info = Arc::new(ClientInfo {
            id,
            peer,
            unix,
            connected_at: SystemTime::now(),
            stop: StopSignal::default(),
            state: AtomicU8::new(ClientState::Login as u8),
            server_pid: AtomicI32::new(0),
            pins: AtomicU8::new(0),
            changed_at_us: AtomicU64::new(now_us()),
            login: Mutex::new(None),
        });
        self.clients.insert(id, info.clone());
        // After the insert: either stop_all's walk sees this client or this sees its flag.
        match self.stopping.load(SeqCst) {
            0 => {}
            1 => info.stop.request(Stop::Drain),
            _ => info.stop.request(Stop::Kill),
        }
        ClientHandle {
            info,
            registry: self.clone(),
        }
    }

    /// Asks every client, present and registering, to end for `stop`.
    pub fn stop_all(&self, stop: Stop) {
        self.stopping.fetch_max(stop as u8, SeqCst);
        for client in self.clients.iter() {
            client.stop.request(stop);
        }
    }

    /// A snapshot of every live client.
    pub fn snapshot(&self) -> Vec<Arc<ClientInfo>> {
        self.clients.iter().map(|e| e.value().clone()).collect()
    }

    /// Calls `f` with every live client (the parking sweep: no snapshot allocated).
    pub fn for_each(&self, mut f: impl FnMut(&ClientInfo)) {
        for client in self.clients.iter() {
            f(client.value());
        }
    }

    /// How many clients are connected.
    pub fn len(&self) -> usize {
        self.clients.len()
    }

    /// No client is connected.
    pub fn is_empty(&self) -> bool {
        self.clients.is_empty()
    }
}

/// A session's registration; deregisters on drop.
#[derive(Debug)]
pub struct ClientHandle {
    info: Arc<ClientInfo>,
    registry: Arc<ClientRegistry>,
}

impl ClientHandle {
    /// The registered information.
    pub fn info(&self) -> &Arc<ClientInfo> {
        &self.info
    }
}

impl Drop for ClientHandle {
    fn drop(&mut self) {
        self.registry.clients.remove(&self.info.id);
    }
}

/// Microseconds since the Unix epoch, the clock of [`ClientInfo::changed_at_us`]: a
/// few milliseconds coarse, cheap enough for three stamps per transaction.
pub(crate) fn now_us() -> u64 {
    weir_pool::clock::coarse_epoch_us()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The tag reads as the standard formatting would write it.
    #[test]
    fn a_tag_names_database_user_and_address() {
        let registry = Arc::new(ClientRegistry::default());
        for peer in [
            SocketAddr::from(([127, 0, 0, 1], 5432)),
            SocketAddr::from(([255, 255, 255, 255], 65535)),
            SocketAddr::from(([0, 0, 0, 0], 0)),
            SocketAddr::from(([10, 20, 3, 100], 40001)),
            "[::1]:6432".parse().expect("v6"),
        ] {
            let client = registry.register(peer, false);
            assert_eq!(client.info().tag().to_string(), format!("@{peer}"));
            client.info().set_login(LoginInfo {
                user: crate::params::intern("alice"),
                database: crate::params::intern("app"),
                application_name: crate::params::intern(""),
            });
            assert_eq!(client.info().tag().to_string(), format!("app/alice@{peer}"));
        }
        let unix = registry.register(SocketAddr::from(([0, 0, 0, 0], 6432)), true);
        assert_eq!(unix.info().tag().to_string(), "@unix:6432");
    }

    #[test]
    fn handles_register_and_deregister() {
        let registry = Arc::new(ClientRegistry::default());
        let a = registry.register(([127, 0, 0, 1], 1).into(), false);
        let b = registry.register(([127, 0, 0, 1], 2).into(), true);
        assert_ne!(a.info().id, b.info().id);
        assert_eq!(registry.len(), 2);
        a.info().set_state(ClientState::Active);
        assert_eq!(a.info().state(), ClientState::Active);
        drop(a);
        assert_eq!(registry.len(), 1);
        assert_eq!(registry.snapshot()[0].id, b.info().id);
    }
}
