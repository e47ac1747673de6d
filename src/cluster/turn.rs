//! Who decides, and from what: a replica decides alone, or as the Lease holder from the sum of
//! every replica's answers, with clocks that start when it began deciding; otherwise it follows.

use std::time::Duration;

use tokio::time::Instant;

use super::Cluster;
use super::election::Role;
use super::members::Member;
use super::poll::Answer;
use super::view::{self, Part};
use crate::stats::StatsReport;

/// Where a replica stands as a decider.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum TurnState {
    /// The replicas are not known yet.
    Starting,
    /// Another replica decides.
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
    pub(super) parts: Vec<(Member, Option<Answer>)>,
    /// Since when this replica decides (clocks start there), unless from the start alone.
    pub(super) since: Option<Instant>,
    /// Other replicas are listed, so a scale to zero must close the route on them first.
    pub(super) coordinated: bool,
    pub(super) term: u64,
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

    /// The turn as it stands, without moving it (for status pages).
    pub(super) fn peek_turn(&self) -> Turn {
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

impl Tally {
    pub(super) fn parts<'a>(&'a self, id: &'a str) -> impl Iterator<Item = Part<'a>> + 'a {
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
    use std::net::SocketAddr;
    use std::sync::Arc;

    use super::super::members::Members;
    use super::super::peer::PeerReport;
    use super::*;
    use crate::config::ClusterSettings;
    use crate::metrics::Metrics;

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
