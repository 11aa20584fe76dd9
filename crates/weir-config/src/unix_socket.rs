//! The Unix-domain socket settings (`unix_socket_dir`, `unix_socket_mode`) as
//! PgBouncer writes them.

use std::path::PathBuf;

use serde::Deserialize;

/// `unix_socket_dir`: a directory, `""` for none.
pub(crate) fn de_dir<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<PathBuf>, D::Error> {
    let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
    let text = text.trim();
    Ok((!text.is_empty()).then(|| PathBuf::from(text)))
}

/// `unix_socket_mode`: octal permission bits, as a string (`"0777"`, `"0700"`) or an
/// integer written in octal digits (`777`).
pub(crate) fn de_mode<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw<'a> {
        Text(std::borrow::Cow<'a, str>),
        Number(u32),
    }
    let digits = match Raw::deserialize(d)? {
        Raw::Text(t) => t.trim().to_owned(),
        Raw::Number(n) => n.to_string(),
    };
    parse_mode(&digits).ok_or_else(|| {
        serde::de::Error::custom(format!(
            "invalid unix_socket_mode {digits:?}: expected octal permission bits such as \"0777\" or \"0700\""
        ))
    })
}

fn parse_mode(digits: &str) -> Option<u32> {
    let mode = u32::from_str_radix(digits, 8).ok()?;
    (!digits.is_empty() && mode <= 0o777).then_some(mode)
}

#[cfg(test)]
mod tests {
    use super::parse_mode;

    #[test]
    fn modes_are_octal_permission_bits() {
        assert_eq!(parse_mode("0777"), Some(0o777));
        assert_eq!(parse_mode("700"), Some(0o700));
        assert_eq!(parse_mode("0660"), Some(0o660));
        assert_eq!(parse_mode("0999"), None);
        assert_eq!(parse_mode("1777"), None);
        assert_eq!(parse_mode(""), None);
        assert_eq!(parse_mode("rwx"), None);
    }
}
