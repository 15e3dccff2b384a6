//! `--nginx-conf`: the real nginx (Debian's package, installed by
//! tests/setup.sh) with a prefix of the test's own on 127.0.0.1, never the
//! system config: an `include`d server block, two `access_log`s with two
//! custom `log_format`s (one with the metrics header and the request
//! time, one `escape=json`), requests sent, and the agent pointed at that
//! config must give the right event for every request of both logs.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// nginx in the foreground with the test's config; stopped when dropped.
struct Nginx(Child);

impl Nginx {
    fn start(work: &Path, conf: &Path, port: u16) -> Self {
        let nginx = ["/usr/sbin/nginx", "/usr/bin/nginx"]
            .iter()
            .map(PathBuf::from)
            .find(|p| p.exists())
            .expect("nginx is not installed: tests/setup.sh installs it");
        let child = Command::new(nginx)
            .arg("-p")
            .arg(work)
            .arg("-e")
            .arg(work.join("error.log"))
            .arg("-c")
            .arg(conf)
            .args(["-g", "daemon off;"])
            .stdin(Stdio::null())
            .spawn()
            .expect("start nginx");
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "nginx does not listen on 127.0.0.1:{port}: {}",
                std::fs::read_to_string(work.join("error.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Nginx(child)
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        common::agent_process::send_sigterm(self.0.id());
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One HTTP/1.1 request; the status nginx answered.
fn request(port: u16, method: &str, target: &str, agent: &str) -> u16 {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect to nginx");
    write!(
        s,
        "{method} {target} HTTP/1.1\r\nHost: test\r\nUser-Agent: {agent}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    answer
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer: {answer}"))
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn agent(args: &[&str]) -> Output {
    Command::new(common::agent_bin())
        .args(args)
        .env_remove("CERBERUS_DEBUG")
        .stdin(Stdio::null())
        .output()
        .expect("run cerberus-agent")
}

#[test]
fn nginx_conf_with_includes_gives_every_request_of_both_logs_its_event() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path();
    let logs = work.join("logs");
    std::fs::create_dir_all(work.join("sites")).unwrap();
    std::fs::create_dir_all(&logs).unwrap();
    let port = free_port();
    let conf = work.join("nginx.conf");
    std::fs::write(
        &conf,
        format!(
            r#"# the test's own nginx
worker_processes 1;
pid {work}/nginx.pid;
events {{ worker_connections 64; }}
http {{
    client_body_temp_path {work}/body;
    log_format withmetrics '$remote_addr - $remote_user [$time_local] "$request" '
                           '$status $body_bytes_sent "$http_referer" "$http_user_agent" '
                           '$request_time "$sent_http_x_cerberus_metrics"';
    log_format jsonlog escape=json
        '{{"ip":"$remote_addr","when":"$time_iso8601","method":"$request_method",'
        '"uri":"$request_uri","code":$status,"took":$request_time,"ua":"$http_user_agent"}}';
    access_log off;
    include sites/*.conf;
}}
"#,
            work = work.display()
        ),
    )
    .unwrap();
    std::fs::write(
        work.join("sites/test.conf"),
        format!(
            r#"server {{
    listen 127.0.0.1:{port};
    access_log {logs}/main.log withmetrics;
    location /shop {{
        add_header X-Cerberus-Metrics '{{"cart":"$arg_n","node":"a"}}' always;
        return 200 "ok\n";
    }}
    location /api {{
        access_log {logs}/api.log jsonlog;
        return 201 "made\n";
    }}
    location / {{ return 404; }}
}}
"#,
            logs = logs.display()
        ),
    )
    .unwrap();
    let nginx = Nginx::start(work, &conf, port);
    let mut expected = Vec::new();
    for n in 0..20 {
        let (method, target, status) = match n % 4 {
            0 => ("GET", format!("/shop/item{n}?n={n}"), 200),
            1 => ("POST", format!("/api/orders/{n}?n={n}"), 201),
            2 => ("GET", format!("/missing/{n}"), 404),
            _ => ("PUT", format!("/api/items/{n}"), 201),
        };
        let ua = format!("client \"{n}\" é");
        assert_eq!(request(port, method, &target, &ua), status);
        expected.push((method, target, status, ua));
    }
    drop(nginx); // nginx writes its logs as it goes; stopping flushes all.

    // What `check` shows before starting.
    let out = agent(&["check", "--nginx-conf", conf.to_str().unwrap()]);
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{report}");
    assert!(
        report.contains("main.log\n  format: nginx log_format \"withmetrics\""),
        "{report}"
    );
    assert!(
        report.contains("api.log\n  format: nginx log_format \"jsonlog\""),
        "{report}"
    );
    assert!(
        report.contains("2 access logs to follow, 0 left out"),
        "{report}"
    );
    let api_part = &report[report.find("api.log").unwrap()..];
    assert!(
        api_part.contains("empty: ") && api_part.contains("metrics"),
        "{report}"
    );

    let out = agent(&[
        "--nginx-conf",
        conf.to_str().unwrap(),
        "--once",
        "--no-checkpoints",
        "--stdout",
        "--pattern-dir",
        "/nonexistent",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let events: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(
        events.len(),
        expected.len(),
        "one event per request: {stderr}"
    );
    for (method, target, status, ua) in &expected {
        let path = target.split('?').next().unwrap();
        let e = events
            .iter()
            .find(|e| e["endpoint"] == *path)
            .unwrap_or_else(|| panic!("no event for {target}: {events:?}"));
        assert_eq!(e["method"], *method, "{e}");
        assert_eq!(e["status"], *status, "{e}");
        assert_eq!(e["remote_addr"], "127.0.0.1", "{e}");
        assert_eq!(e["user_agent"], *ua, "{e}");
        assert!(e["duration_ms"].is_number(), "{e}");
        assert!(
            e["timestamp"].as_str().is_some_and(|t| t.starts_with("20")),
            "{e}"
        );
        if path.starts_with("/shop") {
            let n = target.rsplit('=').next().unwrap();
            assert_eq!(e["custom_data"]["cart"], n, "{e}");
            assert_eq!(e["custom_data"]["node"], "a", "{e}");
        } else {
            assert_eq!(e["custom_data"], serde_json::json!({}), "{e}");
        }
    }
}
