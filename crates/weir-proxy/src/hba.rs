//! `auth_type = "hba"`: picks a client's login method from the first `auth_hba_file`
//! rule matching its address, TLS state, database and user, with PostgreSQL's answers
//! (28000) when no rule matches or the rule says `reject`; `cert` checks the client
//! certificate's common name against the user name.

use std::net::IpAddr;

use weir_config::hba::HbaMethod;
use weir_config::Config;
use weir_wire::der;

use crate::client_auth::Method;
use crate::error::{AuthRefusal, ClientError};
use crate::stream::Stream;

/// The login method for `user` asking for `database` over `stream`.
///
/// # Errors
/// No rule matches, the rule rejects, or (`cert`) no verified client certificate names
/// the user: each 28000 with PostgreSQL's wording.
pub fn method_for(
    config: &Config,
    stream: &Stream,
    user: &str,
    database: &str,
) -> Result<Method, ClientError> {
    // None over the Unix socket: `local` lines.
    let addr = match stream {
        Stream::Unix(_) => None,
        _ => Some(
            stream
                .peer_addr()
                .map(|a| a.ip())
                .unwrap_or(IpAddr::from([0, 0, 0, 0])),
        ),
    };
    let tls = stream.is_tls();
    let rule = config
        .hba
        .as_ref()
        .and_then(|rules| rules.find(tls, addr, database, user));
    let Some(rule) = rule else {
        return Err(AuthRefusal::NoHbaEntry {
            host: addr,
            user: user.to_owned(),
            database: database.to_owned(),
            tls,
        }
        .into());
    };
    tracing::debug!(line = rule.line, method = ?rule.method, "auth_hba_file rule matched");
    Ok(match rule.method {
        HbaMethod::Trust => Method::Trust,
        HbaMethod::Md5 => Method::Md5,
        HbaMethod::ScramSha256 => Method::ScramSha256,
        HbaMethod::Password => Method::Password,
        HbaMethod::Reject => {
            return Err(AuthRefusal::HbaReject {
                host: addr,
                user: user.to_owned(),
                database: database.to_owned(),
                tls,
            }
            .into())
        }
        HbaMethod::Cert => {
            // rustls has checked the chain against client_tls_ca_file (verify-ca/-full);
            // the certificate must also name this user.
            let cn = stream.peer_certificate().and_then(common_name);
            if cn.as_deref() != Some(user) {
                return Err(AuthRefusal::CertificateMismatch(user.to_owned()).into());
            }
            Method::Trust
        }
    })
}

/// The subject's common name (OID 2.5.4.3) of an X.509 certificate in DER.
pub fn common_name(cert: &[u8]) -> Option<String> {
    const SEQUENCE: u8 = 0x30;
    const CN_OID: &[u8] = &[0x55, 0x04, 0x03];
    let (SEQUENCE, cert, _) = der::tlv(cert)? else {
        return None;
    };
    let (SEQUENCE, mut tbs, _) = der::tlv(cert)? else {
        return None;
    };
    // [0] version (optional), serial, signature algorithm, issuer, validity, subject.
    if tbs.first() == Some(&0xa0) {
        tbs = der::tlv(tbs)?.2;
    }
    for _ in 0..4 {
        tbs = der::tlv(tbs)?.2;
    }
    let (SEQUENCE, mut subject, _) = der::tlv(tbs)? else {
        return None;
    };
    while !subject.is_empty() {
        let (_set, set, rest) = der::tlv(subject)?;
        subject = rest;
        let (_seq, attribute, _) = der::tlv(set)?;
        let (_oid, oid, value) = der::tlv(attribute)?;
        if oid == CN_OID {
            let (_string, text, _) = der::tlv(value)?;
            return std::str::from_utf8(text).ok().map(str::to_owned);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
        let mut out = vec![tag];
        if content.len() < 0x80 {
            out.push(content.len() as u8);
        } else {
            out.push(0x82);
            out.extend_from_slice(&(content.len() as u16).to_be_bytes());
        }
        out.extend_from_slice(content);
        out
    }

    /// A certificate skeleton: version, serial, algorithm, issuer, validity, subject.
    fn cert(subject_cn: &str) -> Vec<u8> {
        let attr = |oid: &[u8], value: &str| {
            let seq = [tlv(0x06, oid), tlv(0x0c, value.as_bytes())].concat();
            tlv(0x31, &tlv(0x30, &seq))
        };
        let subject = tlv(
            0x30,
            &[
                attr(&[0x55, 0x04, 0x0a], "pgweir"),
                attr(&[0x55, 0x04, 0x03], subject_cn),
            ]
            .concat(),
        );
        let tbs = [
            tlv(0xa0, &tlv(0x02, &[2])),
            tlv(0x02, &[1; 20]),
            tlv(0x30, &tlv(0x06, &[0x2a, 0x86, 0x48])),
            tlv(0x30, &attr(&[0x55, 0x04, 0x03], "CA")),
            tlv(
                0x30,
                &[tlv(0x17, b"260101000000Z"), tlv(0x17, b"270101000000Z")].concat(),
            ),
            subject,
            tlv(0x30, &[0u8; 200]), // a long element: two-byte length form
        ]
        .concat();
        tlv(
            0x30,
            &[tlv(0x30, &tbs), tlv(0x30, &[]), tlv(0x03, &[0])].concat(),
        )
    }

    #[test]
    fn the_subjects_common_name_not_the_issuers() {
        let der = cert("alice");
        assert_eq!(common_name(&der).as_deref(), Some("alice"));
        // Truncated or empty input is refused, never read past its end.
        for cut in [0, 1, 10, 40, der.len() - 220] {
            assert_eq!(common_name(&der[..cut]), None, "cut at {cut}");
        }
    }
}
