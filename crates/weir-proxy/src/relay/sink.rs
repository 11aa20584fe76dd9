//! The client's side of the relay: its socket, and the one point every byte bound for
//! the client passes (the server's output, and answers the proxy gives itself). A
//! single-flight leader hooks in here to copy a result to its followers.

use crate::stream::Stream;
use tokio::io::AsyncWriteExt;

use crate::dedup::Leader;

/// The client's socket, written only through [`Sink::server_output`] and
/// [`Sink::proxy_output`].
pub(super) struct Sink {
    stream: Stream,
    /// This client leads a dedup flight: the server's answer is copied for followers.
    tee: Option<Box<Leader>>,
}

impl Sink {
    pub(super) fn new(stream: Stream) -> Self {
        Sink { stream, tee: None }
    }

    /// Copies the server's output from now on into `leader`'s flight.
    pub(super) fn lead(&mut self, leader: Leader) {
        self.tee = Some(Box::new(leader));
    }

    /// Whether this client leads a flight now.
    pub(super) fn leading(&self) -> bool {
        self.tee.is_some()
    }

    /// Ends the flight: its answer is published if `complete`, else its followers are
    /// told to run the request themselves.
    pub(super) fn end_flight(&mut self, complete: bool) {
        if let Some(leader) = self.tee.take() {
            if complete {
                leader.finish();
            }
        }
    }

    /// A plain socket (TCP or Unix), which can park; TLS state cannot leave the task.
    pub(super) fn is_plain(&self) -> bool {
        matches!(self.stream, Stream::Tcp(_) | Stream::Unix(_))
    }

    /// The socket, for reading the client's messages.
    pub(super) fn stream(&mut self) -> &mut Stream {
        &mut self.stream
    }

    /// The socket, for parking.
    pub(super) fn into_stream(self) -> Stream {
        self.stream
    }

    /// Relays bytes that came from the server (possibly with the proxy's own answers
    /// spliced in, in protocol order).
    pub(super) async fn server_output(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        if let Some(tee) = self.tee.as_mut() {
            tee.record(bytes);
        }
        self.stream.write_all(bytes).await
    }

    /// Sends answers the proxy gave without a server (a refused request, a known
    /// Parse, `SET pgweir.priority`).
    pub(super) async fn proxy_output(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes).await
    }
}
