//! Conversations: the turn engine, live events and their bus.
//!
//! - [`bus`]: fan-out of persisted and transient events to subscribers.
//! - [`live`]: running turns, their bounded transient buffers, cancel handles.
//! - [`engine`]: starting, running (in tool-call steps), cancelling and
//!   recovering turns.
//! - [`call`]: one streamed model call of a turn (chat step or advisor).
//! - [`advisor`]: the advisor, a server-side tool consulting another model.
//! - [`configs`]: the LLM configs a turn's model resolution looks at.

pub mod advisor;
pub mod bus;
pub mod call;
pub mod configs;
pub mod engine;
pub mod live;
pub mod nats_bus;
