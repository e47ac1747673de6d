//! Per-route request statistics: RAII guards for requests in flight and held, request counts,
//! last-activity time, and a time-weighted average concurrency over a window.
//!
//! The request path only touches atomics. The time-weighted average rests on one identity: with
//! `n(T)` requests open at time `T`, the integral of concurrency from the epoch to `T` is
//! `A(T) = K + n(T)·T`, where `K` is the sum of finished requests' end times minus the sum of all
//! requests' start times. So a request adds one to `n` and subtracts its start time from `K` when
//! it begins, and the reverse when it ends. `n` and `K` share one 128-bit atomic (`n·2⁹⁶ + K`),
//! so each end of a request is one atomic add and no reader ever sees `n` changed without `K`:
//! kept apart, a request beginning or ending between a reader's two loads put `A` off by the
//! request's start time (the route's whole age), and one such sample could inflate a window's
//! average concurrency enough to scale a route to its maximum. The scaler samples `A` on each
//! tick and divides differences by elapsed time. The scaler's sample ring sits behind a mutex
//! that only the scaler takes.
//!
//! Each worker thread counts into a shard of its own, on cache lines of its own with the shard's
//! reference count, which a request's guard holds: a request's counters are then never written
//! by two cores, where one set per route made every core that served the route pull the line to
//! itself twice per request (BENCHMARKS.md, micro). A request ends in the shard it began in,
//! whichever thread ends it, so each shard's count of open requests is never below the requests
//! open in it; readers add the shards up, and the identity above holds for each shard and so for
//! their sum.
//!
//! This module does not decide anything; [`crate::scaler`] reads [`StatsReport`]s.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use portable_atomic::AtomicI128;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

/// Counters of one route.
#[derive(Debug)]
pub(crate) struct RouteStats {
    /// One per worker thread ([`crate::workers::index`]).
    shards: Box<[Arc<Shard>]>,
    queued: AtomicI64,
    samples: Mutex<VecDeque<(i64, i128)>>,
}

/// One worker's share of a route's request counters, on a 64-byte cache line of its own; its
/// `Arc`'s counts take the line before it, so a shard costs 128 bytes a route (136 with the
/// pointer to it). (crossbeam's `CachePadded` takes 128 on x86-64, whose cores may fetch lines
/// in pairs: 256 bytes a shard with the counts, for every route and worker, to spare a rare
/// prefetch.)
#[derive(Debug)]
#[repr(align(64))]
struct Shard {
    /// `open · 2⁹⁶ + K`: requests accepted here and not finished (held or in flight), and `K` in
    /// the module docs in nanoseconds since `epoch` ([`Counts`]).
    counts: AtomicI128,
    /// The route's epoch.
    epoch: Instant,
    requests: AtomicU64,
    /// Nanoseconds since `epoch` of the last request start or end; 0 = never.
    last_activity: AtomicU64,
}

/// What the scaler needs to know about a route at one moment. Serializable so that activator
/// replicas can exchange their views of a route.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct StatsReport {
    /// Requests being served by a replica.
    pub in_flight: u64,
    /// Requests held waiting for a ready replica.
    pub queued: u64,
    /// Requests accepted since start.
    pub requests_total: u64,
    /// Time since the last request started or ended; `None` if there never was one.
    #[serde(with = "opt_millis")]
    pub idle_for: Option<Duration>,
    /// Time-weighted average of held plus in-flight requests over `window`.
    pub average_concurrency: f64,
    /// The span the average covers (shorter than configured until enough samples exist).
    #[serde(with = "millis")]
    pub window: Duration,
    /// The integral of held plus in-flight requests over time since the counters began, in
    /// request-seconds: only ever grows, so a reader can average over any span it likes.
    #[serde(default)]
    pub concurrency_seconds: f64,
}

impl StatsReport {
    /// Held plus in-flight requests right now.
    pub(crate) fn open(&self) -> u64 {
        self.in_flight + self.queued
    }
}

impl Default for RouteStats {
    fn default() -> Self {
        RouteStats::new()
    }
}

impl RouteStats {
    /// Fresh counters, a shard per worker thread; time starts now.
    pub(crate) fn new() -> RouteStats {
        RouteStats::with_shards(crate::workers::count().min(MAX_SHARDS))
    }

    /// Fresh counters in `shards` shards (at least 1); time starts now.
    pub(crate) fn with_shards(shards: usize) -> RouteStats {
        let epoch = Instant::now();
        RouteStats {
            shards: (0..shards.max(1))
                .map(|_| {
                    Arc::new(Shard {
                        counts: AtomicI128::new(0),
                        epoch,
                        requests: AtomicU64::new(0),
                        last_activity: AtomicU64::new(0),
                    })
                })
                .collect(),
            queued: AtomicI64::new(0),
            samples: Mutex::new(VecDeque::new()),
        }
    }

    /// The calling worker's shard.
    fn shard(&self) -> &Arc<Shard> {
        &self.shards[crate::workers::index() % self.shards.len()]
    }

    fn nanos(&self, at: Instant) -> i64 {
        // Every shard has the route's epoch.
        nanos_since(self.shards[0].epoch, at)
    }

    /// Counts a request as open until the guard drops.
    pub(crate) fn begin(self: &Arc<Self>) -> RequestGuard {
        self.begin_at(Instant::now())
    }

    /// Counts a request that arrived at `arrived` as open until the guard drops (the caller
    /// has read the clock already: a request's path reads it once at each end).
    pub(crate) fn begin_at(self: &Arc<Self>, arrived: Instant) -> RequestGuard {
        let now = self.nanos(arrived);
        let shard = self.shard();
        // SeqCst: the scale-to-zero decision closes the route's gate and then reads the open
        // count; a request increments it and then reads the gate. Sequential consistency
        // guarantees at least one of them sees the other (see `activation`): the decision's load
        // of this shard comes before this increment (and so after the gate closed) or sees it.
        shard
            .counts
            .fetch_add(Counts::OPEN_ONE - now as i128, Ordering::SeqCst);
        shard.requests.fetch_add(1, Ordering::Relaxed);
        shard.touch(now);
        RequestGuard {
            shard: Some(Arc::clone(shard)),
        }
    }

    /// Counts now as activity (the idle clock restarts), without a request.
    pub(crate) fn mark_active(&self) {
        self.shard().touch(self.nanos(Instant::now()));
    }

    /// Requests held or in flight, read with the ordering the scale-to-zero decision needs.
    pub(crate) fn open_now(&self) -> u64 {
        // At most 8 shards of fewer than 2³¹ each: the sum fits.
        self.shards
            .iter()
            .map(|shard| Counts::read(&shard.counts, Ordering::SeqCst).open)
            .sum::<i64>()
            .max(0) as u64
    }

    /// Requests held now.
    pub(crate) fn queued_now(&self) -> u64 {
        self.queued.load(Ordering::Relaxed).max(0) as u64
    }

    /// Requests being served now.
    pub(crate) fn in_flight_now(&self) -> u64 {
        self.open_now().saturating_sub(self.queued_now())
    }

    /// Counts a request as held unless `max` are held on this route already, or `budget` is
    /// spent across all routes.
    pub(crate) fn enqueue(
        self: &Arc<Self>,
        max: u64,
        budget: &Arc<HoldBudget>,
    ) -> Result<QueueGuard, QueueFull> {
        let max = i64::try_from(max).unwrap_or(i64::MAX);
        self.queued
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |q| {
                (q < max).then_some(q + 1)
            })
            .map_err(|_| QueueFull::Route)?;
        // Taken second, and given back if the route's own bound refused: the budget is only ever
        // held by requests actually held.
        let mut guard = QueueGuard {
            stats: Arc::clone(self),
            budget: None,
        };
        budget
            .held
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                (n < budget.max).then_some(n + 1)
            })
            .map_err(|_| QueueFull::Total)?;
        guard.budget = Some(Arc::clone(budget));
        Ok(guard)
    }

    /// Time since the last request started or ended.
    pub(crate) fn idle_for(&self, now: Instant) -> Option<Duration> {
        match self
            .shards
            .iter()
            .map(|shard| shard.last_activity.load(Ordering::Relaxed))
            .max()
            .unwrap_or(0)
        {
            0 => None,
            stamp => Some(Duration::from_nanos(
                (self.nanos(now) as u64).saturating_sub(stamp - 1),
            )),
        }
    }

    /// The integral of open requests over time since the epoch, in request-nanoseconds.
    fn integral(&self, now: i64) -> i128 {
        self.shards.iter().map(|shard| shard.integral(now)).sum()
    }

    /// A report as of `now` without recording a sample (for status pages).
    pub(crate) fn peek(&self, now: Instant, window: Duration) -> StatsReport {
        self.report_inner(now, window, false)
    }

    /// A report as of `now`, recording a sample so later reports can average over `window`.
    /// Called by the scaler on each tick.
    pub(crate) fn report(&self, now: Instant, window: Duration) -> StatsReport {
        self.report_inner(now, window, true)
    }

    fn report_inner(&self, now: Instant, window: Duration, record: bool) -> StatsReport {
        let t = self.nanos(now);
        let a = self.integral(t);
        let window_ns = i64::try_from(window.as_nanos()).unwrap_or(i64::MAX);
        // Only the scaler and status pages take this lock, never the request path.
        let mut samples = self.samples.lock().unwrap_or_else(|e| e.into_inner());
        // Keep the newest sample at or before the window start, so the average spans the window.
        while samples.len() >= 2 && samples[1].0 <= t - window_ns {
            samples.pop_front();
        }
        let (t0, a0) = samples.front().copied().unwrap_or((0, 0));
        let span = (t - t0).max(0);
        let average_concurrency = if span == 0 {
            self.open_now() as f64
        } else {
            (a - a0) as f64 / span as f64
        };
        if record {
            samples.push_back((t, a));
        }
        drop(samples);
        StatsReport {
            in_flight: self.in_flight_now(),
            queued: self.queued_now(),
            requests_total: self
                .shards
                .iter()
                .map(|shard| shard.requests.load(Ordering::Relaxed))
                .sum(),
            idle_for: self.idle_for(now),
            average_concurrency: average_concurrency.max(0.0),
            window: Duration::from_nanos(span as u64),
            concurrency_seconds: (a as f64 / 1e9).max(0.0),
        }
    }
}

/// An open request; dropping it ends the request.
#[derive(Debug)]
#[must_use = "the request ends when the guard drops"]
pub(crate) struct RequestGuard {
    /// The shard it began in and ends in; `None` once the request has ended.
    shard: Option<Arc<Shard>>,
}

impl RequestGuard {
    /// Ends the request at `at`, a time the caller read already.
    pub(crate) fn end_at(&mut self, at: Instant) {
        if let Some(shard) = self.shard.take() {
            let now = nanos_since(shard.epoch, at);
            shard.touch(now);
            shard
                .counts
                .fetch_add(now as i128 - Counts::OPEN_ONE, Ordering::SeqCst);
        }
    }
}

impl Drop for RequestGuard {
    fn drop(&mut self) {
        if self.shard.is_some() {
            self.end_at(Instant::now());
        }
    }
}

/// A held request; dropping it leaves the queue (also when the client goes away).
#[derive(Debug)]
#[must_use = "the request leaves the queue when the guard drops"]
pub(crate) struct QueueGuard {
    stats: Arc<RouteStats>,
    budget: Option<Arc<HoldBudget>>,
}

impl Drop for QueueGuard {
    fn drop(&mut self) {
        self.stats.queued.fetch_sub(1, Ordering::Relaxed);
        if let Some(budget) = &self.budget {
            budget.held.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

// A shard is one cache line: what it counts must fit.
const _: () = assert!(std::mem::size_of::<Shard>() == 64);

/// Nanoseconds from `epoch` to `at`, 0 if `at` is before it.
fn nanos_since(epoch: Instant, at: Instant) -> i64 {
    i64::try_from(at.saturating_duration_since(epoch).as_nanos()).unwrap_or(i64::MAX)
}

/// Shards a route at most: beyond, workers share them (`index % shards`). A shard costs 136
/// bytes a route, so 10,000 routes on a 64-CPU node would otherwise spend 86 MB on them.
const MAX_SHARDS: usize = 8;

impl Shard {
    /// `K + open · now` as of one moment.
    fn integral(&self, now: i64) -> i128 {
        let counts = Counts::read(&self.counts, Ordering::Acquire);
        counts.area + counts.open as i128 * now as i128
    }

    fn touch(&self, now: i64) {
        // +1 keeps 0 meaning "never".
        self.last_activity.store(now as u64 + 1, Ordering::Relaxed);
    }
}

/// A shard's open requests and `K`, unpacked from `open · 2⁹⁶ + K`. `K` stays within ±2⁹⁵:
/// it is at most the request-nanoseconds of every finished request (a million requests open for
/// a century come to 2⁸²) and at least minus the start times of the open ones (each below 2⁶³,
/// and fewer than 2³¹ of them).
struct Counts {
    open: i64,
    area: i128,
}

impl Counts {
    /// What one more open request adds.
    const OPEN_ONE: i128 = 1 << 96;

    fn read(counts: &AtomicI128, order: Ordering) -> Counts {
        let packed = counts.load(order);
        // Rounded to the nearest multiple of 2⁹⁶, so a negative `K` is not taken for one
        // request fewer.
        let open = (packed + (Counts::OPEN_ONE >> 1)) >> 96;
        Counts {
            open: open as i64,
            area: packed - open * Counts::OPEN_ONE,
        }
    }
}

/// Which bound refused a held request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum QueueFull {
    /// The route's `max_queued`.
    Route,
    /// `max_queued_total`, across all routes.
    Total,
}

/// One bound on requests held across all routes, so that full queues on many routes cannot
/// exhaust the activator's memory.
#[derive(Debug)]
pub(crate) struct HoldBudget {
    held: AtomicU64,
    max: u64,
}

impl HoldBudget {
    /// At most `max` held requests in all.
    pub(crate) fn new(max: u64) -> Arc<HoldBudget> {
        Arc::new(HoldBudget {
            held: AtomicU64::new(0),
            max,
        })
    }

    /// The bound.
    pub(crate) fn max(&self) -> u64 {
        self.max
    }
}

mod millis {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub(super) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_millis() as u64)
    }
    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_millis)
    }
}

mod opt_millis {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub(super) fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_some(&(d.as_millis() as u64)),
            None => s.serialize_none(),
        }
    }
    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Duration>, D::Error> {
        Option::<u64>::deserialize(d).map(|o| o.map(Duration::from_millis))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WINDOW: Duration = Duration::from_secs(10);

    #[tokio::test(start_paused = true)]
    async fn guards_count_requests_open_and_held_until_dropped() {
        let stats = Arc::new(RouteStats::new());
        let a = stats.begin();
        let b = stats.begin();
        let held = stats
            .enqueue(10, &HoldBudget::new(10))
            .expect("room in the queue");
        let report = stats.peek(Instant::now(), WINDOW);
        assert_eq!(
            (report.in_flight, report.queued, report.requests_total),
            (1, 1, 2)
        );
        drop((a, b, held));
        let report = stats.peek(Instant::now(), WINDOW);
        assert_eq!((report.open(), report.requests_total), (0, 2));
    }

    #[tokio::test(start_paused = true)]
    async fn workers_count_in_shards_of_their_own_that_readers_add_up() {
        let stats = Arc::new(RouteStats::with_shards(2));
        crate::workers::set_index(0);
        let a = stats.begin();
        let mut moved = stats.begin();
        crate::workers::set_index(1);
        let b = stats.begin();
        tokio::time::advance(Duration::from_secs(2)).await;
        // Ended by worker 1 though begun on worker 0: it leaves the shard it was counted in.
        moved.end_at(Instant::now());
        assert_eq!(
            stats
                .shards
                .iter()
                .map(|s| Counts::read(&s.counts, Ordering::SeqCst).open)
                .collect::<Vec<_>>(),
            [1, 1]
        );
        let report = stats.peek(Instant::now(), WINDOW);
        assert_eq!((report.in_flight, report.requests_total), (2, 3));
        assert_eq!(
            report.idle_for,
            Some(Duration::ZERO),
            "the newest shard's activity"
        );
        // Three requests open for 2 s, then two.
        tokio::time::advance(Duration::from_secs(2)).await;
        let report = stats.peek(Instant::now(), WINDOW);
        assert!(
            (report.concurrency_seconds - 10.0).abs() < 1e-6,
            "{report:?}"
        );
        assert_eq!(report.idle_for, Some(Duration::from_secs(2)));
        drop((a, b));
        crate::workers::set_index(0);
        assert_eq!(stats.open_now(), 0);
    }

    /// Requests that begin and end at the same moment a day after the route's epoch add nothing
    /// to the integral, read at that moment, however a reader's load falls among their updates;
    /// with the open count and `K` apart, a load between the two updates of one of them read a
    /// whole day's worth of request-nanoseconds. The reader sets the length: the writers go on
    /// until it has read a million times.
    #[test]
    fn the_integral_is_read_whole_while_requests_begin_and_end() {
        let stats = Arc::new(RouteStats::with_shards(1));
        let day = stats.shards[0].epoch + Duration::from_secs(86_400);
        let at = stats.nanos(day);
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let writers = (0..2)
            .map(|_| {
                let (stats, stop) = (Arc::clone(&stats), Arc::clone(&stop));
                std::thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        let mut guard = stats.begin_at(day);
                        guard.end_at(day);
                    }
                })
            })
            .collect::<Vec<_>>();
        let torn = (0..1_000_000).find(|_| stats.integral(at) != 0);
        stop.store(true, Ordering::Relaxed);
        for writer in writers {
            writer.join().expect("writer");
        }
        assert_eq!(torn, None, "a read saw a request half counted");
        assert_eq!((stats.open_now(), stats.integral(at)), (0, 0));
    }

    #[test]
    fn counts_unpack_what_was_packed() {
        let counts = AtomicI128::new(0);
        // Three open requests that began 5, 7 and 2^62 ns after the epoch, one finished that
        // lasted 11 ns.
        for start in [5, 7, 1 << 62] {
            counts.fetch_add(Counts::OPEN_ONE - start, Ordering::SeqCst);
        }
        counts.fetch_add(Counts::OPEN_ONE - 100, Ordering::SeqCst);
        counts.fetch_add(111 - Counts::OPEN_ONE, Ordering::SeqCst);
        let read = Counts::read(&counts, Ordering::SeqCst);
        assert_eq!((read.open, read.area), (3, 11 - 12 - (1 << 62)));
        // A century of a million requests' time, none open.
        let century = 1_000_000 * 100 * 365 * 86_400 * 1_000_000_000;
        let read = Counts::read(&AtomicI128::new(century), Ordering::SeqCst);
        assert_eq!((read.open, read.area), (0, century));
        // The edges of `K`'s range, with counts on either side of zero.
        let half = Counts::OPEN_ONE >> 1;
        for open in [-3i64, -1, 0, 1, 2, i32::MAX as i64 - 1] {
            for area in [-half, -half + 1, -1, 0, 1, half - 1] {
                let packed = open as i128 * Counts::OPEN_ONE + area;
                let read = Counts::read(&AtomicI128::new(packed), Ordering::SeqCst);
                assert_eq!((read.open, read.area), (open, area));
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_queue_refuses_beyond_its_bound_and_the_total() {
        let budget = HoldBudget::new(2);
        let (a, b) = (Arc::new(RouteStats::new()), Arc::new(RouteStats::new()));
        let first = a.enqueue(1, &budget).expect("room for one");
        assert_eq!(a.enqueue(1, &budget).unwrap_err(), QueueFull::Route);
        let second = b.enqueue(5, &budget).expect("room in the total");
        assert_eq!(b.enqueue(5, &budget).unwrap_err(), QueueFull::Total);
        assert_eq!(b.queued_now(), 1, "a refused request is not counted held");
        drop((first, second));
        assert!(b.enqueue(5, &budget).is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn idle_time_counts_from_the_last_request_end() {
        let stats = Arc::new(RouteStats::new());
        assert_eq!(stats.idle_for(Instant::now()), None);
        let guard = stats.begin();
        tokio::time::advance(Duration::from_secs(5)).await;
        drop(guard);
        tokio::time::advance(Duration::from_secs(3)).await;
        assert_eq!(stats.idle_for(Instant::now()), Some(Duration::from_secs(3)));
    }

    #[tokio::test(start_paused = true)]
    async fn average_concurrency_is_weighted_by_time() {
        let stats = Arc::new(RouteStats::new());
        stats.report(Instant::now(), WINDOW);
        // Two requests for the first 2s, one more for the next 2s, then none for 6s:
        // (2·2 + 1·2) / 10 = 0.6.
        let long = stats.begin();
        let short = stats.begin();
        tokio::time::advance(Duration::from_secs(2)).await;
        drop(short);
        tokio::time::advance(Duration::from_secs(2)).await;
        drop(long);
        tokio::time::advance(Duration::from_secs(6)).await;
        let report = stats.report(Instant::now(), WINDOW);
        assert!(
            (report.average_concurrency - 0.6).abs() < 1e-6,
            "{report:?}"
        );
        assert_eq!(report.window, WINDOW);
    }

    #[tokio::test(start_paused = true)]
    async fn the_average_forgets_what_is_older_than_the_window() {
        let stats = Arc::new(RouteStats::new());
        let busy = (0..8).map(|_| stats.begin()).collect::<Vec<_>>();
        for _ in 0..10 {
            tokio::time::advance(Duration::from_secs(1)).await;
            stats.report(Instant::now(), WINDOW);
        }
        drop(busy);
        for _ in 0..10 {
            tokio::time::advance(Duration::from_secs(1)).await;
            stats.report(Instant::now(), WINDOW);
        }
        let report = stats.report(Instant::now(), WINDOW);
        assert!(report.average_concurrency.abs() < 1e-6, "{report:?}");
    }

    #[test]
    fn a_report_survives_a_round_trip_through_json() {
        let report = StatsReport {
            in_flight: 3,
            queued: 1,
            requests_total: 10,
            idle_for: Some(Duration::from_millis(1500)),
            average_concurrency: 2.5,
            window: Duration::from_secs(60),
            concurrency_seconds: 12.5,
        };
        let json = serde_json::to_string(&report).unwrap();
        assert_eq!(serde_json::from_str::<StatsReport>(&json).unwrap(), report);
    }
}
