//! Batched sends: writes to plain sockets (TCP or Unix, client or server side) are
//! queued on the worker thread's io_uring, and everything one turn of the runtime
//! queued reaches the kernel in a single `io_uring_enter`, made just before the
//! runtime parks ([`before_park`]) or once [`BATCH`] sends are waiting. A turn with a
//! single send (one client, little load) uses `send(2)`: one kernel entry either way,
//! and a plain send costs less than a submission.
//!
//! Why: most of a relay's CPU is the kernel's, the TCP stack and wake-ups. A `send`
//! that wakes a peer on the proxy's own CPU gets the proxy preempted as the call
//! returns, once per message; one enter that carries a turn's sends is preempted once.
//! On the 2-CPU box of `benches/floor` (pgbench -S, 16 clients) a byte relay on tokio
//! spent 13.8 µs of CPU per transaction with tokio's writes and 11.8 µs with batched
//! ones, preemptions going from 0.46 to 0.14 per transaction; PgBouncer spent 14.4.
//!
//! Reads are tokio's as before: only writes change. A write copies its bytes into the
//! socket's outbox and returns at once; the next write or a flush waits until the
//! kernel has taken them, so a writer is held back by one message, as by a full socket
//! buffer. Errors surface at the next write or flush (and as EOF on the next read).
//!
//! A thread batches once its runtime calls [`before_park`] (pgweir's binary installs
//! it with `on_thread_park`); elsewhere, or where io_uring cannot be set up (an old
//! kernel, a seccomp profile that refuses it) or was turned off ([`disable`]),
//! writes go straight to the socket.
//!
//! Each outbox sends through a duplicate of its socket's descriptor that lives as long
//! as a send does: a socket closed while its bytes wait is closed for real only after
//! they went out, and a descriptor number reused meanwhile is never written to.

use std::cell::{RefCell, UnsafeCell};
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use atomic_waker::AtomicWaker;
use io_uring::{opcode, types, IoUring};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tracing::{debug, info};

/// Sends queued before the ring is submitted without waiting for the runtime to park.
pub const BATCH: usize = 32;
/// The most one write copies into an outbox; a larger write is taken in parts.
const MAX_SEND: usize = 256 * 1024;
/// An outbox's buffer above this is freed after its send, not kept for the next.
const KEEP_CAPACITY: usize = 64 * 1024;
/// An outbox's first allocation: a whole login greeting (authentication, a dozen
/// ParameterStatus, BackendKeyData) fits, so a login does not grow it message by message.
const FIRST_CAPACITY: usize = 1024;
/// Submission queue entries of a thread's ring (a power of two, above [`BATCH`]).
const RING_ENTRIES: u32 = 256;

static DISABLED: AtomicBool = AtomicBool::new(false);

/// How long the end of a runtime waits for its last sends to leave ([`drain`]).
pub const DRAIN_LIMIT: std::time::Duration = std::time::Duration::from_secs(1);

/// A runtime builder set up as pgweir runs its workers: a current-thread runtime for
/// one worker (PgBouncer's shape, none of the work-stealing scheduler's cross-thread
/// bookkeeping), a multi-thread one for more; each worker batches its writes
/// ([`before_park`]) and drains them when its thread stops. A current-thread
/// runtime's own thread does not stop: call [`drain`] after its `block_on` returns.
pub fn runtime_builder(workers: usize) -> tokio::runtime::Builder {
    let mut builder = if workers > 1 {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(workers);
        b
    } else {
        tokio::runtime::Builder::new_current_thread()
    };
    builder
        .on_thread_park(before_park)
        .on_thread_stop(|| drain(DRAIN_LIMIT));
    builder
}

/// Turns batching off for the whole process, before the runtime starts: every write
/// goes straight to its socket (`pgweir --no-io-uring`).
pub fn disable() {
    DISABLED.store(true, Ordering::Relaxed);
}

/// Whether writes on this thread are batched now: its runtime parked through
/// [`before_park`] and io_uring could be set up.
pub fn batching() -> bool {
    RING.with(|ring| matches!(*ring.borrow(), Ring::On(_)))
}

/// A thread's ring, from its first park on.
enum Ring {
    /// The thread's runtime never parked through [`before_park`]: writes go direct.
    Unset,
    /// io_uring could not be set up here, or batching is off.
    Off,
    On(Box<Batcher>),
}

thread_local! {
    static RING: RefCell<Ring> = const { RefCell::new(Ring::Unset) };
}

/// The runtime hook: submits the sends this turn queued and completes the ones the
/// kernel finished, waking their writers. Sets the thread's ring up the first time.
pub fn before_park() {
    RING.with(|ring| {
        let mut ring = ring.borrow_mut();
        if let Ring::Unset = *ring {
            *ring = match Batcher::new() {
                Some(b) => Ring::On(Box::new(b)),
                None => Ring::Off,
            };
        }
        if let Ring::On(b) = &mut *ring {
            b.flush();
        }
    });
}

/// Sends everything queued on this thread and waits, up to `limit`, for the kernel to
/// take it: for the end of the runtime, whose last writes (a shutdown notice) would
/// otherwise never be submitted.
pub fn drain(limit: std::time::Duration) {
    let deadline = std::time::Instant::now() + limit;
    RING.with(|ring| {
        if let Ring::On(b) = &mut *ring.borrow_mut() {
            b.flush();
            while b.in_flight > 0 {
                let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) else {
                    break;
                };
                let ts = types::Timespec::from(left);
                let args = types::SubmitArgs::new().timespec(&ts);
                let _ = b.ring.submitter().submit_with_args(1, &args);
                b.flush();
            }
        }
    });
}

/// A thread's ring and its bookkeeping.
struct Batcher {
    ring: IoUring,
    /// Sends written this turn, not yet handed to the kernel.
    pending: Vec<Arc<Outbox>>,
    /// Sends submitted (or queued) whose completion has not been seen.
    in_flight: usize,
    /// Completions read from the ring, reused between flushes.
    done: Vec<(u64, i32)>,
}

impl Batcher {
    fn new() -> Option<Batcher> {
        if DISABLED.load(Ordering::Relaxed) {
            debug!("socket writes go out one by one: batching is turned off");
            return None;
        }
        // Completions are posted at this thread's next kernel entry instead of by an
        // interrupt; a thread asleep in epoll_wait is woken for them.
        let ring = IoUring::builder()
            .setup_single_issuer()
            .setup_coop_taskrun()
            .setup_taskrun_flag()
            .build(RING_ENTRIES);
        match ring {
            Ok(ring) => {
                debug!("socket writes are batched through io_uring on this thread");
                Some(Batcher {
                    ring,
                    pending: Vec::with_capacity(BATCH),
                    in_flight: 0,
                    done: Vec::with_capacity(BATCH),
                })
            }
            Err(e) => {
                info!(error = %e, "io_uring is not available: socket writes go out one by one");
                None
            }
        }
    }

    /// Takes the outbox's send for this turn; hands the turn's sends to the kernel
    /// once [`BATCH`] are waiting.
    fn push(&mut self, out: &Arc<Outbox>) {
        self.pending.push(Arc::clone(out));
        if self.pending.len() >= BATCH {
            self.flush();
        }
    }

    /// Sends a turn's only send with `send(2)`: one kernel entry either way, and a
    /// plain send costs less than a submission. What the socket cannot take at once
    /// goes through the ring, which waits for room.
    fn send_alone(&mut self, out: Arc<Outbox>) {
        // SAFETY: the outbox is busy: the ring's side owns it.
        let (ptr, len) = unsafe { out.rest() };
        // SAFETY: `ptr..ptr + len` is the outbox's buffer, alive and unchanged (busy).
        let n = unsafe {
            libc::send(
                out.fd.as_raw_fd(),
                ptr.cast(),
                len,
                libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT,
            )
        };
        if n >= 0 && n as usize == len {
            out.finish(Ok(()));
        } else if n >= 0 {
            // SAFETY: busy: the ring's side owns `sent`.
            unsafe { *out.sent.get() += n as usize };
            self.enqueue(out);
        } else {
            match io::Error::last_os_error().raw_os_error() {
                Some(libc::EAGAIN | libc::EINTR) => self.enqueue(out),
                errno => out.finish(Err(errno.unwrap_or(libc::EIO))),
            }
        }
    }

    /// Puts the outbox's send (its buffer from `sent` on) in the submission queue; the
    /// entry's user_data takes over `out`, the queue's reference.
    fn enqueue(&mut self, out: Arc<Outbox>) {
        // SAFETY: the outbox is busy: the ring's side owns it.
        let (ptr, len) = unsafe { out.rest() };
        let fd = out.fd.as_raw_fd();
        let out = Arc::into_raw(out);
        let entry = opcode::Send::new(types::Fd(fd), ptr, len as u32)
            // WAITALL: the kernel itself retries a short send on a stream socket.
            .flags(libc::MSG_NOSIGNAL | libc::MSG_WAITALL)
            .build()
            .user_data(out as u64);
        if self.ring.submission().is_full() {
            let _ = self.ring.submit();
        }
        // SAFETY: the entry's buffer lives in the outbox, which the `Arc` in its
        // user_data keeps alive, unchanged (busy), until its completion is handled.
        if unsafe { self.ring.submission().push(&entry) }.is_err() {
            // Still full after a submit: the kernel refused it; the send fails.
            // SAFETY: the `Arc` just leaked into the entry that was not queued.
            let out = unsafe { Arc::from_raw(out) };
            out.finish(Err(libc::EBUSY));
            return;
        }
        self.in_flight += 1;
    }

    /// Hands the turn's sends to the kernel (one alone with `send(2)`, more in one
    /// submission) and handles what completed (a short send is queued again for its
    /// rest and submitted in the same call).
    fn flush(&mut self) {
        let mut pending = std::mem::take(&mut self.pending);
        if pending.len() == 1 {
            if let Some(out) = pending.pop() {
                self.send_alone(out);
            }
        } else {
            for out in pending.drain(..) {
                self.enqueue(out);
            }
        }
        self.pending = pending;
        loop {
            if !self.ring.submission().is_empty() || self.ring.submission().taskrun() {
                if let Err(e) = self.ring.submit() {
                    if e.raw_os_error() != Some(libc::EINTR)
                        && e.raw_os_error() != Some(libc::EBUSY)
                    {
                        debug!(error = %e, "io_uring_enter failed; retried at the next park");
                    }
                }
            }
            let mut done = std::mem::take(&mut self.done);
            done.extend(self.ring.completion().map(|c| (c.user_data(), c.result())));
            let mut again = false;
            for &(data, result) in &done {
                self.in_flight -= 1;
                // SAFETY: every user_data is an `Arc<Outbox>` leaked by `enqueue`.
                let out = unsafe { Arc::from_raw(data as *const Outbox) };
                if result < 0 {
                    if result == -libc::EINTR || result == -libc::EAGAIN {
                        self.enqueue(out);
                        again = true;
                    } else {
                        out.finish(Err(-result));
                    }
                    continue;
                }
                // SAFETY: busy: the ring's side owns `sent` and `buf`.
                let rest = unsafe {
                    *out.sent.get() += result as usize;
                    (*out.buf.get()).len() - *out.sent.get()
                };
                if rest > 0 {
                    self.enqueue(out);
                    again = true;
                } else {
                    out.finish(Ok(()));
                }
            }
            done.clear();
            self.done = done;
            if !again {
                return;
            }
        }
    }
}

/// One socket's bytes on their way to the kernel.
struct Outbox {
    /// A duplicate of the socket's descriptor, closed with the last reference.
    fd: OwnedFd,
    /// The bytes being sent: written by the socket's owner only while not busy, read
    /// by the kernel and the ring's side only while busy.
    buf: UnsafeCell<Vec<u8>>,
    /// How much of `buf` the kernel has taken (ring's side, while busy).
    sent: UnsafeCell<usize>,
    busy: AtomicBool,
    /// The first send error (an errno), reported to every later write; 0 if none.
    error: AtomicI32,
    /// The writer waiting for the send to end.
    waker: AtomicWaker,
}

// SAFETY: `buf` and `sent` are owned by one side at a time, handed over through
// `busy` (release on the hand-over, acquire before touching them).
unsafe impl Sync for Outbox {}

impl Outbox {
    /// Where the bytes still to send start, and how many there are.
    ///
    /// # Safety
    /// Busy: the ring's side owns `buf` and `sent`.
    unsafe fn rest(&self) -> (*const u8, usize) {
        let buf = &*self.buf.get();
        let sent = *self.sent.get();
        (buf[sent..].as_ptr(), buf.len() - sent)
    }

    /// The send ended: `buf` goes back to the writer, who is woken.
    fn finish(&self, result: Result<(), i32>) {
        if let Err(errno) = result {
            let _ = self
                .error
                .compare_exchange(0, errno, Ordering::Relaxed, Ordering::Relaxed);
        }
        // SAFETY: still busy: the ring's side owns `buf`.
        unsafe {
            let buf = &mut *self.buf.get();
            if buf.capacity() > KEEP_CAPACITY {
                *buf = Vec::new();
            }
        }
        self.busy.store(false, Ordering::Release);
        self.waker.wake();
    }
}

/// A plain socket whose writes are batched on threads that batch (see the module
/// docs); reads and everything else go to the socket itself (`Deref`).
pub struct Plain<S> {
    io: S,
    /// Set up at the first batched write.
    out: Option<Arc<Outbox>>,
}

impl<S> From<S> for Plain<S> {
    fn from(io: S) -> Self {
        Plain { io, out: None }
    }
}

impl<S> std::ops::Deref for Plain<S> {
    type Target = S;
    fn deref(&self) -> &S {
        &self.io
    }
}

impl<S> std::ops::DerefMut for Plain<S> {
    fn deref_mut(&mut self) -> &mut S {
        &mut self.io
    }
}

impl<S> Plain<S> {
    /// The socket, for handing elsewhere (parking). Flush first: bytes still on
    /// their way would race whatever the socket's next owner writes.
    pub fn into_inner(self) -> S {
        debug_assert!(
            !self
                .out
                .as_ref()
                .is_some_and(|o| o.busy.load(Ordering::Acquire)),
            "a socket handed over with a send in flight"
        );
        self.io
    }

    /// Waits for the outbox to be free; Ready(Err) carries an earlier send's error.
    fn poll_idle(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let Some(out) = &self.out else {
            return Poll::Ready(Ok(()));
        };
        if out.busy.load(Ordering::Acquire) {
            out.waker.register(cx.waker());
            if out.busy.load(Ordering::Acquire) {
                return Poll::Pending;
            }
        }
        match out.error.load(Ordering::Relaxed) {
            0 => Poll::Ready(Ok(())),
            errno => Poll::Ready(Err(io::Error::from_raw_os_error(errno))),
        }
    }
}

impl<S: AsFd> Plain<S> {
    /// Copies `data` (up to [`MAX_SEND`] bytes) into the outbox and queues its send.
    fn queue(&mut self, batcher: &mut Batcher, data: &[u8]) -> io::Result<usize> {
        if self.out.is_none() {
            self.out = Some(Arc::new(Outbox {
                fd: self.io.as_fd().try_clone_to_owned()?,
                buf: UnsafeCell::new(Vec::new()),
                sent: UnsafeCell::new(0),
                busy: AtomicBool::new(false),
                error: AtomicI32::new(0),
                waker: AtomicWaker::new(),
            }));
        }
        let out = self.out.as_ref().expect("just set");
        let n = data.len().min(MAX_SEND);
        // SAFETY: not busy (the caller polled `poll_idle`): the writer owns `buf` and
        // `sent` until the store below hands them to the ring.
        unsafe {
            let buf = &mut *out.buf.get();
            buf.clear();
            if buf.capacity() < n {
                buf.reserve(n.max(FIRST_CAPACITY));
            }
            buf.extend_from_slice(&data[..n]);
            *out.sent.get() = 0;
        }
        out.busy.store(true, Ordering::Release);
        batcher.push(out);
        Ok(n)
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Plain<S> {
    #[inline]
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + AsFd + Unpin> AsyncWrite for Plain<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.poll_idle(cx))?;
        if data.is_empty() {
            return Poll::Ready(Ok(0));
        }
        RING.with(|ring| match &mut *ring.borrow_mut() {
            Ring::On(batcher) => Poll::Ready(this.queue(batcher, data)),
            _ => Pin::new(&mut this.io).poll_write(cx, data),
        })
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_idle(cx))?;
        Pin::new(&mut this.io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        // Queued bytes go out before the FIN.
        ready!(this.poll_idle(cx))?;
        Pin::new(&mut this.io).poll_shutdown(cx)
    }
}
