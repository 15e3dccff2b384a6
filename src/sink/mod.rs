//! Sinks: where finished events go, and when they count as delivered.
//!
//! The agent's loop pushes events into an [`EventSink`] and moves
//! checkpoints only by what the sink acknowledges. [`StdoutSink`] prints
//! JSON lines and acknowledges once they are flushed; [`WebSocketSink`]
//! batches them for the backend and acknowledges what the backend
//! acknowledged.

pub mod stdout;
pub mod websocket;

use std::io;
use std::time::Instant;

pub use stdout::StdoutSink;
pub use websocket::WebSocketSink;

use crate::batch::Origin;

/// Where events go.
pub trait EventSink {
    /// Takes one event (a JSON object) whose line ends at `origin`.
    fn push(&mut self, event: &[u8], origin: Origin) -> io::Result<()>;
    /// Sends what is due: full batches, an open batch past its time, or
    /// everything with `all` (the reader has nothing more for now).
    fn flush(&mut self, now: Instant, all: bool) -> io::Result<()>;
    /// Origins acknowledged since the last call.
    fn take_acks(&mut self, out: &mut Vec<Origin>);
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
}

impl<W: io::Write> EventSink for StdoutSink<W> {
    fn push(&mut self, event: &[u8], origin: Origin) -> io::Result<()> {
        self.write_event(event)?;
        self.written.push(origin);
        Ok(())
    }

    fn flush(&mut self, _now: Instant, _all: bool) -> io::Result<()> {
        StdoutSink::flush(self)?;
        // Written and flushed is delivered, for standard output.
        self.delivered.append(&mut self.written);
        Ok(())
    }

    fn take_acks(&mut self, out: &mut Vec<Origin>) {
        out.append(&mut self.delivered);
    }

    fn is_full(&self) -> bool {
        false
    }

    fn deadline(&self) -> Option<Instant> {
        None
    }

    fn close(&mut self) -> io::Result<()> {
        EventSink::flush(self, Instant::now(), true)
    }

    fn is_finished(&self) -> bool {
        true
    }
}
