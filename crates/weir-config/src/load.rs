//! Loading a config: parse the TOML, resolve paths against the config file's directory,
//! merge the auth file's users, apply command-line/environment [`Overrides`], validate.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use crate::locate::{dotted, line_at, SpanTree};
use crate::{auth_file, url, Config, ConfigError, LogFormat, PoolMode, REDACTED};

/// Command-line / environment values; each `Some` wins over everything in the file.
/// `Debug` hides the upstream URL, which holds a password.
#[derive(Default, Clone)]
pub struct Overrides {
    /// Replaces `listen`.
    pub listen: Option<SocketAddr>,
    /// An upstream URL added with [`Config::apply_upstream_url`].
    pub upstream: Option<String>,
    /// Replaces `pool_mode`, and clears per-database and per-user pool modes.
    pub pool_mode: Option<PoolMode>,
    /// Replaces `default_pool_size`, and clears per-database pool sizes.
    pub pool_size: Option<u32>,
    /// Replaces `max_client_conn`.
    pub max_client_conn: Option<u32>,
    /// Replaces `log_format`.
    pub log_format: Option<LogFormat>,
    /// Replaces `admin_users`.
    pub admin_users: Option<Vec<String>>,
    /// Replaces `stats_users`.
    pub stats_users: Option<Vec<String>>,
    /// Replaces `http_listen` (`None` inside = off).
    pub http_listen: Option<Option<SocketAddr>>,
}

impl fmt::Debug for Overrides {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Overrides")
            .field("listen", &self.listen)
            .field("upstream", &self.upstream.as_ref().map(|_| REDACTED))
            .field("pool_mode", &self.pool_mode)
            .field("pool_size", &self.pool_size)
            .field("max_client_conn", &self.max_client_conn)
            .field("log_format", &self.log_format)
            .field("admin_users", &self.admin_users)
            .field("stats_users", &self.stats_users)
            .field("http_listen", &self.http_listen)
            .finish()
    }
}

impl Config {
    /// Parse and validate TOML text; `origin` names the source in errors. Does not read `auth_file`.
    ///
    /// # Errors
    /// [`ConfigError::Parse`] for malformed TOML, unknown keys and wrong types;
    /// [`ConfigError::Invalid`] for values [`Config::validate`] rejects; both with the line.
    pub fn from_toml_str(text: &str, origin: &str) -> Result<Config, ConfigError> {
        let config = parse_toml(text, origin)?;
        config
            .check()
            .map_err(|p| p.into_error(origin, SpanTree::parse(text).as_ref(), &[]))?;
        Ok(config)
    }

    /// Read a config file, parse it, read its auth file (relative to the config file's
    /// directory) and merge the users, then validate.
    ///
    /// # Errors
    /// As [`Config::load_with_overrides`].
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        Config::load_with_overrides(path, &Overrides::default())
    }

    /// [`Config::load`] with `overrides` applied before validation, so a file without
    /// databases is fine when the overrides bring an upstream URL.
    ///
    /// # Errors
    /// [`ConfigError::Io`] if a file cannot be read; [`ConfigError::Parse`] or
    /// [`ConfigError::Invalid`] (with the line) for the config; [`ConfigError::AuthFile`]
    /// for a bad auth-file line or a secret unusable with `auth_type`; [`ConfigError::Url`]
    /// for a bad upstream URL.
    pub fn load_with_overrides(path: &Path, overrides: &Overrides) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            path: path.to_owned(),
            source,
        })?;
        let origin = path.display().to_string();
        let mut config = parse_toml(&text, &origin)?;
        if let Some(file) = config.auth_file.take() {
            let resolved = path.parent().unwrap_or(Path::new("")).join(file);
            let entries = auth_file::read(&resolved)?;
            config.merge_auth_file(entries, &resolved)?;
            config.auth_file = Some(resolved);
        }
        let dir = path.parent().unwrap_or(Path::new(""));
        if let Some(file) = config.auth_hba_file.take() {
            config.auth_hba_file = Some(dir.join(file));
            config.read_hba_file()?;
        }
        for file in config.tls_files_mut() {
            if let Some(p) = file.as_mut() {
                *p = dir.join(&*p);
            }
        }
        if let Some(p) = config.unix_socket_dir.as_mut() {
            *p = dir.join(&*p);
        }
        let overridden = config.apply_overrides_unchecked(overrides)?;
        let tree = SpanTree::parse(&text);
        config
            .check()
            .map_err(|p| p.into_error(&origin, tree.as_ref(), &overridden))?;
        Ok(config)
    }

    /// The TLS certificate, key and CA file settings (resolved against the config file's
    /// directory by [`Config::load`]).
    fn tls_files_mut(&mut self) -> [&mut Option<PathBuf>; 6] {
        [
            &mut self.client_tls_cert_file,
            &mut self.client_tls_key_file,
            &mut self.client_tls_ca_file,
            &mut self.server_tls_ca_file,
            &mut self.server_tls_cert_file,
            &mut self.server_tls_key_file,
        ]
    }

    /// Apply command-line / environment overrides (each `Some` wins over the file), then re-validate.
    ///
    /// # Errors
    /// [`ConfigError::Url`] for a bad upstream URL; [`ConfigError::Invalid`] if the result
    /// does not validate.
    pub fn apply_overrides(&mut self, o: &Overrides) -> Result<(), ConfigError> {
        let overridden = self.apply_overrides_unchecked(o)?;
        self.check()
            .map_err(|p| p.into_error("config", None, &overridden))
    }

    /// Merge auth-file users under `[users]`: a `[users]` password wins over the file's.
    fn merge_auth_file(
        &mut self,
        entries: Vec<auth_file::AuthFileEntry>,
        path: &Path,
    ) -> Result<(), ConfigError> {
        for entry in entries {
            let user = self.users.entry(entry.user).or_default();
            if user.password.is_some() {
                continue;
            }
            if let Some(secret) = &entry.secret {
                secret
                    .check_usable_with(self.auth_type)
                    .map_err(|message| ConfigError::AuthFile {
                        path: path.to_owned(),
                        line: entry.line,
                        message,
                    })?;
            }
            user.password = entry.secret;
        }
        Ok(())
    }

    /// Apply overrides without validating; returns the key paths they set.
    fn apply_overrides_unchecked(
        &mut self,
        o: &Overrides,
    ) -> Result<Vec<Vec<String>>, ConfigError> {
        let mut set: Vec<Vec<String>> = Vec::new();
        let mut mark = |path: &[&str]| set.push(path.iter().map(|s| (*s).to_owned()).collect());
        if let Some(upstream) = &o.upstream {
            let up = url::parse(upstream)?;
            mark(&["databases", &up.dbname]);
            mark(&["users", &up.user]);
            self.apply_upstream_url(upstream)?;
        }
        if let Some(listen) = o.listen {
            self.listen = listen;
            mark(&["listen"]);
        }
        if let Some(mode) = o.pool_mode {
            self.pool_mode = mode;
            self.databases.values_mut().for_each(|d| d.pool_mode = None);
            self.users.values_mut().for_each(|u| u.pool_mode = None);
            mark(&["pool_mode"]);
        }
        if let Some(size) = o.pool_size {
            self.default_pool_size = size;
            self.databases.values_mut().for_each(|d| d.pool_size = None);
            mark(&["default_pool_size"]);
        }
        if let Some(max) = o.max_client_conn {
            self.max_client_conn = max;
            mark(&["max_client_conn"]);
        }
        if let Some(format) = o.log_format {
            self.log_format = format;
            mark(&["log_format"]);
        }
        if let Some(users) = &o.admin_users {
            self.admin_users = users.clone();
            mark(&["admin_users"]);
        }
        if let Some(users) = &o.stats_users {
            self.stats_users = users.clone();
            mark(&["stats_users"]);
        }
        if let Some(addr) = o.http_listen {
            self.http_listen = addr;
            mark(&["http_listen"]);
        }
        Ok(set)
    }
}

/// Parse TOML into a [`Config`] without validating it.
fn parse_toml(text: &str, origin: &str) -> Result<Config, ConfigError> {
    toml::from_str::<Config>(text).map_err(|e| {
        let offset = e.span().map(|s| s.start);
        // Keep the message on one line: the parser's may span several.
        let mut message = e
            .message()
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect::<Vec<_>>()
            .join("; ");
        // Name the key the parser complained about; unknown-field messages already do.
        if let (Some(offset), Some(tree)) = (offset, SpanTree::parse(text)) {
            let path = tree.path_at(offset);
            if !path.is_empty() && !message.starts_with("unknown field") {
                message = format!("key `{}`: {message}", dotted(&path));
            }
        }
        ConfigError::Parse {
            origin: origin.to_owned(),
            line: offset.map_or(0, |o| line_at(text, o)),
            message,
        }
    })
}
