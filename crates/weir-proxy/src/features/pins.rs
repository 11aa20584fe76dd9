//! The session features as pin bits, and the query that asks the server which of them
//! a session really holds.

/// Session features, as bits of a pin set.
pub mod pin {
    /// `LISTEN`.
    pub const LISTEN: u8 = 1;
    /// A session-level advisory lock.
    pub const ADVISORY_LOCK: u8 = 2;
    /// A `WITH HOLD` cursor.
    pub const HOLD_CURSOR: u8 = 4;
    /// A temporary table (or view, sequence).
    pub const TEMP_TABLE: u8 = 8;
    /// `SET SESSION AUTHORIZATION` or `SET ROLE`.
    pub const AUTHORIZATION: u8 = 16;
    /// A prepared statement made with SQL `PREPARE`.
    pub const SQL_PREPARE: u8 = 32;
    /// Every feature.
    pub const ALL: u8 = 63;

    /// What the feature is called in messages.
    pub fn describe(bits: u8) -> &'static str {
        match bits.trailing_zeros() {
            0 => "LISTEN",
            1 => "a session-level advisory lock",
            2 => "a WITH HOLD cursor",
            3 => "a temporary table",
            4 => "SET SESSION AUTHORIZATION / SET ROLE",
            _ => "SQL PREPARE",
        }
    }

    /// Every feature in `bits`, named and comma-separated (`""` for none).
    pub fn describe_all(bits: u8) -> String {
        let mut out = String::new();
        for bit in (0..6).map(|i| 1u8 << i).filter(|b| bits & b != 0) {
            if !out.is_empty() {
                out.push_str(", ");
            }
            out.push_str(describe(bit));
        }
        out
    }
}

/// Asks the server which session features are in use, one boolean column per bit of
/// [`pin`] in bit order. Run outside any transaction, so what it finds outlives one:
/// only holdable cursors survive a transaction, only session-level advisory locks, and
/// the session's temp schema holds only what was not dropped at commit. The login role
/// comes from `pg_stat_activity`, which `SET SESSION AUTHORIZATION` does not change.
/// Schema-qualified so a client's `search_path` cannot redirect it (pitfall 10).
pub const PIN_CHECK_SQL: &str = "SELECT \
    EXISTS (SELECT FROM pg_catalog.pg_listening_channels()), \
    EXISTS (SELECT FROM pg_catalog.pg_locks WHERE locktype = 'advisory' AND pid = pg_catalog.pg_backend_pid()), \
    EXISTS (SELECT FROM pg_catalog.pg_cursors), \
    EXISTS (SELECT FROM pg_catalog.pg_class WHERE relnamespace = pg_catalog.pg_my_temp_schema()), \
    pg_catalog.current_setting('role') <> 'none' OR SESSION_USER <> \
        (SELECT usename FROM pg_catalog.pg_stat_activity WHERE pid = pg_catalog.pg_backend_pid()), \
    EXISTS (SELECT FROM pg_catalog.pg_prepared_statements WHERE from_sql)";

/// The pin bits a [`PIN_CHECK_SQL`] answer's column values (`t`/`f`) stand for.
pub fn pins_from_check<'a>(values: impl Iterator<Item = Option<&'a [u8]>>) -> u8 {
    values
        .take(6)
        .enumerate()
        .filter(|(_, v)| *v == Some(b"t".as_slice()))
        .fold(0, |bits, (i, _)| bits | 1 << i)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pin_check_answers_map_to_bits_in_order() {
        let row = [
            Some(&b"t"[..]),
            Some(b"f"),
            None,
            Some(b"t"),
            Some(b"f"),
            Some(b"t"),
        ];
        assert_eq!(
            pins_from_check(row.into_iter()),
            pin::LISTEN | pin::TEMP_TABLE | pin::SQL_PREPARE
        );
        assert_eq!(
            pin::describe_all(pin::LISTEN | pin::TEMP_TABLE),
            "LISTEN, a temporary table"
        );
        assert_eq!(pin::describe_all(0), "");
    }
}
