//! Transaction-mode guards: what a client may not do yet when its server connection
//! changes between transactions, refused with a clear error instead of silently wrong
//! results (named prepared statements and session `SET` are mapped in a later version).

use bytes::BytesMut;
use weir_wire::build::put_query;
use weir_wire::frontend::{bind_names, first_keyword, parse_name_and_query, query_text, target};

use crate::error::ClientError;

const PREPARED_HINT: &str = "Use pool_mode = \"session\" for this database, or unnamed statements (e.g. tokio-postgres query_typed, pgbench -M extended).";

/// The verdict on one client frame in transaction mode.
pub enum FrameCheck {
    /// Forward it.
    Pass,
    /// End the session with this error.
    Refuse(ClientError),
    /// Forward this frame instead (a query that raises the explanation as an ordinary
    /// error, so the client's transaction state and Sync accounting stay exact).
    Replace(BytesMut),
}

/// Checks one complete client frame (`tag`, `body`). `unnamed_parsed` tracks whether the
/// unnamed statement was parsed on the current server connection.
pub fn classify_client_frame(tag: u8, body: &[u8], unnamed_parsed: &mut bool) -> FrameCheck {
    match tag {
        b'Q' => {
            if query_text(body).is_some_and(changes_session_setting) {
                let mut with = BytesMut::new();
                put_query(&mut with, SET_REFUSAL);
                return FrameCheck::Replace(with);
            }
            FrameCheck::Pass
        }
        b'P' => {
            let Some((name, query)) = parse_name_and_query(body) else {
                return FrameCheck::Pass; // malformed: PostgreSQL reports it
            };
            if !name.is_empty() {
                return refuse_named(name);
            }
            if changes_session_setting(query) {
                return FrameCheck::Refuse(ClientError::Unsupported {
                    message: "SET/RESET of a session setting is not supported in transaction pooling mode yet: it would leak to other clients sharing the server connection".into(),
                    hint: "Use SET LOCAL inside a transaction, startup parameters, or pool_mode = \"session\".",
                });
            }
            *unnamed_parsed = true;
            FrameCheck::Pass
        }
        b'B' => match bind_names(body) {
            Some((_, stmt)) if !stmt.is_empty() => refuse_named(stmt),
            Some(_) if !*unnamed_parsed => refuse_unnamed(),
            _ => FrameCheck::Pass,
        },
        b'D' | b'C' => match target(body) {
            Some((b'S', name)) if !name.is_empty() => refuse_named(name),
            Some((b'S', _)) if tag == b'D' && !*unnamed_parsed => refuse_unnamed(),
            _ => FrameCheck::Pass,
        },
        _ => FrameCheck::Pass,
    }
}

fn refuse_named(name: &[u8]) -> FrameCheck {
    FrameCheck::Refuse(ClientError::Unsupported {
        message: format!(
            "named prepared statement \"{}\" is not supported in transaction pooling mode yet: the next transaction may run on another server connection",
            String::from_utf8_lossy(name)
        ),
        hint: PREPARED_HINT,
    })
}

fn refuse_unnamed() -> FrameCheck {
    FrameCheck::Refuse(ClientError::Unsupported {
        message: "the unnamed statement was parsed in an earlier transaction, which may have run on another server connection".into(),
        hint: "Send Parse in the same Sync-terminated batch as its Bind/Describe in transaction pooling mode.",
    })
}

/// A simple query that raises the explanation as an ordinary ERROR (0A000).
const SET_REFUSAL: &str = "DO $pgweir$ BEGIN RAISE EXCEPTION USING ERRCODE = '0A000', \
MESSAGE = 'pgweir: SET/RESET of a session setting is not supported in transaction pooling mode yet: it would leak to other clients sharing the server connection', \
HINT = 'Use SET LOCAL inside a transaction, startup parameters, or pool_mode = \"session\".'; END $pgweir$";

/// True for `SET x`/`RESET x` that changes the session (not `SET LOCAL`, `SET TRANSACTION`,
/// `SET CONSTRAINTS`, which end with the transaction). A cheap token check, no parser.
fn changes_session_setting(sql: &[u8]) -> bool {
    let mut word = [0u8; 16];
    let (n, rest) = first_keyword(sql, &mut word);
    match &word[..n] {
        b"RESET" => true,
        b"SET" => {
            let mut next = [0u8; 16];
            let (m, _) = first_keyword(rest, &mut next);
            !matches!(&next[..m], b"LOCAL" | b"TRANSACTION" | b"CONSTRAINTS")
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_settings_are_detected() {
        for sql in [
            "SET search_path = x",
            "  set SESSION timezone TO 'UTC'",
            "/* c */ RESET ALL",
            "reset statement_timeout",
        ] {
            assert!(changes_session_setting(sql.as_bytes()), "{sql}");
        }
        for sql in [
            "SET LOCAL search_path = x",
            "set transaction isolation level serializable",
            "SET CONSTRAINTS ALL DEFERRED",
            "SELECT 'SET x'",
            "settle",
            "",
        ] {
            assert!(!changes_session_setting(sql.as_bytes()), "{sql}");
        }
    }

    #[test]
    fn named_statements_are_refused_and_unnamed_tracked() {
        let mut parsed = false;
        assert!(matches!(
            classify_client_frame(b'B', b"\0\0", &mut parsed),
            FrameCheck::Refuse(_)
        ));
        assert!(matches!(
            classify_client_frame(b'P', b"\0select 1\0\0\0", &mut parsed),
            FrameCheck::Pass
        ));
        assert!(parsed);
        assert!(matches!(
            classify_client_frame(b'B', b"\0\0", &mut parsed),
            FrameCheck::Pass
        ));
        assert!(matches!(
            classify_client_frame(b'P', b"s1\0select 1\0\0\0", &mut parsed),
            FrameCheck::Refuse(_)
        ));
        assert!(matches!(
            classify_client_frame(b'C', b"Ss1\0", &mut parsed),
            FrameCheck::Refuse(_)
        ));
        assert!(matches!(
            classify_client_frame(b'C', b"Pp1\0", &mut parsed),
            FrameCheck::Pass
        ));
        assert!(matches!(
            classify_client_frame(b'Q', b"set x = 1\0", &mut parsed),
            FrameCheck::Replace(_)
        ));
    }
}
