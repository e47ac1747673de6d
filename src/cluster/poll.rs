//! The Lease holder's polls of the other replicas: every poll interval, all at once, each
//! bounded by the poll timeout, in a task of their own; the answers wait here for the scaler.
//! A replica's last answer ages out only when it leaves the slices.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, MutexGuard};

use futures_util::future::join_all;
use tokio::time::MissedTickBehavior;

use super::Cluster;
use super::election::Role;
use super::peer::PeerReport;

/// The other replicas' answers in one Lease term.
#[derive(Debug, Default)]
pub(super) struct Answers {
    /// The term the answers belong to.
    pub(super) term: u64,
    /// By the replica's admin address.
    pub(super) by_peer: HashMap<SocketAddr, Answer>,
}

/// One replica's answers.
#[derive(Debug, Clone)]
pub(super) struct Answer {
    /// The last report received, if any.
    pub(super) report: Option<Arc<PeerReport>>,
    /// The latest poll was answered.
    pub(super) fresh: bool,
}

impl Cluster {
    /// Polls the other replicas every poll interval while this one holds the Lease.
    pub(super) async fn poll(self: Arc<Self>, stopped: impl Future<Output = ()>) {
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

    pub(super) fn answers(&self) -> MutexGuard<'_, Answers> {
        self.answers.lock().unwrap_or_else(|e| e.into_inner())
    }
}
