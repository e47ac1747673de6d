//! Several activator replicas as one (Kubernetes mode): one of them, the holder of a Lease,
//! makes every scale-down and scale-out decision from the sum of every replica's counts.
//!
//! - [`election`]: the Lease, as client-go's leader election holds it; the replica's [`Role`].
//! - [`members`]: the other replicas, from the peer Service's EndpointSlices.
//! - [`peer`]: what replicas say to each other over their admin listeners, and the client.
//! - [`poll`]: the holder's polls of the others, and their last answers.
//! - [`turn`]: who decides at a scaler tick, and the view it decides from, with fresh clocks for
//!   a new decider.
//! - [`view`]: the pure sum of reports.
//! - [`scale_down`]: a scale to zero across replicas: every replica closes the route before the
//!   zero is written, so no request anywhere meets a replica about to stop.
//!
//! The holder polls every other replica every poll interval, each poll bounded by the poll
//! timeout, in a task of its own: the scaler never waits on a peer, it reads the last answers.
//! Any replica still scales a route up from zero for the requests it holds (through the
//! route's activation, whose write carries a resourceVersion precondition: one write wins per
//! burst). Alone — no peer Service, or nobody else in it — a replica decides by itself, as a
//! single activator always has.
//!
//! What this module does not do: decide (that is [`crate::scaler`]'s pure `decide`), or hold and
//! release requests (that is [`crate::activation`]).

pub(crate) mod election;
pub(crate) mod members;
pub(crate) mod peer;
mod poll;
pub(crate) mod scale_down;
pub(crate) mod turn;
pub(crate) mod view;

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, OnceLock};

use tokio::sync::watch;
use tokio::time::Instant;

use crate::config::ClusterSettings;
use crate::metrics::Metrics;
use crate::route::{ReplicaShare, Route, SharedStatus};
use crate::routing::RouteTable;
use crate::stats::StatsReport;
use election::{Election, Role};
use members::{Me, Members};
use peer::{PeerClient, PeerReport};
use poll::Answers;
use turn::TurnState;
pub(crate) use turn::{Tally, Turn};

/// This replica among the others.
pub(crate) struct Cluster {
    settings: ClusterSettings,
    client: kube::Client,
    metrics: Metrics,
    role: watch::Sender<Role>,
    members: watch::Sender<Members>,
    peers: OnceLock<PeerClient>,
    /// The last answer of each other replica, this term; short sections only.
    answers: Mutex<Answers>,
    /// Whether and since when this replica decides; short sections only.
    turn: Mutex<TurnState>,
    /// The latest activity any replica reported per route, this turn (so a replica leaving the
    /// slices takes its recent traffic's weight with it only once that traffic is old).
    activity: Mutex<HashMap<String, Instant>>,
    /// Routes a scale to zero is under way for.
    scaling_down: Mutex<HashSet<String>>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("identity", &self.settings.identity)
            .finish_non_exhaustive()
    }
}

impl Cluster {
    /// A replica configured by `settings`, reading the cluster through `client`.
    pub(crate) fn new(
        client: kube::Client,
        settings: ClusterSettings,
        metrics: Metrics,
    ) -> Arc<Cluster> {
        Arc::new(Cluster {
            settings,
            client,
            metrics,
            role: watch::Sender::new(Role::Follower(None)),
            members: watch::Sender::new(Members::default()),
            peers: OnceLock::new(),
            answers: Mutex::new(Answers::default()),
            turn: Mutex::new(TurnState::Starting),
            activity: Mutex::new(HashMap::new()),
            scaling_down: Mutex::new(HashSet::new()),
        })
    }

    /// This replica's identity.
    pub(crate) fn identity(&self) -> &str {
        &self.settings.identity
    }

    /// Runs the election, the members' watch and the holder's polls, with this replica's admin
    /// listener at `admin`. The Lease is handed back once `leaving` completes (shutdown began);
    /// the rest runs until `stopped`.
    pub(crate) async fn run(
        self: Arc<Self>,
        admin: SocketAddr,
        leaving: impl Future<Output = ()> + Send + 'static,
        stopped: impl Future<Output = ()> + Send + 'static,
    ) {
        let _ = self.peers.set(PeerClient::new(
            self.settings.poll_timeout,
            Some(admin.ip()),
        ));
        let me = Me {
            identity: self.settings.identity.clone(),
            admin,
        };
        let election = Election::new(self.client.clone(), &self.settings);
        let this = Arc::clone(&self);
        let elect = tokio::spawn(async move { election.run(&this.role, leaving).await });
        let this = Arc::clone(&self);
        let (stop, stop_rx) = watch::channel(false);
        let wait = |mut rx: watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|s| *s).await;
        };
        let watch_members = tokio::spawn(members::watch(
            self.client.clone(),
            self.settings.peer_service.clone(),
            me,
            this.members.clone(),
            wait(stop_rx.clone()),
        ));
        let this = Arc::clone(&self);
        let poll = tokio::spawn(this.poll(wait(stop_rx.clone())));
        let mut roles = self.role.subscribe();
        let metrics = self.metrics.clone();
        let mut stop_roles = stop_rx;
        let show_role = tokio::spawn(async move {
            loop {
                let leading = matches!(*roles.borrow_and_update(), Role::Leader { .. });
                metrics.set_leader(leading);
                tokio::select! {
                    changed = roles.changed() => if changed.is_err() { return },
                    _ = stop_roles.wait_for(|s| *s) => return,
                }
            }
        });
        stopped.await;
        let _ = stop.send(true);
        let _ = tokio::join!(watch_members, poll, show_role);
        // The election ends once `leaving` completed, which precedes `stopped`.
        let _ = elect.await;
    }

    /// Whether this replica still leads term `term` (or decides alone, for term 0).
    pub(crate) fn still_deciding(&self, term: u64) -> bool {
        match &*self.role.borrow() {
            Role::Leader { term: now, .. } => *now == term,
            Role::Follower(_) => term == 0 && self.members.borrow().others.is_empty(),
        }
    }

    /// The other replicas now.
    pub(crate) fn members(&self) -> Members {
        self.members.borrow().clone()
    }

    /// Whether `ip` is another listed replica's (who may close and open routes here).
    pub(crate) fn is_peer(&self, ip: IpAddr) -> bool {
        self.members.borrow().lists(ip)
    }

    /// The client peers are asked with (once running).
    pub(crate) fn peer_client(&self) -> Option<&PeerClient> {
        self.peers.get()
    }

    /// The settings.
    pub(crate) fn settings(&self) -> &ClusterSettings {
        &self.settings
    }

    /// This replica's report of every route, as peers poll it.
    pub(crate) fn report(&self, table: &RouteTable, now: Instant) -> PeerReport {
        PeerReport {
            identity: self.settings.identity.clone(),
            routes: table
                .routes()
                .iter()
                .map(|route| (route.id().to_owned(), local_report(route, now)))
                .collect(),
        }
    }

    /// Starts a scale to zero of `route` across replicas, decided from `tally`, unless one is
    /// under way.
    pub(crate) fn scale_to_zero(self: &Arc<Self>, route: &Arc<Route>, tally: &Tally) {
        let (term, since) = (tally.term, tally.since);
        let id = route.id().to_owned();
        if !self
            .scaling_down
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id.clone())
        {
            return;
        }
        let this = Arc::clone(self);
        let route = Arc::clone(route);
        tokio::spawn(async move {
            scale_down::across(&this, &route, term, since).await;
            this.scaling_down
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&id);
        });
    }

    /// The route across replicas for `/routes`, on the replica that decides with others.
    pub(crate) fn status(&self, route: &Route, now: Instant) -> Option<SharedStatus> {
        let Turn::Decide(tally) = self.peek_turn() else {
            return None;
        };
        if !tally.coordinated {
            return None;
        }
        let local = local_report(route, now);
        let summed = view::sum(&local, tally.parts(route.id()));
        let total = summed.report.average_concurrency;
        let share = |r: &StatsReport| (total > 0.0).then(|| r.average_concurrency / total);
        let mut replicas = vec![ReplicaShare {
            identity: self.settings.identity.clone(),
            state: "self".into(),
            in_flight: local.in_flight,
            queued: local.queued,
            share: share(&local),
        }];
        for (member, answer) in &tally.parts {
            let fresh = answer.as_ref().is_some_and(|a| a.fresh);
            let report = answer
                .as_ref()
                .and_then(|a| a.report.as_ref())
                .and_then(|r| r.routes.get(route.id()));
            replicas.push(ReplicaShare {
                identity: member.identity.clone(),
                state: if fresh { "answering" } else { "unreachable" }.into(),
                in_flight: report.map_or(0, |r| r.in_flight),
                queued: report.map_or(0, |r| r.queued),
                share: report.and_then(share),
            });
        }
        Some(SharedStatus {
            in_flight: summed.report.in_flight,
            queued: summed.report.queued,
            requests_total: summed.report.requests_total,
            idle_seconds: summed.report.idle_for.map(|d| d.as_secs_f64()),
            average_concurrency: total,
            replicas,
        })
    }
}

/// Route `route`'s report on this replica, as peers and `/routes` read it (no sample recorded).
pub(crate) fn local_report(route: &Route, now: Instant) -> StatsReport {
    route
        .stats()
        .peek(now, route.spec().settings.scaling.window)
}
