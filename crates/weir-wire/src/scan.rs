//! Streaming frame scanner for relaying a byte stream without buffering whole messages.
//!
//! The proxy relays server output to the client as it arrives: a 100 MB result row must
//! not be buffered whole, yet the proxy must see every `ReadyForQuery`. The scanner walks
//! frame headers, lets uninteresting messages stream through (even half-received), and
//! stops before an interesting message until it is complete, so its body can be read.

use crate::frame::{FrameError, Header, HEADER_LEN};

/// Relay state carried between reads of one stream.
#[derive(Debug, Default, Clone)]
pub struct StreamScanner {
    /// Bytes of a passed-through message that have not arrived yet.
    remaining: usize,
}

impl StreamScanner {
    /// A scanner positioned at a frame boundary.
    pub fn new() -> Self {
        Self::default()
    }

    /// True when the stream is at a frame boundary (no message half-relayed).
    pub fn at_boundary(&self) -> bool {
        self.remaining == 0
    }

    /// Passes over the rest of a half-relayed message: returns how many of `available`
    /// bytes belong to it.
    #[inline]
    pub fn skip_remaining(&mut self, available: usize) -> usize {
        let n = self.remaining.min(available);
        self.remaining -= n;
        n
    }

    /// Notes that `n` bytes of the current message have yet to arrive.
    #[inline]
    pub fn set_remaining(&mut self, n: usize) {
        self.remaining = n;
    }

    /// Scans `buf` (the unforwarded bytes, oldest first) and returns how many bytes from its
    /// start may be forwarded now. `interesting(tag)` selects messages that are held back
    /// until complete and then shown to `on_message(tag, body)` in stream order.
    ///
    /// # Errors
    /// A frame length below 4 or above `max_len`: the stream is unusable.
    #[inline]
    pub fn scan(
        &mut self,
        buf: &[u8],
        max_len: usize,
        interesting: impl Fn(u8) -> bool,
        mut on_message: impl FnMut(u8, &[u8]),
    ) -> Result<usize, FrameError> {
        let mut pos = self.remaining.min(buf.len());
        self.remaining -= pos;
        while self.remaining == 0 {
            let rest = &buf[pos..];
            let Some(header) = Header::peek(rest, max_len)? else {
                break;
            };
            let frame_len = header.frame_len();
            if interesting(header.tag) {
                let Some(frame) = rest.get(..frame_len) else {
                    break;
                };
                on_message(header.tag, &frame[HEADER_LEN..]);
                pos += frame_len;
            } else {
                let now = frame_len.min(rest.len());
                pos += now;
                self.remaining = frame_len - now;
            }
        }
        Ok(pos)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::build::frame_bytes as frame;

    /// Feeds `stream` in chunks of `chunk` bytes; returns the forwarded bytes and seen messages.
    fn relay(stream: &[u8], chunk: usize) -> (Vec<u8>, Vec<(u8, Vec<u8>)>) {
        let mut scanner = StreamScanner::new();
        let mut pending = Vec::new();
        let mut out = Vec::new();
        let mut seen = Vec::new();
        for piece in stream.chunks(chunk) {
            pending.extend_from_slice(piece);
            let n = scanner
                .scan(
                    &pending,
                    1 << 20,
                    |t| t == b'Z',
                    |t, b| seen.push((t, b.to_vec())),
                )
                .unwrap();
            out.extend(pending.drain(..n));
        }
        (out, seen)
    }

    #[test]
    fn streams_big_rows_and_holds_ready_for_query() {
        let mut stream = frame(b'D', &[7u8; 5000]);
        stream.extend(frame(b'C', b"SELECT 1\0"));
        stream.extend(frame(b'Z', b"I"));
        stream.extend(frame(b'Z', b"T"));
        for chunk in [1, 2, 3, 5, 7, 64, 4096, 100_000] {
            let (out, seen) = relay(&stream, chunk);
            assert_eq!(out, stream, "chunk {chunk}");
            assert_eq!(seen, vec![(b'Z', b"I".to_vec()), (b'Z', b"T".to_vec())]);
        }
    }

    #[test]
    fn big_row_is_forwarded_before_it_completes() {
        let row = frame(b'D', &[1u8; 10_000]);
        let mut scanner = StreamScanner::new();
        let n = scanner
            .scan(&row[..100], 1 << 20, |_| false, |_, _| {})
            .unwrap();
        assert_eq!(n, 100);
        assert!(!scanner.at_boundary());
        let n = scanner
            .scan(&row[100..], 1 << 20, |_| false, |_, _| {})
            .unwrap();
        assert_eq!(n, row.len() - 100);
        assert!(scanner.at_boundary());
    }

    #[test]
    fn bad_length_is_an_error() {
        let mut scanner = StreamScanner::new();
        assert!(scanner
            .scan(&[b'D', 0, 0, 0, 1], 1 << 20, |_| false, |_, _| {})
            .is_err());
    }
}
