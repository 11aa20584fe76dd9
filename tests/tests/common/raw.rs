//! A PostgreSQL client driven by hand over a raw `TcpStream`, for input no real driver
//! would send: garbage startup packets, bad lengths, unknown message types.
//!
//! Every read is bounded by [`READ_TIMEOUT`], so a proxy that neither answers nor closes
//! fails the test instead of hanging it.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use weir_wire::backend::ErrorFields;
use weir_wire::build::put_frame;
use weir_wire::frame::split_frame;
use weir_wire::startup::{put_startup_message, GSSENC_REQUEST_CODE, SSL_REQUEST_CODE};

/// Longest wait for the proxy's next message (or its close) before the test fails.
pub const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Largest message the raw client accepts from the proxy.
const MAX_MESSAGE: usize = 16 << 20;

/// One backend message: its tag and body (without the length word).
#[derive(Debug, Clone)]
pub struct Message {
    /// Message type byte, e.g. `b'E'`.
    pub tag: u8,
    /// The body after the length word.
    pub body: Bytes,
}

/// The fields of an ErrorResponse that the tests look at, as text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorReport {
    /// `ERROR` or `FATAL` (the non-localized `V` field when present).
    pub severity: String,
    /// The SQLSTATE.
    pub code: String,
    /// The primary message.
    pub message: String,
}

impl ErrorReport {
    /// Reads an ErrorResponse body.
    pub fn parse(body: &[u8]) -> ErrorReport {
        let f = ErrorFields::parse(body);
        let text = |v: Option<&[u8]>| String::from_utf8_lossy(v.unwrap_or(b"<none>")).into_owned();
        ErrorReport {
            severity: text(f.severity),
            code: text(f.code),
            message: text(f.message),
        }
    }
}

/// A raw protocol connection to the proxy.
pub struct RawClient {
    stream: TcpStream,
    buf: BytesMut,
    /// The BackendKeyData (process id, secret key) received at login, if any.
    pub key: Option<(i32, Vec<u8>)>,
}

impl RawClient {
    /// Connects to `addr`.
    pub async fn connect(addr: SocketAddr) -> RawClient {
        let stream = tokio::time::timeout(READ_TIMEOUT, TcpStream::connect(addr))
            .await
            .expect("connect to the proxy in time")
            .expect("connect to the proxy");
        stream.set_nodelay(true).expect("TCP_NODELAY");
        RawClient {
            stream,
            buf: BytesMut::new(),
            key: None,
        }
    }

    /// Connects, logs in with no password (the proxy must use `auth_type = trust`) and
    /// reads up to the first ReadyForQuery.
    pub async fn login_trust(addr: SocketAddr, user: &str, db: &str) -> RawClient {
        let mut c = RawClient::connect(addr).await;
        c.send(&startup_packet(&[("user", user), ("database", db)]))
            .await;
        loop {
            let m = c.next().await.expect("login answer before close");
            match m.tag {
                b'R' => assert_eq!(
                    &m.body[..],
                    &[0, 0, 0, 0],
                    "trust login must get AuthenticationOk at once"
                ),
                b'E' => panic!("login refused: {:?}", ErrorReport::parse(&m.body)),
                b'K' => {
                    let pid = m.body.get(..4).expect("BackendKeyData pid");
                    let pid = i32::from_be_bytes([pid[0], pid[1], pid[2], pid[3]]);
                    c.key = Some((pid, m.body[4..].to_vec()));
                }
                b'Z' => {
                    assert_eq!(&m.body[..], b"I", "idle after login");
                    return c;
                }
                _ => {}
            }
        }
    }

    /// Writes all of `bytes`; panics on failure.
    pub async fn send(&mut self, bytes: &[u8]) {
        self.try_send(bytes).await.expect("write to the proxy");
    }

    /// Writes all of `bytes`, returning the error (the proxy may already have closed).
    pub async fn try_send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes).await
    }

    /// Half-closes: the proxy reads EOF after what was sent.
    pub async fn shutdown_write(&mut self) {
        // The proxy may have closed already; the read side still holds its answer.
        let _ = self.stream.shutdown().await;
    }

    /// Reads one byte (the answer to SSLRequest/GSSENCRequest, not a framed message).
    pub async fn read_byte(&mut self) -> u8 {
        let b = self.peek_byte().await;
        let _ = self.buf.split_to(1);
        b
    }

    /// The next byte without consuming it (an `N`, or the `E` of an ErrorResponse).
    pub async fn peek_byte(&mut self) -> u8 {
        if self.buf.is_empty() {
            let n = tokio::time::timeout(READ_TIMEOUT, self.stream.read_buf(&mut self.buf))
                .await
                .expect("a byte from the proxy in time")
                .expect("read from the proxy");
            assert!(n > 0, "proxy closed instead of answering");
        }
        self.buf[0]
    }

    /// The next message, or `None` once the proxy closed (EOF or reset).
    ///
    /// # Panics
    /// If nothing arrives within [`READ_TIMEOUT`], or the bytes are not framed messages.
    pub async fn next(&mut self) -> Option<Message> {
        loop {
            if let Some(frame) =
                split_frame(&mut self.buf, MAX_MESSAGE).expect("framed message from the proxy")
            {
                return Some(Message {
                    tag: frame.tag(),
                    body: frame.bytes.slice(weir_wire::frame::HEADER_LEN..),
                });
            }
            let read = tokio::time::timeout(READ_TIMEOUT, self.stream.read_buf(&mut self.buf))
                .await
                .unwrap_or_else(|_| {
                    panic!(
                        "the proxy neither answered nor closed within {READ_TIMEOUT:?} (buffered: {:?})",
                        &self.buf[..]
                    )
                });
            match read {
                Ok(0) => {
                    assert!(
                        self.buf.is_empty(),
                        "closed mid-message: {:?}",
                        &self.buf[..]
                    );
                    return None;
                }
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return None,
                Err(e) => panic!("read from the proxy: {e}"),
            }
        }
    }

    /// Expects the next message to be a FATAL ErrorResponse with SQLSTATE `code`, and the
    /// connection to close right after it. Returns the error.
    pub async fn expect_fatal(&mut self, code: &str) -> ErrorReport {
        let m = self
            .next()
            .await
            .unwrap_or_else(|| panic!("closed without an ErrorResponse (wanted FATAL {code})"));
        assert_eq!(m.tag, b'E', "wanted ErrorResponse, got {:?}", m.tag as char);
        let e = ErrorReport::parse(&m.body);
        assert_eq!(e.severity, "FATAL", "{e:?}");
        assert_eq!(e.code, code, "{e:?}");
        self.expect_closed().await;
        e
    }

    /// Reads the answers to one simple query up to ReadyForQuery; returns their tags and
    /// the first ErrorResponse, if any.
    pub async fn query_answers(&mut self) -> (Vec<u8>, Option<ErrorReport>) {
        let mut tags = Vec::new();
        let mut error = None;
        loop {
            let m = self.next().await.expect("answers up to ReadyForQuery");
            tags.push(m.tag);
            if m.tag == b'E' && error.is_none() {
                error = Some(ErrorReport::parse(&m.body));
            }
            if m.tag == b'Z' {
                return (tags, error);
            }
        }
    }

    /// Expects the proxy to close the connection with nothing more to say.
    pub async fn expect_closed(&mut self) {
        if let Some(m) = self.next().await {
            panic!(
                "expected the connection to close, got message {:?} {:?}",
                m.tag as char, m.body
            );
        }
    }
}

/// A protocol 3.0 StartupMessage with `params`.
pub fn startup_packet(params: &[(&str, &str)]) -> BytesMut {
    let mut buf = BytesMut::new();
    put_startup_message(&mut buf, params.iter().copied());
    buf
}

/// An initial packet: length word, then `code`, then `body`; the length is `declared`
/// when given (to lie about it), else the true one.
pub fn initial_packet(code: i32, body: &[u8], declared: Option<i32>) -> BytesMut {
    let mut buf = BytesMut::new();
    let len = declared.unwrap_or((8 + body.len()) as i32);
    buf.put_i32(len);
    buf.put_i32(code);
    buf.put_slice(body);
    buf
}

/// A CancelRequest for process `pid` with secret `key`.
pub fn cancel_request(pid: i32, key: &[u8]) -> BytesMut {
    let mut body = pid.to_be_bytes().to_vec();
    body.extend_from_slice(key);
    initial_packet(weir_wire::startup::CANCEL_REQUEST_CODE, &body, None)
}

/// An SSLRequest.
pub fn ssl_request() -> BytesMut {
    initial_packet(SSL_REQUEST_CODE, &[], None)
}

/// A GSSENCRequest.
pub fn gssenc_request() -> BytesMut {
    initial_packet(GSSENC_REQUEST_CODE, &[], None)
}

/// A tagged frontend message with a correct length word.
pub fn frame(tag: u8, body: &[u8]) -> BytesMut {
    let mut buf = BytesMut::new();
    put_frame(&mut buf, tag, |b| b.put_slice(body));
    buf
}

/// Only a message header, claiming `len` (which counts itself, as on the wire).
pub fn header(tag: u8, len: i32) -> BytesMut {
    let mut buf = BytesMut::new();
    buf.put_u8(tag);
    buf.put_i32(len);
    buf
}
