//! What an operator meets in the first ten minutes: a glob that takes the
//! error log too, several formats in one folder, the environment, exit
//! statuses that tell the truth, and signals a service manager sends.

use crate::common;

use std::fs;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::agent_process::{access_line, id_of};
use common::backend::{Backend, Behaviour, Seen};
use serde_json::Value;

use crate::common::programs::{printed_events as events, run_agent as agent};

const PATIENCE: Duration = Duration::from_secs(20);

fn write_access_log(path: &Path, ids: std::ops::Range<usize>) {
    let text: String = ids.map(access_line).collect();
    fs::write(path, text).unwrap();
}

const NGINX_ERRORS: &str = "\
2026/11/25 10:04:05 [error] 1234#1234: *5 open() \"/srv/www/favicon.ico\" failed (2: No such file or directory), client: 10.0.0.1, server: _, request: \"GET /favicon.ico HTTP/1.1\"
2026/11/25 10:04:06 [warn] 1234#1234: *6 an upstream response is buffered to a temporary file
2026/11/25 10:04:07 [notice] 1233#1233: signal process started
";

#[test]
fn a_glob_taking_the_error_log_ships_every_access_line_and_names_the_error_log_once() {
    let dir = tempfile::tempdir().unwrap();
    write_access_log(&dir.path().join("access.log"), 0..50);
    fs::write(dir.path().join("error.log"), NGINX_ERRORS).unwrap();
    let glob = format!("{}/*.log", dir.path().display());
    let out = agent(&["--log", &glob, "--once", "--no-checkpoints"], &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let ids: Vec<usize> = events(&out.stdout).iter().map(id_of).collect();
    assert_eq!(ids, (0..50).collect::<Vec<_>>(), "{stderr}");
    assert_eq!(
        stderr
            .matches("nginx's error log, not an access log")
            .count(),
        1,
        "{stderr}"
    );
    assert!(stderr.contains("error.log"), "{stderr}");
    // Its lines were not delivered: --once says so in its status.
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("3 lines skipped"), "{stderr}");

    // Left out with --exclude: a clean run.
    let exclude = format!("{}/error.log", dir.path().display());
    let out = agent(
        &[
            "--log",
            &glob,
            "--exclude",
            &exclude,
            "--once",
            "--no-checkpoints",
        ],
        &[],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(events(&out.stdout).len(), 50, "{stderr}");
    assert!(!stderr.contains("error log"), "{stderr}");
    assert_eq!(out.status.code(), Some(0), "{stderr}");
}

#[test]
fn logs_tables_and_path_equals_format_give_each_log_its_format() {
    let dir = tempfile::tempdir().unwrap();
    let samples = common::repo().join("tests").join("samples");
    let json = dir.path().join("app.log");
    let combined = dir.path().join("access.log");
    fs::copy(samples.join("nginx_json.log"), &json).unwrap();
    fs::copy(samples.join("nginx_combined.log"), &combined).unwrap();
    let expected = |name: &str| common::read_jsonl(&samples.join(format!("{name}.expected.jsonl")));
    // Lines the recorder marked `{"fails": true}` are no event.
    let endpoints = |events: &[Value]| -> Vec<String> {
        events
            .iter()
            .filter(|e| e.get("fails").is_none())
            .map(|e| e["endpoint"].as_str().unwrap_or_default().to_owned())
            .collect()
    };
    let mut want = endpoints(&expected("nginx_combined"));
    want.extend(endpoints(&expected("nginx_json")));
    want.sort();

    let config = dir.path().join("agent.toml");
    fs::write(
        &config,
        format!(
            "pattern_dirs = []\n[[logs]]\npath = \"{}\"\nformat = \"nginx_json\"\n[[logs]]\npath = \"{}\"\nformat = \"nginx_combined\"\n",
            json.display(),
            combined.display()
        ),
    )
    .unwrap();
    let out = agent(
        &[
            "--config",
            config.to_str().unwrap(),
            "--once",
            "--no-checkpoints",
        ],
        &[],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let mut got = endpoints(&events(&out.stdout));
    got.sort();
    assert_eq!(got, want, "{stderr}");

    // The same with PATH=FORMAT flags.
    let a = format!("{}=nginx_json", json.display());
    let b = format!("{}=nginx_combined", combined.display());
    let out = agent(
        &[
            "--log",
            &a,
            "--log",
            &b,
            "--once",
            "--no-checkpoints",
            "--pattern-dir",
            "/nonexistent",
        ],
        &[],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    let mut got = endpoints(&events(&out.stdout));
    got.sort();
    assert_eq!(got, want, "{stderr}");
}

#[test]
fn an_unknown_cerberus_variable_warns_and_the_log_filter_works() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    write_access_log(&log, 0..3);
    let args = ["--log", log.to_str().unwrap(), "--once", "--no-checkpoints"];
    let out = agent(&args, &[("CERBERUS_FOO", "1")]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert_eq!(events(&out.stdout).len(), 3);
    assert_eq!(stderr.matches("CERBERUS_FOO").count(), 1, "{stderr}");

    // CERBERUS_LOG_FILTER sets what is logged: `error` hides the info lines.
    let out = agent(&args, &[("CERBERUS_LOG_FILTER", "error")]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        !stderr.contains("INFO") && !stderr.contains("done:"),
        "{stderr}"
    );
    let out = agent(&args, &[]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("done:"));
}

#[test]
fn a_bad_wire_lists_the_allowed_values() {
    let out = agent(&["--log", "/dev/null", "--wire", "foo"], &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("batch") && stderr.contains("single"),
        "{stderr}"
    );
    let out = agent(
        &["--log", "/dev/null", "--once"],
        &[("CERBERUS_WIRE", "foo")],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("\"batch\", \"single\"") && stderr.contains("CERBERUS_WIRE"),
        "{stderr}"
    );
}

/// A backend that accepts the connection and never answers.
fn silent_backend() -> (std::net::TcpListener, String) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1");
    let url = format!("ws://127.0.0.1:{}/", listener.local_addr().unwrap().port());
    (listener, url)
}

fn spawn(args: &[&str]) -> Child {
    Command::new(common::agent_bin())
        .args(args)
        .env_remove("CERBERUS_DEBUG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start cerberus-agent")
}

fn finish(mut child: Child) -> (Option<i32>, String) {
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut stderr = String::new();
            child
                .stderr
                .take()
                .unwrap()
                .read_to_string(&mut stderr)
                .unwrap();
            return (status.code(), stderr);
        }
        assert!(started.elapsed() < PATIENCE, "the agent did not exit");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The child's standard output, line by line, read on a thread of its own
/// (so that the test can wait with a time limit).
fn stdout_lines(child: &mut Child) -> std::sync::mpsc::Receiver<std::io::Result<String>> {
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

fn signal(child: &Child, sig: &str) {
    let ok = Command::new("kill")
        .args(["-s", sig, &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(ok.success());
}

/// A SIGTERM in `--once` waits for acknowledgements (here for ten
/// minutes); a second SIGTERM ends the wait at once: the agent exits 1 with
/// the count. Without the second signal's effect the agent would still be
/// waiting when the test gives up.
#[test]
fn once_stopped_by_sigterm_before_delivery_exits_1_with_the_count() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let stderr_path = dir.path().join("agent.stderr");
    write_access_log(&log, 0..40);
    // A backend that takes the events and does not acknowledge them.
    let seen = Seen::new(Behaviour {
        silent: true,
        ..Behaviour::default()
    });
    let backend = Backend::start(0, seen.clone(), None);
    let url = backend.url("ws");
    let mut child = Command::new(common::agent_bin())
        .args(["--log", log.to_str().unwrap(), "--once", "--no-checkpoints"])
        .args(["--ws-url", &url])
        .env("CERBERUS_SHUTDOWN_TIMEOUT_MS", "600000")
        .env_remove("CERBERUS_DEBUG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(fs::File::create(&stderr_path).unwrap())
        .spawn()
        .expect("start cerberus-agent");
    let stderr = || fs::read_to_string(&stderr_path).unwrap_or_default();
    let started = Instant::now();
    while seen.event_count() < 40 {
        assert!(
            started.elapsed() < PATIENCE,
            "the events never reached the backend"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    signal(&child, "TERM");
    let first = Instant::now();
    while !stderr().contains("shutting down") {
        assert!(
            first.elapsed() < PATIENCE,
            "the first SIGTERM was not heard: {}",
            stderr()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    signal(&child, "TERM"); // the second stops the wait for acknowledgements
    let second = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        // Far below the ten-minute wait the first signal began.
        assert!(
            second.elapsed() < PATIENCE,
            "the second SIGTERM did not end the wait: {}",
            stderr()
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(1), "{}", stderr());
    assert!(
        stderr().contains("0 of 40 events acknowledged, 40 not delivered"),
        "{}",
        stderr()
    );
}

#[test]
fn once_timeout_gives_up_and_says_what_was_left() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    write_access_log(&log, 0..10);
    let (_backend, url) = silent_backend();
    let started = Instant::now();
    let child = spawn(&[
        "--log",
        log.to_str().unwrap(),
        "--once",
        "--once-timeout",
        "1",
        "--no-checkpoints",
        "--ws-url",
        &url,
    ]);
    let (code, stderr) = finish(child);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("--once-timeout passed"), "{stderr}");
    assert!(stderr.contains("10 not delivered"), "{stderr}");
    assert!(started.elapsed() < PATIENCE);
}

#[test]
fn once_with_standard_output_closed_exits_1_with_the_count() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    write_access_log(&log, 0..200_000);
    let mut child = spawn(&["--log", log.to_str().unwrap(), "--once", "--no-checkpoints"]);
    // `| head -1`: read one line, then close the pipe.
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    stdout.read_line(&mut first).unwrap();
    drop(stdout);
    assert!(first.contains("/item/0"), "{first}");
    let (code, stderr) = finish(child);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("events were not delivered"), "{stderr}");
}

#[test]
fn sigterm_stops_gracefully_and_saves_checkpoints() {
    let dir = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    write_access_log(&log, 0..5);
    let mut child = spawn(&[
        "--log",
        log.to_str().unwrap(),
        "--state-dir",
        state.path().to_str().unwrap(),
        "--from-beginning",
    ]);
    // Once the five events are out, they are delivered (standard output).
    let rx = stdout_lines(&mut child);
    for _ in 0..5 {
        let line = rx.recv_timeout(PATIENCE).expect("an event");
        assert!(line.unwrap().contains("/item/"));
    }
    signal(&child, "TERM");
    let (code, stderr) = finish(child);
    assert_eq!(code, Some(0), "a clean stop: {stderr}");
    assert!(
        stderr.contains("shutting down") && stderr.contains("done:"),
        "{stderr}"
    );
    let saved = fs::read_to_string(state.path().join("checkpoints.json")).unwrap();
    let len = fs::metadata(&log).unwrap().len();
    assert!(saved.contains(&format!("\"offset\": {len}")), "{saved}");
}

#[test]
fn help_names_the_environment_variables_and_the_exit_statuses() {
    let out = agent(&["--help"], &[]);
    let help = String::from_utf8_lossy(&out.stdout);
    for var in [
        "CERBERUS_WS_URL",
        "CERBERUS_LOG",
        "CERBERUS_WIRE",
        "CERBERUS_LOG_FILTER",
    ] {
        assert!(help.contains(var), "{var} in:\n{help}");
    }
    assert!(
        help.contains("Exit status") && help.contains("2  configuration error"),
        "{help}"
    );
    assert!(help.contains("Default: auto"), "{help}");

    // `patterns` lists only the flags it uses.
    let out = agent(&["patterns", "--help"], &[]);
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(help.contains("--pattern-dir"), "{help}");
    assert!(
        !help.contains("--secret-key") && !help.contains("--query-params"),
        "{help}"
    );
}

#[test]
fn a_pattern_folder_that_does_not_exist_is_warned_about() {
    let out = agent(
        &["patterns", "--pattern-dir", "/nonexistent/patterns.d"],
        &[],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("/nonexistent/patterns.d") && stderr.contains("does not exist"),
        "{stderr}"
    );
}

/// Runs the agent as `nobody` when the tests run as root (CI), so that
/// file permissions apply to it; returns the child with piped output.
fn spawn_unprivileged(dir: &Path, args: &[&str]) -> Child {
    use std::os::unix::fs::PermissionsExt;
    let is_root = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout == b"0\n")
        .unwrap_or(false);
    let mut cmd = if is_root {
        // The binary must be reachable by nobody: copy it where it is.
        let bin = dir.join("cerberus-agent");
        fs::copy(common::agent_bin(), &bin).unwrap();
        fs::set_permissions(&bin, fs::Permissions::from_mode(0o755)).unwrap();
        let mut c = Command::new("setpriv");
        c.args(["--reuid=nobody", "--regid=nogroup", "--clear-groups", "--"])
            .arg(bin);
        c
    } else {
        Command::new(common::agent_bin())
    };
    cmd.args(args)
        .env_remove("CERBERUS_DEBUG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start cerberus-agent (as nobody through setpriv, from util-linux, when root)")
}

#[test]
fn an_unreadable_file_found_by_a_glob_is_reported_once_with_a_hint() {
    use std::os::unix::fs::PermissionsExt;
    let top = tempfile::tempdir().unwrap();
    fs::set_permissions(top.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let logs = top.path().join("logs");
    fs::create_dir(&logs).unwrap();
    fs::set_permissions(&logs, fs::Permissions::from_mode(0o777)).unwrap();
    let access = logs.join("access.log");
    write_access_log(&access, 0..3);
    fs::set_permissions(&access, fs::Permissions::from_mode(0o644)).unwrap();
    let secret = logs.join("secret.log");
    write_access_log(&secret, 100..103);
    fs::set_permissions(&secret, fs::Permissions::from_mode(0o000)).unwrap();
    let glob = format!("{}/*.log", logs.display());
    let mut child = spawn_unprivileged(
        top.path(),
        &[
            "--log",
            &glob,
            "--from-beginning",
            "--no-checkpoints",
            "--format",
            "nginx_combined",
        ],
    );
    let rx = stdout_lines(&mut child);
    for _ in 0..3 {
        let line = rx.recv_timeout(PATIENCE).expect("the readable file ships");
        assert!(line.unwrap().contains("/item/"));
    }
    // Every created file makes the agent look at the folder again.
    for i in 0..5 {
        let other = logs.join(format!("other-{i}.txt"));
        fs::write(&other, "x\n").unwrap();
        std::thread::sleep(Duration::from_millis(150));
    }
    signal(&child, "TERM");
    let (code, stderr) = finish(child);
    assert_eq!(code, Some(0), "{stderr}");
    let reports = stderr.matches("secret.log: Permission denied").count();
    assert_eq!(reports, 1, "reported once, not at every look: {stderr}");
    assert!(
        stderr.contains("setfacl -m u:"),
        "says how to fix it: {stderr}"
    );
}

/// `--once` shows a progress bar on a terminal (here a pseudo-terminal
/// made by `script`, from Debian's essential bsdutils), and none when
/// stderr is not one.
#[test]
fn once_shows_progress_on_a_terminal_only() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    write_access_log(&log, 0..20_000);
    let command = format!(
        "{} --log {} --once --no-checkpoints --format nginx_combined > /dev/null",
        common::agent_bin().display(),
        log.display()
    );
    let out = Command::new("script")
        .args(["-qc", &command, "/dev/null"])
        .env_remove("CERBERUS_DEBUG")
        .stdin(Stdio::null())
        .output()
        .expect("script (bsdutils) runs the agent on a pseudo-terminal");
    let terminal = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{terminal}");
    assert!(
        terminal.contains("lines/s") && terminal.contains("eta"),
        "{terminal}"
    );

    let out = agent(
        &["--log", log.to_str().unwrap(), "--once", "--no-checkpoints"],
        &[],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("eta"),
        "no bar without a terminal: {stderr}"
    );
}

/// `--format 'nginx:…'`: the log_format line from nginx.conf is enough, no
/// pattern file; each variable's meaning is known (the metrics header, the
/// request time in seconds). A format that does not compile is a
/// configuration error naming the part.
#[test]
fn a_servers_own_format_string_on_the_command_line_needs_no_pattern_file() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("custom.log");
    fs::write(
        &log,
        "10.1.2.3 [25/Nov/2026:10:04:05 +0000] \"GET /shop/cart?x=1 HTTP/1.1\" 200 0.250 \"0.010, 0.240\" \"{\\x22cart_items\\x22:3}\"\n\
         10.1.2.4 [25/Nov/2026:10:04:06 +0000] \"POST /api HTTP/1.1\" 201 0.010 \"-\" \"-\"\n",
    )
    .unwrap();
    let format = r#"nginx:$remote_addr [$time_local] "$request" $status $request_time "$upstream_response_time" "$upstream_http_x_cerberus_metrics""#;
    let out = agent(
        &[
            "--log",
            log.to_str().unwrap(),
            "--format",
            format,
            "--once",
            "--no-checkpoints",
            "--stdout",
        ],
        &[],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let events = events(&out.stdout);
    assert_eq!(events.len(), 2, "{stderr}");
    assert_eq!(events[0]["remote_addr"], "10.1.2.3");
    assert_eq!(events[0]["endpoint"], "/shop/cart");
    assert_eq!(events[0]["custom_data"]["cart_items"], 3);
    assert_eq!(events[0]["duration_ms"], 250.0);
    assert_eq!(events[0]["timestamp"], "2026-11-25T10:04:05+00:00");
    assert_eq!(events[1]["method"], "POST");
    assert_eq!(events[1]["status"], 201);

    let out = agent(
        &[
            "--log",
            log.to_str().unwrap(),
            "--format",
            "nginx:escape=xml $remote_addr",
            "--once",
            "--no-checkpoints",
            "--stdout",
        ],
        &[],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("escape=xml"), "{stderr}");
}

/// A pattern file gives one splitter: a server format string or `[split]`.
#[test]
fn a_pattern_file_with_both_a_format_string_and_a_split_table_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(
        dir.path().join("both.toml"),
        "description = \"x\"\nnginx = '$remote_addr \"$request\"'\n[split]\nkind = \"json\"\n[fields]\nrequest = \"request\"\n",
    )
    .unwrap();
    let out = agent(
        &["patterns", "--pattern-dir", dir.path().to_str().unwrap()],
        &[],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("exactly one of `nginx`, `gunicorn`, `apache`"),
        "{stderr}"
    );
}
