//! Property tests of the codec: no byte sequence makes a decoder panic, and each decoder
//! agrees with a small reference model written here from the protocol's rules (tag byte,
//! self-inclusive `i32` length, body), so "did not panic" also means "read it right".
//! Valid streams built with the crate's own builders must come back unchanged however the
//! bytes are chunked, as they are when they arrive from a socket.

use bytes::{BufMut, BytesMut};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::Index;
use weir_wire::backend::{
    parse_backend_key_data, parse_parameter_status, parse_ready_for_query, ErrorFields,
};
use weir_wire::build::{
    put_backend_key_data, put_error, put_frame, put_parameter_status, ErrorMessage, Severity,
};
use weir_wire::frame::{
    frames, read_cstr, split_frame, split_frames, Header, DEFAULT_MAX_MESSAGE_LEN, HEADER_LEN,
};
use weir_wire::frontend::{
    bind_names, first_keyword, parse_name_and_query, query_text, skip_space_and_comments, target,
};
use weir_wire::scan::StreamScanner;
use weir_wire::startup::{
    parse_initial, put_cancel_request, put_startup_message, InitialPacket, CANCEL_REQUEST_CODE,
    GSSENC_REQUEST_CODE, MAX_STARTUP_LEN, PROTOCOL_3_0, SSL_REQUEST_CODE,
};

/// Cap used where the test only needs every generated frame to fit.
const ROOMY: usize = 1 << 20;

// ---------------------------------------------------------------- strategies

/// Message type bytes, biased towards real ones so streams look like traffic.
fn tag() -> impl Strategy<Value = u8> {
    prop_oneof![
        4 => proptest::sample::select(b"ZEDCTSKN".to_vec()),
        2 => proptest::sample::select(b"RIdcfHWAnstv123QPBX".to_vec()),
        1 => any::<u8>(),
    ]
}

/// Message bodies: mostly short, sometimes a few KiB so they span several chunks.
fn body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![4 => vec(any::<u8>(), 0..24), 1 => vec(any::<u8>(), 0..3000)]
}

/// A list of well-formed messages.
fn message_list() -> impl Strategy<Value = Vec<(u8, Vec<u8>)>> {
    vec((tag(), body()), 0..12)
}

/// The five header bytes for `tag` with an arbitrary length field.
fn header(tag: u8, len: i32) -> Vec<u8> {
    let mut v = vec![tag];
    v.extend_from_slice(&len.to_be_bytes());
    v
}

/// Bytes that get past the first checks: valid frames, headers with absurd or small
/// lengths, and raw noise, concatenated.
fn soup() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        8 => (tag(), vec(any::<u8>(), 0..40)).prop_map(|(t, b)| encode(&[(t, b)])),
        1 => (tag(), any::<i32>()).prop_map(|(t, len)| header(t, len)),
        1 => (tag(), -2i32..80).prop_map(|(t, len)| header(t, len)),
        1 => vec(any::<u8>(), 0..12),
    ];
    // Sometimes cut short, so the stream ends inside a frame or a header.
    (vec(piece, 0..8), any::<Index>(), any::<bool>()).prop_map(|(pieces, at, cut)| {
        let mut bytes = pieces.concat();
        if cut {
            bytes.truncate(at.index(bytes.len() + 1));
        }
        bytes
    })
}

/// Uniformly random bytes or [`soup`].
fn stream_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![1 => vec(any::<u8>(), 0..300), 3 => soup()]
}

/// Frame length caps, from "nothing fits" to unlimited.
fn max_len() -> impl Strategy<Value = usize> {
    prop_oneof![
        1 => 0usize..8,
        2 => 0usize..200,
        4 => Just(ROOMY),
        1 => Just(DEFAULT_MAX_MESSAGE_LEN),
        1 => Just(usize::MAX),
    ]
}

/// Caps for `split_frame`, which reserves room for the announced frame up to the cap:
/// a 1 GiB cap would make each case reserve up to a gigabyte.
fn small_max_len() -> impl Strategy<Value = usize> {
    prop_oneof![1 => 0usize..8, 2 => 0usize..200, 4 => Just(ROOMY)]
}

/// Tags the scanner holds back: the proxy's own choice (Z and E) or a few others.
fn interesting() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        2 => Just(b"ZE".to_vec()),
        2 => vec(proptest::sample::select(b"ZEDCTSKN".to_vec()), 1..5),
        1 => vec(any::<u8>(), 0..4),
    ]
}

/// Cut points into a stream of any length (turned into positions by [`chunks`]).
fn cuts() -> impl Strategy<Value = Vec<Index>> {
    vec(any::<Index>(), 0..16)
}

// ---------------------------------------------------------------- helpers and models

/// Encodes messages with the crate's own builder.
fn encode(messages: &[(u8, Vec<u8>)]) -> Vec<u8> {
    let mut buf = BytesMut::new();
    for (tag, body) in messages {
        put_frame(&mut buf, *tag, |b| b.put_slice(body));
    }
    buf.to_vec()
}

/// Splits `data` at the (sorted, deduplicated) cut points.
fn chunks<'a>(data: &'a [u8], cuts: &[Index]) -> Vec<&'a [u8]> {
    let mut at: Vec<usize> = cuts.iter().map(|c| c.index(data.len() + 1)).collect();
    at.push(data.len());
    at.sort_unstable();
    at.dedup();
    let mut start = 0;
    at.into_iter()
        .map(|end| {
            let piece = &data[start..end];
            start = end;
            piece
        })
        .collect()
}

/// How a stream of frames ends according to the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// Fewer bytes than the next frame needs.
    Incomplete,
    /// The next length field is below 4 or above the cap.
    Bad,
}

/// Reference framing: the complete frames at the start of `data` and why it stops.
fn model_frames(data: &[u8], max: usize) -> (Vec<(u8, &[u8])>, End) {
    let mut out = Vec::new();
    let mut rest = data;
    loop {
        if rest.len() < 5 {
            return (out, End::Incomplete);
        }
        let len = i32::from_be_bytes([rest[1], rest[2], rest[3], rest[4]]);
        if len < 4 || len as usize > max {
            return (out, End::Bad);
        }
        let total = 1 + len as usize;
        if rest.len() < total {
            return (out, End::Incomplete);
        }
        out.push((rest[0], &rest[5..total]));
        rest = &rest[total..];
    }
}

/// Reference relay: bytes forwardable once all of `data` is in, the interesting messages
/// seen, and whether a bad length stops the stream.
fn model_relay(data: &[u8], max: usize, interesting: &[u8]) -> (usize, Vec<(u8, Vec<u8>)>, bool) {
    let mut pos = 0;
    let mut seen = Vec::new();
    while data.len() - pos >= 5 {
        let rest = &data[pos..];
        let len = i32::from_be_bytes([rest[1], rest[2], rest[3], rest[4]]);
        if len < 4 || len as usize > max {
            return (pos, seen, true);
        }
        let total = 1 + len as usize;
        if interesting.contains(&rest[0]) {
            if rest.len() < total {
                break;
            }
            seen.push((rest[0], rest[5..total].to_vec()));
            pos += total;
        } else {
            // Uninteresting frames stream through even when half-received.
            pos += total.min(rest.len());
        }
    }
    (pos, seen, false)
}

/// What relaying `pieces` through one scanner produced.
struct Relayed {
    out: Vec<u8>,
    seen: Vec<(u8, Vec<u8>)>,
    failed: bool,
    at_boundary: bool,
}

/// Feeds `pieces` to a [`StreamScanner`] the way the proxy does: append, scan, forward.
fn relay(pieces: &[&[u8]], max: usize, interesting: &[u8]) -> Relayed {
    let mut scanner = StreamScanner::new();
    let mut pending = Vec::new();
    let mut r = Relayed {
        out: Vec::new(),
        seen: Vec::new(),
        failed: false,
        at_boundary: true,
    };
    for piece in pieces {
        pending.extend_from_slice(piece);
        let seen = &mut r.seen;
        match scanner.scan(
            &pending,
            max,
            |t| interesting.contains(&t),
            |t, b| seen.push((t, b.to_vec())),
        ) {
            Ok(n) => {
                assert!(n <= pending.len(), "forwarded {n} of {}", pending.len());
                r.out.extend(pending.drain(..n));
            }
            Err(_) => {
                r.failed = true;
                break;
            }
        }
    }
    r.at_boundary = scanner.at_boundary();
    r
}

// ---------------------------------------------------------------- framing

proptest! {
    #[test]
    fn header_peek_matches_the_model(data in stream_bytes(), max in max_len()) {
        let peeked = Header::peek(&data, max);
        if data.len() < HEADER_LEN {
            prop_assert_eq!(peeked, Ok(None));
        } else {
            let len = i32::from_be_bytes([data[1], data[2], data[3], data[4]]);
            if len < 4 || len as usize > max {
                prop_assert!(peeked.is_err());
            } else {
                let h = peeked.expect("valid header").expect("5 bytes present");
                prop_assert_eq!(h.tag, data[0]);
                prop_assert_eq!(h.frame_len(), 1 + len as usize);
            }
        }
    }

    #[test]
    fn split_frame_matches_the_model(data in stream_bytes(), max in small_max_len()) {
        let (expected, end) = model_frames(&data, max);
        let mut buf = BytesMut::from(&data[..]);
        let mut got = Vec::new();
        let mut consumed = 0;
        let outcome = loop {
            match split_frame(&mut buf, max) {
                Ok(Some(f)) => {
                    prop_assert_eq!(&f.bytes[..], &data[consumed..consumed + f.bytes.len()]);
                    consumed += f.bytes.len();
                    got.push((f.tag(), f.body().to_vec()));
                }
                Ok(None) => break End::Incomplete,
                Err(_) => break End::Bad,
            }
        };
        prop_assert_eq!(outcome, end);
        let expected: Vec<(u8, Vec<u8>)> = expected.into_iter().map(|(t, b)| (t, b.to_vec())).collect();
        prop_assert_eq!(got, expected);
        // Nothing past the complete frames is consumed, whatever the outcome.
        prop_assert_eq!(&buf[..], &data[consumed..]);
    }

    #[test]
    fn split_frames_matches_the_model(data in stream_bytes(), max in max_len()) {
        let (expected, end) = model_frames(&data, max);
        let mut buf = BytesMut::from(&data[..]);
        match split_frames(&mut buf, max) {
            Err(_) => {
                prop_assert_eq!(end, End::Bad);
                prop_assert_eq!(&buf[..], &data[..], "an error consumes nothing");
            }
            Ok(None) => {
                prop_assert_eq!(end, End::Incomplete);
                prop_assert!(expected.is_empty());
                prop_assert_eq!(&buf[..], &data[..]);
            }
            Ok(Some(batch)) => {
                prop_assert_eq!(end, End::Incomplete);
                let batch_frames: Vec<(u8, &[u8])> = frames(&batch).collect();
                prop_assert_eq!(batch_frames, expected);
                prop_assert_eq!(&batch[..], &data[..batch.len()]);
                prop_assert_eq!(&buf[..], &data[batch.len()..]);
            }
        }
    }

    #[test]
    fn frames_iterator_matches_the_model(data in stream_bytes()) {
        let (expected, _) = model_frames(&data, usize::MAX);
        let got: Vec<(u8, &[u8])> = frames(&data).collect();
        prop_assert_eq!(got, expected);
    }

    #[test]
    fn read_cstr_splits_at_the_first_nul(data in vec(any::<u8>(), 0..64)) {
        match read_cstr(&data) {
            Some((s, rest)) => {
                prop_assert!(!s.contains(&0));
                prop_assert_eq!(data.get(s.len()), Some(&0));
                prop_assert_eq!(rest, &data[s.len() + 1..]);
            }
            None => prop_assert!(!data.contains(&0)),
        }
    }

    #[test]
    fn built_frames_split_back_whatever_the_chunking(messages in message_list(), cuts in cuts()) {
        let stream = encode(&messages);
        let pieces = chunks(&stream, &cuts);

        // One frame at a time, as the client reader does.
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        for piece in &pieces {
            buf.extend_from_slice(piece);
            while let Some(f) = split_frame(&mut buf, ROOMY).expect("valid stream") {
                prop_assert_eq!(&f.bytes[..], &encode(&[(f.tag(), f.body().to_vec())])[..]);
                got.push((f.tag(), f.body().to_vec()));
            }
        }
        prop_assert!(buf.is_empty());
        prop_assert_eq!(&got, &messages);

        // In batches: the batches rejoin into the stream, and iterate to the same messages.
        let mut rejoined = Vec::new();
        let mut got = Vec::new();
        for piece in &pieces {
            buf.extend_from_slice(piece);
            if let Some(batch) = split_frames(&mut buf, ROOMY).expect("valid stream") {
                rejoined.extend_from_slice(&batch);
                got.extend(frames(&batch).map(|(t, b)| (t, b.to_vec())));
            }
        }
        prop_assert!(buf.is_empty());
        prop_assert_eq!(rejoined, stream);
        prop_assert_eq!(&got, &messages);
    }
}

// ---------------------------------------------------------------- streaming scanner

proptest! {
    #[test]
    fn scanner_on_any_bytes_matches_the_model(
        data in stream_bytes(),
        cuts in cuts(),
        max in max_len(),
        interesting in interesting(),
    ) {
        let (forward, seen, bad) = model_relay(&data, max, &interesting);
        let r = relay(&chunks(&data, &cuts), max, &interesting);
        prop_assert_eq!(r.failed, bad);
        // Interesting messages are shown before anything behind them fails.
        prop_assert_eq!(r.seen, seen);
        prop_assert_eq!(&r.out[..], &data[..r.out.len()]);
        if bad {
            prop_assert!(r.out.len() <= forward);
        } else {
            prop_assert_eq!(r.out.len(), forward);
        }
    }

    #[test]
    fn scanner_forwards_valid_streams_exactly(
        messages in message_list(),
        cuts in cuts(),
        interesting in interesting(),
    ) {
        let stream = encode(&messages);
        let r = relay(&chunks(&stream, &cuts), ROOMY, &interesting);
        prop_assert!(!r.failed);
        prop_assert_eq!(r.out, stream);
        prop_assert!(r.at_boundary);
        let wanted: Vec<(u8, Vec<u8>)> = messages
            .into_iter()
            .filter(|(t, _)| interesting.contains(t))
            .collect();
        prop_assert_eq!(r.seen, wanted);
    }
}

// ---------------------------------------------------------------- startup packets

/// Protocol codes: the special request codes, 3.x, other majors, anything.
fn startup_code() -> impl Strategy<Value = i32> {
    prop_oneof![
        4 => Just(PROTOCOL_3_0),
        2 => Just(PROTOCOL_3_0 | 2),
        1 => Just(SSL_REQUEST_CODE),
        1 => Just(GSSENC_REQUEST_CODE),
        1 => Just(CANCEL_REQUEST_CODE),
        1 => any::<i32>(),
    ]
}

/// Startup bodies: well-formed parameter lists (so parsing gets to the end), the same
/// with a byte changed or cut, and noise.
fn startup_body() -> impl Strategy<Value = Vec<u8>> {
    let word = prop_oneof![
        6 => proptest::sample::select(vec!["user", "database", "options", "app", "_pq_.x", "é"])
            .prop_map(|w| w.as_bytes().to_vec()),
        1 => Just(Vec::new()),
        1 => vec(any::<u8>(), 0..6),
    ];
    let list = vec((word.clone(), word), 0..5).prop_map(|pairs| {
        let mut body = Vec::new();
        for (name, value) in pairs {
            body.extend_from_slice(&name);
            body.push(0);
            body.extend_from_slice(&value);
            body.push(0);
        }
        body.push(0);
        body
    });
    prop_oneof![
        3 => list.clone(),
        2 => (list, any::<Index>(), any::<u8>(), any::<bool>()).prop_map(|(mut body, at, byte, cut)| {
            let i = at.index(body.len());
            if cut { body.truncate(i) } else { body[i] = byte }
            body
        }),
        1 => vec(any::<u8>(), 0..300),
    ]
}

/// Parses `data` and checks what was consumed against the length prefix.
fn check_initial(data: &[u8]) -> Result<(), TestCaseError> {
    let mut buf = BytesMut::from(data);
    match parse_initial(&mut buf) {
        Ok(None) => {
            prop_assert_eq!(&buf[..], data, "incomplete consumes nothing");
            if let Some(head) = data.get(..4) {
                let len = i32::from_be_bytes([head[0], head[1], head[2], head[3]]);
                prop_assert!((8..=MAX_STARTUP_LEN as i32).contains(&len));
                prop_assert!(data.len() < len as usize);
            }
        }
        Ok(Some(_)) => {
            let len = i32::from_be_bytes([data[0], data[1], data[2], data[3]]) as usize;
            prop_assert!((8..=MAX_STARTUP_LEN).contains(&len));
            prop_assert_eq!(&buf[..], &data[len..]);
        }
        Err(_) => {}
    }
    Ok(())
}

proptest! {
    #[test]
    fn parse_initial_on_any_bytes(data in vec(any::<u8>(), 0..64)) {
        check_initial(&data)?;
    }

    #[test]
    fn parse_initial_behind_a_plausible_length(
        exact in proptest::bool::weighted(0.75),
        len in 0i32..=MAX_STARTUP_LEN as i32,
        code in startup_code(),
        body in startup_body(),
        cut in any::<Index>(),
    ) {
        let len = if exact { 8 + body.len() as i32 } else { len };
        let mut data = len.to_be_bytes().to_vec();
        data.extend_from_slice(&code.to_be_bytes());
        data.extend_from_slice(&body);
        check_initial(&data)?;
        // Any shorter prefix of an acceptable packet is "incomplete", never an error.
        let prefix = &data[..cut.index(data.len())];
        if (8..=MAX_STARTUP_LEN as i32).contains(&len) && prefix.len() < len as usize {
            let mut buf = BytesMut::from(prefix);
            prop_assert_eq!(parse_initial(&mut buf), Ok(None));
        }
    }

    #[test]
    fn startup_message_roundtrips(
        params in vec(("[a-z_]{1,12}", "[^\\x00]{0,20}"), 0..6),
        trailing in vec(any::<u8>(), 0..8),
    ) {
        let mut buf = BytesMut::new();
        put_startup_message(&mut buf, params.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        buf.extend_from_slice(&trailing);
        let Ok(Some(InitialPacket::Startup(m))) = parse_initial(&mut buf) else {
            return Err(TestCaseError::fail("a built StartupMessage must parse"));
        };
        prop_assert_eq!((m.major, m.minor), (3, 0));
        prop_assert_eq!(m.params, params);
        prop_assert_eq!(&buf[..], &trailing[..]);
    }

    #[test]
    fn cancel_request_roundtrips(pid in any::<i32>(), key in vec(any::<u8>(), 4..=256)) {
        let mut buf = BytesMut::new();
        put_cancel_request(&mut buf, pid, &key);
        prop_assert_eq!(parse_initial(&mut buf), Ok(Some(InitialPacket::Cancel { pid, key })));
        prop_assert!(buf.is_empty());
    }
}

// ---------------------------------------------------------------- backend bodies

/// ErrorResponse-like bodies: typed fields with NUL-free values, sometimes cut short.
fn error_fields() -> impl Strategy<Value = Vec<(u8, Vec<u8>)>> {
    let field = prop_oneof![3 => proptest::sample::select(b"SVCMDH".to_vec()), 1 => 1u8..];
    let value = vec(1u8.., 0..12);
    vec((field, value), 0..8)
}

proptest! {
    #[test]
    fn backend_readers_on_any_bytes(body in prop_oneof![vec(any::<u8>(), 0..300), soup()]) {
        let e = ErrorFields::parse(&body);
        let _ = (e.is_fatal(), e.message_lossy());
        if let Some((name, value)) = parse_parameter_status(&body) {
            prop_assert!(body.starts_with(name.as_bytes()));
            prop_assert!(!name.contains('\0') && !value.contains('\0'));
        }
        if let Some((pid, key)) = parse_backend_key_data(&body) {
            prop_assert_eq!(pid.to_be_bytes(), [body[0], body[1], body[2], body[3]]);
            prop_assert_eq!(key, &body[4..]);
            prop_assert!((4..=256).contains(&key.len()));
        }
        match parse_ready_for_query(&body) {
            Some(s) => prop_assert!(body.len() == 1 && b"ITE".contains(&s)),
            None => prop_assert!(body.len() != 1 || !b"ITE".contains(&body[0])),
        }
    }

    #[test]
    fn error_fields_match_the_model(fields in error_fields(), terminated in any::<bool>(), tail in vec(any::<u8>(), 0..8)) {
        let mut body = Vec::new();
        for (f, v) in &fields {
            body.push(*f);
            body.extend_from_slice(v);
            body.push(0);
        }
        if terminated {
            body.push(0);
            body.extend_from_slice(&tail);
        }
        let e = ErrorFields::parse(&body);
        let last = |want: u8| fields.iter().rev().find(|(f, _)| *f == want).map(|(_, v)| &v[..]);
        let first_s = fields.iter().find(|(f, _)| *f == b'S').map(|(_, v)| &v[..]);
        // The non-localized V wins over S wherever it appears.
        prop_assert_eq!(e.severity, last(b'V').or(first_s));
        prop_assert_eq!(e.code, last(b'C'));
        prop_assert_eq!(e.message, last(b'M'));
    }

    #[test]
    fn built_backend_messages_read_back(
        fatal in any::<bool>(),
        code in "[0-9A-Z]{5}",
        message in "[^\\x00]{0,40}",
        hint in proptest::option::of("[^\\x00]{0,20}"),
        name in "[^\\x00]{0,16}",
        value in "[^\\x00]{0,16}",
        pid in any::<i32>(),
        key in vec(any::<u8>(), 4..=256),
    ) {
        let mut buf = BytesMut::new();
        let severity = if fatal { Severity::Fatal } else { Severity::Error };
        put_error(&mut buf, &ErrorMessage { severity, code: &code, message: &message, detail: None, hint: hint.as_deref() });
        put_parameter_status(&mut buf, &name, &value);
        put_backend_key_data(&mut buf, pid, &key);
        let all = split_frames(&mut buf, ROOMY).expect("valid").expect("complete");
        let bodies: Vec<(u8, &[u8])> = frames(&all).collect();
        prop_assert_eq!(bodies.len(), 3);
        let e = ErrorFields::parse(bodies[0].1);
        prop_assert_eq!(e.code, Some(code.as_bytes()));
        prop_assert_eq!(e.message, Some(message.as_bytes()));
        prop_assert_eq!(e.is_fatal(), fatal);
        prop_assert_eq!(parse_parameter_status(bodies[1].1), Some((name.as_str(), value.as_str())));
        prop_assert_eq!(parse_backend_key_data(bodies[2].1), Some((pid, &key[..])));
    }
}

// ---------------------------------------------------------------- frontend bodies

/// SQL-ish bytes: keywords, whitespace and comment markers in any order, with noise.
fn sqlish() -> impl Strategy<Value = Vec<u8>> {
    let token = prop_oneof![
        proptest::sample::select(vec![
            &b"--"[..],
            b"/*",
            b"*/",
            b"\n",
            b" ",
            b"\t",
            b"\r",
            b"select",
            b"SET",
            b"_x",
            b"1",
            b";",
            b"'",
            b"/",
            b"*",
            b"-",
            b"verylongkeywordthatgoeson",
        ])
        .prop_map(<[u8]>::to_vec),
        vec(any::<u8>(), 0..4),
    ];
    vec(token, 0..16).prop_map(|t| t.concat())
}

proptest! {
    #[test]
    fn frontend_readers_on_any_bytes(body in prop_oneof![vec(any::<u8>(), 0..200), sqlish()]) {
        let first_nul = body.iter().position(|&b| b == 0);
        // A body ending in NUL is read whole (PostgreSQL runs it only if that is its
        // only NUL); any other, up to its first NUL.
        let expected = match body.split_last() {
            Some((0, text)) => Some(text),
            _ => first_nul.map(|n| &body[..n]),
        };
        prop_assert_eq!(query_text(&body), expected);
        if first_nul.is_some_and(|n| n + 1 == body.len()) {
            prop_assert_eq!(query_text(&body), first_nul.map(|n| &body[..n]));
        }
        if let Some((name, query)) = parse_name_and_query(&body) {
            prop_assert!(!name.contains(&0) && !query.contains(&0));
            prop_assert!(body.starts_with(name));
        }
        if let Some((portal, statement)) = bind_names(&body) {
            prop_assert!(!portal.contains(&0) && !statement.contains(&0));
        }
        if let Some((kind, name)) = target(&body) {
            prop_assert!(kind == b'S' || kind == b'P');
            prop_assert_eq!(body.first(), Some(&kind));
            prop_assert!(!name.contains(&0));
        }
    }

    #[test]
    fn keyword_scanning_is_consistent(sql in prop_oneof![sqlish(), vec(any::<u8>(), 0..100)]) {
        let skipped = skip_space_and_comments(&sql);
        prop_assert!(sql.ends_with(skipped), "skipping returns a suffix");
        prop_assert_eq!(skip_space_and_comments(skipped), skipped, "skipping is idempotent");
        // PostgreSQL's whitespace: ASCII's plus vertical tab (scan.l, PostgreSQL 17+).
        let is_space = |b: &u8| b.is_ascii_whitespace() || *b == 0x0b;
        if let Some(first) = skipped.first() {
            prop_assert!(!is_space(first));
            prop_assert!(!skipped.starts_with(b"--") && !skipped.starts_with(b"/*"));
        }
        if !sql.windows(2).any(|w| w == b"--" || w == b"/*") {
            let start = sql.iter().position(|b| !is_space(b)).unwrap_or(sql.len());
            prop_assert_eq!(skipped, &sql[start..]);
        }

        let mut out = [0u8; 16];
        let (n, rest) = first_keyword(&sql, &mut out);
        let word = skipped.iter().take_while(|b| b.is_ascii_alphabetic() || **b == b'_').count();
        prop_assert_eq!(n, word.min(16));
        prop_assert_eq!(&out[..n], &skipped[..n].to_ascii_uppercase()[..]);
        prop_assert_eq!(rest, &skipped[word..]);
    }
}
