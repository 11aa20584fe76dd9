//! Small socket helpers shared by login paths (not the relay loop, which manages its buffers itself).

use bytes::BytesMut;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use weir_wire::frame::split_frame;
use weir_wire::Frame;

use crate::error::ClientError;

/// Reads until one complete tagged frame of at most `max_len` bytes is buffered and splits it off.
///
/// # Errors
/// EOF, I/O, or a bad length (protocol violation).
pub async fn read_frame(
    stream: &mut TcpStream,
    rbuf: &mut BytesMut,
    max_len: usize,
) -> Result<Frame, ClientError> {
    loop {
        if let Some(frame) =
            split_frame(rbuf, max_len).map_err(|e| ClientError::Protocol(e.to_string()))?
        {
            return Ok(frame);
        }
        if stream.read_buf(rbuf).await? == 0 {
            return Err(ClientError::Io(std::io::ErrorKind::UnexpectedEof.into()));
        }
    }
}
