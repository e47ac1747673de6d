//! How fast new connections are opened to one replica: at most a window of them may be
//! *unproven* (opened, but no response has come back on them yet), and the window grows as
//! connections prove themselves, as TCP's slow start and Envoy's slow start do.
//!
//! Why: when a cold route's replica turns ready, every held request wants a connection at once.
//! A replica with a short accept queue (`python3 -m http.server` listens with a backlog of 5)
//! overflows, Linux drops the handshake's last ACK, and the activator's connect completes while
//! the replica never sees the connection: the request then sits unacknowledged until a
//! retransmission gets through, a second or many seconds later. A completed connect proves
//! nothing; a response does. So the window starts below the smallest common backlog
//! ([`INITIAL_WINDOW`]), and only connections that served a response and were kept for another
//! one (keep-alive) widen it: a replica that closes every connection keeps a small window, which
//! its one-request-per-connection accept loop can always take.
//!
//! A response is not the only proof: once the replica's TCP has acknowledged bytes of the
//! request (`TCP_INFO`'s `tcpi_bytes_acked`, which counts the SYN as 1), its kernel holds the
//! connection, accepted or in its accept queue, and the connection leaves the window, so a few
//! slow requests (a long poll, a report) never keep the replica's other requests from a
//! connection. But only [`ACKNOWLEDGED_AFTER`] into its probation: a connection waiting in the
//! accept queue still takes a place there, and a replica that answers at all answers most
//! requests sooner, so until then only a response proves a connection (without the wait, a burst
//! of new connections overflowed Python's accept queue of 5 while each was acknowledged at once,
//! and the SYNs behind them were dropped for seconds). Where the acknowledgement cannot be read,
//! a connection still waiting for its first response after [`PROBATION_LIMIT`] leaves the window
//! all the same: by then a lost handshake ACK would have been retransmitted.
//!
//! The window is per replica, so a new replica starts small again.

use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};

use tokio::sync::Notify;

/// Unproven connections at first: below Python's `request_queue_size` of 5, the smallest listen
/// backlog in common use (nginx and Node use 511, Go the kernel's maximum).
pub(crate) const INITIAL_WINDOW: u32 = 4;
/// How long a new connection may stay unproven: TCP's initial retransmission timeout (RFC 6298,
/// Linux's `TCP_TIMEOUT_INIT`), after which a handshake whose last ACK was dropped is retried.
pub(crate) const PROBATION_LIMIT: std::time::Duration = std::time::Duration::from_secs(1);
/// How long a new connection stays unproven, though acknowledged, unless a response proves it
/// first: well beyond the time most replicas take to answer, well below a slow request's.
pub(crate) const ACKNOWLEDGED_AFTER: std::time::Duration = std::time::Duration::from_millis(50);
/// The window never grows beyond this many unproven connections.
pub(crate) const MAX_WINDOW: u32 = 256;

/// The window of one replica.
#[derive(Debug)]
pub(crate) struct Pacing {
    unproven: AtomicU32,
    window: AtomicU32,
    /// Signalled when a slot frees or the window grows.
    changed: Notify,
    /// Requests waiting on `changed`: announcing costs nothing while there are none.
    waiting: AtomicUsize,
}

impl Default for Pacing {
    fn default() -> Pacing {
        Pacing {
            unproven: AtomicU32::new(0),
            window: AtomicU32::new(INITIAL_WINDOW),
            changed: Notify::new(),
            waiting: AtomicUsize::new(0),
        }
    }
}

impl Pacing {
    /// A slot for a new connection, if the window has room.
    pub(crate) fn try_open(self: &Arc<Self>) -> Option<Probation> {
        let window = self.window.load(Ordering::Relaxed);
        self.unproven
            .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |n| {
                (n < window).then_some(n + 1)
            })
            .ok()
            .map(|_| Probation {
                pacing: Arc::clone(self),
                socket: None,
                since: std::time::Instant::now(),
            })
    }

    /// Announces a freed slot or a wider window.
    pub(crate) fn changed(&self) -> &Notify {
        &self.changed
    }

    /// Counts the caller among those waiting on [`Pacing::changed`] while the guard lives; only
    /// then does [`Pacing::announce`] signal.
    pub(crate) fn waiting(&self) -> Waiting<'_> {
        self.waiting.fetch_add(1, Ordering::SeqCst);
        Waiting { pacing: self }
    }

    /// Signals one waiter that something changed (a connection came back, a slot freed), if
    /// anyone waits. A waiter counts itself before it looks, and whatever it looks at is
    /// published before this is called, so none misses what it waits for.
    pub(crate) fn announce(&self) {
        if self.waiting.load(Ordering::SeqCst) > 0 {
            self.changed.notify_one();
        }
    }

    /// The window now.
    #[cfg(test)]
    pub(crate) fn window(&self) -> u32 {
        self.window.load(Ordering::Relaxed)
    }

    /// A connection proved it can be kept: one more may be unproven.
    pub(crate) fn widen(&self) {
        let _ = self
            .window
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |w| {
                (w < MAX_WINDOW).then_some(w + 1)
            });
        self.announce();
    }

    /// A new connection failed: halve the window, as congestion control does on loss.
    fn narrow(&self) {
        let _ = self
            .window
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |w| {
                Some((w / 2).max(INITIAL_WINDOW))
            });
    }
}

/// A new connection's slot, held until a response comes back on it or the replica acknowledged
/// its request.
#[derive(Debug)]
#[must_use = "the slot frees when the probation ends"]
pub(crate) struct Probation {
    pacing: Arc<Pacing>,
    /// A duplicate of the connection's socket, to read its TCP state.
    socket: Option<OwnedFd>,
    /// When it began.
    since: std::time::Instant,
}

impl Probation {
    /// Watches the connection's socket (a duplicate descriptor, closed with the probation).
    pub(crate) fn watch(&mut self, socket: OwnedFd) {
        self.socket = Some(socket);
    }

    /// Whether the replica's TCP has acknowledged bytes sent on the connection; `None` when the
    /// socket's state cannot be read.
    pub(crate) fn acknowledged(&self) -> Option<bool> {
        bytes_acked(self.socket.as_ref()?).map(|acked| acked > 1)
    }

    /// Whether the connection may leave the window before its first response: acknowledged and
    /// [`ACKNOWLEDGED_AFTER`] old, or (its state unknown) [`PROBATION_LIMIT`] old.
    pub(crate) fn is_over(&self) -> bool {
        let age = self.since.elapsed();
        match self.acknowledged() {
            Some(acknowledged) => acknowledged && age >= ACKNOWLEDGED_AFTER,
            None => age >= PROBATION_LIMIT,
        }
    }

    /// The connection failed before any response: the replica is struggling.
    pub(crate) fn failed(self) {
        self.pacing.narrow();
    }
}

impl Drop for Probation {
    fn drop(&mut self) {
        self.pacing.unproven.fetch_sub(1, Ordering::AcqRel);
        self.pacing.announce();
    }
}

/// A request counted as waiting on a replica's [`Pacing`].
#[derive(Debug)]
pub(crate) struct Waiting<'a> {
    pacing: &'a Pacing,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.pacing.waiting.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Bytes of the connection the peer acknowledged, its SYN counting as one (`TCP_INFO`, Linux
/// 4.1 and later).
#[cfg(target_os = "linux")]
fn bytes_acked(socket: &OwnedFd) -> Option<u64> {
    use std::os::fd::AsRawFd;
    let size = std::mem::size_of::<libc::tcp_info>();
    let mut len = libc::socklen_t::try_from(size).ok()?;
    let mut info = std::mem::MaybeUninit::<libc::tcp_info>::zeroed();
    // SAFETY: `info` is a zeroed `tcp_info`, a plain struct of integers for which zero is valid,
    // and `len` its size: the kernel writes at most `len` bytes into it and sets `len` to what
    // it wrote. `socket` is an open descriptor owned by the caller for the call's duration.
    #[allow(unsafe_code)]
    let info = unsafe {
        let rc = libc::getsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            info.as_mut_ptr().cast(),
            &mut len,
        );
        if rc != 0 {
            return None;
        }
        info.assume_init()
    };
    let needed = std::mem::offset_of!(libc::tcp_info, tcpi_bytes_acked) + 8;
    (usize::try_from(len).ok()? >= needed).then_some(info.tcpi_bytes_acked)
}

#[cfg(not(target_os = "linux"))]
fn bytes_acked(_: &OwnedFd) -> Option<u64> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_is_acknowledged_once_the_peer_acknowledged_bytes_sent_on_it() {
        use std::io::Write;
        use std::os::fd::AsFd;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut stream = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let pacing = Arc::new(Pacing::default());
        let mut probation = pacing.try_open().unwrap();
        assert_eq!(probation.acknowledged(), None, "no socket watched");
        probation.watch(stream.as_fd().try_clone_to_owned().unwrap());
        assert_eq!(probation.acknowledged(), Some(false), "only the handshake");
        stream.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
        // Acknowledged by the listener's kernel, though the connection was never accepted.
        let acked = (0..1000).any(|_| {
            std::thread::sleep(std::time::Duration::from_millis(1));
            probation.acknowledged() == Some(true)
        });
        assert!(acked);
    }

    #[test]
    fn the_window_starts_small_grows_with_kept_connections_and_halves_on_failure() {
        let pacing = Arc::new(Pacing::default());
        let slots: Vec<_> = (0..INITIAL_WINDOW)
            .map(|_| pacing.try_open().expect("room"))
            .collect();
        assert!(pacing.try_open().is_none(), "no more than the window");
        drop(slots);
        for _ in 0..12 {
            pacing.widen();
        }
        assert_eq!(pacing.window(), INITIAL_WINDOW + 12);
        let slot = pacing.try_open().unwrap();
        slot.failed();
        assert_eq!(pacing.window(), (INITIAL_WINDOW + 12) / 2);
        for _ in 0..1000 {
            pacing.widen();
        }
        assert_eq!(pacing.window(), MAX_WINDOW);
    }
}
