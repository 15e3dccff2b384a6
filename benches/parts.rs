//! The parts of the per-line path, measured apart so that a regression in
//! `benches/parse.rs` can be located: splitting a line with a pattern,
//! timestamp conversion (with the per-second cache and without), the IP
//! HMAC (with the cache and without), path percent-decoding, JSON string
//! encoding, query-string parsing; and the compressors of the WebSocket
//! (permessage-deflate) on batches of events.
//!
//! Inputs are fixed, realistic values (an nginx combined line of ~220 bytes,
//! 500 client IPs in a skewed distribution, and a busy public site's spread:
//! 100,000 addresses drawn Zipf (s = 1), where a small cache misses most
//! of the time); the batches are events of the agent's shape with those
//! 100,000 addresses hashed, 128 KiB a message, as the sender makes them.
//! Criterion reports time per
//! iteration; throughput is in elements (lines, IPs, strings) per second.
//! Run: `cargo bench --bench parts`.

use std::hint::black_box;

use cerberus_agent::deliver::backend::compression::MessageDeflate;
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

/// 200,000 draws from 100,000 addresses, Zipf-distributed (s = 1), from a
/// fixed seed: the spread of a busy public site, as in `benches/e2e`.
fn zipf_ips() -> Vec<String> {
    const ADDRESSES: usize = 100_000;
    let mut cumulative = Vec::with_capacity(ADDRESSES);
    let mut total = 0.0;
    for rank in 1..=ADDRESSES {
        total += 1.0 / rank as f64;
        cumulative.push(total);
    }
    // splitmix64: deterministic and good enough to draw ranks.
    let mut state: u64 = 0x5eed;
    let mut next = move || {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    (0..200_000)
        .map(|_| {
            let u = (next() >> 11) as f64 / (1u64 << 53) as f64 * total;
            let rank = cumulative.partition_point(|&c| c < u) as u32;
            // A scattered address per rank, so neighbours do not share prefixes.
            let a = rank.wrapping_mul(2_654_435_761);
            format!(
                "{}.{}.{}.{}",
                1 + (a >> 24) % 223,
                (a >> 16) & 255,
                (a >> 8) & 255,
                1 + a % 254
            )
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
    let zipf = zipf_ips();
    g.throughput(Throughput::Elements(zipf.len() as u64));
    let mut busy = IpPseudonymiser::new(Some("bench-secret"));
    g.bench_function("ip_hash/cached_zipf_100k", |b| {
        b.iter(|| {
            for ip in &zipf {
                black_box(busy.pseudonymise(ip).len());
            }
        })
    });
    g.throughput(Throughput::Elements(ips.len() as u64));
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

/// 20,000 events of the agent's shape (clients Zipf-spread, hashed; the
/// user agents, paths and statuses of `benches/e2e`) in batches of 128
/// KiB, as the sender sends them; and how many events.
fn batches() -> (Vec<Vec<u8>>, usize) {
    const AGENTS: [&str; 4] = [
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
        "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0",
        "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Mobile/15E148 Safari/604.1",
        "curl/8.5.0",
    ];
    const PATHS: [&str; 4] = [
        "/api/v1/products/",
        "/account/orders/",
        "/static/app.",
        "/blog/2026/11/",
    ];
    let mut hasher = IpPseudonymiser::new(Some("bench-secret"));
    let mut messages = Vec::new();
    let mut batch = String::new();
    let ips = zipf_ips();
    let events = 20_000;
    for (i, ip) in ips.iter().take(events).enumerate() {
        if batch.is_empty() {
            batch = format!(
                "{{\"type\":\"batch\",\"seq\":{},\"events\":[",
                messages.len() + 1
            );
        } else {
            batch.push(',');
        }
        let r = i.wrapping_mul(2_654_435_761);
        batch.push_str(&format!(
            "{{\"api_key\":\"\",\"client_id\":\"\",\"token\":\"\",\"remote_addr\":\"{}\",\"endpoint\":\"{}{}\",\"scheme\":false,\"method\":\"GET\",\"timestamp\":\"2026-11-25T10:{:02}:{:02}+00:00\",\"custom_data\":{{}},\"headers\":null,\"query_params\":null,\"body\":null,\"user_agent\":\"{}\",\"user_id\":null,\"status\":{},\"bytes_sent\":{},\"event_id\":\"3ac3b3603248006200000000{:08x}\"}}",
            hasher.pseudonymise(ip),
            PATHS[r % 4],
            r % 100_000,
            i / 30_000,
            i / 500 % 60,
            AGENTS[(r >> 8) % 4],
            [200, 200, 200, 404, 301][(r >> 4) % 5],
            r % 60_000,
            i * 214,
        ));
        if batch.len() > 128 * 1024 - 600 {
            batch.push_str("]}");
            messages.push(std::mem::take(&mut batch).into_bytes());
        }
    }
    if !batch.is_empty() {
        batch.push_str("]}");
        messages.push(batch.into_bytes());
    }
    (messages, events)
}

/// The agent's own compressor against zlib-rs at level 2 (the default
/// before it), with the 4 KiB window Python's `websockets` asks for and
/// the 32 KiB one; bytes an event are printed once.
fn compression(c: &mut Criterion) {
    let (messages, events) = batches();
    let mut g = c.benchmark_group("compress");
    g.throughput(Throughput::Elements(events as u64));
    for bits in [12u8, 15] {
        for (name, level) in [("events", None), ("zlib_rs_level2", Some(2))] {
            let mut deflate = MessageDeflate::new(level, bits, false);
            let bytes: usize = messages
                .iter()
                .map(|m| deflate.compress(m).map_or(0, |c| c.len()))
                .sum();
            println!(
                "compress/{name}/window_{bits}: {:.1} bytes an event",
                bytes as f64 / events as f64
            );
            g.bench_function(format!("{name}/window_{bits}"), |b| {
                b.iter(|| {
                    for m in &messages {
                        black_box(deflate.compress(m).map_or(0, |c| c.len()));
                    }
                })
            });
        }
    }
    g.finish();

    // The same compressor with the Python backend's window, each message
    // after 3.5 ms asleep (the pace at which that backend acknowledges
    // 128 KiB batches on this kind of machine). Only the compressions are
    // timed: against `events/window_12` this is what doing the work in
    // pieces costs per event, with nothing else changed.
    let mut g = c.benchmark_group("compress_paced");
    g.throughput(Throughput::Elements(events as u64));
    g.sample_size(10);
    let mut deflate = MessageDeflate::new(None, 12, false);
    g.bench_function("events/window_12/after_3.5ms_asleep", |b| {
        b.iter_custom(|rounds| {
            let mut busy = std::time::Duration::ZERO;
            for _ in 0..rounds {
                for m in &messages {
                    std::thread::sleep(std::time::Duration::from_micros(3500));
                    let started = std::time::Instant::now();
                    black_box(deflate.compress(m).map_or(0, |c| c.len()));
                    busy += started.elapsed();
                }
            }
            busy
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(std::time::Duration::from_secs(2)).warm_up_time(std::time::Duration::from_millis(500));
    targets = parts, compression
}
criterion_main!(benches);
