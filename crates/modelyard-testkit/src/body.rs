//! Scripted response bodies: data, sleeps, flushes and a mid-body failure, played in order.

use std::io;
use std::time::Duration;

use axum::body::Body;
use bytes::Bytes;

use crate::guards::{InFlight, StreamGuard};

pub(crate) enum Step {
    Data(Bytes),
    Sleep(Duration),
    /// Return `Pending` once so hyper flushes what it has buffered.
    Flush,
    /// Yield an error: hyper aborts the connection mid-body.
    Fail,
}

pub(crate) struct BodyState {
    steps: std::vec::IntoIter<Step>,
    guard: Option<StreamGuard>,
}

impl BodyState {
    fn finish(&mut self) {
        if let Some(g) = self.guard.as_mut() {
            g.finished = true;
        }
    }
}

/// A body that plays `steps`; with a guard, dropping it early counts a cancelled stream.
pub(crate) fn step_body(steps: Vec<Step>, in_flight: Option<InFlight>) -> Body {
    let state = BodyState {
        steps: steps.into_iter(),
        guard: in_flight.map(|in_flight| StreamGuard {
            finished: false,
            in_flight,
        }),
    };
    let stream = futures_util::stream::unfold(state, |mut st| async move {
        loop {
            match st.steps.next() {
                None => {
                    st.finish();
                    return None;
                }
                Some(Step::Data(b)) => {
                    if st.steps.len() == 0 {
                        st.finish();
                    }
                    return Some((Ok::<Bytes, io::Error>(b), st));
                }
                Some(Step::Sleep(d)) => tokio::time::sleep(d).await,
                Some(Step::Flush) => tokio::task::yield_now().await,
                Some(Step::Fail) => {
                    st.finish();
                    return Some((Err(io::Error::other("mock upstream: aborted mid-body")), st));
                }
            }
        }
    });
    Body::from_stream(stream)
}
