//! The admin commands that act on databases, with PgBouncer's semantics: `PAUSE`,
//! `RESUME`, `DISABLE`, `ENABLE`, `RECONNECT`, `KILL`, `WAIT_CLOSE`. Errors are the
//! messages the console shows (PgBouncer's wording where it has one).

use std::collections::HashSet;
use std::future::Future;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, MutexGuard, PoisonError};

use crate::pools::{PoolEntry, Pools};
use crate::session::Shared;

/// `PAUSE`/`DISABLE` state.
#[derive(Debug, Default)]
pub(crate) struct Flags {
    /// `PAUSE` (or `SUSPEND`) without a database.
    all_paused: bool,
    /// Databases paused by name (`PAUSE db`, `KILL db`).
    paused: HashSet<String>,
    /// Databases refusing new logins (`DISABLE db`).
    disabled: HashSet<String>,
}

/// Joins the futures of several pools.
async fn join_all<F: Future<Output = ()>>(futures: Vec<F>) {
    for f in futures {
        f.await;
    }
}

impl Pools {
    fn flags(&self) -> MutexGuard<'_, Flags> {
        self.flags.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether `database` (or everything) is paused.
    pub fn is_paused(&self, database: &str) -> bool {
        let f = self.flags();
        f.all_paused || f.paused.contains(database)
    }

    /// Whether `PAUSE`/`SUSPEND` without a database is in force.
    pub fn all_paused(&self) -> bool {
        self.flags().all_paused
    }

    /// Whether `DISABLE database` is in force.
    pub fn is_disabled(&self, database: &str) -> bool {
        self.flags().disabled.contains(database)
    }

    /// The pools of `database` (all pools for `None`).
    ///
    /// # Errors
    /// `database` is not configured.
    fn entries(&self, database: Option<&str>) -> Result<Vec<Arc<PoolEntry>>, String> {
        if let Some(db) = database {
            self.check_database(db)?;
        }
        Ok(self
            .all()
            .into_iter()
            .filter(|e| database.is_none_or(|db| e.database == db))
            .collect())
    }

    fn check_database(&self, database: &str) -> Result<(), String> {
        if self.config().databases.contains_key(database) {
            Ok(())
        } else {
            Err(format!("no such database: {database}"))
        }
    }

    /// `PAUSE [db]`: holds new checkouts from now on; the future resolves when the
    /// transactions in flight have finished and the servers are closed.
    ///
    /// # Errors
    /// Unknown database, or already paused (PgBouncer refuses a second `PAUSE`).
    pub fn pause(
        &self,
        database: Option<&str>,
    ) -> Result<impl Future<Output = ()> + Send + 'static, String> {
        let entries = self.entries(database)?;
        {
            let mut f = self.flags();
            match database {
                None if f.all_paused => return Err("already suspended/paused".to_owned()),
                None => f.all_paused = true,
                Some(db) if f.all_paused || f.paused.contains(db) => {
                    return Err(format!("database {db} is already paused"))
                }
                Some(db) => {
                    f.paused.insert(db.to_owned());
                }
            }
        }
        let waits: Vec<_> = entries.iter().map(|e| e.pool.pause()).collect();
        Ok(join_all(waits))
    }

    /// `RESUME [db]`: lifts `PAUSE`/`SUSPEND`/`KILL`; held clients go on with no error.
    ///
    /// # Errors
    /// Unknown database, or nothing to resume (PgBouncer's wording).
    pub fn resume(&self, database: Option<&str>) -> Result<(), String> {
        let entries = self.entries(database)?;
        {
            let mut f = self.flags();
            match database {
                None if !f.all_paused && f.paused.is_empty() => {
                    return Err("pooler is not paused/suspended".to_owned())
                }
                None => {
                    f.all_paused = false;
                    f.paused.clear();
                }
                Some(db) => {
                    if !f.paused.remove(db) && !f.all_paused {
                        return Err(format!("database {db} is not paused"));
                    }
                }
            }
        }
        for entry in entries {
            if !self.is_paused(&entry.database) {
                entry.pool.resume();
            }
        }
        Ok(())
    }

    /// Lifts every pause so that held clients can finish during a shutdown.
    pub(crate) fn resume_all_for_shutdown(&self) {
        {
            let mut f = self.flags();
            f.all_paused = false;
            f.paused.clear();
        }
        for entry in self.all() {
            entry.pool.resume();
        }
    }

    /// `DISABLE db`: new logins to `db` are refused; connected clients stay.
    ///
    /// # Errors
    /// Unknown database.
    pub fn disable(&self, database: &str) -> Result<(), String> {
        self.check_database(database)?;
        self.flags().disabled.insert(database.to_owned());
        Ok(())
    }

    /// `ENABLE db`: lifts `DISABLE`.
    ///
    /// # Errors
    /// Unknown database.
    pub fn enable(&self, database: &str) -> Result<(), String> {
        self.check_database(database)?;
        self.flags().disabled.remove(database);
        Ok(())
    }

    /// `RECONNECT [db]`: server connections are closed as soon as they are released
    /// (idle ones now); clients move to fresh ones without an error.
    ///
    /// # Errors
    /// Unknown database.
    pub fn reconnect(&self, database: Option<&str>) -> Result<(), String> {
        for entry in self.entries(database)? {
            entry.pool.reconnect();
        }
        Ok(())
    }

    /// `WAIT_CLOSE [db]`: resolves once the server connections that `RECONNECT` or
    /// `RELOAD` marked are all closed.
    ///
    /// # Errors
    /// Unknown database.
    pub fn wait_close(
        &self,
        database: Option<&str>,
    ) -> Result<impl Future<Output = ()> + Send + 'static, String> {
        let waits: Vec<_> = self
            .entries(database)?
            .iter()
            .map(|e| e.pool.wait_close())
            .collect();
        Ok(join_all(waits))
    }
}

impl Shared {
    /// `KILL db`: disconnects every client of `db` now (57P01) and closes its servers;
    /// the database stays paused, so new clients wait until `RESUME` (PgBouncer).
    ///
    /// # Errors
    /// Unknown database.
    pub fn kill_database(&self, database: &str) -> Result<usize, String> {
        self.pools.check_database(database)?;
        self.pools.flags().paused.insert(database.to_owned());
        let mut killed = 0;
        for client in self.clients.snapshot() {
            if client.login().is_some_and(|l| &*l.database == database) {
                client.stop.request(crate::stop::Stop::Kill);
                killed += 1;
            }
        }
        for entry in self.pools.entries(Some(database))? {
            // Servers of killed clients are closed at release: mid-transaction ones
            // are discarded by the relay, clean ones by the new generation.
            entry.pool.reconnect();
            drop(entry.pool.pause());
        }
        Ok(killed)
    }

    /// `SUSPEND`: pauses everything (pgweir passes no sockets between processes, so
    /// there is nothing more to freeze); `RESUME` lifts it.
    ///
    /// # Errors
    /// Already paused or suspended.
    pub fn suspend(&self) -> Result<impl Future<Output = ()> + Send + 'static, String> {
        let wait = self.pools.pause(None)?;
        self.suspended.store(true, Relaxed);
        Ok(wait)
    }

    /// `RESUME` after `PAUSE` or `SUSPEND`.
    ///
    /// # Errors
    /// As [`Pools::resume`].
    pub fn resume(&self, database: Option<&str>) -> Result<(), String> {
        self.pools.resume(database)?;
        if database.is_none() {
            self.suspended.store(false, Relaxed);
        }
        Ok(())
    }

    /// Whether `SUSPEND` is in force.
    pub fn is_suspended(&self) -> bool {
        self.suspended.load(Relaxed)
    }
}
