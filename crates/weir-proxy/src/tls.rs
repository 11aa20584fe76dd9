//! TLS configuration for both legs, built from the config with rustls (ring provider):
//! the client leg's acceptor (`client_tls_*`) and the server leg's connector
//! (`server_tls_*`), with PgBouncer's setting words. Both are rebuilt by `RELOAD`;
//! connections already open keep the configuration they were made with.

use std::path::Path;
use std::sync::{Arc, PoisonError, RwLock};

use bytes::BytesMut;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig,
    SignatureScheme, SupportedCipherSuite, SupportedProtocolVersion,
};
use tokio::net::TcpStream;
use tokio_rustls::{TlsAcceptor, TlsConnector};
use weir_config::{Config, SslMode};

use crate::stream::{ClientTlsStream, ServerTlsStream, TcpIo};

/// The first byte of a TLS handshake record (a ClientHello, for direct TLS).
pub const TLS_HANDSHAKE_RECORD: u8 = 0x16;

/// The ALPN protocol name PostgreSQL 17 uses (and requires for direct TLS).
pub const ALPN_POSTGRESQL: &[u8] = b"postgresql";

/// Why a TLS configuration could not be built.
#[derive(Debug, thiserror::Error)]
#[error("{setting}: {message}")]
pub struct TlsError {
    /// The setting at fault.
    pub setting: &'static str,
    /// What is wrong.
    pub message: String,
}

fn err(setting: &'static str, message: impl Into<String>) -> TlsError {
    TlsError {
        setting,
        message: message.into(),
    }
}

/// The TLS configurations in force; `RELOAD` replaces them.
#[derive(Default)]
pub struct Tls {
    client: RwLock<Option<Arc<ClientTls>>>,
    server: RwLock<Option<Arc<ServerTls>>>,
}

impl Tls {
    /// Builds both legs from `config`.
    ///
    /// # Errors
    /// A certificate, key or CA file that cannot be read or used; a protocol or cipher
    /// list that leaves nothing.
    pub fn from_config(config: &Config) -> Result<Tls, TlsError> {
        let (client, server) = build(config)?;
        Ok(Tls {
            client: RwLock::new(client),
            server: RwLock::new(server),
        })
    }

    /// `RELOAD`: rebuilds both legs from `config` (re-reading the files); on error
    /// nothing changes.
    ///
    /// # Errors
    /// As [`Tls::from_config`].
    pub fn reload(&self, config: &Config) -> Result<(), TlsError> {
        let (client, server) = build(config)?;
        *self.client.write().unwrap_or_else(PoisonError::into_inner) = client;
        *self.server.write().unwrap_or_else(PoisonError::into_inner) = server;
        Ok(())
    }

    /// The client leg, unless `client_tls_sslmode = disable`.
    pub fn client(&self) -> Option<Arc<ClientTls>> {
        self.client
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The server leg, unless `server_tls_sslmode = disable`.
    pub fn server(&self) -> Option<Arc<ServerTls>> {
        self.server
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

type Legs = (Option<Arc<ClientTls>>, Option<Arc<ServerTls>>);

fn build(config: &Config) -> Result<Legs, TlsError> {
    let client = match config.client_tls_sslmode {
        SslMode::Disable => None,
        mode => Some(Arc::new(ClientTls::new(config, mode)?)),
    };
    let server = match config.server_tls_sslmode {
        SslMode::Disable => None,
        mode => Some(Arc::new(ServerTls::new(config, mode)?)),
    };
    Ok((client, server))
}

/// TLS with clients: pgweir presents `client_tls_cert_file`.
pub struct ClientTls {
    /// `client_tls_sslmode`.
    pub mode: SslMode,
    acceptor: TlsAcceptor,
    /// SCRAM's tls-server-end-point data: the hash of the certificate presented.
    end_point: Vec<u8>,
}

impl ClientTls {
    fn new(config: &Config, mode: SslMode) -> Result<ClientTls, TlsError> {
        let provider = provider(
            "client_tls_ciphers",
            &config.client_tls_ciphers,
            &config.client_tls_protocols,
        )?;
        let versions = versions("client_tls_protocols", &config.client_tls_protocols)?;
        let cert_file = config
            .client_tls_cert_file
            .as_deref()
            .ok_or_else(|| err("client_tls_cert_file", "is required"))?;
        let key_file = config
            .client_tls_key_file
            .as_deref()
            .ok_or_else(|| err("client_tls_key_file", "is required"))?;
        let certs = read_certs("client_tls_cert_file", cert_file)?;
        let key = read_key("client_tls_key_file", key_file)?;
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&versions)
            .map_err(|e| err("client_tls_protocols", e.to_string()))?;
        let builder = if mode.verifies() {
            let ca = config
                .client_tls_ca_file
                .as_deref()
                .ok_or_else(|| err("client_tls_ca_file", "is required by verify-ca/verify-full"))?;
            let roots = read_roots("client_tls_ca_file", ca)?;
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| err("client_tls_ca_file", e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        } else {
            // PgBouncer: below verify-ca a client certificate is neither asked for nor checked.
            builder.with_no_client_auth()
        };
        let end_point = weir_wire::auth::scram::tls_server_end_point(&certs[0]);
        let mut server = builder
            .with_single_cert(certs, key)
            .map_err(|e| err("client_tls_key_file", e.to_string()))?;
        server.alpn_protocols = vec![ALPN_POSTGRESQL.to_vec()];
        Ok(ClientTls {
            mode,
            acceptor: TlsAcceptor::from(Arc::new(server)),
            end_point,
        })
    }

    /// Runs the server side of the handshake on `tcp`; `prefix` holds bytes already
    /// read from it (a direct-TLS ClientHello).
    ///
    /// # Errors
    /// The handshake failed (bad client certificate, no common version or suite...).
    pub async fn accept(
        &self,
        tcp: TcpStream,
        prefix: BytesMut,
    ) -> std::io::Result<ClientTlsStream> {
        self.acceptor.accept(TcpIo::new(tcp, prefix)).await
    }

    /// The tls-server-end-point channel-binding data of the certificate presented
    /// (SCRAM-SHA-256-PLUS).
    pub fn end_point(&self) -> &[u8] {
        &self.end_point
    }
}

/// TLS to servers (pgweir is the TLS client).
pub struct ServerTls {
    /// `server_tls_sslmode`.
    pub mode: SslMode,
    connector: TlsConnector,
}

impl ServerTls {
    fn new(config: &Config, mode: SslMode) -> Result<ServerTls, TlsError> {
        let provider = provider(
            "server_tls_ciphers",
            &config.server_tls_ciphers,
            &config.server_tls_protocols,
        )?;
        let versions = versions("server_tls_protocols", &config.server_tls_protocols)?;
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&versions)
            .map_err(|e| err("server_tls_protocols", e.to_string()))?;
        let roots = match config.server_tls_ca_file.as_deref() {
            Some(ca) => Some(Arc::new(read_roots("server_tls_ca_file", ca)?)),
            None => None,
        };
        let verifier: Arc<dyn ServerCertVerifier> = match (mode, roots) {
            (SslMode::VerifyFull, Some(roots)) => {
                rustls::client::WebPkiServerVerifier::builder_with_provider(roots, provider.clone())
                    .build()
                    .map_err(|e| err("server_tls_ca_file", e.to_string()))?
            }
            (SslMode::VerifyCa, Some(roots)) => Arc::new(ChainOnly {
                inner: rustls::client::WebPkiServerVerifier::builder_with_provider(
                    roots,
                    provider.clone(),
                )
                .build()
                .map_err(|e| err("server_tls_ca_file", e.to_string()))?,
            }),
            (SslMode::VerifyCa | SslMode::VerifyFull, None) => {
                return Err(err(
                    "server_tls_ca_file",
                    "is required by verify-ca/verify-full",
                ))
            }
            // libpq's require/prefer/allow: encrypted, certificate not checked.
            _ => Arc::new(NoCheck(provider.signature_verification_algorithms)),
        };
        let builder = builder
            .dangerous()
            .with_custom_certificate_verifier(verifier);
        let mut client = match (
            config.server_tls_cert_file.as_deref(),
            config.server_tls_key_file.as_deref(),
        ) {
            (Some(cert), Some(key)) => builder
                .with_client_auth_cert(
                    read_certs("server_tls_cert_file", cert)?,
                    read_key("server_tls_key_file", key)?,
                )
                .map_err(|e| err("server_tls_key_file", e.to_string()))?,
            _ => builder.with_no_client_auth(),
        };
        client.alpn_protocols = vec![ALPN_POSTGRESQL.to_vec()];
        Ok(ServerTls {
            mode,
            connector: TlsConnector::from(Arc::new(client)),
        })
    }

    /// Runs the client side of the handshake to `host` on `tcp` (SNI for host names,
    /// as libpq sends it; none for addresses).
    ///
    /// # Errors
    /// The handshake or the certificate check failed.
    pub async fn connect(&self, host: &str, tcp: TcpStream) -> std::io::Result<ServerTlsStream> {
        let name = ServerName::try_from(host.to_owned()).map_err(|e| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("server name {host:?}: {e}"),
            )
        })?;
        self.connector
            .connect(name, TcpIo::new(tcp, BytesMut::new()))
            .await
    }
}

/// verify-ca: the chain must lead to the CA; the name is not checked.
#[derive(Debug)]
struct ChainOnly {
    inner: Arc<rustls::client::WebPkiServerVerifier>,
}

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self.inner.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        ) {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// require/prefer/allow: any certificate is accepted (the handshake's signatures are
/// still checked, so the peer holds the key of the certificate it shows).
#[derive(Debug)]
struct NoCheck(WebPkiSupportedAlgorithms);

impl ServerCertVerifier for NoCheck {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_schemes()
    }
}

fn versions(
    setting: &'static str,
    value: &str,
) -> Result<Vec<&'static SupportedProtocolVersion>, TlsError> {
    let (v12, v13) = weir_config::tls_protocols(value).map_err(|m| err(setting, m))?;
    let mut out = Vec::new();
    if v13 {
        out.push(&rustls::version::TLS13);
    }
    if v12 {
        out.push(&rustls::version::TLS12);
    }
    Ok(out)
}

/// OpenSSL's names for the TLS 1.2 suites rustls has, beside the IANA ones.
const OPENSSL_NAMES: [(&str, &str); 6] = [
    (
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
    ),
    (
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
    ),
    (
        "ECDHE-ECDSA-CHACHA20-POLY1305",
        "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
    ),
    (
        "ECDHE-RSA-AES256-GCM-SHA384",
        "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
    ),
    (
        "ECDHE-RSA-AES128-GCM-SHA256",
        "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
    ),
    (
        "ECDHE-RSA-CHACHA20-POLY1305",
        "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
    ),
];

/// The ring provider with the suites a `*_tls_ciphers` value allows.
///
/// PgBouncer passes the value to OpenSSL's cipher list, which governs TLS 1.2 only:
/// likewise the shortcuts (`default`, `secure`, `fast`, `normal`, `all`, `HIGH`...) keep
/// every suite rustls has (all AEAD with forward secrecy), and a list of names keeps
/// the TLS 1.2 suites it names (OpenSSL or IANA spelling) plus every TLS 1.3 suite, or
/// only the TLS 1.3 suites it names if it names any.
fn provider(
    setting: &'static str,
    ciphers: &str,
    protocols: &str,
) -> Result<Arc<CryptoProvider>, TlsError> {
    let mut provider = rustls::crypto::ring::default_provider();
    let words: Vec<&str> = ciphers
        .split([':', ',', ' '])
        .map(str::trim)
        .filter(|w| !w.is_empty() && !w.starts_with(['!', '-', '+', '@']))
        .collect();
    let shortcut = words.is_empty()
        || words.iter().any(|w| {
            [
                "default", "secure", "fast", "normal", "all", "high", "compat", "legacy", "aesgcm",
                "ecdhe",
            ]
            .contains(&w.to_ascii_lowercase().as_str())
        });
    if !shortcut {
        let iana = |w: &str| {
            OPENSSL_NAMES
                .iter()
                .find(|(o, _)| o.eq_ignore_ascii_case(w))
                .map_or_else(
                    || w.to_ascii_uppercase().replace("TLS13_", "TLS_"),
                    |(_, i)| (*i).to_owned(),
                )
        };
        let named: Vec<String> = words.iter().map(|w| iana(w)).collect();
        let name_of = |s: &SupportedCipherSuite| {
            s.suite()
                .as_str()
                .unwrap_or_default()
                .replace("TLS13_", "TLS_")
        };
        let names_tls13 = provider
            .cipher_suites
            .iter()
            .any(|s| s.version() == &rustls::version::TLS13 && named.contains(&name_of(s)));
        provider.cipher_suites.retain(|s| {
            named.contains(&name_of(s)) || (s.version() == &rustls::version::TLS13 && !names_tls13)
        });
        let (v12, v13) = weir_config::tls_protocols(protocols).unwrap_or((true, true));
        let usable = provider.cipher_suites.iter().any(|s| {
            (v12 && s.version() == &rustls::version::TLS12)
                || (v13 && s.version() == &rustls::version::TLS13)
        });
        if !usable {
            return Err(err(
                setting,
                format!("no cipher suite in {ciphers:?} is available for the allowed TLS versions"),
            ));
        }
    }
    Ok(Arc::new(provider))
}

fn read_certs(
    setting: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| err(setting, format!("{}: {e}", path.display())))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| err(setting, format!("{}: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(err(
            setting,
            format!("{}: no certificate found", path.display()),
        ));
    }
    Ok(certs)
}

fn read_key(setting: &'static str, path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| err(setting, format!("{}: {e}", path.display())))
}

fn read_roots(setting: &'static str, path: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in read_certs(setting, path)? {
        roots
            .add(cert)
            .map_err(|e| err(setting, format!("{}: {e}", path.display())))?;
    }
    Ok(roots)
}
