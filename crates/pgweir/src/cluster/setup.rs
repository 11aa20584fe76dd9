//! What [`TempCluster::start`](super::TempCluster::start) checks and sends: option
//! validation, the role/database SQL, and quoting for SQL and URLs.

use std::fmt::Write as _;

use super::{ClusterError, ClusterOptions, SUPERUSER};

pub(super) fn validate(opts: &ClusterOptions) -> Result<(), ClusterError> {
    let bad = |s: &str| s.is_empty() || s.contains(['"', '\0', '\n', '\r']);
    if let Some(u) = opts
        .users
        .iter()
        .find(|u| bad(&u.name) || u.name == SUPERUSER)
    {
        return Err(ClusterError::InvalidOptions(format!(
            "user name {:?} is empty, reserved or has quotes/control characters",
            u.name
        )));
    }
    if let Some(u) = opts.users.iter().find(|u| u.password.contains('\0')) {
        return Err(ClusterError::InvalidOptions(format!(
            "password of {:?} contains NUL",
            u.name
        )));
    }
    for (db, owner) in &opts.databases {
        if bad(db) {
            return Err(ClusterError::InvalidOptions(format!(
                "database name {db:?} is empty or has quotes/control characters"
            )));
        }
        if owner != SUPERUSER && !opts.users.iter().any(|u| &u.name == owner) {
            return Err(ClusterError::InvalidOptions(format!(
                "owner {owner:?} of database {db:?} is not in `users`"
            )));
        }
    }
    if opts.max_connections < 10 {
        return Err(ClusterError::InvalidOptions(
            "max_connections must be at least 10".into(),
        ));
    }
    Ok(())
}

/// SQL creating the roles (hash chosen per role) and then the databases; psql sends
/// the statements one at a time, so CREATE DATABASE is not inside a transaction.
pub(super) fn setup_sql(opts: &ClusterOptions) -> String {
    let mut sql = String::new();
    for u in &opts.users {
        let _ = writeln!(
            sql,
            "SET password_encryption = '{}';",
            u.method.password_encryption()
        );
        let _ = writeln!(
            sql,
            "CREATE ROLE {} LOGIN PASSWORD {};",
            ident(&u.name),
            literal(&u.password)
        );
    }
    for (db, owner) in &opts.databases {
        let _ = writeln!(sql, "CREATE DATABASE {} OWNER {};", ident(db), ident(owner));
    }
    sql
}

fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

pub(super) fn literal(text: &str) -> String {
    // standard_conforming_strings is on, so only the quote needs doubling.
    format!("'{}'", text.replace('\'', "''"))
}

/// Percent-encodes everything but RFC 3986 unreserved characters.
pub(super) fn pct(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}
