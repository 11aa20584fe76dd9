//! The server half of a [`Conversation`]: each server message is matched against the
//! queue of owed responses, then relayed, swallowed (answers to the proxy's own
//! messages), or followed by answers the proxy gives itself. `ParameterStatus` messages
//! update what both sides know of the session's settings. Output is zero-copy unless
//! something had to change.

use bytes::{BufMut, BytesMut};
use weir_wire::backend::{parse_parameter_status, parse_ready_for_query, ErrorFields};
use weir_wire::build::{put_frame, put_ready_for_query};
use weir_wire::frame::{FrameError, Header, HEADER_LEN};

use crate::conversation::{Conversation, Expect, HiddenQuery, Synthetic, Undo};
use crate::features;
use crate::session_state::Ctx;

/// What scanning the server's bytes decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerScan {
    /// Server bytes consumed.
    pub consumed: usize,
    /// ReadyForQuery messages among them that answered the client.
    pub answered: u64,
    /// Those of them with status idle: transactions the client finished (PgBouncer
    /// counts a transaction at each, in both pool modes).
    pub transactions: u64,
    /// The client's share is in `to_client` (appended), not the server's buffer.
    pub edited: bool,
}

/// Whether `tag` completes the response to an extended message of kind `kind`.
fn completes(kind: u8, tag: u8) -> bool {
    match kind {
        b'P' => tag == b'1',
        b'B' => tag == b'2',
        b'C' => tag == b'3',
        b'D' => matches!(tag, b'T' | b'n'),
        b'E' => matches!(tag, b'C' | b'I' | b's'),
        _ => false,
    }
}

impl Conversation {
    /// Scans server output (unrelayed bytes, oldest first). Complete messages are
    /// matched with the owed responses; DataRow and CopyData stream through even when
    /// incomplete. Returns how many bytes were consumed and, when something changed,
    /// appends what the client gets to `to_client`.
    ///
    /// # Errors
    /// A malformed frame length from the server.
    pub fn scan_server(
        &mut self,
        buf: &[u8],
        max_message: usize,
        ctx: &mut Ctx<'_>,
        to_client: &mut BytesMut,
    ) -> Result<ServerScan, FrameError> {
        let mut pos = self.scanner.skip_remaining(buf.len());
        let mut answered = 0;
        let mut transactions = 0;
        let mut edited = false;
        let mut run_start = 0;
        while self.scanner.at_boundary() {
            let rest = &buf[pos..];
            let Some(header) = Header::peek(rest, max_message)? else {
                break;
            };
            let frame_len = header.frame_len();
            let tag = header.tag;
            let swallowing = matches!(self.queue.front(), Some(Expect::HiddenQuery(_)));
            if matches!(tag, b'D' | b'd') && !swallowing {
                // Rows and copy data are never matched: stream them.
                let now = frame_len.min(rest.len());
                pos += now;
                self.scanner.set_remaining(frame_len - now);
                continue;
            }
            let Some(frame) = rest.get(..frame_len) else {
                break;
            };
            let body = &frame[HEADER_LEN..];
            let end = pos + frame_len;
            let mut relay = true;
            match self.queue.front() {
                Some(Expect::HiddenQuery(kind)) => {
                    let kind = *kind;
                    // A restore's ParameterStatus reaches the client, noted below like any.
                    relay = kind == HiddenQuery::Restore && tag == b'S';
                    if !relay {
                        self.hidden_query_message(kind, tag, body, ctx);
                    }
                }
                Some(Expect::Hidden(kind, _)) if completes(*kind, tag) => {
                    relay = false;
                    if let Some(Expect::Hidden(_, undo)) = self.queue.pop_front() {
                        note_parsed(tag, &undo);
                    }
                }
                _ => {}
            }
            if relay {
                match tag {
                    b'G' | b'W' => self.copy_in = true,
                    b'Z' => {
                        self.copy_in = false;
                        answered += 1;
                        self.pending = self.pending.saturating_sub(1);
                        self.status = parse_ready_for_query(body).unwrap_or(b'E');
                        if self.status == b'I' {
                            transactions += 1;
                        }
                        while let Some(done) = self.queue.pop_front() {
                            if matches!(done, Expect::Sync | Expect::Query) {
                                break;
                            }
                        }
                    }
                    b'E' => {
                        let error = ErrorFields::parse(body);
                        if error.is_fatal() {
                            self.server_fatal = true;
                        }
                        let code = error.code.unwrap_or(b"XX000");
                        ctx.metrics.record_error(code);
                        if weir_pool::breaker::is_unwell(code) {
                            ctx.breaker.record_unwell(
                                tokio::time::Instant::now(),
                                &format!("server error {}", String::from_utf8_lossy(code)),
                            );
                        }
                        if matches!(
                            self.queue.front(),
                            Some(Expect::Message(..) | Expect::Hidden(..))
                        ) {
                            self.fail_to_sync(ctx, stale_plan(&error));
                        }
                    }
                    b'S' => note_parameter(body, ctx),
                    tag => {
                        if matches!(self.queue.front(), Some(Expect::Message(kind, _)) if completes(*kind, tag))
                        {
                            if let Some(Expect::Message(_, undo)) = self.queue.pop_front() {
                                note_parsed(tag, &undo);
                            }
                        }
                    }
                }
            }
            let synthetic_next = matches!(self.queue.front(), Some(Expect::Synthetic(..)));
            if !relay || synthetic_next || edited {
                edited = true;
                to_client.extend_from_slice(&buf[run_start..pos]);
                if relay {
                    to_client.extend_from_slice(frame);
                }
                run_start = end;
                if synthetic_next {
                    self.emit_ready_synthetics(to_client);
                }
            }
            pos = end;
        }
        if edited {
            to_client.extend_from_slice(&buf[run_start..pos]);
        }
        Ok(ServerScan {
            consumed: pos,
            answered,
            transactions,
            edited,
        })
    }

    /// A message answering one of the proxy's own queries: never relayed.
    fn hidden_query_message(&mut self, kind: HiddenQuery, tag: u8, body: &[u8], ctx: &mut Ctx<'_>) {
        match tag {
            b'S' => note_parameter(body, ctx),
            b'D' if kind == HiddenQuery::Refresh => {
                let names = ctx.client.params.extra_names.clone();
                for (name, value) in names.iter().zip(data_row_values(body)) {
                    let value = value.map(|v| String::from_utf8_lossy(v).into_owned());
                    ctx.client.params.extras.set(name, value.as_deref());
                    ctx.server.params.extras.set(name, value.as_deref());
                }
            }
            b'D' if kind == HiddenQuery::PinCheck => {
                let pins = features::pins_from_check(data_row_values(body));
                ctx.client.settle_pins(pins, ctx.metrics, ctx.who);
            }
            b'E' => {
                let e = ErrorFields::parse(body);
                if e.is_fatal() {
                    self.server_fatal = true;
                }
                match kind {
                    HiddenQuery::Replay => {
                        self.replay_error.get_or_insert_with(|| e.message_lossy());
                    }
                    HiddenQuery::Refresh | HiddenQuery::Restore => {
                        tracing::warn!(client = %ctx.who, error = %e.message_lossy(), "could not read back session settings");
                    }
                    HiddenQuery::PinCheck => {
                        // The pins stay as they are: holding a server is the safe side.
                        tracing::warn!(client = %ctx.who, error = %e.message_lossy(), "could not check which session features remain");
                    }
                }
            }
            b'Z' => {
                self.status = parse_ready_for_query(body).unwrap_or(b'E');
                self.queue.pop_front();
                if kind == HiddenQuery::Replay && self.replay_error.is_none() {
                    // The server now has exactly the client's unreported settings.
                    ctx.server.params.extras = ctx.client.params.extras.clone();
                }
            }
            _ => {}
        }
    }

    /// The server failed the message at the head of the queue and skips the rest up to
    /// Sync: pop those entries (their answers never come) and undo what they recorded,
    /// newest first.
    fn fail_to_sync(&mut self, ctx: &mut Ctx<'_>, stale_plan: bool) {
        if stale_plan {
            if let Some(Expect::Message(_, Undo { uses: Some(s), .. })) = self.queue.front() {
                // Every client would hit the same error on this connection's copy.
                ctx.server.statements.remove(s);
                ctx.server.stale.push(s.clone());
            }
        }
        let mut undone = Vec::new();
        while let Some(front) = self.queue.front() {
            if matches!(front, Expect::Sync) {
                break;
            }
            match self.queue.pop_front() {
                Some(Expect::Message(_, u) | Expect::Hidden(_, u) | Expect::Synthetic(_, u)) => {
                    undone.push(u)
                }
                Some(Expect::Query) => self.pending = self.pending.saturating_sub(1),
                _ => {}
            }
        }
        if self.queue.is_empty() {
            // The client has not sent its Sync yet: what it sends until then is skipped.
            self.skipping = true;
        }
        for undo in undone.into_iter().rev() {
            apply_undo(undo, self, ctx);
        }
    }

    /// Emits every answer the proxy gives itself that is now at the head of the queue.
    pub(crate) fn emit_ready_synthetics(&mut self, to_client: &mut BytesMut) {
        while let Some(Expect::Synthetic(s, _)) = self.queue.front() {
            match s {
                Synthetic::ProxySet(error) => {
                    match error {
                        Some(e) => to_client.extend_from_slice(e),
                        None => put_frame(to_client, b'C', |b| b.put_slice(b"SET\0")),
                    }
                    put_ready_for_query(to_client, self.status);
                }
                Synthetic::ParseComplete => put_frame(to_client, b'1', |_| {}),
                Synthetic::CloseComplete => put_frame(to_client, b'3', |_| {}),
                Synthetic::Deallocate => {
                    put_frame(to_client, b'C', |b| b.put_slice(b"DEALLOCATE\0"));
                    put_ready_for_query(to_client, self.status);
                }
            }
            self.queue.pop_front();
        }
    }
}

/// A ParseComplete for a statement parsed under its server-side name: the statement is
/// known good, so later Parses of it can be answered without a server.
fn note_parsed(tag: u8, undo: &Undo) {
    if tag == b'1' {
        if let Some(statement) = &undo.server_statement {
            statement.mark_parsed();
        }
    }
}

/// PostgreSQL's error for a prepared statement whose result type changed under it.
fn stale_plan(error: &ErrorFields<'_>) -> bool {
    error.code == Some(b"0A000")
        && error
            .message
            .is_some_and(|m| m.starts_with(b"cached plan must not change result type"))
}

fn apply_undo(undo: Undo, conv: &mut Conversation, ctx: &mut Ctx<'_>) {
    if let Some(statement) = undo.server_statement {
        ctx.server.statements.remove(&statement);
        if undo.replaces_copy && !ctx.server.stale.iter().any(|s| s.id == statement.id) {
            ctx.server.stale.push(statement);
        }
    }
    if let Some((name, previous)) = undo.client_name {
        match previous {
            Some(p) => {
                ctx.client.statements.insert(&name, p);
            }
            None => {
                ctx.client.statements.remove(&name);
            }
        }
    }
    if undo.unnamed {
        conv.unnamed_parsed = false;
    }
}

/// A ParameterStatus from the server: both the server's and the client's settings now
/// have this value (the client sees the message, or asked for the value in a replay).
fn note_parameter(body: &[u8], ctx: &mut Ctx<'_>) {
    if let Some((name, value)) = parse_parameter_status(body) {
        ctx.server.params.reported.set_shared(name, value);
        ctx.client.params.set_reported(name, value);
    }
}

/// The column values of a DataRow body (`None` for NULL); stops at a malformed one.
fn data_row_values(body: &[u8]) -> impl Iterator<Item = Option<&[u8]>> {
    let count = body
        .get(..2)
        .map_or(0, |b| i16::from_be_bytes([b[0], b[1]]).max(0) as usize);
    let mut rest = body.get(2..).unwrap_or_default();
    (0..count).map_while(move |_| {
        let len = i32::from_be_bytes(rest.get(..4)?.try_into().ok()?);
        rest = &rest[4..];
        if len < 0 {
            return Some(None);
        }
        let len = len as usize;
        let value = rest.get(..len)?;
        rest = &rest[len..];
        Some(Some(value))
    })
}
