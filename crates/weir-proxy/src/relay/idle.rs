//! What a client that holds no server connection has sent: a message that needs one,
//! Terminate, or messages PostgreSQL itself would ignore there.

use bytes::Buf;
use weir_wire::frame::Header;

use super::Relay;
use crate::conversation::{frame_error, invalid_message_type};
use crate::error::ClientError;

/// What an idle client's buffered bytes need.
pub(super) enum Idle {
    /// A message that needs a server connection.
    NeedServer,
    /// Terminate: the client is leaving.
    Terminate,
    /// Nothing (more) to act on yet: read more.
    NeedMore,
}

impl Relay<'_> {
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
            match tag {
                b'X' => return Ok(Idle::Terminate),
                b'd' | b'c' | b'f' | b'H' => {}
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
}
