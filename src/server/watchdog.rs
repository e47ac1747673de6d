//! When a client connection has been quiet too long, read from its [`Activity`] counters on each
//! tick of its watchdog. Pure: the caller supplies the time and acts on the [`Verdict`].
//!
//! - A connection that has sent nothing, or (HTTP/2) opened no stream, within
//!   `header_read_timeout` of being accepted is closed.
//! - HTTP/1: bytes that do not become a whole request head within `header_read_timeout` close
//!   the connection (slow headers); a keep-alive connection with no request for
//!   `keepalive_timeout` is shut down gracefully. HTTP/2: no stream for `keepalive_timeout` →
//!   GOAWAY.
//! - A response streaming with no byte either way on the connection for its route's
//!   `stream_idle_timeout` (else the listener's) closes it: a client that never reads, or never
//!   sends the rest of its upload. (Stalls on the replica's side are the proxy's to time.)
//!
//! Times are observed on ticks, so a limit fires up to one tick after it is due.
//!
//! [`Activity`]: crate::activity::Activity

use std::time::Duration;

use tokio::time::Instant;

use crate::activity::Snapshot;

/// The limits a watchdog enforces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Timeouts {
    /// Until a request head is whole, and until a new connection sends anything.
    pub(crate) header_read: Duration,
    /// An idle keep-alive connection (HTTP/2: one without streams).
    pub(crate) keepalive: Duration,
    /// A streaming response with no traffic either way, unless its route says otherwise.
    pub(crate) stream_idle: Duration,
}

impl Timeouts {
    /// How often the watchdog looks: a quarter of the shortest limit in force.
    pub(crate) fn tick(&self, stream_idle: Option<Duration>) -> Duration {
        let stream_idle = stream_idle.unwrap_or(self.stream_idle);
        (self.header_read.min(self.keepalive).min(stream_idle) / 4).max(Duration::from_millis(5))
    }
}

/// What to do with the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Nothing yet.
    Wait,
    /// Close it now: it sent nothing, or never finished a request head, or opened no stream.
    Close(&'static str),
    /// Idle keep-alive: shut it down gracefully (HTTP/2: GOAWAY).
    Retire,
    /// A response stalled: close it now, and count it.
    StreamIdle,
}

/// One connection's watchdog state.
#[derive(Debug)]
pub(crate) struct Watchdog {
    timeouts: Timeouts,
    accepted: Instant,
    previous: Snapshot,
    last_io: Instant,
    /// When the connection was last seen with no request open.
    idle_since: Instant,
    /// Reads counted when it went idle: more means a new request head is arriving (HTTP/1).
    reads_at_idle: u64,
    /// When bytes of a new request head were first seen.
    head_since: Option<Instant>,
}

impl Watchdog {
    /// A watchdog for a connection accepted at `accepted`.
    pub(crate) fn new(timeouts: Timeouts, accepted: Instant) -> Watchdog {
        Watchdog {
            timeouts,
            accepted,
            previous: Snapshot::default(),
            last_io: accepted,
            idle_since: accepted,
            reads_at_idle: 0,
            head_since: None,
        }
    }

    /// Looks at the counters at `now`.
    pub(crate) fn check(&mut self, now: Instant, snapshot: Snapshot) -> Verdict {
        let previous = std::mem::replace(&mut self.previous, snapshot);
        if snapshot.reads != previous.reads || snapshot.writes != previous.writes {
            self.last_io = now;
        }
        if snapshot.open > 0 {
            self.head_since = None;
            let stream_idle = snapshot.stream_idle.unwrap_or(self.timeouts.stream_idle);
            if snapshot.streaming > 0 && now - self.last_io >= stream_idle {
                return Verdict::StreamIdle;
            }
            // Idle, if it is next time, counts from then.
            self.idle_since = now;
            self.reads_at_idle = snapshot.reads;
            return Verdict::Wait;
        }
        if snapshot.started != previous.started || previous.open > 0 {
            // Requests came and went since the last look: idle from now.
            self.idle_since = now;
            self.reads_at_idle = snapshot.reads;
            self.head_since = None;
        }
        let header_read = self.timeouts.header_read;
        if snapshot.reads == 0 {
            return if now - self.accepted >= header_read {
                Verdict::Close("sent nothing")
            } else {
                Verdict::Wait
            };
        }
        if snapshot.h2 {
            if snapshot.started == 0 {
                return if now - self.accepted >= header_read {
                    Verdict::Close("opened no stream")
                } else {
                    Verdict::Wait
                };
            }
        } else if snapshot.reads > self.reads_at_idle {
            let since = *self.head_since.get_or_insert(now);
            return if now - since >= header_read {
                Verdict::Close("request head incomplete")
            } else {
                Verdict::Wait
            };
        }
        if now - self.idle_since >= self.timeouts.keepalive {
            Verdict::Retire
        } else {
            Verdict::Wait
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TIMEOUTS: Timeouts = Timeouts {
        header_read: Duration::from_secs(30),
        keepalive: Duration::from_secs(75),
        stream_idle: Duration::from_secs(300),
    };

    fn at(start: Instant, secs: u64) -> Instant {
        start + Duration::from_secs(secs)
    }

    fn snapshot(reads: u64, writes: u64, started: u64, open: u64, streaming: u64) -> Snapshot {
        Snapshot {
            reads,
            writes,
            started,
            open,
            streaming,
            h2: false,
            stream_idle: None,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_connection_is_closed_after_the_header_timeout() {
        let start = Instant::now();
        let mut dog = Watchdog::new(TIMEOUTS, start);
        assert_eq!(dog.check(at(start, 29), Snapshot::default()), Verdict::Wait);
        assert_eq!(
            dog.check(at(start, 30), Snapshot::default()),
            Verdict::Close("sent nothing")
        );
    }

    #[tokio::test(start_paused = true)]
    async fn slow_headers_are_timed_from_their_first_byte_not_from_idleness() {
        let start = Instant::now();
        let mut dog = Watchdog::new(TIMEOUTS, start);
        // A request, its response, then 60s of keep-alive idleness: fine.
        dog.check(at(start, 1), snapshot(1, 1, 1, 0, 0));
        assert_eq!(
            dog.check(at(start, 61), snapshot(1, 1, 1, 0, 0)),
            Verdict::Wait
        );
        // Then a few bytes of a head, and no more.
        assert_eq!(
            dog.check(at(start, 62), snapshot(2, 1, 1, 0, 0)),
            Verdict::Wait
        );
        assert_eq!(
            dog.check(at(start, 91), snapshot(3, 1, 1, 0, 0)),
            Verdict::Wait
        );
        assert_eq!(
            dog.check(at(start, 92), snapshot(3, 1, 1, 0, 0)),
            Verdict::Close("request head incomplete")
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_keep_alive_connection_is_retired_after_the_keepalive_timeout() {
        let start = Instant::now();
        let mut dog = Watchdog::new(TIMEOUTS, start);
        assert_eq!(
            dog.check(at(start, 10), snapshot(1, 1, 1, 1, 1)),
            Verdict::Wait
        );
        assert_eq!(
            dog.check(at(start, 20), snapshot(1, 2, 1, 0, 0)),
            Verdict::Wait
        );
        assert_eq!(
            dog.check(at(start, 94), snapshot(1, 2, 1, 0, 0)),
            Verdict::Wait
        );
        assert_eq!(
            dog.check(at(start, 95), snapshot(1, 2, 1, 0, 0)),
            Verdict::Retire
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_http2_connection_without_a_stream_is_closed_but_pings_do_not_count_as_a_head() {
        let start = Instant::now();
        let h2 = |reads, started, open| Snapshot {
            h2: true,
            ..snapshot(reads, 1, started, open, 0)
        };
        let mut dog = Watchdog::new(TIMEOUTS, start);
        assert_eq!(dog.check(at(start, 29), h2(3, 0, 0)), Verdict::Wait);
        assert_eq!(
            dog.check(at(start, 30), h2(4, 0, 0)),
            Verdict::Close("opened no stream")
        );

        let mut dog = Watchdog::new(TIMEOUTS, start);
        dog.check(at(start, 1), h2(3, 1, 1));
        dog.check(at(start, 2), h2(4, 1, 0));
        // Pings for a minute: still idle.
        assert_eq!(dog.check(at(start, 62), h2(9, 1, 0)), Verdict::Wait);
        assert_eq!(dog.check(at(start, 77), h2(10, 1, 0)), Verdict::Retire);
    }

    #[tokio::test(start_paused = true)]
    async fn a_stalled_response_is_closed_but_a_held_request_is_not() {
        let start = Instant::now();
        let mut dog = Watchdog::new(TIMEOUTS, start);
        // A request held for 10 minutes, nothing streaming yet: left to the cold-start timeout.
        assert_eq!(
            dog.check(at(start, 1), snapshot(1, 0, 1, 1, 0)),
            Verdict::Wait
        );
        assert_eq!(
            dog.check(at(start, 600), snapshot(1, 0, 1, 1, 0)),
            Verdict::Wait
        );
        // Its response starts, then stalls.
        assert_eq!(
            dog.check(at(start, 601), snapshot(1, 1, 1, 1, 1)),
            Verdict::Wait
        );
        assert_eq!(
            dog.check(at(start, 900), snapshot(1, 1, 1, 1, 1)),
            Verdict::Wait
        );
        assert_eq!(
            dog.check(at(start, 901), snapshot(1, 1, 1, 1, 1)),
            Verdict::StreamIdle
        );
    }
}
