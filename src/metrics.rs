//! The Prometheus metrics, on one explicit [`Registry`] that `/metrics` encodes.
//!
//! Names and labels are a contract (see the README). Counters and histograms are updated on the
//! request path through handles resolved once per route ([`RouteMetrics`]), so a request pays no
//! label lookup for the common status code. Gauges (in flight, queued, desired and ready replicas)
//! are not updated per request at all: a collector reads them from the routes at scrape time.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Which way a scale event went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Direction {
    /// More replicas.
    Up,
    /// Fewer replicas.
    Down,
}

impl Direction {
    /// The label value.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Direction::Up => "up",
            Direction::Down => "down",
        }
    }
}

/// Every metric the activator exports.
#[derive(Debug, Clone)]
pub(crate) struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    duration: HistogramVec,
    rejected: IntCounterVec,
    cold_starts: IntCounterVec,
    cold_start_duration: HistogramVec,
    scale_events: IntCounterVec,
    config_errors: IntCounterVec,
    stream_idle: IntCounterVec,
    cluster: ClusterMetrics,
}

/// Several replicas: who leads, whom it hears.
#[derive(Debug, Clone)]
struct ClusterMetrics {
    leader: IntGauge,
    peers: IntGaugeVec,
    poll_errors: IntCounter,
}

/// A source of per-route gauge values, read at scrape time.
pub(crate) trait GaugeSource: Send + Sync + 'static {
    /// One entry per route.
    fn gauges(&self) -> Vec<RouteGaugeValues>;
}

/// Gauge values of one route at scrape time.
#[derive(Debug, Clone)]
pub(crate) struct RouteGaugeValues {
    /// Route name.
    pub route: String,
    /// Route namespace.
    pub namespace: String,
    /// Requests being served.
    pub in_flight: u64,
    /// Requests held.
    pub queued: u64,
    /// Replicas asked for.
    pub desired: u32,
    /// Replicas ready.
    pub ready: u32,
}

impl Metrics {
    /// Registers every metric (and the process collector) on a new registry.
    pub(crate) fn new() -> Metrics {
        let registry = Registry::new();
        let rn = ["route", "namespace"];
        let requests = IntCounterVec::new(
            Opts::new(
                "activator_requests_total",
                "Requests answered, by status code.",
            ),
            &["route", "namespace", "code"],
        )
        .expect("valid metric");
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "activator_request_duration_seconds",
                "Time from request arrival to the end of the response, including any time held.",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                10.0, 30.0, 60.0, 120.0,
            ]),
            &rn,
        )
        .expect("valid metric");
        let rejected = IntCounterVec::new(
            Opts::new(
                "activator_requests_rejected_total",
                "Requests the activator answered itself with an error, by reason.",
            ),
            &["route", "namespace", "reason"],
        )
        .expect("valid metric");
        let cold_starts = IntCounterVec::new(
            Opts::new(
                "activator_cold_starts_total",
                "Activations from zero ready replicas triggered by a request, by outcome: ready, timeout (no replica within cold_start_timeout) or failed (replicas kept failing to start).",
            ),
            &["route", "namespace", "result"],
        )
        .expect("valid metric");
        let cold_start_duration = HistogramVec::new(
            HistogramOpts::new(
                "activator_cold_start_duration_seconds",
                "Time from the first held request to the first ready replica.",
            )
            .buckets(vec![
                0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
            ]),
            &rn,
        )
        .expect("valid metric");
        let scale_events = IntCounterVec::new(
            Opts::new(
                "activator_scale_events_total",
                "Scale requests sent to the provider, by direction and result.",
            ),
            &["route", "namespace", "direction", "result"],
        )
        .expect("valid metric");
        let config_errors = IntCounterVec::new(
            Opts::new(
                "activator_config_errors_total",
                "Invalid route configurations seen (Kubernetes annotations), by annotation key.",
            ),
            &["route", "namespace", "key"],
        )
        .expect("valid metric");
        let stream_idle = IntCounterVec::new(
            Opts::new(
                "activator_stream_idle_timeouts_total",
                "Requests and tunnels closed because no byte moved either way for stream_idle_timeout.",
            ),
            &rn,
        )
        .expect("valid metric");
        let cluster = ClusterMetrics {
            leader: IntGauge::new(
                "activator_leader",
                "1 on the replica holding the Lease, which makes every scale-down and scale-out decision.",
            )
            .expect("valid metric"),
            peers: IntGaugeVec::new(
                Opts::new(
                    "activator_peers",
                    "Other activator replicas listed in the peer Service, by whether the Lease holder's last poll was answered (answering, unreachable) or this replica does not poll (unpolled).",
                ),
                &["state"],
            )
            .expect("valid metric"),
            poll_errors: IntCounter::new(
                "activator_peer_poll_errors_total",
                "Polls of another replica's report that failed or timed out.",
            )
            .expect("valid metric"),
        };
        for collector in [
            Box::new(cluster.leader.clone()) as Box<dyn Collector>,
            Box::new(cluster.peers.clone()),
            Box::new(cluster.poll_errors.clone()),
            Box::new(config_errors.clone()),
            Box::new(stream_idle.clone()),
            Box::new(requests.clone()),
            Box::new(duration.clone()),
            Box::new(rejected.clone()),
            Box::new(cold_starts.clone()),
            Box::new(cold_start_duration.clone()),
            Box::new(scale_events.clone()),
            Box::new(prometheus::process_collector::ProcessCollector::for_self()),
        ] {
            registry
                .register(collector)
                .expect("metric names are unique");
        }
        Metrics {
            registry,
            requests,
            duration,
            rejected,
            cold_starts,
            cold_start_duration,
            scale_events,
            config_errors,
            stream_idle,
            cluster,
        }
    }

    /// Whether this replica holds the Lease.
    pub(crate) fn set_leader(&self, leading: bool) {
        self.cluster.leader.set(i64::from(leading));
    }

    /// Other replicas by state.
    pub(crate) fn set_peers(&self, answering: usize, unreachable: usize, unpolled: usize) {
        for (state, count) in [
            ("answering", answering),
            ("unreachable", unreachable),
            ("unpolled", unpolled),
        ] {
            self.cluster
                .peers
                .with_label_values(&[state])
                .set(count as i64);
        }
    }

    /// Counts a failed poll of another replica.
    pub(crate) fn peer_poll_error(&self) {
        self.cluster.poll_errors.inc();
    }

    /// Registers the per-route gauges, read from `source` at each scrape.
    pub(crate) fn register_gauges(&self, source: Arc<dyn GaugeSource>) {
        let gauges = RouteGauges::new(source);
        self.registry
            .register(Box::new(gauges))
            .expect("gauges registered once");
    }

    /// Handles for one route's metrics.
    pub(crate) fn route(&self, name: &str, namespace: &str) -> RouteMetrics {
        RouteMetrics {
            ok: self.requests.with_label_values(&[name, namespace, "200"]),
            duration: self.duration.with_label_values(&[name, namespace]),
            cold_starts: self
                .cold_starts
                .with_label_values(&[name, namespace, "ready"]),
            cold_start_duration: self
                .cold_start_duration
                .with_label_values(&[name, namespace]),
            name: name.to_owned(),
            namespace: namespace.to_owned(),
            other_codes: Arc::default(),
            metrics: self.clone(),
        }
    }

    /// Counts a request refused before it matched a route.
    pub(crate) fn unrouted(&self, code: u16, reason: &str) {
        self.requests
            .with_label_values(&["", "", code_label(code).as_ref()])
            .inc();
        self.rejected.with_label_values(&["", "", reason]).inc();
    }

    /// Counts an invalid configuration of route `route` in `namespace` at `key`.
    pub(crate) fn config_error(&self, route: &str, namespace: &str, key: &str) {
        self.config_errors
            .with_label_values(&[route, namespace, key])
            .inc();
    }

    /// The Prometheus text exposition of every metric.
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(16 * 1024);
        let families = self.registry.gather();
        // Encoding into a Vec cannot fail.
        let _ = TextEncoder::new().encode(&families, &mut out);
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

fn code_label(code: u16) -> std::borrow::Cow<'static, str> {
    match code {
        200 => "200".into(),
        404 => "404".into(),
        502 => "502".into(),
        503 => "503".into(),
        504 => "504".into(),
        other => other.to_string().into(),
    }
}

/// One route's metric handles.
#[derive(Debug, Clone)]
pub(crate) struct RouteMetrics {
    name: String,
    namespace: String,
    ok: IntCounter,
    duration: Histogram,
    cold_starts: IntCounter,
    cold_start_duration: Histogram,
    /// Status codes other than 200 this route answered, so their series can be removed.
    other_codes: Arc<Mutex<BTreeSet<u16>>>,
    metrics: Metrics,
}

/// Every `reason` label value a route can have.
const REASONS: [&str; 10] = [
    "missing_host",
    "starting",
    "no_route",
    "queue_full",
    "cold_start_timeout",
    "replica_failed",
    "upstream",
    "upstream_timeout",
    "shutting_down",
    "route_removed",
];

impl RouteMetrics {
    /// Counts a response and its duration.
    pub(crate) fn response(&self, code: u16, elapsed: Duration) {
        if code == 200 {
            self.ok.inc();
        } else {
            self.other_codes
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(code);
            self.metrics
                .requests
                .with_label_values(&[&self.name, &self.namespace, code_label(code).as_ref()])
                .inc();
        }
        self.duration.observe(elapsed.as_secs_f64());
    }

    /// Counts a request the activator refused itself.
    pub(crate) fn rejected(&self, reason: &str) {
        self.metrics
            .rejected
            .with_label_values(&[&self.name, &self.namespace, reason])
            .inc();
    }

    /// Counts a cold start that took `elapsed` from first held request to first ready replica.
    pub(crate) fn cold_start(&self, elapsed: Duration) {
        self.cold_starts.inc();
        self.cold_start_duration.observe(elapsed.as_secs_f64());
    }

    /// Counts an activation that ended without a ready replica: `timeout` or `failed`.
    pub(crate) fn cold_start_failed(&self, result: &str) {
        self.metrics
            .cold_starts
            .with_label_values(&[&self.name, &self.namespace, result])
            .inc();
    }

    /// Counts a request or tunnel closed because it stalled.
    pub(crate) fn stream_idle_timeout(&self) {
        self.metrics
            .stream_idle
            .with_label_values(&[&self.name, &self.namespace])
            .inc();
    }

    /// Counts one attempt to scale (`result`: `success`, `error` or `conflict`).
    pub(crate) fn scale_event(&self, direction: Direction, result: &str) {
        self.metrics
            .scale_events
            .with_label_values(&[&self.name, &self.namespace, direction.as_str(), result])
            .inc();
    }

    /// Drops this route's series (the route is gone).
    pub(crate) fn remove(&self) {
        let m = &self.metrics;
        let (name, ns) = (self.name.as_str(), self.namespace.as_str());
        let _ = m.duration.remove_label_values(&[name, ns]);
        for result in ["ready", "timeout", "failed"] {
            let _ = m.cold_starts.remove_label_values(&[name, ns, result]);
        }
        let _ = m.cold_start_duration.remove_label_values(&[name, ns]);
        let _ = m.stream_idle.remove_label_values(&[name, ns]);
        let codes = self
            .other_codes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        for code in codes.into_iter().chain([200]) {
            let _ = m
                .requests
                .remove_label_values(&[name, ns, code_label(code).as_ref()]);
        }
        for reason in REASONS {
            let _ = m.rejected.remove_label_values(&[name, ns, reason]);
        }
        for direction in [Direction::Up, Direction::Down] {
            for result in ["success", "error", "conflict"] {
                let _ = m
                    .scale_events
                    .remove_label_values(&[name, ns, direction.as_str(), result]);
            }
        }
    }
}

/// The gauges, filled from a [`GaugeSource`] at each scrape.
struct RouteGauges {
    source: Arc<dyn GaugeSource>,
    in_flight: IntGaugeVec,
    queued: IntGaugeVec,
    desired: IntGaugeVec,
    ready: IntGaugeVec,
    descs: Vec<Desc>,
}

impl RouteGauges {
    fn new(source: Arc<dyn GaugeSource>) -> RouteGauges {
        let rn = ["route", "namespace"];
        let gauge = |name: &str, help: &str| {
            IntGaugeVec::new(Opts::new(name, help), &rn).expect("valid metric")
        };
        let in_flight = gauge(
            "activator_requests_in_flight",
            "Requests being served by a replica.",
        );
        let queued = gauge(
            "activator_requests_queued",
            "Requests held waiting for a ready replica.",
        );
        let desired = gauge(
            "activator_desired_replicas",
            "Replicas the activator asked the provider for.",
        );
        let ready = gauge(
            "activator_ready_replicas",
            "Replicas ready to take requests.",
        );
        let descs = [&in_flight, &queued, &desired, &ready]
            .iter()
            .flat_map(|g| g.desc().into_iter().cloned())
            .collect();
        RouteGauges {
            source,
            in_flight,
            queued,
            desired,
            ready,
            descs,
        }
    }
}

impl Collector for RouteGauges {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let all = [&self.in_flight, &self.queued, &self.desired, &self.ready];
        for gauge in all {
            gauge.reset();
        }
        for v in self.source.gauges() {
            let labels = [v.route.as_str(), v.namespace.as_str()];
            self.in_flight
                .with_label_values(&labels)
                .set(v.in_flight as i64);
            self.queued.with_label_values(&labels).set(v.queued as i64);
            self.desired
                .with_label_values(&labels)
                .set(i64::from(v.desired));
            self.ready
                .with_label_values(&labels)
                .set(i64::from(v.ready));
        }
        all.iter().flat_map(|g| g.collect()).collect()
    }
}
