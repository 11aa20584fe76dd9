//! How much room a read gets in a connection's buffer.

use bytes::BytesMut;

/// Room below which a buffer smaller than a full read (a login's 1 KiB, a new server
/// connection's 4 KiB) is grown.
const SMALL_BUFFER_LOW: usize = 256;

/// Makes room to read into `buf`: at least a quarter of `chunk`, in a buffer of
/// `chunk`. A buffer still smaller than that is kept until a read nearly fills it:
/// a client that connects, sends one short query and leaves needs no more than its
/// login buffer (growing it at once cost every login an 8 KiB allocation), while a
/// peer that streams (COPY, a large result) reaches full-size reads at its second.
pub(super) fn reserve(buf: &mut BytesMut, chunk: usize) {
    let low = if buf.capacity() < chunk {
        SMALL_BUFFER_LOW
    } else {
        chunk / 4
    };
    if buf.capacity() - buf.len() < low {
        buf.reserve(chunk);
    }
}

#[cfg(test)]
mod tests {
    use bytes::{Buf, BytesMut};

    use super::super::{CLIENT_READ, SERVER_READ};
    use super::reserve;

    /// What one read takes: everything there is room for, up to `available`.
    fn read(buf: &mut BytesMut, available: usize) -> usize {
        reserve(buf, SERVER_READ);
        let n = available.min(buf.capacity() - buf.len());
        buf.extend_from_slice(&vec![b'x'; n]);
        n
    }

    /// A large result streamed through a new server connection's 4 KiB buffer, each
    /// read forwarded at once: reads are full size from the second on. (A version that
    /// grew only when data piled up kept reading 4 KiB at a time: 5x the recv calls.)
    #[test]
    fn a_stream_gets_full_reads_at_once() {
        let mut buf = BytesMut::with_capacity(4096);
        let sizes: Vec<usize> = (0..6)
            .map(|_| {
                let n = read(&mut buf, usize::MAX);
                buf.advance(n);
                n
            })
            .collect();
        assert!(sizes[1..].iter().all(|&n| n >= SERVER_READ), "{sizes:?}");
    }

    /// A client that sends short queries keeps its login buffer: no 8 KiB allocation.
    #[test]
    fn short_requests_keep_a_small_buffer() {
        let mut buf = BytesMut::with_capacity(1024);
        for _ in 0..3 {
            reserve(&mut buf, CLIENT_READ);
            assert!(buf.capacity() <= 1024, "grew to {}", buf.capacity());
            buf.extend_from_slice(&[b'Q'; 60]);
            buf.advance(60);
        }
    }
}
