//! Tagged message framing: `tag: u8, len: i32 (self-inclusive), body`.
//!
//! Check, then split: nothing is consumed until a whole frame is buffered, and
//! "incomplete" (`Ok(None)`) is the normal answer when more bytes are needed. Every
//! length is untrusted: below 4 or above the configured cap is an error before any
//! allocation happens.

use bytes::{Bytes, BytesMut};

/// Length of a tagged message header: one tag byte plus the 4-byte length.
pub const HEADER_LEN: usize = 5;

/// Most [`split_frame`] reserves ahead for a frame that is still arriving.
const RESERVE_STEP: usize = 64 * 1024;

/// PostgreSQL's own cap on a message (`PQ_LARGE_MESSAGE_LIMIT`, MaxAllocSize - 1).
pub const DEFAULT_MAX_MESSAGE_LEN: usize = 0x3fff_ffff;

/// Why a byte stream cannot be framed; the connection must be closed after any of these.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The length field is smaller than the 4 bytes it occupies itself.
    #[error("invalid message length {len} for message type {tag:?}")]
    LengthTooSmall {
        /// Message type byte, as a char for the error text.
        tag: char,
        /// The length field as sent.
        len: i32,
    },
    /// The length field exceeds the configured maximum.
    #[error("message of type {tag:?} is {len} bytes, over the limit of {max} bytes")]
    TooLarge {
        /// Message type byte, as a char for the error text.
        tag: char,
        /// The length field as sent.
        len: usize,
        /// The configured cap.
        max: usize,
    },
}

/// A peeked message header: tag and total frame length (tag byte included).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Message type byte.
    pub tag: u8,
    /// Length of the body after the 4-byte length field.
    pub body_len: usize,
}

impl Header {
    /// Reads the header at the start of `buf`; `Ok(None)` if fewer than 5 bytes are there.
    ///
    /// # Errors
    /// A length below 4 or above `max_len`.
    #[inline]
    pub fn peek(buf: &[u8], max_len: usize) -> Result<Option<Header>, FrameError> {
        let Some(head) = buf.get(..HEADER_LEN) else {
            return Ok(None);
        };
        let tag = head[0];
        let len = i32::from_be_bytes([head[1], head[2], head[3], head[4]]);
        if len < 4 {
            return Err(FrameError::LengthTooSmall {
                tag: tag as char,
                len,
            });
        }
        let len = len as usize;
        if len > max_len {
            return Err(FrameError::TooLarge {
                tag: tag as char,
                len,
                max: max_len,
            });
        }
        Ok(Some(Header {
            tag,
            body_len: len - 4,
        }))
    }

    /// Total length of the frame: tag, length field and body.
    #[inline]
    pub fn frame_len(&self) -> usize {
        1 + 4 + self.body_len
    }
}

/// One complete tagged message, sharing the connection's read buffer (zero copy).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// The whole frame: tag, length and body.
    pub bytes: Bytes,
}

impl Frame {
    /// Message type byte.
    #[inline]
    pub fn tag(&self) -> u8 {
        self.bytes[0]
    }

    /// The body after the length field.
    #[inline]
    pub fn body(&self) -> &[u8] {
        &self.bytes[HEADER_LEN..]
    }
}

/// Splits one complete frame off the front of `buf`, or returns `Ok(None)` if it is not all there yet.
///
/// # Errors
/// See [`Header::peek`].
#[inline]
pub fn split_frame(buf: &mut BytesMut, max_len: usize) -> Result<Option<Frame>, FrameError> {
    let Some(header) = Header::peek(buf, max_len)? else {
        return Ok(None);
    };
    if buf.len() < header.frame_len() {
        // Make room for the rest of the frame, but at most RESERVE_STEP at a time: a
        // 5-byte header announcing 1 GiB must not make us allocate 1 GiB up front.
        buf.reserve((header.frame_len() - buf.len()).min(RESERVE_STEP));
        return Ok(None);
    }
    Ok(Some(Frame {
        bytes: buf.split_to(header.frame_len()).freeze(),
    }))
}

/// Splits off the longest prefix of `buf` made of complete frames (one allocation-free
/// `split_to` for a whole batch, as tokio-postgres's codec does), or `Ok(None)` if not even one frame is complete.
///
/// # Errors
/// See [`Header::peek`]; frames before the bad one are not returned.
pub fn split_frames(buf: &mut BytesMut, max_len: usize) -> Result<Option<Bytes>, FrameError> {
    let mut end = 0;
    while let Some(header) = Header::peek(&buf[end..], max_len)? {
        if buf.len() - end < header.frame_len() {
            break;
        }
        end += header.frame_len();
    }
    if end == 0 {
        return Ok(None);
    }
    Ok(Some(buf.split_to(end).freeze()))
}

/// Iterates over complete frames in a byte slice (as returned by [`split_frames`]): `(tag, body)`.
///
/// Stops at the first incomplete or invalid frame.
pub fn frames(mut buf: &[u8]) -> impl Iterator<Item = (u8, &[u8])> {
    std::iter::from_fn(move || {
        let header = Header::peek(buf, usize::MAX).ok()??;
        let frame = buf.get(..header.frame_len())?;
        buf = &buf[header.frame_len()..];
        Some((header.tag, &frame[HEADER_LEN..]))
    })
}

/// Reads a NUL-terminated string at the start of `buf`: `(string bytes, rest after the NUL)`.
#[inline]
pub fn read_cstr(buf: &[u8]) -> Option<(&[u8], &[u8])> {
    // CStr finds the NUL a word at a time; a byte loop was ~3 instructions per byte of
    // every query text the relay reads.
    let nul = std::ffi::CStr::from_bytes_until_nul(buf)
        .ok()?
        .to_bytes()
        .len();
    Some((&buf[..nul], &buf[nul + 1..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::build::frame_bytes as frame;

    #[test]
    fn splits_only_complete_frames() {
        let whole = frame(b'Q', b"select 1\0");
        let mut buf = BytesMut::new();
        for (i, b) in whole.iter().enumerate() {
            assert_eq!(split_frame(&mut buf, 1024).unwrap(), None, "byte {i}");
            buf.extend_from_slice(&[*b]);
        }
        let f = split_frame(&mut buf, 1024).unwrap().unwrap();
        assert_eq!(f.tag(), b'Q');
        assert_eq!(f.body(), b"select 1\0");
        assert!(buf.is_empty());
    }

    #[test]
    fn rejects_short_and_oversized_lengths() {
        let mut buf = BytesMut::from(&[b'Q', 0, 0, 0, 3][..]);
        assert!(matches!(
            split_frame(&mut buf, 1024),
            Err(FrameError::LengthTooSmall { len: 3, .. })
        ));
        let mut buf = BytesMut::from(&[b'Q', 0x7f, 0, 0, 0][..]);
        assert!(matches!(
            split_frame(&mut buf, 1024),
            Err(FrameError::TooLarge { .. })
        ));
        let mut buf = BytesMut::from(&[b'Q', 0xff, 0xff, 0xff, 0xff][..]);
        assert!(split_frame(&mut buf, usize::MAX).is_err());
    }

    #[test]
    fn batches_complete_frames_and_keeps_the_tail() {
        let mut bytes = frame(b'D', b"row1");
        bytes.extend(frame(b'C', b"SELECT 1\0"));
        let tail = frame(b'Z', b"I");
        bytes.extend_from_slice(&tail[..3]);
        let mut buf = BytesMut::from(&bytes[..]);
        let batch = split_frames(&mut buf, 1024).unwrap().unwrap();
        let tags: Vec<u8> = frames(&batch).map(|(t, _)| t).collect();
        assert_eq!(tags, b"DC");
        assert_eq!(&buf[..], &tail[..3]);
        assert_eq!(split_frames(&mut buf, 1024).unwrap(), None);
    }

    #[test]
    fn cstr() {
        assert_eq!(read_cstr(b"ab\0cd"), Some((&b"ab"[..], &b"cd"[..])));
        assert_eq!(read_cstr(b"ab"), None);
    }
}
