//! Metrics and health as monitoring sees them: the agent with a real
//! WebSocket backend and `--metrics-addr`, scraped over HTTP; the figures
//! must add up, and `/health` must follow the backend.

mod common;

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use cerberus_agent::metrics::samples;
use common::agent_process::access_line;
use common::backend::{Backend, Behaviour, Seen};

const PATIENCE: Duration = Duration::from_secs(30);

/// The agent, and its stderr lines as they come.
struct Agent {
    child: Child,
    /// Kept open so that the agent's stderr is drained.
    _stderr: Receiver<String>,
    metrics: String,
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(args: &[&str], env: &[(&str, &str)]) -> Agent {
    let mut cmd = Command::new(common::agent_bin());
    cmd.args(args)
        .args(["--metrics-addr", "127.0.0.1:0"])
        .env_remove("CERBERUS_DEBUG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("start cerberus-agent");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    // The agent says where it serves: a port 0 picked a free one.
    let started = Instant::now();
    let metrics = loop {
        let line = rx
            .recv_timeout(PATIENCE.saturating_sub(started.elapsed()))
            .expect("the agent says where its metrics are");
        if let Some(url) = line
            .split_whitespace()
            .map(|w| w.trim_end_matches(','))
            .find(|w| w.starts_with("http://") && w.ends_with("/metrics"))
        {
            break url.trim_end_matches("/metrics").to_owned();
        }
    };
    Agent {
        child,
        _stderr: rx,
        metrics,
    }
}

/// Status and body of a GET.
fn get(url: &str) -> (u16, String) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(5)))
        .build()
        .into();
    let mut response = agent.get(url).call().expect("the metrics address answers");
    let status = response.status().as_u16();
    (
        status,
        response.body_mut().read_to_string().unwrap_or_default(),
    )
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < PATIENCE, "{what} did not happen");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn the_figures_add_up_and_health_follows_the_backend() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let mut text = String::new();
    for id in 0..200 {
        text.push_str(&access_line(id));
        if id % 20 == 0 {
            text.push_str("this is no access log line\n");
        }
    }
    text.push_str("10.0.0.1 - - [not a time] \"GET /t HTTP/1.1\" 200 5 \"-\" \"ua\"\n");
    fs::write(&log, &text).unwrap();

    let seen = Seen::new(Behaviour::default());
    let backend = Backend::start(0, seen.clone(), None);
    let port = backend.port;
    let url = backend.url("ws");
    let agent = start(
        &[
            "--log",
            log.to_str().unwrap(),
            "--from-beginning",
            "--no-checkpoints",
            "--format",
            "nginx_combined",
            "--ws-url",
            &url,
        ],
        &[("CERBERUS_HEALTH_BACKEND_GRACE_S", "1")],
    );
    wait_until("delivery of 200 events", || seen.event_count() >= 200);
    let m = agent.metrics.clone();
    wait_until("the acknowledgements to be counted", || {
        samples(&get(&format!("{m}/metrics")).1).get("cerberus_agent_events_acked_total")
            == Some(&200.0)
    });
    // Lag is published about once a second.
    wait_until("lag 0", || {
        samples(&get(&format!("{m}/metrics")).1)
            .iter()
            .any(|(k, v)| k.starts_with("cerberus_agent_file_lag_bytes{") && *v == 0.0)
    });
    let (status, exposition) = get(&format!("{m}/metrics"));
    assert_eq!(status, 200);
    let s = samples(&exposition);
    let value = |k: &str| *s.get(k).unwrap_or_else(|| panic!("{k} in:\n{exposition}"));
    let failed = |reason: &str| {
        value(&format!(
            "cerberus_agent_lines_failed_total{{reason=\"{reason}\"}}"
        ))
    };
    assert_eq!(value("cerberus_agent_lines_read_total"), 211.0);
    assert_eq!(value("cerberus_agent_lines_parsed_total"), 200.0);
    assert_eq!(failed("no_match"), 10.0);
    assert_eq!(failed("bad_timestamp"), 1.0);
    let all_failed: f64 = s
        .iter()
        .filter(|(k, _)| k.starts_with("cerberus_agent_lines_failed_total{"))
        .map(|(_, v)| v)
        .sum();
    assert_eq!(
        value("cerberus_agent_lines_read_total"),
        value("cerberus_agent_lines_parsed_total") + all_failed,
        "read = parsed + failed"
    );
    assert_eq!(value("cerberus_agent_events_sent_total"), 200.0);
    assert_eq!(value("cerberus_agent_in_flight_events"), 0.0);
    assert_eq!(value("cerberus_agent_backend_connected"), 1.0);
    assert_eq!(value("cerberus_agent_build_info{version=\"0.1.0\"}"), 1.0);
    assert!(value("cerberus_agent_bytes_sent_total") > 200.0 * 100.0);

    // The exposition parses with Prometheus's own Python client.
    let python = common::repo().join("target/test-venv/bin/python");
    let mut parser = Command::new(&python)
        .args([
            "-c",
            "import sys\nfrom prometheus_client.openmetrics.parser import text_string_to_metric_families as p\nprint(len(list(p(sys.stdin.read()))))",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{} (tests/setup.sh installs it): {e}", python.display()));
    parser
        .stdin
        .take()
        .unwrap()
        .write_all(exposition.as_bytes())
        .unwrap();
    let out = parser.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the exposition does not parse:\n{exposition}"
    );

    // `status` shows the same figures for a person.
    let out = Command::new(common::agent_bin())
        .args(["status", "--metrics-addr", m.trim_start_matches("http://")])
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{table}");
    assert!(table.contains("health      ok"), "{table}");
    assert!(table.contains("read 211, parsed 200, failed 11"), "{table}");
    assert!(table.contains("acknowledged 200"), "{table}");

    // Healthy while the backend takes events; 503 with a reason once it
    // has been away past the grace (1 s here); healthy again when it is
    // back.
    assert_eq!(get(&format!("{m}/health")).0, 200);
    assert_eq!(get(&format!("{m}/ready")).0, 200);
    backend.stop();
    let mut body = String::new();
    wait_until("/health turning 503", || {
        let (status, b) = get(&format!("{m}/health"));
        body = b;
        status == 503
    });
    assert!(body.contains("backend"), "{body}");
    let out = Command::new(common::agent_bin())
        .args(["status", "--metrics-addr", m.trim_start_matches("http://")])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "status says it is failing");
    let _backend = Backend::start(port, Seen::new(Behaviour::default()), None);
    wait_until("/health turning 200 again", || {
        get(&format!("{m}/health")).0 == 200
    });
}
