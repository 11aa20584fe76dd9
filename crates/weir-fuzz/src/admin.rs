//! The admin console as a client reaches it: a whole session (simple and extended query
//! protocol, the command parser, `SHOW` output) over an in-memory socket.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use weir_admin::backend::{
    ConfigRow, DatabaseRow, ListsRow, MemRow, PoolCounters, PoolLatency, PoolRow, QueryRow,
    Readiness, SocketRow, StateRow, StatsTotals, UserRow,
};
use weir_admin::{AdminBackend, AdminCommand, BoxFuture, Role, StatsAverager};

/// A backend with one pool and nothing running; every command succeeds at once.
struct Backend {
    averager: StatsAverager,
}

impl AdminBackend for Backend {
    fn pools(&self) -> Vec<PoolRow> {
        vec![PoolRow {
            database: "app".into(),
            user: "alice".into(),
            pool_mode: "transaction".into(),
            ..PoolRow::default()
        }]
    }
    fn clients(&self) -> Vec<SocketRow> {
        Vec::new()
    }
    fn servers(&self) -> Vec<SocketRow> {
        Vec::new()
    }
    fn databases(&self) -> Vec<DatabaseRow> {
        Vec::new()
    }
    fn users(&self) -> Vec<UserRow> {
        Vec::new()
    }
    fn config(&self) -> Vec<ConfigRow> {
        Vec::new()
    }
    fn lists(&self) -> ListsRow {
        ListsRow::default()
    }
    fn mem(&self) -> Vec<MemRow> {
        Vec::new()
    }
    fn state(&self) -> StateRow {
        StateRow::default()
    }
    fn stats(&self) -> Vec<StatsTotals> {
        Vec::new()
    }
    fn averager(&self) -> &StatsAverager {
        &self.averager
    }
    fn pool_counters(&self) -> Vec<PoolCounters> {
        Vec::new()
    }
    fn latency(&self) -> Vec<PoolLatency> {
        Vec::new()
    }
    fn queries(&self, _limit: usize) -> Vec<QueryRow> {
        Vec::new()
    }
    fn readiness(&self) -> Readiness {
        Readiness {
            listening: true,
            draining: false,
            upstream_reachable: true,
        }
    }
    fn command(&self, _cmd: AdminCommand) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async { Ok(()) })
    }
}

/// The client's socket: reads hand out the input `chunk` bytes at a time, then EOF;
/// writes are collected.
struct Socket<'a> {
    input: &'a [u8],
    chunk: usize,
    output: Vec<u8>,
}

impl AsyncRead for Socket<'_> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let n = self.chunk.min(self.input.len()).min(buf.remaining());
        let (now, rest) = self.input.split_at(n);
        buf.put_slice(now);
        self.input = rest;
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Socket<'_> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.output.extend_from_slice(buf);
        Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

thread_local! {
    static RUNTIME: tokio::runtime::Runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("a current-thread runtime");
}

/// A console session: `flags, chunk, client bytes...` (flags bit 0: a stats user, else
/// an admin; chunk 0 = everything in one read). Everything the console writes must be
/// well-formed frames. The client bytes also go through the command parser directly.
pub fn admin_console(data: &[u8]) {
    let [flags, chunk, input @ ..] = data else {
        return;
    };
    let _ = weir_admin::command::parse_query(input);
    let role = if flags & 1 == 0 {
        Role::Admin
    } else {
        Role::Stats
    };
    let chunk = if *chunk == 0 {
        input.len().max(1)
    } else {
        usize::from(*chunk)
    };
    let backend = Backend {
        averager: StatsAverager::new(Duration::from_secs(60)),
    };
    let mut socket = Socket {
        input,
        chunk,
        output: Vec::new(),
    };
    RUNTIME.with(|rt| {
        rt.block_on(async {
            let _ =
                weir_admin::serve_console(&mut socket, BytesMut::new(), "alice", role, &backend)
                    .await;
        })
    });
    let mut out = BytesMut::from(&socket.output[..]);
    while let Some(frame) =
        weir_wire::frame::split_frame(&mut out, usize::MAX).expect("console output frames")
    {
        assert!(frame.bytes.len() >= 5);
    }
    assert!(out.is_empty(), "console output ends inside a frame");
}
