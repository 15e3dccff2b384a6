//! The backend sink: events into batches, batches to the [`Sender`].

use std::collections::VecDeque;
use std::io;
use std::time::Instant;

use super::EventSink;
use crate::batch::{Batch, BatchBuilder, BatchLimits, Origin};
use crate::send::Sender;

/// Batches events and hands them to the sender thread.
pub struct WebSocketSink {
    builder: BatchBuilder,
    sender: Sender,
    /// Closed batches the sender's queue had no room for yet.
    waiting: VecDeque<Batch>,
    closed: bool,
}

impl WebSocketSink {
    pub fn new(limits: BatchLimits, sender: Sender) -> Self {
        WebSocketSink {
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

impl EventSink for WebSocketSink {
    fn push(&mut self, event: &[u8], origin: Origin) -> io::Result<()> {
        if let Some(batch) = self.builder.push(event, origin) {
            self.waiting.push_back(batch);
            self.offer_waiting();
        }
        Ok(())
    }

    fn flush(&mut self, now: Instant, all: bool) -> io::Result<()> {
        // Clears the sender's wake-up flag too: room freed later wakes us.
        self.sender.rearm();
        if let Some(batch) = self.builder.close_if_due(now, all) {
            self.waiting.push_back(batch);
        }
        self.offer_waiting();
        Ok(())
    }

    fn take_acks(&mut self, out: &mut Vec<Origin>) {
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
}
