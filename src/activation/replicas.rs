//! The replica count of one route: what the activator wants, what the provider last accepted,
//! and which decision is the latest. Plain state, no I/O; [`super::Activation`] drives the
//! provider from it.
//!
//! A provider call dropped before it ended (a newer decision replaced it) leaves the applied count
//! unknown, so the next call reads the count afresh instead of trusting a cache. A count observed
//! from outside (a watch, or the provider reporting someone else's change) is adopted only when no
//! write of the activator's own is pending, since until then an observation may predate that
//! write.

use tokio::time::Instant;

/// Desired and applied replicas. A new route wants none and asks for nothing: whatever the
/// workload runs is observed and adopted.
#[derive(Debug)]
pub(crate) struct Replicas {
    desired: u32,
    /// What the provider last accepted; `None` when unknown (a write was abandoned mid-way).
    applied: Option<u32>,
    last_scale_up: Option<Instant>,
    /// A task is bringing the provider to `desired`.
    driving: bool,
}

impl Default for Replicas {
    fn default() -> Replicas {
        Replicas {
            desired: 0,
            applied: Some(0),
            last_scale_up: None,
            driving: false,
        }
    }
}

/// What a provider call should do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Step {
    /// Replicas to ask for.
    pub(crate) replicas: u32,
    /// The applied count is unknown: read it afresh rather than from a cache.
    pub(crate) verify: bool,
}

/// A replica count changed by someone other than the activator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Adopted {
    /// The count the activator wanted before.
    pub(crate) before: u32,
    /// The count adopted.
    pub(crate) now: u32,
}

impl Replicas {
    /// Replicas wanted.
    pub(crate) fn desired(&self) -> u32 {
        self.desired
    }

    /// When replicas were last added.
    pub(crate) fn last_scale_up(&self) -> Option<Instant> {
        self.last_scale_up
    }

    /// Wants `replicas`; returns whether that changed anything.
    pub(crate) fn set(&mut self, replicas: u32, now: Instant) -> bool {
        if self.desired == replicas {
            return false;
        }
        if replicas > self.desired {
            self.last_scale_up = Some(now);
        }
        self.desired = replicas;
        true
    }

    /// Whether the provider may not have the wanted count yet.
    pub(crate) fn pending(&self) -> bool {
        self.applied != Some(self.desired)
    }

    /// Claims the right to drive the provider, if nobody holds it and there is work to do.
    pub(crate) fn start_driving(&mut self) -> bool {
        if self.driving || !self.pending() {
            return false;
        }
        self.driving = true;
        true
    }

    /// The next provider call for the driver, or `None` (and the driver stops) when done.
    pub(crate) fn next_step(&mut self) -> Option<Step> {
        if !self.pending() {
            self.driving = false;
            return None;
        }
        Some(Step {
            replicas: self.desired,
            verify: self.applied.is_none(),
        })
    }

    /// The provider accepted `step`.
    pub(crate) fn applied(&mut self, step: &Step) {
        self.applied = Some(step.replicas);
    }

    /// `step` was dropped mid-way: whether it took effect is unknown.
    pub(crate) fn abandoned(&mut self) {
        self.applied = None;
    }

    /// The provider failed `step`; the driver stops, and a later tick starts another.
    pub(crate) fn failed(&mut self) {
        self.driving = false;
    }

    /// Someone else set `replicas` (a conflicting write was answered with their count).
    pub(crate) fn superseded(&mut self, replicas: u32) -> Adopted {
        self.adopt(replicas)
    }

    /// A count observed from outside; adopted unless a write of the activator's own is pending.
    pub(crate) fn observe(&mut self, replicas: u32) -> Option<Adopted> {
        if self.driving || self.pending() {
            return None;
        }
        Some(self.adopt(replicas))
    }

    fn adopt(&mut self, replicas: u32) -> Adopted {
        let before = self.desired;
        self.desired = replicas;
        self.applied = Some(replicas);
        Adopted {
            before,
            now: replicas,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_call_abandoned_for_a_newer_decision_is_followed_by_a_verified_one() {
        let mut replicas = Replicas::default();
        assert!(replicas.set(1, Instant::now()));
        assert!(replicas.start_driving());
        let step = replicas.next_step().unwrap();
        assert_eq!((step.replicas, step.verify), (1, false));
        replicas.applied(&step);
        assert!(replicas.set(0, Instant::now()));
        let to_zero = replicas.next_step().unwrap();
        assert_eq!((to_zero.replicas, to_zero.verify), (0, false));
        // A request re-activates the route while the scale-down is still being written.
        replicas.set(1, Instant::now());
        replicas.abandoned();
        let again = replicas.next_step().unwrap();
        assert_eq!((again.replicas, again.verify), (1, true));
        replicas.applied(&again);
        assert_eq!(replicas.next_step(), None);
    }

    #[tokio::test(start_paused = true)]
    async fn observations_are_ignored_while_an_own_write_is_pending() {
        let mut replicas = Replicas::default();
        assert_eq!(replicas.observe(1), Some(Adopted { before: 0, now: 1 }));
        replicas.set(2, Instant::now());
        assert_eq!(replicas.observe(0), None);
        replicas.start_driving();
        let step = replicas.next_step().unwrap();
        replicas.applied(&step);
        assert_eq!(replicas.next_step(), None);
        assert_eq!(replicas.observe(5), Some(Adopted { before: 2, now: 5 }));
        assert_eq!(replicas.desired(), 5);
        assert!(!replicas.pending());
    }

    #[tokio::test(start_paused = true)]
    async fn only_additions_move_the_last_scale_up() {
        let mut replicas = Replicas::default();
        let start = Instant::now();
        replicas.set(3, start);
        tokio::time::advance(std::time::Duration::from_secs(5)).await;
        replicas.set(1, Instant::now());
        assert_eq!(replicas.last_scale_up(), Some(start));
    }
}
