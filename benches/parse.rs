//! Per-line cost of every bundled pattern: split, build the event (IP
//! HMAC with a key and cache, timestamp, endpoint decoding, metrics
//! sanitising), encode the JSON.
//!
//! Method: 8,192 requests are generated deterministically (a fixed-seed
//! generator): client IPs drawn from 20,000 addresses with a heavy-tailed
//! distribution (a few heavy hitters, a long tail), real browser and bot
//! user agents, paths with ids, query strings and percent-encoding, mostly
//! GET and 200, one timestamp per 500 requests as on a busy server. The same
//! requests are rendered in each bundled format (nginx combined lines come
//! out at ~220 bytes), so every pattern is measured on the same traffic. One
//! iteration handles all of them into a reused buffer; criterion reports
//! lines per second (`thrpt`). Run: `cargo bench --bench parse`.
//!
//! The `server_format` group measures the servers' format strings as the
//! agent compiles them (the template splitter) against the same formats
//! written by hand as regular expressions, on the same lines.

use std::hint::black_box;

use cerberus_agent::event::{EventOptions, Identity, LinePosition};
use cerberus_agent::parse::PatternSet;
use cerberus_agent::pipeline::LineHandler;
use cerberus_agent::secret::Secret;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

const LINES: usize = 8192;

const USER_AGENTS: &[&str] = &[
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.6 Safari/605.1.15",
    "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
    "curl/8.5.0",
];
const PATHS: &[&str] = &[
    "/api/v1/products/{n}?include=stock&currency=EUR",
    "/search?q=caf%C3%A9+{n}&lang=de&page=2",
    "/static/js/app.{n}.min.js",
    "/account/orders/{n}/invoice.pdf",
    "/blog/2026/11/{n}-mon-article-%C3%A9t%C3%A9?utm_source=newsletter",
    "/",
];

/// A small deterministic generator (xorshift), so the input never changes.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

struct Request {
    ip: String,
    time: String,
    /// uWSGI's `ctime` form of the same time.
    ctime: String,
    iso: String,
    method: &'static str,
    target: String,
    status: u16,
    bytes: u32,
    referer: &'static str,
    agent: &'static str,
    millis: u32,
}

fn requests() -> Vec<Request> {
    let mut rng = Rng(0x2026_1125);
    (0..LINES)
        .map(|i| {
            // Pareto-like rank: most requests from few addresses.
            let u = (rng.below(1_000_000) as f64 + 1.0) / 1_000_000.0;
            let rank = ((1.0 / u.powf(1.0 / 1.2)) as u64 - 1).min(19_999);
            let ip = format!(
                "{}.{}.{}.{}",
                1 + rank % 223,
                (rank * 7) % 256,
                (rank * 13) % 256,
                1 + rank % 254
            );
            let second = i / 500;
            Request {
                ip,
                time: format!("25/Nov/2026:10:{:02}:{:02} +0000", second / 60, second % 60),
                ctime: format!("Wed Nov 25 10:{:02}:{:02} 2026", second / 60, second % 60),
                iso: format!("2026-11-25T10:{:02}:{:02}+00:00", second / 60, second % 60),
                method: if rng.below(100) < 85 { "GET" } else { "POST" },
                target: PATHS[rng.below(PATHS.len() as u64) as usize]
                    .replace("{n}", &rng.below(99_999).to_string()),
                status: [200, 200, 200, 200, 200, 200, 304, 404][rng.below(8) as usize],
                bytes: rng.below(60_000) as u32,
                referer: if rng.below(2) == 0 {
                    "-"
                } else {
                    "https://shop.example.com/cart"
                },
                agent: USER_AGENTS[rng.below(USER_AGENTS.len() as u64) as usize],
                millis: rng.below(900) as u32 + 1,
            }
        })
        .collect()
}

fn render(format: &str, r: &Request) -> String {
    let common = format!(
        "{} - - [{}] \"{} {} HTTP/1.1\" {}",
        r.ip, r.time, r.method, r.target, r.status
    );
    let secs = f64::from(r.millis) / 1000.0;
    let metrics = format!("{{\"items\": {}, \"cache_hit\": true}}", r.millis % 7);
    match format {
        "nginx_combined" | "apache_combined" | "gunicorn" => {
            format!("{common} {} \"{}\" \"{}\"", r.bytes, r.referer, r.agent)
        }
        "nginx_main" => format!(
            "{common} {} \"{}\" \"{}\" \"-\"",
            r.bytes, r.referer, r.agent
        ),
        "ingress_nginx" => format!(
            "{common} {} \"{}\" \"{}\" 312 {secs:.3} [shop-web-80] [] 10.42.0.17:8000 {} {secs:.3} {} 0f4c1e2a9b7d3c5e8f6a1b2c3d4e5f60",
            r.bytes, r.referer, r.agent, r.bytes, r.status
        ),
        "apache_vhost_combined" => format!(
            "shop.example.com:443 {common} {} \"{}\" \"{}\"",
            r.bytes, r.referer, r.agent
        ),
        "apache_common" => format!("{common} {}", r.bytes),
        "gunicorn_cerberus" => format!(
            "{common} {} \"{}\" \"{}\" {secs:.6} \"{}\"",
            r.bytes,
            r.referer,
            r.agent,
            metrics.replace('"', "\\\"")
        ),
        "nginx_json" => {
            let (path, args) = r.target.split_once('?').unwrap_or((&r.target, ""));
            format!(
                r#"{{"remote_addr":"{}","time_iso8601":"{}","request_method":"{}","request_uri":"{}","uri":"{path}","args":"{args}","scheme":"https","server_protocol":"HTTP/1.1","status":"{}","body_bytes_sent":"{}","request_time":"{secs:.3}","http_referer":"{}","http_user_agent":"{}","upstream_http_x_cerberus_metrics":"{}"}}"#,
                r.ip,
                r.iso,
                r.method,
                r.target,
                r.status,
                r.bytes,
                r.referer,
                r.agent,
                metrics.replace('"', "\\\"")
            )
        }
        "json" => format!(
            r#"{{"timestamp":"{}","remote_addr":"{}","method":"{}","path":"{}","status":{},"duration_ms":{},"bytes_sent":{},"user_agent":"{}","custom_data":{metrics}}}"#,
            r.iso, r.ip, r.method, r.target, r.status, r.millis, r.bytes, r.agent
        ),
        "caddy" => {
            let epoch = 1_795_600_000.0 + f64::from(r.millis) / 7.0;
            format!(
                r#"{{"level":"info","ts":{epoch:.6},"logger":"http.log.access.log0","msg":"handled request","request":{{"remote_ip":"{}","remote_port":"41342","client_ip":"{}","proto":"HTTP/1.1","method":"{}","host":"shop.example.com","uri":"{}","headers":{{"User-Agent":["{}"],"Accept":["*/*"]}}}},"bytes_read":0,"user_id":"","duration":{secs:.9},"size":{},"status":{},"resp_headers":{{"Content-Type":["text/html"]}}}}"#,
                r.ip, r.ip, r.method, r.target, r.agent, r.bytes, r.status
            )
        }
        "uwsgi" => format!(
            "[pid: 4021|app: 0|req: 17/311] {} () {{42 vars in 811 bytes}} [{}] {} {} => generated {} bytes in {} msecs (HTTP/1.1 {}) 4 headers in 132 bytes (1 switches on core 0)",
            r.ip, r.ctime, r.method, r.target, r.bytes, r.millis, r.status
        ),
        "uvicorn" => format!(
            "INFO:     {}:51234 - \"{} {} HTTP/1.1\" {} OK",
            r.ip, r.method, r.target, r.status
        ),
        "daphne" => format!(
            "{}:51234 - - [{}] \"{} {}\" {} {}",
            r.ip,
            r.time.trim_end_matches(" +0000"),
            r.method,
            r.target,
            r.status,
            r.bytes
        ),
        "hypercorn" => format!(
            "[2026-11-25 10:00:00 +0000] [4021] [INFO] {}:51234 - - [{}] \"{} {} 1.1\" {} {} \"{}\" \"{}\"",
            r.ip,
            r.time,
            r.method,
            r.target.split('?').next().unwrap_or("/"),
            r.status,
            r.bytes,
            r.referer,
            r.agent
        ),
        "granian" => format!(
            "[{}] {} - \"{} {} HTTP/1.1\" {} {}.{:03}",
            r.iso.replace('T', " ").replace("+00:00", " +0000"),
            r.ip,
            r.method,
            r.target.split('?').next().unwrap_or("/"),
            r.status,
            r.millis,
            r.millis % 1000
        ),
        other => panic!("no renderer for {other}"),
    }
}

fn bench_options() -> EventOptions {
    EventOptions {
        identity: Identity {
            token: "bench-token".into(),
            client_id: "bench".into(),
        },
        secret_key: Some(Secret::new("bench-secret")),
        query_params: false,
        default_https: None,
        real_ip: None,
    }
}

fn per_pattern(c: &mut Criterion) {
    let set = PatternSet::bundled().expect("bundled patterns");
    let options = bench_options();
    let requests = requests();
    let mut group = c.benchmark_group("line");
    group.throughput(Throughput::Elements(LINES as u64));
    for name in cerberus_agent::parse::bundled_names() {
        let lines: Vec<Vec<u8>> = requests
            .iter()
            .map(|r| render(name, r).into_bytes())
            .collect();
        let mut handler = LineHandler::new(set.get(name).expect("bundled"), &options);
        // Every line must turn into an event, or the figure means nothing.
        let mut out = Vec::with_capacity(LINES * 600);
        for (i, line) in lines.iter().enumerate() {
            let o = handler.handle(
                line,
                LinePosition {
                    stream: 1,
                    offset: i as u64,
                    time: None,
                },
                &mut out,
            );
            assert_eq!(
                o,
                cerberus_agent::pipeline::LineOutcome::Event,
                "{name}: {}",
                String::from_utf8_lossy(line)
            );
        }
        let mean = lines.iter().map(Vec::len).sum::<usize>() / lines.len();
        group.bench_function(format!("{name} ({mean} B/line)"), |b| {
            b.iter(|| {
                out.clear();
                for (i, line) in lines.iter().enumerate() {
                    let pos = LinePosition {
                        stream: 1,
                        offset: i as u64,
                        time: None,
                    };
                    black_box(handler.handle(line, pos, &mut out));
                    out.push(b'\n');
                }
                black_box(out.len())
            })
        });
    }
    group.finish();
}

/// The servers' format strings, compiled (`nginx = '…'`: the template
/// splitter), next to the same formats written by hand as regular
/// expressions with named groups, the way a pattern file could say them:
/// same lines, same events, same escaping.
const REGEX_EQUIVALENTS: &[(&str, &str, &str)] = &[
    (
        "nginx_combined",
        "nginx",
        r#"^(?P<remote_addr>\S+) - (?P<remote_user>\S+) \[(?P<time_local>[^\]]+)\] "(?P<request>[^"]*)" (?P<status>\d+|-) (?P<body_bytes_sent>\d+|-) "(?P<http_referer>[^"]*)" "(?P<http_user_agent>[^"]*)"$"#,
    ),
    (
        "apache_combined",
        "apache",
        r#"^(?P<h>\S+) (?P<l>\S+) (?P<u>\S+) \[(?P<t>[^\]]+)\] "(?P<r>(?:[^"\\]|\\.)*)" (?P<s>\d+|-) (?P<b>\d+|-) "(?P<referer>(?:[^"\\]|\\.)*)" "(?P<agent>(?:[^"\\]|\\.)*)"$"#,
    ),
    (
        "gunicorn_cerberus",
        "gunicorn",
        r#"^(?P<h>\S+) (?P<l>\S+) (?P<u>\S+) \[(?P<t>[^\]]+)\] "(?P<r>(?:[^"\\]|\\.)*)" (?P<s>\d+|-) (?P<b>\d+|-) "(?P<f>(?:[^"\\]|\\.)*)" "(?P<a>(?:[^"\\]|\\.)*)" (?P<L>[\d.]+|-) "(?P<metrics>(?:[^"\\]|\\.)*)"$"#,
    ),
];

/// The `[fields]` table of a hand-written pattern, by format.
fn regex_fields(name: &str) -> &'static str {
    match name {
        "nginx_combined" => {
            "client_ip = \"remote_addr\"\nrequest = \"request\"\ntimestamp = \"time_local\"\nstatus = \"status\"\nbytes_sent = \"body_bytes_sent\"\nuser_agent = \"http_user_agent\"\n"
        }
        "apache_combined" => {
            "client_ip = \"h\"\nrequest = \"r\"\ntimestamp = \"t\"\nstatus = \"s\"\nbytes_sent = \"b\"\nuser_agent = \"agent\"\n"
        }
        _ => {
            "client_ip = \"h\"\nrequest = \"r\"\ntimestamp = \"t\"\nstatus = \"s\"\nbytes_sent = \"b\"\nuser_agent = \"a\"\nresponse_time = \"L\"\nmetrics = \"metrics\"\n"
        }
    }
}

fn compiled_vs_regex(c: &mut Criterion) {
    let set = PatternSet::bundled().expect("bundled patterns");
    let options = bench_options();
    let requests = requests();
    let mut group = c.benchmark_group("server_format");
    group.throughput(Throughput::Elements(LINES as u64));
    for (name, escape, regex) in REGEX_EQUIVALENTS {
        let lines: Vec<Vec<u8>> = requests
            .iter()
            .map(|r| render(name, r).into_bytes())
            .collect();
        let text = format!(
            "description = \"hand-written\"\ntimestamp_format = \"%d/%b/%Y:%H:%M:%S %z\"\n[split]\nkind = \"regex\"\nescape = \"{escape}\"\nregex = '''{regex}'''\n[fields]\n{}",
            regex_fields(name)
        );
        let by_hand = cerberus_agent::parse::Pattern::from_toml(
            &text,
            "by_hand",
            cerberus_agent::parse::PatternOrigin::Bundled,
        )
        .expect("the hand-written regex pattern compiles");
        let compiled = set.get(name).expect("bundled");
        for (kind, pattern) in [
            ("compiled", compiled),
            ("regex", std::sync::Arc::new(by_hand)),
        ] {
            let mut handler = LineHandler::new(pattern, &options);
            let mut out = Vec::with_capacity(LINES * 600);
            // Both give an event for every line, or the comparison means
            // nothing.
            for (i, line) in lines.iter().enumerate() {
                let pos = LinePosition {
                    stream: 1,
                    offset: i as u64,
                    time: None,
                };
                assert_eq!(
                    handler.handle(line, pos, &mut out),
                    cerberus_agent::pipeline::LineOutcome::Event,
                    "{name} {kind}: {}",
                    String::from_utf8_lossy(line)
                );
            }
            group.bench_function(format!("{name}/{kind}"), |b| {
                b.iter(|| {
                    out.clear();
                    for (i, line) in lines.iter().enumerate() {
                        let pos = LinePosition {
                            stream: 1,
                            offset: i as u64,
                            time: None,
                        };
                        black_box(handler.handle(line, pos, &mut out));
                    }
                    black_box(out.len())
                })
            });
        }
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(std::time::Duration::from_secs(3)).warm_up_time(std::time::Duration::from_secs(1));
    targets = per_pattern, compiled_vs_regex
}
criterion_main!(benches);
