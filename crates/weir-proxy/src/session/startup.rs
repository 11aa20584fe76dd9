//! The startup phase before authentication: initial packets up to the StartupMessage
//! (SSLRequest and direct TLS with the TLS handshake, GSSENCRequest refused, a
//! CancelRequest forwarded) and the protocol version negotiation.

use std::sync::Arc;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tracing::{debug, warn};
use weir_wire::build;
use weir_wire::startup::{parse_initial, InitialPacket, StartupMessage};

use super::Shared;
use crate::error::{ClientError, Violation};
use crate::server::send_cancel;
use crate::stream::Stream;
use crate::tls::ClientTls;

/// Reads initial packets until a StartupMessage (returned) or a CancelRequest
/// (forwarded; `None`). An SSLRequest is answered `S` and the TLS handshake follows when
/// `client_tls_sslmode` allows TLS (else `N`), a TLS ClientHello in place of a first
/// packet is PostgreSQL 17's direct TLS; GSSENCRequest gets `N`. `tls` is set to the
/// configuration the handshake used (for channel binding).
///
/// The TLS handshake and the cancel's forwarding run boxed: inline, their ~1.4 KiB
/// futures would be copied into every login's.
pub(super) async fn read_startup(
    shared: &Shared,
    stream: &mut Stream,
    rbuf: &mut BytesMut,
    tls: &mut Option<Arc<ClientTls>>,
) -> Result<Option<StartupMessage>, ClientError> {
    let config = shared.tls().client();
    // SSLRequest then GSSENCRequest (or the reverse) at most: bound the negotiation.
    for _ in 0..3 {
        let packet = loop {
            if rbuf.first() == Some(&crate::tls::TLS_HANDSHAKE_RECORD) && !stream.is_tls() {
                // No startup packet starts so (its length would be over 350 MB).
                let Some(config) = &config else {
                    return Err(Violation::DirectTlsDisabled.into());
                };
                let prefix = rbuf.split();
                Box::pin(upgrade(config, stream, prefix, true)).await?;
                *tls = Some(config.clone());
                continue;
            }
            if let Some(p) = parse_initial(rbuf).map_err(Violation::Startup)? {
                break p;
            }
            if stream.read_buf(rbuf).await? == 0 {
                return Err(ClientError::Io(std::io::ErrorKind::UnexpectedEof.into()));
            }
        };
        match packet {
            InitialPacket::SslRequest | InitialPacket::GssEncRequest => {
                if !rbuf.is_empty() {
                    // Bytes after an encryption request before our answer: a buffer-stuffing attack (CVE-2021-23222).
                    return Err(Violation::DataAfterEncryptionRequest.into());
                }
                match &config {
                    Some(config)
                        if matches!(packet, InitialPacket::SslRequest) && !stream.is_tls() =>
                    {
                        stream.write_all(b"S").await?;
                        // The socket leaves the plain stream for the TLS layer: the
                        // answer must be with the kernel first (batched writes).
                        stream.flush().await?;
                        Box::pin(upgrade(config, stream, BytesMut::new(), false)).await?;
                        *tls = Some(config.clone());
                    }
                    _ => stream.write_all(b"N").await?,
                }
            }
            InitialPacket::Cancel { pid, key } => {
                if let Some(ticket) = shared.cancels.begin_cancel(pid, &key) {
                    debug!(pid, "forwarding cancel request");
                    if let Err(e) = Box::pin(send_cancel(&ticket.target)).await {
                        warn!(error = %e, "could not forward cancel request");
                    }
                }
                return Ok(None);
            }
            InitialPacket::Startup(m) => {
                if config.as_ref().is_some_and(|c| c.mode.requires_tls()) && !stream.is_tls() {
                    return Err(ClientError::TlsRequired);
                }
                return Ok(Some(m));
            }
        }
    }
    Err(Violation::TooManyEncryptionRequests.into())
}

/// Runs the TLS handshake on a client connection (after our `S`, or at once for direct
/// TLS, whose ClientHello is already in `prefix`). Direct TLS must name the
/// `postgresql` ALPN protocol, as PostgreSQL 17 insists.
async fn upgrade(
    config: &ClientTls,
    stream: &mut Stream,
    prefix: BytesMut,
    direct: bool,
) -> Result<(), ClientError> {
    let tcp = stream.take_tcp().map_err(Violation::NotUpgradable)?;
    let tls = config
        .accept(tcp, prefix)
        .await
        .map_err(ClientError::TlsHandshake)?;
    let alpn_ok = tls.get_ref().1.alpn_protocol() == Some(crate::tls::ALPN_POSTGRESQL);
    *stream = Stream::TlsServer(Box::new(tls));
    if direct && !alpn_ok {
        return Err(Violation::NoAlpn.into());
    }
    Ok(())
}

/// The newest protocol minor version the proxy speaks with clients (3.2, PostgreSQL 18's).
const PROTOCOL_MINOR: i32 = 2;

/// Negotiates the protocol version, as PostgreSQL 18 does: 3.0 and 3.2 are spoken as
/// asked; a newer minor, 3.1 (never used) or any `_pq_.` option gets one
/// NegotiateProtocolVersion naming the minor chosen and the options refused. Returns
/// the minor version in force.
pub(super) fn negotiate_protocol(startup: &StartupMessage, out: &mut BytesMut) -> i32 {
    let unsupported: Vec<&str> = startup
        .params
        .iter()
        .filter(|(k, _)| k.starts_with("_pq_."))
        .map(|(k, _)| k.as_str())
        .collect();
    let asked = i32::from(startup.minor);
    let minor = if asked >= PROTOCOL_MINOR {
        PROTOCOL_MINOR
    } else {
        0
    };
    if asked != minor || !unsupported.is_empty() {
        build::put_negotiate_protocol_version(out, minor, &unsupported);
    }
    minor
}
