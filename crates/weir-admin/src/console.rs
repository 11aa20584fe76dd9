//! The admin console session: a tiny PostgreSQL server that answers PgBouncer's
//! commands (`SHOW POOLS;`, `PAUSE app;`, ...).
//!
//! The proxy authenticates the client and sends `AuthenticationOk`, then hands
//! the socket to [`serve_console`]. Unlike PgBouncer's, the console speaks the
//! extended query protocol as well as the simple one (see [`crate::extended`]),
//! because psycopg 3, tokio-postgres, JDBC and node-postgres with parameters use
//! nothing else. `BEGIN`/`COMMIT`/`ROLLBACK` are accepted as no-ops, but the
//! session reports the transaction status PostgreSQL would (`T` inside a block,
//! `E` after an error there) so drivers' transaction bookkeeping stays right.

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use weir_wire::build::{
    put_backend_key_data, put_parameter_status, put_ready_for_query, put_simple_error, Severity,
};
use weir_wire::frame::split_frame;

pub use crate::command::{parse_query, Refusal, Statement, TxControl};

use crate::backend::{AdminBackend, Role};
use crate::command::{invalid, tag};
use crate::error::AdminError;
use crate::extended::Extended;
use crate::result::{put_command_complete, put_empty_query, put_notice, Table};
use crate::show::{show, HELP, PGBOUNCER_VERSION};

/// Largest message the console accepts (commands are short).
const MAX_MESSAGE: usize = 1 << 20;

/// SQLSTATE for a stats user running an admin command.
const INSUFFICIENT_PRIVILEGE: &str = "42501";
/// SQLSTATE for a command sent in a failed transaction block.
const IN_FAILED_TRANSACTION: &str = "25P02";

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
    let mut session = Session {
        user,
        role,
        backend,
        tx: Tx::Idle,
        ext: Extended::default(),
    };
    let mut wbuf = BytesMut::with_capacity(1024);
    welcome(&mut wbuf);
    write_out(stream, &mut wbuf).await?;
    // After an error in an extended-protocol message: ignore everything up to
    // Sync, as PostgreSQL does, so the rest of the client's batch is not run.
    let mut skip_to_sync = false;
    loop {
        let frame = match split_frame(&mut rbuf, MAX_MESSAGE) {
            Ok(Some(frame)) => frame,
            Ok(None) => {
                // Nothing left to act on: send what is pending before waiting, so a
                // client that pipelines without Flush is never left hanging.
                if !wbuf.is_empty() {
                    write_out(stream, &mut wbuf).await?;
                }
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
                session.end_of_batch();
                put_ready_for_query(&mut wbuf, session.status());
                write_out(stream, &mut wbuf).await?;
            }
            b'H' => write_out(stream, &mut wbuf).await?,
            _ if skip_to_sync => {}
            b'Q' => {
                let body = frame.body();
                let sql = body.strip_suffix(b"\0").unwrap_or(body);
                session.simple_query(&mut wbuf, sql).await;
                session.end_of_batch();
                put_ready_for_query(&mut wbuf, session.status());
                write_out(stream, &mut wbuf).await?;
            }
            tag @ (b'P' | b'B' | b'D' | b'E' | b'C') => {
                if let Err(r) = session.extended(&mut wbuf, tag, frame.body()).await {
                    session.error(&mut wbuf, &r);
                    skip_to_sync = true;
                }
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

/// Where the session is with respect to `BEGIN` ... `COMMIT`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Tx {
    /// Not in a transaction block.
    Idle,
    /// After `BEGIN`.
    Block,
    /// An error happened inside the block: only `COMMIT`/`ROLLBACK` are accepted.
    Failed,
}

/// What running one statement produced, before it is put on the wire.
pub(crate) enum Output {
    /// A result set; tag `SHOW`.
    Rows(Table),
    /// `SHOW HELP`: a notice, tag `SHOW`.
    Help,
    /// No rows; just this CommandComplete tag.
    Done(&'static str),
}

/// One console session's state.
pub(crate) struct Session<'a> {
    pub(crate) user: &'a str,
    pub(crate) role: Role,
    pub(crate) backend: &'a dyn AdminBackend,
    pub(crate) tx: Tx,
    /// Prepared statements and portals.
    pub(crate) ext: Extended,
}

impl Session<'_> {
    /// The ReadyForQuery status byte.
    fn status(&self) -> u8 {
        match self.tx {
            Tx::Idle => b'I',
            Tx::Block => b'T',
            Tx::Failed => b'E',
        }
    }

    /// Sends an ErrorResponse; inside a block, the block is now failed.
    pub(crate) fn error(&mut self, wbuf: &mut BytesMut, r: &Refusal) {
        put_simple_error(wbuf, Severity::Error, r.code, &r.message);
        if self.tx == Tx::Block {
            self.tx = Tx::Failed;
        }
    }

    /// At Sync or the end of a simple query: outside a block the implicit
    /// transaction ends, and with it every portal, as in PostgreSQL.
    fn end_of_batch(&mut self) {
        if self.tx == Tx::Idle {
            self.ext.close_portals();
        }
    }

    /// Runs every statement of one simple Query, appending the responses (not the
    /// final ReadyForQuery); stops at the first error, like PostgreSQL.
    async fn simple_query(&mut self, wbuf: &mut BytesMut, sql: &[u8]) {
        let statements = match parse_query(sql) {
            Ok(s) => s,
            Err(r) => return self.error(wbuf, &r),
        };
        if statements.is_empty() {
            put_empty_query(wbuf);
            return;
        }
        for stmt in &statements {
            match self.run(stmt, sql).await {
                Ok(Output::Rows(table)) => table.write(wbuf, "SHOW"),
                Ok(Output::Help) => put_help(wbuf),
                Ok(Output::Done(tag)) => put_command_complete(wbuf, tag),
                Err(r) => return self.error(wbuf, &r),
            }
        }
    }

    /// Runs one statement (`sql` is its source, echoed in errors).
    ///
    /// # Errors
    /// A refusal to send as an ErrorResponse: an unknown `SHOW`, a stats user
    /// running an admin command, a command the backend rejected, or anything but
    /// `COMMIT`/`ROLLBACK` in a failed block.
    pub(crate) async fn run(&mut self, stmt: &Statement, sql: &[u8]) -> Result<Output, Refusal> {
        let ends_block = matches!(
            stmt,
            Statement::Transaction(TxControl::Commit | TxControl::Rollback)
        );
        if self.tx == Tx::Failed && !ends_block {
            return Err(Refusal::new(
                IN_FAILED_TRANSACTION,
                "current transaction is aborted, commands ignored until end of transaction block",
            ));
        }
        Ok(match stmt {
            Statement::Help => Output::Help,
            Statement::Show(what) => {
                Output::Rows(show(self.backend, what).ok_or_else(|| invalid(sql))?)
            }
            Statement::FakeSet => Output::Done("SET"),
            Statement::Transaction(TxControl::Begin) => {
                self.tx = Tx::Block;
                Output::Done("BEGIN")
            }
            Statement::Transaction(TxControl::Commit) => {
                let failed = self.tx == Tx::Failed;
                self.tx = Tx::Idle;
                Output::Done(if failed { "ROLLBACK" } else { "COMMIT" })
            }
            Statement::Transaction(TxControl::Rollback) => {
                self.tx = Tx::Idle;
                Output::Done("ROLLBACK")
            }
            Statement::Command(cmd) => {
                if self.role != Role::Admin {
                    return Err(Refusal::new(INSUFFICIENT_PRIVILEGE, "admin access needed"));
                }
                let tag = tag(cmd);
                tracing::info!(user = self.user, command = ?cmd, "{tag} command issued");
                self.backend
                    .command(cmd.clone())
                    .await
                    .map_err(|msg| Refusal::new("08P01", msg))?;
                Output::Done(tag)
            }
        })
    }
}

/// `SHOW HELP`'s answer: the usage as a NOTICE, then CommandComplete.
pub(crate) fn put_help(wbuf: &mut BytesMut) {
    put_notice(wbuf, "Console usage", HELP);
    put_command_complete(wbuf, "SHOW");
}
