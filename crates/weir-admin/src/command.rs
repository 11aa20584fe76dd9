//! Parsing console statements: PgBouncer's commands (`SHOW POOLS`, `PAUSE app`,
//! `SET key = value`, ...) plus transaction control (`BEGIN`, `COMMIT`,
//! `ROLLBACK`), which the console accepts as no-ops because drivers send it.
//! Commands are case-insensitive, may end with `;`, and several may be sent in
//! one simple query.

use weir_wire::sql::{Lexer, Token, TokenKind};

use crate::backend::AdminCommand;
use crate::show::FAKE_PARAMS;

/// Longest query echoed back in an "invalid command" error.
const MAX_ECHO: usize = 200;

/// SQLSTATE for an unknown or malformed command.
pub const SYNTAX_ERROR: &str = "42601";

/// A parsed console statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Statement {
    /// `SHOW <list>` (lowercased).
    Show(String),
    /// `SHOW HELP`.
    Help,
    /// `SET` of a parameter clients set blindly (`client_encoding`, ...): accepted, ignored.
    FakeSet,
    /// A command for the backend.
    Command(AdminCommand),
    /// `BEGIN`, `COMMIT` or `ROLLBACK`: nothing to do, but the session reports the
    /// transaction status drivers expect.
    Transaction(TxControl),
}

/// A transaction-control statement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxControl {
    /// `BEGIN [...]` or `START TRANSACTION [...]` (modes are ignored).
    Begin,
    /// `COMMIT [WORK | TRANSACTION]` or `END [...]`.
    Commit,
    /// `ROLLBACK [WORK | TRANSACTION]` or `ABORT [...]`.
    Rollback,
}

/// A statement the console refuses, with its SQLSTATE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// Five-character SQLSTATE.
    pub code: &'static str,
    /// Message for the client.
    pub message: String,
}

impl Refusal {
    /// A refusal with this SQLSTATE and message.
    pub fn new(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

/// Splits a query into statements (on `;` outside strings and comments) and
/// parses each; empty statements are dropped.
///
/// # Errors
/// The first statement that is not a console command, as an "invalid command"
/// refusal that points to `SHOW HELP`.
pub fn parse_query(sql: &[u8]) -> Result<Vec<Statement>, Refusal> {
    let mut out = Vec::new();
    let mut stmt: Vec<Token<'_>> = Vec::new();
    for t in Lexer::new(sql).chain(std::iter::once(Token {
        kind: TokenKind::Punct,
        text: b";",
    })) {
        if t.kind == TokenKind::Punct && t.text == b";" {
            if !stmt.is_empty() {
                out.push(parse_statement(&stmt).ok_or_else(|| invalid(sql))?);
                stmt.clear();
            }
        } else {
            stmt.push(t);
        }
    }
    Ok(out)
}

/// The "invalid command" refusal for `sql`, echoing at most 200 bytes of it.
pub fn invalid(sql: &[u8]) -> Refusal {
    let text = String::from_utf8_lossy(sql);
    let mut text = text.trim();
    if text.len() > MAX_ECHO {
        let mut cut = MAX_ECHO;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text = text.get(..cut).unwrap_or_default();
    }
    Refusal {
        code: SYNTAX_ERROR,
        message: format!("invalid command '{text}', use SHOW HELP;"),
    }
}

/// A word or identifier argument, unquoted (`"My DB"` keeps its case; words are lowercased).
fn name(t: &Token<'_>) -> Option<String> {
    match t.kind {
        TokenKind::Word => Some(String::from_utf8_lossy(t.text).to_ascii_lowercase()),
        TokenKind::QuotedIdent => {
            let inner = t.text.strip_prefix(b"\"")?;
            let inner = inner.strip_suffix(b"\"").unwrap_or(inner);
            Some(String::from_utf8_lossy(inner).replace("\"\"", "\""))
        }
        _ => None,
    }
}

/// A `SET` value: a word, a number or a quoted string (quotes and `''` removed).
fn value(t: &Token<'_>) -> Option<String> {
    match t.kind {
        TokenKind::Word | TokenKind::Number => Some(String::from_utf8_lossy(t.text).into_owned()),
        TokenKind::String => {
            let inner = t.text.strip_prefix(b"'")?;
            let inner = inner.strip_suffix(b"'").unwrap_or(inner);
            Some(String::from_utf8_lossy(inner).replace("''", "'"))
        }
        TokenKind::QuotedIdent => name(t),
        _ => None,
    }
}

fn parse_statement(tokens: &[Token<'_>]) -> Option<Statement> {
    let (first, rest) = tokens.split_first()?;
    if first.kind != TokenKind::Word {
        return None;
    }
    let verb = String::from_utf8_lossy(first.text).to_ascii_lowercase();
    let opt_db = || -> Option<Option<String>> {
        match rest {
            [] => Some(None),
            [db] => Some(Some(name(db)?)),
            _ => None,
        }
    };
    let db = || -> Option<String> {
        match rest {
            [db] => name(db),
            _ => None,
        }
    };
    let bare = |cmd: AdminCommand| rest.is_empty().then_some(Statement::Command(cmd));
    Some(match verb.as_str() {
        "show" => match rest {
            [what] => {
                let what = name(what)?.to_ascii_lowercase();
                if what == "help" {
                    Statement::Help
                } else {
                    Statement::Show(what)
                }
            }
            _ => return None,
        },
        "pause" => Statement::Command(AdminCommand::Pause(opt_db()?)),
        "resume" => Statement::Command(AdminCommand::Resume(opt_db()?)),
        "reconnect" => Statement::Command(AdminCommand::Reconnect(opt_db()?)),
        "wait_close" => Statement::Command(AdminCommand::WaitClose(opt_db()?)),
        "disable" => Statement::Command(AdminCommand::Disable(db()?)),
        "enable" => Statement::Command(AdminCommand::Enable(db()?)),
        "kill" => Statement::Command(AdminCommand::Kill(db()?)),
        "suspend" => bare(AdminCommand::Suspend)?,
        "reload" => bare(AdminCommand::Reload)?,
        "shutdown" => bare(AdminCommand::Shutdown)?,
        "begin" => Statement::Transaction(TxControl::Begin),
        "start" => match rest.first() {
            Some(t) if t.kind == TokenKind::Word && t.text.eq_ignore_ascii_case(b"transaction") => {
                Statement::Transaction(TxControl::Begin)
            }
            _ => return None,
        },
        "commit" | "end" => Statement::Transaction(end_block(rest, TxControl::Commit)?),
        "rollback" | "abort" => Statement::Transaction(end_block(rest, TxControl::Rollback)?),
        "set" => {
            let [key, eq, val] = rest else {
                return None;
            };
            let is_eq = (eq.kind == TokenKind::Operator && eq.text == b"=")
                || (eq.kind == TokenKind::Word && eq.text.eq_ignore_ascii_case(b"to"));
            if !is_eq {
                return None;
            }
            let key = name(key)?.to_ascii_lowercase();
            let value = value(val)?;
            if FAKE_PARAMS.iter().any(|(n, _)| *n == key) {
                Statement::FakeSet
            } else {
                Statement::Command(AdminCommand::Set { key, value })
            }
        }
        _ => return None,
    })
}

/// `COMMIT`/`ROLLBACK` take only an optional `WORK` or `TRANSACTION`; `AND CHAIN`
/// is refused rather than silently ignored.
fn end_block(rest: &[Token<'_>], tx: TxControl) -> Option<TxControl> {
    match rest {
        [] => Some(tx),
        [t] if t.kind == TokenKind::Word
            && (t.text.eq_ignore_ascii_case(b"work")
                || t.text.eq_ignore_ascii_case(b"transaction")) =>
        {
            Some(tx)
        }
        _ => None,
    }
}

/// The CommandComplete tag PgBouncer sends for a command.
pub fn tag(cmd: &AdminCommand) -> &'static str {
    match cmd {
        AdminCommand::Pause(_) => "PAUSE",
        AdminCommand::Resume(_) => "RESUME",
        AdminCommand::Disable(_) => "DISABLE",
        AdminCommand::Enable(_) => "ENABLE",
        AdminCommand::Reconnect(_) => "RECONNECT",
        AdminCommand::Kill(_) => "KILL",
        AdminCommand::Suspend => "SUSPEND",
        AdminCommand::Reload => "RELOAD",
        AdminCommand::Shutdown => "SHUTDOWN",
        AdminCommand::WaitClose(_) => "WAIT_CLOSE",
        AdminCommand::Set { .. } => "SET",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(sql: &str) -> Result<Vec<Statement>, Refusal> {
        parse_query(sql.as_bytes())
    }

    #[test]
    fn parses_pgbouncer_commands() {
        use AdminCommand::*;
        assert_eq!(
            parse("show pools;").unwrap(),
            vec![Statement::Show("pools".into())]
        );
        assert_eq!(parse("SHOW HELP").unwrap(), vec![Statement::Help]);
        assert_eq!(
            parse("PAUSE; pause App; RESUME \"My DB\";;").unwrap(),
            vec![
                Statement::Command(Pause(None)),
                Statement::Command(Pause(Some("app".into()))),
                Statement::Command(Resume(Some("My DB".into()))),
            ]
        );
        assert_eq!(
            parse("kill app; disable app; enable app; reconnect; wait_close x; suspend; reload; shutdown")
                .unwrap()
                .len(),
            8
        );
        assert_eq!(
            parse("SET default_pool_size = 40").unwrap(),
            vec![Statement::Command(Set {
                key: "default_pool_size".into(),
                value: "40".into()
            })]
        );
        assert_eq!(
            parse("set query_timeout to '5s'").unwrap(),
            vec![Statement::Command(Set {
                key: "query_timeout".into(),
                value: "5s".into()
            })]
        );
        assert_eq!(
            parse("SET client_encoding = 'UTF8'").unwrap(),
            vec![Statement::FakeSet]
        );
        assert_eq!(parse("  ; -- nothing\n").unwrap(), vec![]);
        use TxControl::*;
        assert_eq!(
            parse("BEGIN; begin isolation level read committed; START TRANSACTION; commit; END work; ROLLBACK transaction; abort").unwrap(),
            [Begin, Begin, Begin, Commit, Commit, Rollback, Rollback]
                .map(Statement::Transaction)
                .to_vec()
        );
    }

    #[test]
    fn refuses_anything_else_pointing_to_help() {
        for bad in [
            "select 1",
            "KILL",
            "kill a b",
            "show",
            "show pools extra",
            "SUSPEND now",
            "set x",
            "42",
            "start",
            "commit and chain",
            "rollback to savepoint a",
        ] {
            let r = parse(bad).unwrap_err();
            assert_eq!(r.code, SYNTAX_ERROR);
            assert!(r.message.contains("SHOW HELP"), "{bad}: {}", r.message);
        }
        let long = "x".repeat(5000);
        assert!(parse(&long).unwrap_err().message.len() < MAX_ECHO + 50);
    }
}
