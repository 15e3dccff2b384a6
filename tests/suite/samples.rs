//! Every bundled pattern against log lines recorded from the real servers
//! (tests/samples/record.sh). The expectations were computed on the client
//! side with Django and cerberus-core, so they are independent of the agent.

use crate::common;

use std::sync::Arc;

use cerberus_agent::event::{EventOptions, Identity, LinePosition};
use cerberus_agent::parse::PatternSet;
use cerberus_agent::pipeline::detect::detect;
use cerberus_agent::pipeline::{LineHandler, LineOutcome};
use cerberus_agent::secret::Secret;
use chrono::DateTime;
use serde_json::Value;

/// Every non-empty line of a recorded log, as the server wrote it.
fn sample_file(name: &str) -> Vec<Vec<u8>> {
    let dir = common::repo().join("tests").join("samples");
    let log = std::fs::read(dir.join(format!("{name}.log"))).expect("sample log");
    log.split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .map(<[u8]>::to_vec)
        .collect()
}

/// A recorded log's access lines (without the server's own messages, which
/// uWSGI and granian write to the same file), each with its expectation.
fn sample(name: &str) -> (Vec<Vec<u8>>, Vec<Value>) {
    let dir = common::repo().join("tests").join("samples");
    let pattern = PatternSet::bundled()
        .ok()
        .and_then(|set| set.get(name))
        .unwrap_or_else(|| panic!("{name} is a bundled pattern"));
    let lines: Vec<Vec<u8>> = sample_file(name)
        .into_iter()
        .filter(|l| pattern.is_access_line(l))
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
                stream: 7,
                offset: i as u64 * 100,
                time: None,
            };
            let outcome = handler.handle(line, pos, &mut out);
            if want.get("unanswered") == Some(&Value::Bool(true)) {
                continue; // the server hung up: no event is owed
            }
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
        if field == "user_agent" && want["ambiguous_user_agent"] == Value::Bool(true) {
            continue;
        }
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
    // A line without a time of its own (uvicorn's) carries the time it was
    // read: after the request, whenever the test runs.
    let logs_time = want.get("has_time") != Some(&Value::Bool(false));
    assert!(
        from <= ts && (ts <= to || !logs_time),
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
        let lines = sample_file(name);
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
            stream: 0,
            offset: 0,
            time: None,
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
/// escaped it. (The ASGI servers answer such a request 400 without logging
/// it; Caddy's JSON log holds U+FFFD in place of the byte.)
#[test]
fn a_raw_non_utf8_byte_in_the_path_gives_the_same_endpoint_in_every_format() {
    let set = PatternSet::bundled().unwrap();
    let lost = ["caddy", "uvicorn", "daphne", "hypercorn", "granian"];
    for name in cerberus_agent::parse::bundled_names().filter(|n| !lost.contains(n)) {
        let (lines, expected) = sample(name);
        let at = expected
            .iter()
            .position(|e| e["endpoint"] == "/raw-byte/%FF")
            .unwrap_or_else(|| panic!("{name}: the sample has the raw-byte request"));
        let mut h = LineHandler::new(set.get(name).unwrap(), &EventOptions::default());
        let mut out = Vec::new();
        let position = LinePosition {
            stream: 1,
            offset: 0,
            time: None,
        };
        h.handle(&lines[at], position, &mut out);
        let event: serde_json::Value = serde_json::from_slice(&out).expect("an event");
        assert_eq!(event["endpoint"], "/raw-byte/%FF", "{name}");
    }
}

/// The real servers, run now from their packages (tests/samples/servers.sh:
/// nginx, Apache and Caddy from Debian's; gunicorn, uWSGI, uvicorn, daphne,
/// hypercorn and granian from PyPI, serving a Django app), answer the
/// recorder's requests from IPv4 and IPv6 clients in a zone that is not
/// UTC; the agent, given each log with `--log FILE` alone, must detect its
/// format and turn every request into the expected event, with its time
/// read in that zone where the line has none of its own.
#[test]
fn the_agent_reads_what_each_real_server_writes_by_default() {
    let dir = tempfile::tempdir().expect("temp dir");
    let venv = common::repo().join("target/test-venv");
    assert!(
        venv.join("bin/uwsgi").exists(),
        "{} has no uwsgi: run tests/setup.sh",
        venv.display()
    );
    const ZONE: &str = "Asia/Kolkata";
    let run = std::process::Command::new("bash")
        .arg(common::repo().join("tests/samples/servers.sh"))
        .arg(&venv)
        .arg(dir.path())
        .env("TZ", ZONE)
        .output()
        .expect("run tests/samples/servers.sh");
    assert!(
        run.status.success(),
        "servers.sh failed:\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    for name in cerberus_agent::parse::bundled_names() {
        let log = dir.path().join(format!("{name}.log"));
        let expected = common::read_jsonl(&dir.path().join(format!("{name}.expected.jsonl")));
        assert!(
            expected.iter().any(|e| e["remote_addr"] != Value::Null),
            "{name}: the servers answered nothing"
        );
        let out = std::process::Command::new(common::agent_bin())
            .args([
                "--once",
                "--no-checkpoints",
                "--stdout",
                "--query-params",
                "--log",
            ])
            .arg(&log)
            .args(["--client-id", "client-9"])
            .env("CERBERUS_TOKEN", "tok-123")
            .env("CERBERUS_SECRET_KEY", "sample-secret")
            .env("TZ", ZONE)
            .env_remove("CERBERUS_DEBUG")
            .stdin(std::process::Stdio::null())
            .output()
            .expect("run cerberus-agent");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{name}: {stderr}");
        assert!(
            stderr.contains(&format!("format detected: {name}")),
            "{name}: detected otherwise: {stderr}"
        );
        let events: Vec<Value> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{name}: {e}: {l}")))
            .collect();
        let owed: Vec<&Value> = expected
            .iter()
            .filter(|e| e.get("fails").is_none() && e.get("unanswered").is_none())
            .collect();
        assert_eq!(
            events.len(),
            owed.len(),
            "{name}: one event per request the server logged\n{stderr}"
        );
        for (i, (event, want)) in events.iter().zip(owed).enumerate() {
            check_event(&format!("{name} (live) event {}", i + 1), event, want);
        }
    }
}

/// uWSGI writes some forty lines of its own before the first request, to
/// the same file: until a request comes the log is known as uWSGI's, not
/// taken for one of no known format; once requests come they are judged
/// past those lines. A file of no known format is not taken for uWSGI's.
#[test]
fn a_uwsgi_log_is_recognised_before_and_after_its_first_request() {
    let set = PatternSet::bundled().unwrap();
    let all = sample_file("uwsgi");
    let first_request = all
        .iter()
        .position(|l| l.starts_with(b"[pid: "))
        .expect("the sample has requests");
    assert!(
        first_request >= 20,
        "the sample starts with uWSGI's own lines"
    );
    match detect(&set, &all[..first_request]) {
        Err(e) => assert!(
            e.is_waiting() && e.to_string().contains("uwsgi"),
            "startup lines only: {e}"
        ),
        Ok(d) => panic!("startup lines only, detected {}", d.pattern.name),
    }
    let detected = detect(&set, &all[..first_request + 1]).expect("one request is enough");
    assert_eq!(detected.pattern.name, "uwsgi");
    let odd = vec![b"CERBERUS_TOKEN=x".to_vec(), b"SECRET_KEY=abc".to_vec()];
    assert!(!detect(&set, &odd).unwrap_err().is_waiting());
}
