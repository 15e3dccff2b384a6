//! Deliver: where finished events go, and when they count as delivered.
//!
//! The agent's loop pushes each event into an [`EventSink`] with the
//! [`AckPoint`] of its line, and moves checkpoints only by the origins the
//! sink hands back as acknowledged. [`StdoutSink`] prints JSON lines and
//! acknowledges once they are flushed; [`BackendSink`] batches events for
//! the backend and acknowledges what the backend acknowledged (see
//! [`backend`]).

pub mod backend;
pub mod stdout;

use std::io;
use std::time::Instant;

pub(crate) use backend::BackendSink;
pub(crate) use stdout::StdoutSink;

/// Where an event's line ends: which of the agent's sources, which part of
/// it (for files: the open file), and where in that part (for files: the
/// byte after the line). Acknowledging a point acknowledges every line of
/// that part up to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AckPoint {
    pub source: u32,
    pub part: u64,
    pub end: u64,
}

/// Where events go.
pub trait EventSink {
    /// Takes one event (a JSON object) whose line ends at `origin`.
    fn push(&mut self, event: &[u8], origin: AckPoint) -> io::Result<()>;
    /// Sends what is due: full batches, or an open batch past its time.
    fn flush(&mut self, now: Instant) -> io::Result<()>;
    /// Origins acknowledged since the last call.
    fn take_acks(&mut self, out: &mut Vec<AckPoint>);
    /// True while the sink takes no more events (backpressure): the agent
    /// stops reading until it has room again.
    fn is_full(&self) -> bool;
    /// When `flush` will have something to do without new events.
    fn deadline(&self) -> Option<Instant>;
    /// No more events: deliver what is open. Returns when everything is
    /// delivered, or at once if that must be waited for with
    /// [`EventSink::is_finished`].
    fn close(&mut self) -> io::Result<()>;
    /// After `close`: true once everything is delivered.
    fn is_finished(&self) -> bool;
    /// Gives up what is not delivered, at once: a reload replaces this
    /// sink, and the tailer reads the unacknowledged lines again.
    fn abort(&mut self) {}
}
