//! How replicas speak to each other, over their admin listeners: the paths, the report each one
//! serves, and the client the Lease holder asks with.
//!
//! - `GET /peer/report`: this replica's [`PeerReport`], every route's counters as it sees them.
//! - `POST /peer/hold?route=NS/NAME&ms=N`: close the route here for a scale to zero the holder
//!   decided, for at most N ms, and answer the report of that route as of just after closing it.
//! - `POST /peer/release?route=NS/NAME`: open it again (the holder gave up).
//!
//! Every call has one deadline for connecting and answering: a peer that accepts connections but
//! never answers costs the holder that much and no more.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::{Deserialize, Serialize};

use crate::stats::StatsReport;

/// The report path.
pub(crate) const REPORT_PATH: &str = "/peer/report";
/// The hold path.
pub(crate) const HOLD_PATH: &str = "/peer/hold";
/// The release path.
pub(crate) const RELEASE_PATH: &str = "/peer/release";
/// A report larger than this is refused (100,000 routes fit well below it).
const MAX_REPORT_BYTES: usize = 64 * 1024 * 1024;

/// What one replica knows about its routes' traffic.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct PeerReport {
    /// The replica's identity.
    pub(crate) identity: String,
    /// Each route's counters, by `namespace/name`.
    pub(crate) routes: BTreeMap<String, StatsReport>,
}

/// Why a peer gave no report.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PeerError {
    /// Nothing came back within the deadline.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// The connection failed.
    #[error("{0}")]
    Connect(#[source] hyper_util::client::legacy::Error),
    /// The peer answered with an error status.
    #[error("answered {0}")]
    Status(StatusCode),
    /// The body could not be read or parsed.
    #[error("unreadable answer: {0}")]
    Body(String),
}

/// Asks peers, each call bounded by one deadline.
#[derive(Debug, Clone)]
pub(crate) struct PeerClient {
    client: Client<HttpConnector, Empty<Bytes>>,
    timeout: Duration,
}

impl PeerClient {
    /// A client whose calls end within `timeout`, connecting from `local` when given (so peers
    /// see the address they list this replica under).
    pub(crate) fn new(timeout: Duration, local: Option<IpAddr>) -> PeerClient {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(timeout));
        connector.set_nodelay(true);
        connector.set_local_address(local.filter(|ip| !ip.is_unspecified()));
        PeerClient {
            client: Client::builder(TokioExecutor::new())
                .pool_idle_timeout(Duration::from_secs(30))
                .build(connector),
            timeout,
        }
    }

    /// `peer`'s whole report.
    pub(crate) async fn report(&self, peer: SocketAddr) -> Result<PeerReport, PeerError> {
        self.call(Method::GET, peer, REPORT_PATH.to_owned()).await
    }

    /// Closes `route` on `peer` for at most `hold`; its report as of just after.
    pub(crate) async fn hold(
        &self,
        peer: SocketAddr,
        route: &str,
        hold: Duration,
    ) -> Result<PeerReport, PeerError> {
        let path = format!("{HOLD_PATH}?route={route}&ms={}", hold.as_millis());
        self.call(Method::POST, peer, path).await
    }

    /// Opens `route` on `peer` again.
    pub(crate) async fn release(&self, peer: SocketAddr, route: &str) -> Result<(), PeerError> {
        let path = format!("{RELEASE_PATH}?route={route}");
        self.exchange(Method::POST, peer, path).await.map(|_| ())
    }

    async fn call(
        &self,
        method: Method,
        peer: SocketAddr,
        path: String,
    ) -> Result<PeerReport, PeerError> {
        let body = self.exchange(method, peer, path).await?;
        serde_json::from_slice(&body).map_err(|e| PeerError::Body(e.to_string()))
    }

    async fn exchange(
        &self,
        method: Method,
        peer: SocketAddr,
        path: String,
    ) -> Result<Bytes, PeerError> {
        let exchange = async {
            let request = Request::builder()
                .method(method)
                .uri(format!("http://{peer}{path}"))
                .body(Empty::new())
                .map_err(|e| PeerError::Body(e.to_string()))?;
            let response = self
                .client
                .request(request)
                .await
                .map_err(PeerError::Connect)?;
            if !response.status().is_success() {
                return Err(PeerError::Status(response.status()));
            }
            Limited::new(response.into_body(), MAX_REPORT_BYTES)
                .collect()
                .await
                .map(|body| body.to_bytes())
                .map_err(|e| PeerError::Body(e.to_string()))
        };
        tokio::time::timeout(self.timeout, exchange)
            .await
            .unwrap_or(Err(PeerError::Timeout(self.timeout)))
    }
}

/// The value of `key` in a query string (`a=1&b=2`).
pub(crate) fn query_value<'q>(query: &'q str, key: &str) -> Option<&'q str> {
    query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values_are_found_by_key() {
        let query = "route=default/web&ms=5000";
        assert_eq!(query_value(query, "route"), Some("default/web"));
        assert_eq!(query_value(query, "ms"), Some("5000"));
        assert_eq!(query_value(query, "other"), None);
    }

    #[tokio::test]
    async fn a_peer_that_accepts_but_never_answers_costs_one_timeout() {
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = silent.local_addr().unwrap();
        let keep = tokio::spawn(async move {
            let mut open = Vec::new();
            while let Ok((socket, _)) = silent.accept().await {
                open.push(socket);
            }
        });
        let client = PeerClient::new(Duration::from_millis(100), None);
        let started = std::time::Instant::now();
        let result = client.report(addr).await;
        assert!(matches!(result, Err(PeerError::Timeout(_))), "{result:?}");
        assert!(started.elapsed() < Duration::from_secs(1));
        keep.abort();
    }
}
