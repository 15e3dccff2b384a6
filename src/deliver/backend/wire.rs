//! The two exchanges with the backend (see docs/protocol.md).
//!
//! `batch`: `{"type":"batch","seq":N,"events":[…]}` out, `{"type":"ack","seq":N}`
//! back per batch, in order; `{"type":"error","seq":N,"message":…}` refuses
//! one. `single`: one event per message, as the middleware sends them, and
//! any reply acknowledges the oldest message in flight.

use serde::Deserialize;

use super::batch::Batch;
use crate::deliver::Origin;

/// Which exchange to speak (the `wire` setting, `--wire`).
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Default,
    serde::Deserialize,
    serde::Serialize,
    clap::ValueEnum,
)]
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
    /// The events' JSON, comma-separated (one event in `single`).
    pub events: Vec<u8>,
    /// Where each event's line ends, for the checkpoints.
    pub origins: Vec<Origin>,
    /// When its batch took its first event (for the delivery latency).
    pub opened: std::time::Instant,
    /// When the sender took it (ms since the epoch).
    pub handed_ms: u64,
    /// Written on some connection already: writing it again is a resend.
    pub sent: bool,
}

impl Wire {
    /// Splits a batch into what this exchange sends as messages.
    pub fn units(self, batch: Batch) -> Vec<Unit> {
        match self {
            Wire::Batch => vec![Unit {
                events: batch.body,
                origins: batch.origins,
                opened: batch.opened,
                handed_ms: super::stats::now_ms(),
                sent: false,
            }],
            Wire::Single => (0..batch.len())
                .map(|i| Unit {
                    events: batch.event(i).to_vec(),
                    origins: vec![batch.origins[i]],
                    opened: batch.opened,
                    handed_ms: super::stats::now_ms(),
                    sent: false,
                })
                .collect(),
        }
    }

    /// Writes into `out` (cleared first) the text message for `unit`,
    /// sent as number `seq` on its connection. The events are JSON the
    /// agent wrote, valid UTF-8 by construction: they are copied as bytes,
    /// not checked again.
    pub fn message_into(self, unit: &Unit, seq: u64, out: &mut Vec<u8>) {
        out.clear();
        match self {
            Wire::Batch => {
                out.reserve(unit.events.len() + 48);
                out.extend_from_slice(b"{\"type\":\"batch\",\"seq\":");
                out.extend_from_slice(itoa::Buffer::new().format(seq).as_bytes());
                out.extend_from_slice(b",\"events\":[");
                out.extend_from_slice(&unit.events);
                out.extend_from_slice(b"]}");
            }
            Wire::Single => out.extend_from_slice(&unit.events),
        }
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
        let unit = Unit {
            opened: std::time::Instant::now(),
            handed_ms: 0,
            sent: false,
            events: b"{\"a\":1},{\"b\":2}".to_vec(),
            origins: vec![Origin { source: 1, end: 2 }, Origin { source: 1, end: 3 }],
        };
        let mut m = vec![b'x'];
        Wire::Batch.message_into(&unit, 17, &mut m);
        let v: serde_json::Value = serde_json::from_slice(&m).unwrap();
        assert_eq!(v["type"], "batch");
        assert_eq!(v["seq"], 17);
        assert_eq!(v["events"].as_array().unwrap().len(), 2);
    }

    #[test]
    fn single_sends_each_event_alone() {
        let mut b = crate::deliver::backend::batch::BatchBuilder::new(
            crate::deliver::backend::batch::BatchLimits {
                max_events: 2,
                ..Default::default()
            },
        );
        b.push(b"{\"a\":1}", Origin { source: 1, end: 1 });
        let batch = b.push(b"{\"b\":2}", Origin { source: 1, end: 2 }).unwrap();
        let units = Wire::Single.units(batch);
        assert_eq!(units.len(), 2);
        let mut m = Vec::new();
        Wire::Single.message_into(&units[1], 9, &mut m);
        assert_eq!(m, b"{\"b\":2}");
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
