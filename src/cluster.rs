//! Several activator replicas as one (Kubernetes mode): one of them, the holder of a Lease,
//! makes every scale-down and scale-out decision from the sum of every replica's counts.
//!
//! - [`election`]: the Lease, as client-go's leader election holds it; the replica's [`Role`].
//! - [`members`]: the other replicas, from the peer Service's EndpointSlices.
//! - [`peer`]: what replicas say to each other over their admin listeners, and the client.
//! - [`view`]: the pure sum of reports the scaler decides from, with fresh clocks for a new
//!   decider.
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
pub(crate) mod scale_down;
pub(crate) mod view;

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use futures_util::future::join_all;
use tokio::sync::watch;
use tokio::time::{Instant, MissedTickBehavior};

use crate::config::ClusterSettings;
use crate::metrics::Metrics;
use crate::route::{ReplicaShare, Route, SharedStatus};
use crate::routing::RouteTable;
use crate::stats::StatsReport;
use election::{Election, Role};
use members::{Me, Member, Members};
use peer::{PeerClient, PeerReport};
use view::Part;

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

#[derive(Debug, Default)]
struct Answers {
    /// The term the answers belong to.
    term: u64,
    by_peer: HashMap<SocketAddr, Answer>,
}

#[derive(Debug, Clone)]
struct Answer {
    /// The last report received, if any.
    report: Option<Arc<PeerReport>>,
    /// The latest poll was answered.
    fresh: bool,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum TurnState {
    /// The replicas are not known yet.
    Starting,
    Following,
    /// Deciding; since when, unless from the start alone.
    Deciding(Option<Instant>),
}

/// What this replica may do on a scaler tick.
#[derive(Debug)]
pub(crate) enum Turn {
    /// Another replica decides (or none is known yet): make no scale-down or scale-out decision.
    Follow,
    /// Decide, from this view.
    Decide(Tally),
}

/// What the deciding replica knows of the others at one tick.
#[derive(Debug)]
pub(crate) struct Tally {
    parts: Vec<(Member, Option<Answer>)>,
    /// Since when this replica decides (clocks start there), unless from the start alone.
    since: Option<Instant>,
    /// Other replicas are listed, so a scale to zero must close the route on them first.
    coordinated: bool,
    term: u64,
}

/// A route as the deciding replica sees it.
#[derive(Debug)]
pub(crate) struct View {
    /// The route summed over replicas, with fresh clocks applied.
    pub(crate) report: StatsReport,
    /// Replicas without a fresh answer (decreases wait for them).
    pub(crate) missing: usize,
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

    /// Polls the other replicas every poll interval while this one holds the Lease.
    async fn poll(self: Arc<Self>, stopped: impl Future<Output = ()>) {
        let mut interval = tokio::time::interval(self.settings.poll_interval);
        interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
        tokio::pin!(stopped);
        loop {
            tokio::select! {
                _ = interval.tick() => {}
                () = &mut stopped => return,
            }
            let role = self.role.borrow().clone();
            let members = self.members.borrow().clone();
            let Role::Leader { term, .. } = role else {
                self.metrics.set_peers(0, 0, members.others.len());
                continue;
            };
            let Some(client) = self.peers.get() else {
                continue;
            };
            let polls = members
                .others
                .iter()
                .map(|member| async move { (member.admin, client.report(member.admin).await) });
            let results = join_all(polls).await;
            let mut answers = self.answers();
            if answers.term != term {
                *answers = Answers {
                    term,
                    by_peer: HashMap::new(),
                };
            }
            // A replica's last answer ages out only when it leaves the slices.
            answers
                .by_peer
                .retain(|addr, _| members.others.iter().any(|m| m.admin == *addr));
            let (mut answering, mut unreachable) = (0, 0);
            for (addr, result) in results {
                let entry = answers.by_peer.entry(addr).or_insert(Answer {
                    report: None,
                    fresh: false,
                });
                match result {
                    Ok(report) => {
                        answering += 1;
                        entry.report = Some(Arc::new(report));
                        entry.fresh = true;
                    }
                    Err(error) => {
                        unreachable += 1;
                        entry.fresh = false;
                        self.metrics.peer_poll_error();
                        tracing::debug!(peer = %addr, %error, "peer poll failed; counting it as busy");
                    }
                }
            }
            drop(answers);
            self.metrics.set_peers(answering, unreachable, 0);
        }
    }

    fn answers(&self) -> MutexGuard<'_, Answers> {
        self.answers.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// What this replica may decide at `now` (called once per scaler tick).
    pub(crate) fn turn(&self, now: Instant) -> Turn {
        let members = self.members.borrow().clone();
        let role = self.role.borrow().clone();
        let alone = members.others.is_empty();
        let deciding = members.known && (alone || matches!(role, Role::Leader { .. }));
        let mut turn = self.turn.lock().unwrap_or_else(|e| e.into_inner());
        let since = match (*turn, deciding) {
            (_, false) => {
                if *turn != TurnState::Starting || members.known {
                    *turn = TurnState::Following;
                }
                return Turn::Follow;
            }
            (TurnState::Starting, true) if alone => None,
            (TurnState::Starting | TurnState::Following, true) => Some(now),
            (TurnState::Deciding(since), true) => since,
        };
        // A Lease holder's clocks start no earlier than its term.
        let since = match role {
            Role::Leader {
                since: term_began, ..
            } if !alone => Some(since.map_or(term_began, |s| s.max(term_began))),
            _ => since,
        };
        if *turn != TurnState::Deciding(since) {
            self.activity
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clear();
            if let Some(since) = since {
                tracing::info!(
                    alone,
                    fresh_for_ms = now.saturating_duration_since(since).as_millis() as u64,
                    "deciding scale-downs and scale-outs; idle clocks start now"
                );
            }
        }
        *turn = TurnState::Deciding(since);
        drop(turn);
        let (term, parts) = {
            let answers = self.answers();
            let term = match role {
                Role::Leader { term, .. } => term,
                Role::Follower(_) => 0,
            };
            let parts = members
                .others
                .iter()
                .map(|member| {
                    let answer = (answers.term == term)
                        .then(|| answers.by_peer.get(&member.admin).cloned())
                        .flatten();
                    (member.clone(), answer)
                })
                .collect();
            (term, parts)
        };
        Turn::Decide(Tally {
            parts,
            since,
            coordinated: !alone,
            term,
        })
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

    /// The turn as it stands, without moving it (for status pages).
    fn peek_turn(&self) -> Turn {
        let state = *self.turn.lock().unwrap_or_else(|e| e.into_inner());
        match state {
            TurnState::Deciding(_) => self.turn(Instant::now()),
            TurnState::Starting | TurnState::Following => Turn::Follow,
        }
    }

    /// `report` (summed over replicas) with fresh clocks: idle at most since this replica began
    /// deciding (`since`), and since the latest activity any replica reported this turn (so a
    /// replica that leaves does not take its recent traffic out of the sum with it).
    pub(crate) fn fresh_clocks(
        &self,
        id: &str,
        mut report: StatsReport,
        since: Option<Instant>,
        now: Instant,
    ) -> StatsReport {
        if let Some(latest) = self.remember(id, report.idle_for, now) {
            view::cap_idle(&mut report, latest);
        }
        if let Some(since) = since {
            view::cap_idle(&mut report, now.saturating_duration_since(since));
        }
        report
    }

    /// Notes `idle_for` as route `id`'s latest activity at `now`, and returns the time since the
    /// latest activity noted this turn.
    fn remember(&self, id: &str, idle_for: Option<Duration>, now: Instant) -> Option<Duration> {
        let mut activity = self.activity.lock().unwrap_or_else(|e| e.into_inner());
        let seen = idle_for.and_then(|idle| now.checked_sub(idle));
        let latest = match (activity.get(id).copied(), seen) {
            (Some(a), Some(b)) => a.max(b),
            (a, b) => a.or(b)?,
        };
        activity.insert(id.to_owned(), latest);
        Some(now.saturating_duration_since(latest))
    }
}

/// Route `route`'s report on this replica, as peers and `/routes` read it (no sample recorded).
pub(crate) fn local_report(route: &Route, now: Instant) -> StatsReport {
    route
        .stats()
        .peek(now, route.spec().settings.scaling.window)
}

impl Tally {
    fn parts<'a>(&'a self, id: &'a str) -> impl Iterator<Item = Part<'a>> + 'a {
        self.parts.iter().map(move |(_, answer)| {
            let report = answer
                .as_ref()
                .and_then(|a| a.report.as_deref())
                .map(|r| r.routes.get(id));
            match answer {
                Some(a) if a.fresh => Part::Answered(report.flatten()),
                _ => Part::Missing(report.flatten()),
            }
        })
    }

    /// Whether other replicas must close a route before it goes to zero.
    pub(crate) fn coordinated(&self) -> bool {
        self.coordinated
    }

    /// Route `id` summed over replicas from this replica's `local` report, with fresh clocks.
    pub(crate) fn view(
        &self,
        cluster: &Cluster,
        id: &str,
        local: &StatsReport,
        now: Instant,
    ) -> View {
        let summed = view::sum(local, self.parts(id));
        View {
            report: cluster.fresh_clocks(id, summed.report, self.since, now),
            missing: summed.missing,
        }
    }

    /// The time since replicas were last added, counted at most from when deciding began.
    pub(crate) fn since_scale_up(
        &self,
        since_scale_up: Option<Duration>,
        now: Instant,
    ) -> Option<Duration> {
        view::since(
            since_scale_up,
            self.since.map(|s| now.saturating_duration_since(s)),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ClusterSettings;

    /// A replica whose role and peers the test sets by hand (its client is never used).
    fn cluster() -> Arc<Cluster> {
        let config = kube::Config::new("http://127.0.0.1:9".parse().expect("a URL"));
        let client = kube::Client::try_from(config).expect("a client");
        Cluster::new(client, ClusterSettings::default(), Metrics::new())
    }

    fn peers(cluster: &Cluster, count: usize) {
        let others = (0..count)
            .map(|n| Member {
                identity: format!("peer-{n}"),
                admin: SocketAddr::from(([10, 0, 0, n as u8 + 2], 9090)),
                terminating: false,
            })
            .collect();
        cluster.members.send_replace(Members {
            others: Arc::new(others),
            known: true,
        });
    }

    fn idle_report(idle: Option<Duration>) -> StatsReport {
        StatsReport {
            in_flight: 0,
            queued: 0,
            requests_total: 0,
            idle_for: idle,
            average_concurrency: 0.0,
            window: Duration::from_secs(60),
            concurrency_seconds: 0.0,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn nobody_decides_until_the_replicas_are_known_and_alone_one_decides_as_before() {
        let cluster = cluster();
        assert!(matches!(cluster.turn(Instant::now()), Turn::Follow));
        peers(&cluster, 0);
        let Turn::Decide(tally) = cluster.turn(Instant::now()) else {
            panic!("alone, a replica decides");
        };
        assert!(!tally.coordinated());
        // Alone from the start: the idle clock is the route's own, as a single activator's.
        let view = tally.view(
            &cluster,
            "default/web",
            &idle_report(Some(Duration::from_secs(600))),
            Instant::now(),
        );
        assert_eq!(view.report.idle_for, Some(Duration::from_secs(600)));
    }

    #[tokio::test(start_paused = true)]
    async fn with_peers_only_the_lease_holder_decides_and_its_clocks_start_with_its_term() {
        let cluster = cluster();
        peers(&cluster, 2);
        assert!(matches!(cluster.turn(Instant::now()), Turn::Follow));
        tokio::time::advance(Duration::from_secs(300)).await;
        let took_over = Instant::now();
        cluster.role.send_replace(Role::Leader {
            term: 1,
            since: took_over,
        });
        assert!(matches!(cluster.turn(took_over), Turn::Decide(_)));
        tokio::time::advance(Duration::from_secs(4)).await;
        let Turn::Decide(tally) = cluster.turn(Instant::now()) else {
            panic!("the holder decides");
        };
        assert!(tally.coordinated());
        // Every peer answered that the route has been idle for ten minutes...
        let idle = idle_report(Some(Duration::from_secs(600)));
        let answer = Answer {
            report: Some(Arc::new(PeerReport {
                identity: "peer".into(),
                routes: [("default/web".to_owned(), idle.clone())].into(),
            })),
            fresh: true,
        };
        let tally = Tally {
            parts: tally
                .parts
                .into_iter()
                .map(|(member, _)| (member, Some(answer.clone())))
                .collect(),
            ..tally
        };
        let view = tally.view(&cluster, "default/web", &idle, Instant::now());
        // ...but this replica has decided for 4s only.
        assert_eq!(view.report.idle_for, Some(Duration::from_secs(4)));
        assert_eq!(view.missing, 0);
        assert_eq!(
            tally.since_scale_up(None, Instant::now()),
            Some(Duration::from_secs(4))
        );
        // A deposed holder decides nothing.
        cluster
            .role
            .send_replace(Role::Follower(Some("peer-0".into())));
        assert!(matches!(cluster.turn(Instant::now()), Turn::Follow));
        assert!(!cluster.still_deciding(1));
    }

    #[tokio::test(start_paused = true)]
    async fn a_peer_leaving_takes_its_recent_traffic_out_of_the_sum_only_once_it_is_old() {
        let cluster = cluster();
        peers(&cluster, 1);
        cluster.role.send_replace(Role::Leader {
            term: 1,
            since: Instant::now(),
        });
        assert!(matches!(cluster.turn(Instant::now()), Turn::Decide(_)));
        tokio::time::advance(Duration::from_secs(3600)).await;
        let Turn::Decide(tally) = cluster.turn(Instant::now()) else {
            panic!("the holder decides");
        };
        let busy = idle_report(Some(Duration::from_secs(1)));
        let answered = Tally {
            parts: vec![(
                tally.parts[0].0.clone(),
                Some(Answer {
                    report: Some(Arc::new(PeerReport {
                        identity: "peer-0".into(),
                        routes: [("default/web".to_owned(), busy)].into(),
                    })),
                    fresh: true,
                }),
            )],
            ..tally
        };
        let quiet = idle_report(Some(Duration::from_secs(900)));
        let view = answered.view(&cluster, "default/web", &quiet, Instant::now());
        assert_eq!(view.report.idle_for, Some(Duration::from_secs(1)));
        // The peer leaves the slices; its last request still counts from when it was.
        peers(&cluster, 0);
        tokio::time::advance(Duration::from_secs(5)).await;
        let Turn::Decide(alone) = cluster.turn(Instant::now()) else {
            panic!("the holder decides");
        };
        let view = alone.view(&cluster, "default/web", &quiet, Instant::now());
        assert_eq!(view.report.idle_for, Some(Duration::from_secs(6)));
    }
}
