//! The RAII checkout: derefs to the connection, checks it in (or closes it) on drop.

use std::fmt;
use std::mem::ManuallyDrop;
use std::ops::{Deref, DerefMut};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::pool::Inner;
use crate::state::Conn;
use crate::ManageConnection;

/// A checked-out connection. Dropping it checks the connection in if
/// [`ManageConnection::is_reusable`] says so and it is neither past
/// `max_lifetime` nor over a shrunk `max_size` (handing it straight to the first
/// waiter if any); otherwise it is closed and its slot freed.
pub struct PooledConnection<M: ManageConnection> {
    // Always initialised; taken only in `drop`.
    conn: ManuallyDrop<Conn<M::Connection>>,
    inner: Arc<Inner<M>>,
    discard: bool,
    /// The time of the check-in, if the caller read the clock for it anyway.
    checked_in_at: Option<Instant>,
}

impl<M: ManageConnection> PooledConnection<M> {
    pub(crate) fn new(inner: Arc<Inner<M>>, conn: Conn<M::Connection>) -> Self {
        Self {
            conn: ManuallyDrop::new(conn),
            inner,
            discard: false,
            checked_in_at: None,
        }
    }

    /// Close the connection instead of returning it (for example after a
    /// protocol error left it in an unknown state).
    pub fn discard(mut self) {
        self.discard = true;
    }

    /// Checks the connection in, as dropping it does, at `now`: a caller that has just
    /// read the clock spares the pool another read.
    pub fn check_in_at(mut self, now: Instant) {
        self.checked_in_at = Some(now);
    }

    /// How long ago the connection was opened.
    pub fn age(&self) -> Duration {
        self.conn.created.elapsed()
    }
}

impl<M: ManageConnection> Deref for PooledConnection<M> {
    type Target = M::Connection;

    fn deref(&self) -> &M::Connection {
        &self.conn.raw
    }
}

impl<M: ManageConnection> DerefMut for PooledConnection<M> {
    fn deref_mut(&mut self) -> &mut M::Connection {
        &mut self.conn.raw
    }
}

impl<M: ManageConnection> fmt::Debug for PooledConnection<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PooledConnection")
            .field("age", &self.age())
            .field("discard", &self.discard)
            .finish_non_exhaustive()
    }
}

impl<M: ManageConnection> Drop for PooledConnection<M> {
    fn drop(&mut self) {
        // SAFETY: `conn` is initialised from construction until here, and this is
        // the only place it is taken; it is not touched afterwards.
        let conn = unsafe { ManuallyDrop::take(&mut self.conn) };
        self.inner.checkin(conn, self.discard, self.checked_in_at);
    }
}
