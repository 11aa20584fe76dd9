//! Where one server connection stands in its exchange with the client holding it, and
//! the client half of that exchange: every message sent to the server leaves an entry in
//! a queue of owed responses, so the proxy can rename statements, parse a statement the
//! server lacks, answer a Parse or Close itself, and replay settings, while the client
//! sees exactly the responses PostgreSQL would have sent, in order. Pure logic over
//! frames; the server half is in [`crate::responses`].

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::BytesMut;
use weir_config::SessionFeatures;
use weir_wire::build::put_query;
use weir_wire::frame::{FrameError, Header, HEADER_LEN};
use weir_wire::frontend::query_text;
use weir_wire::scan::StreamScanner;

use crate::error::{ClientError, Violation};
use crate::features::{self, pin, Effects};
use crate::prepared::Statement;
use crate::session_state::Ctx;
use crate::statement::raise_query;

/// What scanning the client's buffered bytes decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientScan {
    /// Client bytes consumed.
    pub consumed: usize,
    /// The bytes to send are in the `to_server` buffer (rewritten), not the client's.
    pub edited: bool,
    /// The client said Terminate after the consumed bytes.
    pub terminate: bool,
}

/// A response the server owes, oldest first.
#[derive(Debug)]
pub(crate) enum Expect {
    /// A client Query or FunctionCall, relayed through ReadyForQuery.
    Query,
    /// A client Sync, answered by ReadyForQuery.
    Sync,
    /// A client extended-protocol message (`P`, `B`, `D`, `E`, `C`), relayed.
    Message(u8, Undo),
    /// A proxy-injected `P`, `B` or `C` whose answer the client must not see.
    Hidden(u8, Undo),
    /// A proxy-injected query, swallowed through ReadyForQuery.
    HiddenQuery(HiddenQuery),
    /// An answer the proxy gives itself when every earlier answer has been relayed.
    Synthetic(Synthetic, Undo),
}

/// Why the proxy ran a query of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HiddenQuery {
    /// Setting the client's settings on a server connection; failure ends the session.
    Replay,
    /// Reading back unreported settings after a transaction that may have changed them.
    Refresh,
    /// Setting startup values back after the client's `RESET`; the client sees the
    /// ParameterStatus messages, as it would from a direct connection's RESET.
    Restore,
    /// Asking which session features outlived the transaction (settles the pins).
    PinCheck,
}

/// An answer the proxy gives itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Synthetic {
    /// ParseComplete for a statement the server already had.
    ParseComplete,
    /// CloseComplete for a client's Close of a named statement (kept on the server).
    CloseComplete,
    /// CommandComplete `DEALLOCATE` + ReadyForQuery for `DEALLOCATE name` of a mapped statement.
    Deallocate,
    /// CommandComplete `SET` (or this ErrorResponse, whole) + ReadyForQuery for a `SET`
    /// of one of the proxy's own settings ([`crate::proxy_set`]) while a server is held.
    ProxySet(Option<Box<[u8]>>),
}

/// A client statement name and what it named before a change.
pub(crate) type NameChange = (Box<[u8]>, Option<Arc<Statement>>);

/// What to take back if a message is skipped or fails (PostgreSQL skips everything up
/// to Sync after an error).
#[derive(Debug, Default)]
pub(crate) struct Undo {
    /// A statement recorded as prepared on the server.
    pub server_statement: Option<Arc<Statement>>,
    /// A client name changed: the name and what it named before.
    pub client_name: Option<NameChange>,
    /// The unnamed statement was parsed on this server connection.
    pub unnamed: bool,
    /// `server_statement`'s Parse follows a Close of an older copy under the same name:
    /// if both are skipped, the server still has that copy, so it goes on the stale list
    /// to be closed before the next Parse (else that Parse would fail with 42P05).
    pub replaces_copy: bool,
    /// Not undone: the mapped statement a Bind or Describe uses, dropped from the
    /// server if PostgreSQL says its cached plan went stale (DDL changed its result).
    pub uses: Option<Arc<Statement>>,
}

/// The exchange on one checked-out server connection; a fresh one per checkout.
#[derive(Debug)]
pub struct Conversation {
    /// Queries, FunctionCalls and Syncs sent whose ReadyForQuery has not come back.
    pub(crate) pending: u32,
    /// Extended-protocol messages sent since the last Sync: the server is mid-sequence.
    pub(crate) unsynced: bool,
    /// Transaction status of the last ReadyForQuery.
    pub(crate) status: u8,
    /// Bytes of a client CopyData message still to stream through.
    copy_remaining: usize,
    /// The server started a COPY FROM STDIN (or a CopyBoth) and waits for the client's
    /// data, until its next ReadyForQuery.
    pub(crate) copy_in: bool,
    /// The unnamed statement was parsed on this server connection.
    pub(crate) unnamed_parsed: bool,
    /// The server reported a FATAL error: it is about to close.
    pub(crate) server_fatal: bool,
    /// The server failed a message and skips the client's messages up to the next Sync.
    pub(crate) skipping: bool,
    /// Owed responses, oldest first.
    pub(crate) queue: VecDeque<Expect>,
    /// A settings replay failed: the session must end with this message.
    pub(crate) replay_error: Option<String>,
    /// Client messages after a Sync wait until the batch before it is answered, because
    /// they may use statement names that batch changed (and an error there undoes).
    held: bool,
    /// Frame boundaries of the server's output.
    pub(crate) scanner: StreamScanner,
}

impl Default for Conversation {
    fn default() -> Self {
        Conversation {
            pending: 0,
            unsynced: false,
            status: b'I',
            copy_remaining: 0,
            copy_in: false,
            unnamed_parsed: false,
            server_fatal: false,
            skipping: false,
            queue: VecDeque::new(),
            replay_error: None,
            held: false,
            scanner: StreamScanner::new(),
        }
    }
}

/// Builds the client's rewritten byte stream: unchanged runs are copied from the client
/// buffer only once something in the scan had to change.
struct Rewriter<'a> {
    buf: &'a [u8],
    out: &'a mut BytesMut,
    edited: bool,
    run_start: usize,
}

impl Rewriter<'_> {
    /// Starts editing at `pos`: copies the unchanged run before it.
    fn edit_at(&mut self, pos: usize) -> &mut BytesMut {
        self.edited = true;
        self.out.extend_from_slice(&self.buf[self.run_start..pos]);
        self.run_start = pos;
        self.out
    }

    /// Drops the frame at `pos..end` (after `edit_at(pos)`).
    fn skip_to(&mut self, end: usize) {
        self.run_start = end;
    }

    fn finish(&mut self, end: usize) {
        if self.edited {
            self.out.extend_from_slice(&self.buf[self.run_start..end]);
        }
    }
}

impl Conversation {
    /// Asks the server which session features remain ([`features::PIN_CHECK_SQL`])
    /// before the server goes back to the pool; the answer settles the client's pins.
    pub fn check_pins(&mut self, to_server: &mut BytesMut) {
        put_query(to_server, features::PIN_CHECK_SQL);
        self.queue
            .push_back(Expect::HiddenQuery(HiddenQuery::PinCheck));
    }

    /// Starts a conversation that first runs `sql` (the client's settings) and swallows
    /// its answers.
    pub fn replay(&mut self, sql: &str, to_server: &mut BytesMut) {
        put_query(to_server, sql);
        self.queue
            .push_back(Expect::HiddenQuery(HiddenQuery::Replay));
    }

    /// Runs `sql` (reading back settings, or restoring startup values when `restore`)
    /// before the server goes back to the pool.
    pub fn refresh(&mut self, sql: &str, restore: bool, to_server: &mut BytesMut) {
        put_query(to_server, sql);
        let kind = if restore {
            HiddenQuery::Restore
        } else {
            HiddenQuery::Refresh
        };
        self.queue.push_back(Expect::HiddenQuery(kind));
    }

    /// Walks the client's buffered frames until an incomplete one or Terminate, noting
    /// what the server will owe. In transaction mode, statement names are mapped and
    /// session features handled; what must change is written to `to_server` (which may
    /// already hold a prelude) and answers the proxy gives itself to `to_client`.
    ///
    /// # Errors
    /// A bad length or an unknown message type (protocol violation), or a refused frame.
    pub fn scan_client(
        &mut self,
        buf: &[u8],
        max_message: usize,
        ctx: &mut Ctx<'_>,
        to_server: &mut BytesMut,
        to_client: &mut BytesMut,
    ) -> Result<ClientScan, ClientError> {
        let edited = !to_server.is_empty();
        let mut w = Rewriter {
            buf,
            out: to_server,
            edited,
            run_start: 0,
        };
        let mut pos = 0;
        let mut terminate = false;
        if self.held {
            if self.names_unsettled() {
                w.finish(0);
                return Ok(ClientScan {
                    consumed: 0,
                    edited: w.edited,
                    terminate: false,
                });
            }
            self.held = false;
        }
        loop {
            if self.copy_remaining > 0 {
                let n = self.copy_remaining.min(buf.len() - pos);
                pos += n;
                self.copy_remaining -= n;
                if self.copy_remaining > 0 {
                    break;
                }
            }
            let rest = &buf[pos..];
            let header = match Header::peek(rest, max_message) {
                Ok(Some(h)) => h,
                Ok(None) => break,
                Err(e) => return Err(frame_error(e)),
            };
            let frame_len = header.frame_len();
            if header.tag == b'd' {
                // CopyData streams through without buffering the whole message.
                let n = frame_len.min(rest.len());
                pos += n;
                self.copy_remaining = frame_len - n;
                continue;
            }
            let Some(frame) = rest.get(..frame_len) else {
                break;
            };
            let body = &frame[HEADER_LEN..];
            match header.tag {
                b'X' => {
                    terminate = true;
                    break;
                }
                b'Q' => self.client_query(body, pos, frame_len, ctx, &mut w, to_client),
                b'F' => {
                    if ctx.transaction_mode {
                        self.function_call(body, pos, frame_len, ctx, &mut w);
                    }
                    self.pending += 1;
                    self.queue.push_back(Expect::Query);
                }
                b'S' => {
                    self.pending += 1;
                    self.unsynced = false;
                    self.skipping = false;
                    self.queue.push_back(Expect::Sync);
                    if ctx.transaction_mode && self.names_unsettled() {
                        self.held = true;
                        pos += frame_len;
                        break;
                    }
                }
                b'H' | b'c' | b'f' => {}
                b'P' | b'B' | b'D' | b'C' | b'E' => {
                    self.unsynced = true;
                    if self.skipping {
                        // The server discards it; so does the proxy's bookkeeping.
                    } else {
                        self.extended(header.tag, body, pos, frame_len, ctx, &mut w, to_client)?;
                    }
                }
                tag => return Err(invalid_message_type(tag)),
            }
            pos += frame_len;
        }
        w.finish(pos);
        Ok(ClientScan {
            consumed: pos,
            edited: w.edited,
            terminate,
        })
    }

    fn client_query(
        &mut self,
        body: &[u8],
        pos: usize,
        frame_len: usize,
        ctx: &mut Ctx<'_>,
        w: &mut Rewriter<'_>,
        to_client: &mut BytesMut,
    ) {
        if crate::proxy_set::looks_like(body) {
            if let Some((setting, value)) = query_text(body).and_then(crate::proxy_set::parse) {
                // Answered by the proxy in its turn, never sent: the server must not
                // carry the setting to its next client.
                let error = crate::proxy_set::apply(ctx.client, setting, &value)
                    .err()
                    .map(|e| {
                        let mut out = BytesMut::new();
                        e.put(&mut out, weir_wire::build::Severity::Error);
                        Box::from(&out[..])
                    });
                w.edit_at(pos);
                w.skip_to(pos + frame_len);
                self.push_synthetic(Synthetic::ProxySet(error), Undo::default(), to_client);
                return;
            }
        }
        // A simple query ends the unnamed statement's life.
        self.unnamed_parsed = false;
        let text = query_text(body);
        // Session mode looks only for RESETs of startup settings, and only if there are
        // any: otherwise what a query does to the session stays on its own server.
        let effects = match text {
            Some(t) if ctx.transaction_mode || !ctx.client.params.startup.is_empty() => {
                let backslash_quotes = ctx.client.params.backslash_quotes();
                Some(ctx.client.simple_query_effects(t, backslash_quotes))
            }
            Some(t) => {
                ctx.client.note_query(t);
                None
            }
            None => None,
        };
        if ctx.transaction_mode {
            ctx.client.unnamed = None;
            if let Some((_, served)) = &mut ctx.client.unnamed_mapped {
                // Its unnamed statement is gone, but the text stays known: a client that
                // sends BEGIN and COMMIT as simple queries around the same statement
                // repeats it all the same.
                *served = false;
            }
            let effects = effects.unwrap_or_default();
            if !effects.is_none() {
                if let Some(refusal) = admit_features(&effects, ctx) {
                    let out = w.edit_at(pos);
                    put_query(out, &refusal);
                    w.skip_to(pos + frame_len);
                    self.pending += 1;
                    self.queue.push_back(Expect::Query);
                    return;
                }
                if let Some(name) = &effects.deallocate {
                    if let Some(previous) = ctx.client.statements.remove(name) {
                        // The statement stays prepared on the server for other clients.
                        w.edit_at(pos);
                        w.skip_to(pos + frame_len);
                        let undo = Undo {
                            client_name: Some((name.as_slice().into(), Some(previous))),
                            ..Undo::default()
                        };
                        self.push_synthetic(Synthetic::Deallocate, undo, to_client);
                        return;
                    }
                }
                self.apply_effects(&effects, ctx);
            }
        } else if !ctx.client.params.startup.is_empty() {
            // Session mode replays startup settings with SET too: a RESET must go back
            // to them, not to the server's defaults.
            let effects = effects.unwrap_or_default();
            if effects.reset_all || !effects.resets.is_empty() {
                ctx.client
                    .params
                    .note_reset(&effects.resets, effects.reset_all);
            }
        }
        self.pending += 1;
        self.queue.push_back(Expect::Query);
    }

    /// A FunctionCall in transaction mode: what its function (named by OID) does to the
    /// session is admitted and tracked like a statement's ([`features::function_call_effects`]).
    fn function_call(
        &mut self,
        body: &[u8],
        pos: usize,
        frame_len: usize,
        ctx: &mut Ctx<'_>,
        w: &mut Rewriter<'_>,
    ) {
        let effects = features::function_call_effects(body);
        if let Some(refusal) = admit_features(&effects, ctx) {
            // Refused in the call's place, as a statement would be; the client gets the
            // ErrorResponse and ReadyForQuery it expects after a FunctionCall.
            let out = w.edit_at(pos);
            put_query(out, &refusal);
            w.skip_to(pos + frame_len);
            return;
        }
        self.apply_effects(&effects, ctx);
    }

    /// Acts on what a statement does to the session (its pins were admitted already).
    fn apply_effects(&mut self, effects: &Effects, ctx: &mut Ctx<'_>) {
        if effects.pins != 0 || effects.unpins & ctx.client.pins != 0 {
            // Whether the feature really outlives the transaction (or really ended) is
            // the server's to say, once the transaction is over.
            ctx.client.pin_check = true;
        }
        for name in &effects.set_names {
            if let Ok(name) = std::str::from_utf8(name) {
                ctx.client.params.track(name);
            }
        }
        if effects.settings && ctx.client.params.tracks_extras() {
            ctx.client.params.extras_dirty = true;
        }
        if (effects.reset_all || !effects.resets.is_empty())
            && !ctx.client.params.startup.is_empty()
        {
            ctx.client
                .params
                .note_reset(&effects.resets, effects.reset_all);
        }
        if effects.deallocate_all {
            ctx.client.statements.clear();
            ctx.server.statements.clear();
        }
    }

    fn push_synthetic(&mut self, s: Synthetic, undo: Undo, to_client: &mut BytesMut) {
        self.queue.push_back(Expect::Synthetic(s, undo));
        self.emit_ready_synthetics(to_client);
    }

    /// Some statement-name change still depends on the server's answer (an error would
    /// undo it).
    fn names_unsettled(&self) -> bool {
        self.queue.iter().any(|e| {
            matches!(e, Expect::Message(_, u) | Expect::Hidden(_, u) | Expect::Synthetic(_, u)
                if u.client_name.is_some())
        })
    }

    /// Everything the client sent is answered, no batch or COPY is open, the last
    /// status was idle and the server output is at a frame boundary: the connection is
    /// in a known idle state (the caller also checks that all output was relayed).
    pub fn is_idle(&self) -> bool {
        self.between_transactions()
            && self.queue.is_empty()
            && self.scanner.at_boundary()
            && !self.server_fatal
    }

    /// No answer owed and outside any transaction block: a point where a session-mode
    /// client may be told about shutdown or idle timeouts.
    pub fn between_transactions(&self) -> bool {
        self.pending == 0 && self.status == b'I' && !self.unsynced && self.copy_remaining == 0
    }

    /// Inside a transaction block with no answer owed: the client is the one idling.
    pub fn idle_in_transaction(&self) -> bool {
        self.pending == 0 && self.status != b'I'
    }

    /// The server owes no answer at all (every message sent was answered).
    pub fn owes_nothing(&self) -> bool {
        self.queue.is_empty()
    }

    /// The server owes answers it can give without anything more from the client: no
    /// COPY waits for client data (which would deadlock: tested) and every request sent
    /// is whole (a Query, or extended messages up to their Sync: a batch still arriving
    /// keeps streaming to the server as it comes). Until the answers come, the relay
    /// need not watch the client; each of them wakes it anyway.
    pub fn owes_whole_answers(&self) -> bool {
        self.pending > 0 && !self.unsynced && self.copy_remaining == 0 && !self.copy_in
    }

    /// No answer owed (the client's last Query or Sync was answered).
    pub fn all_answered(&self) -> bool {
        self.pending == 0
    }

    /// The server said it is closing (FATAL): the client already has the reason.
    pub fn server_fatal(&self) -> bool {
        self.server_fatal
    }

    /// A settings replay failed with this message: the session cannot go on.
    pub fn replay_error(&self) -> Option<&str> {
        self.replay_error.as_deref()
    }
}

/// Admits the session features a statement starts: pins the client to its server
/// connection, or returns the query that raises why not, in the client's place. Refused
/// in `session_features = "error"` mode (0A000), and when the pool already has
/// `max_pinned` pinned clients (53300), so pins can never take every server.
fn admit_features(effects: &Effects, ctx: &mut Ctx<'_>) -> Option<String> {
    if effects.pins == 0 {
        return None;
    }
    let what = pin::describe(effects.pins);
    if ctx.features == SessionFeatures::Error {
        return Some(raise_query(
            "0A000",
            &format!("pgweir: {what} needs a session of its own, which transaction pooling does not give (session_features = \"error\")"),
            Some("Use pool_mode = \"session\" for this database, or session_features = \"pin\" to keep the client on one server connection until the feature is released."),
        ));
    }
    if ctx
        .client
        .pin(effects.pins, ctx.metrics, ctx.max_pinned, ctx.who)
    {
        return None;
    }
    let cap = ctx.max_pinned;
    let why = match cap {
        0 => "this pool allows no pinned clients (max_pinned = 0)".to_owned(),
        _ => format!("{cap} clients of this pool are pinned already (max_pinned = {cap})"),
    };
    Some(raise_query(
        "53300",
        &format!("pgweir: {what} would pin this client to a server connection, but {why}"),
        Some("End session features when done (UNLISTEN *, DISCARD TEMP or ON COMMIT DROP, pg_advisory_unlock_all(), CLOSE ALL, DEALLOCATE ALL, RESET ROLE), raise max_pinned, or use pool_mode = \"session\" for this user or database."),
    ))
}

/// PostgreSQL's own wording for an unknown message type.
pub fn invalid_message_type(tag: u8) -> ClientError {
    Violation::UnknownMessage(tag).into()
}

/// A client framing error as the client is told.
pub fn frame_error(e: FrameError) -> ClientError {
    Violation::from(e).into()
}

mod extended;
#[cfg(test)]
mod tests;
