//! `floor`: the cheapest relay this box can run, as a yardstick for a proxy's CPU.
//!
//! It forwards bytes between each client and a server connection of its own, with no
//! parsing, pooling or bookkeeping: what is left is the kernel's share of relaying (the
//! socket calls, the wake-ups) and almost nothing in user space. A proxy cannot spend
//! less per transaction than this relay does with the same system calls, so measured
//! beside PgBouncer (`benches/cpu-split.sh`) it tells how far under PgBouncer's CPU any
//! relay on that design can go.
//!
//! Two designs:
//! - `epoll`: level-triggered epoll, one `read` and one `write` per message (PgBouncer's
//!   pattern without its bookkeeping);
//! - `uring`: io_uring, a receive always armed on every socket and every send and
//!   re-arm of one loop turn submitted by a single `io_uring_enter`, which also waits;
//!   `uring-coop` the same with completions posted at the next kernel entry instead of
//!   on request; `uring-epoll` submits without waiting and sleeps in `epoll_wait` on
//!   the ring's descriptor, as a ring beside an epoll event loop (tokio's) would.
//!
//! Usage: `floor epoll|uring|uring-coop|uring-epoll LISTEN_ADDR SERVER_ADDR` (both
//! `host:port`). Runs until killed. One thread.

use std::io;
use std::net::{TcpListener, TcpStream};
use std::os::fd::{IntoRawFd, RawFd};

/// Read size per socket.
const BUF: usize = 16 * 1024;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 4 {
        eprintln!("usage: floor epoll|uring|uring-coop|uring-epoll LISTEN_ADDR SERVER_ADDR");
        std::process::exit(2);
    }
    let listener = TcpListener::bind(&args[2]).expect("cannot bind the listen address");
    let result = match args[1].as_str() {
        "epoll" => epoll::run(listener, &args[3], false),
        "epoll-batch" => epoll::run(listener, &args[3], true),
        "uring" => uring::run(listener, &args[3], uring::Wait::DeferTaskrun),
        "uring-coop" => uring::run(listener, &args[3], uring::Wait::CoopTaskrun),
        "uring-epoll" => uring::run(listener, &args[3], uring::Wait::Epoll),
        "tokio" => tokio_relay::run(listener, &args[3], false),
        "tokio-batch" => tokio_relay::run(listener, &args[3], true),
        other => {
            eprintln!("unknown design {other:?}: epoll or uring");
            std::process::exit(2);
        }
    };
    if let Err(e) = result {
        eprintln!("floor: {e}");
        std::process::exit(1);
    }
}

/// Connects a new client's server connection; both sockets get `TCP_NODELAY`, as a
/// proxy's do.
fn pair(client: TcpStream, server_addr: &str) -> io::Result<(RawFd, RawFd)> {
    let server = TcpStream::connect(server_addr)?;
    client.set_nodelay(true)?;
    server.set_nodelay(true)?;
    Ok((client.into_raw_fd(), server.into_raw_fd()))
}

fn check(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

mod epoll {
    use super::*;
    use std::os::fd::AsRawFd;

    const LISTENER: u64 = u64::MAX;

    pub fn run(listener: TcpListener, server_addr: &str, batch: bool) -> io::Result<()> {
        listener.set_nonblocking(true)?;
        // epoll-batch: reads as above, but every write of one epoll_wait's events goes
        // out in one io_uring_enter (each socket's bytes wait in its own buffer)
        let mut ring: Option<io_uring::IoUring> = if batch {
            Some(
                io_uring::IoUring::builder()
                    .setup_single_issuer()
                    .setup_coop_taskrun()
                    .build(1024)?,
            )
        } else {
            None
        };
        let mut bufs: Vec<Vec<u8>> = Vec::new();
        let ep = check(unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) })?;
        add(ep, listener.as_raw_fd(), LISTENER)?;
        // peer[fd] = the other socket of fd's pair, -1 when fd is not a relayed socket
        let mut peer: Vec<RawFd> = Vec::new();
        let mut buf = vec![0u8; BUF];
        let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 256];
        loop {
            let n = unsafe { libc::epoll_wait(ep, events.as_mut_ptr(), events.len() as i32, -1) };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            for ev in &events[..n as usize] {
                if ev.u64 == LISTENER {
                    while let Ok((client, _)) = listener.accept() {
                        let (c, s) = pair(client, server_addr)?;
                        for fd in [c, s] {
                            set_nonblocking(fd)?;
                        }
                        let need = c.max(s) as usize + 1;
                        if peer.len() < need {
                            peer.resize(need, -1);
                        }
                        peer[c as usize] = s;
                        peer[s as usize] = c;
                        if bufs.len() < need {
                            bufs.resize_with(need, Vec::new);
                        }
                        add(ep, c, c as u64)?;
                        add(ep, s, s as u64)?;
                    }
                    continue;
                }
                let fd = ev.u64 as RawFd;
                let to = peer[fd as usize];
                if to < 0 {
                    continue; // closed earlier in this batch
                }
                if let Some(ring) = ring.as_mut() {
                    let b = &mut bufs[fd as usize];
                    b.resize(BUF, 0);
                    let got = unsafe { libc::read(fd, b.as_mut_ptr().cast(), b.len()) };
                    if got < 0 && io::Error::last_os_error().kind() == io::ErrorKind::WouldBlock {
                        continue;
                    }
                    if got > 0 {
                        // A small message fits the peer's socket buffer: the send completes
                        // inside the enter below, before this buffer is read into again.
                        let e = io_uring::opcode::Send::new(
                            io_uring::types::Fd(to),
                            b.as_ptr(),
                            got as u32,
                        )
                        .flags(libc::MSG_NOSIGNAL)
                        .build()
                        .user_data(fd as u64);
                        unsafe { ring.submission().push(&e).expect("submission queue full") };
                        continue;
                    }
                    peer[fd as usize] = -1;
                    peer[to as usize] = -1;
                    unsafe {
                        libc::close(fd);
                        libc::close(to);
                    }
                    continue;
                }
                let got = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
                if got < 0 && io::Error::last_os_error().kind() == io::ErrorKind::WouldBlock {
                    continue;
                }
                if got <= 0 || write_all(to, &buf[..got as usize]).is_err() {
                    peer[fd as usize] = -1;
                    peer[to as usize] = -1;
                    unsafe {
                        libc::close(fd);
                        libc::close(to);
                    }
                }
            }
            if let Some(ring) = ring.as_mut() {
                if !ring.submission().is_empty() {
                    ring.submit()?;
                    // A failed send shows up as the peer's EOF or error on its next read;
                    // a short one cannot happen with pgbench's few hundred bytes.
                    ring.completion().for_each(drop);
                }
            }
        }
    }

    fn add(ep: RawFd, fd: RawFd, token: u64) -> io::Result<()> {
        let mut ev = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: token,
        };
        check(unsafe { libc::epoll_ctl(ep, libc::EPOLL_CTL_ADD, fd, &mut ev) }).map(drop)
    }

    fn set_nonblocking(fd: RawFd) -> io::Result<()> {
        let flags = check(unsafe { libc::fcntl(fd, libc::F_GETFL) })?;
        check(unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) }).map(drop)
    }

    /// Writes everything, waiting with `poll` when the peer's buffer is full (small
    /// messages never fill it; this only keeps large results correct).
    fn write_all(fd: RawFd, mut data: &[u8]) -> io::Result<()> {
        while !data.is_empty() {
            let n = unsafe { libc::write(fd, data.as_ptr().cast(), data.len()) };
            if n >= 0 {
                data = &data[n as usize..];
                continue;
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::WouldBlock {
                return Err(e);
            }
            let mut p = libc::pollfd {
                fd,
                events: libc::POLLOUT,
                revents: 0,
            };
            unsafe { libc::poll(&mut p, 1, -1) };
        }
        Ok(())
    }
}

mod uring {
    use super::*;
    use io_uring::{opcode, types, IoUring};
    use std::os::fd::AsRawFd;

    const ACCEPT: u64 = 0;
    const RECV: u64 = 1;
    const SEND: u64 = 2;

    /// One socket: what it receives goes to `peer`, through `buf`.
    struct Sock {
        peer: RawFd,
        buf: Box<[u8]>,
        /// Bytes of `buf` received and not yet sent on to the peer.
        len: usize,
        sent: usize,
        /// Operations in flight on this socket's chain or naming it.
        in_flight: u32,
        dead: bool,
    }

    fn key(fd: RawFd, op: u64) -> u64 {
        (fd as u64) << 8 | op
    }

    /// How the loop waits for completions.
    #[derive(Clone, Copy, PartialEq)]
    pub enum Wait {
        /// `io_uring_enter` waits; completions are posted only when this thread asks
        /// (`IORING_SETUP_DEFER_TASKRUN`): the cheapest setup.
        DeferTaskrun,
        /// `io_uring_enter` waits; completions are posted at this thread's next kernel
        /// entry (`IORING_SETUP_COOP_TASKRUN`).
        CoopTaskrun,
        /// Submissions without waiting, then `epoll_wait` on the ring's descriptor: how
        /// a ring runs beside an epoll-based event loop (tokio's).
        Epoll,
    }

    pub fn run(listener: TcpListener, server_addr: &str, wait: Wait) -> io::Result<()> {
        let mut builder = IoUring::builder();
        match wait {
            Wait::DeferTaskrun => {
                builder.setup_single_issuer().setup_defer_taskrun();
            }
            Wait::CoopTaskrun | Wait::Epoll => {
                builder
                    .setup_single_issuer()
                    .setup_coop_taskrun()
                    .setup_taskrun_flag();
            }
        }
        let mut ring: IoUring = builder.build(1024)?;
        let ep = check(unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) })?;
        let mut ev = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: 0,
        };
        check(unsafe { libc::epoll_ctl(ep, libc::EPOLL_CTL_ADD, ring.as_raw_fd(), &mut ev) })?;
        let lfd = listener.as_raw_fd();
        let mut socks: Vec<Option<Sock>> = Vec::new();
        let mut pending: Vec<io_uring::squeue::Entry> = Vec::new();
        pending.push(
            opcode::Accept::new(types::Fd(lfd), std::ptr::null_mut(), std::ptr::null_mut())
                .build()
                .user_data(key(lfd, ACCEPT)),
        );
        loop {
            {
                let mut sq = ring.submission();
                for e in pending.drain(..) {
                    // The ring holds 1024 entries and at most two are in flight per socket.
                    unsafe { sq.push(&e).expect("submission queue full") };
                }
            }
            let submitted = if wait == Wait::Epoll {
                let r = ring.submit();
                if r.is_ok() && ring.completion().is_empty() {
                    let mut out = libc::epoll_event { events: 0, u64: 0 };
                    unsafe { libc::epoll_wait(ep, &mut out, 1, -1) };
                }
                r
            } else {
                ring.submit_and_wait(1)
            };
            match submitted {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            let done: Vec<(u64, i32)> = ring
                .completion()
                .map(|c| (c.user_data(), c.result()))
                .collect();
            for (data, res) in done {
                let fd = (data >> 8) as RawFd;
                match data & 0xff {
                    ACCEPT => {
                        pending.push(
                            opcode::Accept::new(
                                types::Fd(lfd),
                                std::ptr::null_mut(),
                                std::ptr::null_mut(),
                            )
                            .build()
                            .user_data(key(lfd, ACCEPT)),
                        );
                        if res < 0 {
                            continue;
                        }
                        let client =
                            unsafe { <TcpStream as std::os::fd::FromRawFd>::from_raw_fd(res) };
                        let (c, s) = pair(client, server_addr)?;
                        let need = c.max(s) as usize + 1;
                        if socks.len() < need {
                            socks.resize_with(need, || None);
                        }
                        for (a, b) in [(c, s), (s, c)] {
                            socks[a as usize] = Some(Sock {
                                peer: b,
                                buf: vec![0u8; BUF].into_boxed_slice(),
                                len: 0,
                                sent: 0,
                                in_flight: 0,
                                dead: false,
                            });
                            arm_recv(&mut socks, a, &mut pending);
                        }
                    }
                    RECV => {
                        let sock = socks[fd as usize]
                            .as_mut()
                            .expect("completion for a known socket");
                        sock.in_flight -= 1;
                        if res <= 0 || sock.dead {
                            kill(&mut socks, fd);
                            continue;
                        }
                        sock.len = res as usize;
                        sock.sent = 0;
                        arm_send(&mut socks, fd, &mut pending);
                    }
                    SEND => {
                        // `fd` is the socket whose bytes were sent (to its peer).
                        let sock = socks[fd as usize]
                            .as_mut()
                            .expect("completion for a known socket");
                        sock.in_flight -= 1;
                        if res < 0 || sock.dead {
                            kill(&mut socks, fd);
                            continue;
                        }
                        sock.sent += res as usize;
                        if sock.sent < sock.len {
                            arm_send(&mut socks, fd, &mut pending);
                        } else {
                            arm_recv(&mut socks, fd, &mut pending);
                        }
                    }
                    _ => unreachable!("unknown operation"),
                }
            }
        }
    }

    fn arm_recv(socks: &mut [Option<Sock>], fd: RawFd, pending: &mut Vec<io_uring::squeue::Entry>) {
        let sock = socks[fd as usize].as_mut().expect("a live socket");
        sock.in_flight += 1;
        pending.push(
            opcode::Recv::new(types::Fd(fd), sock.buf.as_mut_ptr(), sock.buf.len() as u32)
                .build()
                .user_data(key(fd, RECV)),
        );
    }

    fn arm_send(socks: &mut [Option<Sock>], fd: RawFd, pending: &mut Vec<io_uring::squeue::Entry>) {
        let sock = socks[fd as usize].as_mut().expect("a live socket");
        sock.in_flight += 1;
        let rest = &sock.buf[sock.sent..sock.len];
        pending.push(
            opcode::Send::new(types::Fd(sock.peer), rest.as_ptr(), rest.len() as u32)
                .flags(libc::MSG_NOSIGNAL)
                .build()
                .user_data(key(fd, SEND)),
        );
    }

    /// Ends a pair: both sockets are shut down, which completes whatever is in flight
    /// on them; each is closed once nothing names it any more, so no completion can
    /// arrive for a reused descriptor.
    fn kill(socks: &mut [Option<Sock>], fd: RawFd) {
        let peer = socks[fd as usize].as_ref().map_or(-1, |s| s.peer);
        // The peer's slot may already hold a newer socket (closed, number reused).
        let peer = if peer >= 0 && socks[peer as usize].as_ref().is_some_and(|s| s.peer == fd) {
            peer
        } else {
            -1
        };
        for x in [fd, peer] {
            if x < 0 {
                continue;
            }
            if let Some(s) = socks[x as usize].as_mut() {
                if !s.dead {
                    s.dead = true;
                    unsafe { libc::shutdown(x, libc::SHUT_RDWR) };
                }
            }
        }
        for x in [fd, peer] {
            if x >= 0
                && socks[x as usize]
                    .as_ref()
                    .is_some_and(|s| s.dead && s.in_flight == 0)
            {
                socks[x as usize] = None;
                unsafe { libc::close(x) };
            }
        }
    }
}

/// The same relay on a tokio current-thread runtime, a task per direction: `tokio`
/// writes with tokio's own `write_all`; `tokio-batch` hands each write to an io_uring
/// owned by the thread and submits everything queued in one `io_uring_enter` just
/// before the runtime parks (tokio's `on_thread_park`), which is how a tokio proxy
/// would batch its sends.
mod tokio_relay {
    use super::*;
    use std::cell::RefCell;
    use std::collections::HashMap;
    use std::os::fd::AsRawFd;
    use std::rc::Rc;
    use std::task::{Poll, Waker};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// One socket's outgoing bytes while its send is queued or in flight.
    #[derive(Default)]
    struct Slot {
        buf: Vec<u8>,
        busy: bool,
        waiter: Option<Waker>,
    }

    struct Batcher {
        ring: io_uring::IoUring,
        slots: HashMap<RawFd, Rc<RefCell<Slot>>>,
    }

    thread_local! {
        static BATCHER: RefCell<Option<Batcher>> = const { RefCell::new(None) };
    }

    /// Submits what is queued and completes what is done.
    fn flush() {
        BATCHER.with(|b| {
            let mut b = b.borrow_mut();
            let Some(b) = b.as_mut() else { return };
            if !b.ring.submission().is_empty() {
                let _ = b.ring.submit();
            }
            let done: Vec<u64> = b.ring.completion().map(|c| c.user_data()).collect();
            for fd in done {
                if let Some(slot) = b.slots.get(&(fd as RawFd)) {
                    let mut s = slot.borrow_mut();
                    s.busy = false;
                    if let Some(w) = s.waiter.take() {
                        w.wake();
                    }
                }
            }
        });
    }

    /// Queues `data` for `fd`; returns once it is queued (an earlier send of the
    /// socket must have completed first).
    async fn send(fd: RawFd, slot: &Rc<RefCell<Slot>>, data: &[u8]) {
        std::future::poll_fn(|cx| {
            let mut s = slot.borrow_mut();
            if s.busy {
                s.waiter = Some(cx.waker().clone());
                return Poll::Pending;
            }
            s.buf.clear();
            s.buf.extend_from_slice(data);
            s.busy = true;
            let e = io_uring::opcode::Send::new(
                io_uring::types::Fd(fd),
                s.buf.as_ptr(),
                s.buf.len() as u32,
            )
            .flags(libc::MSG_NOSIGNAL)
            .build()
            .user_data(fd as u64);
            BATCHER.with(|b| {
                let mut b = b.borrow_mut();
                let b = b.as_mut().expect("batcher on this thread");
                unsafe { b.ring.submission().push(&e).expect("submission queue full") };
            });
            Poll::Ready(())
        })
        .await
    }

    pub fn run(listener: TcpListener, server_addr: &str, batch: bool) -> io::Result<()> {
        let mut builder = tokio::runtime::Builder::new_current_thread();
        builder.enable_io();
        if batch {
            let ring = io_uring::IoUring::builder()
                .setup_single_issuer()
                .setup_coop_taskrun()
                .build(1024)?;
            BATCHER.with(|b| {
                *b.borrow_mut() = Some(Batcher {
                    ring,
                    slots: HashMap::new(),
                })
            });
            builder.on_thread_park(flush);
        }
        let rt = builder.build()?;
        let local = tokio::task::LocalSet::new();
        let server_addr = server_addr.to_string();
        local.block_on(&rt, async move {
            listener.set_nonblocking(true)?;
            let listener = tokio::net::TcpListener::from_std(listener)?;
            loop {
                let (client, _) = listener.accept().await?;
                let server = tokio::net::TcpStream::connect(&server_addr).await?;
                client.set_nodelay(true)?;
                server.set_nodelay(true)?;
                let (cfd, sfd) = (client.as_raw_fd(), server.as_raw_fd());
                let (cr, cw) = client.into_split();
                let (sr, sw) = server.into_split();
                tokio::task::spawn_local(direction(cr, sw, sfd, batch));
                tokio::task::spawn_local(direction(sr, cw, cfd, batch));
            }
            #[allow(unreachable_code)]
            Ok::<(), io::Error>(())
        })
    }

    async fn direction(
        mut from: tokio::net::tcp::OwnedReadHalf,
        mut to: tokio::net::tcp::OwnedWriteHalf,
        to_fd: RawFd,
        batch: bool,
    ) {
        let mut buf = vec![0u8; BUF];
        let slot = batch.then(|| {
            let slot = Rc::new(RefCell::new(Slot::default()));
            BATCHER.with(|b| {
                b.borrow_mut()
                    .as_mut()
                    .unwrap()
                    .slots
                    .insert(to_fd, slot.clone())
            });
            slot
        });
        loop {
            let n = match from.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            match &slot {
                Some(slot) => send(to_fd, slot, &buf[..n]).await,
                None => {
                    if to.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            }
        }
        // Benchmark shortcut: a send still in flight when the pair ends keeps its
        // buffer in the slot table, which is never pruned.
        let _ = to.shutdown().await;
    }
}
