//! The parts of the per-line path, measured apart so that a regression in
//! `benches/parse.rs` can be located: splitting a line with a pattern,
//! timestamp conversion (with the per-second cache and without), the IP
//! HMAC (with the cache and without), path percent-decoding, JSON string
//! encoding, query-string parsing.
//!
//! Inputs are fixed, realistic values (an nginx combined line of ~220 bytes,
//! 500 client IPs in a skewed distribution). Criterion reports time per
//! iteration; throughput is in elements (lines, IPs, strings) per second.
//! Run: `cargo bench --bench parts`.

use std::hint::black_box;

use cerberus_agent::event::endpoint::{decode_path, query_params};
use cerberus_agent::event::push_json_str;
use cerberus_agent::parse::PatternSet;
use cerberus_agent::parse::timestamp::{TimestampConverter, TimestampFormat};
use cerberus_agent::pseudonymise::IpPseudonymiser;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

const LINE: &[u8] = br#"203.0.113.77 - - [25/Nov/2026:10:04:05 +0000] "GET /search?q=caf%C3%A9+noir&lang=de&page=2 HTTP/1.1" 200 51234 "https://shop.example.com/" "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0""#;

fn ips() -> Vec<String> {
    (0..4096usize)
        .map(|i| {
            let u = (i.wrapping_mul(2654435761) % 10_000) as f64 / 10_000.0;
            let rank = (u * u * 500.0) as usize;
            format!("198.51.{}.{}", rank / 250, 1 + rank % 250)
        })
        .collect()
}

fn parts(c: &mut Criterion) {
    let set = PatternSet::bundled().expect("bundled patterns");
    let nginx = set.get("nginx_combined").expect("bundled");
    let mut g = c.benchmark_group("part");

    g.throughput(Throughput::Elements(1));
    g.bench_function("split/nginx_combined", |b| {
        b.iter(|| black_box(nginx.split(black_box(LINE)).is_ok()))
    });

    let format = TimestampFormat::from_spec("%d/%b/%Y:%H:%M:%S %z").expect("format");
    let mut cached = TimestampConverter::new(format.clone());
    g.bench_function("timestamp/cached", |b| {
        b.iter(|| {
            black_box(
                cached
                    .convert(black_box("25/Nov/2026:10:04:05 +0000"))
                    .map(str::len),
            )
        })
    });
    g.bench_function("timestamp/parse", |b| {
        b.iter(|| {
            black_box(
                format
                    .parse(black_box("25/Nov/2026:10:04:05 +0000"))
                    .is_ok(),
            )
        })
    });

    let ips = ips();
    g.throughput(Throughput::Elements(ips.len() as u64));
    let mut with_cache = IpPseudonymiser::new(Some("bench-secret"));
    g.bench_function("ip_hash/cached", |b| {
        b.iter(|| {
            for ip in &ips {
                black_box(with_cache.pseudonymise(ip).len());
            }
        })
    });
    let without = IpPseudonymiser::new(Some("bench-secret"));
    g.bench_function("ip_hash/uncached", |b| {
        b.iter(|| {
            for ip in &ips {
                black_box(without.compute(ip).len());
            }
        })
    });

    g.throughput(Throughput::Elements(1));
    g.bench_function("percent_decode/path", |b| {
        b.iter(|| {
            black_box(decode_path(black_box(b"/blog/2026/11/mon-article-%C3%A9t%C3%A9")).len())
        })
    });
    let ua = "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0";
    let mut out = Vec::with_capacity(256);
    g.bench_function("json/string", |b| {
        b.iter(|| {
            out.clear();
            push_json_str(&mut out, black_box(ua));
            black_box(out.len())
        })
    });
    g.bench_function("query/parse", |b| {
        b.iter(|| {
            black_box(query_params(black_box(b"q=caf%C3%A9+noir&lang=de&page=2&token=x")).is_some())
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(std::time::Duration::from_secs(2)).warm_up_time(std::time::Duration::from_millis(500));
    targets = parts
}
criterion_main!(benches);
