//! `activator-echo`: a small, fast HTTP backend that answers every request with a JSON
//! description of it.
//!
//! One server plays two parts. For the activator's demo, tests and benchmarks it is a replica
//! with a few test endpoints (statistics, among them when the process started and began to
//! listen, chosen statuses, delays, streams, trailers, uploads, a WebSocket, and a way to
//! crash). For kube-sim it stands in for `mendhak/http-https-echo` pods:
//! it listens on `$POD_IP:$HTTP_PORT`, answers in that image's JSON shape, honours its
//! `x-set-response-status-code` and `x-set-response-delay-ms` request headers, and can exit
//! when its standard input closes so that it never outlives the simulator that started it.
//!
//! The crate also says where cargo put the binary ([`locate`]), for the tests, benchmarks and
//! simulator that start it as a separate process.
//!
//! It does not hold state between requests beyond counters, and it is not meant to face
//! untrusted clients.

#![forbid(unsafe_code)]
#![warn(missing_docs, rust_2018_idioms, unreachable_pub)]

mod describe;
mod locate;
pub mod options;
mod routes;
pub mod server;
pub mod startup;
mod websocket;

pub use locate::{BINARY, BINARY_ENV, NotBuilt, locate};
pub use options::{Options, OptionsError};
pub use server::serve;
pub use startup::Startup;
