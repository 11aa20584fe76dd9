//! Entry points for the fuzz targets and their corpus replay (`fuzzing` feature only):
//! the client and server frame walkers the relay runs on every byte, set up the way a
//! session sets them up, but fed from a byte string instead of sockets.
//!
//! Input layout (first byte = `Setup` flags, see there):
//! - [`scan_client`]: `flags, chunk, client bytes...`: the client bytes arrive in
//!   reads of `chunk` bytes (0 = all at once), as the relay would see them.
//! - [`conversation`]: `flags, then records of (direction, len, len bytes)`: direction
//!   even = the client sends, odd = the server sends; both sides are scanned as the
//!   relay scans them, so server answers meet a queue of owed responses.
//!
//! Any error must be one the client can be told with a SQLSTATE; anything else (a
//! panic, an overflow, a scan that claims bytes it was not given) is a bug.

use bytes::BytesMut;
use weir_config::SessionFeatures;
use weir_pool::PoolMetrics;
use weir_wire::frame::Header;

use crate::conversation::Conversation;
use crate::params::ClientParams;
use crate::prepared::StatementRegistry;
use crate::session_state::{ClientSession, Ctx, ServerSession};

/// Largest message the harness accepts: small, so length checks are exercised.
const MAX_MESSAGE: usize = 1 << 16;

/// The session policy the first input byte selects.
#[derive(Debug, Clone, Copy)]
struct Setup {
    transaction_mode: bool,
    features: SessionFeatures,
    cache_unnamed: bool,
    max_prepared: usize,
    startup_params: bool,
    max_pinned: u32,
    replay: bool,
    refresh: bool,
}

impl Setup {
    /// Bit 0: session mode; 1: `session_features = "error"`; 2: `cache_unnamed_statements`;
    /// 3: `max_prepared_statements = 0`; 4: startup parameters set; 5: `max_pinned = 0`;
    /// 6: a settings replay first; 7: a settings read-back and a pin check first.
    fn from_flags(flags: u8) -> Self {
        let bit = |n: u8| flags & (1 << n) != 0;
        Setup {
            transaction_mode: !bit(0),
            features: if bit(1) {
                SessionFeatures::Error
            } else {
                SessionFeatures::Pin
            },
            cache_unnamed: bit(2),
            max_prepared: if bit(3) { 0 } else { 4 },
            startup_params: bit(4),
            max_pinned: if bit(5) { 0 } else { 1 },
            replay: bit(6),
            refresh: bit(7),
        }
    }
}

/// A breaker shared by every run (its state does not change what a scan does).
fn breaker() -> &'static weir_pool::breaker::Breaker {
    static BREAKER: std::sync::OnceLock<weir_pool::breaker::Breaker> = std::sync::OnceLock::new();
    BREAKER.get_or_init(|| weir_pool::breaker::Breaker::new(Default::default()))
}

/// One client, one server connection and the conversation between them.
struct Harness {
    setup: Setup,
    conv: Conversation,
    client: ClientSession,
    server: ServerSession,
    registry: StatementRegistry,
    metrics: PoolMetrics,
    /// Client bytes not consumed yet, and server bytes not consumed yet.
    from_client: Vec<u8>,
    from_server: Vec<u8>,
    /// Bytes for the server not sent yet (a prelude, then rewritten client bytes), and
    /// answers for the client held back (both as the relay keeps them).
    to_server: BytesMut,
    to_client: BytesMut,
    /// Everything the server and the client were sent.
    server_got: Vec<u8>,
    client_got: Vec<u8>,
    /// The client said Terminate or broke the protocol: the session is over.
    ended: bool,
}

impl Harness {
    fn new(flags: u8) -> Self {
        let setup = Setup::from_flags(flags);
        let mut client = ClientSession::default();
        if setup.startup_params {
            client.params = ClientParams::from_startup(
                &[
                    ("TimeZone".to_owned(), "UTC".to_owned()),
                    ("DateStyle".to_owned(), "ISO, MDY".to_owned()),
                ],
                [("application_name", "fuzz"), ("search_path", "app, public")],
                &["search_path".to_owned()],
            );
        }
        let mut h = Harness {
            setup,
            conv: Conversation::default(),
            client,
            server: ServerSession::default(),
            registry: StatementRegistry::default(),
            metrics: PoolMetrics::new(),
            from_client: Vec::new(),
            from_server: Vec::new(),
            to_server: BytesMut::new(),
            to_client: BytesMut::new(),
            server_got: Vec::new(),
            client_got: Vec::new(),
            ended: false,
        };
        if setup.replay {
            h.conv
                .replay("SET search_path = app, public", &mut h.to_server);
        }
        if setup.refresh {
            let sql = h.client.params.refresh_query();
            h.conv.refresh(&sql, setup.startup_params, &mut h.to_server);
            h.conv.check_pins(&mut h.to_server);
        }
        h
    }

    fn ctx(&mut self) -> (&mut Conversation, Ctx<'_>) {
        let ctx = Ctx {
            client: &mut self.client,
            server: &mut self.server,
            registry: &self.registry,
            metrics: &self.metrics,
            transaction_mode: self.setup.transaction_mode,
            max_prepared: self.setup.max_prepared,
            features: self.setup.features,
            max_pinned: self.setup.max_pinned,
            breaker: breaker(),
            cache_unnamed: self.setup.cache_unnamed,
            who: crate::registry::ClientTag::NONE,
        };
        (&mut self.conv, ctx)
    }

    /// The client's bytes arrive: scanned as the relay scans them, and what the server
    /// and the client get is passed on as the relay passes it.
    fn client_sends(&mut self, bytes: &[u8]) {
        if self.ended {
            return;
        }
        self.from_client.extend_from_slice(bytes);
        let buf = std::mem::take(&mut self.from_client);
        let mut to_server = std::mem::take(&mut self.to_server);
        let mut to_client = std::mem::take(&mut self.to_client);
        let (conv, mut ctx) = self.ctx();
        let result = conv.scan_client(&buf, MAX_MESSAGE, &mut ctx, &mut to_server, &mut to_client);
        match result {
            Ok(scan) => {
                assert!(
                    scan.consumed <= buf.len(),
                    "scan_client consumed bytes it was not given"
                );
                if scan.edited {
                    self.server_got.extend_from_slice(&to_server);
                    to_server.clear();
                } else {
                    assert!(to_server.is_empty(), "rewritten bytes not marked as edited");
                    self.server_got.extend_from_slice(&buf[..scan.consumed]);
                }
                if scan.terminate {
                    self.ended = true;
                }
                self.from_client = buf[scan.consumed..].to_vec();
            }
            Err(e) => {
                // The proxy answers with a FATAL ErrorResponse: it must have a SQLSTATE.
                assert!(e.sqlstate().is_some(), "client error without SQLSTATE: {e}");
                self.ended = true;
            }
        }
        if !to_client.is_empty() && self.conv.owes_nothing() {
            self.client_got.extend_from_slice(&to_client);
            to_client.clear();
        }
        self.to_server = to_server;
        self.to_client = to_client;
    }

    /// The server's bytes arrive: scanned and passed on as the relay does.
    fn server_sends(&mut self, bytes: &[u8]) {
        if self.ended {
            return;
        }
        self.from_server.extend_from_slice(bytes);
        let buf = std::mem::take(&mut self.from_server);
        let mut to_client = std::mem::take(&mut self.to_client);
        let (conv, mut ctx) = self.ctx();
        match conv.scan_server(&buf, MAX_MESSAGE, &mut ctx, &mut to_client) {
            Ok(scan) => {
                assert!(
                    scan.consumed <= buf.len(),
                    "scan_server consumed bytes it was not given"
                );
                if !scan.edited {
                    to_client.extend_from_slice(&buf[..scan.consumed]);
                }
                self.client_got.extend_from_slice(&to_client);
                to_client.clear();
                self.from_server = buf[scan.consumed..].to_vec();
            }
            // The relay ends the session with "server sent a malformed message".
            Err(_) => self.ended = true,
        }
        self.to_client = to_client;
        // What the relay asks before releasing the connection: must not panic either.
        let _ = (
            self.conv.is_idle(),
            self.conv.between_transactions(),
            self.conv.idle_in_transaction(),
            self.conv.owes_nothing(),
            self.conv.replay_error(),
        );
    }

    /// Both peers must have been sent well-formed messages: every frame's length
    /// valid, and the stream cut only inside a message that streams through
    /// (CopyData to the server; DataRow or CopyData to the client).
    fn check_output(&self) {
        check_stream(&self.server_got, b"d", "server");
        check_stream(&self.client_got, b"Dd", "client");
    }
}

fn check_stream(mut stream: &[u8], streamed: &[u8], whom: &str) {
    loop {
        match Header::peek(stream, usize::MAX) {
            Ok(Some(h)) if stream.len() >= h.frame_len() => stream = &stream[h.frame_len()..],
            Ok(Some(h)) => {
                assert!(
                    streamed.contains(&h.tag),
                    "the {whom} was sent part of a {:?} message",
                    char::from(h.tag)
                );
                return;
            }
            Ok(None) => {
                assert!(
                    stream.is_empty(),
                    "the {whom} was sent a partial message header"
                );
                return;
            }
            Err(e) => panic!("the {whom} was sent a malformed message: {e}"),
        }
    }
}

/// Client bytes through `Conversation::scan_client`: `flags, chunk, bytes...`.
pub fn scan_client(data: &[u8]) {
    let [flags, chunk, rest @ ..] = data else {
        return;
    };
    let mut h = Harness::new(*flags);
    let chunk = if *chunk == 0 {
        rest.len().max(1)
    } else {
        usize::from(*chunk)
    };
    for piece in rest.chunks(chunk) {
        h.client_sends(piece);
    }
    h.check_output();
}

/// Both directions through `scan_client` and `scan_server`: `flags, (direction, len,
/// bytes)...`; a record cut short by the end of the input is sent as it is.
pub fn conversation(data: &[u8]) {
    let Some((&flags, mut rest)) = data.split_first() else {
        return;
    };
    let mut h = Harness::new(flags);
    while let [direction, len, tail @ ..] = rest {
        let n = usize::from(*len).min(tail.len());
        let (bytes, next) = tail.split_at(n);
        if direction & 1 == 0 {
            h.client_sends(bytes);
        } else {
            h.server_sends(bytes);
        }
        rest = next;
    }
    h.check_output();
}

/// Writes one [`conversation`] record: `direction` 0 = client, 1 = server; longer
/// byte strings become several records.
pub fn put_record(out: &mut Vec<u8>, direction: u8, bytes: &[u8]) {
    for piece in bytes.chunks(255) {
        out.push(direction);
        out.push(piece.len() as u8);
        out.extend_from_slice(piece);
    }
}
