//! Targets over what pgweir reads from files: `proxy.toml`, the `auth_file` userlist,
//! human durations and sizes, upstream URLs and PgBouncer connection strings (import).

use std::path::Path;

use weir_config::{auth_file, duration, size, Config};

/// `selector, text...`: selector 0 = TOML config, 1 = auth_file, 2 = duration and size,
/// 3 = upstream URL (on the default config), 4 = PgBouncer connection string; other
/// values run the text through all of them. Text that is not UTF-8 is read lossily, as
/// a file of it would fail to read as a string anyway.
pub fn config(data: &[u8]) {
    let [selector, text @ ..] = data else {
        return;
    };
    let text = String::from_utf8_lossy(text);
    let text = text.as_ref();
    match selector {
        0 => toml(text),
        1 => userlist(text),
        2 => human(text),
        3 => url(text),
        4 => connstr(text),
        _ => {
            toml(text);
            userlist(text);
            human(text);
            url(text);
            connstr(text);
        }
    }
}

fn toml(text: &str) {
    if let Ok(config) = Config::from_toml_str(text, "fuzz.toml") {
        // Whatever validated must stay valid and answer every per-pool question.
        config.validate().expect("validated twice");
        for db in config.databases.keys() {
            let _ = (
                config.pool_size_for(db),
                config.max_queue_for(db),
                config.max_pinned_for(db),
                config.min_pool_size_for(db),
                config.pool_mode_for(db, "app"),
            );
        }
        let _ = config.priority_for("app", "app", "psql");
    } else if let Err(e) = Config::from_toml_str(text, "fuzz.toml") {
        let _ = e.to_string();
    }
}

fn userlist(text: &str) {
    match auth_file::parse(text, Path::new("userlist.txt")) {
        Ok(entries) => {
            let _ = entries.len();
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
}

fn human(text: &str) {
    if let Ok(d) = duration::parse(text) {
        let _ = duration::format(d);
    }
    if let Ok(bytes) = size::parse(text) {
        let _ = size::format(bytes);
    }
}

fn url(text: &str) {
    let mut config = Config::default();
    if let Err(e) = config.apply_upstream_url(text) {
        let _ = e.to_string();
    }
}

fn connstr(text: &str) {
    let _ = pgweir::import::connstr::parse(text);
}
