//! Reading one whole frame from a socket, for the paths that go message by message:
//! client login, server login, the session-mode reset query (not the relay loop, which
//! manages its buffers itself).

use crate::stream::Stream;
use bytes::BytesMut;
use tokio::io::AsyncReadExt;
use weir_wire::frame::{split_frame, FrameError};
use weir_wire::Frame;

use crate::error::ClientError;

/// Why a frame could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadFrameError {
    /// The socket failed or closed (EOF is `UnexpectedEof`).
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// The peer sent a bad length.
    #[error(transparent)]
    Frame(#[from] FrameError),
}

impl From<ReadFrameError> for ClientError {
    fn from(e: ReadFrameError) -> Self {
        match e {
            ReadFrameError::Io(e) => ClientError::Io(e),
            ReadFrameError::Frame(e) => crate::error::Violation::from(e).into(),
        }
    }
}

/// Reads until one complete tagged frame of at most `max_len` bytes is buffered and splits it off.
///
/// # Errors
/// EOF, I/O, or a bad length.
pub async fn read_frame(
    stream: &mut Stream,
    rbuf: &mut BytesMut,
    max_len: usize,
) -> Result<Frame, ReadFrameError> {
    loop {
        if let Some(frame) = split_frame(rbuf, max_len)? {
            return Ok(frame);
        }
        if stream.read_buf(rbuf).await? == 0 {
            return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof).into());
        }
    }
}
