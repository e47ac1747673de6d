//! A request body read by the activator's own HTTP/1 server ([`crate::server::http1`]) for
//! whoever sends it on: one frame at a time, read from the client's socket only when the
//! consumer asks for more, so a replica that reads slowly slows the client down and nothing is
//! buffered in between.
//!
//! [`ClientBody`] is the consumer's end, a [`Body`]; [`BodyFeed`] the server's. They meet in one
//! small slot behind a mutex that is never held across an await and rarely contended (the
//! consumer is polled by the server's own task, or by an HTTP/2 replica connection's).

use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};

use super::BoxError;

#[derive(Debug, Default)]
struct Slot {
    /// A frame read and not yet taken.
    frame: Option<Frame<Bytes>>,
    /// The body ended: `Ok` once everything was read, `Err` if the client failed.
    end: Option<Result<(), ClientBodyError>>,
    /// The consumer waits for a frame.
    wanted: bool,
    /// The consumer is gone.
    dropped: bool,
    consumer: Option<Waker>,
    feeder: Option<Waker>,
}

fn lock(slot: &Mutex<Slot>) -> MutexGuard<'_, Slot> {
    // The slot is consistent between any two statements; a panic elsewhere leaves it usable.
    slot.lock().unwrap_or_else(|e| e.into_inner())
}

fn wake(waker: &mut Option<Waker>) {
    if let Some(waker) = waker.take() {
        waker.wake();
    }
}

/// Why a client's request body ended before it was whole.
#[derive(Debug, Clone, thiserror::Error)]
pub(crate) enum ClientBodyError {
    /// Its framing could not be read (a malformed chunk): the client's fault, answered 400.
    #[error("the request body is not well-formed: {0}")]
    Malformed(String),
    /// The client went away or its connection failed.
    #[error("{0}")]
    Failed(&'static str),
}

impl ClientBodyError {
    /// Whether `error`, as a client's body gave it, says the body was malformed.
    pub(crate) fn malformed_in(error: &(dyn std::error::Error + 'static)) -> bool {
        matches!(
            error.downcast_ref::<ClientBodyError>(),
            Some(ClientBodyError::Malformed(_))
        )
    }
}

/// The consumer's end of a client's request body.
#[derive(Debug)]
pub(crate) struct ClientBody {
    slot: Arc<Mutex<Slot>>,
    /// Bytes still to come, when the length is known.
    left: Option<u64>,
    ended: bool,
}

/// The server's end: what it reads from the client goes in here.
#[derive(Debug)]
pub(crate) struct BodyFeed {
    slot: Arc<Mutex<Slot>>,
}

/// A body of `length` bytes (`None`: until its chunked coding ends), and the feed that fills it.
pub(crate) fn channel(length: Option<u64>) -> (ClientBody, BodyFeed) {
    let slot = Arc::new(Mutex::new(Slot::default()));
    (
        ClientBody {
            slot: Arc::clone(&slot),
            left: length,
            ended: false,
        },
        BodyFeed { slot },
    )
}

impl Body for ClientBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if self.ended {
            return Poll::Ready(None);
        }
        let mut slot = lock(&self.slot);
        if let Some(frame) = slot.frame.take() {
            drop(slot);
            if let (Some(left), Some(data)) = (self.left.as_mut(), frame.data_ref()) {
                *left = left.saturating_sub(data.len() as u64);
            }
            return Poll::Ready(Some(Ok(frame)));
        }
        match slot.end.take() {
            Some(Ok(())) => {
                drop(slot);
                self.ended = true;
                Poll::Ready(None)
            }
            Some(Err(error)) => {
                drop(slot);
                self.ended = true;
                Poll::Ready(Some(Err(error.into())))
            }
            None => {
                slot.wanted = true;
                if !slot
                    .consumer
                    .as_ref()
                    .is_some_and(|w| w.will_wake(cx.waker()))
                {
                    slot.consumer = Some(cx.waker().clone());
                }
                wake(&mut slot.feeder);
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.ended || self.left == Some(0)
    }

    fn size_hint(&self) -> SizeHint {
        match self.left {
            Some(left) => SizeHint::with_exact(left),
            None => SizeHint::default(),
        }
    }
}

impl Drop for ClientBody {
    fn drop(&mut self) {
        let mut slot = lock(&self.slot);
        slot.dropped = true;
        wake(&mut slot.feeder);
    }
}

impl BodyFeed {
    /// Whether the consumer waits for a frame; if not, the calling task is woken once it does
    /// (or once it is gone).
    pub(crate) fn poll_wanted(&self, cx: &mut Context<'_>) -> Poll<()> {
        let mut slot = lock(&self.slot);
        if slot.dropped || (slot.wanted && slot.frame.is_none() && slot.end.is_none()) {
            return Poll::Ready(());
        }
        if !slot
            .feeder
            .as_ref()
            .is_some_and(|w| w.will_wake(cx.waker()))
        {
            slot.feeder = Some(cx.waker().clone());
        }
        Poll::Pending
    }

    /// Whether the consumer is gone (it will read no more).
    pub(crate) fn is_dropped(&self) -> bool {
        lock(&self.slot).dropped
    }

    /// Hands the consumer some data.
    pub(crate) fn data(&self, data: Bytes) {
        self.give(Frame::data(data));
    }

    /// Hands the consumer the trailer fields.
    pub(crate) fn trailers(&self, trailers: HeaderMap) {
        self.give(Frame::trailers(trailers));
    }

    fn give(&self, frame: Frame<Bytes>) {
        let mut slot = lock(&self.slot);
        slot.frame = Some(frame);
        slot.wanted = false;
        wake(&mut slot.consumer);
    }

    /// Ends the body: whole, or cut short by `error`.
    pub(crate) fn end(&self, result: Result<(), ClientBodyError>) {
        let mut slot = lock(&self.slot);
        slot.end = Some(result);
        slot.wanted = false;
        wake(&mut slot.consumer);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn frames_pass_one_at_a_time_when_asked_for_and_the_end_follows() {
        let (body, feed) = channel(Some(5));
        let feeder = tokio::spawn(async move {
            for piece in ["he", "llo"] {
                std::future::poll_fn(|cx| feed.poll_wanted(cx)).await;
                feed.data(Bytes::from(piece));
            }
            std::future::poll_fn(|cx| feed.poll_wanted(cx)).await;
            feed.end(Ok(()));
            feed
        });
        let collected = body.collect().await.unwrap().to_bytes();
        assert_eq!(&collected[..], b"hello");
        let feed = feeder.await.unwrap();
        assert!(feed.is_dropped());
    }

    #[tokio::test]
    async fn a_body_cut_short_fails_its_consumer() {
        let (body, feed) = channel(None);
        feed.end(Err(ClientBodyError::Failed("the client went away")));
        let error = body.collect().await.unwrap_err();
        assert!(error.to_string().contains("went away"));
        assert!(!ClientBodyError::malformed_in(&*error));
    }

    #[tokio::test]
    async fn a_malformed_body_is_told_apart_from_a_failed_one() {
        let (body, feed) = channel(None);
        feed.end(Err(ClientBodyError::Malformed(
            "a chunk size is not hexadecimal".into(),
        )));
        let error = body.collect().await.unwrap_err();
        assert!(ClientBodyError::malformed_in(&*error));
    }
}
