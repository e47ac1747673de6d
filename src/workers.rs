//! The proxy's worker threads, as nginx's worker processes: each runs a current-thread tokio
//! runtime and accepts from a listening socket of its own on the proxy's address
//! (`SO_REUSEPORT`: the kernel spreads new connections across the sockets). A request is read,
//! forwarded and answered on one thread, with no wake-up crossing threads and no work stealing;
//! on a machine the proxy shares with its backends and load, that is most of the scheduler's
//! cost gone (BENCHMARKS.md, "Warm path").
//!
//! Everything else (the admin listener, the scaler, providers, discovery, the cluster) runs on
//! the control runtime: the one [`serve`] is called from. Work that a request sets off but that
//! belongs to the route and may outlive the request (an activation's driver, a replica's
//! supervision) is started with [`spawn_control`], so it runs there and never stops with a
//! worker.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::runtime::Handle;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

thread_local! {
    /// On a worker thread: its index.
    static INDEX: Cell<usize> = const { Cell::new(0) };
    /// On a worker thread: the control runtime.
    static CONTROL: RefCell<Option<Handle>> = const { RefCell::new(None) };
}

/// Spawns `future` on the control runtime when called from a worker, else on the current
/// runtime (the control runtime itself, or a test's).
pub(crate) fn spawn_control<F>(future: F) -> JoinHandle<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    match CONTROL.with_borrow(Option::clone) {
        Some(handle) => handle.spawn(future),
        None => tokio::spawn(future),
    }
}

/// Worker threads started, at least 1.
static COUNT: AtomicUsize = AtomicUsize::new(1);

/// How many worker threads serve the proxy (1 when the proxy is served on the control runtime).
pub(crate) fn count() -> usize {
    COUNT.load(Ordering::Relaxed)
}

/// The calling worker's index; 0 off the workers (the control runtime, tests).
pub(crate) fn index() -> usize {
    INDEX.get()
}

/// Makes the calling thread worker `index`.
pub(crate) fn set_index(index: usize) {
    INDEX.set(index);
}

/// `count` listening sockets on `addr` (and as many workers to come), all bound to the same port (`SO_REUSEPORT`), with the
/// kernel's largest accept backlog (`net.core.somaxconn`, as Go and Envoy use). Port 0 picks one
/// free port for all of them.
///
/// An address another process listens on is refused (`AddrInUse`), as a plain bind is:
/// `SO_REUSEPORT` alone would let a second activator of the same user join the first's port and
/// silently take half its connections. So the port is first bound without it, and only then
/// taken by the workers' sockets. Two activators started in the same few microseconds can
/// still both pass (each probe bound before either listens), and a program of the same user
/// that sets `SO_REUSEPORT` itself can still join: the check is against mistakes, not a lock.
pub fn bind(addr: SocketAddr, count: usize) -> io::Result<Vec<std::net::TcpListener>> {
    let mut addr = {
        let probe = socket(addr)?;
        probe.bind(&addr.into())?;
        probe.local_addr()?.as_socket().unwrap_or(addr)
    };
    let mut listeners = Vec::with_capacity(count);
    for _ in 0..count.max(1) {
        let socket = socket(addr)?;
        socket.set_reuse_port(true)?;
        socket.bind(&addr.into())?;
        // The kernel lowers this to `net.core.somaxconn`.
        socket.listen(65_535)?;
        let listener: std::net::TcpListener = socket.into();
        addr = listener.local_addr()?;
        listeners.push(listener);
    }
    // Known from here on, before any route's connection pools are made.
    COUNT.store(listeners.len(), Ordering::Relaxed);
    Ok(listeners)
}

/// A non-blocking TCP socket for `addr` that may bind a port still in `TIME_WAIT`.
fn socket(addr: SocketAddr) -> io::Result<socket2::Socket> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    socket.set_reuse_address(true)?;
    // `[::]` is left to the system's default (`net.ipv6.bindv6only`, 0 on Linux): both IPv6
    // and IPv4, as tokio's own bind, the admin listener and Go's `net.Listen` give.
    socket.set_nonblocking(true)?;
    Ok(socket)
}

/// Starts a worker thread for each listener, whose current-thread runtime runs
/// `serve(listener)` to its end; returns a receiver per worker that completes (or fails, if the
/// worker panicked) when it has. Must be called on the control runtime.
pub(crate) fn start<S, F>(
    listeners: Vec<std::net::TcpListener>,
    serve: S,
) -> io::Result<Vec<oneshot::Receiver<()>>>
where
    S: Fn(tokio::net::TcpListener) -> F + Clone + Send + 'static,
    F: Future<Output = ()>,
{
    let control = Handle::current();
    let mut done = Vec::with_capacity(listeners.len());
    for (index, listener) in listeners.into_iter().enumerate() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let (finished, finish) = oneshot::channel();
        let control = control.clone();
        let serve = serve.clone();
        std::thread::Builder::new()
            .name(format!("activator-worker-{index}"))
            .spawn(move || {
                set_index(index);
                CONTROL.set(Some(control));
                runtime.block_on(async move {
                    match tokio::net::TcpListener::from_std(listener) {
                        Ok(listener) => serve(listener).await,
                        Err(error) => tracing::error!(%error, "worker {index} cannot serve"),
                    }
                });
                // Connections still open (none after a drain) close with the runtime.
                drop(runtime);
                let _ = finished.send(());
            })?;
        done.push(finish);
    }
    Ok(done)
}
