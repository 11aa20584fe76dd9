//! What a FunctionCall message (the fast-path interface) does to the session, told
//! from the OID of the function it calls.

use super::{pin, Effects};

/// OIDs (pg_proc.dat, fixed since PostgreSQL 8.2) of the functions a FunctionCall
/// message may name that matter to the session.
mod fn_oid {
    /// `set_config(text, text, boolean)`.
    pub const SET_CONFIG: u32 = 2078;
    /// `pg_advisory_lock`, `pg_advisory_lock_shared`, `pg_try_advisory_lock` and
    /// `pg_try_advisory_lock_shared`, `(bigint)` and `(integer, integer)`.
    pub const ADVISORY_LOCKS: [u32; 8] = [2880, 2881, 2882, 2883, 2886, 2887, 2888, 2889];
    /// `pg_advisory_unlock*`, including `pg_advisory_unlock_all()`.
    pub const ADVISORY_UNLOCKS: [u32; 5] = [2884, 2885, 2890, 2891, 2892];
}

/// What a FunctionCall (`F`, the fast-path interface: `PQfn`, large objects) does to
/// the session. It names its function by OID, so the query classification never sees
/// it: `set_config` through it changed a setting the proxy did not track, which leaked
/// to the next client of the server connection. Advisory locks pin as in SQL; the
/// name `set_config` sets is read from its first argument; any other function may
/// still change a setting, so tracked settings are read back after the transaction.
pub fn function_call_effects(body: &[u8]) -> Effects {
    let mut e = Effects {
        settings: true,
        ..Effects::default()
    };
    let Some(oid) = body
        .get(..4)
        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    else {
        return e;
    };
    if fn_oid::ADVISORY_LOCKS.contains(&oid) {
        e.pins |= pin::ADVISORY_LOCK;
    } else if fn_oid::ADVISORY_UNLOCKS.contains(&oid) {
        e.unpins |= pin::ADVISORY_LOCK;
    } else if oid == fn_oid::SET_CONFIG {
        if let Some(name) = first_function_argument(&body[4..]) {
            e.set_names.push(name.to_ascii_lowercase());
        }
    }
    e
}

/// The first argument of a FunctionCall body after the OID: format codes, then the
/// arguments, each a length (-1: NULL) and its bytes. Text and binary `text` agree.
fn first_function_argument(body: &[u8]) -> Option<&[u8]> {
    let formats = usize::from(u16::from_be_bytes(body.get(..2)?.try_into().ok()?));
    let rest = body.get(2 + 2 * formats..)?;
    let nargs = i16::from_be_bytes(rest.get(..2)?.try_into().ok()?);
    if nargs < 1 {
        return None;
    }
    let len = i32::from_be_bytes(rest.get(2..6)?.try_into().ok()?);
    let len = usize::try_from(len).ok()?;
    rest.get(6..6 + len)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A FunctionCall body: OID, one text format code, the arguments, text result.
    fn function_call(oid: u32, args: &[&[u8]]) -> Vec<u8> {
        let mut b = oid.to_be_bytes().to_vec();
        b.extend_from_slice(&[0, 1, 0, 0]);
        b.extend_from_slice(&(args.len() as i16).to_be_bytes());
        for a in args {
            b.extend_from_slice(&(a.len() as i32).to_be_bytes());
            b.extend_from_slice(a);
        }
        b.extend_from_slice(&[0, 0]);
        b
    }

    #[test]
    fn function_calls_are_classified_by_oid() {
        // set_config through the fast path changed search_path untracked; it leaked to
        // the next client of the server connection (reproduced with libpq's PQfn).
        let e = function_call_effects(&function_call(2078, &[b"Search_Path", b"evil", b"f"]));
        assert!(e.settings);
        assert_eq!(e.set_names, vec![b"search_path".to_vec()]);
        let lock = function_call_effects(&function_call(2880, &[&7i64.to_be_bytes()]));
        assert_eq!(lock.pins, pin::ADVISORY_LOCK);
        assert_eq!(
            function_call_effects(&function_call(2892, &[])).unpins,
            pin::ADVISORY_LOCK
        );
        // lo_open: nothing known, but settings are read back all the same.
        let other = function_call_effects(&function_call(952, &[b"x"]));
        assert!(other.settings && other.pins == 0 && other.set_names.is_empty());
        // Malformed bodies are the server's to reject; never a panic here.
        for body in [
            &b""[..],
            b"\0\0\x08\x1e",
            b"\0\0\x08\x1e\xff\xff",
            b"\0\0\x08\x1e\0\0\0\x01\x7f\xff\xff\xff",
        ] {
            let _ = function_call_effects(body);
        }
    }
}
