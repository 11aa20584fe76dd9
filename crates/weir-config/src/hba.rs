//! `auth_hba_file`: pg_hba.conf-style rules (`auth_type = "hba"`), parsed and matched.
//!
//! Each line is `TYPE DATABASE USER [ADDRESS] METHOD`, the first matching line decides,
//! as in PostgreSQL. Supported: types `local` (never matches: pgweir listens on TCP
//! only), `host`, `hostssl`, `hostnossl`; databases `all`, `sameuser`, `replication`
//! (never matches) and names; users `all` and names (lists with commas, names in
//! double quotes); addresses `all`, CIDR or address + mask; methods `trust`, `reject`,
//! `md5`, `scram-sha-256`, `password`, `cert`. Anything else (`+group`, `@file`,
//! host names, `peer`, options) is an error naming the file and line, never ignored.

use std::net::IpAddr;
use std::path::Path;

use crate::ConfigError;

/// How a client connected, for matching a rule's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnType {
    /// `local`: the Unix-domain socket (`unix_socket_dir`).
    Local,
    /// `host`: any TCP connection.
    Host,
    /// `hostssl`: TCP with TLS.
    HostSsl,
    /// `hostnossl`: TCP without TLS.
    HostNoSsl,
}

/// A database or user field entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NameMatch {
    /// `all`.
    All,
    /// `sameuser` (databases only): the database named like the user.
    SameUser,
    /// `replication` (databases only): replication connections, which pgweir never has.
    Replication,
    /// A literal name.
    Name(String),
}

/// The address field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AddressMatch {
    /// `all`, or no address field (`local`).
    Any,
    /// A network: address and prefix length.
    Net(IpAddr, u8),
}

/// How a matching client authenticates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HbaMethod {
    /// No password.
    Trust,
    /// Refused.
    Reject,
    /// md5 (SCRAM for users whose secret is a SCRAM verifier, as PostgreSQL does).
    Md5,
    /// SCRAM-SHA-256.
    ScramSha256,
    /// A clear-text password (use over TLS only).
    Password,
    /// A client certificate verified by `client_tls_ca_file` whose CN is the user name.
    Cert,
}

/// One rule, with the line it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HbaRule {
    /// 1-based line in the file.
    pub line: usize,
    /// The connection type.
    pub conn_type: ConnType,
    /// Databases it applies to.
    pub databases: Vec<NameMatch>,
    /// Users it applies to.
    pub users: Vec<NameMatch>,
    /// Client addresses it applies to.
    pub address: AddressMatch,
    /// The method it prescribes.
    pub method: HbaMethod,
}

/// The rules of one file, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HbaRules {
    /// The rules; the first match wins.
    pub rules: Vec<HbaRule>,
}

impl HbaRules {
    /// Reads and parses `path`.
    ///
    /// # Errors
    /// [`ConfigError::Io`] if it cannot be read; [`ConfigError::AuthFile`] with the line
    /// for a malformed or unsupported rule.
    pub fn read(path: &Path) -> Result<HbaRules, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            path: path.to_owned(),
            source,
        })?;
        HbaRules::parse(&text).map_err(|(line, message)| ConfigError::AuthFile {
            path: path.to_owned(),
            line,
            message,
        })
    }

    /// Parses the text of an hba file.
    ///
    /// # Errors
    /// (line, message) of the first bad rule.
    pub fn parse(text: &str) -> Result<HbaRules, (usize, String)> {
        let mut rules = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let fields = fields(line).map_err(|m| (i + 1, m))?;
            if fields.is_empty() {
                continue;
            }
            rules.push(rule(i + 1, &fields).map_err(|m| (i + 1, m))?);
        }
        Ok(HbaRules { rules })
    }

    /// The first rule matching a client at `addr` (`None`: over the Unix socket, which
    /// `local` lines match; `tls`: encrypted) asking for `database` as `user`; `None` if
    /// no rule matches (PostgreSQL then refuses).
    pub fn find(
        &self,
        tls: bool,
        addr: Option<IpAddr>,
        database: &str,
        user: &str,
    ) -> Option<&HbaRule> {
        self.rules.iter().find(|r| {
            let type_ok = match (r.conn_type, addr) {
                (ConnType::Local, None) => true,
                (ConnType::Local, Some(_)) | (_, None) => false,
                (ConnType::Host, Some(_)) => true,
                (ConnType::HostSsl, Some(_)) => tls,
                (ConnType::HostNoSsl, Some(_)) => !tls,
            };
            type_ok
                && r.databases.iter().any(|d| match d {
                    NameMatch::All => true,
                    NameMatch::SameUser => database == user,
                    NameMatch::Replication => false,
                    NameMatch::Name(n) => n == database,
                })
                && r.users.iter().any(|u| match u {
                    NameMatch::All => true,
                    NameMatch::Name(n) => n == user,
                    NameMatch::SameUser | NameMatch::Replication => false,
                })
                && addr.is_none_or(|a| address_matches(&r.address, a))
        })
    }
}

fn address_matches(rule: &AddressMatch, addr: IpAddr) -> bool {
    let (net, prefix) = match rule {
        AddressMatch::Any => return true,
        AddressMatch::Net(net, prefix) => (*net, u32::from(*prefix)),
    };
    // An IPv4 client may arrive as an IPv4-mapped IPv6 address on a dual-stack socket.
    let addr = match addr {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(addr, IpAddr::V4),
        v4 => v4,
    };
    match (net, addr) {
        (IpAddr::V4(n), IpAddr::V4(a)) => {
            let mask = u32::MAX.checked_shl(32 - prefix).unwrap_or(0);
            u32::from(n) & mask == u32::from(a) & mask
        }
        (IpAddr::V6(n), IpAddr::V6(a)) => {
            let mask = u128::MAX.checked_shl(128 - prefix).unwrap_or(0);
            u128::from(n) & mask == u128::from(a) & mask
        }
        _ => false,
    }
}

/// One word of a field, and whether it was quoted (a quoted `"all"` is a name).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Word {
    text: String,
    quoted: bool,
}

/// Splits a line into fields (whitespace-separated; commas join words into a list),
/// dropping a `#` comment; double quotes protect blanks, commas and `#`.
fn fields(line: &str) -> Result<Vec<Vec<Word>>, String> {
    let mut fields: Vec<Vec<Word>> = Vec::new();
    let mut continues = false;
    let mut chars = line.chars().peekable();
    while let Some(&c) = chars.peek() {
        if c == '#' {
            break;
        }
        if c.is_whitespace() {
            chars.next();
            continue;
        }
        if c == ',' {
            chars.next();
            if fields.is_empty() {
                return Err("a line cannot start with a comma".into());
            }
            continues = true;
            continue;
        }
        let mut word = Word {
            text: String::new(),
            quoted: false,
        };
        while let Some(&c) = chars.peek() {
            if c == '"' {
                chars.next();
                word.quoted = true;
                loop {
                    match chars.next() {
                        Some('"') if chars.peek() == Some(&'"') => {
                            chars.next();
                            word.text.push('"');
                        }
                        Some('"') => break,
                        Some(c) => word.text.push(c),
                        None => return Err("unterminated quoted name".into()),
                    }
                }
            } else if c.is_whitespace() || c == ',' || c == '#' {
                break;
            } else {
                word.text.push(c);
                chars.next();
            }
        }
        match fields.last_mut() {
            Some(field) if continues => field.push(word),
            _ => fields.push(vec![word]),
        }
        continues = false;
    }
    if continues {
        return Err("a list ends with a comma".into());
    }
    Ok(fields)
}

fn rule(line: usize, fields: &[Vec<Word>]) -> Result<HbaRule, String> {
    let single = |f: &[Word], what: &str| -> Result<String, String> {
        match f {
            [w] => Ok(w.text.clone()),
            _ => Err(format!("{what} cannot be a list")),
        }
    };
    let conn_type = match single(&fields[0], "the connection type")?.as_str() {
        "local" => ConnType::Local,
        "host" => ConnType::Host,
        "hostssl" => ConnType::HostSsl,
        "hostnossl" => ConnType::HostNoSsl,
        t @ ("hostgssenc" | "hostnogssenc") => {
            return Err(format!(
                "connection type \"{t}\" is not supported by pgweir"
            ))
        }
        t => {
            return Err(format!(
                "invalid connection type \"{t}\" (local, host, hostssl or hostnossl)"
            ))
        }
    };
    let need = if conn_type == ConnType::Local { 4 } else { 5 };
    if fields.len() < need {
        return Err(format!(
            "too few fields: expected TYPE DATABASE USER{} METHOD",
            if need == 5 { " ADDRESS" } else { "" }
        ));
    }
    let databases = fields[1]
        .iter()
        .map(|w| name_match(w, true))
        .collect::<Result<_, _>>()?;
    let users = fields[2]
        .iter()
        .map(|w| name_match(w, false))
        .collect::<Result<_, _>>()?;
    let (address, rest) = if conn_type == ConnType::Local {
        (AddressMatch::Any, &fields[3..])
    } else {
        let text = single(&fields[3], "the address")?;
        let mask = fields.get(4).and_then(|f| match f.as_slice() {
            [w] if !w.quoted => w.text.parse::<IpAddr>().ok(),
            _ => None,
        });
        let (address, used_mask) = address(&text, mask)?;
        (address, &fields[if used_mask { 5 } else { 4 }..])
    };
    let Some((method, options)) = rest.split_first() else {
        return Err("no authentication method".into());
    };
    let method = match single(method, "the method")?.as_str() {
        "trust" => HbaMethod::Trust,
        "reject" => HbaMethod::Reject,
        "md5" => HbaMethod::Md5,
        "scram-sha-256" => HbaMethod::ScramSha256,
        "password" => HbaMethod::Password,
        "cert" => HbaMethod::Cert,
        m @ ("peer" | "ident" | "gss" | "sspi" | "pam" | "ldap" | "radius" | "bsd" | "oauth") => {
            return Err(format!(
                "authentication method \"{m}\" is not supported by pgweir \
                 (trust, reject, md5, scram-sha-256, password, cert)"
            ))
        }
        m => return Err(format!("invalid authentication method \"{m}\"")),
    };
    if let Some(option) = options.first().and_then(|f| f.first()) {
        return Err(format!(
            "authentication options (\"{}\") are not supported by pgweir",
            option.text
        ));
    }
    Ok(HbaRule {
        line,
        conn_type,
        databases,
        users,
        address,
        method,
    })
}

fn name_match(w: &Word, database: bool) -> Result<NameMatch, String> {
    if w.quoted {
        return Ok(NameMatch::Name(w.text.clone()));
    }
    let t = w.text.as_str();
    Ok(match t {
        "all" => NameMatch::All,
        "sameuser" if database => NameMatch::SameUser,
        "replication" if database => NameMatch::Replication,
        "samerole" | "samegroup" if database => {
            return Err(format!(
                "\"{t}\" is not supported by pgweir (it knows no roles)"
            ))
        }
        _ if t.starts_with('+') && !database => {
            return Err(format!(
                "group membership (\"{t}\") is not supported by pgweir: list the users"
            ))
        }
        _ if t.starts_with('@') => {
            return Err(format!(
                "file inclusion (\"{t}\") is not supported by pgweir"
            ))
        }
        _ if t.starts_with('/') => {
            return Err(format!(
                "regular expressions (\"{t}\") are not supported by pgweir"
            ))
        }
        "" => return Err("empty name".into()),
        _ => NameMatch::Name(t.to_owned()),
    })
}

/// The address field: `all`, CIDR, or an address whose mask is the next field (`mask`,
/// if that parses as one). Returns the match and whether the mask field was used.
fn address(text: &str, mask: Option<IpAddr>) -> Result<(AddressMatch, bool), String> {
    if text == "all" {
        return Ok((AddressMatch::Any, false));
    }
    if matches!(text, "samehost" | "samenet") {
        return Err(format!(
            "\"{text}\" is not supported by pgweir: give a CIDR address"
        ));
    }
    if let Some((ip, bits)) = text.split_once('/') {
        let ip: IpAddr = ip
            .parse()
            .map_err(|_| format!("invalid IP address \"{ip}\""))?;
        let max = if ip.is_ipv4() { 32 } else { 128 };
        let bits: u8 = bits
            .parse()
            .ok()
            .filter(|b| *b <= max)
            .ok_or_else(|| format!("invalid CIDR mask in address \"{text}\""))?;
        return Ok((AddressMatch::Net(ip, bits), false));
    }
    let Ok(ip) = text.parse::<IpAddr>() else {
        return Err(format!(
            "host names (\"{text}\") are not supported by pgweir: give a CIDR address"
        ));
    };
    let mask = mask.ok_or_else(|| {
        format!("address \"{text}\" needs a CIDR length (\"{text}/32\") or a mask field")
    })?;
    let bits = match (ip, mask) {
        (IpAddr::V4(_), IpAddr::V4(m)) => prefix_len(u128::from(u32::from(m)) << 96),
        (IpAddr::V6(_), IpAddr::V6(m)) => prefix_len(u128::from(m)),
        _ => None,
    }
    .ok_or_else(|| format!("invalid IP mask \"{mask}\""))?;
    Ok((AddressMatch::Net(ip, bits), true))
}

/// The prefix length of a contiguous mask (left-aligned in 128 bits).
fn prefix_len(mask: u128) -> Option<u8> {
    let ones = mask.leading_ones();
    (mask.checked_shl(ones).unwrap_or(0) == 0).then_some(ones as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = r#"
# comment
local   all  all                 trust
host    all  "bad user"  0.0.0.0/0   reject   # quoted name with a blank
hostssl app  alice,bob   10.0.0.0/8  scram-sha-256
hostnossl sameuser all   10.0.0.0 255.0.0.0 md5
host    "all" all        ::1/128     password
host    all  all         all         cert
"#;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn first_match_wins_by_type_database_user_and_address() {
        let r = HbaRules::parse(FILE).unwrap();
        assert_eq!(r.rules.len(), 6);
        let method = |tls, addr, db, user| r.find(tls, Some(ip(addr)), db, user).map(|r| r.method);
        assert_eq!(
            method(false, "1.2.3.4", "app", "bad user"),
            Some(HbaMethod::Reject)
        );
        assert_eq!(
            method(true, "10.1.2.3", "app", "bob"),
            Some(HbaMethod::ScramSha256)
        );
        // Not over TLS: the hostssl line is skipped.
        assert_eq!(
            method(false, "10.1.2.3", "app", "bob"),
            Some(HbaMethod::Cert)
        );
        assert_eq!(
            method(false, "10.1.2.3", "carol", "carol"),
            Some(HbaMethod::Md5)
        );
        assert_eq!(
            method(true, "10.1.2.3", "carol", "carol"),
            Some(HbaMethod::Cert)
        );
        // A quoted "all" is a database named all.
        assert_eq!(method(false, "::1", "all", "x"), Some(HbaMethod::Password));
        assert_eq!(method(false, "::1", "app", "x"), Some(HbaMethod::Cert));
        assert_eq!(
            method(false, "::ffff:10.0.0.1", "dave", "dave"),
            Some(HbaMethod::Md5)
        );
        let none = HbaRules::parse("host app alice 127.0.0.1/32 trust\n").unwrap();
        assert!(none
            .find(false, Some(ip("127.0.0.2")), "app", "alice")
            .is_none());
        assert!(none
            .find(false, Some(ip("127.0.0.1")), "app", "bob")
            .is_none());
        assert!(
            none.find(false, None, "app", "alice").is_none(),
            "host lines are TCP only"
        );
        // `local` lines match the Unix socket, and only it.
        let local = r.find(false, None, "app", "bad user").map(|r| r.method);
        assert_eq!(local, Some(HbaMethod::Trust));
    }

    #[test]
    fn unsupported_or_malformed_rules_name_their_line() {
        for (text, needle) in [
            ("host all +admins 0.0.0.0/0 md5", "group membership"),
            ("host @dbs all 0.0.0.0/0 md5", "file inclusion"),
            ("host all all example.com md5", "host names"),
            ("host all all samenet md5", "samenet"),
            ("host all all 0.0.0.0/0 peer", "not supported"),
            (
                "host all all 0.0.0.0/0 md5 clientcert=verify-full",
                "options",
            ),
            ("host all all 0.0.0.0/33 md5", "CIDR mask"),
            ("host all all 10.0.0.0 255.0.255.0 md5", "mask"),
            ("host all all 0.0.0.0/0", "too few"),
            ("hots all all 0.0.0.0/0 md5", "connection type"),
            ("host \"all all 0.0.0.0/0 md5", "unterminated"),
            ("host all, all 0.0.0.0/0 md5 ,", "comma"),
        ] {
            let text = format!("# first\n{text}\n");
            let (line, message) = HbaRules::parse(&text).expect_err(text.as_str());
            assert_eq!(line, 2, "{text}");
            assert!(message.contains(needle), "{text}: {message}");
        }
    }
}
