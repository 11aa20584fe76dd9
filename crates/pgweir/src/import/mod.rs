//! `pgweir import pgbouncer.ini [userlist.txt]`: a `proxy.toml` that serves the clients
//! a PgBouncer configuration served, and a note for everything that did not carry over.
//!
//! - [`ini`] reads the file the way PgBouncer does (sections, comments, `%include`);
//! - [`connstr`] parses `[databases]` and `[users]` connection strings;
//! - `settings` maps every `[pgbouncer]` setting, or says why it is not needed or
//!   not supported, in PgBouncer's units (seconds, possibly fractional);
//! - `databases` maps `[databases]` and `[users]`;
//! - `toml_out` writes the result with a comment naming each value's origin.
//!
//! Where PgBouncer's default differs from pgweir's (`pool_mode`, `max_client_conn`,
//! `auth_type`, where to listen), the imported file states PgBouncer's value, so the
//! clients see the pooler they had. pgweir-only behaviour (prepared statements in
//! transaction mode, server-side reuse of unnamed statements, `/metrics`) keeps
//! pgweir's defaults.

pub mod connstr;
mod databases;
pub mod ini;
mod settings;
mod settings_unmapped;
mod toml_out;

#[cfg(test)]
mod tests;

use std::fmt;
use std::path::{Path, PathBuf};

use weir_config::{auth_file, Config};

use toml_out::Out;

/// What an import could not do at all: a file it cannot read or parse.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// A configuration or include file cannot be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A line that is not ini syntax.
    #[error("{at}: {message}")]
    Syntax {
        /// `file:line`.
        at: String,
        /// What is wrong.
        message: String,
    },
    /// The userlist given on the command line is malformed.
    #[error("{0}")]
    AuthFile(#[from] weir_config::ConfigError),
}

/// How a setting fared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoteKind {
    /// pgweir has no equivalent; the behaviour it configured is lost.
    Unsupported,
    /// Not needed in pgweir (it does this differently, or it is about PgBouncer's
    /// own process); nothing is lost.
    Ignored,
    /// Carried over, but as something slightly different (said how).
    Changed,
}

impl fmt::Display for NoteKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NoteKind::Unsupported => "unsupported",
            NoteKind::Ignored => "ignored",
            NoteKind::Changed => "changed",
        })
    }
}

/// One remark about the import, printed on stderr.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    /// `file:line` of the setting, or the file alone.
    pub at: String,
    /// Unsupported, ignored or changed.
    pub kind: NoteKind,
    /// The setting and the reason.
    pub message: String,
}

impl fmt::Display for Note {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}: {}", self.at, self.kind, self.message)
    }
}

/// The result of an import.
#[derive(Debug, Clone)]
pub struct Imported {
    /// The `proxy.toml` text.
    pub toml: String,
    /// Everything that did not carry over unchanged, in file order.
    pub notes: Vec<Note>,
}

impl Imported {
    /// The notes of one kind.
    pub fn of_kind(&self, kind: NoteKind) -> impl Iterator<Item = &Note> {
        self.notes.iter().filter(move |n| n.kind == kind)
    }
}

/// Collects notes while mapping.
#[derive(Debug, Default)]
pub(crate) struct Notes(Vec<Note>);

impl Notes {
    pub(crate) fn push(&mut self, at: &str, kind: NoteKind, message: impl Into<String>) {
        self.0.push(Note {
            at: at.to_owned(),
            kind,
            message: message.into(),
        });
    }
}

/// Imports `ini` (and its `%include`s); `userlist`, when given, replaces the ini's
/// `auth_file`. A relative `auth_file` in the ini is taken relative to the current
/// directory, as PgBouncer does, and written as an absolute path.
///
/// # Errors
/// [`ImportError`] when a file cannot be read or parsed; everything else becomes a
/// [`Note`].
pub fn import(ini_path: &Path, userlist: Option<&Path>) -> Result<Imported, ImportError> {
    let parsed = ini::read(ini_path)?;
    let mut notes = Notes::default();
    for (at, remark) in &parsed.remarks {
        notes.push(at, NoteKind::Changed, remark.clone());
    }
    let mut out = Out::default();
    let socket_dir = settings::map(&parsed.entries, userlist, &mut out, &mut notes)?;
    databases::map(&parsed.entries, &socket_dir, &mut out, &mut notes);
    let toml = out.render(ini_path);
    // The file must load in pgweir; say so if the mapping produced something it
    // rejects. (No database at all is said in the file itself: `--upstream` adds one.)
    let checked = out
        .has_databases()
        .then(|| Config::from_toml_str(&toml, "imported proxy.toml"));
    if let Some(Err(e)) = checked {
        notes.push(
            &ini_path.display().to_string(),
            NoteKind::Changed,
            format!("the imported file does not load as is: {e}"),
        );
    }
    Ok(Imported {
        toml,
        notes: notes.0,
    })
}

/// The users of the auth file (for SCRAM/md5 decisions), read with pgweir's own parser
/// so a file pgweir cannot read fails the import now rather than at start-up.
pub(crate) fn read_userlist(path: &Path) -> Result<Vec<auth_file::AuthFileEntry>, ImportError> {
    Ok(auth_file::read(path)?)
}
