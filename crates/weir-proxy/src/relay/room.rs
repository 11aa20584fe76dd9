//! How much room a read gets in a connection's buffer.

use bytes::BytesMut;

/// Room a new request is read into without growing the buffer first: a short request
/// fits it (a login's buffer is 1 KiB).
const REQUEST_ROOM: usize = 512;

/// Makes room to read into `buf`: at least a quarter of `chunk`, growing the buffer to
/// `chunk` (or reclaiming what was consumed) when less is left. Reads are full size
/// from the first, whatever size the buffer started at.
pub(super) fn reserve(buf: &mut BytesMut, chunk: usize) {
    if buf.capacity() - buf.len() < chunk / 4 {
        buf.reserve(chunk);
    }
}

/// Makes room to read a client's next request while it holds no server: an empty
/// buffer with [`REQUEST_ROOM`] left is read into as it is. A client that connects,
/// sends one short query and leaves then never grows its login buffer (growing it at
/// once cost every login an 8 KiB allocation); a longer request is read on with
/// [`reserve`] once its first part is in.
pub(super) fn reserve_for_request(buf: &mut BytesMut, chunk: usize) {
    if !(buf.is_empty() && buf.capacity() >= REQUEST_ROOM) {
        reserve(buf, chunk);
    }
}

#[cfg(test)]
mod tests {
    use bytes::{Buf, BytesMut};

    use super::super::{CLIENT_READ, SERVER_READ};
    use super::{reserve, reserve_for_request};

    /// A large result streamed through a new server connection's 4 KiB buffer, each
    /// read forwarded at once: every read is full size. (A rule that grew a buffer only
    /// when a read nearly filled it made 1.6x to 5x the recv calls: `benches/bulk.sh`.)
    #[test]
    fn a_stream_gets_full_reads() {
        let mut buf = BytesMut::with_capacity(4096);
        let sizes: Vec<usize> = (0..6)
            .map(|_| {
                reserve(&mut buf, SERVER_READ);
                let n = buf.capacity() - buf.len();
                buf.extend_from_slice(&vec![b'x'; n]);
                buf.advance(n);
                n
            })
            .collect();
        assert!(sizes.iter().all(|&n| n >= SERVER_READ / 4), "{sizes:?}");
        assert!(sizes[0] >= SERVER_READ, "{sizes:?}");
    }

    /// A client that sends short queries keeps its login buffer: no 8 KiB allocation.
    #[test]
    fn short_requests_keep_a_small_buffer() {
        let mut buf = BytesMut::with_capacity(1024);
        for _ in 0..3 {
            reserve_for_request(&mut buf, CLIENT_READ);
            assert!(buf.capacity() <= 1024, "grew to {}", buf.capacity());
            buf.extend_from_slice(&[b'Q'; 60]);
            buf.advance(60);
        }
    }

    /// A request that does not fit is read on at full size.
    #[test]
    fn a_long_request_grows_the_buffer() {
        let mut buf = BytesMut::with_capacity(1024);
        reserve_for_request(&mut buf, CLIENT_READ);
        buf.extend_from_slice(&[b'Q'; 1024]);
        reserve_for_request(&mut buf, CLIENT_READ);
        assert!(
            buf.capacity() - buf.len() >= CLIENT_READ,
            "{}",
            buf.capacity()
        );
    }
}
