//! Semantic checks of a parsed [`Config`]: the rules TOML types cannot express.
//!
//! Each failure is a [`Problem`] carrying the key path, so the caller that still has the
//! TOML text can point at the line where the key is written.

use crate::locate::{dotted, SpanTree};
use crate::{duration, Config, ConfigError, DatabaseConfig, MAX_MESSAGE_SIZE, MIN_MESSAGE_SIZE};

/// One rule a config breaks, with the key path it is about.
#[derive(Debug)]
pub(crate) struct Problem {
    pub(crate) path: Vec<String>,
    pub(crate) message: String,
}

/// Origin used for problems in values that came from command-line/environment overrides.
pub(crate) const OVERRIDES_ORIGIN: &str = "command line/environment";

impl Problem {
    fn new(path: &[&str], message: impl Into<String>) -> Self {
        Problem {
            path: path.iter().map(|s| (*s).to_owned()).collect(),
            message: message.into(),
        }
    }

    /// Turn into [`ConfigError::Invalid`], with the line from `tree` unless the value was
    /// set by an override (a path under one of `overridden`), which no line of the file shows.
    pub(crate) fn into_error(
        self,
        origin: &str,
        tree: Option<&SpanTree<'_>>,
        overridden: &[Vec<String>],
    ) -> ConfigError {
        let by_override = overridden.iter().any(|o| self.path.starts_with(o));
        let (origin, line) = if by_override {
            (OVERRIDES_ORIGIN, None)
        } else {
            (origin, tree.and_then(|t| t.line_of(&self.path)))
        };
        ConfigError::Invalid {
            origin: origin.to_owned(),
            line,
            key: dotted(&self.path),
            message: self.message,
        }
    }
}

impl Config {
    /// Check the rules that types cannot: at least one database; pool sizes of at least 1
    /// with `min_pool_size` within them; sane `max_message_size` and timeouts; complete
    /// database entries; users' secrets usable with `auth_type` (md5 needs a plain-text
    /// password or an md5 hash, scram-sha-256 a plain-text password or a SCRAM secret).
    /// Users without a password are allowed (they may get one from the auth file).
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] for the first broken rule, naming the key (no line: use
    /// [`Config::from_toml_str`] or [`Config::load`] for errors that point into the file).
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.check().map_err(|p| p.into_error("config", None, &[]))
    }

    pub(crate) fn check(&self) -> Result<(), Problem> {
        if self.max_client_conn == 0 {
            return Err(Problem::new(&["max_client_conn"], "must be at least 1"));
        }
        if !(0.0..=1.0).contains(&self.breaker_error_ratio) {
            return Err(Problem::new(
                &["breaker_error_ratio"],
                "must be between 0 (off) and 1",
            ));
        }
        if self.breaker_probe_max < std::time::Duration::from_millis(50) {
            return Err(Problem::new(
                &["breaker_probe_max"],
                "must be at least 50ms (the first probe interval)",
            ));
        }
        if self.default_pool_size == 0 {
            return Err(Problem::new(
                &["default_pool_size"],
                "must be at least 1 (server connections per database/user pool)",
            ));
        }
        if let Some((key, message)) = self.scaling.problem() {
            return Err(Problem::new(&["scaling", key], message));
        }
        if self.max_pool_size > 0 && self.min_pool_size > self.max_pool_size {
            return Err(Problem::new(
                &["max_pool_size"],
                format!(
                    "must not be below min_pool_size ({} < {})",
                    self.max_pool_size, self.min_pool_size
                ),
            ));
        }
        if self.max_pool_size == 0 && self.min_pool_size > self.default_pool_size {
            return Err(Problem::new(
                &["min_pool_size"],
                format!(
                    "must not exceed default_pool_size ({} > {})",
                    self.min_pool_size, self.default_pool_size
                ),
            ));
        }
        if !(MIN_MESSAGE_SIZE..=MAX_MESSAGE_SIZE).contains(&self.max_message_size) {
            return Err(Problem::new(
                &["max_message_size"],
                format!(
                    "must be between {} and {MAX_MESSAGE_SIZE} bytes, got {}",
                    crate::size::format(u64::from(MIN_MESSAGE_SIZE)),
                    self.max_message_size
                ),
            ));
        }
        if self.server_connect_timeout.is_zero() {
            return Err(Problem::new(
                &["server_connect_timeout"],
                "must be more than 0: a connection attempt needs a deadline",
            ));
        }
        for (key, value) in self.durations() {
            if value > duration::MAX {
                return Err(Problem::new(
                    &[key],
                    format!(
                        "must be at most {} (use 0 to disable a timeout)",
                        duration::format(duration::MAX)
                    ),
                ));
            }
        }
        if self
            .auth_file
            .as_ref()
            .is_some_and(|p| p.as_os_str().is_empty())
        {
            return Err(Problem::new(
                &["auth_file"],
                "must not be empty; remove the key if there is no auth file",
            ));
        }
        self.check_tls()?;
        match (&self.auth_hba_file, self.auth_type) {
            (None, crate::AuthType::Hba) => {
                return Err(Problem::new(
                    &["auth_type"],
                    "\"hba\" needs auth_hba_file (the pg_hba.conf-style rules)",
                ))
            }
            (Some(p), _) if p.as_os_str().is_empty() => {
                return Err(Problem::new(
                    &["auth_hba_file"],
                    "must not be empty; remove the key if there is no hba file",
                ))
            }
            (Some(_), t) if t != crate::AuthType::Hba => {
                return Err(Problem::new(
                    &["auth_hba_file"],
                    format!("is only used with auth_type = \"hba\" (auth_type is \"{t}\")"),
                ))
            }
            _ => {}
        }
        self.check_auth_query(
            &[],
            self.auth_user.as_deref(),
            Some(&self.auth_query),
            self.auth_dbname.as_deref(),
        )?;
        if self.databases.is_empty() {
            return Err(Problem::new(
                &["databases"],
                "at least one database is required: add a [databases.NAME] table \
                 with a `host` (or pass an upstream URL)",
            ));
        }
        for (name, db) in &self.databases {
            self.check_database(name, db)?;
        }
        for (name, user) in &self.users {
            if name.is_empty() {
                return Err(Problem::new(
                    &["users", name],
                    "a user name must not be empty",
                ));
            }
            let Some(secret) = &user.password else {
                continue;
            };
            let path = ["users", name.as_str(), "password"];
            if secret.as_str().is_empty() {
                return Err(Problem::new(
                    &path,
                    "empty password; remove the key to list the user without one",
                ));
            }
            secret
                .check_usable_with(self.auth_type)
                .map_err(|m| Problem::new(&path, m))?;
        }
        Ok(())
    }

    fn check_database(&self, name: &str, db: &DatabaseConfig) -> Result<(), Problem> {
        let at = |key: &'static str| ["databases", name, key];
        if name.is_empty() {
            return Err(Problem::new(
                &["databases", name],
                "a database name must not be empty",
            ));
        }
        if db.host.trim().is_empty() {
            return Err(Problem::new(&at("host"), "must not be empty"));
        }
        if db.host.contains(',') {
            return Err(Problem::new(
                &at("host"),
                "host lists are not supported; give one host name or address",
            ));
        }
        if db.host.starts_with('@') {
            return Err(Problem::new(
                &at("host"),
                "abstract-namespace Unix sockets (@name) are not supported; give a socket \
                 directory (/var/run/postgresql) or a TCP host name or address",
            ));
        }
        if db.port == 0 {
            return Err(Problem::new(&at("port"), "must be from 1 to 65535"));
        }
        for (key, value) in [("dbname", &db.dbname), ("user", &db.user)] {
            if value.as_deref() == Some("") {
                return Err(Problem::new(
                    &at(key),
                    "must not be empty; remove the key to use the default",
                ));
            }
        }
        if db.password.is_some() && db.user.is_none() {
            return Err(Problem::new(
                &at("password"),
                "is only used together with `user` (the server login it is the password of)",
            ));
        }
        if db.pool_size == Some(0) {
            return Err(Problem::new(&at("pool_size"), "must be at least 1"));
        }
        self.check_auth_query(
            &["databases", name],
            db.auth_user.as_deref(),
            db.auth_query.as_ref(),
            db.auth_dbname.as_deref(),
        )?;
        let size = match self.max_pool_size_for(name) {
            0 => self.pool_size_for(name),
            max => max,
        };
        let min = self.min_pool_size_for(name);
        if min > size && self.max_pool_size_for(name) > 0 {
            return Err(Problem::new(
                &at("max_pool_size"),
                format!("max_pool_size ({size}) must not be below min_pool_size ({min}) for database `{name}`"),
            ));
        }
        if min > size {
            let key = if db.min_pool_size.is_some() {
                "min_pool_size"
            } else {
                "pool_size"
            };
            return Err(Problem::new(
                &at(key),
                format!("min_pool_size ({min}) must not exceed pool_size ({size}) for database `{name}`"),
            ));
        }
        if self.max_db_connections > 0 && min > self.max_db_connections {
            let per_db = at("min_pool_size");
            let path: &[&str] = if db.min_pool_size.is_some() {
                &per_db
            } else {
                &["min_pool_size"]
            };
            return Err(Problem::new(
                path,
                format!(
                    "min_pool_size ({min}) for database `{name}` exceeds max_db_connections ({})",
                    self.max_db_connections
                ),
            ));
        }
        Ok(())
    }

    /// `auth_user`, `auth_query` and `auth_dbname` at `prefix` (the top level or one
    /// database): names not empty, the query takes the user as `$1`, the database exists.
    fn check_auth_query(
        &self,
        prefix: &[&str],
        user: Option<&str>,
        query: Option<&String>,
        dbname: Option<&str>,
    ) -> Result<(), Problem> {
        let at = |key: &'static str| {
            let mut path = prefix.to_vec();
            path.push(key);
            path
        };
        if user.is_some_and(|u| u.trim().is_empty()) {
            return Err(Problem::new(
                &at("auth_user"),
                "must not be empty; remove the key to turn auth_query off",
            ));
        }
        if let Some(q) = query {
            if !q.contains("$1") {
                return Err(Problem::new(
                    &at("auth_query"),
                    "must take the user name as the parameter $1, e.g. \
                     \"SELECT usename, passwd FROM pg_catalog.pg_shadow WHERE usename=$1\"",
                ));
            }
        }
        if let Some(d) = dbname {
            if !self.databases.contains_key(d) {
                return Err(Problem::new(
                    &at("auth_dbname"),
                    format!("names no database: add [databases.{d}] or remove the key"),
                ));
            }
        }
        Ok(())
    }

    fn durations(&self) -> [(&'static str, std::time::Duration); 10] {
        [
            ("server_connect_timeout", self.server_connect_timeout),
            ("server_login_retry", self.server_login_retry),
            ("query_wait_timeout", self.query_wait_timeout),
            ("client_login_timeout", self.client_login_timeout),
            ("client_idle_timeout", self.client_idle_timeout),
            ("idle_transaction_timeout", self.idle_transaction_timeout),
            ("server_idle_timeout", self.server_idle_timeout),
            ("server_lifetime", self.server_lifetime),
            ("reserve_pool_timeout", self.reserve_pool_timeout),
            ("auth_query_cache_ttl", self.auth_query_cache_ttl),
        ]
    }
}

/// The TLS versions a `*_tls_protocols` value names: (TLS 1.2, TLS 1.3). PgBouncer's words;
/// `tlsv1.0` and `tlsv1.1` are accepted and ignored (rustls implements neither).
///
/// # Errors
/// An unknown word, or a list that leaves neither TLS 1.2 nor 1.3.
pub fn tls_protocols(value: &str) -> Result<(bool, bool), String> {
    let (mut v12, mut v13) = (false, false);
    for word in value
        .split(|c: char| c == ',' || c == ':' || c.is_whitespace())
        .filter(|w| !w.is_empty())
    {
        match word.to_ascii_lowercase().as_str() {
            "tlsv1.2" => v12 = true,
            "tlsv1.3" => v13 = true,
            "tlsv1.0" | "tlsv1.1" | "tlsv1" => {}
            "all" | "legacy" | "secure" | "default" => (v12, v13) = (true, true),
            other => {
                return Err(format!(
                "unknown TLS protocol `{other}`; expected tlsv1.2, tlsv1.3, secure, all or legacy"
            ))
            }
        }
    }
    if !(v12 || v13) {
        return Err("no TLS version left that pgweir supports (tlsv1.2, tlsv1.3)".to_owned());
    }
    Ok((v12, v13))
}

impl Config {
    fn check_tls(&self) -> Result<(), Problem> {
        for key in ["client_tls_protocols", "server_tls_protocols"] {
            let value = if key.starts_with("client") {
                &self.client_tls_protocols
            } else {
                &self.server_tls_protocols
            };
            tls_protocols(value).map_err(|m| Problem::new(&[key], m))?;
        }
        if self.client_tls_sslmode != crate::SslMode::Disable {
            for (key, file) in [
                ("client_tls_cert_file", &self.client_tls_cert_file),
                ("client_tls_key_file", &self.client_tls_key_file),
            ] {
                if file.is_none() {
                    return Err(Problem::new(
                        &[key],
                        format!(
                            "is required when client_tls_sslmode is `{}`",
                            self.client_tls_sslmode
                        ),
                    ));
                }
            }
        }
        if self.client_tls_sslmode.verifies() && self.client_tls_ca_file.is_none() {
            return Err(Problem::new(
                &["client_tls_ca_file"],
                format!(
                    "is required when client_tls_sslmode is `{}` (client certificates are checked against it)",
                    self.client_tls_sslmode
                ),
            ));
        }
        if self.server_tls_sslmode.verifies() && self.server_tls_ca_file.is_none() {
            return Err(Problem::new(
                &["server_tls_ca_file"],
                format!(
                    "is required when server_tls_sslmode is `{}` (the server's certificate is checked against it)",
                    self.server_tls_sslmode
                ),
            ));
        }
        if self.server_tls_cert_file.is_some() != self.server_tls_key_file.is_some() {
            return Err(Problem::new(
                &["server_tls_key_file"],
                "server_tls_cert_file and server_tls_key_file go together",
            ));
        }
        Ok(())
    }
}
