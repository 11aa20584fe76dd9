//! [`ConfigError`]: every way loading a config can fail, each naming the file, line and key
//! where it can, e.g. `proxy.toml:12: key `databases.app.pool_size`: must be at least 1`.

use std::path::PathBuf;

/// A config that could not be read, parsed or accepted.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A file (the config or the auth file) could not be read.
    // The OS error is in the message, so it is not also chained as a source (a
    // chain printer such as anyhow's `{:#}` would show it twice).
    #[error("{}: {source}", path.display())]
    Io {
        /// The file that could not be read.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// The TOML is malformed, has an unknown key, or a value of the wrong type.
    #[error("{origin}{}: {message}", line_suffix(Some(*line).filter(|l| *l > 0)))]
    Parse {
        /// The file (or other source) the text came from.
        origin: String,
        /// 1-based line of the problem; 0 if the parser gave no position.
        line: usize,
        /// What is wrong, prefixed with the key when it is known.
        message: String,
    },
    /// The TOML is well-formed but a value is not acceptable.
    #[error("{origin}{}: key `{key}`: {message}", line_suffix(*line))]
    Invalid {
        /// The file (or other source) the setting came from.
        origin: String,
        /// 1-based line of the key, when it was written in the file.
        line: Option<usize>,
        /// Dotted path of the setting, e.g. `databases.app.pool_size`.
        key: String,
        /// What is wrong and what is expected.
        message: String,
    },
    /// A line of the auth file (PgBouncer's `userlist.txt` format) is malformed or unusable.
    #[error("{}:{line}: {message}", path.display())]
    AuthFile {
        /// The auth file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong with the line.
        message: String,
    },
    /// The upstream URL (`postgres://user:pass@host:port/db`) is malformed or unsupported.
    /// The message never repeats the URL, which may hold a password.
    #[error("upstream URL: {message}")]
    Url {
        /// What is wrong with the URL.
        message: String,
    },
}

fn line_suffix(line: Option<usize>) -> String {
    line.map(|l| format!(":{l}")).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display() {
        let e = ConfigError::Invalid {
            origin: "proxy.toml".into(),
            line: Some(12),
            key: "databases.app.pool_size".into(),
            message: "must be at least 1".into(),
        };
        assert_eq!(
            e.to_string(),
            "proxy.toml:12: key `databases.app.pool_size`: must be at least 1"
        );
        let e = ConfigError::Invalid {
            origin: "config".into(),
            line: None,
            key: "databases".into(),
            message: "x".into(),
        };
        assert_eq!(e.to_string(), "config: key `databases`: x");
        let e = ConfigError::Parse {
            origin: "a.toml".into(),
            line: 0,
            message: "m".into(),
        };
        assert_eq!(e.to_string(), "a.toml: m");
        let e = ConfigError::AuthFile {
            path: "users.txt".into(),
            line: 3,
            message: "m".into(),
        };
        assert_eq!(e.to_string(), "users.txt:3: m");
    }
}
