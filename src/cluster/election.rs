//! Leader election on a `coordination.k8s.io/v1` Lease, as client-go's `leaderelection` runs it:
//! read the Lease, create it when missing, take it when it is free or expired or already ours,
//! and write only from the resourceVersion read, so that of two replicas writing at once exactly
//! one wins (the other gets 409).
//!
//! - Expiry is judged by the local time at which this replica *observed* the current record, not
//!   by the record's `renewTime`, so clocks that disagree between nodes do not matter (only their
//!   rates). Other replicas watch the Lease rather than read it every retry period, so they see
//!   each renewal as it happens: a holder that dies is replaced one lease duration after its last
//!   renewal (client-go's reads every 2–4.4s add up to that much more).
//! - The holder renews every retry period, and stops deciding when it could not renew for the
//!   renew deadline, counted from when its last successful renewal was *sent*: others observe that
//!   renewal no earlier than it was sent, so they cannot take the Lease before a whole lease
//!   duration after it, which is later than the holder stopped.
//! - On shutdown the holder hands the Lease back (empty holder, duration 1s), so another replica
//!   takes over at once.
//!
//! The judgement of an observed record is [`standing`], a pure function; [`Election::run`] does
//! the I/O. The role it publishes is read by the scaler on every tick.

use std::future::Future;
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ObjectMeta, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::config::ClusterSettings;

/// What this replica is in the election.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Role {
    /// Another replica holds the Lease (`Some`), or nobody does as far as this one knows.
    Follower(Option<String>),
    /// This replica holds the Lease: term `term` began at `since`.
    Leader {
        /// Counts the terms this replica has led.
        term: u64,
        /// When this term began.
        since: Instant,
    },
}

/// The Lease record as last observed, and when (local time) it last changed.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Observed {
    spec: LeaseSpec,
    lease: Lease,
    at: Instant,
}

/// What an observed record means to one replica.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Standing {
    /// Nobody holds it, or the holder let it expire: take it.
    Free,
    /// This replica holds it (it may renew).
    Mine,
    /// Another replica holds it until `until` (local time) unless it renews.
    Held {
        /// The holder's identity.
        by: String,
        /// When it expires if not renewed.
        until: Instant,
    },
}

/// Judges the record observed last, for replica `me` at `now`.
pub(crate) fn standing(observed: Option<&Observed>, me: &str, now: Instant) -> Standing {
    let Some(observed) = observed else {
        return Standing::Free;
    };
    let holder = observed.spec.holder_identity.as_deref().unwrap_or_default();
    if holder.is_empty() {
        return Standing::Free;
    }
    if holder == me {
        return Standing::Mine;
    }
    let seconds = observed.spec.lease_duration_seconds.unwrap_or(0).max(0);
    let until = observed.at + Duration::from_secs(seconds as u64);
    if until <= now {
        Standing::Free
    } else {
        Standing::Held {
            by: holder.to_owned(),
            until,
        }
    }
}

/// One replica's part in the election.
pub(crate) struct Election {
    api: Api<Lease>,
    name: String,
    identity: String,
    lease_duration: Duration,
    renew_deadline: Duration,
    retry_period: Duration,
    observed: Option<Observed>,
    /// When the last successful renewal (or acquisition) was sent, while leading.
    renewed: Option<Instant>,
    term: u64,
}

/// Why an attempt did not end leading.
#[derive(Debug, thiserror::Error)]
enum AttemptError {
    #[error("held by {0}")]
    Held(String),
    #[error("another replica wrote the Lease first")]
    Conflict,
    #[error("{0}")]
    Api(#[source] kube::Error),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
}

impl Election {
    /// An election over `settings.lease`, through `client`.
    pub(crate) fn new(client: kube::Client, settings: &ClusterSettings) -> Election {
        Election {
            api: Api::namespaced(client, &settings.lease.namespace),
            name: settings.lease.name.clone(),
            identity: settings.identity.clone(),
            lease_duration: settings.lease_duration,
            renew_deadline: settings.renew_deadline,
            retry_period: settings.retry_period,
            observed: None,
            renewed: None,
            term: 0,
        }
    }

    /// Competes for the Lease until `leaving` completes (then hands it back if held), publishing
    /// this replica's role through `role`.
    pub(crate) async fn run(
        mut self,
        role: &watch::Sender<Role>,
        leaving: impl Future<Output = ()>,
    ) {
        let watch = watcher(
            self.api.clone(),
            watcher::Config::default().fields(&format!("metadata.name={}", self.name)),
        )
        .default_backoff();
        tokio::pin!(watch);
        tokio::pin!(leaving);
        // The next attempt; at once to begin with.
        let mut next = Instant::now();
        let mut listed = false;
        let mut watching = true;
        let mut complained = false;
        loop {
            let step_down = self.renewed.map(|sent| sent + self.renew_deadline);
            tokio::select! {
                // Leaving and stepping down come before anything else that is ready.
                biased;
                () = &mut leaving => break,
                () = sleep_until_opt(step_down) => {
                    self.renewed = None;
                    tracing::warn!(lease = %self.name, renew_deadline_ms = self.renew_deadline.as_millis() as u64, "could not renew the Lease in time: no longer deciding");
                    self.publish(role);
                    next = Instant::now();
                }
                event = watch.next(), if watching => match event {
                    Some(Ok(event)) => {
                        if self.watched(event, &mut listed) {
                            if self.renewed.is_none() {
                                next = self.next_attempt(Instant::now(), None);
                            }
                            self.publish(role);
                        }
                    }
                    Some(Err(error)) => tracing::debug!(lease = %self.name, %error, "Lease watch failed; retrying with backoff"),
                    None => watching = false,
                },
                () = tokio::time::sleep_until(next) => {
                    let sent = Instant::now();
                    // A holder's attempt ends by its step-down time, so it steps down on time.
                    let budget = step_down.map_or(self.retry_period, |at| {
                        at.saturating_duration_since(sent).min(self.retry_period)
                    });
                    let attempt = tokio::time::timeout(budget, self.try_acquire_or_renew(sent)).await;
                    match attempt.unwrap_or(Err(AttemptError::Timeout(budget))) {
                        Ok(()) => {
                            complained = false;
                            self.renewed = Some(sent);
                        }
                        Err(AttemptError::Held(_)) => {}
                        Err(error) => {
                            let leading = self.renewed.is_some();
                            if !complained || leading {
                                tracing::warn!(lease = %self.name, %error, leading, "Lease attempt failed; retrying");
                            }
                            complained = true;
                        }
                    }
                    self.publish(role);
                    next = self.next_attempt(Instant::now(), Some(sent));
                }
            }
        }
        if self.renewed.take().is_some() {
            self.publish(role);
            match tokio::time::timeout(self.retry_period, self.release()).await {
                Ok(Ok(())) => tracing::info!(lease = %self.name, "handed the Lease back"),
                Ok(Err(error)) => {
                    tracing::warn!(lease = %self.name, %error, "could not hand the Lease back; it expires by itself")
                }
                Err(_) => {
                    tracing::warn!(lease = %self.name, "handing the Lease back timed out; it expires by itself")
                }
            }
        }
    }

    /// When to attempt next: a retry period after the last attempt (`tried`) while leading or
    /// after a failure; otherwise when the holder's Lease expires, or at once when it is free.
    fn next_attempt(&self, now: Instant, tried: Option<Instant>) -> Instant {
        let again = tried.map(|at| at + self.retry_period);
        if self.renewed.is_some() {
            return again.unwrap_or(now);
        }
        match standing(self.observed.as_ref(), &self.identity, now) {
            Standing::Held { until, .. } => until,
            Standing::Free | Standing::Mine => again.unwrap_or(now),
        }
    }

    fn publish(&mut self, role: &watch::Sender<Role>) {
        let next = if self.renewed.is_some() {
            match &*role.borrow() {
                Role::Leader { term, since } => Role::Leader {
                    term: *term,
                    since: *since,
                },
                Role::Follower(_) => {
                    self.term += 1;
                    tracing::info!(lease = %self.name, identity = %self.identity, term = self.term, "leading: this replica now decides scale-downs and scale-outs");
                    Role::Leader {
                        term: self.term,
                        since: Instant::now(),
                    }
                }
            }
        } else {
            let holder = match standing(self.observed.as_ref(), &self.identity, Instant::now()) {
                Standing::Held { by, .. } => Some(by),
                _ => None,
            };
            Role::Follower(holder)
        };
        role.send_if_modified(|current| {
            if *current == next {
                false
            } else {
                if let (Role::Leader { .. }, Role::Follower(leader)) = (&*current, &next) {
                    tracing::info!(lease = %self.name, leader = ?leader, "no longer leading");
                }
                *current = next;
                true
            }
        });
    }

    /// Takes in a watch event; returns whether the observed record changed.
    fn watched(&mut self, event: watcher::Event<Lease>, listed: &mut bool) -> bool {
        match event {
            watcher::Event::Init => {
                *listed = false;
                false
            }
            watcher::Event::InitApply(lease) => {
                *listed = true;
                self.observe(lease)
            }
            watcher::Event::Apply(lease) => self.observe(lease),
            watcher::Event::InitDone if !*listed => self.observed.take().is_some(),
            watcher::Event::InitDone => false,
            watcher::Event::Delete(_) => self.observed.take().is_some(),
        }
    }

    /// Takes in the Lease as read or watched; returns whether its record changed. A record seen
    /// again unchanged keeps its observation time, as client-go compares the raw record.
    fn observe(&mut self, lease: Lease) -> bool {
        let spec = lease.spec.clone().unwrap_or_default();
        match &mut self.observed {
            Some(observed) if observed.spec == spec => {
                // A newer version of the same record (a metadata change) is still the one to
                // write from.
                if newer(&lease, &observed.lease) {
                    observed.lease = lease;
                }
                false
            }
            _ => {
                self.observed = Some(Observed {
                    spec,
                    lease,
                    at: Instant::now(),
                });
                true
            }
        }
    }

    /// One round of client-go's `tryAcquireOrRenew`.
    async fn try_acquire_or_renew(&mut self, sent: Instant) -> Result<(), AttemptError> {
        // Fast path: the holder renews from the version it wrote last, without reading first.
        if self.renewed.is_some()
            && let Some(observed) = self.observed.clone()
            && standing(Some(&observed), &self.identity, sent) == Standing::Mine
        {
            let lease = self.record(&observed.lease, true);
            match self
                .api
                .replace(&self.name, &PostParams::default(), &lease)
                .await
            {
                Ok(written) => {
                    self.observe(written);
                    return Ok(());
                }
                Err(error) => {
                    tracing::debug!(lease = %self.name, %error, "renewing from the version last written failed; reading the Lease");
                }
            }
        }
        let current = match self.api.get_opt(&self.name).await {
            Ok(Some(current)) => current,
            Ok(None) => {
                let lease = self.record(
                    &Lease {
                        metadata: ObjectMeta {
                            name: Some(self.name.clone()),
                            ..ObjectMeta::default()
                        },
                        spec: None,
                    },
                    false,
                );
                return match self.api.create(&PostParams::default(), &lease).await {
                    Ok(created) => {
                        self.observe(created);
                        Ok(())
                    }
                    Err(kube::Error::Api(status)) if status.code == 409 => {
                        Err(AttemptError::Conflict)
                    }
                    Err(error) => Err(AttemptError::Api(error)),
                };
            }
            Err(error) => return Err(AttemptError::Api(error)),
        };
        self.observe(current);
        let observed = self.observed.clone().ok_or(AttemptError::Conflict)?;
        let mine = match standing(Some(&observed), &self.identity, Instant::now()) {
            Standing::Held { by, .. } => {
                self.renewed = None;
                return Err(AttemptError::Held(by));
            }
            Standing::Mine => true,
            Standing::Free => false,
        };
        let lease = self.record(&observed.lease, mine);
        match self
            .api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
        {
            Ok(written) => {
                self.observe(written);
                Ok(())
            }
            Err(kube::Error::Api(status)) if status.code == 409 => Err(AttemptError::Conflict),
            Err(error) => Err(AttemptError::Api(error)),
        }
    }

    /// `current` with this replica as holder, renewed now; the acquisition time and transitions
    /// carry over when it `held` the Lease already.
    fn record(&self, current: &Lease, held: bool) -> Lease {
        let now = MicroTime(Timestamp::now());
        let old = current.spec.clone().unwrap_or_default();
        let transitions = old.lease_transitions.unwrap_or(0);
        let mut lease = current.clone();
        lease.spec = Some(LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: Some(self.lease_duration.as_secs().min(i32::MAX as u64) as i32),
            acquire_time: if held {
                old.acquire_time.or(Some(now.clone()))
            } else {
                Some(now.clone())
            },
            renew_time: Some(now),
            lease_transitions: Some(if held || current.spec.is_none() {
                transitions
            } else {
                transitions.saturating_add(1)
            }),
            ..old
        });
        lease
    }

    /// Hands the Lease back as client-go's `ReleaseOnCancel` does: no holder, a duration of 1s.
    async fn release(&mut self) -> Result<(), kube::Error> {
        let Some(observed) = self.observed.clone() else {
            return Ok(());
        };
        let now = MicroTime(Timestamp::now());
        let mut lease = observed.lease.clone();
        lease.spec = Some(LeaseSpec {
            holder_identity: None,
            lease_duration_seconds: Some(1),
            acquire_time: Some(now.clone()),
            renew_time: Some(now),
            ..observed.spec.clone()
        });
        self.api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
            .map(|_| ())
    }
}

/// Whether `a` is a later version than `b` (resourceVersions compared as numbers when they are).
fn newer(a: &Lease, b: &Lease) -> bool {
    let version = |l: &Lease| {
        l.metadata
            .resource_version
            .as_deref()
            .and_then(|v| v.parse::<u64>().ok())
    };
    match (version(a), version(b)) {
        (Some(a), Some(b)) => a > b,
        _ => a.metadata.resource_version != b.metadata.resource_version,
    }
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn observed(holder: Option<&str>, seconds: i32) -> Observed {
        let spec = LeaseSpec {
            holder_identity: holder.map(str::to_owned),
            lease_duration_seconds: Some(seconds),
            ..LeaseSpec::default()
        };
        Observed {
            lease: Lease {
                metadata: ObjectMeta::default(),
                spec: Some(spec.clone()),
            },
            spec,
            at: Instant::now(),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn another_holders_lease_expires_a_lease_duration_after_it_was_observed() {
        let seen = observed(Some("b"), 15);
        let start = Instant::now();
        tokio::time::advance(Duration::from_secs(14)).await;
        assert_eq!(
            standing(Some(&seen), "a", Instant::now()),
            Standing::Held {
                by: "b".into(),
                until: start + Duration::from_secs(15)
            }
        );
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(standing(Some(&seen), "a", Instant::now()), Standing::Free);
    }

    #[tokio::test(start_paused = true)]
    async fn a_missing_an_empty_or_an_own_record_is_free_or_mine() {
        assert_eq!(standing(None, "a", Instant::now()), Standing::Free);
        assert_eq!(
            standing(Some(&observed(None, 1)), "a", Instant::now()),
            Standing::Free
        );
        assert_eq!(
            standing(Some(&observed(Some("a"), 15)), "a", Instant::now()),
            Standing::Mine
        );
    }

    #[test]
    fn the_default_timings_let_a_holder_stop_before_anyone_can_take_over() {
        let settings = ClusterSettings::default();
        // The holder stops `renew_deadline` after sending its last successful renewal; others
        // observe that renewal no earlier than it was sent, and wait a whole lease duration.
        assert!(settings.renew_deadline < settings.lease_duration);
        assert!(settings.retry_period.as_secs_f64() * 1.2 < settings.renew_deadline.as_secs_f64());
    }
}
