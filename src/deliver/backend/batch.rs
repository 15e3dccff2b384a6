//! Batch: group events for the wire, closing a batch at N events, B bytes
//! or T milliseconds, whichever comes first.
//!
//! Events are appended to one buffer, comma-separated, after [`HEAD_ROOM`]
//! bytes left free, so that the batch message is written around them in
//! place (the envelope's head into that room, its tail after them) without
//! copying or re-encoding them; each event's span and the place its line
//! ends in its file (what an acknowledgement moves the checkpoint to) are
//! kept beside it.

use std::time::{Duration, Instant};

use crate::deliver::AckPoint;

/// When a batch closes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchLimits {
    pub max_events: usize,
    pub max_bytes: usize,
    pub linger: Duration,
}

impl Default for BatchLimits {
    fn default() -> Self {
        BatchLimits {
            max_events: 1000,
            max_bytes: 128 * 1024,
            linger: Duration::from_millis(2),
        }
    }
}

/// Bytes left free at the start of every batch body, for the envelope's
/// head (`{"type":"batch","seq":N,"events":[`, at most 53 bytes).
pub(crate) const HEAD_ROOM: usize = 56;

/// Closed events, ready to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Batch {
    /// [`HEAD_ROOM`] free bytes, then the events, comma-separated JSON
    /// objects.
    pub body: Vec<u8>,
    /// Each event's span in `body`.
    pub spans: Vec<(usize, usize)>,
    /// Each event's origin, for acknowledgements.
    pub origins: Vec<AckPoint>,
    /// When it took its first event.
    pub opened: Instant,
}

impl Default for Batch {
    fn default() -> Self {
        Batch {
            body: vec![0; HEAD_ROOM],
            spans: Vec::new(),
            origins: Vec::new(),
            opened: Instant::now(),
        }
    }
}

impl Batch {
    pub fn len(&self) -> usize {
        self.spans.len()
    }

    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    /// The `i`th event's JSON.
    pub fn event(&self, i: usize) -> &[u8] {
        let (a, b) = self.spans[i];
        &self.body[a..b]
    }

    /// The events, comma-separated, without the room before them.
    #[cfg(test)]
    pub fn events(&self) -> &[u8] {
        &self.body[HEAD_ROOM..]
    }
}

/// Beyond `max_bytes`, room for the event that crosses it.
const BODY_SLACK: usize = 8 * 1024;

/// Collects events into batches.
#[derive(Debug)]
pub(crate) struct BatchBuilder {
    limits: BatchLimits,
    open: Batch,
    opened_at: Option<Instant>,
}

impl BatchBuilder {
    pub fn new(limits: BatchLimits) -> Self {
        BatchBuilder {
            limits,
            open: Batch::default(),
            opened_at: None,
        }
    }

    /// Adds an event; returns the batch it closed, if it filled one.
    pub fn push(&mut self, event: &[u8], origin: AckPoint) -> Option<Batch> {
        if self.open.is_empty() {
            let now = Instant::now();
            self.opened_at = Some(now);
            self.open.opened = now;
        } else {
            self.open.body.push(b',');
        }
        let start = self.open.body.len();
        self.open.body.extend_from_slice(event);
        self.open.spans.push((start, self.open.body.len()));
        self.open.origins.push(origin);
        let full = self.open.len() >= self.limits.max_events
            || self.open.body.len() - HEAD_ROOM >= self.limits.max_bytes;
        full.then(|| self.take())
    }

    /// When the open batch must be closed at the latest.
    pub fn deadline(&self) -> Option<Instant> {
        self.opened_at.map(|t| t + self.limits.linger)
    }

    /// Closes the open batch if its time is up (or `force`).
    pub(crate) fn close_if_due(&mut self, now: Instant, force: bool) -> Option<Batch> {
        let due = self.deadline().is_some_and(|d| now >= d);
        (!self.open.is_empty() && (due || force)).then(|| self.take())
    }

    fn take(&mut self) -> Batch {
        self.opened_at = None;
        let mut next = Batch::default();
        // Room for a full batch at once: growing by doubling would copy the
        // body several times and leave a buffer up to twice the limit. (A
        // batch closes on the event that reaches the limit, so one long
        // line may still make it grow.)
        let expected = self.limits.max_bytes.saturating_add(BODY_SLACK);
        // (`reserve` counts beyond the head room the body already holds.)
        next.body
            .reserve(expected.min(self.open.body.capacity().max(BODY_SLACK)));
        std::mem::replace(&mut self.open, next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn o(part: u64, end: u64) -> AckPoint {
        AckPoint {
            source: 0,
            part,
            end,
        }
    }

    #[test]
    fn closes_at_count_bytes_or_time() {
        let mut b = BatchBuilder::new(BatchLimits {
            max_events: 3,
            max_bytes: 20,
            linger: Duration::from_millis(50),
        });
        assert!(b.push(b"{\"a\":1}", o(1, 10)).is_none());
        assert!(b.push(b"{\"a\":2}", o(1, 20)).is_none());
        let full = b.push(b"{}", o(1, 30)).expect("three events close it");
        assert_eq!(full.events(), b"{\"a\":1},{\"a\":2},{}");
        assert_eq!(full.event(1), b"{\"a\":2}");
        assert_eq!(full.origins, vec![o(1, 10), o(1, 20), o(1, 30)]);

        let big = b.push(&[b'x'; 25], o(2, 5)).expect("bytes close it");
        assert_eq!(big.len(), 1);

        b.push(b"{}", o(3, 1));
        assert!(b.close_if_due(Instant::now(), false).is_none());
        let later = Instant::now() + Duration::from_millis(60);
        assert_eq!(b.close_if_due(later, false).map(|x| x.len()), Some(1));
        assert!(b.deadline().is_none());
    }
}
