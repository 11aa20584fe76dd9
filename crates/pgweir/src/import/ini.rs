//! Reading `pgbouncer.ini` the way PgBouncer does: `[section]` headers, `key = value`
//! lines, `;` and `#` comment lines, and `%include FILE` directives that splice another
//! file in at that point (the current section carries on into it and out of it).
//!
//! Like PgBouncer, a relative `%include` path is taken relative to the current working
//! directory; when no such file exists there, the including file's directory is tried
//! too (and a note says so). Includes nest at most [`MAX_INCLUDE_DEPTH`] deep, which also
//! stops an include cycle.

use std::path::{Path, PathBuf};

use super::ImportError;

/// How deep `%include` may nest (PgBouncer's own limit is 10).
pub const MAX_INCLUDE_DEPTH: usize = 10;

/// One `key = value` line with where it was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The section it is in, lowercased (`pgbouncer`, `databases`, `users`, ...).
    pub section: String,
    /// The key as written (database and user names keep their case; quotes removed).
    pub key: String,
    /// The value with surrounding whitespace removed.
    pub value: String,
    /// `file:line`, for notes.
    pub at: String,
}

/// A parsed ini file with its includes spliced in.
#[derive(Debug, Default)]
pub struct Ini {
    /// Every entry in file order (later entries win for `[pgbouncer]` settings).
    pub entries: Vec<Entry>,
    /// Remarks made while reading (an include found next to its file, not in the cwd).
    pub remarks: Vec<(String, String)>,
}

/// Reads `path` and the files it includes.
///
/// # Errors
/// [`ImportError::Read`] for a file that cannot be read, [`ImportError::Syntax`] for a
/// line that is neither a section, a setting, a comment nor an include, and for
/// includes nested too deep.
pub fn read(path: &Path) -> Result<Ini, ImportError> {
    let mut ini = Ini::default();
    let mut section = String::new();
    read_into(path, 0, &mut section, &mut ini)?;
    Ok(ini)
}

fn read_into(
    path: &Path,
    depth: usize,
    section: &mut String,
    ini: &mut Ini,
) -> Result<(), ImportError> {
    let text = std::fs::read_to_string(path).map_err(|source| ImportError::Read {
        path: path.to_owned(),
        source,
    })?;
    for (index, raw) in text.lines().enumerate() {
        let at = format!("{}:{}", path.display(), index + 1);
        let line = raw.trim();
        if line.is_empty() || line.starts_with(';') || line.starts_with('#') {
            continue;
        }
        if let Some(target) = line.strip_prefix("%include") {
            let target = target.trim();
            if target.is_empty() {
                return Err(ImportError::Syntax {
                    at,
                    message: "%include without a file name".to_owned(),
                });
            }
            if depth + 1 >= MAX_INCLUDE_DEPTH {
                return Err(ImportError::Syntax {
                    at,
                    message: format!(
                        "%include nested deeper than {MAX_INCLUDE_DEPTH} files (a cycle?)"
                    ),
                });
            }
            let resolved = resolve_include(path, Path::new(target), &at, ini);
            read_into(&resolved, depth + 1, section, ini)?;
            continue;
        }
        if let Some(rest) = line.strip_prefix('[') {
            let name = rest.strip_suffix(']').ok_or_else(|| ImportError::Syntax {
                at: at.clone(),
                message: format!("section header without `]`: {line}"),
            })?;
            *section = name.trim().to_ascii_lowercase();
            continue;
        }
        let (key, value) = split_key_value(line).ok_or_else(|| ImportError::Syntax {
            at: at.clone(),
            message: format!("expected `key = value`, a [section] or %include, got: {line}"),
        })?;
        ini.entries.push(Entry {
            section: section.clone(),
            key,
            value: value.trim().to_owned(),
            at,
        });
    }
    Ok(())
}

/// PgBouncer's rule (relative to the cwd), with the including file's directory as a
/// fallback so a config directory copied elsewhere still imports.
fn resolve_include(from: &Path, target: &Path, at: &str, ini: &mut Ini) -> PathBuf {
    if target.is_absolute() || target.exists() {
        return target.to_owned();
    }
    let beside = from.parent().unwrap_or(Path::new("")).join(target);
    if beside.exists() {
        ini.remarks.push((
            at.to_owned(),
            format!(
                "%include {}: not found relative to the current directory (PgBouncer's rule); \
                 read {} instead",
                target.display(),
                beside.display()
            ),
        ));
        return beside;
    }
    target.to_owned()
}

/// Splits `key = value`; a key may be a double-quoted name with `""` for a quote
/// (PgBouncer's rule for database names with other characters than `[0-9A-Za-z_.-]`).
fn split_key_value(line: &str) -> Option<(String, &str)> {
    if let Some(rest) = line.strip_prefix('"') {
        let mut name = String::new();
        let mut chars = rest.char_indices().peekable();
        while let Some((i, c)) = chars.next() {
            if c == '"' {
                if chars.peek().is_some_and(|&(_, n)| n == '"') {
                    chars.next();
                    name.push('"');
                    continue;
                }
                let after = rest.get(i + 1..)?.trim_start();
                let value = after.strip_prefix('=')?;
                return Some((name, value));
            }
            name.push(c);
        }
        return None;
    }
    let (key, value) = line.split_once('=')?;
    let key = key.trim();
    if key.is_empty() {
        return None;
    }
    Some((key.to_owned(), value))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).expect("write");
        p
    }

    #[test]
    fn sections_comments_quoted_names_and_includes() {
        let dir = tempfile::tempdir().expect("tempdir");
        write(
            dir.path(),
            "dbs.ini",
            "b = host=h2\n[pgbouncer]\nlisten_port = 7000\n",
        );
        let main = write(
            dir.path(),
            "main.ini",
            "; comment\n# another\n[Databases]\n\"my \"\"db\"\"\" = host=h1\n\
             %include dbs.ini\npool_mode = session\n",
        );
        let ini = read(&main).expect("reads");
        let got: Vec<(&str, &str, &str)> = ini
            .entries
            .iter()
            .map(|e| (e.section.as_str(), e.key.as_str(), e.value.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                ("databases", "my \"db\"", "host=h1"),
                ("databases", "b", "host=h2"),
                ("pgbouncer", "listen_port", "7000"),
                // The include's section carries on after it, as in PgBouncer.
                ("pgbouncer", "pool_mode", "session"),
            ]
        );
        assert!(ini.entries[1].at.ends_with("dbs.ini:1"));
        assert_eq!(
            ini.remarks.len(),
            1,
            "found beside the file, not in the cwd"
        );
    }

    #[test]
    fn include_cycles_and_bad_lines_are_errors() {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = dir.path().join("a.ini");
        std::fs::write(&a, format!("%include {}\n", a.display())).expect("write");
        let e = read(&a).expect_err("cycle");
        assert!(e.to_string().contains("deeper"), "{e}");
        let bad = write(dir.path(), "bad.ini", "[pgbouncer]\njust words\n");
        let e = read(&bad).expect_err("syntax");
        assert!(e.to_string().contains("bad.ini:2"), "{e}");
    }
}
