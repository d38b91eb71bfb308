//! The running service: engines, API workers, poll loops and the HTTP listener, and the
//! order in which they start and stop.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::watch;

use crate::config::Config;
use crate::guard::{Guard, Limits};
use crate::host::{Host, STARTUP_PATIENCE};
use crate::http::{self, App};

/// Time in-flight requests get to finish on shutdown.
const GRACE: Duration = Duration::from_secs(10);
/// Time queued API calls get for their last try on shutdown.
const DRAIN: Duration = Duration::from_secs(5);

/// Runs until `shutdown` completes, then stops cleanly. `ready` gets the bound address once
/// the listener accepts connections.
pub async fn run(
    cfg: Config,
    shutdown: impl Future<Output = ()>,
    ready: impl FnOnce(SocketAddr),
) -> Result<(), String> {
    let stop_api = Arc::new(AtomicBool::new(false));
    let mut hosts = HashMap::new();
    let mut workers = Vec::new();
    for h in &cfg.hosts {
        // A roster that does not parse stops the start: better no service than a wrong one.
        let (host, worker) =
            Host::open(&cfg.store, h, stop_api.clone()).map_err(|e| format!("{}: {e}", h.name))?;
        hosts.insert(h.name.as_str().to_string(), Arc::new(host));
        workers.push(worker);
    }
    let listener = listen(cfg.listen).map_err(|e| format!("listen on {}: {e}", cfg.listen))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut loops = Vec::new();
    for host in hosts.values() {
        let h = host.clone();
        tokio::task::spawn_blocking(move || {
            let n = h.startup(STARTUP_PATIENCE);
            log::info!("{}: serving; {n} startup presence(s) queued", h.name);
        });
        loops.push(tokio::spawn(poll_loop(host.clone(), cfg.poll_interval, stop_rx.clone())));
    }
    log::info!("listening on http://{addr} ({} host(s), store {})", hosts.len(), cfg.store.display());
    ready(addr);
    let guard = Guard::new(Limits::default(), addr);
    let app = Arc::new(App::new(hosts, cfg.hook_token, cfg.admin_token, stop_rx, guard));
    http::serve(listener, app, shutdown, stop_tx, GRACE).await;
    for l in loops {
        let _ = l.await;
    }
    // Queued presence and messages get one more try each; then the workers end, once the
    // last engine (and its queue) is dropped.
    stop_api.store(true, Ordering::Release);
    let end = Instant::now() + DRAIN;
    while workers.iter().any(|w| !w.is_finished()) && Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    if workers.iter().any(|w| !w.is_finished()) {
        log::warn!("stopping: the XMPP server's API did not take every queued call in time");
    }
    log::info!("stopped");
    Ok(())
}

/// Connections the kernel may hold for us before we accept them (capped by
/// `net.core.somaxconn`, 4096 by default): a burst of new connections, e.g. clients without a
/// token coming back at once, must not fill the queue and make the XMPP server's next
/// connection wait for a SYN retry (1 s).
const BACKLOG: u32 = 4096;

fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(BACKLOG)
}

/// The engine's wakeup eventfd. The engine owns it; holding the host keeps it open.
struct WakeFd {
    fd: RawFd,
    _owner: Arc<Host>,
}

impl AsRawFd for WakeFd {
    fn as_raw_fd(&self) -> RawFd {
        self.fd
    }
}

/// Least time between the starts of two wakeup-driven polls of one host. A poll that has
/// work reads pending files under the engine's lock, and the engine's own writes (each new
/// request) wake it too: during a flood polls would take the lock from the requests. So the
/// next such poll waits 4 times as long as the last one took (polls hold the lock at most a
/// fifth of the time), at least this long and at most `MAX_POLL_GAP`. An idle poll (our own
/// write's echo) costs an atomic load, so the floor is small: a lone CLI decision is picked
/// up at once (it was 50 ms, a quarter of the ejabberd approval latency's p95).
const POLL_GAP: Duration = Duration::from_millis(2);
const MAX_POLL_GAP: Duration = Duration::from_millis(500);

/// Polls again this long after a wakeup (then the next, then the timer): the wakeup often
/// comes while the CLI still holds the store lock, and the engine then keeps the change for
/// the next poll without waking us again. Idle polls cost one atomic load.
const FOLLOW_UPS: [Duration; 3] =
    [Duration::from_millis(50), Duration::from_millis(250), Duration::from_secs(1)];

/// Picks up CLI and file decisions: at once when the store's wakeup fd fires, and on a
/// timer in case it cannot. Polls run one at a time per host, so a burst coalesces.
async fn poll_loop(host: Arc<Host>, every: Duration, mut stop: watch::Receiver<bool>) {
    use tokio::time::{Instant as At, sleep_until};
    let wake = host.engine.wakeup_fd().and_then(|fd| {
        let owned = WakeFd { fd, _owner: host.clone() };
        // SAFETY: the fd stays open and the same while `owned` lives: the engine closes it
        // only when dropped, and `owned` holds the engine's host.
        unsafe { AsyncFd::register_with_interest(owned, Interest::READABLE) }
            .inspect_err(|e| log::warn!("{}: cannot watch the wakeup fd ({e}); timer only", host.name))
            .ok()
    });
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last = At::now() - MAX_POLL_GAP;
    let mut gap = POLL_GAP;
    let mut follow_ups = FOLLOW_UPS.iter();
    let mut next_follow_up: Option<At> = None;
    let mut woken = false;
    loop {
        tokio::select! {
            ready = readable(wake.as_ref()) => {
                // Cleared before polling: the engine drains the fd in poll(), and a write
                // after that drain is a new edge.
                if let Ok(mut guard) = ready {
                    guard.clear_ready();
                }
                follow_ups = FOLLOW_UPS.iter();
                // No settling sleep: a poll that finds the CLI still holding the store lock
                // is told so, and the engine wakes us again when the lock is released.
                // Only wakeup-driven polls are spaced (a flood's wakeups): a lone decision
                // after a timer or follow-up poll is picked up at once.
                sleep_until(last + gap).await;
                woken = true;
            }
            _ = tick.tick() => {}
            () = sleep_until(next_follow_up.unwrap_or_else(At::now)), if next_follow_up.is_some() => {}
            _ = stop.changed() => return,
        }
        let started = At::now();
        let h = host.clone();
        let _ = tokio::task::spawn_blocking(move || h.poll()).await;
        if std::mem::take(&mut woken) {
            last = started;
            gap = (started.elapsed() * 4).clamp(POLL_GAP, MAX_POLL_GAP);
        }
        next_follow_up = follow_ups.next().map(|d| At::now() + *d);
    }
}

async fn readable(
    fd: Option<&AsyncFd<WakeFd>>,
) -> std::io::Result<tokio::io::unix::AsyncFdReadyGuard<'_, WakeFd>> {
    match fd {
        Some(fd) => fd.readable().await,
        None => std::future::pending().await,
    }
}
