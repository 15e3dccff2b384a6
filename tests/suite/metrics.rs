//! Metrics and health as monitoring sees them: the agent with a real
//! WebSocket backend and `--metrics-addr`, scraped over HTTP; the figures
//! must add up, and `/health` must follow the backend.

use crate::common;

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
    start_as(Command::new(common::agent_bin()), args, env)
}

/// As [`start`], through `cmd` (which runs the agent with more arguments).
fn start_as(mut cmd: Command, args: &[&str], env: &[(&str, &str)]) -> Agent {
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

/// The agent following `log` from its start, delivering to `url`, with a
/// health grace of `grace` seconds.
fn follow_to_backend(log: &std::path::Path, url: &str, grace: &str) -> Agent {
    start(
        &[
            "--log",
            log.to_str().unwrap(),
            "--from-beginning",
            "--no-checkpoints",
            "--format",
            "nginx_combined",
            "--ws-url",
            url,
        ],
        &[("CERBERUS_HEALTH_BACKEND_GRACE_S", grace)],
    )
}

/// The agent, run through `cmd`, following `log` from its start and
/// printing its events.
fn follow_to_stdout(cmd: Command, log: &std::path::Path) -> Agent {
    start_as(
        cmd,
        &[
            "--log",
            log.to_str().unwrap(),
            "--from-beginning",
            "--no-checkpoints",
            "--format",
            "nginx_combined",
            "--stdout",
        ],
        &[],
    )
}

/// Status and body of a GET.
fn get(url: &str) -> (u16, String) {
    let (status, _, body) = get_as(url, None);
    (status, body)
}

/// Status, content type and body of a GET with an `Accept` header.
fn get_as(url: &str, accept: Option<&str>) -> (u16, String, String) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(5)))
        .build()
        .into();
    let mut request = agent.get(url);
    if let Some(a) = accept {
        request = request.header("Accept", a);
    }
    let mut response = request.call().expect("the address answers");
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    (
        status,
        content_type,
        response.body_mut().read_to_string().unwrap_or_default(),
    )
}

const OPENMETRICS: &str = "application/openmetrics-text;version=1.0.0";

/// `promtool check metrics` (Debian's prometheus package, installed by
/// tests/setup.sh) on a Prometheus text exposition: its complaints.
fn promtool_check(exposition: &str) -> String {
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (tests/setup.sh installs it)");
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(exposition.as_bytes())
        .unwrap();
    let out = promtool.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() {
        said
    } else {
        format!("exit {:?}: {said}", out.status.code())
    }
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
    let agent = follow_to_backend(&log, &url, "1");
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

    // Without asking: the Prometheus text format, which promtool accepts
    // without a word.
    let (_, content_type, _) = get_as(&format!("{m}/metrics"), None);
    assert_eq!(content_type, "text/plain; version=0.0.4; charset=utf-8");
    assert_eq!(promtool_check(&exposition), "", "{exposition}");
    assert_eq!(value("cerberus_agent_bytes_read_total"), text.len() as f64);

    // Asked for OpenMetrics, as Prometheus asks: that, under its own
    // type, which parses with Prometheus's own Python client.
    let (_, content_type, openmetrics) = get_as(&format!("{m}/metrics"), Some(OPENMETRICS));
    assert!(
        content_type.starts_with("application/openmetrics-text; version=1.0.0"),
        "{content_type}"
    );
    assert!(openmetrics.ends_with("# EOF\n"));
    let exposition = openmetrics;
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

/// A real Prometheus (Debian's package, installed by tests/setup.sh)
/// scrapes the agent: the target is up and the counters arrive with the
/// values the run produced.
#[test]
fn a_real_prometheus_scrapes_the_agent() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let text: String = (0..300).map(access_line).collect();
    fs::write(&log, &text).unwrap();
    let agent = follow_to_stdout(Command::new(common::agent_bin()), &log);
    let target = agent.metrics.trim_start_matches("http://").to_owned();
    // Prometheus says nothing of the port it picked for 127.0.0.1:0, so
    // its port is asked of the system first.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port();
    let config = dir.path().join("prometheus.yml");
    fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n  - job_name: cerberus\n    static_configs:\n      - targets: ['{target}']\n"
        ),
    )
    .unwrap();
    let log_file = fs::File::create(dir.path().join("prometheus.log")).unwrap();
    let mut prometheus = Command::new("prometheus")
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.path().join("tsdb").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(log_file)
        .spawn()
        .expect("prometheus (tests/setup.sh installs it)");
    struct Kill<'a>(&'a mut Child);
    impl Drop for Kill<'_> {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _prometheus = Kill(&mut prometheus);
    let query = |q: &str| -> Option<(String, f64)> {
        let url = format!("http://127.0.0.1:{port}/api/v1/query?query={q}");
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(5)))
            .build()
            .into();
        let body = agent
            .get(&url)
            .call()
            .ok()?
            .body_mut()
            .read_to_string()
            .ok()?;
        let v: serde_json::Value = serde_json::from_str(&body).ok()?;
        let first = v["data"]["result"].get(0)?;
        let value = first["value"][1].as_str()?.parse().ok()?;
        Some((first["metric"].to_string(), value))
    };
    let prometheus_log =
        || fs::read_to_string(dir.path().join("prometheus.log")).unwrap_or_default();
    let started = Instant::now();
    loop {
        if let (Some((_, 1.0)), Some((_, 300.0))) =
            (query("up"), query("cerberus_agent_lines_parsed_total"))
        {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "Prometheus did not scrape the agent: up = {:?}, lines = {:?}\n{}",
            query("up"),
            query("cerberus_agent_lines_parsed_total"),
            prometheus_log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(
        query("cerberus_agent_lines_read_total").map(|q| q.1),
        Some(300.0)
    );
    assert_eq!(
        query("cerberus_agent_bytes_read_total").map(|q| q.1),
        Some(text.len() as f64)
    );
    let (labels, one) = query("cerberus_agent_build_info").expect("the build info");
    assert_eq!(one, 1.0);
    assert!(labels.contains(env!("CARGO_PKG_VERSION")), "{labels}");
    drop(agent);
}

/// A backend that accepts every connection and refuses every batch: the
/// agent reconnects again and again, and `/health` turns 503 all the same
/// once the grace has passed without an acknowledgement.
#[test]
fn health_fails_while_the_backend_refuses_everything() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let text: String = (0..50).map(access_line).collect();
    fs::write(&log, &text).unwrap();
    let seen = Seen::new(Behaviour {
        refuse_first: usize::MAX,
        ..Behaviour::default()
    });
    let backend = Backend::start(0, seen.clone(), None);
    let url = backend.url("ws");
    let agent = follow_to_backend(&log, &url, "2");
    let m = agent.metrics.clone();
    wait_until("several reconnections", || {
        seen.connections.load(std::sync::atomic::Ordering::SeqCst) >= 3
    });
    let mut body = String::new();
    wait_until("/health turning 503", || {
        let (status, b) = get(&format!("{m}/health"));
        body = b;
        status == 503
    });
    assert!(body.contains("refusing"), "{body}");
    // And it stays so across the next reconnections (each used to count
    // as the backend working again).
    let connections = || seen.connections.load(std::sync::atomic::Ordering::SeqCst);
    let later = connections() + 2;
    let started = Instant::now();
    while connections() < later {
        assert_eq!(
            get(&format!("{m}/health")).0,
            503,
            "healthy again after a reconnection, with nothing acknowledged"
        );
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "no reconnection"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Whoever can reach the metrics port: 2,000 idle connections at the
/// service's 1,024 file descriptors, and a request head of megabytes. The
/// agent keeps a few threads and little memory, answers the head with 431
/// after 8 KiB, serves again once the connections are gone, and stops on
/// SIGTERM.
#[test]
fn the_metrics_port_holds_against_idle_connections_and_huge_heads() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    fs::write(&log, (0..10).map(access_line).collect::<String>()).unwrap();
    let mut limited = Command::new("prlimit");
    limited
        .args(["--nofile=1024:1024", "--"])
        .arg(common::agent_bin());
    let agent = follow_to_stdout(limited, &log);
    let pid = agent.child.id();
    let addr: std::net::SocketAddr = agent.metrics.trim_start_matches("http://").parse().unwrap();
    let status_field = |field: &str| -> u64 {
        fs::read_to_string(format!("/proc/{pid}/status"))
            .unwrap_or_default()
            .lines()
            .find(|l| l.starts_with(field))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    };

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let idle = runtime.block_on(async {
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..2000 {
            tasks.spawn(tokio::time::timeout(
                Duration::from_secs(3),
                tokio::net::TcpStream::connect(addr),
            ));
        }
        let mut open = Vec::new();
        while let Some(done) = tasks.join_next().await {
            if let Ok(Ok(Ok(stream))) = done {
                open.push(stream);
            }
        }
        open
    });
    assert!(idle.len() >= 64, "only {} connections opened", idle.len());
    let threads = status_field("Threads:");
    assert!(
        threads <= 16,
        "{threads} threads for {} connections",
        idle.len()
    );

    // A head of 4 MiB: refused after 8 KiB, memory untouched.
    let mut big = std::net::TcpStream::connect(addr).unwrap();
    big.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let head = format!(
        "GET /metrics HTTP/1.1\r\nX-Big: {}\r\n",
        "a".repeat(4 << 20)
    );
    let _ = big.write_all(head.as_bytes());
    drop(idle);
    let mut answer = String::new();
    let _ = std::io::Read::read_to_string(&mut big, &mut answer);
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer:.200}");

    // The connections gone, it serves again.
    let m = agent.metrics.clone();
    wait_until("metrics served again", || {
        get(&format!("{m}/metrics")).0 == 200
    });
    let peak = status_field("VmHWM:");
    assert!(peak < 64 * 1024, "peak RSS {peak} KiB");
    let mut agent = agent;
    common::agent_process::send_sigterm(pid);
    let started = Instant::now();
    while agent.child.try_wait().unwrap().is_none() {
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "no stop on SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
