//! The binary as an operator uses it: the README's run command, `check`,
//! `patterns`, user pattern folders, help and version.

use crate::common;

use std::io::Write;
use std::process::{Command, Output, Stdio};

use serde_json::Value;

use crate::common::programs::printed_events as json_lines;

fn agent(args: &[&str]) -> Output {
    crate::common::programs::run_agent(args, &[])
}

/// The number of lines in a recorded sample.
fn sample_lines(name: &str) -> usize {
    let text = std::fs::read(sample(name)).expect("sample");
    text.iter().filter(|&&b| b == b'\n').count()
}

fn sample(name: &str) -> String {
    common::repo()
        .join("tests/samples")
        .join(name)
        .display()
        .to_string()
}

#[test]
fn readme_run_command_prints_every_event_and_exits_0() {
    let log = sample("nginx_combined.log");
    let out = agent(&[
        "--log",
        &log,
        "--once",
        "--no-checkpoints",
        "--pattern-dir",
        "/nonexistent",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let events = json_lines(&out.stdout);
    assert_eq!(events.len(), sample_lines("nginx_combined.log"));
    assert_eq!(events[1]["endpoint"], "/café/menü");
    assert!(
        stderr.contains("standard output"),
        "says why it prints: {stderr}"
    );
    assert!(
        stderr.contains("format detected: nginx_combined"),
        "{stderr}"
    );
    assert!(
        stderr.contains("plain text"),
        "warns about unhashed IPs: {stderr}"
    );
    // event_ids are unique and stable across runs.
    let again = json_lines(
        &agent(&[
            "--log",
            &log,
            "--once",
            "--no-checkpoints",
            "--pattern-dir",
            "/nonexistent",
        ])
        .stdout,
    );
    let ids: Vec<&Value> = events.iter().map(|e| &e["event_id"]).collect();
    let ids_again: Vec<&Value> = again.iter().map(|e| &e["event_id"]).collect();
    assert_eq!(ids, ids_again);
    let mut unique = ids.clone();
    unique.dedup();
    assert_eq!(unique.len(), ids.len());
}

#[test]
fn secret_key_hashes_ips_and_no_warning_is_given() {
    let out = agent(&[
        "--log",
        &sample("gunicorn.log"),
        "--once",
        "--no-checkpoints",
        "--secret-key",
        "sample-secret",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("plain text"), "{stderr}");
    assert!(!stderr.contains("sample-secret"), "{stderr}");
    // The hashes of 127.0.0.1 and ::1, computed by cerberus-core when the
    // sample was recorded.
    let recorded: std::collections::BTreeSet<String> =
        common::read_jsonl(std::path::Path::new(&sample("gunicorn.expected.jsonl")))
            .iter()
            .filter_map(|e| e["remote_addr"].as_str().map(str::to_owned))
            .collect();
    assert_eq!(recorded.len(), 2, "{recorded:?}");
    assert!(recorded.contains("551642e1adb77f5f960daf19e7bc02840209818de563c60d73a36200357272ad"));
    for e in json_lines(&out.stdout) {
        let hashed = e["remote_addr"].as_str().unwrap_or_default();
        assert!(recorded.contains(hashed), "{e}");
    }
}

#[test]
fn check_reports_events_failures_and_a_summary() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mixed.log");
    let mut text = std::fs::read(sample("nginx_combined.log")).unwrap();
    text.extend_from_slice(b"this is not an access log line\n");
    // nginx's escape=json writes the raw bytes of a decoded $uri: this
    // sample is not valid UTF-8, and must still parse.
    text.extend_from_slice(&std::fs::read(sample("nginx_json.log")).unwrap());
    std::fs::write(&path, text).unwrap();
    let out = agent(&["check", path.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    // One nginx_json line is a request nginx refused (400, no URI): no
    // event can be made of it.
    let (combined, json) = (
        sample_lines("nginx_combined.log"),
        sample_lines("nginx_json.log"),
    );
    assert_eq!(json_lines(&out.stdout).len(), combined + json - 1);
    assert!(
        stdout.contains(&format!("line {}: failed: no pattern fits", combined + 1)),
        "{stdout}"
    );
    // The refused request is the server's answer to no request: counted
    // apart, not as a failure.
    assert!(
        stdout.contains(&format!(
            "lines: {}, parsed: {}, failed: 1, not requests: 1",
            combined + 1 + json,
            combined + json - 1
        )),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("nginx_combined: {combined}"))
            && stdout.contains(&format!("nginx_json: {}", json - 1)),
        "{stdout}"
    );
}

#[test]
fn check_with_a_format_says_why_a_line_fails_and_exits_1_when_nothing_parses() {
    let out = agent(&[
        "check",
        "--format",
        "nginx_json",
        &sample("apache_common.log"),
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("line 1: failed: line is not a JSON object"),
        "{stdout}"
    );
    assert!(stdout.contains("parsed: 0"), "{stdout}");
}

#[test]
fn check_reads_standard_input() {
    let mut child = Command::new(common::agent_bin())
        .args(["check", "--format", "apache_common", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let log = std::fs::read(sample("apache_common.log")).unwrap();
    child.stdin.take().unwrap().write_all(&log).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    assert_eq!(
        json_lines(&out.stdout).len(),
        sample_lines("apache_common.log")
    );
}

#[test]
fn patterns_lists_bundled_and_user_patterns_and_users_override_by_name() {
    let dir = tempfile::tempdir().unwrap();
    // A user pattern replacing the bundled `json` with other field names.
    std::fs::write(
        dir.path().join("json.toml"),
        r#"
description = "our app's JSON log"
timestamp_format = "iso8601"
[split]
kind = "json"
[fields]
client_ip = "client"
method = "verb"
path = "target"
timestamp = "at"
"#,
    )
    .unwrap();
    let out = agent(&["patterns", "--pattern-dir", dir.path().to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    for name in [
        "nginx_combined",
        "nginx_json",
        "gunicorn",
        "gunicorn_cerberus",
        "apache_combined",
        "apache_common",
    ] {
        assert!(stdout.contains(name), "{name} listed: {stdout}");
    }
    assert!(
        stdout.contains("our app's JSON log") && stdout.contains("user ("),
        "{stdout}"
    );

    let log = dir.path().join("app.log");
    std::fs::write(&log, "{\"client\":\"10.0.0.9\",\"verb\":\"GET\",\"target\":\"/x%20y\",\"at\":\"2026-11-25T10:00:00Z\"}\n").unwrap();
    let out = agent(&[
        "--log",
        log.to_str().unwrap(),
        "--once",
        "--no-checkpoints",
        "--format",
        "json",
        "--pattern-dir",
        dir.path().to_str().unwrap(),
    ]);
    let events = json_lines(&out.stdout);
    assert_eq!(events.len(), 1, "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(events[0]["endpoint"], "/x y");
    assert_eq!(events[0]["remote_addr"], "10.0.0.9");
}

#[test]
fn a_broken_user_pattern_is_a_configuration_error_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("bad.toml"), "description = \"x\"\n[split]\nkind = \"regex\"\nregex = \"(unclosed\"\n[fields]\nrequest = \"r\"\n").unwrap();
    let out = agent(&["patterns", "--pattern-dir", dir.path().to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("bad.toml") && stderr.contains("split.regex"),
        "{stderr}"
    );
}

#[test]
fn auto_detection_failure_names_a_line_and_suggests_check() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("weird.log");
    std::fs::write(&log, "hello world\nsomething else\n").unwrap();
    let out = agent(&["--log", log.to_str().unwrap(), "--once", "--no-checkpoints"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("line 1, 11 bytes") && stderr.contains("cerberus-agent check"),
        "{stderr}"
    );
    // Named, not shown: a file a glob took in may hold anything.
    assert!(!stderr.contains("hello world"), "{stderr}");
}

#[test]
fn help_and_version() {
    let out = agent(&["--version"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains(env!("CARGO_PKG_VERSION")));
    let out = agent(&["--help"]);
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--log",
        "--format",
        "--config",
        "--ws-url",
        "--token",
        "--client-id",
        "--secret-key",
        "--backend-url",
        "--state-dir",
        "--stdout",
        "--from-beginning",
        "--once",
        "--no-checkpoints",
        "check",
        "patterns",
    ] {
        assert!(help.contains(flag), "help mentions {flag}");
    }
}

/// The pattern-file example in README.md must compile and parse the kind of
/// line it claims to.
#[test]
fn readme_pattern_example_works() {
    let dir = tempfile::tempdir().unwrap();
    let pattern = readme_example(dir.path(), "haproxy_http");
    let log = dir.path().join("haproxy.log");
    std::fs::write(
        &log,
        "Nov 25 10:04:05 lb haproxy[1234]: 10.0.0.1:51234 [25/Nov/2026:10:04:05.123] fe be/srv1 0/0/1/2/3 200 512 - - ---- 1/1/0/0/0 0/0 \"GET /index.html?q=1 HTTP/1.1\"\n",
    )
    .unwrap();
    let out = agent(&[
        "check",
        "--format",
        pattern.to_str().unwrap(),
        log.to_str().unwrap(),
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    let e = &json_lines(&out.stdout)[0];
    assert_eq!(e["endpoint"], "/index.html");
    assert_eq!(e["timestamp"], "2026-11-25T10:04:05.123000+00:00");
    assert_eq!(e["duration_ms"], 3.0);
    assert_eq!(e["scheme"], true);
    assert_eq!(e["status"], 200);
}

/// Both nginx `log_format timed` examples in README.md (the format string,
/// and the `[split]` table spelling it out) parse the line they describe.
#[test]
fn readme_template_examples_work() {
    for name in ["nginx_timed", "nginx_timed_split"] {
        readme_template_example_works(name);
    }
}

fn readme_template_example_works(name: &str) {
    let dir = tempfile::tempdir().unwrap();
    let pattern = readme_example(dir.path(), name);
    let log = dir.path().join("access.log");
    std::fs::write(
        &log,
        "10.0.0.2 - alice [25/Nov/2026:10:04:05 +0100] \"POST /api/cart?x=1 HTTP/2.0\" 201 17 \"-\" \"curl/8.5.0\" 0.042\n",
    )
    .unwrap();
    let out = agent(&[
        "check",
        "--format",
        pattern.to_str().unwrap(),
        log.to_str().unwrap(),
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    let e = &json_lines(&out.stdout)[0];
    assert_eq!(e["endpoint"], "/api/cart");
    assert_eq!(e["method"], "POST");
    assert_eq!(e["timestamp"], "2026-11-25T09:04:05+00:00");
    assert_eq!(e["duration_ms"], 42.0);
    assert_eq!(e["status"], 201);
    assert_eq!(e["user_agent"], "curl/8.5.0");
}

/// Writes the pattern-file example of README.md that starts with the
/// comment naming `NAME.toml` into `dir`; returns its path.
fn readme_example(dir: &std::path::Path, name: &str) -> std::path::PathBuf {
    let readme = std::fs::read_to_string(common::repo().join("README.md")).unwrap();
    let marker = format!("# /etc/cerberus/patterns.d/{name}.toml");
    let start = readme
        .find(&marker)
        .unwrap_or_else(|| panic!("{marker} in README.md"));
    let body = &readme[start..];
    let example = &body[..body.find("```").expect("end of example")];
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, example).unwrap();
    path
}

#[test]
fn a_look_alike_format_detected_from_plain_lines_gives_way_to_the_one_that_fits() {
    // gunicorn's default format writes the same line as nginx's combined
    // for plain requests: a gunicorn log that starts with such lines is
    // detected as nginx_combined. Its later lines with an escaped quote or
    // UTF-8 text (which nginx would have written as \x22 and \xC3...) must
    // not be lost for it.
    let recorded = std::fs::read_to_string(sample("gunicorn.log")).unwrap();
    let plain = recorded.lines().next().unwrap();
    let tricky: Vec<&str> = ["/adv/quote ", "/adv/utf8 "]
        .iter()
        .filter_map(|request| recorded.lines().find(|l| l.contains(request)))
        .collect();
    assert_eq!(tricky.len(), 2, "the recorded sample has both lines");
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let mut text = format!("{plain}\n").repeat(25);
    for l in &tricky {
        text.push_str(l);
        text.push('\n');
    }
    std::fs::write(&log, text).unwrap();
    let out = agent(&[
        "--log",
        log.to_str().unwrap(),
        "--once",
        "--no-checkpoints",
        "--pattern-dir",
        "/nonexistent",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let events = json_lines(&out.stdout);
    assert_eq!(events.len(), 27, "every line has its event\n{stderr}");
    assert_eq!(events[25]["user_agent"], "say \"hi\" now");
    assert_eq!(events[26]["user_agent"], "Zürich 東京 bot");
    assert!(
        stderr.contains("format detected: nginx_combined")
            && stderr.contains("reading the file as gunicorn from now on"),
        "{stderr}"
    );
}

/// `check` says where a line stops fitting: the pattern, the byte, the
/// reason, and the line with the spot marked under it.
#[test]
fn check_marks_where_a_line_stops_fitting() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.log");
    std::fs::write(
        &path,
        "10.0.0.1 - - [25/Nov/2026:10:04:05 +0000] \"GET / HTTP/1.1\" abc 5 \"-\" \"ua\"\n",
    )
    .unwrap();
    let out = agent(&[
        "check",
        "--format",
        "nginx_combined",
        path.to_str().unwrap(),
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout
            .contains("nginx_combined: at byte 59: field `$status` is \"abc\": expected a number"),
        "{stdout}"
    );
    let lines: Vec<&str> = stdout.lines().collect();
    let shown = lines
        .iter()
        .position(|l| l.trim_start().starts_with("10.0.0.1"))
        .expect("the line is shown");
    let caret = lines[shown + 1].find('^').expect("a marker under it");
    assert_eq!(&lines[shown][caret..caret + 3], "abc", "{stdout}");

    // With `auto`, a pattern that fits it furthest is named (several fit
    // up to the status here).
    let out = agent(&["check", path.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("nearest: ") && stdout.contains(": at byte 59: field `$"),
        "{stdout}"
    );
}

/// A line of a known format with fields added after it (a log_format that
/// extends combined): `check` says which format and where the extra
/// fields start, and a line of no format says nothing of the kind.
#[test]
fn check_names_a_known_format_with_extra_trailing_fields() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    std::fs::write(
        &log,
        "1.2.3.4 - - [25/Nov/2026:10:04:05 +0000] \"GET /a HTTP/1.1\" 200 5 \"-\" \"ua\" rt=0.123 uct=\"0.001\"\nhello world\n",
    )
    .unwrap();
    let out = agent(&["check", log.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("this is nginx_combined with extra fields after byte 73"),
        "{stdout}"
    );
    assert_eq!(stdout.matches("with extra fields").count(), 1, "{stdout}");
}
