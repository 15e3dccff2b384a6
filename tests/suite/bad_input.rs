//! Bad input never crashes the agent and never costs other lines: each kind
//! is counted and reported, and the good lines around it still come out.

use crate::common;

use std::io::Write;
use std::process::{Command, Stdio};

use cerberus_agent::event::{EventOptions, LinePosition};
use cerberus_agent::parse::PatternSet;
use cerberus_agent::pipeline::{LineHandler, LineOutcome};
use serde_json::Value;

const GOOD: &[u8] =
    br#"10.1.2.3 - - [25/Nov/2026:10:04:05 +0000] "GET /ok HTTP/1.1" 200 5 "-" "ua""#;

fn handler(name: &str) -> LineHandler {
    let set = PatternSet::bundled().unwrap();
    LineHandler::new(set.get(name).unwrap(), &EventOptions::default())
}

fn outcome(h: &mut LineHandler, line: &[u8]) -> (LineOutcome, Option<Value>) {
    let mut out = Vec::new();
    let o = h.handle(
        line,
        LinePosition {
            stream: 1,
            offset: 0,
            time: None,
        },
        &mut out,
    );
    let v = (!out.is_empty()).then(|| serde_json::from_slice(&out).expect("event is JSON"));
    (o, v)
}

#[test]
fn each_kind_of_bad_line_fails_alone() {
    let mut h = handler("nginx_combined");
    let bad: Vec<(&str, Vec<u8>)> = vec![
        ("invalid UTF-8 outside fields", b"\xff\xfe - - [25/Nov/2026:10:04:05 +0000] \"GET / HTTP/1.1\" 200 5 \"-\" \"\xc3\x28\"".to_vec()),
        ("binary garbage", (0u8..=255).cycle().take(3000).collect()),
        ("truncated line", GOOD[..40].to_vec()),
        ("timestamp that does not parse", br#"1.2.3.4 - - [99/Foo/2026:10:04:05 +0000] "GET / HTTP/1.1" 200 5 "-" "ua""#.to_vec()),
        ("request line that is not one", br#"1.2.3.4 - - [25/Nov/2026:10:04:05 +0000] "\x16\x03\x01\x02" 400 157 "-" "-""#.to_vec()),
        ("a line of megabytes", vec![b'a'; 4 * 1024 * 1024]),
    ];
    for (what, line) in &bad {
        let (o, event) = outcome(&mut h, line);
        assert!(matches!(o, LineOutcome::Failed(_)), "{what}: {o:?}");
        assert!(
            event.is_none(),
            "{what}: nothing may be written for a failed line"
        );
        // The next good line is unaffected.
        let (o, event) = outcome(&mut h, GOOD);
        assert_eq!(o, LineOutcome::Event, "after {what}");
        assert_eq!(event.unwrap()["endpoint"], "/ok");
    }
}

#[test]
fn invalid_utf8_inside_a_field_is_replaced_not_fatal() {
    let mut h = handler("gunicorn");
    let line =
        b"1.2.3.4 - - [25/Nov/2026:10:04:05 +0000] \"GET /x HTTP/1.1\" 200 5 \"-\" \"bad \xff ua\"";
    let (o, event) = outcome(&mut h, line);
    assert_eq!(o, LineOutcome::Event);
    assert_eq!(event.unwrap()["user_agent"], "bad \u{fffd} ua");
}

#[test]
fn bad_metrics_send_the_event_without_them() {
    let mut h = handler("gunicorn_cerberus");
    for metrics in [r#"{not json"#, r#"[1,2]"#, r#"{\"a\":"#] {
        let line = format!(
            r#"1.2.3.4 - - [25/Nov/2026:10:04:05 +0000] "GET /m HTTP/1.1" 200 5 "-" "ua" 0.001 "{metrics}""#
        );
        let (o, event) = outcome(&mut h, line.as_bytes());
        assert!(
            matches!(o, LineOutcome::EventWithWarning(_)),
            "{metrics}: {o:?}"
        );
        let event = event.unwrap();
        assert_eq!(event["custom_data"], serde_json::json!({}), "{metrics}");
        assert_eq!(event["endpoint"], "/m");
    }
}

#[test]
fn nginx_escaped_metrics_are_read() {
    let mut h = handler("nginx_json");
    let line = br#"{"remote_addr":"::ffff:10.0.0.1","time_iso8601":"2026-11-25T10:04:05+01:00","request_method":"get","request_uri":"/a?b=1","scheme":"https","status":"200","body_bytes_sent":"12","request_time":"0.123","http_user_agent":"x","upstream_http_x_cerberus_metrics":"{\"items\":2,\"password\":\"p\"}"}"#;
    let (o, event) = outcome(&mut h, line);
    assert_eq!(o, LineOutcome::Event);
    let e = event.unwrap();
    assert_eq!(
        e["custom_data"],
        serde_json::json!({"items": 2, "password": "[REDACTED]"})
    );
    assert_eq!(e["scheme"], true);
    assert_eq!(e["method"], "GET");
    assert_eq!(e["remote_addr"], "::ffff:10.0.0.1");
    assert_eq!(e["timestamp"], "2026-11-25T09:04:05+00:00");
    assert_eq!(e["duration_ms"], 123.0);
}

/// The whole binary over a file mixing every kind of bad input with good
/// lines: exit 0, every good line out, failures reported on stderr with the
/// file and line number, and the messages rate-limited.
#[test]
fn the_agent_goes_on_through_a_file_of_garbage() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("access.log");
    let mut f = std::fs::File::create(&path).unwrap();
    let mut good = 0;
    for i in 0..200 {
        f.write_all(GOOD).unwrap();
        f.write_all(b"\n").unwrap();
        good += 1;
        match i % 4 {
            0 => f.write_all(b"\x00\x01\x02binary\xff\n").unwrap(),
            1 => f
                .write_all(&vec![b'z'; 200_000])
                .and_then(|_| f.write_all(b"\n"))
                .unwrap(),
            2 => f
                .write_all(b"10.0.0.1 - - [25/Nov/2026:10:04:05 +0000] \"GET /half\n")
                .unwrap(),
            _ => {}
        }
    }
    drop(f);
    let out = Command::new(common::agent_bin())
        .args([
            "--log",
            path.to_str().unwrap(),
            "--format",
            "nginx_combined",
            "--once",
            "--no-checkpoints",
            "--pattern-dir",
            "/nonexistent",
        ])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "exit status {:?}; stderr:\n{stderr}",
        out.status
    );
    let events: Vec<Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(events.len(), good);
    assert!(
        stderr.contains("access.log:2:"),
        "names file and line: {stderr}"
    );
    assert!(stderr.contains("longer than max_line_bytes"), "{stderr}");
    let unparsed = stderr
        .lines()
        .filter(|l| l.contains("does not match"))
        .count();
    assert!(
        unparsed <= cerberus_agent::diagnostics::BURST as usize,
        "rate-limited: {unparsed} messages"
    );
    assert!(
        stderr.contains("suppressed"),
        "says it held messages back: {stderr}"
    );
}

/// A format that logs the query apart from the path (nginx's `$uri` and
/// `$args`) sends it in `query_params` as one that logs `$request_uri`.
#[test]
fn a_query_logged_apart_reaches_query_params() {
    let text = r#"
description = "method, path and query apart"
[split]
kind = "template"
escape = "none"
template = '$ip $method $uri $args'
[fields]
client_ip = "ip"
method = "method"
path = "uri"
query = "args"
"#;
    let pattern = cerberus_agent::parse::Pattern::from_toml(
        text,
        "apart",
        cerberus_agent::parse::PatternOrigin::Bundled,
    )
    .unwrap();
    let options = EventOptions {
        query_params: true,
        ..EventOptions::default()
    };
    let mut h = LineHandler::new(std::sync::Arc::new(pattern), &options);
    let (o, v) = outcome(&mut h, b"10.0.0.1 GET /search q=rust&page=2");
    assert_eq!(o, LineOutcome::Event);
    let v = v.unwrap();
    assert_eq!(v["endpoint"], "/search");
    assert_eq!(v["query_params"]["q"], "rust", "{v}");
    assert_eq!(v["query_params"]["page"], "2", "{v}");

    // No query logged: null, as for a request without one.
    let (_, v) = outcome(&mut h, b"10.0.0.1 GET /search -");
    assert!(v.unwrap()["query_params"].is_null());
}

/// Runs `cerberus-agent ARGS --once --no-checkpoints` (events on standard
/// output) and gives up, failing, when it does not end within `limit`.
fn run_once(args: &[&str], limit: std::time::Duration) -> (Option<i32>, String, String) {
    let mut child = Command::new(common::agent_bin())
        .args(args)
        .args([
            "--once",
            "--no-checkpoints",
            "--pattern-dir",
            "/nonexistent",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + limit;
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "the agent did not end within {limit:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// What a glob finds in a log folder that someone else can write to: a link
/// to a secret outside the folder, a FIFO, a link to a device. None is
/// read or blocks the agent, each is named once, and a link that stays
/// inside the folder is followed.
#[test]
fn planted_links_and_fifos_in_a_log_folder_are_not_followed() {
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    std::fs::create_dir_all(logs.join("sub")).unwrap();
    let secret = dir.path().join("agent.env");
    std::fs::write(&secret, "CERBERUS_TOKEN=supersecret-0451\n").unwrap();
    let mut good = GOOD.to_vec();
    good.push(b'\n');
    std::fs::write(logs.join("good.log"), &good).unwrap();
    std::fs::write(logs.join("sub/real.log"), &good).unwrap();
    std::os::unix::fs::symlink(&secret, logs.join("evil.log")).unwrap();
    std::os::unix::fs::symlink("/dev/zero", logs.join("zero.log")).unwrap();
    std::os::unix::fs::symlink(logs.join("sub/real.log"), logs.join("inside.log")).unwrap();
    let fifo = logs.join("fifo.log");
    let made = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(made.success(), "mkfifo failed");

    let glob = format!("{}/*.log", logs.display());
    let (code, stdout, stderr) = run_once(
        &["--log", &glob, "--format", "nginx_combined"],
        std::time::Duration::from_secs(20),
    );
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(
        stdout.lines().count(),
        2,
        "good.log and inside.log: {stderr}"
    );
    assert!(!stderr.contains("supersecret"), "{stderr}");
    assert!(!stdout.contains("supersecret"));
    for (name, why) in [
        ("evil.log", "a symbolic link to"),
        ("zero.log", "not a regular file (a device)"),
        ("fifo.log", "not a regular file (a FIFO)"),
    ] {
        let said: Vec<&str> = stderr
            .lines()
            .filter(|l| l.contains(name) && l.contains("not followed"))
            .collect();
        assert_eq!(said.len(), 1, "{name} named once: {stderr}");
        assert!(said[0].contains(why), "{name}: {said:?}");
    }

    // Named explicitly, a FIFO and a device are refused, not opened: the
    // agent neither blocks nor reads for ever.
    for path in [fifo.to_str().unwrap(), "/dev/zero"] {
        let (_, stdout, stderr) = run_once(
            &["--log", path, "--format", "nginx_combined"],
            std::time::Duration::from_secs(20),
        );
        assert!(stdout.is_empty());
        assert!(stderr.contains("not a regular file"), "{path}: {stderr}");
    }
}

/// A file that fits no format: the message says which file, which line and
/// how long, and shows none of its content (it may be anything).
#[test]
fn a_file_of_no_known_format_is_named_not_shown() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("odd.log");
    std::fs::write(&path, "CERBERUS_TOKEN=supersecret-0451\nSECRET_KEY=abc\n").unwrap();
    let (_, _, stderr) = run_once(
        &["--log", path.to_str().unwrap()],
        std::time::Duration::from_secs(20),
    );
    assert!(stderr.contains("odd.log"), "{stderr}");
    assert!(stderr.contains("no pattern fits"), "{stderr}");
    assert!(!stderr.contains("supersecret"), "{stderr}");
}

/// What every public server logs for scanners and idle connections (an
/// empty request, `-`, TLS bytes on a plain port, each with a 4xx status):
/// ordinary lines of the format, counted as `not_a_request` without a
/// warning; a line whose client field is a list is no line of the format.
#[test]
fn answers_to_non_requests_are_counted_not_warned() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("access.log");
    let lines = [
        r#"1.2.3.4 - - [25/Nov/2026:10:04:05 +0000] "" 400 0 "-" "-""#,
        r#"1.2.3.4 - - [25/Nov/2026:10:04:05 +0000] "-" 408 0 "-" "-""#,
        r#"1.2.3.4 - - [25/Nov/2026:10:04:05 +0000] "\x16\x03\x01\x00\xF1\x01" 400 157 "-" "-""#,
        r#"1.2.3.4 - - [25/Nov/2026:10:04:05 +0000] "GET /ok HTTP/1.1" 200 5 "-" "ua""#,
        r#"1.2.3.5 - - [25/Nov/2026:10:04:06 +0000] "GET /ok2 HTTP/1.1" 200 5 "-" "ua""#,
    ];
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    let (code, stdout, stderr) = run_once(
        &[
            "--log",
            path.to_str().unwrap(),
            "--format",
            "nginx_combined",
        ],
        std::time::Duration::from_secs(20),
    );
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(stdout.lines().count(), 2, "{stderr}");
    assert!(
        !stderr.lines().any(|l| l.contains("access.log:")),
        "no message for them: {stderr}"
    );
    assert!(stderr.contains("3 failed"), "counted: {stderr}");

    // Detected as nginx combined all the same, and a forwarded-for list in
    // the client field fails the line instead of being sent as an address.
    let listed = r#"10.0.0.2, 10.0.0.1, 127.0.0.1 - - [25/Nov/2026:10:04:05 +0000] "GET /x HTTP/1.1" 200 5 "-" "ua""#;
    std::fs::write(&path, lines.join("\n") + "\n" + listed + "\n").unwrap();
    let (_, stdout, stderr) = run_once(
        &["--log", path.to_str().unwrap()],
        std::time::Duration::from_secs(20),
    );
    assert!(stderr.contains("nginx_combined"), "{stderr}");
    assert_eq!(stdout.lines().count(), 2, "{stderr}");
    assert!(!stdout.contains("10.0.0.2"), "{stdout}");
    assert!(stderr.contains("is not an address"), "{stderr}");
}

/// 10,000 logs under one glob at 1,024 file descriptors (the service's
/// default), `--once`: every line is delivered, memory stays bounded, a
/// handful of messages say what happens, and the exit status is 0. A file
/// the agent may not read makes it exit 1 with the count.
#[test]
fn ten_thousand_files_at_1024_descriptors() {
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    std::fs::create_dir(&logs).unwrap();
    for f in 0..10_000 {
        let mut text = String::new();
        for i in 0..20 {
            text.push_str(&format!(
                "10.{}.{}.{} - - [25/Nov/2026:10:04:05 +0000] \"GET /s{f}/{i} HTTP/1.1\" 200 5 \"-\" \"ua\"\n",
                f / 250 % 250,
                f % 250,
                i + 1
            ));
        }
        std::fs::write(logs.join(format!("site{f}.log")), text).unwrap();
    }
    let glob = format!("{}/*.log", logs.display());
    let mut child = Command::new("prlimit")
        .args(["--nofile=1024:1024", "--"])
        .arg(common::agent_bin())
        .args(["--log", &glob, "--format", "nginx_combined", "--once"])
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .args(["--secret-key", "k", "--pattern-dir", "/nonexistent"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let stdout = child.stdout.take().unwrap();
    let counter = std::thread::spawn(move || {
        std::io::BufRead::lines(std::io::BufReader::new(stdout)).count()
    });
    let stderr = child.stderr.take().unwrap();
    let messages = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = std::io::Read::read_to_string(&mut std::io::BufReader::new(stderr), &mut text);
        text
    });
    // The peak, read while it runs (it is gone once the agent exits).
    let mut peak_kib = 0u64;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(600);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not done in 10 minutes"
        );
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        if let Some(kib) = status
            .lines()
            .find(|l| l.starts_with("VmHWM:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|n| n.parse::<u64>().ok())
        {
            peak_kib = peak_kib.max(kib);
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    let stderr = messages.join().unwrap();
    assert_eq!(counter.join().unwrap(), 200_000, "{stderr}");
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert!(peak_kib <= 64 * 1024, "peak RSS {peak_kib} KiB");
    let said = stderr
        .lines()
        .filter(|l| l.contains("WARN") || l.contains("ERROR"))
        .count();
    assert!(said <= 20, "{said} warnings or errors:\n{stderr}");

    // Files the agent may not read (as nobody; root reads anything): 25
    // of 27, each counted, ten named, the rest summed up in one line.
    let small = dir.path().join("small");
    std::fs::create_dir(&small).unwrap();
    use std::os::unix::fs::PermissionsExt;
    for f in 0..27 {
        let file = small.join(format!("s{f}.log"));
        std::fs::write(&file, format!("{}\n", std::str::from_utf8(GOOD).unwrap())).unwrap();
        if f >= 2 {
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o000)).unwrap();
        }
    }
    std::fs::set_permissions(&small, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(common::agent_bin())
        .args([
            "--log",
            &format!("{}/*.log", small.display()),
            "--format",
            "nginx_combined",
        ])
        .args([
            "--once",
            "--no-checkpoints",
            "--pattern-dir",
            "/nonexistent",
        ])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 2);
    assert!(
        stderr.contains("25 files that could not be read"),
        "{stderr}"
    );
    let errors = stderr.lines().filter(|l| l.contains("ERROR")).count();
    assert!(errors <= 12, "{errors} error lines:\n{stderr}");
    assert!(
        stderr.contains("and 15 more files cannot be opened"),
        "{stderr}"
    );
}
