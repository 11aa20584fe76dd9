//! The extended query protocol for the console: Parse, Bind, Describe, Execute
//! and Close (Sync and Flush are the session loop's).
//!
//! A statement's text is one console command, parsed at Parse time; commands
//! take no parameters, so a `$1` in the text is an invalid command, and a Bind
//! must supply exactly as many values as Parse declared types (they are
//! ignored). A `SHOW` is validated at Parse and its columns recorded there, so
//! Describe needs no snapshot; the rows are read at Execute. Results go out in
//! text or in binary per column, as Bind asks (see [`crate::result`]); Execute's
//! row limit is honoured with PortalSuspended. Side effects (`PAUSE`, ...) happen
//! only at Execute, once per portal. In a failed transaction block, Parse and
//! Bind still succeed; Execute refuses anything but COMMIT/ROLLBACK (25P02).

use std::collections::HashMap;
use std::sync::Arc;

use bytes::BytesMut;
use weir_wire::sqlstate::{PROGRAM_LIMIT_EXCEEDED, PROTOCOL_VIOLATION};

use crate::command::{invalid, parse_query, Refusal, Statement, SYNTAX_ERROR};
use crate::console::{put_help, Output, Session};
use crate::result::{
    put_command_complete, put_data_row_in, put_empty, put_empty_query, put_parameter_description,
    put_row_description_in, ColType, Format, Val,
};
use crate::show::show;

/// Most prepared statements (and, separately, portals) one session may hold.
const MAX_OBJECTS: usize = 1000;
/// The type reported for a parameter Parse left unspecified (OID 0).
const TEXT_OID: u32 = 25;

/// The columns of a statement's result, or `None` when it returns no rows.
type Columns = Option<Vec<(&'static str, ColType)>>;

/// A prepared statement.
#[derive(Debug)]
struct Prepared {
    /// The source text, echoed in errors.
    sql: Vec<u8>,
    /// `None` for an empty query.
    stmt: Option<Statement>,
    /// Declared parameter types.
    params: Vec<u32>,
    cols: Columns,
}

/// A bound statement, ready to execute.
#[derive(Debug)]
struct Portal {
    prepared: Arc<Prepared>,
    /// One format per column of the statement.
    formats: Vec<Format>,
    state: PortalState,
}

#[derive(Debug)]
enum PortalState {
    /// Not executed yet.
    Ready,
    /// Execute stopped at its row limit; these rows are still to send.
    Suspended {
        cols: Vec<(&'static str, ColType)>,
        rows: std::vec::IntoIter<Vec<Val>>,
    },
    /// Ran to completion with this tag; executing it again only repeats the tag.
    Done(&'static str),
}

/// A session's prepared statements and portals (the unnamed ones under `""`).
#[derive(Debug, Default)]
pub(crate) struct Extended {
    statements: HashMap<String, Arc<Prepared>>,
    portals: HashMap<String, Portal>,
}

impl Extended {
    /// Drops every portal (the end of a transaction).
    pub(crate) fn close_portals(&mut self) {
        self.portals.clear();
    }
}

impl Session<'_> {
    /// Handles one Parse ('P'), Bind ('B'), Describe ('D'), Execute ('E') or
    /// Close ('C') message, appending its responses.
    ///
    /// # Errors
    /// A refusal for the client; the caller sends it and skips to Sync.
    pub(crate) async fn extended(
        &mut self,
        wbuf: &mut BytesMut,
        tag: u8,
        body: &[u8],
    ) -> Result<(), Refusal> {
        let mut r = Reader(body);
        match tag {
            b'P' => self.parse(wbuf, &mut r),
            b'B' => self.bind(wbuf, &mut r),
            b'D' => self.describe(wbuf, &mut r),
            b'E' => self.execute(wbuf, &mut r).await,
            _ => self.close(wbuf, &mut r),
        }
    }

    fn parse(&mut self, wbuf: &mut BytesMut, r: &mut Reader<'_>) -> Result<(), Refusal> {
        let name = r.name()?;
        let sql = r.cstr()?.to_vec();
        let params = (0..r.count()?)
            .map(|_| r.u32().map(|oid| if oid == 0 { TEXT_OID } else { oid }))
            .collect::<Result<Vec<_>, _>>()?;
        r.end()?;
        if !name.is_empty() {
            if self.ext.statements.contains_key(&name) {
                let msg = format!("prepared statement \"{name}\" already exists");
                return Err(Refusal::new("42P05", msg));
            }
            if self.ext.statements.len() >= MAX_OBJECTS {
                let msg = format!("too many prepared statements (at most {MAX_OBJECTS})");
                return Err(Refusal::new(PROGRAM_LIMIT_EXCEEDED, msg));
            }
        }
        let mut statements = parse_query(&sql)?;
        if statements.len() > 1 {
            return Err(Refusal::new(
                SYNTAX_ERROR,
                "cannot insert multiple commands into a prepared statement",
            ));
        }
        let stmt = statements.pop();
        let cols = match &stmt {
            Some(Statement::Show(what)) => {
                Some(show(self.backend, what).ok_or_else(|| invalid(&sql))?.cols)
            }
            _ => None,
        };
        let prepared = Prepared {
            sql,
            stmt,
            params,
            cols,
        };
        self.ext.statements.insert(name, Arc::new(prepared));
        put_empty(wbuf, b'1');
        Ok(())
    }

    fn bind(&mut self, wbuf: &mut BytesMut, r: &mut Reader<'_>) -> Result<(), Refusal> {
        let portal = r.name()?;
        let stmt_name = r.name()?;
        let param_formats = r.count()?;
        for _ in 0..param_formats {
            format(r.i16()?)?;
        }
        let nparams = r.count()?;
        for _ in 0..nparams {
            let len = r.i32()?;
            if len != -1 {
                let len = usize::try_from(len).map_err(|_| malformed())?;
                r.take(len)?;
            }
        }
        let result_formats = (0..r.count()?)
            .map(|_| r.i16().and_then(format))
            .collect::<Result<Vec<_>, _>>()?;
        r.end()?;
        let prepared = self.statement(&stmt_name)?;
        if param_formats > 1 && param_formats != nparams {
            let msg = format!(
                "bind message has {param_formats} parameter formats but {nparams} parameters"
            );
            return Err(Refusal::new(PROTOCOL_VIOLATION, msg));
        }
        if nparams != prepared.params.len() {
            let msg = format!(
                "bind message supplies {nparams} parameters, but prepared statement \"{stmt_name}\" requires {}",
                prepared.params.len()
            );
            return Err(Refusal::new(PROTOCOL_VIOLATION, msg));
        }
        let ncols = prepared.cols.as_ref().map_or(0, Vec::len);
        let formats = match result_formats.as_slice() {
            [] => vec![Format::Text; ncols],
            [one] => vec![*one; ncols],
            each if each.len() == ncols => each.to_vec(),
            other => {
                let msg = format!(
                    "bind message has {} result formats but query has {ncols} columns",
                    other.len()
                );
                return Err(Refusal::new(PROTOCOL_VIOLATION, msg));
            }
        };
        if !portal.is_empty() {
            if self.ext.portals.contains_key(&portal) {
                return Err(Refusal::new(
                    "42P03",
                    format!("portal \"{portal}\" already exists"),
                ));
            }
            if self.ext.portals.len() >= MAX_OBJECTS {
                let msg = format!("too many portals (at most {MAX_OBJECTS})");
                return Err(Refusal::new(PROGRAM_LIMIT_EXCEEDED, msg));
            }
        }
        let state = PortalState::Ready;
        self.ext.portals.insert(
            portal,
            Portal {
                prepared,
                formats,
                state,
            },
        );
        put_empty(wbuf, b'2');
        Ok(())
    }

    fn describe(&mut self, wbuf: &mut BytesMut, r: &mut Reader<'_>) -> Result<(), Refusal> {
        let kind = r.u8()?;
        let name = r.name()?;
        r.end()?;
        match kind {
            b'S' => {
                let prepared = self.statement(&name)?;
                put_parameter_description(wbuf, &prepared.params);
                // A statement's result formats are not chosen yet: text (0) for all.
                put_columns(wbuf, &prepared.cols, &[]);
            }
            b'P' => {
                let portal = self
                    .ext
                    .portals
                    .get(&name)
                    .ok_or_else(|| no_portal(&name))?;
                put_columns(wbuf, &portal.prepared.cols, &portal.formats);
            }
            other => return Err(bad_kind("DESCRIBE", other)),
        }
        Ok(())
    }

    async fn execute(&mut self, wbuf: &mut BytesMut, r: &mut Reader<'_>) -> Result<(), Refusal> {
        let name = r.name()?;
        let max_rows = r.i32()?;
        r.end()?;
        // Out of the map while it runs: running may need the whole session.
        let mut portal = self
            .ext
            .portals
            .remove(&name)
            .ok_or_else(|| no_portal(&name))?;
        let result = self.run_portal(wbuf, &mut portal, max_rows).await;
        self.ext.portals.insert(name, portal);
        result
    }

    async fn run_portal(
        &mut self,
        wbuf: &mut BytesMut,
        portal: &mut Portal,
        max_rows: i32,
    ) -> Result<(), Refusal> {
        // Zero or negative means no limit.
        let limit = usize::try_from(max_rows)
            .ok()
            .filter(|n| *n > 0)
            .unwrap_or(usize::MAX);
        match std::mem::replace(&mut portal.state, PortalState::Ready) {
            PortalState::Ready => {
                let prepared = Arc::clone(&portal.prepared);
                let Some(stmt) = &prepared.stmt else {
                    put_empty_query(wbuf);
                    return Ok(());
                };
                match self.run(stmt, &prepared.sql).await? {
                    Output::Rows(table) => {
                        let rows = table.rows.into_iter();
                        portal.state = send_rows(wbuf, table.cols, rows, &portal.formats, limit);
                    }
                    Output::Help => {
                        put_help(wbuf);
                        portal.state = PortalState::Done("SHOW");
                    }
                    Output::Done(tag) => {
                        put_command_complete(wbuf, tag);
                        portal.state = PortalState::Done(tag);
                    }
                }
            }
            PortalState::Suspended { cols, rows } => {
                portal.state = send_rows(wbuf, cols, rows, &portal.formats, limit);
            }
            PortalState::Done(tag) => {
                put_command_complete(wbuf, tag);
                portal.state = PortalState::Done(tag);
            }
        }
        Ok(())
    }

    fn close(&mut self, wbuf: &mut BytesMut, r: &mut Reader<'_>) -> Result<(), Refusal> {
        let kind = r.u8()?;
        let name = r.name()?;
        r.end()?;
        // Closing something that does not exist is not an error.
        match kind {
            b'S' => drop(self.ext.statements.remove(&name)),
            b'P' => drop(self.ext.portals.remove(&name)),
            other => return Err(bad_kind("CLOSE", other)),
        }
        put_empty(wbuf, b'3');
        Ok(())
    }

    fn statement(&self, name: &str) -> Result<Arc<Prepared>, Refusal> {
        self.ext.statements.get(name).cloned().ok_or_else(|| {
            let msg = if name.is_empty() {
                "unnamed prepared statement does not exist".to_owned()
            } else {
                format!("prepared statement \"{name}\" does not exist")
            };
            Refusal::new("26000", msg)
        })
    }
}

/// Sends up to `limit` rows, then CommandComplete, or PortalSuspended if rows remain.
fn send_rows(
    wbuf: &mut BytesMut,
    cols: Vec<(&'static str, ColType)>,
    mut rows: std::vec::IntoIter<Vec<Val>>,
    formats: &[Format],
    limit: usize,
) -> PortalState {
    for row in rows.by_ref().take(limit) {
        put_data_row_in(wbuf, &cols, &row, formats);
    }
    if rows.len() > 0 {
        put_empty(wbuf, b's');
        PortalState::Suspended { cols, rows }
    } else {
        put_command_complete(wbuf, "SHOW");
        PortalState::Done("SHOW")
    }
}

/// RowDescription for a statement with rows, NoData for one without.
fn put_columns(wbuf: &mut BytesMut, cols: &Columns, formats: &[Format]) {
    match cols {
        Some(cols) => put_row_description_in(wbuf, cols, formats),
        None => put_empty(wbuf, b'n'),
    }
}

fn format(code: i16) -> Result<Format, Refusal> {
    match code {
        0 => Ok(Format::Text),
        1 => Ok(Format::Binary),
        other => Err(Refusal::new(
            "22023",
            format!("unsupported format code: {other}"),
        )),
    }
}

fn no_portal(name: &str) -> Refusal {
    let msg = if name.is_empty() {
        "unnamed portal does not exist".to_owned()
    } else {
        format!("portal \"{name}\" does not exist")
    };
    Refusal::new("34000", msg)
}

fn bad_kind(message: &str, kind: u8) -> Refusal {
    let msg = format!("invalid {message} message subtype {kind}");
    Refusal::new(PROTOCOL_VIOLATION, msg)
}

fn malformed() -> Refusal {
    Refusal::new(PROTOCOL_VIOLATION, "invalid message format")
}

/// Reads a message body front to back; every read is bounds-checked.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], Refusal> {
        if self.0.len() < n {
            return Err(malformed());
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, Refusal> {
        Ok(self.take(1)?.first().copied().unwrap_or_default())
    }

    fn i16(&mut self) -> Result<i16, Refusal> {
        let b = self.take(2)?;
        Ok(i16::from_be_bytes(b.try_into().map_err(|_| malformed())?))
    }

    fn i32(&mut self) -> Result<i32, Refusal> {
        let b = self.take(4)?;
        Ok(i32::from_be_bytes(b.try_into().map_err(|_| malformed())?))
    }

    fn u32(&mut self) -> Result<u32, Refusal> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes(b.try_into().map_err(|_| malformed())?))
    }

    /// A count (Int16) that must not be negative.
    fn count(&mut self) -> Result<usize, Refusal> {
        usize::try_from(self.i16()?).map_err(|_| malformed())
    }

    /// A NUL-terminated string, without the NUL.
    fn cstr(&mut self) -> Result<&'a [u8], Refusal> {
        let nul = self.0.iter().position(|b| *b == 0).ok_or_else(malformed)?;
        let s = self.take(nul)?;
        self.take(1)?;
        Ok(s)
    }

    /// A statement or portal name.
    fn name(&mut self) -> Result<String, Refusal> {
        Ok(String::from_utf8_lossy(self.cstr()?).into_owned())
    }

    /// Checks that the whole body was read.
    fn end(&self) -> Result<(), Refusal> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(malformed())
        }
    }
}
