//! A cheap, sufficient test that two query texts have the same [`fingerprint`]: a
//! client that sends its query with literals inlined (`... WHERE id = 42`, then `= 43`)
//! repeats the same text except for its numbers. Comparing the two texts costs a
//! fraction of fingerprinting the new one, which was a tenth of the proxy's
//! instructions per simple-protocol transaction.
//!
//! The texts qualify when they are byte for byte equal except for runs of digits that
//! start a token (the byte before is not part of a word), where the fingerprint has a
//! placeholder either way. Anything else answers false, and the caller fingerprints:
//! a quoted identifier (`"`, hashed verbatim), digits inside a word (`t1`), an exponent
//! (`1e5`), a text past [`MAX_SCAN`] (fingerprinted only in part).
//!
//! [`fingerprint`]: super::fingerprint

use super::normalize::MAX_SCAN;
use super::swar::byte_marks;

/// Whether `a` and `b` certainly have the same fingerprint (see the module docs); false
/// means "fingerprint it", not "different".
pub fn same_shape(a: &[u8], b: &[u8]) -> bool {
    if a.len() > MAX_SCAN || b.len() > MAX_SCAN {
        return false;
    }
    let (mut i, mut j) = (0, 0);
    loop {
        let k = equal_prefix(&a[i..], &b[j..]);
        i += k;
        j += k;
        let (x, y) = (a.get(i).copied(), b.get(j).copied());
        if x.is_none() && y.is_none() {
            return true;
        }
        // A difference: fine only inside a run of digits that starts a token in both
        // (`= 12` against `= 1` differs after the shared `1`).
        let digit = |c: Option<u8>| c.is_some_and(|c| c.is_ascii_digit());
        let before = a[..i]
            .iter()
            .rev()
            .take_while(|c| c.is_ascii_digit())
            .count();
        let in_runs = if before == 0 {
            digit(x) && digit(y)
        } else {
            digit(x) || digit(y)
        };
        let start = i - before;
        if !in_runs || (start > 0 && continues_word(a[start - 1])) {
            return false;
        }
        // At least one side moves on: its byte is a digit.
        i += a[i..].iter().take_while(|c| c.is_ascii_digit()).count();
        j += b[j..].iter().take_while(|c| c.is_ascii_digit()).count();
    }
}

/// How many leading bytes `a` and `b` share, stopping before any `"` (which the caller
/// then refuses): eight bytes at a time, then one at a time for the tail.
fn equal_prefix(a: &[u8], b: &[u8]) -> usize {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut k = 0;
    for (ca, cb) in a.chunks_exact(8).zip(b.chunks_exact(8)) {
        let x = u64::from_le_bytes(ca.try_into().unwrap_or_default());
        let y = u64::from_le_bytes(cb.try_into().unwrap_or_default());
        let stop = (x ^ y) | byte_marks(x, b'"');
        if stop != 0 {
            // Little-endian: the lowest set bit is in the first byte to stop at.
            return k + (stop.trailing_zeros() / 8) as usize;
        }
        k += 8;
    }
    while k < n && a[k] == b[k] && a[k] != b'"' {
        k += 1;
    }
    k
}

/// Whether `b` may be part of a word, so that digits after it belong to that word (or
/// to a `$n` parameter, or an exponent). Non-ASCII bytes may be identifier letters.
fn continues_word(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'$' || b >= 0x80
}

#[cfg(test)]
mod tests {
    use super::super::fingerprint;
    use super::same_shape;
    use proptest::prelude::*;

    #[test]
    fn inlined_numbers_keep_the_shape() {
        for (a, b) in [
            (
                "SELECT abalance FROM pgbench_accounts WHERE aid = 43;",
                "SELECT abalance FROM pgbench_accounts WHERE aid = 990123;",
            ),
            (
                "UPDATE pgbench_tellers SET tbalance = tbalance + -4121 WHERE tid = 7;",
                "UPDATE pgbench_tellers SET tbalance = tbalance + -5 WHERE tid = 10;",
            ),
            (
                "select 1.5, x from t limit 10",
                "select 22.75, x from t limit 3",
            ),
            ("select 1", "select 1"),
            ("select 12;", "select 1;"),
            ("select 1.5", "select 1.55"),
            ("", ""),
        ] {
            assert!(same_shape(a.as_bytes(), b.as_bytes()), "{a} / {b}");
            assert_eq!(fingerprint(a.as_bytes()), fingerprint(b.as_bytes()));
        }
    }

    #[test]
    fn anything_else_is_fingerprinted() {
        for (a, b) in [
            // Digits in identifiers, quoted identifiers, parameters, exponents.
            ("select * from t1", "select * from t2"),
            ("select \"a 1\"", "select \"a 2\""),
            ("select $1", "select $2"),
            ("select 1e5", "select 1e7"),
            // Not digits, or digits against something else.
            ("select 'a'", "select 'b'"),
            ("select 1", "select x"),
            ("select 1", "select 1 "),
            ("select 12a", "select 12b"),
            ("select x12", "select x1"),
        ] {
            assert!(!same_shape(a.as_bytes(), b.as_bytes()), "{a} / {b}");
        }
        let long = format!("select {}", "x".repeat(super::MAX_SCAN));
        assert!(!same_shape(long.as_bytes(), long.as_bytes()));
    }

    /// Replaces each maximal run of ASCII digits in `s` by the next of `runs`.
    fn renumber(s: &str, runs: &[&str]) -> String {
        let mut out = String::new();
        let mut k = 0;
        let mut in_run = false;
        for c in s.chars() {
            if c.is_ascii_digit() {
                if !in_run {
                    out.push_str(runs[k % runs.len()]);
                    k += 1;
                }
                in_run = true;
            } else {
                in_run = false;
                out.push(c);
            }
        }
        out
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4000))]

        /// Whenever two texts pass, their fingerprints agree: texts built from pieces of
        /// SQL, comments, strings, identifiers and numbers, against the same text with
        /// its numbers changed, and against an unrelated text.
        #[test]
        fn passing_texts_have_one_fingerprint(
            pieces in prop::collection::vec(
                prop::sample::select(vec![
                    "select", "from", "t", "x_1", "t2", "in", "IN", "e", "E", "1", "42", "1.5",
                    "1e+5", "0x1F", "'s'", "'a 1'", "'it''s'", "'", "\"Q\"", "\"a 7\"", "\"",
                    "$1", "$", "$a$", "$12", "=", "<", ">", "*", "<=", "=-", "-", "+", "(", ")",
                    ",", ";", ".", ".5", " ", "  ", "\t", "\n", "--c 3\n", "/*c 4*/", "&",
                    "::", "[", "]", "é", "é1", "E'\\\\1'", "U&\"d\\\\0061\"",
                ]),
                0..24,
            ),
            runs in prop::collection::vec(
                prop::sample::select(vec!["0", "7", "42", "12345", "3", "99"]),
                1..5,
            ),
            other in prop::collection::vec(
                prop::sample::select(vec!["select", "1", "2", " ", "x", "'1'", ";", "("]),
                0..8,
            ),
        ) {
            let a = pieces.concat();
            let b = renumber(&a, &runs);
            if same_shape(a.as_bytes(), b.as_bytes()) {
                prop_assert_eq!(fingerprint(a.as_bytes()), fingerprint(b.as_bytes()), "{:?} / {:?}", a, b);
            }
            let c = other.concat();
            if same_shape(a.as_bytes(), c.as_bytes()) {
                prop_assert_eq!(fingerprint(a.as_bytes()), fingerprint(c.as_bytes()), "{:?} / {:?}", a, c);
            }
        }
    }
}
