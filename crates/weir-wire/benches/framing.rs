//! Micro-benchmarks of frame splitting over three server responses: 100 small DataRows,
//! one 1 MiB DataRow, and a pgbench -S answer (RowDescription, DataRow, CommandComplete,
//! ReadyForQuery). Compares `split_frame` one frame at a time, `split_frames` as one batch
//! (alone and followed by a walk over its frames), and the relay's `StreamScanner`
//! holding back `ReadyForQuery` and `ErrorResponse`. Throughput is in bytes of stream.
//!
//! Run with `cargo bench -p weir-wire --bench framing`.

use std::fmt;

use bytes::{BufMut, BytesMut};
use divan::counter::BytesCount;
use divan::{black_box, Bencher};
use weir_wire::build::put_frame;
use weir_wire::frame::{frames, split_frame, split_frames, DEFAULT_MAX_MESSAGE_LEN};
use weir_wire::scan::StreamScanner;

fn main() {
    divan::main();
}

/// A server response to split.
#[derive(Debug, Clone, Copy)]
enum Workload {
    /// 100 DataRows of three short text columns (~40 bytes each).
    SmallRows,
    /// One DataRow holding a single 1 MiB column.
    BigRow,
    /// The reply to pgbench -S's `SELECT abalance FROM pgbench_accounts WHERE aid = $1`.
    PgbenchSelect,
}

impl fmt::Display for Workload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Workload::SmallRows => "100_small_rows",
            Workload::BigRow => "one_1MiB_row",
            Workload::PgbenchSelect => "pgbench_S_reply",
        })
    }
}

const WORKLOADS: [Workload; 3] = [
    Workload::SmallRows,
    Workload::BigRow,
    Workload::PgbenchSelect,
];

/// Appends a DataRow with text columns.
fn put_data_row(buf: &mut BytesMut, columns: &[&[u8]]) {
    put_frame(buf, b'D', |b| {
        b.put_i16(columns.len() as i16);
        for column in columns {
            b.put_i32(column.len() as i32);
            b.put_slice(column);
        }
    });
}

impl Workload {
    /// The response bytes as a server would send them.
    fn stream(self) -> BytesMut {
        let mut buf = BytesMut::new();
        match self {
            Workload::SmallRows => {
                for i in 0..100 {
                    let id = format!("{i}");
                    put_data_row(
                        &mut buf,
                        &[id.as_bytes(), b"some short text", b"2024-01-01"],
                    );
                }
            }
            Workload::BigRow => put_data_row(&mut buf, &[&vec![b'x'; 1 << 20]]),
            Workload::PgbenchSelect => {
                // One int4 column "abalance" of pgbench_accounts, in text format.
                put_frame(&mut buf, b'T', |b| {
                    b.put_i16(1);
                    b.put_slice(b"abalance\0");
                    b.put_i32(16_396); // table OID
                    b.put_i16(3); // column number
                    b.put_i32(23); // int4
                    b.put_i16(4);
                    b.put_i32(-1);
                    b.put_i16(0);
                });
                put_data_row(&mut buf, &[b"-2345"]);
                put_frame(&mut buf, b'C', |b| b.put_slice(b"SELECT 1\0"));
                put_frame(&mut buf, b'Z', |b| b.put_u8(b'I'));
            }
        }
        buf
    }
}

/// The relay holds back what it must read: ReadyForQuery and ErrorResponse.
fn interesting(tag: u8) -> bool {
    tag == b'Z' || tag == b'E'
}

/// `split_frame` until the buffer is empty, as the client reader does.
#[divan::bench(args = WORKLOADS)]
fn split_frame_each(bencher: Bencher, workload: Workload) {
    let stream = workload.stream();
    bencher
        .counter(BytesCount::of_slice(&stream))
        .with_inputs(|| stream.clone())
        .bench_local_values(|mut buf| {
            while let Some(frame) = split_frame(&mut buf, DEFAULT_MAX_MESSAGE_LEN).expect("valid") {
                black_box(frame);
            }
            // Returned so the buffer is freed outside the timed section.
            buf
        });
}

/// One `split_frames` call for the whole batch of complete frames.
#[divan::bench(args = WORKLOADS)]
fn split_frames_batch(bencher: Bencher, workload: Workload) {
    let stream = workload.stream();
    bencher
        .counter(BytesCount::of_slice(&stream))
        .with_inputs(|| stream.clone())
        .bench_local_values(|mut buf| {
            let batch = split_frames(&mut buf, DEFAULT_MAX_MESSAGE_LEN).expect("valid");
            (black_box(batch), buf)
        });
}

/// `split_frames`, then a walk over the batch's frames (tag and body of each).
#[divan::bench(args = WORKLOADS)]
fn split_frames_then_walk(bencher: Bencher, workload: Workload) {
    let stream = workload.stream();
    bencher
        .counter(BytesCount::of_slice(&stream))
        .with_inputs(|| stream.clone())
        .bench_local_values(|mut buf| {
            let batch = split_frames(&mut buf, DEFAULT_MAX_MESSAGE_LEN)
                .expect("valid")
                .expect("complete");
            for frame in frames(&batch) {
                black_box(frame);
            }
            (batch, buf)
        });
}

/// `StreamScanner::scan` over the whole buffer, holding back Z and E.
#[divan::bench(args = WORKLOADS)]
fn stream_scanner(bencher: Bencher, workload: Workload) {
    let stream = workload.stream();
    bencher
        .counter(BytesCount::of_slice(&stream))
        .bench_local(|| {
            let mut scanner = StreamScanner::new();
            let forwarded = scanner
                .scan(
                    black_box(&stream[..]),
                    DEFAULT_MAX_MESSAGE_LEN,
                    interesting,
                    |tag, body| {
                        black_box((tag, body));
                    },
                )
                .expect("valid");
            assert_eq!(forwarded, stream.len());
        });
}
