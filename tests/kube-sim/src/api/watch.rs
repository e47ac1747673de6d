//! Watches: a chunked stream of newline-separated `{"type": ..., "object": ...}` events —
//! ADDED, MODIFIED, DELETED, BOOKMARK, and ERROR carrying a 410 `Expired` Status when the
//! requested resourceVersion is older than the kept history. Honours `resourceVersion`,
//! `allowWatchBookmarks`, `sendInitialEvents`, `timeoutSeconds` and the selectors; ends when
//! the watches are closed by a fault, the client goes away, or the store's feed overflows. A
//! watch asked for as a `Table` sends each object as a one-row `Table`, with the column
//! definitions on the first event only.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::Frame;
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::{Response, StatusCode};
use serde_json::{Value, json};
use tokio::sync::{broadcast, mpsc};

use super::read::{Filter, matching};
use super::status::ApiError;
use super::table::TableFormat;
use super::{Body, Call, Context, convert};
use crate::resources::ResourceType;
use crate::store::{Change, ChangeKind, StoreError, Subscription};

/// How often bookmarks are sent to watches that allow them.
const BOOKMARK_INTERVAL: Duration = Duration::from_secs(1);

/// A body fed by a channel of chunks.
struct ChannelBody(mpsc::Receiver<Bytes>);

impl hyper::body::Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0
            .poll_recv(cx)
            .map(|chunk| chunk.map(|c| Ok(Frame::data(c))))
    }
}

fn event(kind: &str, object: &Value) -> Bytes {
    let mut line = serde_json::to_vec(&json!({"type": kind, "object": object})).unwrap_or_default();
    line.push(b'\n');
    Bytes::from(line)
}

fn bookmark(resource: &ResourceType, rv: u64, initial_end: bool) -> Bytes {
    let mut metadata = json!({"resourceVersion": rv.to_string()});
    if initial_end {
        metadata["annotations"] = json!({"k8s.io/initial-events-end": "true"});
    }
    event(
        "BOOKMARK",
        &json!({"kind": resource.kind, "apiVersion": resource.api_version(), "metadata": metadata}),
    )
}

/// What a watcher sees of a change: nothing, or an event type (selector transitions turn
/// modifications into ADDED or DELETED, as the API server's watch cache does).
fn seen_as(change: &Change, filter: &Filter) -> Option<&'static str> {
    let now = filter.matches(&change.object);
    let before = change
        .previous
        .as_deref()
        .is_some_and(|p| filter.matches(p));
    match (change.kind, before, now) {
        (ChangeKind::Added, _, true) => Some("ADDED"),
        (ChangeKind::Deleted, true, _) => Some("DELETED"),
        (ChangeKind::Modified, true, true) => Some("MODIFIED"),
        (ChangeKind::Modified, false, true) => Some("ADDED"),
        (ChangeKind::Modified, true, false) => Some("DELETED"),
        _ => None,
    }
}

/// Starts a watch and answers with its stream.
pub fn start(context: &Context, call: &Call) -> Result<Response<Body>, ApiError> {
    let filter = Filter::new(&call.target, &call.query)?;
    let resource = call.target.resource;
    let rv_param = call.query.str("resourceVersion");
    let since = match rv_param {
        "" | "0" => None,
        rv => Some(
            rv.parse::<u64>()
                .map_err(|_| ApiError::bad_request(format!("invalid resource version {rv:?}")))?,
        ),
    };
    let table = TableFormat::negotiate(&call.accept, &call.query)?;
    let (tx, rx) = mpsc::channel::<Bytes>(256);
    let mut response = Response::new(ChannelBody(rx).boxed());
    *response.status_mut() = StatusCode::OK;
    let content_type = table.map_or(HeaderValue::from_static("application/json"), |t| {
        t.content_type()
    });
    response.headers_mut().insert(CONTENT_TYPE, content_type);

    let subscription = match context.store.watch(since) {
        Ok(s) => s,
        Err(error @ StoreError::Expired { .. }) => {
            let status = ApiError::from(error).status();
            // The API server answers 200 and reports the expiry as the stream's only event.
            let _ = tx.try_send(event("ERROR", &status));
            return Ok(response);
        }
        Err(other) => return Err(other.into()),
    };
    let initial = if since.is_none() {
        Some(matching(context, call, &filter))
    } else {
        None
    };
    let stream = Stream {
        tx,
        filter,
        resource,
        table,
        headers_sent: false,
        bookmarks: call.query.flag("allowWatchBookmarks"),
        initial_end: call.query.flag("sendInitialEvents"),
        timeout: call
            .query
            .get("timeoutSeconds")
            .and_then(|t| t.parse().ok())
            .map(Duration::from_secs),
    };
    tokio::spawn(stream.run(subscription, initial, since.unwrap_or(0)));
    Ok(response)
}

struct Stream {
    tx: mpsc::Sender<Bytes>,
    filter: Filter,
    resource: &'static ResourceType,
    /// Objects are sent as one-row Tables in this format, when set.
    table: Option<TableFormat>,
    /// Whether a Table with column definitions was sent already.
    headers_sent: bool,
    bookmarks: bool,
    initial_end: bool,
    timeout: Option<Duration>,
}

impl Stream {
    async fn run(
        mut self,
        subscription: Subscription,
        initial: Option<(Vec<Arc<Value>>, u64)>,
        since: u64,
    ) {
        let Subscription {
            backlog,
            mut live,
            mut closer,
        } = subscription;
        closer.mark_unchanged();
        // The version every event up to which this watcher has been sent.
        let mut seen = since;
        if let Some((objects, rv)) = initial {
            for object in objects {
                let added = self.event("ADDED", &object);
                if self.tx.send(added).await.is_err() {
                    return;
                }
            }
            seen = rv;
            if self.initial_end
                && self
                    .tx
                    .send(bookmark(self.resource, rv, true))
                    .await
                    .is_err()
            {
                return;
            }
        }
        for change in backlog {
            if !self.forward(&change, &mut seen).await {
                return;
            }
        }
        let deadline = self.timeout.map(|t| tokio::time::Instant::now() + t);
        let mut ticker = tokio::time::interval(BOOKMARK_INTERVAL);
        ticker.tick().await;
        loop {
            tokio::select! {
                received = live.recv() => match received {
                    Ok(change) => {
                        if !self.forward(&change, &mut seen).await {
                            return;
                        }
                    }
                    // Too slow to keep up: end the watch, as the API server does; the client
                    // resumes from its last version.
                    Err(broadcast::error::RecvError::Lagged(_) | broadcast::error::RecvError::Closed) => return,
                },
                _ = ticker.tick(), if self.bookmarks && seen > 0 => {
                    if self.tx.send(bookmark(self.resource, seen, false)).await.is_err() {
                        return;
                    }
                }
                _ = closer.changed() => return,
                _ = sleep_until(deadline) => return,
                _ = self.tx.closed() => return,
            }
        }
    }

    /// The event line for a stored object: as the resource presents it, or as a one-row Table.
    fn event(&mut self, kind: &str, stored: &Value) -> Bytes {
        match self.table {
            Some(format) => {
                let rv = crate::meta::str_at(stored, "/metadata/resourceVersion");
                let table = format.table(self.resource, [stored], rv, !self.headers_sent);
                self.headers_sent = true;
                event(kind, &table)
            }
            None => event(kind, &convert::present(self.resource, stored)),
        }
    }

    /// Sends a change if this watch sees it; false once the client is gone.
    async fn forward(&mut self, change: &Change, seen: &mut u64) -> bool {
        if change.rv <= *seen {
            return true;
        }
        *seen = change.rv;
        if !std::ptr::eq(change.key.resource, self.resource.storage()) {
            return true;
        }
        match seen_as(change, &self.filter) {
            Some(kind) => {
                let line = self.event(kind, &change.object);
                self.tx.send(line).await.is_ok()
            }
            None => true,
        }
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}
