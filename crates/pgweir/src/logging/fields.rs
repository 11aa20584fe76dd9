//! How a text log line's fields are written: as tracing-subscriber's `DefaultFields`
//! writes them without colours (`message` first as is, then `name=value`), with control
//! characters escaped in every value. Messages and fields carry what clients chose
//! (user and database names in every `login attempt` line): tracing-subscriber escapes
//! messages one character at a time, which was most of the cost of logging a login,
//! and leaves `%` (Display) fields raw. Here every value is checked a whole string at a
//! time and passed through when clean.

use std::fmt::{self, Write};

use tracing::field::{Field, Visit};
use tracing_subscriber::field::{MakeVisitor, VisitFmt, VisitOutput};
use tracing_subscriber::fmt::format::Writer;

/// `DefaultFields` without colours, every value escaped (see the module docs).
pub struct Fields;

impl<'a> MakeVisitor<Writer<'a>> for Fields {
    type Visitor = Visitor<'a>;

    fn make_visitor(&self, target: Writer<'a>) -> Visitor<'a> {
        Visitor {
            out: target,
            empty: true,
            result: Ok(()),
        }
    }
}

/// Writes one event's or span's fields.
pub struct Visitor<'a> {
    out: Writer<'a>,
    /// Nothing written yet: no space before the next field.
    empty: bool,
    result: fmt::Result,
}

impl Visitor<'_> {
    fn field(&mut self, field: &Field, value: fmt::Arguments<'_>) {
        let name = field.name();
        // Metadata of events bridged from the `log` crate, written elsewhere.
        if self.result.is_err() || name.starts_with("log.") {
            return;
        }
        let first = std::mem::take(&mut self.empty);
        self.result = write_field(&mut self.out, first, name, value);
    }
}

/// ` name=value` (no space first, no `name=` for the message); only the value escaped.
fn write_field(
    out: &mut Writer<'_>,
    first: bool,
    name: &str,
    value: fmt::Arguments<'_>,
) -> fmt::Result {
    if !first {
        out.write_char(' ')?;
    }
    if name != "message" {
        out.write_str(name.strip_prefix("r#").unwrap_or(name))?;
        out.write_char('=')?;
    }
    Escape(out).write_fmt(value)
}

impl Visit for Visitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.field(field, format_args!("{value}"));
        } else {
            self.field(field, format_args!("{value:?}"));
        }
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        match value.source() {
            Some(source) => {
                let name = field.name();
                self.field(
                    field,
                    format_args!("{value} {name}.sources={}", Sources(source)),
                );
            }
            None => self.field(field, format_args!("{value}")),
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.field(field, format_args!("{value:?}"));
    }
}

impl VisitOutput<fmt::Result> for Visitor<'_> {
    fn finish(self) -> fmt::Result {
        self.result
    }
}

impl VisitFmt for Visitor<'_> {
    fn writer(&mut self) -> &mut dyn fmt::Write {
        &mut self.out
    }
}

/// An error's sources as `[first, second]`, as tracing-subscriber lists them.
struct Sources<'a>(&'a (dyn std::error::Error + 'static));

impl fmt::Display for Sources<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut list = f.debug_list();
        let mut next = Some(self.0);
        while let Some(e) = next {
            list.entry(&format_args!("{e}"));
            next = e.source();
        }
        list.finish()
    }
}

/// Escapes what terminals read as control sequences, as tracing-subscriber does: ESC,
/// BEL, BS, FF and DEL as `\xNN`, C1 controls (U+0080-U+009F) as `\u{NN}`.
struct Escape<'w, 'a>(&'w mut Writer<'a>);

/// Whether `s` is all printable ASCII, which needs no escape. No early exit, so the
/// compiler checks many bytes at a time; anything else (tabs, newlines, UTF-8) takes
/// the exact, character-by-character path.
fn printable_ascii(s: &str) -> bool {
    !s.bytes()
        .fold(false, |odd, b| odd | (b.wrapping_sub(0x20) >= 0x5f))
}

impl fmt::Write for Escape<'_, '_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        if printable_ascii(s) {
            return self.0.write_str(s);
        }
        for ch in s.chars() {
            match ch {
                '\x1b' => self.0.write_str("\\x1b")?,
                '\x07' => self.0.write_str("\\x07")?,
                '\x08' => self.0.write_str("\\x08")?,
                '\x0c' => self.0.write_str("\\x0c")?,
                '\x7f' => self.0.write_str("\\x7f")?,
                '\u{80}'..='\u{9f}' => write!(self.0, "\\u{{{:x}}}", ch as u32)?,
                _ => self.0.write_char(ch)?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use tracing_subscriber::fmt::format::DefaultFields;
    use tracing_subscriber::fmt::MakeWriter;

    /// Collects what a subscriber writes.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("lock").write(buf)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Captured {
        type Writer = Captured;
        fn make_writer(&'a self) -> Captured {
            self.clone()
        }
    }

    /// The lines `events` logs, with our field formatting or tracing-subscriber's.
    fn lines(ours: bool, events: fn()) -> String {
        let out = Captured::default();
        let builder = tracing_subscriber::fmt()
            .without_time()
            .with_ansi(false)
            .with_writer(out.clone());
        if ours {
            tracing::subscriber::with_default(builder.fmt_fields(super::Fields).finish(), events);
        } else {
            let fields = DefaultFields::new();
            tracing::subscriber::with_default(builder.fmt_fields(fields).finish(), events);
        }
        let bytes = out.0.lock().expect("lock").clone();
        String::from_utf8(bytes).expect("utf-8")
    }

    /// An error with a source, for the `.sources` list.
    #[derive(Debug)]
    struct Outer(std::io::Error);

    impl std::fmt::Display for Outer {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("could not log in")
        }
    }

    impl std::error::Error for Outer {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn lines_are_written_as_tracing_subscriber_writes_them() {
        fn events() {
            let user = "evil\x1b[31m\u{9b}2J\x07\x08\x0c\x7f user £";
            tracing::info!("login attempt: db=bench user={user} tls=no");
            tracing::info!(client = %"bench/bench@127.0.0.1:5432", "closing because: {}", "client close request");
            tracing::warn!(error = %std::io::Error::other("gone"), count = 3, flag = true, "server lost");
            tracing::info!(name = "quoted \x1b", "only fields after");
            tracing::info!(a = 1, b = ?Some("x"), r#type = "raw");
            let err = Outer(std::io::Error::other("refused"));
            tracing::error!(
                error = &err as &(dyn std::error::Error + 'static),
                "an error field"
            );
            let plain = std::io::Error::other("no source");
            tracing::error!(error = &plain as &(dyn std::error::Error + 'static));
            tracing::info!(message = "a message field given as a str \x1b");
        }
        let ours = lines(true, events);
        assert_eq!(ours, lines(false, events));
        assert!(
            ours.contains("evil\\x1b[31m\\u{9b}2J\\x07\\x08\\x0c\\x7f user £"),
            "{ours}"
        );
    }

    /// Unlike tracing-subscriber, `%` (Display) fields are escaped too: a user name is
    /// shown in every `client=` field.
    #[test]
    fn no_control_character_reaches_a_line() {
        fn events() {
            tracing::info!(client = %"evil\x1b[2J\u{9b}1m/db@127.0.0.1:5432", "login attempt");
            tracing::warn!(error = %std::io::Error::other("gone\x07"), "server lost");
        }
        let ours = lines(true, events);
        assert!(
            !ours
                .chars()
                .any(|c| matches!(c, '\x1b' | '\x07' | '\u{9b}')),
            "{ours:?}"
        );
        assert!(
            ours.contains("client=evil\\x1b[2J\\u{9b}1m/db@127.0.0.1:5432"),
            "{ours}"
        );
        assert!(ours.contains("error=gone\\x07"), "{ours}");
    }
}
