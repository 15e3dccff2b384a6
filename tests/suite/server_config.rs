//! `--nginx-conf`: the real nginx (Debian's package, installed by
//! tests/setup.sh) with a prefix of the test's own on 127.0.0.1, never the
//! system config: an `include`d server block, two `access_log`s with two
//! custom `log_format`s (one with the metrics header and the request
//! time, one `escape=json`), requests sent, and the agent pointed at that
//! config must give the right event for every request of both logs.

use crate::common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use serde_json::Value;

use crate::common::programs::{Nginx, printed_events, wait_for_port};

fn agent(args: &[&str]) -> Output {
    crate::common::programs::run_agent(args, &[])
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

/// The events an agent printed, one JSON object per line.
#[test]
fn nginx_conf_with_includes_gives_every_request_of_both_logs_its_event() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path();
    let logs = work.join("logs");
    std::fs::create_dir_all(work.join("sites")).unwrap();
    std::fs::create_dir_all(&logs).unwrap();
    let port = common::free_port();
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
                           '$request_time $upstream_response_time "$sent_http_x_cerberus_metrics"';
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
    let nginx = Nginx::start(work, &conf, &[(port, "nginx")]);
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
    let events = printed_events(&out.stdout);
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

/// Waits until something listens on `port`, or panics with `log`'s text.
/// A request to the recording app (tests/samples/app.py), which answers
/// with the status and the X-Cerberus-Metrics header it is asked for.
fn app_request(port: u16, target: &str, status: u16, metrics: Option<&str>, forwarded: &str) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    let metrics = metrics
        .map(|m| format!("X-Want-Metrics: {m}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "GET {target} HTTP/1.1\r\nHost: test\r\nUser-Agent: agent \"q\" é\r\nX-Want-Status: {status}\r\nX-Forwarded-For: {forwarded}\r\n{metrics}Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = Vec::new();
    s.read_to_end(&mut answer).unwrap();
}

/// gunicorn with a custom `access_log_format` (response time in µs, a
/// request header, the metrics header), read with `--format 'gunicorn:…'`
/// given the same string.
#[test]
fn gunicorn_custom_access_log_format_given_as_is_gives_every_event() {
    let gunicorn = common::repo().join("target/test-venv/bin/gunicorn");
    assert!(
        gunicorn.exists(),
        "gunicorn is not installed: tests/setup.sh installs it into target/test-venv"
    );
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let errors = dir.path().join("error.log");
    let format = r#"%(h)s %(t)s "%(r)s" %(s)s %(B)s %(D)s "%({x-forwarded-for}i)s" "%(a)s" "%({x-cerberus-metrics}o)s""#;
    let port = common::free_port();
    let mut server = Command::new(&gunicorn)
        .args(["--workers", "1", "--bind", &format!("127.0.0.1:{port}")])
        .arg("--access-logfile")
        .arg(&log)
        .arg("--error-logfile")
        .arg(&errors)
        .args(["--access-logformat", format, "app:application"])
        .env("PYTHONPATH", common::repo().join("tests/samples"))
        .stdin(Stdio::null())
        .spawn()
        .expect("start gunicorn");
    wait_for_port(port, "gunicorn", Some(&errors));
    let cases = [
        ("/shop/cart?id=1", 200, Some(r#"{"cart_items":3}"#)),
        ("/api/orders", 201, None),
        ("/gone", 404, Some(r#"{"why":"gone"}"#)),
    ];
    for (target, status, metrics) in cases {
        app_request(port, target, status, metrics, "203.0.113.7, 10.0.0.1");
    }
    common::agent_process::send_sigterm(server.id());
    let _ = server.wait();

    let out = agent(&[
        "--log",
        log.to_str().unwrap(),
        "--format",
        &format!("gunicorn:{format}"),
        "--once",
        "--no-checkpoints",
        "--stdout",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let events = printed_events(&out.stdout);
    assert_eq!(
        events.len(),
        cases.len(),
        "{stderr}\n{}",
        std::fs::read_to_string(&log).unwrap()
    );
    for ((target, status, metrics), e) in cases.iter().zip(&events) {
        assert_eq!(e["endpoint"], target.split('?').next().unwrap(), "{e}");
        assert_eq!(e["status"], *status, "{e}");
        assert_eq!(e["remote_addr"], "127.0.0.1", "{e}");
        assert_eq!(e["user_agent"], "agent \"q\" é", "{e}");
        // %(D)s is in microseconds: a real, small, positive duration.
        let ms = e["duration_ms"].as_f64().unwrap_or(-1.0);
        assert!(ms > 0.0 && ms < 5000.0, "{e}");
        let want: Value = metrics
            .map(|m| serde_json::from_str(m).unwrap())
            .unwrap_or(serde_json::json!({}));
        assert_eq!(e["custom_data"], want, "{e}");
    }

    // Behind trusted proxies (127.0.0.1 saw the request, 10.0.0.1 forwarded
    // it), the client is the first untrusted hop of X-Forwarded-For.
    let out = Command::new(common::agent_bin())
        .args([
            "--log",
            log.to_str().unwrap(),
            "--format",
            &format!("gunicorn:{format}"),
        ])
        .args(["--once", "--no-checkpoints", "--stdout"])
        .env("CERBERUS_CLIENT_IP_FROM", "x_forwarded_for")
        .env("CERBERUS_TRUSTED_PROXIES", "127.0.0.1,10.0.0.0/8")
        .stdin(Stdio::null())
        .output()
        .expect("run cerberus-agent");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let e: Value = serde_json::from_str(line).unwrap();
        assert_eq!(e["remote_addr"], "203.0.113.7", "{e}");
    }
    // Without trusted proxies the setting is refused, not ignored.
    let out = Command::new(common::agent_bin())
        .args([
            "--log",
            log.to_str().unwrap(),
            "--once",
            "--no-checkpoints",
            "--stdout",
        ])
        .env("CERBERUS_CLIENT_IP_FROM", "x_forwarded_for")
        .stdin(Stdio::null())
        .output()
        .expect("run cerberus-agent");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("needs trusted_proxies"));
}

/// Apache httpd (Debian's apache2) with a ServerRoot of the test's own: an
/// `IncludeOptional`d site with two `CustomLog`s in two custom
/// `LogFormat`s (one with %D and the metrics header, one with its own
/// strftime time and %{ms}T); `--apache-conf` gives every request of both.
#[test]
fn apache_conf_with_includes_gives_every_request_of_both_logs_its_event() {
    let apache = PathBuf::from("/usr/sbin/apache2");
    assert!(
        apache.exists(),
        "apache2 is not installed: tests/setup.sh installs it"
    );
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path();
    for d in ["sites", "logs", "www/shop"] {
        std::fs::create_dir_all(work.join(d)).unwrap();
    }
    // The workers (www-data, when started as root) read the documents.
    for d in ["", "www", "www/shop"] {
        std::fs::set_permissions(
            work.join(d),
            <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o755),
        )
        .unwrap();
    }
    for n in (0..6).step_by(2) {
        let page = work.join(format!("www/shop/item{n}.html"));
        std::fs::write(&page, "ok\n").unwrap();
        std::fs::set_permissions(
            page,
            <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o644),
        )
        .unwrap();
    }
    let port = common::free_port();
    let mods = "/usr/lib/apache2/modules";
    let user = if common::agent_process::is_root() {
        "User www-data\nGroup www-data\n"
    } else {
        ""
    };
    let conf = work.join("httpd.conf");
    std::fs::write(
        &conf,
        format!(
            r#"# the test's own Apache
ServerRoot {work}
PidFile {work}/httpd.pid
ErrorLog {work}/error.log
DefaultRuntimeDir {work}
Listen 127.0.0.1:{port}
ServerName localhost
LoadModule mpm_event_module {mods}/mod_mpm_event.so
LoadModule authz_core_module {mods}/mod_authz_core.so
LoadModule headers_module {mods}/mod_headers.so
{user}DocumentRoot {work}/www
<Directory {work}/www>
    Require all granted
</Directory>
LogFormat "%a %l %u %t \"%r\" %>s %b %D \"%{{User-Agent}}i\" \"%{{X-Cerberus-Metrics}}o\"" withmetrics
LogFormat "%h [%{{%Y-%m-%dT%H:%M:%S%z}}t] \"%m %U%q %H\" %>s %{{ms}}T" \
    short
IncludeOptional sites/*.conf
"#,
            work = work.display()
        ),
    )
    .unwrap();
    std::fs::write(
        work.join("sites/test.conf"),
        "Header always set X-Cerberus-Metrics \"{\\\"hits\\\":1}\"\nCustomLog logs/main.log withmetrics\nCustomLog \"logs/short.log\" short\nCustomLog \"|/bin/cat\" withmetrics\n",
    )
    .unwrap();
    let errors = work.join("error.log");
    let mut server = Command::new(&apache)
        .arg("-f")
        .arg(&conf)
        .arg("-DFOREGROUND")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .expect("start apache2");
    wait_for_port(port, "apache2", Some(&errors));
    let mut expected = Vec::new();
    for n in 0..6 {
        let (target, status) = match n % 2 {
            0 => (format!("/shop/item{n}.html?n={n}"), 200),
            _ => (format!("/missing/{n}"), 404),
        };
        let ua = format!("client \"{n}\" é");
        assert_eq!(request(port, "GET", &target, &ua), status);
        expected.push((target, status, ua));
    }
    common::agent_process::send_sigterm(server.id());
    let _ = server.wait();

    let out = agent(&["check", "--apache-conf", conf.to_str().unwrap()]);
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{report}");
    assert!(
        report.contains("2 access logs to follow, 1 left out"),
        "{report}"
    );
    assert!(report.contains("a piped log"), "{report}");

    let out = agent(&[
        "--apache-conf",
        conf.to_str().unwrap(),
        "--once",
        "--no-checkpoints",
        "--stdout",
        "--pattern-dir",
        "/nonexistent",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let events = printed_events(&out.stdout);
    assert_eq!(events.len(), 2 * expected.len(), "{stderr}");
    for (target, status, ua) in &expected {
        let path = target.split('?').next().unwrap();
        let both: Vec<&Value> = events.iter().filter(|e| e["endpoint"] == *path).collect();
        assert_eq!(both.len(), 2, "{path} once in each log: {events:?}");
        for e in both {
            assert_eq!(e["status"], *status, "{e}");
            assert_eq!(e["method"], "GET", "{e}");
            assert_eq!(e["remote_addr"], "127.0.0.1", "{e}");
            assert!(e["duration_ms"].is_number(), "{e}");
            assert!(
                e["timestamp"].as_str().is_some_and(|t| t.starts_with("20")),
                "{e}"
            );
            if e.get("user_agent").is_some_and(|u| !u.is_null()) {
                // The log with the user agent also has the metrics header.
                assert_eq!(e["user_agent"], *ua, "{e}");
                assert_eq!(e["custom_data"], serde_json::json!({"hits": 1}), "{e}");
            }
        }
    }
}
