//! Named prepared statements in transaction mode. A client's statement names are its own;
//! on the server each distinct statement (query text + parameter types) gets one
//! proxy-wide name, `_pgweir_<id>`, and each server connection remembers (LRU-bounded)
//! which of them it has, so a statement is parsed once per server connection, not once per
//! client, and a client may land on any connection.
//!
//! Unnamed statements served from server-side copies (`cache_unnamed_statements`) that
//! take parameters live in a namespace of their own and are re-prepared on a server
//! every [`CUSTOM_PLAN_TRIES`] Binds, so PostgreSQL never gives them a generic plan (see
//! [`ServerStatements::count_bind`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, Weak};

use bytes::{BufMut, Bytes, BytesMut};
use weir_wire::build::{put_cstr, put_frame};

/// One distinct statement: what follows the name in a Parse body.
#[derive(Debug)]
pub struct Statement {
    /// Proxy-wide id; the server-side name is `_pgweir_<id>`.
    pub id: u64,
    /// The server-side name, NUL-free.
    pub server_name: Box<[u8]>,
    /// Parse body after the statement name: query text, NUL, parameter types.
    pub body: Bytes,
    /// Times it was parsed as an unnamed statement while alive (`cache_unnamed_statements`
    /// serves it from a named one from the second time on).
    pub unnamed_parses: AtomicU32,
    /// Some server parsed it without error: a client's Parse of it can be answered by
    /// the proxy without a server (it is parsed lazily where the client then uses it).
    parsed: AtomicBool,
    /// A client's unnamed statement with parameters: every execution must get a custom
    /// plan, as on a direct connection, so each server copy is re-prepared before
    /// PostgreSQL would consider a generic plan for it. Never set for named statements,
    /// whose plan choice stays PostgreSQL's.
    pub custom_plans_only: bool,
}

impl Statement {
    /// Notes that a server parsed it without error.
    pub fn mark_parsed(&self) {
        if !self.parsed.load(Relaxed) {
            self.parsed.store(true, Relaxed);
        }
    }

    /// Whether some server parsed it without error.
    pub fn is_parsed(&self) -> bool {
        self.parsed.load(Relaxed)
    }

    /// Appends a Parse of this statement under its server-side name.
    pub fn put_parse(&self, out: &mut BytesMut) {
        put_frame(out, b'P', |b| {
            put_cstr(b, &self.server_name);
            b.put_slice(&self.body);
        });
    }

    /// Appends a Close of this statement's server-side name.
    pub fn put_close(&self, out: &mut BytesMut) {
        put_close_statement(out, &self.server_name);
    }
}

/// Appends Close('S', name).
pub fn put_close_statement(out: &mut BytesMut, name: &[u8]) {
    put_frame(out, b'C', |b| {
        b.put_u8(b'S');
        put_cstr(b, name);
    });
}

/// How many custom plans PostgreSQL makes for a prepared statement with parameters
/// before it may switch to the generic plan: with `plan_cache_mode = auto`,
/// `choose_custom_plan` in `src/backend/utils/cache/plancache.c` (PostgreSQL 12 to 17)
/// returns true while `num_custom_plans < 5`, and the counter grows only when a custom
/// plan is built, at Bind. So Binds 1 to 5 of a fresh copy are planned for their values;
/// the 6th is the first that may get the generic plan.
pub const CUSTOM_PLAN_TRIES: u32 = 5;

/// Every distinct statement in use, so equal statements share one server-side name.
#[derive(Debug, Default)]
pub struct StatementRegistry {
    next_id: AtomicU64,
    by_body: Mutex<HashMap<Bytes, Weak<Statement>>>,
    /// Unnamed statements with parameters, apart from named ones of the same text: their
    /// server copies are re-prepared, which must not reset a named statement's plan.
    custom_by_body: Mutex<HashMap<Bytes, Weak<Statement>>>,
}

/// Registry size above which dead entries are swept (then twice the live count).
const SWEEP_FLOOR: usize = 1024;

impl StatementRegistry {
    /// The statement for a Parse body (after the name), shared with every client that
    /// parsed the same text and types.
    pub fn intern(&self, body: &[u8]) -> Arc<Statement> {
        self.intern_in(&self.by_body, body, false)
    }

    /// The statement a client's unnamed Parse body maps to: shared with named statements
    /// of the same text when it takes no parameters (its one plan is the same either
    /// way), else one of its own that keeps custom plans ([`Statement::custom_plans_only`]).
    pub fn intern_unnamed(&self, body: &[u8]) -> Arc<Statement> {
        if takes_parameters(body) {
            self.intern_in(&self.custom_by_body, body, true)
        } else {
            self.intern(body)
        }
    }

    fn intern_in(
        &self,
        map: &Mutex<HashMap<Bytes, Weak<Statement>>>,
        body: &[u8],
        custom_plans_only: bool,
    ) -> Arc<Statement> {
        let mut map = map.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(live) = map.get(body).and_then(Weak::upgrade) {
            return live;
        }
        if map.len() >= SWEEP_FLOOR && map.len().is_power_of_two() {
            map.retain(|_, w| w.strong_count() > 0);
        }
        let id = self.next_id.fetch_add(1, Relaxed) + 1;
        let body = Bytes::copy_from_slice(body);
        let statement = Arc::new(Statement {
            id,
            server_name: format!("_pgweir_{id}").into_bytes().into_boxed_slice(),
            body: body.clone(),
            unnamed_parses: AtomicU32::new(0),
            parsed: AtomicBool::new(false),
            custom_plans_only,
        });
        map.insert(body, Arc::downgrade(&statement));
        statement
    }
}

impl StatementRegistry {
    /// The live statement for a Parse body, if some server already parsed it without
    /// error; never creates one.
    pub fn parsed(&self, body: &[u8]) -> Option<Arc<Statement>> {
        let map = self.by_body.lock().unwrap_or_else(|e| e.into_inner());
        map.get(body)
            .and_then(Weak::upgrade)
            .filter(|s| s.is_parsed())
    }
}

/// Whether a Parse body (after the name) may give the statement parameters: it declares
/// parameter types, or its text has a `$` followed by a digit anywhere (in a literal or
/// identifier too: a false yes only costs a re-prepare, a false no would allow a generic
/// plan), or it is malformed. PostgreSQL binds parameters only for `$n` placeholders
/// and declared types; without any, `choose_custom_plan` always takes the one plan.
pub fn takes_parameters(body: &[u8]) -> bool {
    let Some((text, rest)) = weir_wire::frame::read_cstr(body) else {
        return true;
    };
    let declared = rest.get(..2).map(|n| i16::from_be_bytes([n[0], n[1]]));
    if declared != Some(0) {
        return true;
    }
    text.windows(2)
        .any(|w| w[0] == b'$' && w[1].is_ascii_digit())
}

/// A client's named statements, by the client's names.
#[derive(Debug, Default)]
pub struct ClientStatements {
    by_name: HashMap<Box<[u8]>, Arc<Statement>>,
}

impl ClientStatements {
    /// The statement the client calls `name`.
    pub fn get(&self, name: &[u8]) -> Option<&Arc<Statement>> {
        self.by_name.get(name)
    }

    /// Records `name`; returns what it replaced.
    pub fn insert(&mut self, name: &[u8], statement: Arc<Statement>) -> Option<Arc<Statement>> {
        self.by_name.insert(name.into(), statement)
    }

    /// Forgets `name`; returns the statement it named.
    pub fn remove(&mut self, name: &[u8]) -> Option<Arc<Statement>> {
        self.by_name.remove(name)
    }

    /// Forgets every name (`DEALLOCATE ALL`, `DISCARD ALL`).
    pub fn clear(&mut self) {
        self.by_name.clear();
    }

    /// How many names the client has.
    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    /// The client has no named statement.
    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }
}

/// The statements one server connection has prepared, least recently used first out.
#[derive(Debug, Default)]
pub struct ServerStatements {
    by_id: HashMap<u64, ServerCopy, IdHash>,
    tick: u64,
}

/// Hashes the proxy's own statement ids: sequential numbers no client chooses, so a
/// multiply spreads them well and SipHash's cost (twice per extended query: the touch
/// and the Bind count) buys nothing.
#[derive(Debug, Default, Clone, Copy)]
pub struct IdHash;

impl std::hash::BuildHasher for IdHash {
    type Hasher = IdHasher;

    fn build_hasher(&self) -> IdHasher {
        IdHasher(0)
    }
}

/// See [`IdHash`]; only `u64` keys are written.
#[derive(Debug, Default)]
pub struct IdHasher(u64);

impl std::hash::Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0 ^ n).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

/// One statement as a server connection has it.
#[derive(Debug)]
struct ServerCopy {
    statement: Arc<Statement>,
    /// `tick` when last used.
    used: u64,
    /// Binds of this copy sent (counted for [`Statement::custom_plans_only`] ones).
    binds: u32,
}

impl ServerStatements {
    /// Whether the server has `statement` (or a Parse of it is on its way); marks it used.
    pub fn touch(&mut self, statement: &Statement) -> bool {
        self.tick += 1;
        match self.by_id.get_mut(&statement.id) {
            Some(entry) => {
                entry.used = self.tick;
                true
            }
            None => false,
        }
    }

    /// Counts a Bind of the server's copy of `statement` (which it has, or is being
    /// sent). Returns true when that copy already had [`CUSTOM_PLAN_TRIES`] Binds, so
    /// PostgreSQL could give this one a generic plan: the caller then prepares the
    /// statement again (Close + Parse) ahead of the Bind, which counts as the first of
    /// the new copy, whose custom-plan counter starts over.
    ///
    /// Every Bind of the copy is counted, including ones that fail or are skipped after
    /// an error: counting more than PostgreSQL plans only re-prepares early.
    pub fn count_bind(&mut self, statement: &Statement) -> bool {
        let Some(entry) = self.by_id.get_mut(&statement.id) else {
            return false;
        };
        if entry.binds >= CUSTOM_PLAN_TRIES {
            entry.binds = 1;
            true
        } else {
            entry.binds += 1;
            false
        }
    }

    /// Records that a Parse of `statement` was sent. When `capacity` is reached, returns
    /// the least recently used statement, now forgotten, for the caller to Close.
    pub fn insert(&mut self, statement: Arc<Statement>, capacity: usize) -> Option<Arc<Statement>> {
        self.tick += 1;
        let evicted = if self.by_id.len() >= capacity.max(1) {
            let oldest = self
                .by_id
                .iter()
                .min_by_key(|(_, copy)| copy.used)
                .map(|(id, _)| *id);
            oldest
                .and_then(|id| self.by_id.remove(&id))
                .map(|copy| copy.statement)
        } else {
            None
        };
        let copy = ServerCopy {
            statement,
            used: self.tick,
            binds: 0,
        };
        self.by_id.insert(copy.statement.id, copy);
        evicted
    }

    /// Forgets `statement` (its Parse failed or was skipped).
    pub fn remove(&mut self, statement: &Statement) {
        self.by_id.remove(&statement.id);
    }

    /// Forgets everything (`DEALLOCATE ALL` / `DISCARD ALL` ran on the server).
    pub fn clear(&mut self) {
        self.by_id.clear();
    }

    /// How many statements the server has.
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    /// The server has none.
    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }
}

/// Appends a Bind whose statement name is replaced by `name`: `portal` is the Bind's
/// portal name and `rest` what follows the original statement name.
pub fn put_bind_renamed(out: &mut BytesMut, portal: &[u8], name: &[u8], rest: &[u8]) {
    put_frame(out, b'B', |b| {
        put_cstr(b, portal);
        put_cstr(b, name);
        b.put_slice(rest);
    });
}

/// Appends Describe('S', name).
pub fn put_describe_statement(out: &mut BytesMut, name: &[u8]) {
    put_frame(out, b'D', |b| {
        b.put_u8(b'S');
        put_cstr(b, name);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_statements_share_a_server_name_while_alive() {
        let r = StatementRegistry::default();
        let a = r.intern(b"select 1\0\0\0");
        let b = r.intern(b"select 1\0\0\0");
        let c = r.intern(b"select 2\0\0\0");
        assert!(Arc::ptr_eq(&a, &b));
        assert_ne!(a.server_name, c.server_name);
        assert_eq!(&*a.server_name, format!("_pgweir_{}", a.id).as_bytes());
        drop((a, b));
        let d = r.intern(b"select 1\0\0\0");
        assert_ne!(d.id, c.id);
    }

    #[test]
    fn server_cache_evicts_the_least_recently_used() {
        let r = StatementRegistry::default();
        let s: Vec<_> = (0..3)
            .map(|i| r.intern(format!("select {i}\0\0\0").as_bytes()))
            .collect();
        let mut cache = ServerStatements::default();
        assert!(cache.insert(s[0].clone(), 2).is_none());
        assert!(cache.insert(s[1].clone(), 2).is_none());
        assert!(cache.touch(&s[0]));
        let evicted = cache.insert(s[2].clone(), 2).expect("full");
        assert_eq!(evicted.id, s[1].id);
        assert!(!cache.touch(&s[1]));
        assert!(cache.touch(&s[0]) && cache.touch(&s[2]));
        cache.remove(&s[0]);
        assert_eq!(cache.len(), 1);
    }

    #[test]
    fn parameters_are_seen_in_declared_types_or_any_dollar_digit() {
        assert!(!takes_parameters(b"select 1\0\0\0"));
        assert!(!takes_parameters(b"select $$a$$, $x$b$x$\0\0\0"));
        assert!(takes_parameters(b"select $1\0\0\0"));
        assert!(takes_parameters(b"select 1 where x = $12\0\0\0"));
        // A false yes is fine: only a re-prepare too many.
        assert!(takes_parameters(b"select '$1'\0\0\0"));
        // Declared types without placeholders still bind parameters.
        assert!(takes_parameters(b"select 1\0\0\x01\0\0\0\x17"));
        // Malformed: assume parameters.
        assert!(takes_parameters(b"select $"));
        assert!(takes_parameters(b"select 1\0"));
    }

    #[test]
    fn unnamed_statements_with_parameters_keep_apart_from_named_ones() {
        let r = StatementRegistry::default();
        let named = r.intern(b"select $1\0\0\0");
        let unnamed = r.intern_unnamed(b"select $1\0\0\0");
        assert_ne!(named.id, unnamed.id);
        assert!(!named.custom_plans_only && unnamed.custom_plans_only);
        assert!(Arc::ptr_eq(&unnamed, &r.intern_unnamed(b"select $1\0\0\0")));
        // Without parameters there is one plan either way: shared.
        let named = r.intern(b"select 1\0\0\0");
        let unnamed = r.intern_unnamed(b"select 1\0\0\0");
        assert!(Arc::ptr_eq(&named, &unnamed));
        assert!(!unnamed.custom_plans_only);
    }

    #[test]
    fn a_copy_is_renewed_before_its_sixth_bind() {
        let r = StatementRegistry::default();
        let s = r.intern_unnamed(b"select $1\0\0\0");
        let mut cache = ServerStatements::default();
        assert!(!cache.count_bind(&s), "not on the server: nothing to renew");
        cache.insert(s.clone(), 10);
        let renewals: Vec<bool> = (0..16).map(|_| cache.count_bind(&s)).collect();
        let expect: Vec<bool> = (0..16).map(|i| i > 0 && i % 5 == 0).collect();
        assert_eq!(renewals, expect);
        // A copy parsed again (after eviction or DISCARD) starts over.
        cache.remove(&s);
        cache.insert(s.clone(), 10);
        assert!((0..5).all(|_| !cache.count_bind(&s)));
        assert!(cache.count_bind(&s));
    }

    #[test]
    fn renamed_frames_are_well_formed() {
        let mut out = BytesMut::new();
        put_bind_renamed(&mut out, b"p", b"_pgweir_1", b"\0\0\0\0\0\0");
        assert_eq!(&out[..], b"B\0\0\0\x16p\0_pgweir_1\0\0\0\0\0\0\0");
        let r = StatementRegistry::default();
        let s = r.intern(b"select\0\0\0");
        let mut out = BytesMut::new();
        s.put_parse(&mut out);
        assert_eq!(&out[..], b"P\0\0\0\x17_pgweir_1\0select\0\0\0");
    }
}
