//! The relay's side of single-flight dedup: a client about to check out a server for a
//! shareable request either follows a flight already running (and is answered from it)
//! or leads a new one (its sink copies the answer).
//!
//! A request is a simple-protocol Query, or an extended-protocol batch
//! `[Parse("")] Bind [Describe] Execute Sync` (unnamed portal, all rows) whose statement is
//! shareable: the key holds the statement's text and parameter types, and the Bind's
//! parameter values, their formats and the result formats, so different values never
//! share. A follower of a batch with an unnamed Parse takes the statement as its own
//! unnamed one, as if its Parse had run.

use std::sync::atomic::Ordering::Relaxed;

use bytes::BytesMut;
use weir_wire::frame::{read_cstr, Header, HEADER_LEN};

use super::Relay;
use crate::dedup::{classify, Outcome, Role};
use crate::error::ClientError;
use crate::registry::ClientState;

impl Relay {
    /// Returns true if the client's request was answered from another client's
    /// execution; false if it needs a server (possibly now leading a flight).
    pub(super) async fn follow_or_lead(&mut self) -> Result<bool, ClientError> {
        let Some((key, unnamed)) = self.dedup_key() else {
            return Ok(false);
        };
        let max_bytes = self.config.dedup_max_bytes as usize;
        let rx = match self.shared.dedup.join(key, max_bytes) {
            Role::Leader(leader) => {
                self.client.lead(leader);
                return Ok(false);
            }
            Role::Follower(rx) => rx,
        };
        self.handle.info().set_state(ClientState::Waiting);
        let outcome = tokio::select! {
            o = crate::dedup::outcome(rx) => o,
            stop = self.handle.info().stop.stopped(true) => return Err(stop.into()),
        };
        self.handle.info().set_state(ClientState::Idle);
        match outcome {
            Outcome::Answer(answer) => {
                // The key covered the whole buffer: exactly this one request.
                if let Some(body) = unnamed.filter(|_| answer.first() == Some(&b'1')) {
                    // Its Parse "ran" (ParseComplete): the statement is its unnamed one.
                    self.session.unnamed = Some(BytesMut::from(&body[..]));
                    self.session.unnamed_mapped = None;
                }
                self.cbuf.clear();
                self.client.proxy_output(&answer).await?;
                let d = &self.shared.dedup;
                d.shared.fetch_add(1, Relaxed);
                d.bytes_saved.fetch_add(answer.len() as u64, Relaxed);
                Ok(true)
            }
            Outcome::RunYourself => Ok(false),
        }
    }

    /// The flight key of the buffered request, if it is exactly one shareable Query or
    /// extended-protocol batch (see the module docs): the pool (database, user), the
    /// client's settings, and the request. With it, the body of the batch's unnamed
    /// Parse, if it has one.
    fn dedup_key(&self) -> Option<(FlightKey, Option<Box<[u8]>>)> {
        // With standard_conforming_strings off a backslash inside '...' changes where
        // strings end; the classification lexes standard strings, so share nothing.
        if self.session.params.backslash_quotes() {
            return None;
        }
        let header = Header::peek(&self.cbuf, self.max_message).ok()??;
        let (request, unnamed) = match header.tag {
            b'Q' if header.frame_len() == self.cbuf.len() => {
                let text = self.cbuf.get(HEADER_LEN..self.cbuf.len().checked_sub(1)?)?;
                (Request::Query(text), None)
            }
            b'P' | b'B' => {
                let batch = self.extended_batch()?;
                (Request::Batch(batch), batch.parse.map(Box::from))
            }
            _ => return None,
        };
        let text = match request {
            Request::Query(text) => text,
            Request::Batch(b) => read_cstr(b.statement)?.0,
        };
        let extra = &self.config.dedup_functions;
        let allowed = |name: &str| {
            classify::DEFAULT_ALLOWED.contains(&name)
                || extra.iter().any(|f| f.eq_ignore_ascii_case(name))
        };
        if !classify::shareable(text, &allowed) {
            return None;
        }
        let mut key = Vec::with_capacity(text.len() + 256);
        for part in [self.entry.database.as_bytes(), self.entry.user.as_bytes()] {
            key.extend_from_slice(part);
            key.push(0);
        }
        self.session.params.fingerprint(&mut key);
        key.push(0);
        match request {
            Request::Query(text) => key.extend_from_slice(text),
            Request::Batch(b) => {
                // What the answer depends on besides the statement: whether it has a
                // ParseComplete and a RowDescription; then values and formats.
                key.extend_from_slice(&[b'E', u8::from(b.parse.is_some()), b.describe]);
                key.extend_from_slice(b.statement);
                key.extend_from_slice(b.bind_tail);
            }
        }
        Some((key.into_boxed_slice(), unnamed))
    }

    /// The buffered messages as `[Parse("")] Bind("", s) [Describe("")] Execute("", 0)
    /// Sync` and nothing else, with the statement's Parse body: the batch's own Parse, or
    /// the client's named statement `s`.
    fn extended_batch(&self) -> Option<Batch<'_>> {
        // At most Parse, Bind, Describe, Execute, Sync.
        let mut frames: [(u8, &[u8]); 5] = [(0, &[]); 5];
        let mut n = 0;
        let mut rest = &self.cbuf[..];
        while !rest.is_empty() {
            let h = Header::peek(rest, self.max_message).ok()??;
            let frame = rest.get(..h.frame_len())?;
            *frames.get_mut(n)? = (h.tag, frame.get(HEADER_LEN..)?);
            n += 1;
            rest = &rest[h.frame_len()..];
        }
        let mut frames = frames[..n].iter().copied().peekable();
        let mut batch = Batch {
            parse: None,
            statement: &[],
            bind_tail: &[],
            describe: 0,
        };
        if let Some((_, body)) = frames.next_if(|f| f.0 == b'P') {
            let (name, body) = read_cstr(body)?;
            if !name.is_empty() {
                return None;
            }
            batch.parse = Some(body);
        }
        let (_, bind) = frames.next_if(|f| f.0 == b'B')?;
        let (portal, after) = read_cstr(bind)?;
        let (statement, tail) = read_cstr(after)?;
        if !portal.is_empty() {
            return None;
        }
        batch.bind_tail = tail;
        match (batch.parse, statement.is_empty()) {
            (Some(body), true) => batch.statement = body,
            (None, false) => batch.statement = &self.session.statements.get(statement)?.body,
            _ => return None,
        }
        // Describe of the unnamed portal or statement: part of the key (its answer is).
        batch.describe = frames
            .next_if(|f| f.0 == b'D' && matches!(f.1, b"P\0" | b"S\0"))
            .map_or(0, |f| f.1[0]);
        // Execute of the unnamed portal, all rows: a row limit leaves a portal open.
        frames.next_if(|f| *f == (b'E', b"\0\0\0\0\0"))?;
        frames.next_if(|f| f.0 == b'S' && f.1.is_empty())?;
        frames.next().is_none().then_some(batch)
    }
}

/// A flight's key: what must be equal for two requests to share one answer.
type FlightKey = Box<[u8]>;

/// A request dedup may share.
#[derive(Clone, Copy)]
enum Request<'a> {
    /// A simple Query's text.
    Query(&'a [u8]),
    /// An extended-protocol batch.
    Batch(Batch<'a>),
}

/// A shareable extended-protocol batch's parts.
#[derive(Clone, Copy)]
struct Batch<'a> {
    /// Its unnamed Parse's body (text, NUL, parameter types), if it has one.
    parse: Option<&'a [u8]>,
    /// The Parse body of the statement it runs.
    statement: &'a [u8],
    /// The Bind after the portal and statement names: parameter formats and values,
    /// result formats.
    bind_tail: &'a [u8],
    /// What it describes: `P` the portal, `S` the statement, 0 nothing.
    describe: u8,
}
