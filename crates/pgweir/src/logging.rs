//! tracing setup: text or JSON lines on stderr, level from `RUST_LOG` (default `info`).

use std::io::IsTerminal;

mod fields;

use tracing_subscriber::EnvFilter;
use weir_config::LogFormat;

/// Installs the global subscriber; later calls are ignored.
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // Colour only for a person at a terminal, never into files or log collectors.
    let terminal = std::io::stderr().is_terminal();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(terminal)
        .with_writer(std::io::stderr);
    let _ = match format {
        // Plain text (files, collectors): every value escaped, a string at a time.
        LogFormat::Text if !terminal => builder.fmt_fields(fields::Fields).try_init(),
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}
