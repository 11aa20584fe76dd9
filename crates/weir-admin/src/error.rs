//! Errors that end an admin console session.

/// Why a console session ended abnormally.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// Reading from or writing to the client failed.
    #[error("console i/o: {0}")]
    Io(#[from] std::io::Error),
    /// The client sent bytes that are not a valid message stream.
    #[error("console protocol: {0}")]
    Frame(#[from] weir_wire::FrameError),
    /// The client sent a message the console does not accept (it was told why).
    #[error("console protocol: unsupported message type {0:?}")]
    Unsupported(char),
}
