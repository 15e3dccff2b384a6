//! Every bundled pattern against log lines recorded from the real servers
//! (tests/samples/record.sh). The expectations were computed on the client
//! side with Django and cerberus-core, so they are independent of the agent.

mod common;

use std::sync::Arc;

use cerberus_agent::event::{EventOptions, Identity, LinePosition};
use cerberus_agent::parse::PatternSet;
use cerberus_agent::pipeline::detect::detect;
use cerberus_agent::pipeline::{LineHandler, LineOutcome};
use cerberus_agent::secret::Secret;
use chrono::DateTime;
use serde_json::Value;

fn sample(name: &str) -> (Vec<Vec<u8>>, Vec<Value>) {
    let dir = common::repo().join("tests").join("samples");
    let log = std::fs::read(dir.join(format!("{name}.log"))).expect("sample log");
    let lines: Vec<Vec<u8>> = log
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .map(<[u8]>::to_vec)
        .collect();
    let expected = common::read_jsonl(&dir.join(format!("{name}.expected.jsonl")));
    assert_eq!(
        lines.len(),
        expected.len(),
        "{name}: one expectation per line"
    );
    assert!(lines.len() >= 10, "{name}: sample too small");
    (lines, expected)
}

fn options() -> EventOptions {
    EventOptions {
        identity: Identity {
            token: "tok-123".into(),
            client_id: "client-9".into(),
        },
        secret_key: Some(Secret::new("sample-secret")),
        query_params: true,
        default_https: None,
        real_ip: None,
    }
}

#[test]
fn each_bundled_pattern_turns_its_real_samples_into_the_expected_events() {
    let set = PatternSet::bundled().expect("bundled patterns compile");
    for name in cerberus_agent::parse::bundled_names() {
        let pattern = set
            .get(name)
            .unwrap_or_else(|| panic!("pattern {name} is bundled"));
        let mut handler = LineHandler::new(Arc::clone(&pattern), &options());
        let (lines, expected) = sample(name);
        for (i, (line, want)) in lines.iter().zip(&expected).enumerate() {
            let at = format!("{name}.log line {}", i + 1);
            let mut out = Vec::new();
            let pos = LinePosition {
                source: 7,
                offset: i as u64 * 100,
            };
            let outcome = handler.handle(line, pos, &mut out);
            if want.get("fails") == Some(&Value::Bool(true)) {
                assert!(
                    matches!(outcome, LineOutcome::Failed(_)),
                    "{at}: must fail, got {outcome:?}"
                );
                assert!(out.is_empty());
                continue;
            }
            assert!(
                matches!(
                    outcome,
                    LineOutcome::Event | LineOutcome::EventWithWarning(_)
                ),
                "{at}: {outcome:?}"
            );
            let event: Value =
                serde_json::from_slice(&out).unwrap_or_else(|e| panic!("{at}: not JSON: {e}"));
            check_event(&at, &event, want);
            assert_eq!(
                event["event_id"],
                format!("{:016x}{:016x}", 7, i as u64 * 100),
                "{at}"
            );
        }
    }
}

fn check_event(at: &str, event: &Value, want: &Value) {
    for field in [
        "method",
        "endpoint",
        "query_params",
        "user_agent",
        "status",
        "custom_data",
        "remote_addr",
    ] {
        assert_eq!(
            event[field], want[field],
            "{at}: field {field}\n event: {event}"
        );
    }
    match &want["bytes_sent"] {
        Value::Null => assert!(
            event.get("bytes_sent").is_none(),
            "{at}: bytes_sent must be absent"
        ),
        n => assert_eq!(&event["bytes_sent"], n, "{at}: bytes_sent"),
    }
    assert_eq!(event["api_key"], "tok-123");
    assert_eq!(event["token"], "tok-123");
    assert_eq!(event["client_id"], "client-9");
    assert_eq!(event["scheme"], false, "{at}: plain http");
    for null in ["headers", "body", "user_id"] {
        assert_eq!(event[null], Value::Null, "{at}: {null}");
    }
    let ts = event["timestamp"].as_str().expect("timestamp");
    assert!(ts.ends_with("+00:00"), "{at}: isoformat UTC: {ts}");
    let ts = DateTime::parse_from_rfc3339(ts).expect("timestamp parses");
    let from = DateTime::parse_from_rfc3339(want["time_from"].as_str().unwrap()).unwrap();
    let to = DateTime::parse_from_rfc3339(want["time_to"].as_str().unwrap()).unwrap();
    assert!(
        from <= ts && ts <= to,
        "{at}: {ts} not within the request's [{from}, {to}]"
    );
    if want["has_duration"] == Value::Bool(true) {
        let ms = event["duration_ms"]
            .as_f64()
            .unwrap_or_else(|| panic!("{at}: duration_ms"));
        assert!((0.0..10_000.0).contains(&ms), "{at}: duration {ms}");
    } else {
        assert!(event.get("duration_ms").is_none(), "{at}");
    }
}

#[test]
fn auto_detection_picks_the_right_pattern_for_each_sample() {
    let set = PatternSet::bundled().unwrap();
    for name in cerberus_agent::parse::bundled_names() {
        let (lines, _) = sample(name);
        let detected = detect(&set, &lines).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(detected.pattern.name, *name, "detected for {name}.log");
    }
}

#[test]
fn query_strings_are_dropped_unless_asked_for() {
    let set = PatternSet::bundled().unwrap();
    let mut opts = options();
    opts.query_params = false;
    let mut handler = LineHandler::new(set.get("nginx_combined").unwrap(), &opts);
    let (lines, _) = sample("nginx_combined");
    let mut out = Vec::new();
    handler.handle(
        &lines[1],
        LinePosition {
            source: 0,
            offset: 0,
        },
        &mut out,
    );
    let event: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(event["query_params"], Value::Null);
    assert_eq!(event["endpoint"], "/café/menü");
}

/// A raw byte that is not UTF-8 in the request path (0xFF, sent as is by
/// the recorder's client) becomes `%FF` in the endpoint, as Django's
/// `request.path` keeps it, whichever server logged it and however it
/// escaped it.
#[test]
fn a_raw_non_utf8_byte_in_the_path_gives_the_same_endpoint_in_every_format() {
    let set = PatternSet::bundled().unwrap();
    for name in cerberus_agent::parse::bundled_names() {
        let (lines, expected) = sample(name);
        let at = expected
            .iter()
            .position(|e| e["endpoint"] == "/raw-byte/%FF")
            .unwrap_or_else(|| panic!("{name}: the sample has the raw-byte request"));
        let mut h = LineHandler::new(set.get(name).unwrap(), &EventOptions::default());
        let mut out = Vec::new();
        let position = LinePosition {
            source: 1,
            offset: 0,
        };
        h.handle(&lines[at], position, &mut out);
        let event: serde_json::Value = serde_json::from_slice(&out).expect("an event");
        assert_eq!(event["endpoint"], "/raw-byte/%FF", "{name}");
    }
}
