//! kube-sim: a stand-in Kubernetes API server and kubelet for tests, running real local
//! processes as pods.
//!
//! It serves the slice of Kubernetes an activator touches — namespaces, services, pods, events,
//! deployments (with `scale` and `status`), EndpointSlices and leases — over real HTTP with
//! JSON (and protobuf request bodies), server-side printing (`Table`), watches, selectors,
//! every patch type and `metav1.Status` errors, so kube-rs and `kubectl` work against it
//! unchanged. It also stores the ServiceAccounts, ConfigMaps, RBAC objects,
//! PodDisruptionBudgets, HorizontalPodAutoscalers and NetworkPolicies that manifests declare,
//! without acting on them. Controllers turn Deployments into pod processes on their own
//! loopback addresses, probe readiness, maintain EndpointSlices and Deployment status, and
//! terminate pods with SIGTERM/SIGKILL. Faults can be injected from tests or over HTTP.
//!
//! ```no_run
//! # async fn demo() -> Result<(), kube_sim::SimError> {
//! use kube_sim::{Sim, SimConfig};
//! let sim = Sim::start(SimConfig::default().time_scale(0.01)).await?;
//! let client = sim.client()?;
//! sim.apply_yaml("apiVersion: v1\nkind: Namespace\nmetadata: {name: demo}\n")?;
//! assert_eq!(sim.counters().count("patch", "deployments/scale"), 0);
//! # drop(client); Ok(()) }
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs, rust_2018_idioms, unreachable_pub)]

pub mod api;
pub mod config;
pub mod controllers;
pub mod counters;
pub mod faults;
pub mod kubeconfig;
pub mod kubelet;
pub mod lifecycle;
pub mod meta;
pub mod resources;
pub mod selector;
pub mod sim;
pub mod store;

pub use config::{ImageMapping, SimConfig};
pub use counters::CounterSnapshot;
pub use faults::{ConflictFault, ErrorFault, FaultRules, Faults, Latency};
pub use sim::{Sim, SimError};
