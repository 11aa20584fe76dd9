//! Where a key is written in the TOML text, for error messages with line numbers.
//!
//! The document is deserialized a second time into a tree of tables whose keys and values
//! carry their byte spans (`toml::Spanned`). This works for every way TOML can spell a key
//! (`[a.b]` headers, dotted keys, inline tables), unlike searching the text.

use std::fmt;

use serde::de::{Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use toml::Spanned;

/// The tables of a TOML document with the span of each key and value.
pub(crate) struct SpanTree<'t> {
    text: &'t str,
    root: Node,
}

enum Node {
    Table(Vec<Entry>),
    Leaf,
}

// Only keys carry spans: implicit tables (`databases` in `[databases.app]`, `a` in
// `a.b = 1`) have no span of their own, so a `Spanned<Node>` value would fail on them.
struct Entry {
    key: Spanned<String>,
    value: Node,
}

impl<'t> SpanTree<'t> {
    /// Build the tree; `None` if the text is not valid TOML.
    pub(crate) fn parse(text: &'t str) -> Option<Self> {
        let root = toml::from_str::<Node>(text).ok()?;
        Some(SpanTree { text, root })
    }

    /// 1-based line of the deepest key of `path` written in the document (so a missing leaf
    /// points at its table); `None` if not even the first key is there.
    pub(crate) fn line_of(&self, path: &[String]) -> Option<usize> {
        let mut node = &self.root;
        let mut found = None;
        for segment in path {
            let Node::Table(entries) = node else { break };
            let Some(entry) = entries.iter().find(|e| e.key.get_ref() == segment) else {
                break;
            };
            found = Some(entry.key.span().start);
            node = &entry.value;
        }
        found.map(|offset| line_at(self.text, offset))
    }

    /// The key path an error at byte `offset` is about: the last key written at or before
    /// it (for an error in a value, the key that value belongs to, also inside inline
    /// tables and multi-line arrays). An error spanning a `[table]` header (a missing
    /// field) is about the table named in that header.
    pub(crate) fn path_at(&self, offset: usize) -> Vec<String> {
        let limit = self.header_end(offset).unwrap_or(offset);
        let mut best: Option<(usize, Vec<String>)> = None;
        let mut stack: Vec<String> = Vec::new();
        visit(&self.root, &mut stack, &mut |path, start| {
            if start <= limit && best.as_ref().is_none_or(|(b, _)| start >= *b) {
                best = Some((start, path.to_vec()));
            }
        });
        best.map(|(_, path)| path).unwrap_or_default()
    }

    /// If a `[header]` line starts at `offset`, the offset of that line's end.
    fn header_end(&self, offset: usize) -> Option<usize> {
        let before = self.text.get(..offset)?;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let indent = before.get(line_start..)?;
        let rest = self.text.get(offset..)?;
        if !indent.trim().is_empty() || !rest.starts_with('[') {
            return None;
        }
        Some(offset + rest.find('\n').unwrap_or(rest.len()))
    }
}

/// Call `f` with the path and key start of every key under `node`, depth first.
fn visit(node: &Node, stack: &mut Vec<String>, f: &mut dyn FnMut(&[String], usize)) {
    let Node::Table(entries) = node else { return };
    for entry in entries {
        stack.push(entry.key.get_ref().clone());
        f(stack, entry.key.span().start);
        visit(&entry.value, stack, f);
        stack.pop();
    }
}

/// 1-based line number of byte `offset` in `text` (clamped to the text).
pub(crate) fn line_at(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()
        .get(..end)
        .map_or(0, |b| b.iter().filter(|&&c| c == b'\n').count())
        + 1
}

/// Render a key path as TOML would write it, quoting segments that are not bare keys.
pub(crate) fn dotted(path: &[String]) -> String {
    let bare = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    };
    path.iter()
        .map(|s| if bare(s) { s.clone() } else { format!("{s:?}") })
        .collect::<Vec<_>>()
        .join(".")
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(NodeVisitor)
    }
}

struct NodeVisitor;

macro_rules! leaf {
    ($($method:ident: $ty:ty),+) => {
        $(fn $method<E: serde::de::Error>(self, _: $ty) -> Result<Node, E> {
            Ok(Node::Leaf)
        })+
    };
}

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = Node;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any TOML value")
    }

    leaf!(visit_bool: bool, visit_i64: i64, visit_u64: u64, visit_f64: f64, visit_str: &str);

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Node::Leaf)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
        let mut entries = Vec::new();
        while let Some(key) = map.next_key::<Spanned<String>>()? {
            let value = map.next_value::<Node>()?;
            entries.push(Entry { key, value });
        }
        Ok(Node::Table(entries))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(p: &[&str]) -> Vec<String> {
        p.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn finds_keys_in_every_spelling() {
        let text = "a = 1\n\n[databases.app]\nhost = \"h\"\npool_size = 3\n\n[databases]\n\
                    other = { host = \"x\", pool_size = 0 }\nthird.port = 5\n";
        let tree = SpanTree::parse(text).expect("valid");
        assert_eq!(tree.line_of(&path(&["a"])), Some(1));
        assert_eq!(
            tree.line_of(&path(&["databases", "app", "pool_size"])),
            Some(5)
        );
        assert_eq!(
            tree.line_of(&path(&["databases", "other", "pool_size"])),
            Some(8)
        );
        assert_eq!(
            tree.line_of(&path(&["databases", "third", "port"])),
            Some(9)
        );
        // A missing leaf points at its table.
        assert_eq!(
            tree.line_of(&path(&["databases", "app", "min_pool_size"])),
            Some(3)
        );
        assert_eq!(tree.line_of(&path(&["nothing"])), None);
    }

    #[test]
    fn path_at_offset() {
        let text = "[databases.app]\nhost = \"h\"\nport = \"x\"\n";
        let tree = SpanTree::parse(text).expect("valid");
        let offset = text.find("\"x\"").expect("present");
        assert_eq!(tree.path_at(offset), path(&["databases", "app", "port"]));
        let text = "[databases]\napp = { host = \"h\", port = \"x\" }\nlist = [\n 1,\n \"a\"]\n";
        let tree = SpanTree::parse(text).expect("valid");
        let offset = text.find("\"x\"").expect("present");
        assert_eq!(tree.path_at(offset), path(&["databases", "app", "port"]));
        let offset = text.find("\"a\"").expect("present");
        assert_eq!(tree.path_at(offset), path(&["databases", "list"]));
        assert_eq!(tree.path_at(1), path(&["databases"]));
        // A span starting at a header is about that header's table.
        let text = "a = 1\n\n[databases.app]\nport = 1\n";
        let tree = SpanTree::parse(text).expect("valid");
        let offset = text.find('[').expect("present");
        assert_eq!(tree.path_at(offset), path(&["databases", "app"]));
    }

    #[test]
    fn dotted_quotes_odd_names() {
        assert_eq!(
            dotted(&path(&["databases", "my.db", "port"])),
            "databases.\"my.db\".port"
        );
        assert_eq!(dotted(&path(&["users", "app_1"])), "users.app_1");
    }

    #[test]
    fn line_at_clamps() {
        assert_eq!(line_at("a\nb\nc", 0), 1);
        assert_eq!(line_at("a\nb\nc", 2), 2);
        assert_eq!(line_at("a\nb\nc", 999), 3);
    }
}
