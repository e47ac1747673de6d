//! Leases as leader election uses them: optimistic concurrency on `resourceVersion` answered as
//! the API server answers it, and a get/create/replace election loop of two kube-rs contenders
//! that elects one leader and hands over when it stops renewing.

#[path = "support/start.rs"]
mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;
use support::{WAIT, start};
use tokio::sync::watch;

const CONFLICT: &str = "Operation cannot be fulfilled on leases.coordination.k8s.io \"lock\": the object has been modified; please apply your changes to the latest version and try again";

fn lease(holder: &str) -> Lease {
    Lease {
        metadata: kube::api::ObjectMeta {
            name: Some("lock".into()),
            ..Default::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: Some(holder.into()),
            lease_duration_seconds: Some(1),
            ..Default::default()
        }),
    }
}

fn status_of<T: std::fmt::Debug>(result: Result<T, kube::Error>) -> kube::core::Status {
    match result {
        Err(kube::Error::Api(status)) => *status,
        other => panic!("expected an API error, got {other:?}"),
    }
}

#[tokio::test]
async fn writes_from_a_stale_resource_version_conflict_as_the_api_server_answers() {
    let sim = start().await;
    let leases: Api<Lease> = Api::default_namespaced(sim.client().expect("client"));
    let pp = PostParams::default();
    let first = leases.create(&pp, &lease("a")).await.expect("create");
    let mut renewed = first.clone();
    renewed.spec = Some(LeaseSpec {
        holder_identity: Some("a".into()),
        lease_transitions: Some(1),
        ..Default::default()
    });
    let current = leases
        .replace("lock", &pp, &renewed)
        .await
        .expect("replace from the current version");
    assert_ne!(
        current.metadata.resource_version,
        first.metadata.resource_version
    );

    // `first` is now stale: replace, merge patch and strategic patch all conflict.
    let mut stale = first.clone();
    stale.spec = Some(LeaseSpec {
        holder_identity: Some("b".into()),
        ..Default::default()
    });
    let conflict = status_of(leases.replace("lock", &pp, &stale).await);
    assert_eq!(conflict.code, 409);
    assert_eq!(conflict.reason, "Conflict");
    assert_eq!(conflict.message, CONFLICT);
    let details = conflict.details.expect("details");
    assert_eq!(
        (
            details.name.as_str(),
            details.group.as_str(),
            details.kind.as_str()
        ),
        ("lock", "coordination.k8s.io", "leases")
    );
    let stale_rv = first.metadata.resource_version.clone().unwrap_or_default();
    let body = json!({"metadata": {"resourceVersion": stale_rv}, "spec": {"holderIdentity": "b"}});
    for patch in [Patch::Merge(&body), Patch::Strategic(&body)] {
        let conflict = status_of(leases.patch("lock", &PatchParams::default(), &patch).await);
        assert_eq!((conflict.code, conflict.message.as_str()), (409, CONFLICT));
    }
    let held = leases.get("lock").await.expect("get");
    assert_eq!(
        held.spec.and_then(|s| s.holder_identity).as_deref(),
        Some("a")
    );

    // A create carrying a resourceVersion is refused as etcd3's store refuses it: a 500
    // without a reason.
    let mut with_version = lease("c");
    with_version.metadata.name = Some("other".into());
    with_version.metadata.resource_version = Some(stale_rv);
    let refused = status_of(leases.create(&pp, &with_version).await);
    assert_eq!(refused.code, 500);
    assert_eq!(refused.reason, "");
    assert_eq!(
        refused.message,
        "resourceVersion should not be set on objects to be created"
    );
    let taken = status_of(leases.create(&pp, &lease("c")).await);
    assert_eq!((taken.code, taken.reason.as_str()), (409, "AlreadyExists"));
}

/// A contender in a leader election over one Lease, as client-go's `leaderelection` runs it:
/// get the lease; create it when missing; take it when it expired or is ours; write only with
/// the version read, so that of two contenders writing at once exactly one wins.
struct Contender {
    leases: Api<Lease>,
    identity: String,
    duration: Duration,
}

impl Contender {
    /// One round; whether this contender holds the lease after it.
    async fn round(&self) -> Result<bool, kube::Error> {
        let now = Timestamp::now();
        let spec = |transitions: i32, acquired: Option<MicroTime>| LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: Some(self.duration.as_secs_f64().ceil() as i32),
            acquire_time: acquired.or(Some(MicroTime(now))),
            renew_time: Some(MicroTime(now)),
            lease_transitions: Some(transitions),
            ..Default::default()
        };
        let current = match self.leases.get_opt("lock").await? {
            Some(current) => current,
            None => {
                let mut new = lease(&self.identity);
                new.spec = Some(spec(0, None));
                return match self.leases.create(&PostParams::default(), &new).await {
                    Ok(_) => Ok(true),
                    Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
                    Err(other) => Err(other),
                };
            }
        };
        let held = current.spec.clone().unwrap_or_default();
        let ours = held.holder_identity.as_deref() == Some(self.identity.as_str());
        let renewed = held.renew_time.map_or(Timestamp::UNIX_EPOCH, |t| t.0);
        let expired = now.duration_since(renewed).as_secs_f64() > self.duration.as_secs_f64();
        if !ours && !expired {
            return Ok(false);
        }
        let transitions = held.lease_transitions.unwrap_or(0) + i32::from(!ours);
        let mut next = current.clone();
        next.spec = Some(spec(
            transitions,
            if ours { held.acquire_time } else { None },
        ));
        match self
            .leases
            .replace("lock", &PostParams::default(), &next)
            .await
        {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
            Err(other) => Err(other),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_contenders_elect_one_leader_and_hand_over_when_it_stops() {
    let sim = start().await;
    let client = sim.client().expect("client");
    let leaders = Arc::new(AtomicUsize::new(0));
    let (overlap_tx, overlap) = watch::channel(false);
    let overlap_tx = Arc::new(overlap_tx);
    let mut stops = Vec::new();
    let mut led = Vec::new();
    for identity in ["a", "b"] {
        let contender = Contender {
            leases: Api::default_namespaced(client.clone()),
            identity: identity.into(),
            duration: Duration::from_secs(1),
        };
        let (stop, mut stopped) = watch::channel(false);
        let (leading_tx, leading) = watch::channel(false);
        let (leaders, overlap_tx) = (leaders.clone(), overlap_tx.clone());
        tokio::spawn(async move {
            let mut leading_now = false;
            loop {
                // Only the leader's own round may end its leadership, as in client-go.
                let holds = contender.round().await.expect("an election round");
                if holds != leading_now {
                    leading_now = holds;
                    let count = if holds {
                        leaders.fetch_add(1, Ordering::SeqCst) + 1
                    } else {
                        leaders.fetch_sub(1, Ordering::SeqCst) - 1
                    };
                    if count > 1 {
                        overlap_tx.send_replace(true);
                    }
                    leading_tx.send_replace(holds);
                }
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                    _ = stopped.wait_for(|s| *s) => {
                        // Stops renewing without giving the lease up, as a crashed leader.
                        if leading_now {
                            leaders.fetch_sub(1, Ordering::SeqCst);
                        }
                        leading_tx.send_replace(false);
                        return;
                    }
                }
            }
        });
        stops.push(stop);
        led.push(leading);
    }

    let first = tokio::time::timeout(WAIT, async {
        loop {
            if let Some(i) = led.iter().position(|l| *l.borrow()) {
                return i;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("a leader is elected");
    // Both keep contending for a while: the leader renews, the other stays a follower.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(*led[first].borrow(), "the leader keeps the lease it renews");
    assert!(!*led[1 - first].borrow());

    stops[first].send_replace(true);
    let second = 1 - first;
    let mut taking_over = led[second].clone();
    tokio::time::timeout(WAIT, taking_over.wait_for(|l| *l))
        .await
        .expect("the follower takes over once the lease expires")
        .expect("the contender runs");
    let lease: Api<Lease> = Api::default_namespaced(client);
    let spec = lease
        .get("lock")
        .await
        .expect("the lease")
        .spec
        .unwrap_or_default();
    assert_eq!(spec.holder_identity.as_deref(), Some(["a", "b"][second]));
    assert_eq!(spec.lease_transitions, Some(1));
    assert!(!*overlap.borrow(), "never two leaders at once");
    stops[second].send_replace(true);
}
