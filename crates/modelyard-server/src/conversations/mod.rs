//! Conversations: the turn engine, live events and their bus.
//!
//! - [`bus`]: fan-out of persisted and transient events to subscribers.
//! - [`live`]: running turns, their bounded transient buffers, cancel handles.
//! - [`engine`]: starting, running, cancelling and recovering turns.
//! - [`configs`]: the LLM configs a turn's model resolution looks at.

pub mod bus;
pub mod configs;
pub mod engine;
pub mod live;
