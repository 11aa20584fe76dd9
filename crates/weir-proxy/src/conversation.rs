//! Where one server connection stands in its exchange with the client holding it:
//! answers still owed, an extended-protocol batch left open, a CopyData message half
//! relayed, the last transaction status. Pure logic over frames, no sockets: the relay
//! feeds it what it forwards and receives, and asks it whether the server may go back.

use bytes::BytesMut;
use weir_wire::backend::{parse_ready_for_query, ErrorFields};
use weir_wire::frame::{FrameError, Header, HEADER_LEN};
use weir_wire::scan::StreamScanner;

use crate::error::ClientError;
use crate::statement::{classify_client_frame, FrameCheck};

/// What scanning the client's buffered bytes decided.
#[derive(Debug)]
pub enum ClientScan {
    /// Forward this many bytes; nothing special follows.
    Forward(usize),
    /// Forward `forward` bytes, then replace the next `skip` bytes with `with`.
    Replace {
        /// Bytes to forward first.
        forward: usize,
        /// Length of the refused frame.
        skip: usize,
        /// What to send in its place.
        with: BytesMut,
    },
    /// Forward `forward` bytes, then the client said Terminate.
    Terminate {
        /// Bytes to forward first.
        forward: usize,
    },
}

/// The exchange on one checked-out server connection; a fresh one per checkout.
#[derive(Debug)]
pub struct Conversation {
    /// Queries, FunctionCalls and Syncs sent whose ReadyForQuery has not come back.
    pending: u32,
    /// Extended-protocol messages sent since the last Sync: the server is mid-sequence.
    unsynced: bool,
    /// Transaction status of the last ReadyForQuery.
    status: u8,
    /// Bytes of a client CopyData message still to stream through.
    copy_remaining: usize,
    /// The unnamed statement was parsed on this server connection.
    unnamed_parsed: bool,
    /// The server reported a FATAL error: it is about to close.
    server_fatal: bool,
    /// Frame boundaries of the server's output.
    scanner: StreamScanner,
}

impl Default for Conversation {
    fn default() -> Self {
        Conversation {
            pending: 0,
            unsynced: false,
            status: b'I',
            copy_remaining: 0,
            unnamed_parsed: false,
            server_fatal: false,
            scanner: StreamScanner::new(),
        }
    }
}

impl Conversation {
    /// Walks the client's buffered frames, counting what the server will answer, until
    /// an incomplete frame or one that needs special handling. In transaction mode,
    /// frames that cannot be pooled safely are refused or replaced.
    ///
    /// # Errors
    /// A bad length or an unknown message type (protocol violation), or a refused frame.
    pub fn scan_client(
        &mut self,
        buf: &[u8],
        max_message: usize,
        transaction_mode: bool,
    ) -> Result<ClientScan, ClientError> {
        let mut pos = 0;
        loop {
            if self.copy_remaining > 0 {
                let n = self.copy_remaining.min(buf.len() - pos);
                pos += n;
                self.copy_remaining -= n;
                if self.copy_remaining > 0 {
                    return Ok(ClientScan::Forward(pos));
                }
            }
            let rest = &buf[pos..];
            let header = match Header::peek(rest, max_message) {
                Ok(Some(h)) => h,
                Ok(None) => return Ok(ClientScan::Forward(pos)),
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
                return Ok(ClientScan::Forward(pos));
            };
            match header.tag {
                b'Q' | b'F' => self.pending += 1,
                b'S' => {
                    self.pending += 1;
                    self.unsynced = false;
                }
                b'X' => return Ok(ClientScan::Terminate { forward: pos }),
                b'c' | b'f' => {}
                b'P' | b'B' | b'E' | b'D' | b'C' | b'H' => self.unsynced = true,
                tag => return Err(invalid_message_type(tag)),
            }
            if transaction_mode {
                let body = &frame[HEADER_LEN..];
                match classify_client_frame(header.tag, body, &mut self.unnamed_parsed) {
                    FrameCheck::Pass => {}
                    FrameCheck::Refuse(e) => return Err(e),
                    FrameCheck::Replace(with) => {
                        return Ok(ClientScan::Replace {
                            forward: pos,
                            skip: frame_len,
                            with,
                        })
                    }
                }
            }
            pos += frame_len;
        }
    }

    /// Scans server output (unrelayed bytes, oldest first), noting ReadyForQuery and
    /// FATAL errors. Returns how many bytes may be relayed now and how many
    /// ReadyForQuery messages they hold.
    ///
    /// # Errors
    /// A malformed frame length from the server.
    pub fn scan_server(
        &mut self,
        buf: &[u8],
        max_message: usize,
    ) -> Result<(usize, u64), FrameError> {
        let mut pending = self.pending;
        let mut status = self.status;
        let mut fatal = false;
        let mut answered = 0u64;
        let n = self.scanner.scan(
            buf,
            max_message,
            |t| matches!(t, b'Z' | b'E'),
            |tag, body| {
                if tag == b'Z' {
                    pending = pending.saturating_sub(1);
                    answered += 1;
                    status = parse_ready_for_query(body).unwrap_or(b'E');
                } else if ErrorFields::parse(body).is_fatal() {
                    fatal = true;
                }
            },
        )?;
        self.pending = pending;
        self.status = status;
        self.server_fatal |= fatal;
        Ok((n, answered))
    }

    /// Everything the client sent is answered, no batch or COPY is open, the last
    /// status was idle and the server output is at a frame boundary: the connection is
    /// in a known idle state (the caller also checks that all output was relayed).
    pub fn is_idle(&self) -> bool {
        self.between_transactions() && self.scanner.at_boundary() && !self.server_fatal
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

    /// No answer owed (the client's last Query or Sync was answered).
    pub fn all_answered(&self) -> bool {
        self.pending == 0
    }

    /// The server said it is closing (FATAL): the client already has the reason.
    pub fn server_fatal(&self) -> bool {
        self.server_fatal
    }
}

/// PostgreSQL's own wording for an unknown message type.
pub fn invalid_message_type(tag: u8) -> ClientError {
    ClientError::Protocol(format!("invalid frontend message type {tag}"))
}

/// A client framing error as the client is told.
pub fn frame_error(e: FrameError) -> ClientError {
    match e {
        FrameError::LengthTooSmall { tag, len } => ClientError::Protocol(format!(
            "invalid message length {len} for message type {tag:?}"
        )),
        FrameError::TooLarge { tag, len, max } => ClientError::Protocol(format!(
            "message of type {tag:?} is {len} bytes, over max_message_size ({max} bytes)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use weir_wire::build::{put_frame, put_query, put_ready_for_query};

    fn frames(parts: &[(u8, &[u8])]) -> BytesMut {
        let mut b = BytesMut::new();
        for (tag, body) in parts {
            put_frame(&mut b, *tag, |x| x.extend_from_slice(body));
        }
        b
    }

    fn ready(status: u8) -> BytesMut {
        let mut b = BytesMut::new();
        put_ready_for_query(&mut b, status);
        b
    }

    #[test]
    fn released_only_after_the_last_sync_is_answered() {
        let mut c = Conversation::default();
        let group: &[(u8, &[u8])] = &[
            (b'P', b"\0select 1\0\0\0"),
            (b'B', b"\0\0\0\0\0\0\0\0"),
            (b'E', b"\0\0\0\0\0"),
            (b'S', b""),
        ];
        let mut batch = frames(group);
        batch.extend_from_slice(&frames(group));
        let ClientScan::Forward(n) = c.scan_client(&batch, 1 << 20, true).unwrap() else {
            panic!()
        };
        assert_eq!(n, batch.len());
        assert!(!c.is_idle());
        c.scan_server(&ready(b'I'), 1 << 20).unwrap();
        assert!(!c.is_idle(), "one Sync still owed");
        let (n, answered) = c.scan_server(&ready(b'I'), 1 << 20).unwrap();
        assert_eq!((n, answered), (6, 1));
        assert!(c.is_idle());
    }

    #[test]
    fn flush_without_sync_keeps_the_server() {
        let mut c = Conversation::default();
        let batch = frames(&[(b'P', b"\0select 1\0\0\0"), (b'H', b"")]);
        c.scan_client(&batch, 1 << 20, true).unwrap();
        assert!(c.all_answered());
        assert!(!c.is_idle(), "mid-sequence until a Sync");
        c.scan_client(&frames(&[(b'S', b"")]), 1 << 20, true)
            .unwrap();
        c.scan_server(&ready(b'I'), 1 << 20).unwrap();
        assert!(c.is_idle());
    }

    #[test]
    fn transaction_block_and_copy_streaming() {
        let mut c = Conversation::default();
        let mut q = BytesMut::new();
        put_query(&mut q, "copy t from stdin");
        c.scan_client(&q, 1 << 20, true).unwrap();
        // A CopyData frame arriving in two pieces streams through.
        let data = frames(&[(b'd', &[b'x'; 100])]);
        let ClientScan::Forward(n) = c.scan_client(&data[..50], 1 << 20, true).unwrap() else {
            panic!()
        };
        assert_eq!(n, 50);
        assert!(!c.between_transactions(), "half a CopyData relayed");
        let ClientScan::Forward(n) = c.scan_client(&data[50..], 1 << 20, true).unwrap() else {
            panic!()
        };
        assert_eq!(n, data.len() - 50);
        c.scan_server(&ready(b'T'), 1 << 20).unwrap();
        assert!(c.idle_in_transaction());
        assert!(!c.is_idle());
    }

    #[test]
    fn fatal_error_is_never_idle_and_bad_input_is_refused() {
        let mut c = Conversation::default();
        let mut err = BytesMut::new();
        weir_wire::build::put_simple_error(
            &mut err,
            weir_wire::build::Severity::Fatal,
            "57P01",
            "terminating",
        );
        c.scan_server(&err, 1 << 20).unwrap();
        assert!(c.server_fatal());
        assert!(!c.is_idle());
        assert!(matches!(
            Conversation::default().scan_client(&frames(&[(b'y', b"")]), 1 << 20, false),
            Err(ClientError::Protocol(_))
        ));
        assert!(Conversation::default()
            .scan_client(&[b'Q', 0, 0, 0, 2], 1 << 20, false)
            .is_err());
    }
}
