//! Targets over `weir-wire`'s sans-IO parsers: framing, startup packets, SQL.

use bytes::BytesMut;
use weir_wire::frame::{frames, split_frame, split_frames, Header};
use weir_wire::scan::StreamScanner;
use weir_wire::startup::{parse_initial, InitialPacket};
use weir_wire::{backend, frontend, sql as lex};

/// Cap used for the framing targets: small, so "too large" is reachable.
const MAX_LEN: usize = 1 << 16;

/// Reads of `chunk` bytes (first input byte, 0 = all at once) of the rest of `data`.
fn chunked(data: &[u8]) -> (usize, &[u8]) {
    match data {
        [0, rest @ ..] => (rest.len().max(1), rest),
        [c, rest @ ..] => (usize::from(*c), rest),
        [] => (1, &[]),
    }
}

/// Frame splitting (`frame.rs`), the streaming scanner (`scan.rs`) and every body reader
/// of `frontend.rs`/`backend.rs`: `chunk, stream bytes...`. The scanner, the whole-frame
/// splitter and the batch splitter must agree on every frame.
pub fn frame(data: &[u8]) {
    let (chunk, stream) = chunked(data);
    let mut buf = BytesMut::new();
    let mut whole = Vec::new();
    let mut scanner = StreamScanner::new();
    let mut pending: Vec<u8> = Vec::new();
    let mut scanned = Vec::new();
    let mut forwarded = 0usize;
    let mut split_failed = false;
    let mut scan_failed = false;
    for piece in stream.chunks(chunk) {
        if !split_failed {
            buf.extend_from_slice(piece);
            loop {
                match split_frame(&mut buf, MAX_LEN) {
                    Ok(Some(f)) => {
                        read_bodies(f.tag(), f.body());
                        whole.push((f.tag(), f.body().to_vec()));
                    }
                    Ok(None) => break,
                    Err(_) => {
                        split_failed = true;
                        break;
                    }
                }
            }
        }
        if !scan_failed {
            pending.extend_from_slice(piece);
            // Every other tag is held back until complete, the rest stream through.
            match scanner.scan(
                &pending,
                MAX_LEN,
                |t| t % 2 == 0,
                |t, b| scanned.push((t, b.to_vec())),
            ) {
                Ok(n) => {
                    assert!(n <= pending.len(), "scan forwarded bytes it was not given");
                    forwarded += n;
                    pending.drain(..n);
                }
                Err(_) => scan_failed = true,
            }
        }
    }
    assert_eq!(
        split_failed, scan_failed,
        "split and scan disagree on validity"
    );
    let held: Vec<_> = whole.iter().filter(|(t, _)| t % 2 == 0).cloned().collect();
    assert_eq!(held, scanned, "scan saw other frames than split_frame");
    if !split_failed {
        assert_eq!(forwarded + pending.len(), stream.len());
        assert!(forwarded >= whole.iter().map(|(_, b)| b.len() + 5).sum::<usize>());
    }

    // The batch splitter over the same stream, then the iterator over its batch.
    let mut all = BytesMut::from(stream);
    let mut batched = Vec::new();
    while let Ok(Some(batch)) = split_frames(&mut all, MAX_LEN) {
        batched.extend(frames(&batch).map(|(t, b)| (t, b.to_vec())));
    }
    // On a bad frame, split_frames drops the good frames of its batch (documented: the
    // connection is closed anyway), so it sees a prefix of what split_frame saw.
    if split_failed {
        assert!(whole.starts_with(&batched), "split_frames saw other frames");
    } else {
        assert_eq!(batched, whole, "split_frames and split_frame disagree");
    }
    let _ = Header::peek(stream, usize::MAX);
    let _ = frames(stream).count();
}

/// Every reader of a frontend or backend body (the proxy calls them by tag; here every
/// body goes through all of them).
fn read_bodies(tag: u8, body: &[u8]) {
    let _ = frontend::query_text(body);
    let _ = frontend::parse_name_and_query(body);
    let _ = frontend::bind_names(body);
    let _ = frontend::target(body);
    let mut out = [0u8; 16];
    let (n, rest) = frontend::first_keyword(body, &mut out);
    assert!(n <= out.len() && rest.len() <= body.len());
    let fields = backend::ErrorFields::parse(body);
    let _ = (fields.is_fatal(), fields.message_lossy());
    let _ = backend::parse_parameter_status(body);
    let _ = backend::parse_backend_key_data(body);
    let _ = backend::parse_ready_for_query(body);
    if tag == b'R' {
        let _ = weir_wire::auth::messages::parse_auth_request(body);
    }
}

/// Initial packets (`startup.rs`: StartupMessage, SSLRequest, GSSENCRequest,
/// CancelRequest) as the listener reads them: `chunk, stream bytes...`; then the
/// startup parameters as the session reads them.
pub fn startup(data: &[u8]) {
    let (chunk, stream) = chunked(data);
    let mut buf = BytesMut::new();
    for piece in stream.chunks(chunk) {
        buf.extend_from_slice(piece);
        loop {
            let before = buf.len();
            match parse_initial(&mut buf) {
                Ok(Some(packet)) => {
                    assert!(buf.len() < before, "a packet was parsed from nothing");
                    if let InitialPacket::Startup(m) = packet {
                        let _ = (m.user(), m.database(), m.get("options"));
                        for (_, value) in weir_proxy::params::startup_settings(&m.params) {
                            if let Err(e) = weir_proxy::session::parse_priority(&value) {
                                assert!(e.sqlstate().is_some());
                            }
                        }
                    }
                }
                Ok(None) => {
                    assert!(buf.len() < weir_wire::startup::MAX_STARTUP_LEN + 4);
                    break;
                }
                Err(_) => return,
            }
        }
    }
}

/// The SQL lexer (`sql.rs`) and everything built on it that sees client SQL: the
/// fingerprint and normalizer, statement keywords, call detection, the session-feature
/// classification (`features.rs`) and the `SET pgweir.priority` reader.
///
/// Checked against PostgreSQL's rules, not only for panics: between two tokens lies
/// exactly what PostgreSQL skips (`pg_skip_trivia`), the first-keyword fast path skips
/// the same, and the classification's fast path (which skips lexing most queries)
/// decides as lexing would. A statement hidden from the classification runs on the
/// server untracked: its settings leak to the next client, its LISTEN never pins.
pub fn sql(data: &[u8]) {
    let mut prev_end = 0usize;
    for t in lex::Lexer::new(data) {
        // Tokens are sub-slices of the input, in order, with only trivia between them.
        let start = t.text.as_ptr() as usize - data.as_ptr() as usize;
        assert!(start >= prev_end && start + t.text.len() <= data.len());
        assert_eq!(
            start,
            pg_skip_trivia(data, prev_end),
            "the lexer skipped other bytes than PostgreSQL would"
        );
        prev_end = start + t.text.len();
        let _ = t.is_literal();
    }
    assert_eq!(
        pg_skip_trivia(data, prev_end),
        data.len(),
        "the lexer found no token where PostgreSQL would"
    );
    assert_eq!(
        frontend::skip_space_and_comments(data).len(),
        data.len() - pg_skip_trivia(data, 0),
        "the first-keyword fast path skipped other bytes than PostgreSQL would"
    );
    let _ = lex::fingerprint(data);
    let _ = lex::normalize(data);
    for k in lex::statement_keywords(data) {
        let _ = k.as_str();
    }
    let _ = lex::contains_call(data, "pg_advisory_lock");
    let _ = lex::contains_any_call(data, &["set_config", "pg_catalog.set_config", "lo_open"]);
    let mut effects = weir_proxy::features::effects(data);
    // A statement in front makes the classification lex the whole text: it must find
    // what the fast path found (a lone DEALLOCATE is only recognised alone).
    let mut lexed = weir_proxy::features::effects(&[b"SELECT 1;".as_slice(), data].concat());
    effects.deallocate = None;
    lexed.deallocate = None;
    assert_eq!(
        effects, lexed,
        "the classification's fast path missed a statement"
    );
    let _ = weir_proxy::proxy_set::parse(data);
}

/// Where the next token starts at or after `i`, by PostgreSQL's scan.l: whitespace
/// (`[ \t\n\r\f\v]`, `\v` since PostgreSQL 17), `--` comments ended by `\n` or `\r`,
/// and nested `/* */` comments (an unterminated one runs to the end).
pub fn pg_skip_trivia(sql: &[u8], mut i: usize) -> usize {
    loop {
        match sql.get(i..).unwrap_or_default() {
            [b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c, ..] => i += 1,
            [b'-', b'-', rest @ ..] => {
                i += 2 + rest
                    .iter()
                    .position(|&b| b == b'\n' || b == b'\r')
                    .map_or(rest.len(), |nl| nl + 1);
            }
            [b'/', b'*', ..] => {
                let mut depth = 0usize;
                loop {
                    match sql.get(i..).unwrap_or_default() {
                        [b'/', b'*', ..] => {
                            depth += 1;
                            i += 2;
                        }
                        [b'*', b'/', ..] => {
                            depth -= 1;
                            i += 2;
                            if depth == 0 {
                                break;
                            }
                        }
                        [] => return sql.len(),
                        _ => i += 1,
                    }
                }
            }
            _ => return i,
        }
    }
}
