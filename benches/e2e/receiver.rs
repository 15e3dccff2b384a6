//! A WebSocket receiver for the end-to-end benchmark, on 127.0.0.1.
//!
//! Acknowledges as docs/protocol.md says (`batch`: `{"type":"ack","seq":N}`
//! per batch; `single`: one reply per message) and counts events without
//! parsing them fully, so that it is never the bottleneck. With
//! `--latency`, each event's endpoint is `/t/<unix nanos when written>` and
//! the receiver records how long each line took from its write to here.
//!
//! Usage: bench-receiver PORT EXPECTED_EVENTS [--latency]
//! Prints `ready` when listening; when EXPECTED_EVENTS have arrived (or on
//! stdin EOF) prints one line of results and exits.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use futures_util::{SinkExt, StreamExt};
use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let port: u16 = args.get(1).and_then(|p| p.parse().ok()).expect("PORT");
    let expected: u64 = args
        .get(2)
        .and_then(|p| p.parse().ok())
        .expect("EXPECTED_EVENTS");
    let latency = args.iter().any(|a| a == "--latency");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(run(port, expected, latency));
}

async fn run(port: u16, expected: u64, latency: bool) {
    let listener = TcpListener::bind(("127.0.0.1", port))
        .await
        .expect("bind 127.0.0.1");
    println!("ready");
    let mut events: u64 = 0;
    let mut messages: u64 = 0;
    let mut first: Option<Instant> = None;
    let mut delays_us: Vec<u64> = Vec::new();
    let id_finder = memchr::memmem::Finder::new(b"\"event_id\"");
    let t_finder = memchr::memmem::Finder::new(b"\"endpoint\":\"/t/");
    let mut stdin = tokio::io::stdin();
    let mut sink = [0u8; 64];
    'conns: loop {
        let tcp = tokio::select! {
            a = listener.accept() => match a { Ok((tcp, _)) => tcp, Err(_) => continue },
            _ = stdin.read(&mut sink) => break 'conns,
        };
        let _ = tcp.set_nodelay(true);
        let Ok(mut ws) = tokio_tungstenite::accept_async(tcp).await else {
            continue;
        };
        loop {
            let msg = tokio::select! {
                m = ws.next() => m,
                _ = stdin.read(&mut sink) => break 'conns,
            };
            let Some(Ok(msg)) = msg else { continue 'conns };
            let Message::Text(text) = msg else { continue };
            let bytes = text.as_bytes();
            first.get_or_insert_with(Instant::now);
            messages += 1;
            events += id_finder.find_iter(bytes).count() as u64;
            if latency {
                let now = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map(|d| d.as_nanos() as u64)
                    .unwrap_or(0);
                for at in t_finder.find_iter(bytes) {
                    let digits = &bytes[at + 15..];
                    let end = digits.iter().position(|b| !b.is_ascii_digit()).unwrap_or(0);
                    if let Some(written) = std::str::from_utf8(&digits[..end])
                        .ok()
                        .and_then(|d| d.parse::<u64>().ok())
                    {
                        delays_us.push(now.saturating_sub(written) / 1000);
                    }
                }
            }
            let reply = if bytes.starts_with(b"{\"type\":\"batch\"") {
                let seq = bytes[22..].split(|&b| b == b',').next().unwrap_or(b"0");
                format!(
                    "{{\"type\":\"ack\",\"seq\":{}}}",
                    String::from_utf8_lossy(seq)
                )
            } else {
                "{\"status\":\"ok\"}".to_owned()
            };
            if ws.send(Message::text(reply)).await.is_err() {
                continue 'conns;
            }
            if events >= expected {
                break 'conns;
            }
        }
    }
    let secs = first.map(|t| t.elapsed().as_secs_f64()).unwrap_or(0.0);
    delays_us.sort_unstable();
    let pct = |p: f64| -> f64 {
        if delays_us.is_empty() {
            return f64::NAN;
        }
        let i = ((delays_us.len() as f64 - 1.0) * p).round() as usize;
        delays_us[i] as f64 / 1000.0
    };
    println!(
        "events={events} messages={messages} seconds={secs:.3} p50_ms={:.3} p99_ms={:.3}",
        pct(0.50),
        pct(0.99)
    );
}
