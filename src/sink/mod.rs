//! Sinks: where finished events go.
//!
//! A sink takes events (one JSON object each) and reports them delivered.
//! The [`StdoutSink`] prints JSON lines and counts a written line as
//! delivered; the WebSocket sink delivers to the backend.

pub mod stdout;

pub use stdout::StdoutSink;
