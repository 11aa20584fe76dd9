//! The relay's side of single-flight dedup: a client about to check out a server for a
//! shareable Query either follows a flight already running (and is answered from it)
//! or leads a new one (its sink copies the answer).

use std::sync::atomic::Ordering::Relaxed;

use weir_wire::frame::{Header, HEADER_LEN};

use super::Relay;
use crate::dedup::{classify, Outcome, Role};
use crate::error::ClientError;
use crate::registry::ClientState;

impl Relay<'_> {
    /// Returns true if the client's request was answered from another client's
    /// execution; false if it needs a server (possibly now leading a flight).
    pub(super) async fn follow_or_lead(&mut self) -> Result<bool, ClientError> {
        let Some(key) = self.dedup_key() else {
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
        self.info.set_state(ClientState::Waiting);
        let outcome = tokio::select! {
            o = crate::dedup::outcome(rx) => o,
            stop = self.info.stop.stopped(true) => return Err(stop.into()),
        };
        self.info.set_state(ClientState::Idle);
        match outcome {
            Outcome::Answer(answer) => {
                // The key covered the whole buffer: exactly this one Query.
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

    /// The flight key of the buffered request, if it is exactly one shareable Query:
    /// the pool (database, user), the client's settings, and the query text.
    fn dedup_key(&self) -> Option<Box<[u8]>> {
        let header = Header::peek(&self.cbuf, self.max_message).ok()??;
        if header.tag != b'Q' || header.frame_len() != self.cbuf.len() {
            return None;
        }
        let text = self.cbuf.get(HEADER_LEN..self.cbuf.len().checked_sub(1)?)?;
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
        key.extend_from_slice(text);
        Some(key.into_boxed_slice())
    }
}
