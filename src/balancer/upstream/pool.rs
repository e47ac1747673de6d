//! The idle HTTP/1.1 connections to one replica, and how a request gets one.
//!
//! Each worker thread ([`workers`]) keeps its own list, as each of nginx's workers keeps its own
//! upstream connections: a connection's socket is watched by the runtime of the thread that
//! last used it, so a request that takes a connection from its own thread's list never wakes
//! another thread. A request takes, in order: its thread's most recently used idle connection; a
//! new one, if the replica's window of unproven connections has room ([`Pacing`]); another
//! thread's idle connection, moved to this thread; else it waits for one of these. One idle for
//! [`IDLE_TIMEOUT`] is closed, and at most [`MAX_IDLE`] are kept per thread; every
//! [`CLOSE_IDLE_EVERY`] the idle lists are looked over ([`Pool::close_idle`]), so connections
//! past their time, or that the replica closed, do not keep their sockets (and the replica's
//! resources) while no request comes. An idle connection keeps no large read buffer. A connection goes
//! back only after its request was sent whole and its response read to the end (the proxy's
//! forwarding decides). Dropping the pool (the endpoint left the ready set and its last lease
//! ended) closes every idle connection.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::super::pacing::{Pacing, Probation};
use super::{Checkout, ConnectError, Connection, Sender, dial};
use crate::workers;

/// Idle connections kept per replica and thread at most.
const MAX_IDLE: usize = 1024;
/// An idle connection older than this is closed instead of reused (nginx's upstream
/// `keepalive_timeout` is 60 s, Envoy's idle timeout one hour; replicas commonly keep idle
/// connections 60–120 s).
const IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// Whether a connection idle since `since` is past [`IDLE_TIMEOUT`] at `now`. Instants are
/// compared rather than a duration taken, which costs more and runs on every request.
fn is_stale(since: Instant, now: Instant) -> bool {
    now.checked_sub(IDLE_TIMEOUT)
        .is_some_and(|cutoff| since <= cutoff)
}

/// How often idle connections are looked over: a quarter of [`IDLE_TIMEOUT`], as the client
/// connections' watchdog looks at its limits, so none stays open much past its time.
pub(crate) const CLOSE_IDLE_EVERY: Duration =
    Duration::from_millis(IDLE_TIMEOUT.as_millis() as u64 / 4);

/// The idle HTTP/1.1 connections to one replica.
pub(crate) struct Pool {
    /// A list per worker thread, oldest first (connections are pushed as they become idle);
    /// each locked only to push or pop, never across an await.
    idle: Box<[Mutex<Vec<Idle>>]>,
    /// Signalled when a connection comes back or a slot for a new one frees.
    pacing: Arc<Pacing>,
}

impl Default for Pool {
    fn default() -> Pool {
        Pool {
            idle: (0..workers::count()).map(|_| Mutex::default()).collect(),
            pacing: Arc::default(),
        }
    }
}

struct Idle {
    connection: Box<Connection>,
    since: Instant,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let idle: usize = (0..self.idle.len()).map(|i| self.idle(i).len()).sum();
        f.debug_struct("Pool").field("idle", &idle).finish()
    }
}

impl Pool {
    fn idle(&self, list: usize) -> MutexGuard<'_, Vec<Idle>> {
        // The vector is consistent between any two statements; a panic elsewhere leaves it usable.
        self.idle[list % self.idle.len()]
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// The most recently used connection of `list` that can still take a request `now`.
    fn take(&self, list: usize, now: Instant) -> Option<Box<Connection>> {
        let mut idle = self.idle(list);
        while let Some(kept) = idle.pop() {
            if is_stale(kept.since, now) {
                // Everything older sits below it: close them all.
                idle.clear();
                return None;
            }
            // One the replica closed meanwhile is dropped here.
            if kept.connection.is_reusable() {
                return Some(kept.connection);
            }
        }
        None
    }

    /// Another thread's idle connection, moved to this thread's runtime.
    fn take_elsewhere(&self, here: usize) -> Option<Box<Connection>> {
        let now = Instant::now();
        (1..self.idle.len()).find_map(|offset| {
            let connection = self.take(here + offset, now)?;
            connection.rehome(here).ok()
        })
    }

    /// This thread's most recently used idle connection, if there is one; `now` is a time the
    /// caller read already.
    pub(crate) fn try_get(&self, now: Instant) -> Option<Checkout> {
        self.take(workers::index(), now).map(|connection| Checkout {
            sender: Sender::Http1(connection),
            probation: None,
        })
    }

    /// A connection to `addr` for one request (see the module docs); waits for one at most
    /// `wait_at_most`.
    pub(crate) async fn get(
        &self,
        addr: SocketAddr,
        connect_timeout: Duration,
        wait_at_most: Duration,
    ) -> Result<Checkout, ConnectError> {
        let reused = |connection| Checkout {
            sender: Sender::Http1(connection),
            probation: None,
        };
        let here = workers::index();
        let started = Instant::now();
        if let Some(connection) = self.take(here, started) {
            return Ok(reused(connection));
        }
        // From here on, returned connections and freed slots are announced to this request.
        let _waiting = self.pacing.waiting();
        let probation = loop {
            let changed = self.pacing.changed().notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if let Some(connection) = self.take(here, Instant::now()) {
                return Ok(reused(connection));
            }
            if let Some(probation) = self.pacing.try_open() {
                break probation;
            }
            if let Some(connection) = self.take_elsewhere(here) {
                return Ok(reused(connection));
            }
            if tokio::time::timeout_at((started + wait_at_most).into(), changed)
                .await
                .is_err()
            {
                return Err(ConnectError::Busy {
                    addr,
                    waited: started.elapsed(),
                });
            }
        };
        // Boxed: connecting is the rare path, and inline its state would enlarge every request's
        // future, held ones included.
        let mut connecting = Box::pin(dial(addr, connect_timeout));
        let mut probation: Probation = probation;
        loop {
            let changed = self.pacing.changed().notified();
            tokio::select! {
                made = &mut connecting => return match made {
                    Ok((stream, socket)) => {
                        if let Some(socket) = socket {
                            probation.watch(socket);
                        }
                        Ok(Checkout {
                            sender: Sender::Http1(Connection::new(stream, here)),
                            probation: Some(probation),
                        })
                    }
                    Err(error) => {
                        probation.failed();
                        Err(error)
                    }
                },
                () = changed => {
                    // A request whose connect is stuck (a SYN retransmission takes a second)
                    // takes a connection another request returns first.
                    let now = Instant::now();
                    if let Some(connection) = self.take(here, now).or_else(|| self.take_elsewhere(here)) {
                        return Ok(reused(connection));
                    }
                }
            }
        }
    }

    /// Closes the idle connections that were idle for [`IDLE_TIMEOUT`] or that the replica
    /// closed; returns how many are left.
    pub(crate) fn close_idle(&self) -> usize {
        self.close_idle_at(Instant::now())
    }

    fn close_idle_at(&self, now: Instant) -> usize {
        (0..self.idle.len())
            .map(|list| {
                let mut idle = self.idle(list);
                idle.retain(|kept| !is_stale(kept.since, now) && kept.connection.is_reusable());
                idle.len()
            })
            .sum()
    }

    /// Keeps `connection` for a later request (its request was sent whole and its response
    /// ended) at `now`, a time the caller read already; the first time, that proves the replica
    /// keeps connections: the window widens.
    pub(crate) fn put(&self, mut connection: Box<Connection>, now: Instant) {
        let first = !std::mem::replace(&mut connection.proven, true);
        connection.settle();
        let mut idle = self.idle(connection.home);
        let stale = idle.partition_point(|i| is_stale(i.since, now));
        idle.drain(..stale);
        if idle.len() < MAX_IDLE {
            idle.push(Idle {
                connection,
                since: now,
            });
            drop(idle);
            if first {
                self.pacing.widen();
            } else {
                self.pacing.announce();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::exchange::connected;
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn idle_connections_the_replica_closed_or_past_their_time_are_closed_without_a_request() {
        let pool = Pool::default();
        let (kept, kept_peer) = connected().await;
        let (closed, closed_peer) = connected().await;
        let start = Instant::now();
        pool.put(kept, start);
        pool.put(closed, start);
        assert_eq!(pool.close_idle_at(start), 2);
        drop(closed_peer);
        // The runtime learns of the close once its reactor turns.
        tokio::time::sleep(Duration::from_millis(1)).await;
        assert_eq!(
            pool.close_idle_at(start),
            1,
            "the one its replica closed is gone"
        );
        assert_eq!(
            pool.close_idle_at(start + IDLE_TIMEOUT),
            0,
            "the other is past its time"
        );
        let mut probe = [0u8; 1];
        let mut kept_peer = kept_peer;
        let read = tokio::io::AsyncReadExt::read(&mut kept_peer, &mut probe).await;
        assert!(
            matches!(read, Ok(0)),
            "the replica sees it closed: {read:?}"
        );
    }

    #[tokio::test]
    async fn a_request_takes_the_latest_idle_connection_unless_it_has_been_idle_too_long() {
        let pool = Pool::default();
        let (first, _first_peer) = connected().await;
        let (second, _second_peer) = connected().await;
        let start = Instant::now();
        let second_addr = second.local_addr();
        pool.put(first, start);
        pool.put(second, start + Duration::from_secs(1));
        let Some(Checkout {
            sender: Sender::Http1(taken),
            ..
        }) = pool.try_get(start + Duration::from_secs(2))
        else {
            panic!("an idle connection was there to take");
        };
        assert_eq!(taken.local_addr(), second_addr, "the most recent one");
        assert!(
            pool.try_get(start + IDLE_TIMEOUT).is_none(),
            "the other has been idle {IDLE_TIMEOUT:?} by then"
        );
    }
}
