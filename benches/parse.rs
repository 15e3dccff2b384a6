//! Per-line cost of every bundled pattern: split, build the event (IP hash
//! with a key, timestamp, endpoint decoding, metrics), encode the JSON.
//!
//! Method: the input for each pattern is its recorded real sample
//! (tests/samples/NAME.log) repeated to 4,096 lines, with the client IP
//! replaced by one of 500 addresses drawn with a skewed, deterministic
//! distribution (a few heavy hitters, a long tail), as in real traffic. One
//! iteration handles all 4,096 lines into a reused buffer; criterion reports
//! lines per second (`thrpt`). Run: `cargo bench --bench parse`.

use std::hint::black_box;

use cerberus_agent::agent::LineHandler;
use cerberus_agent::config::Secret;
use cerberus_agent::event::{EventOptions, Identity, LinePosition};
use cerberus_agent::parse::PatternSet;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

const LINES: usize = 4096;

/// Deterministic skewed IPs: squaring a uniform index favours low ranks.
fn ip(i: usize) -> String {
    let u = (i.wrapping_mul(2654435761) % 10_000) as f64 / 10_000.0;
    let rank = (u * u * 500.0) as usize;
    format!(
        "{}.{}.{}.{}",
        10 + rank % 200,
        rank % 251,
        (rank * 7) % 256,
        1 + rank % 250
    )
}

fn input(name: &str) -> Vec<Vec<u8>> {
    let path = format!("{}/tests/samples/{name}.log", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let sample: Vec<&[u8]> = text
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .collect();
    (0..LINES)
        .map(|i| {
            let line = String::from_utf8_lossy(sample[i % sample.len()]).into_owned();
            line.replacen("127.0.0.1", &ip(i), 1).into_bytes()
        })
        .collect()
}

fn per_pattern(c: &mut Criterion) {
    let set = PatternSet::bundled().expect("bundled patterns");
    let options = EventOptions {
        identity: Identity {
            token: "bench-token".into(),
            client_id: "bench".into(),
        },
        secret_key: Some(Secret::new("bench-secret")),
        query_params: false,
        default_https: None,
    };
    let mut group = c.benchmark_group("line");
    group.throughput(Throughput::Elements(LINES as u64));
    for name in cerberus_agent::parse::bundled_names() {
        let lines = input(name);
        let mut handler = LineHandler::new(set.get(name).expect("bundled"), &options);
        let mut out = Vec::with_capacity(LINES * 512);
        group.bench_function(name, |b| {
            b.iter(|| {
                out.clear();
                for (i, line) in lines.iter().enumerate() {
                    let pos = LinePosition {
                        source: 1,
                        offset: i as u64,
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

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(std::time::Duration::from_secs(3)).warm_up_time(std::time::Duration::from_secs(1));
    targets = per_pattern
}
criterion_main!(benches);
