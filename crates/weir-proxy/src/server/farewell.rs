//! Closing a server connection so that its share of `max_db_connections` and
//! `max_user_connections` outlives the backend. The permits are given back when
//! PostgreSQL closes its end, which a backend does only after it has left
//! `pg_stat_activity` and freed its `max_connections` slot. Given back at the drop, a
//! connect waiting for the budget could log in while the closed backend still counts
//! on the server, and a limit set to the server's would briefly be exceeded.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::ServerConn;
use crate::stream::Stream;

/// Longest a closed connection keeps its permits waiting for the backend to exit; a
/// backend busy with a query exits only when the query ends, and pgweir does not wait
/// for that.
const EXIT_WAIT: Duration = Duration::from_secs(2);

impl Drop for ServerConn {
    fn drop(&mut self) {
        if self.db_permit.is_none() && self.user_permit.is_none() {
            return;
        }
        // Outside a runtime (shutdown, tests) the permits go with the connection.
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let stream = std::mem::replace(&mut self.stream, Stream::Closed);
        if matches!(stream, Stream::Closed) {
            return;
        }
        let permits = (self.db_permit.take(), self.user_permit.take());
        // Only a connection known idle can take a Terminate: in any other state it
        // could land inside a half-written message. Those get the end of the stream.
        let idle = self.clean;
        rt.spawn(async move {
            let _ = tokio::time::timeout(EXIT_WAIT, see_off(stream, idle)).await;
            drop(permits);
        });
    }
}

/// Says goodbye and waits for the server to close its end (or fail).
async fn see_off(mut stream: Stream, idle: bool) {
    if idle {
        let mut bye = bytes::BytesMut::with_capacity(5);
        weir_wire::build::put_terminate(&mut bye);
        let _ = stream.write_all(&bye).await;
    }
    let _ = stream.shutdown().await;
    let mut scratch = [0u8; 512];
    while let Ok(n) = stream.read(&mut scratch).await {
        if n == 0 {
            return;
        }
    }
}
