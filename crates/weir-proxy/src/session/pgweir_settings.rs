//! pgweir's own startup settings, `pgweir.priority` and `pgweir.dedup`: taken out of
//! the settings replayed on servers and turned into a client's class and dedup switch.

use weir_config::{Config, Priority};

use crate::error::ClientError;

/// The startup setting that gives a client its class; pgweir's own, never forwarded.
pub const PRIORITY_SETTING: &str = "pgweir.priority";
/// The startup setting that turns query dedup on or off for a client; never forwarded.
pub const DEDUP_SETTING: &str = "pgweir.dedup";

/// A client's own `pgweir.dedup` (taken out of the settings replayed on servers):
/// `None` if it did not set it.
///
/// # Errors
/// The value is not a boolean (22023).
pub(super) fn client_dedup(
    settings: &mut Vec<(String, String)>,
) -> Result<Option<bool>, ClientError> {
    let Some(i) = settings
        .iter()
        .position(|(k, _)| k.eq_ignore_ascii_case(DEDUP_SETTING))
    else {
        return Ok(None);
    };
    parse_dedup(&settings.remove(i).1).map(Some)
}

/// The switch a `pgweir.dedup` value names.
///
/// # Errors
/// It is not a boolean (22023).
pub fn parse_dedup(value: &str) -> Result<bool, ClientError> {
    weir_config::parse_flag(value).ok_or_else(|| ClientError::InvalidParameter {
        name: DEDUP_SETTING,
        value: value.to_owned(),
        expected: "on or off",
    })
}

/// A client's class: `pgweir.priority` from its startup packet (a parameter, or
/// `options=-c pgweir.priority=...`; taken out of the settings replayed on servers),
/// else the first `priority_rules` entry matching its user, database and
/// `application_name`, else `default_priority`.
///
/// # Errors
/// `pgweir.priority` names no class (22023).
pub(super) fn client_class(
    settings: &mut Vec<(String, String)>,
    config: &Config,
    user: &str,
    database: &str,
    application_name: &str,
) -> Result<weir_pool::Class, ClientError> {
    let asked = settings
        .iter()
        .position(|(k, _)| k.eq_ignore_ascii_case(PRIORITY_SETTING))
        .map(|i| settings.remove(i).1);
    match asked {
        Some(v) => parse_priority(&v),
        None => Ok(class_of(config.priority_for(
            user,
            database,
            application_name,
        ))),
    }
}

/// The class a `pgweir.priority` value names.
///
/// # Errors
/// It names none (22023).
pub fn parse_priority(value: &str) -> Result<weir_pool::Class, ClientError> {
    value
        .trim()
        .parse::<Priority>()
        .map(class_of)
        .map_err(|_| ClientError::InvalidParameter {
            name: PRIORITY_SETTING,
            value: value.to_owned(),
            expected: "critical, high, normal, low or background",
        })
}

/// The pool's class for a configured priority.
fn class_of(p: Priority) -> weir_pool::Class {
    match p {
        Priority::Critical => weir_pool::Class::Critical,
        Priority::High => weir_pool::Class::High,
        Priority::Normal => weir_pool::Class::Normal,
        Priority::Low => weir_pool::Class::Low,
        Priority::Background => weir_pool::Class::Background,
    }
}
