//! One connection type for every leg: plain TCP, TLS over TCP (either side of the
//! handshake), or a Unix socket. Login, the relay, cancel forwarding and the idle
//! probe all go through [`Stream`], so each works the same over each kind.
//!
//! Dispatch is a `match` per poll, inlined; the plaintext variants add no syscall and
//! no allocation. TLS needs two things plain sockets do not:
//!
//! - **Decrypted bytes can wait inside rustls** while the socket is not readable (a
//!   16 KiB record read into an 8 KiB buffer). [`Stream::readable`] and
//!   [`Stream::probe_idle`] look there before they look at the socket.
//! - **Encrypted bytes can wait to be written**: tokio-rustls accepts plaintext and
//!   returns before all of its ciphertext is on the socket when the socket is full.
//!   Every read of a TLS stream first pushes such bytes out (and registers for
//!   writability if it cannot), so a writer that goes on to wait for the peer's answer
//!   never leaves its request stuck in the TLS layer.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
#[cfg(unix)]
use tokio::net::UnixStream;

use crate::uring::Plain;

/// The TLS stream of a client connection (pgweir is the TLS server).
pub type ClientTlsStream = tokio_rustls::server::TlsStream<TcpIo>;
/// The TLS stream of a server connection (pgweir is the TLS client).
pub type ServerTlsStream = tokio_rustls::client::TlsStream<TcpIo>;

/// A client or server connection.
pub enum Stream {
    /// Plain TCP; its writes are batched where the thread batches ([`crate::uring`]).
    Tcp(Plain<TcpStream>),
    /// TLS with a client; pgweir holds the certificate. Boxed: rustls' state is large,
    /// and plaintext connections should not carry its size.
    TlsServer(Box<ClientTlsStream>),
    /// TLS to a PostgreSQL server; pgweir is the TLS client.
    TlsClient(Box<ServerTlsStream>),
    /// A Unix-domain socket; its writes are batched as TCP's are.
    #[cfg(unix)]
    Unix(Plain<UnixStream>),
    /// What is left after a failed TLS upgrade: every operation fails.
    Closed,
}

/// What [`Stream::write_or_read`] did.
#[derive(Debug)]
pub enum WriteOrRead {
    /// Wrote this many bytes (or failed to).
    Wrote(io::Result<usize>),
    /// Read this many bytes into the buffer (0 = EOF), or failed to.
    Read(io::Result<usize>),
}

impl Stream {
    /// Whether the connection is encrypted.
    pub fn is_tls(&self) -> bool {
        matches!(self, Stream::TlsServer(_) | Stream::TlsClient(_))
    }

    /// The negotiated TLS version (`"TLSv1.3"`), if encrypted.
    pub fn tls_version(&self) -> Option<&'static str> {
        let version = match self {
            Stream::TlsServer(s) => s.get_ref().1.protocol_version(),
            Stream::TlsClient(s) => s.get_ref().1.protocol_version(),
            _ => None,
        }?;
        Some(match version {
            rustls::ProtocolVersion::TLSv1_2 => "TLSv1.2",
            rustls::ProtocolVersion::TLSv1_3 => "TLSv1.3",
            _ => "TLS",
        })
    }

    /// The certificate (DER) a TLS client showed and rustls verified, if any.
    pub fn peer_certificate(&self) -> Option<&[u8]> {
        match self {
            Stream::TlsServer(s) => s
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .map(|c| c.as_ref()),
            _ => None,
        }
    }

    /// The underlying TCP socket, if any.
    pub fn tcp(&self) -> Option<&TcpStream> {
        match self {
            Stream::Tcp(s) => Some(&**s),
            Stream::TlsServer(s) => Some(&s.get_ref().0.tcp),
            Stream::TlsClient(s) => Some(&s.get_ref().0.tcp),
            #[cfg(unix)]
            Stream::Unix(_) => None,
            Stream::Closed => None,
        }
    }

    /// The local address (TCP only).
    ///
    /// # Errors
    /// Not a TCP connection, or the OS error.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.tcp().ok_or_else(not_tcp)?.local_addr()
    }

    /// The peer's address (TCP only).
    ///
    /// # Errors
    /// Not a TCP connection, or the OS error.
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.tcp().ok_or_else(not_tcp)?.peer_addr()
    }

    /// Takes the plain TCP socket out for a TLS upgrade, leaving [`Stream::Closed`].
    ///
    /// # Errors
    /// The stream is not plain TCP (TLS inside TLS is a protocol violation).
    pub fn take_tcp(&mut self) -> io::Result<TcpStream> {
        match std::mem::replace(self, Stream::Closed) {
            Stream::Tcp(s) => Ok(s.into_inner()),
            other => {
                *self = other;
                Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "TLS requested on a connection that is not plain TCP",
                ))
            }
        }
    }

    /// Waits until a read would return data or EOF without blocking: plaintext already
    /// decrypted inside the TLS layer counts, as does a readable socket.
    ///
    /// # Errors
    /// The socket failed, or buffered TLS records do not decrypt.
    #[inline]
    pub async fn readable(&mut self) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.readable().await,
            #[cfg(unix)]
            Stream::Unix(s) => s.readable().await,
            _ => std::future::poll_fn(|cx| self.poll_tls_readable(cx)).await,
        }
    }

    /// Like [`Stream::readable`], as a poll: the waker goes in the socket's own reader
    /// slot (one task reads a stream), so a future waiting on it holds no waiter node.
    ///
    /// # Errors
    /// As [`Stream::readable`].
    #[inline]
    pub fn poll_read_ready(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self {
            Stream::Tcp(s) => s.poll_read_ready(cx),
            #[cfg(unix)]
            Stream::Unix(s) => s.poll_read_ready(cx),
            _ => self.poll_tls_readable(cx),
        }
    }

    /// TLS: ready when a read will return plaintext, EOF or an error, not merely when
    /// the socket has bytes (half a record would leave the reader waiting on the socket
    /// with nothing else watched). Raw bytes are moved into rustls here as they come.
    fn poll_tls_readable(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self {
            Stream::TlsServer(s) => {
                let _ = Pin::new(&mut **s).poll_flush(cx);
                let (io, conn) = s.get_mut();
                poll_records(&io.tcp, &io.prefix, conn, cx)
            }
            Stream::TlsClient(s) => {
                let _ = Pin::new(&mut **s).poll_flush(cx);
                let (io, conn) = s.get_mut();
                poll_records(&io.tcp, &io.prefix, conn, cx)
            }
            _ => Poll::Ready(Err(closed())),
        }
    }

    /// Non-blocking check of an idle connection: true if no data and no EOF has
    /// arrived. Any byte from an idle plaintext server means it is dead or out of sync,
    /// so consuming it here is harmless: the caller closes the connection. Under TLS,
    /// records that carry no data (a late session ticket, a key update) are absorbed
    /// by rustls and do not count.
    pub fn probe_idle(&mut self) -> bool {
        let mut probe = [0u8; 1];
        match self {
            Stream::Tcp(s) => {
                matches!(s.try_read(&mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
            }
            #[cfg(unix)]
            Stream::Unix(s) => {
                matches!(s.try_read(&mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
            }
            Stream::TlsServer(s) => {
                let (io, conn) = s.get_mut();
                tls_idle(&io.tcp, &io.prefix, conn)
            }
            Stream::TlsClient(s) => {
                let (io, conn) = s.get_mut();
                tls_idle(&io.tcp, &io.prefix, conn)
            }
            Stream::Closed => false,
        }
    }

    /// Reads what a plain socket already has into `buf`, without a waker: `None` if it
    /// has nothing (known from the readiness epoll last reported, so mostly without a
    /// system call), and always under TLS, whose records need [`Stream::poll_read_ready`].
    pub fn try_read_buf(&mut self, buf: &mut BytesMut) -> Option<io::Result<usize>> {
        let r = match self {
            Stream::Tcp(s) => s.try_read_buf(buf),
            #[cfg(unix)]
            Stream::Unix(s) => s.try_read_buf(buf),
            _ => return None,
        };
        match r {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => None,
            r => Some(r),
        }
    }

    /// Writes some of `data` or reads into `rbuf`, whichever the sockets allow first
    /// (the write is tried first). Lets one task push a large request to a server while
    /// relaying the results the server produces meanwhile, over one stream of any kind.
    pub async fn write_or_read(&mut self, data: &[u8], rbuf: &mut BytesMut) -> WriteOrRead {
        std::future::poll_fn(|cx| {
            if let Poll::Ready(r) = Pin::new(&mut *self).poll_write(cx, data) {
                return Poll::Ready(WriteOrRead::Wrote(r));
            }
            match tokio_util::io::poll_read_buf(Pin::new(&mut *self), cx, rbuf) {
                Poll::Ready(r) => Poll::Ready(WriteOrRead::Read(r)),
                Poll::Pending => Poll::Pending,
            }
        })
        .await
    }
}

/// Reads raw bytes from `tcp` into `conn` until a whole record's plaintext (or the
/// peer's close, EOF or an error) is there to read.
fn poll_records<D>(
    tcp: &TcpStream,
    prefix: &BytesMut,
    conn: &mut rustls::ConnectionCommon<D>,
    cx: &mut Context<'_>,
) -> Poll<io::Result<()>> {
    loop {
        if tls_pending(conn, prefix)? {
            return Poll::Ready(Ok(()));
        }
        ready!(tcp.poll_read_ready(cx))?;
        match conn.read_tls(&mut TryRead(tcp)) {
            // EOF: the next read reports it.
            Ok(0) => return Poll::Ready(Ok(())),
            Ok(_) => {}
            // try_read cleared the readiness: the next poll_read_ready registers.
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Poll::Ready(Err(e)),
        }
    }
}

/// True if nothing a read would return has arrived on a TLS connection: raw bytes are
/// moved into rustls until the socket would block.
fn tls_idle<D>(tcp: &TcpStream, prefix: &BytesMut, conn: &mut rustls::ConnectionCommon<D>) -> bool {
    loop {
        if !matches!(tls_pending(conn, prefix), Ok(false)) {
            return false;
        }
        match conn.read_tls(&mut TryRead(tcp)) {
            Ok(0) => return false,
            Ok(_) => {}
            Err(e) => return e.kind() == io::ErrorKind::WouldBlock,
        }
    }
}

/// `std::io::Read` over a non-blocking tokio socket, for rustls' `read_tls`.
struct TryRead<'a>(&'a TcpStream);

impl io::Read for TryRead<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.try_read(buf)
    }
}

/// Whether the TLS layer holds something a read would return: decrypted bytes, the
/// peer's close_notify, or raw bytes replayed from before the handshake.
fn tls_pending<D>(conn: &mut rustls::ConnectionCommon<D>, prefix: &BytesMut) -> io::Result<bool> {
    if !prefix.is_empty() {
        return Ok(true);
    }
    let state = conn
        .process_new_packets()
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    Ok(state.plaintext_bytes_to_read() > 0 || state.peer_has_closed())
}

fn not_tcp() -> io::Error {
    io::Error::new(io::ErrorKind::Unsupported, "not a TCP connection")
}

fn closed() -> io::Error {
    io::Error::new(
        io::ErrorKind::NotConnected,
        "connection closed after a failed TLS handshake",
    )
}

impl From<TcpStream> for Stream {
    fn from(s: TcpStream) -> Self {
        Stream::Tcp(s.into())
    }
}

#[cfg(unix)]
impl From<UnixStream> for Stream {
    fn from(s: UnixStream) -> Self {
        Stream::Unix(s.into())
    }
}

impl AsyncRead for Stream {
    #[inline]
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            #[cfg(unix)]
            Stream::Unix(s) => Pin::new(s).poll_read(cx, buf),
            Stream::TlsServer(s) => {
                // Ciphertext left behind by an earlier write goes out first; see the module docs.
                let _ = Pin::new(&mut **s).poll_flush(cx);
                Pin::new(&mut **s).poll_read(cx, buf)
            }
            Stream::TlsClient(s) => {
                let _ = Pin::new(&mut **s).poll_flush(cx);
                Pin::new(&mut **s).poll_read(cx, buf)
            }
            Stream::Closed => Poll::Ready(Err(closed())),
        }
    }
}

impl AsyncWrite for Stream {
    #[inline]
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            #[cfg(unix)]
            Stream::Unix(s) => Pin::new(s).poll_write(cx, buf),
            Stream::TlsServer(s) => Pin::new(&mut **s).poll_write(cx, buf),
            Stream::TlsClient(s) => Pin::new(&mut **s).poll_write(cx, buf),
            Stream::Closed => Poll::Ready(Err(closed())),
        }
    }

    #[inline]
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            #[cfg(unix)]
            Stream::Unix(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::TlsServer(s) => Pin::new(&mut **s).poll_write_vectored(cx, bufs),
            Stream::TlsClient(s) => Pin::new(&mut **s).poll_write_vectored(cx, bufs),
            Stream::Closed => Poll::Ready(Err(closed())),
        }
    }

    #[inline]
    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Tcp(s) => s.is_write_vectored(),
            #[cfg(unix)]
            Stream::Unix(s) => s.is_write_vectored(),
            Stream::TlsServer(_) | Stream::TlsClient(_) => true,
            Stream::Closed => false,
        }
    }

    #[inline]
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_flush(cx),
            #[cfg(unix)]
            Stream::Unix(s) => Pin::new(s).poll_flush(cx),
            Stream::TlsServer(s) => Pin::new(&mut **s).poll_flush(cx),
            Stream::TlsClient(s) => Pin::new(&mut **s).poll_flush(cx),
            Stream::Closed => Poll::Ready(Ok(())),
        }
    }

    #[inline]
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            #[cfg(unix)]
            Stream::Unix(s) => Pin::new(s).poll_shutdown(cx),
            Stream::TlsServer(s) => {
                s.get_mut().1.send_close_notify();
                Pin::new(&mut **s).poll_shutdown(cx)
            }
            Stream::TlsClient(s) => {
                s.get_mut().1.send_close_notify();
                Pin::new(&mut **s).poll_shutdown(cx)
            }
            Stream::Closed => Poll::Ready(Ok(())),
        }
    }
}

/// The TCP socket under a TLS stream, with the bytes that were read from it before the
/// TLS layer took over (a direct-TLS ClientHello read as if it were a startup packet),
/// replayed first.
pub struct TcpIo {
    /// The socket.
    pub tcp: TcpStream,
    prefix: BytesMut,
}

impl TcpIo {
    /// `tcp`, with `prefix` to be read before anything from the socket.
    pub fn new(tcp: TcpStream, prefix: BytesMut) -> Self {
        TcpIo { tcp, prefix }
    }
}

impl AsyncRead for TcpIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.prefix.is_empty() {
            let n = this.prefix.len().min(buf.remaining());
            buf.put_slice(&this.prefix[..n]);
            this.prefix.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.tcp).poll_read(cx, buf)
    }
}

impl AsyncWrite for TcpIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().tcp).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().tcp).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(Pin::new(&mut self.get_mut().tcp).poll_shutdown(cx))?;
        Poll::Ready(Ok(()))
    }
}
