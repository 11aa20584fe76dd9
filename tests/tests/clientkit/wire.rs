//! A hand-driven protocol client over a raw `TcpStream`, for message sequences drivers
//! rarely produce on demand: pipelines, `Flush` without `Sync`, `Execute` with a row
//! limit, CopyData split at arbitrary byte boundaries, Terminate mid-transaction.
//!
//! Logs in with `auth_type = trust` (no password exchange). Every read is bounded, so a
//! proxy that neither answers nor closes fails the test instead of hanging it.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use weir_wire::backend::ErrorFields;
use weir_wire::build::{put_cstr, put_frame, put_query};
use weir_wire::frame::{split_frame, HEADER_LEN};
use weir_wire::startup::put_startup_message;

/// Longest wait for an expected message before the test fails.
pub const READ_TIMEOUT: Duration = Duration::from_secs(15);

/// Largest message accepted from the proxy (the tests' biggest row is far below).
const MAX_MESSAGE: usize = 64 << 20;

/// One backend message.
#[derive(Debug, Clone)]
pub struct Msg {
    /// Message type byte.
    pub tag: u8,
    /// Body after the length word.
    pub body: Bytes,
}

impl Msg {
    /// The columns of a DataRow as optional UTF-8 texts.
    pub fn data_row(&self) -> Vec<Option<String>> {
        assert_eq!(self.tag, b'D', "not a DataRow: {self:?}");
        let mut body = &self.body[..];
        let n = take_i16(&mut body);
        (0..n)
            .map(|_| {
                let len = take_i32(&mut body);
                (len >= 0).then(|| {
                    let (value, rest) = body.split_at(len as usize);
                    body = rest;
                    String::from_utf8_lossy(value).into_owned()
                })
            })
            .collect()
    }

    /// The first column of a DataRow.
    pub fn first_value(&self) -> Option<String> {
        self.data_row().into_iter().next().flatten()
    }

    /// `(severity, SQLSTATE, message)` of an ErrorResponse.
    pub fn error(&self) -> (String, String, String) {
        assert_eq!(self.tag, b'E', "not an ErrorResponse: {self:?}");
        let f = ErrorFields::parse(&self.body);
        let text = |v: Option<&[u8]>| String::from_utf8_lossy(v.unwrap_or(b"")).into_owned();
        (text(f.severity), text(f.code), text(f.message))
    }

    /// The tag text of a CommandComplete.
    pub fn command_tag(&self) -> String {
        assert_eq!(self.tag, b'C', "not a CommandComplete: {self:?}");
        let text = self.body.strip_suffix(b"\0").unwrap_or(&self.body);
        String::from_utf8_lossy(text).into_owned()
    }

    /// The status byte of a ReadyForQuery.
    pub fn ready_status(&self) -> u8 {
        assert_eq!(self.tag, b'Z', "not a ReadyForQuery: {self:?}");
        self.body.first().copied().unwrap_or(0)
    }
}

fn take_i16(body: &mut &[u8]) -> i16 {
    let (head, rest) = body.split_at(2);
    *body = rest;
    i16::from_be_bytes([head[0], head[1]])
}

fn take_i32(body: &mut &[u8]) -> i32 {
    let (head, rest) = body.split_at(4);
    *body = rest;
    i32::from_be_bytes([head[0], head[1], head[2], head[3]])
}

/// The tags of `msgs`, as a string for readable assertions (`"12DCZ"`).
pub fn tags(msgs: &[Msg]) -> String {
    msgs.iter().map(|m| m.tag as char).collect()
}

/// A raw protocol connection to the proxy.
pub struct Wire {
    stream: TcpStream,
    buf: BytesMut,
}

impl Wire {
    /// Connects to `addr` and logs in as `user` on `db` (the proxy must use trust auth),
    /// reading up to the first ReadyForQuery.
    pub async fn login(addr: SocketAddr, user: &str, db: &str) -> Wire {
        let stream = tokio::time::timeout(READ_TIMEOUT, TcpStream::connect(addr))
            .await
            .expect("connect in time")
            .expect("connect to the proxy");
        stream.set_nodelay(true).expect("TCP_NODELAY");
        let mut w = Wire {
            stream,
            buf: BytesMut::new(),
        };
        let mut startup = BytesMut::new();
        put_startup_message(&mut startup, [("user", user), ("database", db)]);
        w.send(&startup).await;
        loop {
            let m = w.recv().await;
            match m.tag {
                b'R' => assert_eq!(&m.body[..], &[0, 0, 0, 0], "trust: AuthenticationOk"),
                b'E' => panic!("login refused: {:?}", m.error()),
                b'Z' => return w,
                _ => {}
            }
        }
    }

    /// Writes all of `bytes` at once.
    pub async fn send(&mut self, bytes: &[u8]) {
        self.stream
            .write_all(bytes)
            .await
            .expect("write to the proxy");
    }

    /// The next message, or `None` if nothing complete arrives within `wait`.
    ///
    /// # Panics
    /// If the proxy closes the connection.
    pub async fn try_recv(&mut self, wait: Duration) -> Option<Msg> {
        let until = tokio::time::Instant::now() + wait;
        loop {
            if let Some(f) = split_frame(&mut self.buf, MAX_MESSAGE).expect("framed message") {
                return Some(Msg {
                    tag: f.tag(),
                    body: f.bytes.slice(HEADER_LEN..),
                });
            }
            // read_buf is cancel safe: bytes are either in `buf` or still in the socket.
            match tokio::time::timeout_at(until, self.stream.read_buf(&mut self.buf)).await {
                Err(_) => return None,
                Ok(Ok(0)) => panic!(
                    "the proxy closed the connection (buffered {:?})",
                    &self.buf[..]
                ),
                Ok(Ok(_)) => {}
                Ok(Err(e)) => panic!("read from the proxy: {e}"),
            }
        }
    }

    /// The next message; panics after [`READ_TIMEOUT`].
    pub async fn recv(&mut self) -> Msg {
        self.try_recv(READ_TIMEOUT)
            .await
            .unwrap_or_else(|| panic!("no message from the proxy within {READ_TIMEOUT:?}"))
    }

    /// Reads `n` messages.
    pub async fn recv_n(&mut self, n: usize) -> Vec<Msg> {
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            out.push(self.recv().await);
        }
        out
    }

    /// Reads messages up to and including the `n`th ReadyForQuery.
    pub async fn recv_ready(&mut self, n: usize) -> Vec<Msg> {
        let mut out = Vec::new();
        let mut seen = 0;
        while seen < n {
            let m = self.recv().await;
            seen += usize::from(m.tag == b'Z');
            out.push(m);
        }
        out
    }

    /// Asserts that nothing arrives within `wait` (no stray ReadyForQuery, no answer yet).
    pub async fn assert_silent(&mut self, wait: Duration, why: &str) {
        if let Some(m) = self.try_recv(wait).await {
            panic!("{why}: unexpected message {:?} {:?}", m.tag as char, m.body);
        }
    }

    /// Runs a simple query and returns its messages through ReadyForQuery, panicking on an error.
    pub async fn query(&mut self, sql: &str) -> Vec<Msg> {
        let mut out = BytesMut::new();
        put_query(&mut out, sql);
        self.send(&out).await;
        let msgs = self.recv_ready(1).await;
        if let Some(e) = msgs.iter().find(|m| m.tag == b'E') {
            panic!("{sql}: {:?}", e.error());
        }
        msgs
    }

    /// The first value of the first DataRow of a simple query.
    pub async fn query_value(&mut self, sql: &str) -> Option<String> {
        let msgs = self.query(sql).await;
        msgs.iter()
            .find(|m| m.tag == b'D')
            .unwrap_or_else(|| panic!("{sql}: no row in {}", tags(&msgs)))
            .first_value()
    }

    /// Waits for the proxy to close the connection, asserting it sends nothing first.
    pub async fn expect_eof(&mut self) {
        let read = tokio::time::timeout(READ_TIMEOUT, self.stream.read_buf(&mut self.buf))
            .await
            .expect("the proxy closes the connection in time");
        match read {
            Ok(0) => assert!(
                self.buf.is_empty(),
                "bytes before close: {:?}",
                &self.buf[..]
            ),
            Ok(n) => panic!("expected a close, got {n} bytes: {:?}", &self.buf[..]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
            Err(e) => panic!("read from the proxy: {e}"),
        }
    }
}

/// Appends Parse of `sql` as statement `name` (no parameter types: the server infers them).
pub fn parse(buf: &mut BytesMut, name: &str, sql: &str) {
    put_frame(buf, b'P', |b| {
        put_cstr(b, name.as_bytes());
        put_cstr(b, sql.as_bytes());
        b.put_i16(0);
    });
}

/// Appends Bind of statement `stmt` into `portal`, all parameters and results as text.
pub fn bind(buf: &mut BytesMut, portal: &str, stmt: &str, params: &[Option<&str>]) {
    put_frame(buf, b'B', |b| {
        put_cstr(b, portal.as_bytes());
        put_cstr(b, stmt.as_bytes());
        b.put_i16(0);
        b.put_i16(params.len() as i16);
        for p in params {
            match p {
                Some(v) => {
                    b.put_i32(v.len() as i32);
                    b.put_slice(v.as_bytes());
                }
                None => b.put_i32(-1),
            }
        }
        b.put_i16(0);
    });
}

/// Appends Describe of a statement (`b'S'`) or portal (`b'P'`).
pub fn describe(buf: &mut BytesMut, kind: u8, name: &str) {
    put_frame(buf, b'D', |b| {
        b.put_u8(kind);
        put_cstr(b, name.as_bytes());
    });
}

/// Appends Execute of `portal` returning at most `max_rows` rows (0 = all).
pub fn execute(buf: &mut BytesMut, portal: &str, max_rows: i32) {
    put_frame(buf, b'E', |b| {
        put_cstr(b, portal.as_bytes());
        b.put_i32(max_rows);
    });
}

/// Appends Sync.
pub fn sync(buf: &mut BytesMut) {
    put_frame(buf, b'S', |_| {});
}

/// Appends Flush.
pub fn flush(buf: &mut BytesMut) {
    put_frame(buf, b'H', |_| {});
}

/// Appends a simple Query.
pub fn query(buf: &mut BytesMut, sql: &str) {
    put_query(buf, sql);
}

/// Appends CopyData.
pub fn copy_data(buf: &mut BytesMut, data: &[u8]) {
    put_frame(buf, b'd', |b| b.put_slice(data));
}

/// Appends CopyDone.
pub fn copy_done(buf: &mut BytesMut) {
    put_frame(buf, b'c', |_| {});
}

/// Appends Terminate.
pub fn terminate(buf: &mut BytesMut) {
    put_frame(buf, b'X', |_| {});
}

/// Appends the unnamed-statement group `Parse/Bind/Execute/Sync` for `sql` with text `params`.
pub fn unnamed_group(buf: &mut BytesMut, sql: &str, params: &[Option<&str>]) {
    parse(buf, "", sql);
    bind(buf, "", "", params);
    execute(buf, "", 0);
    sync(buf);
}
