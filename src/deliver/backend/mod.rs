//! The backend: events into batches, batches over a WebSocket, and the
//! secret key fetched from the backend's HTTP API.
//!
//! [`BackendSink`] is the agent's [`EventSink`] for the backend: it closes
//! batches ([`batch`]) and offers them to the [`Sender`] thread
//! ([`sender`]), which delivers them on a [`connection`] in the exchange the
//! `wire` setting names ([`wire`]), compressed when the backend agrees
//! ([`compression`]), over TCP or TLS for `wss://` ([`transport`], [`tls`]).
//! Failures are [`SendError`]s, retried by reconnecting; the [`outbox`]
//! narrows a message the backend will not take down to the event, which
//! goes to the [`dead_letter`] file so nothing waits behind it.
//! [`secret_key`] fetches the key the client IPs are hashed with.

pub mod batch;
pub mod compression;
mod connection;
pub mod dead_letter;
pub mod error;
pub mod event_deflate;
mod outbox;
pub mod secret_key;
pub mod sender;
pub mod stats;
pub mod tls;
mod transport;
pub mod wire;

pub use error::SendError;
pub(crate) use outbox::RefusalPolicy;
pub use sender::Sender;
pub use sender::SenderConfig;
pub use stats::SenderStats;
pub(crate) use wire::Wire;

use std::collections::VecDeque;
use std::io;
use std::time::Instant;

use super::{AckPoint, EventSink};
use batch::{Batch, BatchBuilder, BatchLimits};

/// Batches events and hands them to the sender thread.
pub(crate) struct BackendSink {
    builder: BatchBuilder,
    sender: Sender,
    /// Closed batches the sender's queue had no room for yet.
    waiting: VecDeque<Batch>,
    closed: bool,
}

impl BackendSink {
    pub fn new(limits: BatchLimits, sender: Sender) -> Self {
        BackendSink {
            builder: BatchBuilder::new(limits),
            sender,
            waiting: VecDeque::new(),
            closed: false,
        }
    }

    /// Offers waiting batches to the sender, oldest first.
    fn offer_waiting(&mut self) {
        while let Some(batch) = self.waiting.pop_front() {
            if let Err(batch) = self.sender.offer(batch) {
                self.waiting.push_front(batch);
                break;
            }
        }
    }
}

impl EventSink for BackendSink {
    fn push(&mut self, event: &[u8], origin: AckPoint) -> io::Result<()> {
        if let Some(batch) = self.builder.push(event, origin) {
            self.waiting.push_back(batch);
            self.offer_waiting();
        }
        Ok(())
    }

    fn flush(&mut self, now: Instant) -> io::Result<()> {
        if let Some(batch) = self.builder.close_if_due(now, false) {
            self.waiting.push_back(batch);
        }
        self.offer_waiting();
        Ok(())
    }

    fn take_acks(&mut self, out: &mut Vec<AckPoint>) {
        self.sender.take_acks(out);
    }

    fn is_full(&self) -> bool {
        !self.waiting.is_empty()
    }

    fn deadline(&self) -> Option<Instant> {
        self.builder.deadline()
    }

    fn close(&mut self) -> io::Result<()> {
        if let Some(batch) = self.builder.close_if_due(Instant::now(), true) {
            self.waiting.push_back(batch);
        }
        self.offer_waiting();
        if self.waiting.is_empty() && !self.closed {
            self.sender.close();
            self.closed = true;
        }
        Ok(())
    }

    fn is_finished(&self) -> bool {
        self.closed && self.sender.is_finished()
    }

    fn abort(&mut self) {
        self.waiting.clear();
        self.sender.abort();
        self.closed = true;
    }
}
