//! Test and benchmark helper: clients without a token that try to hold the sidecar's
//! connections, as in issue 14 (defect 2). One thread, non-blocking sockets, from several
//! loopback source addresses (127.0.0.2 … 127.0.0.9), in three kinds taken in turn:
//!
//! * *health*: `GET /v1/health` at once and again every `every` on the same connection
//!   (keep-alive), the attack;
//! * *slow*: a request line, then one header line every `every`, never the end of the headers;
//! * *idle*: connects and sends nothing.
//!
//! A connection the sidecar closes is opened again, at most once per `every` per slot, so
//! the load stays bounded (`n / every` connections per second at most).
#![allow(dead_code)]

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, SocketAddrV4, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// What the strangers saw.
#[derive(Debug, Default, Clone)]
pub struct Stats {
    /// Connections opened.
    pub connects: u64,
    /// Connections that failed to open.
    pub connect_errors: u64,
    /// Connections the sidecar closed.
    pub closed: u64,
    /// Health answers received.
    pub answers: u64,
    /// Most connections open at once (on the strangers' side).
    pub max_open: usize,
}

/// The running strangers; stopped (and their sockets closed) by [`Strangers::stop`].
pub struct Strangers {
    stop: Arc<AtomicBool>,
    open: Arc<AtomicUsize>,
    thread: Option<JoinHandle<Stats>>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Health,
    Slow,
    Idle,
}

struct Slot {
    kind: Kind,
    source: [u8; 4],
    stream: Option<TcpStream>,
    last_connect: Option<Instant>,
    next: Instant,
}

const HEALTH: &[u8] = b"GET /v1/health HTTP/1.1\r\nHost: sidecar\r\n\r\n";

/// Raises the soft limit on open files to the hard one (the strangers and the sidecar's side
/// of their connections need a few thousand).
pub fn raise_fd_limit() -> u64 {
    let mut r = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: plain libc calls on a local struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) == 0 && r.rlim_cur < r.rlim_max {
            r.rlim_cur = r.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &r);
        }
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut r);
    }
    #[allow(clippy::unnecessary_cast)] // rlim_t is u64 on Linux, not everywhere
    let cur = r.rlim_cur as u64;
    cur
}

/// A blocking TCP connection to `to` from the loopback address `from` (any port).
pub fn connect_from(from: [u8; 4], to: SocketAddr) -> std::io::Result<TcpStream> {
    let SocketAddr::V4(to) = to else { return Err(ErrorKind::Unsupported.into()) };
    let sockaddr = |a: SocketAddrV4| libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: a.port().to_be(),
        sin_addr: libc::in_addr { s_addr: u32::from_ne_bytes(a.ip().octets()) },
        sin_zero: [0; 8],
    };
    let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    // SAFETY: a new socket owned by the TcpStream at once; the addresses are local structs of
    // the size given.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let stream = TcpStream::from_raw_fd(fd);
        // Bounds the connect too (Linux): a full accept queue answers in 1 s, not after SYN retries.
        stream.set_write_timeout(Some(Duration::from_secs(1)))?;
        let local = sockaddr(SocketAddrV4::new(from.into(), 0));
        if libc::bind(fd, (&raw const local).cast(), len) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let remote = sockaddr(to);
        if libc::connect(fd, (&raw const remote).cast(), len) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        stream.set_write_timeout(None)?;
        Ok(stream)
    }
}

impl Strangers {
    /// Starts `n` strangers against `addr`, each acting every `every`.
    pub fn start(addr: SocketAddr, n: usize, every: Duration) -> Strangers {
        let stop = Arc::new(AtomicBool::new(false));
        let open = Arc::new(AtomicUsize::new(0));
        let (s, o) = (stop.clone(), open.clone());
        let thread = std::thread::spawn(move || run(addr, n, every, &s, &o));
        Strangers { stop, open, thread: Some(thread) }
    }

    /// Connections open now, on the strangers' side.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// Stops them, closing every connection.
    pub fn stop(mut self) -> Stats {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().unwrap().join().unwrap()
    }
}

impl Drop for Strangers {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn run(addr: SocketAddr, n: usize, every: Duration, stop: &AtomicBool, open: &AtomicUsize) -> Stats {
    let kinds = [Kind::Health, Kind::Slow, Kind::Idle];
    let now = Instant::now();
    let mut slots: Vec<Slot> = (0..n)
        .map(|i| Slot {
            kind: kinds[i % 3],
            source: [127, 0, 0, 2 + (i % 8) as u8],
            stream: None,
            last_connect: None,
            next: now,
        })
        .collect();
    let mut st = Stats::default();
    let mut buf = [0u8; 4096];
    let mut fds: Vec<libc::pollfd> = Vec::with_capacity(n);
    let mut idx: Vec<usize> = Vec::with_capacity(n);
    while !stop.load(Ordering::Relaxed) {
        // Wait for answers or closes (one poll(2) for all, so the strangers themselves cost
        // little CPU and do not slow the machine the sidecar runs on).
        fds.clear();
        idx.clear();
        for (i, s) in slots.iter().enumerate() {
            if let Some(c) = &s.stream {
                fds.push(libc::pollfd { fd: c.as_raw_fd(), events: libc::POLLIN, revents: 0 });
                idx.push(i);
            }
        }
        // SAFETY: `fds` is a live array of `fds.len()` pollfd structs.
        unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, 20) };
        for (f, &i) in fds.iter().zip(&idx) {
            if f.revents == 0 {
                continue;
            }
            let s = &mut slots[i];
            let Some(c) = &mut s.stream else { continue };
            let alive = loop {
                match c.read(&mut buf) {
                    Ok(0) => break false,
                    Ok(k) => {
                        st.answers += buf[..k].windows(12).filter(|w| w == b"HTTP/1.1 200").count() as u64;
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break true,
                    Err(_) => break false,
                }
            };
            if !alive {
                st.closed += 1;
                s.stream = None;
            }
        }
        let now = Instant::now();
        for s in &mut slots {
            if s.stream.is_none() && s.last_connect.is_none_or(|t| now - t >= every) {
                s.last_connect = Some(now);
                match connect_from(s.source, addr) {
                    Ok(mut c) => {
                        st.connects += 1;
                        let _ = c.set_nonblocking(true);
                        let _ = match s.kind {
                            Kind::Health => c.write_all(HEALTH),
                            Kind::Slow => c.write_all(b"GET /v1/health HTTP/1.1\r\n"),
                            Kind::Idle => Ok(()),
                        };
                        s.stream = Some(c);
                        s.next = now + every;
                    }
                    Err(_) => st.connect_errors += 1,
                }
            }
            if let Some(c) = &mut s.stream
                && now >= s.next
            {
                s.next = now + every;
                let _ = match s.kind {
                    Kind::Health => c.write_all(HEALTH),
                    Kind::Slow => c.write_all(b"X-Slow: 1\r\n"),
                    Kind::Idle => Ok(()),
                };
            }
        }
        let count = slots.iter().filter(|s| s.stream.is_some()).count();
        st.max_open = st.max_open.max(count);
        open.store(count, Ordering::Relaxed);
    }
    open.store(0, Ordering::Relaxed);
    st
}
