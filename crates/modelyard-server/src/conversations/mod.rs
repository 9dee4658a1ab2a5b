//! Conversations: the turn engine, live events and their bus.
//!
//! - [`bus`]: fan-out of persisted and transient events to subscribers.
//! - [`live`]: running turns, their bounded transient buffers, cancel handles.
//! - [`engine`]: starting, running, cancelling and recovering turns.

pub mod bus;
pub mod engine;
pub mod live;
