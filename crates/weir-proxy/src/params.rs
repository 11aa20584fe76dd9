//! Session settings in transaction mode: what each client has set (from its startup
//! packet, `SET`, `RESET`) and what each server connection currently has, and the query
//! that brings a server connection in line with a client before its transaction.
//!
//! Settings PostgreSQL reports (`ParameterStatus`) are followed from the server's own
//! reports. Other tracked settings (`track_extra_parameters`, startup parameters such as
//! JDBC's `extra_float_digits`) are re-read from the server after a transaction that may
//! have changed them, since PostgreSQL does not announce those.

use std::collections::HashSet;
use std::hash::Hash;
use std::sync::{Arc, Mutex, OnceLock};

/// Reported settings a client may change and the proxy replays, in a fixed order.
pub const REPLAYED: [&str; 8] = [
    "application_name",
    "client_encoding",
    "DateStyle",
    "IntervalStyle",
    "TimeZone",
    "standard_conforming_strings",
    "default_transaction_read_only",
    "search_path",
];

/// Where `standard_conforming_strings` is in [`REPLAYED`].
const STANDARD_CONFORMING_STRINGS: usize = 5;
const _: () = assert!(matches!(
    REPLAYED[STANDARD_CONFORMING_STRINGS].as_bytes(),
    b"standard_conforming_strings"
));

/// Startup parameters that are not settings.
const NOT_SETTINGS: [&str; 4] = ["user", "database", "options", "replication"];

/// The index of `name` in [`REPLAYED`] (setting names are case-insensitive).
fn replayed_index(name: &str) -> Option<usize> {
    REPLAYED.iter().position(|r| r.eq_ignore_ascii_case(name))
}

/// Values of the [`REPLAYED`] settings; `None` = not known.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Reported([Option<Arc<str>>; REPLAYED.len()]);

/// Longest value [`intern`] shares; and most values it keeps.
const INTERN_MAX_LEN: usize = 64;
const INTERN_MAX_VALUES: usize = 4096;

/// One shared copy of a setting's name or value. Every client of a pool starts from
/// the same server settings and most send the same startup settings, so sharing them
/// saves a dozen small allocations per idle client. Bounded: a long value, or any value
/// once the table is full, gets its own copy.
pub fn intern(s: &str) -> Arc<str> {
    static TABLE: SharedTable<str> = OnceLock::new();
    if s.len() > INTERN_MAX_LEN {
        return s.into();
    }
    locked(&TABLE, |table| match table.get(s) {
        Some(v) => Arc::clone(v),
        None => keep(table, Arc::from(s)),
    })
}

/// A bounded table of shared values (see [`intern`]).
type SharedTable<T> = OnceLock<Mutex<HashSet<Arc<T>>>>;

/// Runs `f` on the table, created on first use.
fn locked<T: ?Sized, R>(table: &SharedTable<T>, f: impl FnOnce(&mut HashSet<Arc<T>>) -> R) -> R {
    let mut table = table
        .get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    f(&mut table)
}

/// Keeps a new value in the table while there is room.
fn keep<T: Hash + Eq + ?Sized>(table: &mut HashSet<Arc<T>>, v: Arc<T>) -> Arc<T> {
    if table.len() < INTERN_MAX_VALUES {
        table.insert(Arc::clone(&v));
    }
    v
}

/// The shared copy of a whole set of settings: most clients of a pool start with the
/// same reported values, startup settings and tracked names, so each idle client holds
/// a pointer to them, not its own copy, until it changes one (copy on write).
fn share_set<T: Hash + Eq>(table: &SharedTable<T>, value: T) -> Arc<T> {
    locked(table, |table| match table.get(&value) {
        Some(v) => Arc::clone(v),
        None => keep(table, Arc::new(value)),
    })
}

impl Reported {
    /// Records a reported value, shared through [`intern`] (for values many clients
    /// and servers hold: the server's, the startup packet's). A server's value shared
    /// with its clients' compares by pointer in [`ClientParams::replay_query`].
    pub fn set_shared(&mut self, name: &str, value: &str) -> bool {
        self.set_with(name, value, intern)
    }

    /// Records a reported value; false if `name` is not replayed.
    pub fn set(&mut self, name: &str, value: &str) -> bool {
        self.set_with(name, value, |v| v.into())
    }

    fn set_with(&mut self, name: &str, value: &str, copy: fn(&str) -> Arc<str>) -> bool {
        match replayed_index(name) {
            Some(i) => {
                if self.0[i].as_deref() != Some(value) {
                    self.0[i] = Some(copy(value));
                }
                true
            }
            None => false,
        }
    }

    /// The value of `name`, if known.
    pub fn get(&self, name: &str) -> Option<&str> {
        replayed_index(name).and_then(|i| self.0[i].as_deref())
    }
}

/// Tracked settings PostgreSQL does not report: `None` = the server's default.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Extras(Vec<(Arc<str>, Option<Arc<str>>)>);

impl Extras {
    /// Sets `name` (`None` = back to the default).
    pub fn set(&mut self, name: &str, value: Option<&str>) {
        match self
            .0
            .iter_mut()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
        {
            Some((_, v)) => *v = value.map(Into::into),
            None => self.0.push((name.into(), value.map(Into::into))),
        }
    }

    /// The value of `name`; `None` = the default.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .and_then(|(_, v)| v.as_deref())
    }

    /// Every setting off its default.
    fn changed(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0
            .iter()
            .filter_map(|(n, v)| v.as_deref().map(|v| (&**n, v)))
    }

    /// Forgets every value (back to defaults).
    pub fn clear(&mut self) {
        self.0.clear();
    }
}

/// The settings a client expects on every server connection it uses. The sets most
/// clients have in common are shared (`Arc`, copied on a client's first change).
#[derive(Debug, Clone, Default)]
pub struct ClientParams {
    /// Reported settings as the client last saw them.
    pub reported: Arc<Reported>,
    /// Unreported tracked settings.
    pub extras: Extras,
    /// Names of the unreported settings tracked for this client.
    pub extra_names: Arc<Vec<Arc<str>>>,
    /// A statement may have changed an unreported setting: re-read them before release.
    pub extras_dirty: bool,
    /// Settings from the startup packet: what `RESET` goes back to on a direct connection.
    pub startup: Arc<Vec<(Arc<str>, Arc<str>)>>,
    /// Startup settings the client reset: set back to their startup values before release.
    pub restore: Vec<Arc<str>>,
}

/// The settings a server connection has now.
#[derive(Debug, Clone, Default)]
pub struct ServerParamsState {
    /// Reported settings, from the server's own reports.
    pub reported: Reported,
    /// Unreported tracked settings as the proxy left them.
    pub extras: Extras,
}

impl ClientParams {
    /// A client's settings: the pool's server values, overridden by the startup packet's.
    pub fn from_startup<'a>(
        server: &[(String, String)],
        startup: impl IntoIterator<Item = (&'a str, &'a str)>,
        track_extra: &[String],
    ) -> ClientParams {
        static REPORTED: SharedTable<Reported> = OnceLock::new();
        static NAMES: SharedTable<Vec<Arc<str>>> = OnceLock::new();
        static STARTUP: SharedTable<Vec<(Arc<str>, Arc<str>)>> = OnceLock::new();
        let mut reported = Reported::default();
        let mut extra_names: Vec<Arc<str>> = track_extra.iter().map(|s| intern(s)).collect();
        let mut extras = Extras::default();
        let mut settings = Vec::new();
        for (name, value) in server {
            reported.set_shared(name, value);
        }
        for (name, value) in startup {
            if !reported.set_shared(name, value) {
                if !extra_names.iter().any(|n| n.eq_ignore_ascii_case(name)) {
                    extra_names.push(intern(name));
                }
                extras.set(name, Some(value));
            }
            settings.push((intern(name), intern(value)));
        }
        ClientParams {
            reported: share_set(&REPORTED, reported),
            extras,
            extra_names: share_set(&NAMES, extra_names),
            extras_dirty: false,
            startup: share_set(&STARTUP, settings),
            restore: Vec::new(),
        }
    }

    /// `standard_conforming_strings` is off for this client: `'...'` strings take
    /// backslash escapes, and the proxy's statement scan must lex them so.
    pub fn backslash_quotes(&self) -> bool {
        self.reported.0[STANDARD_CONFORMING_STRINGS].as_deref() == Some("off")
    }

    /// Records a value the server reported to this client; false if `name` is not a
    /// replayed setting. Copies the shared set only when the value changes.
    pub fn set_reported(&mut self, name: &str, value: &str) -> bool {
        match replayed_index(name) {
            Some(i) => {
                if self.reported.0[i].as_deref() != Some(value) {
                    Arc::make_mut(&mut self.reported).0[i] = Some(value.into());
                }
                true
            }
            None => false,
        }
    }

    /// The client ran `RESET` of `names` (or of everything): the ones it set at startup
    /// must go back to those values, as on a direct connection.
    pub fn note_reset(&mut self, names: &[Vec<u8>], all: bool) {
        for (name, _) in self.startup.iter() {
            let hit = all
                || names
                    .iter()
                    .any(|n| n.eq_ignore_ascii_case(name.as_bytes()));
            if hit && !self.restore.iter().any(|r| r == name) {
                self.restore.push(name.clone());
            }
        }
    }

    /// The query that sets the settings in `restore` back to their startup values.
    pub fn restore_query(&mut self) -> Option<String> {
        if self.restore.is_empty() {
            return None;
        }
        let mut sql = String::from("SELECT ");
        let mut first = true;
        for name in std::mem::take(&mut self.restore) {
            if let Some((_, value)) = self.startup.iter().find(|(n, _)| *n == name) {
                push_set_config(&mut sql, !first, &name, value);
                first = false;
            }
        }
        (!first).then_some(sql)
    }

    /// Appends every replayed and tracked setting's value: two clients share a query's
    /// answer (dedup) only when these bytes agree, since settings such as `search_path`
    /// or `TimeZone` change what the same text returns.
    pub fn fingerprint(&self, out: &mut Vec<u8>) {
        for value in &self.reported.0 {
            if let Some(v) = value {
                out.extend_from_slice(v.as_bytes());
            }
            out.push(0x1f);
        }
        for (name, value) in &self.extras.0 {
            out.extend_from_slice(name.as_bytes());
            out.push(b'=');
            if let Some(v) = value {
                out.extend_from_slice(v.as_bytes());
            }
            out.push(0x1f);
        }
    }

    /// Starts tracking a setting the client changed, unless it already is.
    pub fn track(&mut self, name: &str) {
        if replayed_index(name).is_none() && !self.tracks(name) {
            Arc::make_mut(&mut self.extra_names).push(name.into());
        }
    }

    /// `name` is one of the unreported settings tracked for this client.
    fn tracks(&self, name: &str) -> bool {
        self.extra_names
            .iter()
            .any(|n| n.eq_ignore_ascii_case(name))
    }

    /// Whether any unreported setting is tracked (so a `SET` must trigger a re-read).
    pub fn tracks_extras(&self) -> bool {
        !self.extra_names.is_empty()
    }

    /// Whether `server` already matches this client, told by pointers alone: every
    /// reported setting the client knows is the very `Arc` the server holds, and
    /// neither side has an unreported setting off its default. The common case at each
    /// checkout (both sides hold interned values), answered without comparing a string.
    fn matches_interned(&self, server: &ServerParamsState) -> bool {
        self.extras.0.iter().all(|(_, v)| v.is_none())
            && server.extras.0.iter().all(|(_, v)| v.is_none())
            && self
                .reported
                .0
                .iter()
                .zip(&server.reported.0)
                .all(|(want, have)| match (want, have) {
                    (None, _) => true,
                    (Some(want), Some(have)) => Arc::ptr_eq(want, have),
                    (Some(_), None) => false,
                })
    }

    /// The query that makes `server` match this client, if anything differs. Reported
    /// settings are set to the client's values; unreported ones set or `RESET`.
    pub fn replay_query(&self, server: &ServerParamsState) -> Option<String> {
        if self.matches_interned(server) {
            return None;
        }
        let mut sets: Vec<(&str, &str)> = Vec::new();
        for (i, name) in REPLAYED.iter().enumerate() {
            if let (Some(want), have) = (&self.reported.0[i], &server.reported.0[i]) {
                // Both sides hold interned values, so equal ones are mostly one `Arc`.
                if !have
                    .as_ref()
                    .is_some_and(|have| Arc::ptr_eq(have, want) || have == want)
                {
                    sets.push((name, want));
                }
            }
        }
        let mut resets: Vec<&str> = Vec::new();
        for name in self.extra_names.iter() {
            let want = self.extras.get(name);
            if want != server.extras.get(name) {
                match want {
                    Some(v) => sets.push((name, v)),
                    None => resets.push(name),
                }
            }
        }
        // Left on the server by an earlier client, and not tracked for this one.
        for (name, _) in server.extras.changed() {
            if !self.tracks(name) {
                resets.push(name);
            }
        }
        if sets.is_empty() && resets.is_empty() {
            return None;
        }
        let mut sql = String::new();
        if !sets.is_empty() {
            sql.push_str("SELECT ");
            for (i, (name, value)) in sets.iter().enumerate() {
                push_set_config(&mut sql, i > 0, name, value);
            }
            sql.push(';');
        }
        for name in resets {
            sql.push_str("RESET ");
            push_identifier(&mut sql, name);
            sql.push(';');
        }
        Some(sql)
    }

    /// The query that reads back every tracked unreported setting, in `extra_names` order.
    pub fn refresh_query(&self) -> String {
        let mut sql = String::from("SELECT ");
        for (i, name) in self.extra_names.iter().enumerate() {
            if i > 0 {
                sql.push_str(", ");
            }
            sql.push_str("pg_catalog.current_setting(");
            push_literal(&mut sql, name);
            sql.push_str(", true)");
        }
        sql
    }
}

/// Appends `set_config(name, value, false)` (after a comma unless it is the first).
fn push_set_config(sql: &mut String, comma: bool, name: &str, value: &str) {
    if comma {
        sql.push_str(", ");
    }
    sql.push_str("pg_catalog.set_config(");
    push_literal(sql, name);
    sql.push_str(", ");
    push_literal(sql, value);
    sql.push_str(", false)");
}

/// Appends `s` as a string literal that means the same whatever the session's
/// `standard_conforming_strings`: plain `'...'` when `s` has no backslash, else
/// `E'...'` with the backslashes escaped.
fn push_literal(sql: &mut String, s: &str) {
    if s.contains('\\') {
        sql.push_str("E'");
        for c in s.chars() {
            match c {
                '\'' => sql.push_str("''"),
                '\\' => sql.push_str("\\\\"),
                c => sql.push(c),
            }
        }
    } else {
        sql.push('\'');
        for c in s.chars() {
            if c == '\'' {
                sql.push('\'');
            }
            sql.push(c);
        }
    }
    sql.push('\'');
}

/// Appends `s` as a quoted identifier.
fn push_identifier(sql: &mut String, s: &str) {
    sql.push('"');
    for c in s.chars() {
        if c == '"' {
            sql.push('"');
        }
        sql.push(c);
    }
    sql.push('"');
}

/// The settings a startup packet asks for: its plain parameters and the `-c name=value`
/// / `--name=value` switches of `options` (backslash escapes a space, as libpq does).
pub fn startup_settings(params: &[(String, String)]) -> Vec<(String, String)> {
    into_startup_settings(params.to_vec())
}

/// [`startup_settings`], taking the parameters: a login moves its settings' names and
/// values instead of copying them (two allocations fewer per setting a driver sends).
pub fn into_startup_settings(params: Vec<(String, String)>) -> Vec<(String, String)> {
    let mut out = Vec::with_capacity(params.len());
    for (name, value) in params {
        if name == "options" {
            parse_options(&value, &mut out);
        } else if !NOT_SETTINGS.contains(&name.as_str()) && !name.starts_with("_pq_.") {
            out.push((name, value));
        }
    }
    out
}

fn parse_options(options: &str, out: &mut Vec<(String, String)>) {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut chars = options.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(next) = chars.next() {
                    word.push(next);
                }
            }
            c if c.is_ascii_whitespace() => {
                if !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
            }
            c => word.push(c),
        }
    }
    if !word.is_empty() {
        words.push(word);
    }
    let mut iter = words.into_iter();
    while let Some(w) = iter.next() {
        let setting = if w == "-c" {
            iter.next()
        } else if let Some(rest) = w.strip_prefix("-c") {
            Some(rest.to_owned())
        } else {
            w.strip_prefix("--").map(str::to_owned)
        };
        if let Some((name, value)) = setting.as_deref().and_then(|s| s.split_once('=')) {
            out.push((name.replace('-', "_"), value.to_owned()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(pairs: &[(&str, &str)]) -> ServerParamsState {
        let mut s = ServerParamsState::default();
        for (n, v) in pairs {
            s.reported.set(n, v);
        }
        s
    }

    #[test]
    fn startup_options_are_settings() {
        let params = vec![
            ("user".to_owned(), "u".to_owned()),
            ("application_name".to_owned(), "app".to_owned()),
            (
                "options".to_owned(),
                r"-c search_path=a,b --statement-timeout=5s -cwork_mem=64MB -c x=a\ b".to_owned(),
            ),
        ];
        assert_eq!(
            startup_settings(&params),
            vec![
                ("application_name".to_owned(), "app".to_owned()),
                ("search_path".to_owned(), "a,b".to_owned()),
                ("statement_timeout".to_owned(), "5s".to_owned()),
                ("work_mem".to_owned(), "64MB".to_owned()),
                ("x".to_owned(), "a b".to_owned()),
            ]
        );
    }

    #[test]
    fn replay_sets_what_differs_and_resets_what_was_left_behind() {
        let pool = [
            ("TimeZone".to_owned(), "UTC".to_owned()),
            ("application_name".to_owned(), String::new()),
        ];
        let client = ClientParams::from_startup(
            &pool,
            [("application_name", "it's"), ("extra_float_digits", "3")],
            &["statement_timeout".to_owned()],
        );
        let mut srv = server(&[("TimeZone", "UTC"), ("application_name", "")]);
        srv.extras.set("lock_timeout", Some("1s"));
        let sql = client.replay_query(&srv).expect("differs");
        assert_eq!(
            sql,
            "SELECT pg_catalog.set_config('application_name', 'it''s', false), \
             pg_catalog.set_config('extra_float_digits', '3', false);RESET \"lock_timeout\";"
        );
        let mut synced = server(&[("TimeZone", "UTC"), ("application_name", "it's")]);
        synced.extras.set("extra_float_digits", Some("3"));
        assert_eq!(client.replay_query(&synced), None);
        assert_eq!(
            client.refresh_query(),
            "SELECT pg_catalog.current_setting('statement_timeout', true), \
             pg_catalog.current_setting('extra_float_digits', true)"
        );
    }

    #[test]
    fn a_tracked_setting_off_its_default_on_either_side_is_replayed() {
        let pool = [("TimeZone".to_owned(), "UTC".to_owned())];
        let tracked = ["statement_timeout".to_owned()];
        let plain = ClientParams::from_startup(&pool, [], &tracked);
        let srv = ServerParamsState {
            reported: (*plain.reported).clone(),
            extras: Extras::default(),
        };
        assert_eq!(plain.replay_query(&srv), None);
        let mut set = plain.clone();
        set.extras.set("statement_timeout", Some("5s"));
        let sql = set.replay_query(&srv).expect("the client set it");
        assert!(sql.contains("'statement_timeout', '5s'"), "{sql}");
        let mut left = srv.clone();
        left.extras.set("statement_timeout", Some("5s"));
        let sql = plain.replay_query(&left).expect("the server has it");
        assert_eq!(sql, "RESET \"statement_timeout\";");
    }

    #[test]
    fn literals_are_quoted_safely() {
        let mut s = String::new();
        push_literal(&mut s, r"a'b\c");
        assert_eq!(s, r"E'a''b\\c'");
        let mut s = String::new();
        push_identifier(&mut s, "we\"ird");
        assert_eq!(s, "\"we\"\"ird\"");
    }
}
