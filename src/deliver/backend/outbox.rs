//! The sender's work across connections, and how a message the backend
//! will not take is narrowed down instead of stopping everything behind it.
//!
//! [`Outbox`] holds the units the agent handed over and the backend has
//! not acknowledged, oldest first. A [`super::connection::Connection`]
//! sends them and pops what is acknowledged; when a connection ends while
//! the oldest unit was in flight, [`Outbox::connection_ended`] counts a
//! refusal against that unit:
//!
//! - a unit with a refusal is sent alone on the next connection, so the
//!   next ending can only be its own;
//! - refused twice (or closed with 1009, "message too big"), a unit of
//!   several events is split in halves, down to single events;
//! - an event refused alone `dead_letter_after` times is set aside, and the
//!   rest goes on; as soon as the backend acknowledges anything else, the
//!   event is written to the dead-letter file ([`super::dead_letter`]) and
//!   acknowledged, so its checkpoint moves. A backend that takes nothing at
//!   all (down, or refusing every batch) never sends an event there: it
//!   stops progress visibly, as the contract wants. A 1009 for an event
//!   alone needs no such proof: the event itself is too big.
//!
//! A limit on message size (`max_message_bytes`, or learnt from a 1009 or
//! from a split whose pieces went through after resets) makes larger units
//! split before they are sent.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc as std_mpsc;

use tokio::sync::mpsc;

use super::batch::Batch;
use super::dead_letter::DeadLetters;
use super::error::SendError;
use super::stats::SenderStats;
use super::wire::{Unit, Wire};
use crate::deliver::AckPoint;
use crate::wake::{Wake, Waker};

/// What to do with messages the backend will not take.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefusalPolicy {
    /// Refusals of one event alone before it is a dead letter.
    pub dead_letter_after: u32,
    /// Where dead letters go; `None`: nowhere, the event waits.
    pub dead_letters: Option<DeadLetters>,
    /// No message larger than this (a backend's known limit).
    pub max_message_bytes: Option<usize>,
    /// A message larger than this (a batch made big by a long line) goes
    /// alone: nothing else is in flight with it, so that a backend that
    /// cuts the connection over it loses no acknowledgement of another.
    pub alone_above: usize,
}

impl Default for RefusalPolicy {
    fn default() -> Self {
        RefusalPolicy {
            dead_letter_after: 3,
            dead_letters: None,
            max_message_bytes: None,
            alone_above: 2 * super::batch::BatchLimits::default().max_bytes,
        }
    }
}

/// A limit learnt from the backend never goes below this: messages of a
/// few dozen events still go out whole.
const LEARNT_LIMIT_FLOOR: usize = 16 * 1024;

/// An event refused too often, set aside until the backend takes something
/// else.
struct Held {
    unit: Unit,
    /// Acknowledgements of later units, handed to the agent once this one
    /// is settled (acknowledging a later line first would move its file's
    /// checkpoint past this one).
    later: Vec<Vec<AckPoint>>,
}

/// The sender's work, across connections.
pub(super) struct Outbox {
    /// Units taken from the queue and not acknowledged, oldest first.
    pub pending: VecDeque<Unit>,
    pub queue: mpsc::Receiver<Batch>,
    /// The agent closed the queue: nothing more will come.
    pub closed: bool,
    acks: std_mpsc::Sender<Vec<AckPoint>>,
    waker: Waker,
    pub stats: Arc<SenderStats>,
    policy: RefusalPolicy,
    /// The message size limit in force: configured, or learnt.
    max_message: Option<usize>,
    held: Option<Held>,
    /// Acknowledgements handed over without waking the agent: the next
    /// batch taken from the queue wakes it (see [`Outbox::settle`]).
    acks_unannounced: bool,
}

impl Outbox {
    pub fn new(
        queue: mpsc::Receiver<Batch>,
        acks: std_mpsc::Sender<Vec<AckPoint>>,
        waker: Waker,
        stats: Arc<SenderStats>,
        policy: RefusalPolicy,
    ) -> Self {
        Outbox {
            pending: VecDeque::new(),
            queue,
            closed: false,
            acks,
            waker,
            stats,
            max_message: policy.max_message_bytes,
            policy,
            held: None,
            acks_unannounced: false,
        }
    }

    /// Everything handed over is acknowledged and nothing more will come.
    pub(crate) fn is_done(&self) -> bool {
        self.closed && self.pending.is_empty() && self.held.is_none()
    }

    /// Units not acknowledged (a held one included).
    pub fn unacknowledged(&self) -> usize {
        self.pending.len() + usize::from(self.held.is_some())
    }

    /// With nothing else to send and nothing more to come, an event set
    /// aside is tried again itself: nothing could prove that the backend
    /// takes other events (and `--once` would wait for ever).
    pub(crate) fn retry_held_if_alone(&mut self) {
        if self.closed
            && self.pending.is_empty()
            && self.held.as_ref().is_some_and(|h| h.later.is_empty())
            && let Some(held) = self.held.take()
        {
            self.pending.push_back(held.unit);
        }
    }

    /// Whether the agent's next batch may be taken: not while acknowledgements
    /// wait behind an event that cannot be written off.
    pub(crate) fn has_room(&self, window: usize) -> bool {
        !self.closed
            && self.pending.len() < window
            && self.held.as_ref().is_none_or(|h| h.later.is_empty())
    }

    /// Messages that may be in flight now: one while the oldest was refused
    /// before (so that the next ending can only be its own), or is
    /// oversized.
    pub fn window(&self, configured: usize) -> usize {
        match self.pending.front() {
            Some(u) if u.refusals > 0 || self.oversized(u) => 1,
            _ => configured,
        }
    }

    /// Whether `pending[i]` must wait until nothing else is in flight.
    pub(crate) fn goes_alone(&self, i: usize) -> bool {
        self.pending
            .get(i)
            .is_some_and(|u| u.refusals > 0 || self.oversized(u))
    }

    fn oversized(&self, unit: &Unit) -> bool {
        unit.message_len() > self.policy.alone_above
    }

    /// Makes `pending[i]` fit the message size limit, splitting it.
    pub fn fit(&mut self, i: usize) {
        let Some(max) = self.max_message else { return };
        let Some(unit) = self.pending.get(i) else {
            return;
        };
        if unit.len() < 2 || unit.message_len() <= max {
            return;
        }
        let at = unit.events_fitting(max).min(unit.len() - 1);
        if let Some(unit) = self.pending.remove(i) {
            let (refusals, why) = (unit.refusals, unit.last_refusal.clone());
            let (mut first, mut rest) = unit.split(at);
            // Pieces of a refused message are still suspects: they go
            // alone until the backend takes them.
            for piece in [&mut first, &mut rest] {
                piece.refusals = refusals;
                piece.last_refusal.clone_from(&why);
            }
            self.pending.insert(i, rest);
            self.pending.insert(i, first);
        }
    }

    /// The oldest unit is acknowledged: its origins go back to the agent.
    pub(crate) fn acknowledge_oldest(&mut self) {
        let Some(unit) = self.pending.pop_front() else {
            return;
        };
        if let Some(parent) = unit.split_from {
            // The limit lies between this piece and its parent.
            let limit = unit.message_len().max(parent / 2);
            self.learn_limit(limit, "pieces of a message it cut went through");
        }
        self.stats.working();
        self.settle(unit, false);
        // The backend takes messages: an event set aside is its own problem.
        if self.held.is_some() {
            self.write_off_held();
        }
    }

    /// Hands a settled unit's origins to the agent (or keeps them behind a
    /// held event), with the counts.
    fn settle(&mut self, unit: Unit, dead: bool) {
        let n = unit.len() as u64;
        let stats = &self.stats;
        if dead {
            SenderStats::add(&stats.events_dead_lettered, n);
        } else {
            SenderStats::add(&stats.events_acked, n);
            stats
                .delivery_latency
                .observe(unit.opened.elapsed().as_secs_f64());
        }
        stats.in_flight_events.fetch_sub(n, Ordering::Relaxed);
        let oldest = self.pending.front().map_or(0, |u| u.handed_ms);
        stats.oldest_unacked_ms.store(oldest, Ordering::Relaxed);
        match &mut self.held {
            Some(held) if !dead => held.later.push(unit.origins),
            _ => {
                let _ = self.acks.send(unit.origins);
                // While batches wait in the queue, the room this makes
                // is taken next and wakes the agent (`Space`), who then
                // takes these too: one wake-up a batch from a slow backend
                // rather than two. Should nothing be taken after all,
                // [`Outbox::announce_acks`] wakes it.
                if self.queue.is_empty() {
                    self.waker.wake(Wake::Acked);
                } else {
                    self.acks_unannounced = true;
                }
            }
        }
    }

    /// Writes the held event to the dead-letter file and acknowledges it,
    /// then what was acknowledged behind it. When it cannot be written,
    /// everything waits behind it (and the agent stops reading).
    fn write_off_held(&mut self) {
        let Some(held) = self.held.as_mut() else {
            return;
        };
        let unit = &held.unit;
        let written = match &self.policy.dead_letters {
            Some(letters) => letters.write(unit.event(0), &unit.last_refusal),
            None => Err(std::io::Error::other(
                "no state folder to keep dead letters in",
            )),
        };
        let id = event_id(unit.event(0));
        if let Err(e) = written {
            if held.later.len() <= 1 {
                tracing::error!(
                    "event {id} is refused by the backend and cannot be set aside: {e}; delivery waits for it"
                );
            }
            return;
        }
        let where_ = self
            .policy
            .dead_letters
            .as_ref()
            .map(|d| d.path().display().to_string())
            .unwrap_or_default();
        tracing::warn!(
            "event {id} was refused {} times ({}) while the backend took other events: written to {where_}; `cerberus-agent replay-dead-letters` sends it again",
            unit.refusals,
            unit.last_refusal
        );
        if let Some(held) = self.held.take() {
            self.settle(held.unit, true);
            for origins in held.later {
                let _ = self.acks.send(origins);
            }
            self.waker.wake(Wake::Acked);
        }
    }

    /// Takes a batch from the agent.
    pub fn take(&mut self, batch: Batch, wire: Wire) {
        let stats = &self.stats;
        let n = batch.len() as u64;
        stats.batch_events.observe(n as f64);
        stats.in_flight_events.fetch_add(n, Ordering::Relaxed);
        let units = wire.units(batch);
        if self.pending.is_empty()
            && let Some(first) = units.first()
        {
            stats
                .oldest_unacked_ms
                .store(first.handed_ms, Ordering::Relaxed);
        }
        self.pending.extend(units);
        self.acks_unannounced = false;
        self.waker.wake(Wake::Space);
    }

    /// No batch is taken next: wakes the agent for acknowledgements that
    /// were left to ride on that wake-up.
    pub(crate) fn announce_acks(&mut self) {
        if std::mem::take(&mut self.acks_unannounced) {
            self.waker.wake(Wake::Acked);
        }
    }

    /// A connection ended with `why`, with messages of `in_flight` bytes
    /// (oldest first) not acknowledged. Counts a refusal against the oldest
    /// unit and narrows it down; returns whether that made progress (a
    /// split, or an event set aside), which is worth retrying at once.
    pub(crate) fn connection_ended(&mut self, why: &SendError, in_flight: &[usize]) -> bool {
        // With nothing else to try it against, a held event is tried again.
        if self.pending.is_empty()
            && let Some(held) = self.held.take()
        {
            self.pending.push_front(held.unit);
            // (Nothing was acknowledged behind it: nothing was sent.)
        }
        if in_flight.is_empty() || !why.blames_the_message() {
            return false;
        }
        let alone = in_flight.len() == 1;
        if why.too_big() {
            SenderStats::add(&self.stats.closes_too_big, 1);
            // The culprit is in flight, so the backend's limit is below the
            // largest message in flight: a little under half of it. A limit
            // just below the refused size may still be above the backend's
            // (a batch of twice a 64 KiB limit, halved, is a little over
            // it), and every refusal among pipelined messages costs the
            // acknowledgements the backend had not sent yet (repeats).
            let largest = in_flight.iter().copied().max().unwrap_or(0);
            let limit = largest / 32 * 15;
            self.learn_limit(limit, "it closed with 1009");
        }
        let Some(unit) = self.pending.front_mut() else {
            return false;
        };
        unit.refusals += 1;
        unit.last_refusal = why.to_string();
        SenderStats::add(&self.stats.messages_refused, 1);
        if unit.len() > 1 {
            if unit.refusals < 2 && !(why.too_big() && alone) {
                return false;
            }
            let size = unit.message_len();
            let Some(unit) = self.pending.pop_front() else {
                return false;
            };
            // Around its largest event when that one makes most of it (a
            // message too big is then found in one step), else in halves.
            let (at, largest) = unit.largest_event();
            let cut = if largest * 2 > size {
                if at > 0 { at } else { 1 }
            } else {
                unit.len() / 2
            };
            let (mut first, mut rest) = unit.split(cut);
            for piece in [&mut first, &mut rest] {
                // Still suspects: sent alone, split again at the next refusal.
                piece.refusals = 1;
                piece.last_refusal = why.to_string();
                piece.split_from = why.suggests_size().then_some(size);
            }
            tracing::info!(
                "the backend refused a message of {} events ({size} bytes): sending it in two ({} and {} events)",
                first.len() + rest.len(),
                first.len(),
                rest.len()
            );
            self.pending.push_front(rest);
            self.pending.push_front(first);
            return true;
        }
        if why.too_big() && alone {
            // Definitive: this event alone is more than the backend takes.
            if let Some(unit) = self.pending.pop_front() {
                self.held = Some(Held {
                    unit,
                    later: Vec::new(),
                });
                self.write_off_held();
                return true;
            }
            return false;
        }
        if unit.refusals < self.policy.dead_letter_after || self.held.is_some() {
            return false;
        }
        if let Some(unit) = self.pending.pop_front() {
            tracing::warn!(
                "event {} was refused {} times ({}): set aside while the next events are tried",
                event_id(unit.event(0)),
                unit.refusals,
                unit.last_refusal
            );
            self.held = Some(Held {
                unit,
                later: Vec::new(),
            });
        }
        // With nothing behind it, there is nothing to prove the backend
        // works: keep trying the event itself.
        if self.pending.is_empty()
            && self.closed
            && let Some(held) = self.held.take()
        {
            self.pending.push_front(held.unit);
            return false;
        }
        true
    }

    /// Messages above `limit` bytes are split from now on.
    fn learn_limit(&mut self, limit: usize, why: &str) {
        let limit = limit.max(LEARNT_LIMIT_FLOOR);
        if self.max_message.is_some_and(|m| m <= limit) {
            return;
        }
        if self.max_message.is_none() {
            tracing::warn!(
                "the backend refuses large messages ({why}): sending at most {limit} bytes a message from now on (set max_message_bytes to the backend's limit to start there)"
            );
        } else {
            tracing::debug!("message size limit lowered to {limit} bytes ({why})");
        }
        self.max_message = Some(limit);
    }
}

/// The `event_id` of an event's JSON, for messages.
fn event_id(event: &[u8]) -> String {
    #[derive(serde::Deserialize)]
    struct Id {
        event_id: Option<String>,
    }
    serde_json::from_slice::<Id>(event)
        .ok()
        .and_then(|i| i.event_id)
        .unwrap_or_else(|| "(without event_id)".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::deliver::backend::batch::{BatchBuilder, BatchLimits};
    use crate::deliver::backend::dead_letter;
    use crate::wake::Wakes;

    struct Fixture {
        outbox: Outbox,
        acks: std_mpsc::Receiver<Vec<AckPoint>>,
        queue: mpsc::Sender<Batch>,
        wakes: Wakes,
        dir: tempfile::TempDir,
    }

    fn fixture(policy: impl FnOnce(&std::path::Path) -> RefusalPolicy) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let (queue_tx, queue_rx) = mpsc::channel(2);
        let (ack_tx, acks) = std_mpsc::channel();
        let wakes = Wakes::new();
        let outbox = Outbox::new(
            queue_rx,
            ack_tx,
            wakes.waker(),
            Arc::default(),
            policy(dir.path()),
        );
        Fixture {
            outbox,
            acks,
            queue: queue_tx,
            wakes,
            dir,
        }
    }

    fn with_letters(dir: &std::path::Path) -> RefusalPolicy {
        RefusalPolicy {
            dead_letters: Some(DeadLetters::new(dir, 1 << 20)),
            ..RefusalPolicy::default()
        }
    }

    /// A batch of events `from..to`, each a line ending at its number.
    fn batch(from: u64, to: u64) -> Batch {
        let mut b = BatchBuilder::new(BatchLimits {
            max_events: 10_000,
            ..BatchLimits::default()
        });
        for i in from..to {
            let event = format!("{{\"event_id\":\"e{i}\",\"pad\":\"{}\"}}", "x".repeat(100));
            let _ = b.push(
                event.as_bytes(),
                AckPoint {
                    source: 0,
                    part: 1,
                    end: i,
                },
            );
        }
        b.close_if_due(std::time::Instant::now(), true).unwrap()
    }

    fn reset() -> SendError {
        SendError::Io(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "reset",
        ))
    }

    fn acked(f: &Fixture) -> Vec<u64> {
        f.acks.try_iter().flatten().map(|o| o.end).collect()
    }

    #[test]
    fn a_slow_backends_acknowledgement_wakes_the_agent_once_with_the_room_it_makes() {
        let mut f = fixture(|_| RefusalPolicy::default());
        f.outbox.take(batch(0, 2), Wire::Batch);
        assert!(f.wakes.take().contains(Wake::Space));
        // The agent filled the queue behind it: the backend holds it back.
        f.queue.try_send(batch(2, 4)).unwrap();
        f.outbox.acknowledge_oldest();
        assert!(
            f.wakes.take().is_empty(),
            "an acknowledgement alone wakes no one while batches wait"
        );
        // The room it made is taken at once; that wakes the agent, who
        // finds the acknowledgement.
        let next = f.outbox.queue.try_recv().unwrap();
        f.outbox.take(next, Wire::Batch);
        assert!(f.wakes.take().contains(Wake::Space));
        assert_eq!(acked(&f), vec![0, 1]);
        // With nothing waiting, an acknowledgement wakes the agent itself.
        f.outbox.acknowledge_oldest();
        assert!(f.wakes.take().contains(Wake::Acked));
        assert_eq!(acked(&f), vec![2, 3]);
    }

    #[test]
    fn an_acknowledgement_left_to_a_take_that_does_not_come_still_wakes_the_agent() {
        let mut f = fixture(|_| RefusalPolicy::default());
        f.outbox.take(batch(0, 2), Wire::Batch);
        f.outbox.take(batch(2, 4), Wire::Batch);
        f.wakes.take();
        f.queue.try_send(batch(4, 6)).unwrap();
        f.outbox.acknowledge_oldest();
        assert!(f.wakes.take().is_empty());
        // The sender has no room for the waiting batch: it says so.
        f.outbox.announce_acks();
        assert!(f.wakes.take().contains(Wake::Acked));
        assert_eq!(acked(&f), vec![0, 1]);
        // Once only.
        f.outbox.announce_acks();
        assert!(f.wakes.take().is_empty());
    }

    #[test]
    fn a_refused_batch_goes_alone_then_in_halves_down_to_one_event() {
        let mut f = fixture(with_letters);
        f.outbox.take(batch(0, 8), Wire::Batch);
        f.outbox.take(batch(8, 9), Wire::Batch);
        assert_eq!(f.outbox.window(8), 8);
        let size = f.outbox.pending[0].message_len();
        assert!(!f.outbox.connection_ended(&reset(), &[size, 100]));
        assert_eq!(f.outbox.window(8), 1, "a suspect goes alone");
        assert!(f.outbox.connection_ended(&reset(), &[size]));
        let lens: Vec<usize> = f.outbox.pending.iter().map(Unit::len).collect();
        assert_eq!(lens, vec![4, 4, 1]);
        // Each refusal of a piece halves it again.
        assert!(f.outbox.connection_ended(&reset(), &[1]));
        assert!(f.outbox.connection_ended(&reset(), &[1]));
        let lens: Vec<usize> = f.outbox.pending.iter().map(Unit::len).collect();
        assert_eq!(lens, vec![1, 1, 2, 4, 1]);
        // Nothing was acknowledged or written off on the way.
        assert!(acked(&f).is_empty());
        assert_eq!(f.outbox.unacknowledged(), 5);
    }

    #[test]
    fn an_event_refused_alone_is_written_off_once_the_backend_takes_another() {
        let mut f = fixture(with_letters);
        f.outbox.take(batch(0, 1), Wire::Single);
        f.outbox.take(batch(1, 3), Wire::Single);
        for _ in 0..2 {
            assert!(!f.outbox.connection_ended(&reset(), &[100]));
        }
        // The third refusal sets it aside; the next events go on.
        assert!(f.outbox.connection_ended(&reset(), &[100]));
        assert_eq!(f.outbox.unacknowledged(), 3);
        assert_eq!(f.outbox.window(1), 1);
        f.outbox.acknowledge_oldest();
        // Its own acknowledgement first (as a dead letter), then event 1's.
        assert_eq!(acked(&f), vec![0, 1]);
        let letters = DeadLetters::new(f.dir.path(), 1 << 20);
        let records = dead_letter::read(&letters.path()).unwrap();
        assert_eq!(records.len(), 1);
        assert_eq!(records[0].event["event_id"], "e0");
        assert!(records[0].reason.contains("reset"), "{}", records[0].reason);
        assert_eq!(
            f.outbox.stats.events_dead_lettered.load(Ordering::Relaxed),
            1
        );
        assert_eq!(f.outbox.stats.events_acked.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn a_backend_that_takes_nothing_gets_no_dead_letter() {
        let mut f = fixture(with_letters);
        f.outbox.take(batch(0, 1), Wire::Single);
        f.outbox.take(batch(1, 2), Wire::Single);
        f.outbox.closed = true;
        for _ in 0..50 {
            f.outbox.connection_ended(&reset(), &[100]);
        }
        assert!(acked(&f).is_empty());
        assert!(!DeadLetters::new(f.dir.path(), 1 << 20).path().exists());
        assert_eq!(f.outbox.unacknowledged(), 2);
        assert!(!f.outbox.is_done());
    }

    #[test]
    fn a_held_event_with_nothing_after_it_is_tried_again_at_the_end() {
        let mut f = fixture(with_letters);
        f.outbox.take(batch(0, 1), Wire::Single);
        for _ in 0..3 {
            f.outbox.connection_ended(&reset(), &[100]);
        }
        assert!(f.outbox.pending.is_empty(), "set aside while more may come");
        f.outbox.retry_held_if_alone();
        assert!(f.outbox.pending.is_empty());
        // The agent is done: the event itself is tried again, not waited on.
        f.outbox.closed = true;
        f.outbox.retry_held_if_alone();
        assert_eq!(f.outbox.pending.len(), 1);
        assert!(!f.outbox.is_done());
    }

    #[test]
    fn an_event_closed_with_1009_alone_is_written_off_at_once() {
        let mut f = fixture(with_letters);
        f.outbox.take(batch(0, 1), Wire::Single);
        let too_big = SendError::Closed {
            code: Some(1009),
            reason: String::new(),
        };
        assert!(f.outbox.connection_ended(&too_big, &[2_000_000]));
        assert_eq!(acked(&f), vec![0]);
        assert!(f.outbox.pending.is_empty());
    }

    #[test]
    fn without_a_dead_letter_file_the_event_waits_and_holds_back_later_acks() {
        let mut f = fixture(|_| RefusalPolicy::default());
        f.outbox.take(batch(0, 1), Wire::Single);
        f.outbox.take(batch(1, 2), Wire::Single);
        for _ in 0..3 {
            f.outbox.connection_ended(&reset(), &[100]);
        }
        f.outbox.acknowledge_oldest();
        assert!(acked(&f).is_empty(), "event 1's ack waits behind event 0");
        assert!(!f.outbox.has_room(8), "and nothing more is taken");
    }

    #[test]
    fn a_size_limit_splits_before_sending_and_is_learnt_from_1009() {
        let mut f = fixture(|_| RefusalPolicy {
            max_message_bytes: Some(16 * 1024),
            ..RefusalPolicy::default()
        });
        f.outbox.take(batch(0, 400), Wire::Batch);
        f.outbox.fit(0);
        assert!(f.outbox.pending[0].message_len() <= 16 * 1024);
        assert_eq!(f.outbox.pending.iter().map(Unit::len).sum::<usize>(), 400);

        let mut f = fixture(|_| RefusalPolicy::default());
        f.outbox.take(batch(0, 400), Wire::Batch);
        let size = f.outbox.pending[0].message_len();
        let too_big = SendError::Closed {
            code: Some(1009),
            reason: String::new(),
        };
        f.outbox.connection_ended(&too_big, &[size]);
        assert_eq!(f.outbox.max_message, Some(size / 32 * 15));
        assert_eq!(f.outbox.pending.len(), 2, "split at once when alone");
    }
}
