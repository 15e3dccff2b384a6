//! The two exchanges with the backend (see docs/protocol.md).
//!
//! `batch`: `{"type":"batch","seq":N,"events":[…]}` out, `{"type":"ack","seq":N}`
//! back per batch, in order; `{"type":"error","seq":N,"message":…}` refuses
//! one. `single`: one event per message, as the middleware sends them, and
//! any reply acknowledges the oldest message in flight.

use serde::Deserialize;

use super::batch::{Batch, HEAD_ROOM};
use crate::deliver::AckPoint;

/// Which exchange to speak (the `wire` setting, `--wire`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Wire {
    /// One acknowledgement per batch of events.
    #[default]
    Batch,
    /// One event per message, as the middleware sends them.
    Single,
}

/// One message's worth of events, waiting for its acknowledgement.
#[derive(Debug, Clone)]
pub struct Unit {
    /// `batch`: a batch body ([`HEAD_ROOM`] bytes, then the events' JSON,
    /// comma-separated), into which the message is written in place.
    /// `single`: one event's JSON, the message itself.
    pub events: Vec<u8>,
    /// `batch`: whether the envelope's tail follows the events already.
    closed: bool,
    /// Each event's span in `events`.
    spans: Vec<(usize, usize)>,
    /// Where each event's line ends, for the checkpoints.
    pub origins: Vec<AckPoint>,
    /// When its batch took its first event (for the delivery latency).
    pub opened: std::time::Instant,
    /// When the sender took it (ms since the epoch).
    pub handed_ms: u64,
    /// Written on some connection already: writing it again is a resend.
    pub sent: bool,
    /// Connections that ended while this was the oldest message in flight
    /// (see [`super::outbox`]).
    pub refusals: u32,
    /// Why the last of those ended, for the dead-letter file.
    pub last_refusal: String,
    /// The size of the message this one was split from, when that one was
    /// refused the way a backend refuses a message too big for it.
    pub split_from: Option<usize>,
}

impl Unit {
    /// A unit not sent yet, handed over now.
    fn new(
        events: Vec<u8>,
        closed: bool,
        spans: Vec<(usize, usize)>,
        origins: Vec<AckPoint>,
        opened: std::time::Instant,
    ) -> Self {
        Unit {
            events,
            closed,
            spans,
            origins,
            opened,
            handed_ms: super::stats::now_ms(),
            sent: false,
            refusals: 0,
            last_refusal: String::new(),
            split_from: None,
        }
    }

    /// Events in it.
    pub fn len(&self) -> usize {
        self.origins.len()
    }

    pub fn is_empty(&self) -> bool {
        self.origins.is_empty()
    }

    /// The `i`th event's JSON.
    pub fn event(&self, i: usize) -> &[u8] {
        let (a, b) = self.spans[i];
        &self.events[a..b]
    }

    /// The size of its message, at most a few bytes over (the envelope's
    /// head is counted at its longest).
    pub(crate) fn message_len(&self) -> usize {
        match self.spans.last() {
            // A batch: the events, the head in the room before them, `]}`.
            Some(&(_, end)) if self.spans[0].0 >= HEAD_ROOM => end + 2,
            _ => self.events.len(),
        }
    }

    /// The index and size of its largest event.
    pub(crate) fn largest_event(&self) -> (usize, usize) {
        self.spans
            .iter()
            .enumerate()
            .map(|(i, (a, b))| (i, b - a))
            .max_by_key(|&(_, len)| len)
            .unwrap_or((0, 0))
    }

    /// How many of its first events fit in a message of `max` bytes (at
    /// least one).
    pub(crate) fn events_fitting(&self, max: usize) -> usize {
        let fits = self
            .spans
            .iter()
            .take_while(|&&(_, end)| end + 2 <= max)
            .count();
        fits.max(1)
    }

    /// Cuts it in two, its first `at` events and the rest (`0 < at <
    /// len`), each a message of its own. The pieces start with no
    /// refusals.
    pub fn split(self, at: usize) -> (Unit, Unit) {
        let piece = |range: std::ops::Range<usize>| {
            let mut body = Vec::with_capacity(
                HEAD_ROOM
                    + self.spans[range.clone()]
                        .iter()
                        .map(|(a, b)| b - a + 1)
                        .sum::<usize>()
                    + 2,
            );
            body.resize(HEAD_ROOM, 0);
            let mut spans = Vec::with_capacity(range.len());
            for i in range.clone() {
                if i > range.start {
                    body.push(b',');
                }
                let start = body.len();
                body.extend_from_slice(self.event(i));
                spans.push((start, body.len()));
            }
            Unit {
                handed_ms: self.handed_ms,
                sent: self.sent,
                ..Unit::new(
                    body,
                    false,
                    spans,
                    self.origins[range].to_vec(),
                    self.opened,
                )
            }
        };
        (piece(0..at), piece(at..self.len()))
    }
}

impl Wire {
    /// Splits a batch into what this exchange sends as messages.
    pub(crate) fn units(self, batch: Batch) -> Vec<Unit> {
        match self {
            Wire::Batch => vec![Unit::new(
                batch.body,
                false,
                batch.spans,
                batch.origins,
                batch.opened,
            )],
            Wire::Single => (0..batch.len())
                .map(|i| {
                    let event = batch.event(i).to_vec();
                    let spans = vec![(0, event.len())];
                    Unit::new(event, true, spans, vec![batch.origins[i]], batch.opened)
                })
                .collect(),
        }
    }

    /// The text message for `unit`, sent as number `seq` on its
    /// connection. `batch` writes its envelope around the events in place
    /// (the head into the room before them, right-aligned, as the digits
    /// of `seq` need; the tail once after them): the events, JSON the agent
    /// wrote and valid UTF-8 by construction, are neither copied nor
    /// checked again.
    pub fn message(self, unit: &mut Unit, seq: u64) -> &[u8] {
        if self == Wire::Single {
            return &unit.events;
        }
        if !unit.closed {
            unit.events.extend_from_slice(b"]}");
            unit.closed = true;
        }
        let mut digits = itoa::Buffer::new();
        let seq = digits.format(seq).as_bytes();
        let parts: [&[u8]; 3] = [b"{\"type\":\"batch\",\"seq\":", seq, b",\"events\":["];
        let head: usize = parts.iter().map(|p| p.len()).sum();
        // HEAD_ROOM holds the longest head: 33 bytes and 20 digits.
        let start = HEAD_ROOM - head;
        let mut at = start;
        for part in parts {
            unit.events[at..at + part.len()].copy_from_slice(part);
            at += part.len();
        }
        &unit.events[start..]
    }
}

/// What a backend's reply means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Ack(u64),
    Error {
        seq: Option<u64>,
        message: String,
    },
    /// Not something the batch exchange knows.
    Unknown(String),
}

#[derive(Deserialize)]
struct RawReply {
    #[serde(rename = "type")]
    kind: String,
    seq: Option<u64>,
    message: Option<String>,
}

/// Reads a reply of the batch exchange.
pub fn parse_reply(text: &str) -> Reply {
    match serde_json::from_str::<RawReply>(text) {
        Ok(r) if r.kind == "ack" && r.seq.is_some() => Reply::Ack(r.seq.unwrap_or_default()),
        Ok(r) if r.kind == "error" => Reply::Error {
            seq: r.seq,
            message: r.message.unwrap_or_default(),
        },
        _ => Reply::Unknown(text.chars().take(200).collect()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_message_wraps_the_events() {
        let mut b = crate::deliver::backend::batch::BatchBuilder::new(
            crate::deliver::backend::batch::BatchLimits {
                max_events: 2,
                ..Default::default()
            },
        );
        b.push(
            b"{\"a\":1}",
            AckPoint {
                source: 0,
                part: 1,
                end: 2,
            },
        );
        let batch = b
            .push(
                b"{\"b\":2}",
                AckPoint {
                    source: 0,
                    part: 1,
                    end: 3,
                },
            )
            .unwrap();
        let mut unit = Wire::Batch.units(batch).remove(0);
        // Sent again on later connections, with other numbers: the
        // envelope is rewritten, the events stay as they are.
        for seq in [17, 9, u64::MAX, 1] {
            let m = Wire::Batch.message(&mut unit, seq);
            let v: serde_json::Value = serde_json::from_slice(m).unwrap();
            assert_eq!(v["type"], "batch");
            assert_eq!(v["seq"], seq);
            assert_eq!(v["events"], serde_json::json!([{"a": 1}, {"b": 2}]));
        }
    }

    #[test]
    fn single_sends_each_event_alone() {
        let mut b = crate::deliver::backend::batch::BatchBuilder::new(
            crate::deliver::backend::batch::BatchLimits {
                max_events: 2,
                ..Default::default()
            },
        );
        b.push(
            b"{\"a\":1}",
            AckPoint {
                source: 0,
                part: 1,
                end: 1,
            },
        );
        let batch = b
            .push(
                b"{\"b\":2}",
                AckPoint {
                    source: 0,
                    part: 1,
                    end: 2,
                },
            )
            .unwrap();
        let units = Wire::Single.units(batch);
        assert_eq!(units.len(), 2);
        let mut units = units;
        assert_eq!(Wire::Single.message(&mut units[1], 9), b"{\"b\":2}");
    }

    #[test]
    fn replies() {
        assert_eq!(parse_reply(r#"{"type":"ack","seq":3}"#), Reply::Ack(3));
        assert_eq!(
            parse_reply(r#"{"type":"error","seq":3,"message":"full"}"#),
            Reply::Error {
                seq: Some(3),
                message: "full".into()
            }
        );
        assert!(matches!(parse_reply("ok"), Reply::Unknown(_)));
    }
}
