//! The admin console session: a tiny simple-query PostgreSQL server that
//! answers PgBouncer's commands (`SHOW POOLS;`, `PAUSE app;`, ...).
//!
//! The proxy authenticates the client and sends `AuthenticationOk`, then hands
//! the socket to [`serve_console`]. Like PgBouncer's, the console speaks only the
//! simple query protocol; extended-protocol messages get an ErrorResponse and are
//! skipped up to the next Sync, after which the session goes on. Commands are
//! case-insensitive, may end with `;`, and several may be sent in one query.

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use weir_wire::build::{
    put_backend_key_data, put_parameter_status, put_ready_for_query, put_simple_error, Severity,
};
use weir_wire::frame::split_frame;
use weir_wire::sql::{Lexer, Token, TokenKind};

use crate::backend::{AdminBackend, AdminCommand, Role};
use crate::error::AdminError;
use crate::result::{put_command_complete, put_empty_query, put_notice};
use crate::show::{show, FAKE_PARAMS, HELP, PGBOUNCER_VERSION};

/// Largest message the console accepts (commands are short).
const MAX_MESSAGE: usize = 1 << 20;
/// Longest query echoed back in an "invalid command" error.
const MAX_ECHO: usize = 200;

/// SQLSTATE for an unknown or malformed command.
const SYNTAX_ERROR: &str = "42601";
/// SQLSTATE for a stats user running an admin command.
const INSUFFICIENT_PRIVILEGE: &str = "42501";

/// Serves one admin console session until the client sends Terminate or closes.
///
/// Call it after authenticating the client and sending `AuthenticationOk`;
/// `rbuf` holds any bytes already read past the startup exchange. It sends the
/// ParameterStatus set, BackendKeyData and ReadyForQuery first.
///
/// # Errors
/// I/O errors, a malformed message stream, or an unsupported message type (the
/// client was sent a FATAL error first).
pub async fn serve_console<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    mut rbuf: BytesMut,
    user: &str,
    role: Role,
    backend: &dyn AdminBackend,
) -> Result<(), AdminError> {
    let mut wbuf = BytesMut::with_capacity(1024);
    welcome(&mut wbuf);
    write_out(stream, &mut wbuf).await?;
    // After an extended-protocol message: ignore everything up to Sync, as PostgreSQL does.
    let mut skip_to_sync = false;
    loop {
        let frame = match split_frame(&mut rbuf, MAX_MESSAGE) {
            Ok(Some(frame)) => frame,
            Ok(None) => {
                if stream.read_buf(&mut rbuf).await? == 0 {
                    return Ok(());
                }
                continue;
            }
            Err(e) => {
                put_simple_error(&mut wbuf, Severity::Fatal, "08P01", &e.to_string());
                write_out(stream, &mut wbuf).await?;
                return Err(e.into());
            }
        };
        match frame.tag() {
            b'X' => return Ok(()),
            b'S' => {
                skip_to_sync = false;
                put_ready_for_query(&mut wbuf, b'I');
                write_out(stream, &mut wbuf).await?;
            }
            _ if skip_to_sync => {}
            b'Q' => {
                let body = frame.body();
                let sql = body.strip_suffix(b"\0").unwrap_or(body);
                run_query(&mut wbuf, sql, user, role, backend).await;
                put_ready_for_query(&mut wbuf, b'I');
                write_out(stream, &mut wbuf).await?;
            }
            b'P' | b'B' | b'D' | b'E' | b'C' | b'H' => {
                skip_to_sync = true;
                put_simple_error(
                    &mut wbuf,
                    Severity::Error,
                    weir_wire::sqlstate::FEATURE_NOT_SUPPORTED,
                    "extended query protocol not supported by admin console",
                );
                write_out(stream, &mut wbuf).await?;
            }
            tag => {
                let msg = format!(
                    "unsupported packet type for admin console: {:?}",
                    char::from(tag)
                );
                put_simple_error(&mut wbuf, Severity::Fatal, "08P01", &msg);
                write_out(stream, &mut wbuf).await?;
                return Err(AdminError::Unsupported(char::from(tag)));
            }
        }
    }
}

/// The ParameterStatus set PgBouncer's console sends, BackendKeyData and ReadyForQuery.
fn welcome(buf: &mut BytesMut) {
    let server_version = format!("{PGBOUNCER_VERSION}/bouncer");
    for (name, value) in [
        ("server_version", server_version.as_str()),
        ("client_encoding", "UTF8"),
        ("server_encoding", "UTF8"),
        ("DateStyle", "ISO"),
        ("TimeZone", "GMT"),
        ("standard_conforming_strings", "on"),
        ("is_superuser", "on"),
    ] {
        put_parameter_status(buf, name, value);
    }
    put_backend_key_data(buf, 0, &[0; 4]);
    put_ready_for_query(buf, b'I');
}

async fn write_out<S: AsyncWrite + Unpin>(
    stream: &mut S,
    wbuf: &mut BytesMut,
) -> std::io::Result<()> {
    stream.write_all(wbuf).await?;
    wbuf.clear();
    stream.flush().await
}

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
}

/// A statement the console refuses, with its SQLSTATE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// Five-character SQLSTATE.
    pub code: &'static str,
    /// Message for the client.
    pub message: String,
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

fn invalid(sql: &[u8]) -> Refusal {
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

/// The CommandComplete tag PgBouncer sends for a command.
fn tag(cmd: &AdminCommand) -> &'static str {
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

/// Runs every statement of one simple Query, appending the responses (not the
/// final ReadyForQuery); stops at the first error, like PostgreSQL.
async fn run_query(
    wbuf: &mut BytesMut,
    sql: &[u8],
    user: &str,
    role: Role,
    backend: &dyn AdminBackend,
) {
    let statements = match parse_query(sql) {
        Ok(s) => s,
        Err(r) => {
            put_simple_error(wbuf, Severity::Error, r.code, &r.message);
            return;
        }
    };
    if statements.is_empty() {
        put_empty_query(wbuf);
        return;
    }
    for stmt in statements {
        match stmt {
            Statement::Help => {
                put_notice(wbuf, "Console usage", HELP);
                put_command_complete(wbuf, "SHOW");
            }
            Statement::Show(what) => match show(backend, &what) {
                Some(table) => table.write(wbuf, "SHOW"),
                None => {
                    let r = invalid(sql);
                    put_simple_error(wbuf, Severity::Error, r.code, &r.message);
                    return;
                }
            },
            Statement::FakeSet => put_command_complete(wbuf, "SET"),
            Statement::Command(cmd) => {
                if role != Role::Admin {
                    put_simple_error(
                        wbuf,
                        Severity::Error,
                        INSUFFICIENT_PRIVILEGE,
                        "admin access needed",
                    );
                    return;
                }
                let tag = tag(&cmd);
                tracing::info!(user, command = ?cmd, "{tag} command issued");
                if let Err(msg) = backend.command(cmd).await {
                    put_simple_error(wbuf, Severity::Error, "08P01", &msg);
                    return;
                }
                put_command_complete(wbuf, tag);
            }
        }
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
        ] {
            let r = parse(bad).unwrap_err();
            assert_eq!(r.code, SYNTAX_ERROR);
            assert!(r.message.contains("SHOW HELP"), "{bad}: {}", r.message);
        }
        let long = "x".repeat(5000);
        assert!(parse(&long).unwrap_err().message.len() < MAX_ECHO + 50);
    }
}
