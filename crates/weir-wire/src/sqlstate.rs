//! The SQLSTATE codes pgweir sends itself (PostgreSQL docs, Appendix A).

/// Protocol violation (malformed or unexpected message).
pub const PROTOCOL_VIOLATION: &str = "08P01";
/// Could not connect to the server.
pub const CONNECTION_FAILURE: &str = "08006";
/// Server refused the connection (pool cannot get one).
pub const CONNECTION_REJECTED: &str = "08004";
/// Wrong password or failed authentication.
pub const INVALID_PASSWORD: &str = "28P01";
/// Authorization failed (unknown user, auth method refused).
pub const INVALID_AUTHORIZATION: &str = "28000";
/// Database does not exist.
pub const INVALID_CATALOG_NAME: &str = "3D000";
/// Too many connections.
pub const TOO_MANY_CONNECTIONS: &str = "53300";
/// Feature not supported.
pub const FEATURE_NOT_SUPPORTED: &str = "0A000";
/// Query canceled (timeouts too).
pub const QUERY_CANCELED: &str = "57014";
/// Administrator shutdown.
pub const ADMIN_SHUTDOWN: &str = "57P01";
/// Idle session timeout.
pub const IDLE_SESSION_TIMEOUT: &str = "57P05";
/// Idle in transaction session timeout.
pub const IDLE_IN_TRANSACTION_TIMEOUT: &str = "25P03";
/// Internal error.
pub const INTERNAL_ERROR: &str = "XX000";
/// Program limit exceeded (message too large).
pub const PROGRAM_LIMIT_EXCEEDED: &str = "54000";
