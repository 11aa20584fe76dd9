//! Writing the imported `proxy.toml`: top-level settings first, then one table per
//! database and per user, each value with a comment naming where it came from.
//!
//! Hand-written rather than serialized so the comments survive; strings are TOML basic
//! strings with every character TOML requires escaped, keys are bare when they can be.

use std::fmt::Write as _;
use std::path::Path;

/// One `key = value  # comment` line; `value` is already TOML.
#[derive(Debug, Clone)]
pub(crate) struct Line {
    pub(crate) key: String,
    pub(crate) value: String,
    pub(crate) comment: String,
}

/// The file being built.
#[derive(Debug, Default)]
pub(crate) struct Out {
    globals: Vec<Line>,
    databases: Vec<(String, Vec<Line>)>,
    users: Vec<(String, Vec<Line>)>,
    /// Comment lines written under the header (e.g. "no databases").
    pub(crate) remarks: Vec<String>,
}

fn set(lines: &mut Vec<Line>, key: &str, value: String, comment: String) {
    let line = Line {
        key: key.to_owned(),
        value,
        comment,
    };
    match lines.iter_mut().find(|l| l.key == key) {
        Some(old) => *old = line,
        None => lines.push(line),
    }
}

fn table<'a>(tables: &'a mut Vec<(String, Vec<Line>)>, name: &str) -> &'a mut Vec<Line> {
    let i = match tables.iter().position(|(n, _)| n == name) {
        Some(i) => i,
        None => {
            tables.push((name.to_owned(), Vec::new()));
            tables.len() - 1
        }
    };
    &mut tables[i].1
}

impl Out {
    /// Sets a top-level key (a later value replaces an earlier one).
    pub(crate) fn global(&mut self, key: &str, value: String, comment: impl Into<String>) {
        set(&mut self.globals, key, value, comment.into());
    }

    /// Starts (or replaces) the table of database `name`.
    pub(crate) fn new_database(&mut self, name: &str) {
        table(&mut self.databases, name).clear();
    }

    /// Sets a key of database `name`.
    pub(crate) fn database(&mut self, name: &str, key: &str, value: String, comment: &str) {
        set(
            table(&mut self.databases, name),
            key,
            value,
            comment.to_owned(),
        );
    }

    /// Sets a key of user `name` (creating the table).
    pub(crate) fn user(&mut self, name: &str, key: &str, value: String, comment: &str) {
        set(table(&mut self.users, name), key, value, comment.to_owned());
    }

    /// Whether any database was written.
    pub(crate) fn has_databases(&self) -> bool {
        !self.databases.is_empty()
    }

    /// The whole file.
    pub(crate) fn render(&self, source: &Path) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "# proxy.toml imported from {} by `pgweir import`.",
            source.display()
        );
        s.push_str(
            "# Check it with `pgweir check --config proxy.toml`. Settings that did not carry\n\
             # over were listed on stderr; see README.md, \"Migrating from PgBouncer\".\n",
        );
        for r in &self.remarks {
            let _ = writeln!(s, "# {r}");
        }
        s.push('\n');
        write_lines(&mut s, &self.globals);
        for (kind, tables) in [("databases", &self.databases), ("users", &self.users)] {
            for (name, lines) in tables {
                let _ = writeln!(s, "\n[{kind}.{}]", key(name));
                write_lines(&mut s, lines);
            }
        }
        s
    }
}

fn write_lines(s: &mut String, lines: &[Line]) {
    for l in lines {
        let _ = write!(s, "{} = {}", key(&l.key), l.value);
        if !l.comment.is_empty() {
            // A comment never spans lines.
            let _ = write!(s, "  # {}", l.comment.replace(['\n', '\r'], " "));
        }
        s.push('\n');
    }
}

/// A TOML basic string.
pub(crate) fn string(v: &str) -> String {
    let mut s = String::with_capacity(v.len() + 2);
    s.push('"');
    for c in v.chars() {
        match c {
            '"' => s.push_str("\\\""),
            '\\' => s.push_str("\\\\"),
            '\n' => s.push_str("\\n"),
            '\r' => s.push_str("\\r"),
            '\t' => s.push_str("\\t"),
            c if c.is_control() => {
                let _ = write!(s, "\\u{:04X}", u32::from(c));
            }
            c => s.push(c),
        }
    }
    s.push('"');
    s
}

/// A TOML array of strings.
pub(crate) fn strings(items: &[String]) -> String {
    let inner: Vec<String> = items.iter().map(|i| string(i)).collect();
    format!("[{}]", inner.join(", "))
}

/// A key: bare when it only has `A-Za-z0-9_-`, else quoted.
pub(crate) fn key(k: &str) -> String {
    let bare = !k.is_empty()
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if bare {
        k.to_owned()
    } else {
        string(k)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_and_keys_round_trip_through_toml() {
        let odd = "a \"quoted\" \\ name\twith\u{1} control";
        let mut out = Out::default();
        out.global("server_reset_query", string(odd), "from x:1");
        out.database("my db.x", "host", string("h"), "");
        out.user("bob", "pool_mode", string("session"), "");
        let text = out.render(Path::new("x.ini"));
        let v: toml::Value = toml::from_str(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert_eq!(v["server_reset_query"].as_str(), Some(odd));
        assert_eq!(v["databases"]["my db.x"]["host"].as_str(), Some("h"));
        assert_eq!(v["users"]["bob"]["pool_mode"].as_str(), Some("session"));
    }
}
