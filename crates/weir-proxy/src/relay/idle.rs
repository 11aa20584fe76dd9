//! What a client that holds no server connection has sent: a message that needs one,
//! Terminate, messages PostgreSQL itself would ignore there, or a Parse the proxy can
//! answer itself.

use std::sync::atomic::Ordering::Relaxed;

use bytes::Buf;
use weir_wire::build::{put_frame, put_ready_for_query, Severity};
use weir_wire::frame::{read_cstr, Header, HEADER_LEN};

use super::Relay;
use crate::conversation::{frame_error, invalid_message_type};
use crate::error::ClientError;
use crate::features;
use crate::proxy_set;

/// What an idle client's buffered bytes need.
pub(super) enum Idle {
    /// A message that needs a server connection.
    NeedServer,
    /// Terminate: the client is leaving.
    Terminate,
    /// Nothing (more) to act on yet: read more.
    NeedMore,
}

impl Relay {
    /// Decides what an idle client's buffered bytes need, dropping the messages that
    /// PostgreSQL itself ignores outside a COPY or an extended-protocol batch: CopyData,
    /// CopyDone and CopyFail arriving after a COPY already failed (the server answered
    /// and was released), and a lone Flush. Checking out a server for them would hold
    /// it forever, since no answer ever comes to release it (pgbouncer#1471).
    pub(super) fn idle_decision(&mut self) -> Result<Idle, ClientError> {
        loop {
            if self.discard_remaining > 0 {
                let n = self.discard_remaining.min(self.cbuf.len());
                self.cbuf.advance(n);
                self.discard_remaining -= n;
                if self.discard_remaining > 0 {
                    return Ok(Idle::NeedMore);
                }
            }
            let Some(&tag) = self.cbuf.first() else {
                return Ok(Idle::NeedMore);
            };
            if self.skip_to_sync && tag != b'X' {
                // After a refused checkout, PostgreSQL-style: drop until Sync.
                let header = match Header::peek(&self.cbuf, self.max_message) {
                    Ok(Some(h)) => h,
                    Ok(None) => return Ok(Idle::NeedMore),
                    Err(e) => return Err(frame_error(e)),
                };
                if tag == b'S' {
                    self.skip_to_sync = false;
                    put_ready_for_query(&mut self.to_client, b'I');
                }
                let n = header.frame_len().min(self.cbuf.len());
                self.cbuf.advance(n);
                self.discard_remaining = header.frame_len() - n;
                continue;
            }
            match tag {
                b'X' => return Ok(Idle::Terminate),
                b'd' | b'c' | b'f' | b'H' => {}
                b'P' if self.answer_known_parse() => continue,
                b'Q' if self.answer_proxy_set()? => continue,
                b'Q' | b'P' | b'B' | b'E' | b'D' | b'C' | b'S' | b'F' => {
                    // Refuse a bad length before it costs a server connection.
                    Header::peek(&self.cbuf, self.max_message).map_err(frame_error)?;
                    return Ok(Idle::NeedServer);
                }
                other => return Err(invalid_message_type(other)),
            }
            let header = match Header::peek(&self.cbuf, self.max_message) {
                Ok(Some(h)) => h,
                Ok(None) => return Ok(Idle::NeedMore),
                Err(e) => return Err(frame_error(e)),
            };
            let frame_len = header.frame_len();
            if tag == b'd' {
                let n = frame_len.min(self.cbuf.len());
                self.cbuf.advance(n);
                self.discard_remaining = frame_len - n;
            } else if self.cbuf.len() >= frame_len {
                self.cbuf.advance(frame_len);
            } else {
                return Ok(Idle::NeedMore);
            }
            tracing::debug!(tag = %(tag as char), "dropped a message that needs no server");
        }
    }

    /// `SET pgweir.priority` or `pgweir.dedup` between transactions: the proxy's own
    /// settings ([`crate::proxy_set`]), answered here (CommandComplete `SET`,
    /// ReadyForQuery) without a server. Returns true if it answered.
    ///
    /// # Errors
    /// A bad frame length.
    fn answer_proxy_set(&mut self) -> Result<bool, ClientError> {
        let Some(header) = Header::peek(&self.cbuf, self.max_message).map_err(frame_error)? else {
            return Ok(false);
        };
        let len = header.frame_len();
        let Some(frame) = self.cbuf.get(HEADER_LEN..len) else {
            return Ok(false);
        };
        // Cheap first: this runs before every transaction's first query.
        if !proxy_set::looks_like(frame) {
            return Ok(false);
        }
        let Some((setting, value)) =
            weir_wire::frontend::query_text(frame).and_then(proxy_set::parse)
        else {
            return Ok(false);
        };
        match proxy_set::apply(&mut self.session, setting, &value) {
            Ok(()) => put_frame(&mut self.to_client, b'C', |b| {
                bytes::BufMut::put_slice(b, b"SET\0")
            }),
            Err(e) => e.put(&mut self.to_client, Severity::Error),
        }
        put_ready_for_query(&mut self.to_client, b'I');
        self.cbuf.advance(len);
        Ok(true)
    }

    /// The pool refused this client a server connection for its next request (breaker
    /// open, shed, the server down or refusing the login): the request fails with that
    /// error as an ERROR, like any failed statement, and the session goes on, so a
    /// client retries on the connection it has instead of logging in again. A Query or
    /// FunctionCall is dropped and answered with ReadyForQuery; an extended-protocol
    /// batch is skipped up to its Sync.
    pub(super) async fn refuse_request(&mut self, e: &ClientError) -> Result<(), ClientError> {
        self.handle
            .info()
            .set_state(crate::registry::ClientState::Idle);
        tracing::debug!(sqlstate = e.sqlstate(), error = %e, "request refused at checkout");
        e.put(&mut self.to_client, Severity::Error);
        let frame_len = Header::peek(&self.cbuf, self.max_message)
            .map_err(frame_error)?
            .map(|h| h.frame_len());
        match (self.cbuf.first(), frame_len) {
            (Some(b'Q' | b'F'), Some(len)) => {
                let n = len.min(self.cbuf.len());
                self.cbuf.advance(n);
                self.discard_remaining = len - n;
                put_ready_for_query(&mut self.to_client, b'I');
            }
            _ => self.skip_to_sync = true,
        }
        self.client.proxy_output(&self.to_client).await?;
        self.to_client.clear();
        Ok(())
    }

    /// Transaction mode, outside a transaction: a named Parse followed by Sync or Flush
    /// of a statement some server already parsed without error is answered here
    /// (ParseComplete, then ReadyForQuery 'I' for a Sync) and parsed lazily on whichever
    /// server the client then uses it. A libpq client that prepares synchronously
    /// (pgbench -M prepared) would otherwise wait for a server held by clients its own
    /// blocked thread drives, and a small pool deadlocks (pitfall 19). Returns true if
    /// it answered and consumed both messages.
    fn answer_known_parse(&mut self) -> bool {
        if !self.transaction_mode || self.config.max_prepared_statements == 0 {
            return false;
        }
        let Ok(Some(parse)) = Header::peek(&self.cbuf, self.max_message) else {
            return false;
        };
        let parse_len = parse.frame_len();
        let Some(next) = self.cbuf.get(parse_len..) else {
            return false;
        };
        let Ok(Some(after)) = Header::peek(next, self.max_message) else {
            return false;
        };
        if !matches!(after.tag, b'S' | b'H') || after.frame_len() != HEADER_LEN {
            return false;
        }
        let Some((name, body)) = read_cstr(&self.cbuf[HEADER_LEN..parse_len]) else {
            return false;
        };
        if name.is_empty() || self.session.statements.get(name).is_some() {
            // The unnamed statement lives on a server; a taken name is the server's
            // error to raise (42P05), as PostgreSQL words it.
            return false;
        }
        let query = read_cstr(body).map(|(q, _)| q).unwrap_or_default();
        if !features::effects(query).is_none() {
            return false;
        }
        let Some(statement) = self.shared.statements.parsed(body) else {
            return false;
        };
        self.session.statements.insert(name, statement);
        self.entry.pool.metrics().prepare_hits.fetch_add(1, Relaxed);
        put_frame(&mut self.to_client, b'1', |_| {});
        if after.tag == b'S' {
            put_ready_for_query(&mut self.to_client, b'I');
        }
        self.cbuf.advance(parse_len + HEADER_LEN);
        true
    }
}
