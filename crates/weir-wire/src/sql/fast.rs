//! The fingerprint of the queries most applications send, without the general lexer:
//! one pass over words, numbers, `$n` parameters, plain strings, quoted identifiers,
//! `=` `<` `>` `*` and `( ) , ; .`. Anything else (comments, signs, `IN (...)` lists, `$`, prefixed
//! strings, multi-byte operators, non-ASCII) answers `None` and the caller takes the
//! general path. Both paths hash the same token stream, so a query's fingerprint does
//! not depend on which one ran (a property test checks it). `SHOW QUERIES` fingerprints
//! every simple-protocol query, and the general walk was a third of the proxy's
//! instructions per pgbench transaction.

use super::lex::is_space;
use super::normalize::{Fingerprint, FNV_OFFSET, FNV_PRIME, MAX_SCAN};

/// The fingerprint of `sql` if it uses only the simple subset; see the module docs.
pub(super) fn fingerprint(sql: &[u8]) -> Option<Fingerprint> {
    if sql.len() > MAX_SCAN {
        return None;
    }
    let mut h = FNV_OFFSET;
    let mut feed = |b: u8| {
        h ^= u64::from(b);
        h = h.wrapping_mul(FNV_PRIME);
    };
    let mut statements = 0u32;
    let mut in_statement = false;
    // The previous token was a word (its bytes), for `IN (` / `ARRAY` which collapse
    // literal lists on the general path.
    let mut prev_word: Option<&[u8]> = None;
    let mut i = 0;
    while i < sql.len() {
        let b = sql[i];
        if is_space(b) {
            i += 1;
            continue;
        }
        if b == b';' {
            in_statement = false;
            prev_word = None;
            i += 1;
            continue;
        }
        if !in_statement {
            if statements > 0 {
                feed(4);
            }
            statements = statements.saturating_add(1);
            in_statement = true;
        }
        let start = i;
        let mut word = None;
        match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'_' => {
                // Scanned and hashed in one pass: words are most of a query's bytes.
                while let Some(&c) = sql.get(i) {
                    let lower = WORD_LOWER[usize::from(c)];
                    if lower == 0 {
                        break;
                    }
                    feed(lower);
                    i += 1;
                }
                // A prefixed string (E'', B'', U&'') or anything glued to a quote.
                if matches!(sql.get(i), Some(b'\'' | b'&' | b'"') | Some(0x80..)) {
                    return None;
                }
                feed(1);
                word = Some(&sql[start..i]);
            }
            b'0'..=b'9' => {
                // As the lexer's number(): digits, letters, `_`, `.`, and an exponent sign.
                i += 1;
                while let Some(&c) = sql.get(i) {
                    if (c == b'e' || c == b'E') && matches!(sql.get(i + 1), Some(b'+' | b'-')) {
                        i += 2;
                    } else if c.is_ascii_alphanumeric() || c == b'_' || c == b'.' {
                        i += 1;
                    } else {
                        break;
                    }
                }
                feed(3);
            }
            // A parameter, as the lexer's dollar(): `$` and digits (dollar quotes bail).
            b'$' if sql.get(i + 1).is_some_and(u8::is_ascii_digit) => {
                i += 1;
                while sql.get(i).is_some_and(u8::is_ascii_digit) {
                    i += 1;
                }
                feed(3);
            }
            b'\'' | b'"' => {
                i = quoted_end(sql, i, b);
                if b == b'\'' {
                    feed(3);
                } else {
                    sql[start..i].iter().for_each(|&c| feed(c));
                    feed(2);
                }
            }
            b'=' | b'<' | b'>' | b'*' => {
                // One-byte operators only; `<=`, `*/`, `=-1` and the like go the long way.
                if sql.get(i + 1).is_some_and(|&c| super::lex::is_op_char(c)) {
                    return None;
                }
                i += 1;
                feed(b);
                feed(2);
            }
            b'(' => {
                if prev_word.is_some_and(|w| w.eq_ignore_ascii_case(b"IN")) {
                    return None;
                }
                i += 1;
                feed(b);
                feed(2);
            }
            b')' | b',' => {
                i += 1;
                feed(b);
                feed(2);
            }
            b'.' if !sql.get(i + 1).is_some_and(u8::is_ascii_digit) => {
                i += 1;
                feed(b);
                feed(2);
            }
            _ => return None,
        }
        prev_word = word;
    }
    Some(Fingerprint {
        hash: h,
        statements,
        truncated: false,
    })
}

/// For each byte, its lowercase form if it continues a word (letters, digits, `_`,
/// `$`), else 0.
static WORD_LOWER: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut c = 0;
    while c < 256 {
        let b = c as u8;
        if b.is_ascii_alphanumeric() || b == b'_' || b == b'$' {
            t[c] = b.to_ascii_lowercase();
        }
        c += 1;
    }
    t
};

/// Where a `quote`-delimited token starting at `start` ends (a doubled quote stays
/// inside; unterminated runs to the end), as the lexer's `skip_quoted` without
/// backslash escapes.
fn quoted_end(sql: &[u8], start: usize, quote: u8) -> usize {
    let mut i = start + 1;
    while i < sql.len() {
        if sql[i] == quote {
            if sql.get(i + 1) == Some(&quote) {
                i += 2;
            } else {
                return i + 1;
            }
        } else {
            i += 1;
        }
    }
    sql.len()
}

#[cfg(test)]
mod tests {
    use super::super::normalize::{fingerprint_general, Fingerprint};
    use proptest::prelude::*;

    fn same(sql: &[u8]) -> Option<Fingerprint> {
        let fast = super::fingerprint(sql)?;
        assert_eq!(
            fast,
            fingerprint_general(sql),
            "{:?}",
            String::from_utf8_lossy(sql)
        );
        Some(fast)
    }

    #[test]
    fn the_common_shapes_take_the_fast_path_and_agree() {
        for sql in [
            "SELECT abalance FROM pgbench_accounts WHERE aid = 43;",
            "select  ABALANCE from pgbench_accounts where aid=7",
            "UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid = 1",
            "SELECT \"u\".\"id\", \"u\".\"name\" FROM \"users\" \"u\" WHERE \"u\".\"id\" = 5 LIMIT 1",
            "SELECT count(*) FROM t WHERE a > 1 AND b < 2.5e3 AND c = 'it''s'",
            "BEGIN; SELECT 1; COMMIT;",
            "SELECT abalance FROM pgbench_accounts WHERE aid = $1;",
            "select $1, $22x",
            ";;select 1;;",
            "select 'unterminated",
            "",
        ] {
            let bytes = sql.as_bytes();
            if !sql.contains('+') {
                assert!(same(bytes).is_some(), "{sql}");
            } else {
                same(bytes);
            }
        }
        // Same shape, different literals: one fingerprint.
        assert_eq!(
            same(b"SELECT abalance FROM pgbench_accounts WHERE aid = 43;").map(|f| f.hash),
            same(b"select abalance from pgbench_accounts where aid = 99123").map(|f| f.hash)
        );
    }

    #[test]
    fn the_rest_goes_the_long_way() {
        for sql in [
            "select 1 -- comment",
            "select /* c */ 1",
            "select * from t where id in (1, 2, 3)",
            "select -1",
            "select $a",
            "select $$x$$",
            "select E'a\\'b'",
            "select x from t where a <= 1",
            "select a::int",
            "select ARRAY[1,2]",
            "select é",
            "select .5",
        ] {
            assert!(super::fingerprint(sql.as_bytes()).is_none(), "{sql}");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4000))]

        /// Queries built from pieces of both subsets: whenever the fast path answers,
        /// it agrees with the general one.
        #[test]
        fn the_fast_path_agrees_with_the_general_one(pieces in prop::collection::vec(
            prop::sample::select(vec![
                "select", "SELECT", "from", "t", "x_1", "in", "IN", "array", "e", "E", "u",
                "1", "42", "1.5", "1e+5", "0x1F", "'s'", "'it''s'", "'", "\"Q\"", "\"a\"\"b\"",
                "\"", "$1", "$", "$a$", "$12", "=", "<", ">", "*", "<=", "=-", "-", "+", "(", ")", ",", ";", ".", ".5",
                " ", "  ", "\t", "\n", "--c\n", "/*c*/", "$1", "&", "::", "[", "]", "é",
            ]),
            0..24,
        )) {
            let sql = pieces.concat();
            if let Some(fast) = super::fingerprint(sql.as_bytes()) {
                prop_assert_eq!(fast, fingerprint_general(sql.as_bytes()), "{:?}", sql);
            }
        }
    }
}
