//! The small value types of the config: pool mode, auth type, log format, and stored secrets.
//!
//! Each enum parses from and prints as the exact word used in `proxy.toml` and on the
//! command line (`"transaction"`, `"scram-sha-256"`, `"json"`), through one `FromStr`
//! shared by serde and clap, so the error text is the same everywhere.

use std::fmt;
use std::str::FromStr;

/// A word that is not one of a setting's allowed values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {setting} `{value}`; expected one of: {expected}")]
pub struct ParseSettingError {
    /// The setting being parsed, e.g. `pool_mode`.
    pub setting: &'static str,
    /// The rejected text.
    pub value: String,
    /// The allowed words, comma-separated.
    pub expected: &'static str,
}

/// Defines an enum of setting words with `FromStr` (case-insensitive), `Display`,
/// `as_str` and a serde `Deserialize` that goes through `FromStr`.
macro_rules! setting_enum {
    (
        $(#[$meta:meta])*
        $name:ident, $setting:literal, $expected:literal {
            $($(#[$vmeta:meta])* $variant:ident => $word:literal),+ $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vmeta])* $variant),+
        }

        impl $name {
            /// The word used for this value in `proxy.toml`.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $word),+
                }
            }
        }

        impl FromStr for $name {
            type Err = ParseSettingError;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                $(if s.eq_ignore_ascii_case($word) {
                    return Ok($name::$variant);
                })+
                Err(ParseSettingError { setting: $setting, value: s.to_owned(), expected: $expected })
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                text.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

setting_enum! {
    /// TLS on one leg, with libpq's `sslmode` words (PgBouncer's `client_tls_sslmode` and
    /// `server_tls_sslmode`).
    ///
    /// Client leg (pgweir is the server): `disable` refuses TLS; `allow` and `prefer`
    /// accept TLS when the client asks; `require` refuses plaintext logins; `verify-ca`
    /// and `verify-full` also demand a client certificate signed by `client_tls_ca_file`.
    ///
    /// Server leg (pgweir is the client): `disable` never asks; `allow` and `prefer` ask
    /// and fall back to plaintext when the server says no; `require` fails without TLS but
    /// checks no certificate; `verify-ca` checks the chain against `server_tls_ca_file`;
    /// `verify-full` also checks the host name.
    SslMode, "sslmode", "disable, allow, prefer, require, verify-ca, verify-full" {
        /// No TLS.
        Disable => "disable",
        /// TLS if the other side wants it.
        Allow => "allow",
        /// TLS if the other side can.
        Prefer => "prefer",
        /// TLS always, no certificate check.
        Require => "require",
        /// TLS always, the peer's certificate chain checked against the CA file.
        VerifyCa => "verify-ca",
        /// As `verify-ca`, and (server leg) the server's name matches its certificate.
        VerifyFull => "verify-full",
    }
}

impl SslMode {
    /// Whether plaintext is refused.
    pub const fn requires_tls(self) -> bool {
        matches!(
            self,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull
        )
    }

    /// Whether the peer's certificate is checked against a CA.
    pub const fn verifies(self) -> bool {
        matches!(self, SslMode::VerifyCa | SslMode::VerifyFull)
    }
}

setting_enum! {
    /// When a server connection goes back to the pool.
    PoolMode, "pool_mode", "session, transaction" {
        /// After the client disconnects (the server is reset with `server_reset_query`).
        Session => "session",
        /// After each transaction (`ReadyForQuery` with status `I`).
        Transaction => "transaction",
    }
}

setting_enum! {
    /// How clients prove who they are to the proxy.
    AuthType, "auth_type", "scram-sha-256, md5, trust, hba" {
        /// SCRAM-SHA-256; stored secrets must be SCRAM secrets or plain text.
        ScramSha256 => "scram-sha-256",
        /// MD5 password hashing; stored secrets must be `md5…` hashes or plain text.
        Md5 => "md5",
        /// No password check: any listed or unlisted user name is accepted.
        Trust => "trust",
        /// The method comes from the first matching rule of `auth_hba_file`.
        Hba => "hba",
    }
}

setting_enum! {
    /// What transaction mode does with a feature that needs the whole session.
    SessionFeatures, "session_features", "pin, error" {
        /// Keep the client on its server connection until the feature is released.
        Pin => "pin",
        /// Refuse the statement with an error that says why and what to do.
        Error => "error",
    }
}

setting_enum! {
    /// The operation mode: how the pools, shedding and the breakers lean.
    Mode, "mode", "normal, high_performance, resource_saver, emergency" {
        /// The configuration as written.
        Normal => "normal",
        /// Pools kept warm at their upper bound; lax shedding (twice the wait budget).
        HighPerformance => "high_performance",
        /// Half-size pools, no warm minimum, idle servers closed after 30 s.
        ResourceSaver => "resource_saver",
        /// New work that cannot be served at once is shed (critical and high work still
        /// waits); breakers open on the first failure.
        Emergency => "emergency",
    }
}

setting_enum! {
    /// How important a client's work is: the wait queue serves more important classes
    /// first (with aging) and sheds the least important first.
    Priority, "priority", "critical, high, normal, low, background" {
        /// Served first, shed last, even in `emergency` mode.
        Critical => "critical",
        /// Before normal work; still queues in `emergency` mode.
        High => "high",
        /// Everyone, unless told otherwise.
        Normal => "normal",
        /// After normal work.
        Low => "low",
        /// Served last, shed first.
        Background => "background",
    }
}

setting_enum! {
    /// How log lines are written.
    LogFormat, "log_format", "text, json" {
        /// Human-readable lines.
        Text => "text",
        /// One JSON object per line.
        Json => "json",
    }
}

/// A stored credential, classified by its form: `"SCRAM-SHA-256$..."` is [`Secret::Scram`],
/// `"md5"` followed by 32 lowercase hex digits is [`Secret::Md5`], anything else is [`Secret::Plain`].
///
/// `Debug` never prints the secret itself.
#[derive(Clone, PartialEq, Eq)]
pub enum Secret {
    /// A clear-text password.
    Plain(String),
    /// `"md5" + md5(password + username)` as PostgreSQL stores it.
    Md5(String),
    /// `SCRAM-SHA-256$<iterations>:<salt>$<storedkey>:<serverkey>` (RFC 5803 form).
    Scram(String),
}

impl Secret {
    /// Classify a stored credential by its form (the same rules as PostgreSQL's `get_password_type`).
    pub fn classify(s: String) -> Secret {
        if s.starts_with("SCRAM-SHA-256$") {
            Secret::Scram(s)
        } else if is_md5_hash(&s) {
            Secret::Md5(s)
        } else {
            Secret::Plain(s)
        }
    }

    /// The stored text, as written in the config or auth file.
    pub fn as_str(&self) -> &str {
        match self {
            Secret::Plain(s) | Secret::Md5(s) | Secret::Scram(s) => s,
        }
    }

    /// The kind of secret as a word for messages: `plain-text password`, `md5 hash`, `SCRAM secret`.
    pub fn kind(&self) -> &'static str {
        match self {
            Secret::Plain(_) => "plain-text password",
            Secret::Md5(_) => "md5 hash",
            Secret::Scram(_) => "SCRAM secret",
        }
    }

    /// Whether a client can authenticate against this secret with `auth_type`. Under
    /// `md5` every kind works: a user whose secret is a SCRAM verifier logs in with SCRAM
    /// instead, as PostgreSQL's and PgBouncer's md5 method do, so one auth file copied
    /// from `pg_authid` may mix both kinds.
    ///
    /// # Errors
    /// A message saying which kinds of secret `auth_type` needs.
    pub fn check_usable_with(&self, auth_type: AuthType) -> Result<(), String> {
        match (auth_type, self) {
            (AuthType::Trust | AuthType::Md5 | AuthType::Hba, _)
            | (AuthType::ScramSha256, Secret::Plain(_) | Secret::Scram(_)) => {}
            (AuthType::ScramSha256, Secret::Md5(_)) => {
                return Err("an md5 hash cannot verify SCRAM authentication \
                            (auth_type = \"scram-sha-256\" needs a plain-text password or a SCRAM secret)"
                    .to_owned())
            }
        }
        if let Secret::Scram(s) = self {
            check_scram_form(s)?;
        }
        Ok(())
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let variant = match self {
            Secret::Plain(_) => "Plain",
            Secret::Md5(_) => "Md5",
            Secret::Scram(_) => "Scram",
        };
        write!(f, "Secret::{variant}(<redacted>)")
    }
}

impl<'de> serde::Deserialize<'de> for Secret {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Secret::classify)
    }
}

fn is_md5_hash(s: &str) -> bool {
    s.len() == 35
        && s.starts_with("md5")
        && s.bytes()
            .skip(3)
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// `SCRAM-SHA-256$<iterations>:<salt>$<storedkey>:<serverkey>` with base64 parts.
fn check_scram_form(s: &str) -> Result<(), String> {
    let bad = || {
        "malformed SCRAM secret: expected SCRAM-SHA-256$<iterations>:<salt>$<storedkey>:<serverkey>"
            .to_owned()
    };
    let body = s.strip_prefix("SCRAM-SHA-256$").ok_or_else(bad)?;
    let (iter_salt, keys) = body.split_once('$').ok_or_else(bad)?;
    let (iterations, salt) = iter_salt.split_once(':').ok_or_else(bad)?;
    let (stored, server) = keys.split_once(':').ok_or_else(bad)?;
    match iterations.parse::<u32>() {
        Ok(n) if n > 0 => {}
        _ => return Err(bad()),
    }
    let base64 = |p: &str| {
        !p.is_empty()
            && p.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'='))
    };
    if [salt, stored, server].into_iter().all(base64) {
        Ok(())
    } else {
        Err(bad())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SCRAM: &str =
        "SCRAM-SHA-256$4096:c2FsdA==$c3RvcmVka2V5c3RvcmVka2V5:c2VydmVya2V5c2VydmVya2V5";

    #[test]
    fn classify() {
        assert!(matches!(
            Secret::classify("secret".into()),
            Secret::Plain(_)
        ));
        let md5 = "md545f2603610af569b6155c45067268c6b".to_owned();
        assert_eq!(Secret::classify(md5.clone()), Secret::Md5(md5));
        // Upper-case hex or a wrong length is a password that merely looks like a hash.
        assert!(matches!(
            Secret::classify("md545F2603610AF569B6155C45067268C6B".into()),
            Secret::Plain(_)
        ));
        assert!(matches!(
            Secret::classify("md5abc".into()),
            Secret::Plain(_)
        ));
        assert!(matches!(Secret::classify(SCRAM.into()), Secret::Scram(_)));
        assert_eq!(Secret::classify(SCRAM.into()).as_str(), SCRAM);
    }

    #[test]
    fn debug_redacts() {
        for s in ["hunter2", "md545f2603610af569b6155c45067268c6b", SCRAM] {
            let shown = format!("{:?}", Secret::classify(s.to_owned()));
            assert!(!shown.contains(s), "{shown}");
            assert!(shown.contains("<redacted>"));
        }
        assert_eq!(
            format!("{:?}", Secret::Plain("x".into())),
            "Secret::Plain(<redacted>)"
        );
    }

    #[test]
    fn usable_with() {
        let plain = Secret::Plain("p".into());
        let md5 = Secret::classify("md545f2603610af569b6155c45067268c6b".into());
        let scram = Secret::classify(SCRAM.into());
        for auth in [AuthType::ScramSha256, AuthType::Md5, AuthType::Trust] {
            assert!(plain.check_usable_with(auth).is_ok());
        }
        assert!(md5.check_usable_with(AuthType::Md5).is_ok());
        assert!(md5.check_usable_with(AuthType::ScramSha256).is_err());
        assert!(scram.check_usable_with(AuthType::ScramSha256).is_ok());
        // md5 logs a user with a SCRAM secret in with SCRAM instead.
        assert!(scram.check_usable_with(AuthType::Md5).is_ok());
        let broken = Secret::classify("SCRAM-SHA-256$x:salt$a:b".into());
        for auth in [AuthType::ScramSha256, AuthType::Md5] {
            assert!(broken
                .check_usable_with(auth)
                .unwrap_err()
                .contains("malformed"));
        }
    }

    #[test]
    fn enums_parse_and_print() {
        assert_eq!("session".parse(), Ok(PoolMode::Session));
        assert_eq!("Transaction".parse(), Ok(PoolMode::Transaction));
        assert_eq!(PoolMode::Transaction.to_string(), "transaction");
        assert_eq!("scram-sha-256".parse(), Ok(AuthType::ScramSha256));
        assert_eq!("md5".parse(), Ok(AuthType::Md5));
        assert_eq!("trust".parse(), Ok(AuthType::Trust));
        assert_eq!(AuthType::ScramSha256.to_string(), "scram-sha-256");
        assert_eq!("json".parse(), Ok(LogFormat::Json));
        assert_eq!(LogFormat::Text.to_string(), "text");
        let err = "statement".parse::<PoolMode>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown pool_mode `statement`; expected one of: session, transaction"
        );
    }
}
