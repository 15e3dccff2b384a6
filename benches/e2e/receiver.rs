//! A WebSocket receiver for the end-to-end benchmark, on 127.0.0.1.
//!
//! Acknowledges as docs/protocol.md says (`batch`: `{"type":"ack","seq":N}`
//! per batch; `single`: one reply per message) and counts events without
//! parsing them fully, so that it is never the bottleneck. It accepts
//! permessage-deflate (ratchet, context takeover, 15-bit windows) when the
//! agent offers it, and counts the bytes that arrive on the socket (frames
//! and compression included) beside the messages' own bytes. With
//! `--latency`, each event's endpoint is `/t/<unix nanos when written>` and
//! the receiver records how long each line took from its write to here.
//!
//! With `--ack-delay-us N`, each reply waits N µs: a backend as slow as
//! the Python one, without its CPU on the agent's machine.
//!
//! Usage: bench-receiver PORT EXPECTED_EVENTS [--latency] [--ack-delay-us N]
//! Prints `ready` when listening; when EXPECTED_EVENTS have arrived (or on
//! stdin EOF) prints one line of results and exits.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::BytesMut;
use ratchet_rs::deflate::{DeflateConfig, DeflateExtProvider};
use ratchet_rs::{Message, PayloadType, SubprotocolRegistry, WebSocketConfig};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let port: u16 = args.get(1).and_then(|p| p.parse().ok()).expect("PORT");
    let expected: u64 = args
        .get(2)
        .and_then(|p| p.parse().ok())
        .expect("EXPECTED_EVENTS");
    let latency = args.iter().any(|a| a == "--latency");
    // A slow backend without its CPU: each acknowledgement waits this long.
    let ack_delay = args
        .iter()
        .position(|a| a == "--ack-delay-us")
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .map_or(Duration::ZERO, Duration::from_micros);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(run(port, expected, latency, ack_delay));
}

/// What has arrived so far.
#[derive(Default)]
struct Tally {
    events: u64,
    messages: u64,
    message_bytes: u64,
    first: Option<Instant>,
    delays_us: Vec<u64>,
}

impl Tally {
    fn report(&mut self, wire_bytes: u64) {
        let secs = self.first.map(|t| t.elapsed().as_secs_f64()).unwrap_or(0.0);
        self.delays_us.sort_unstable();
        let pct = |p: f64| -> f64 {
            if self.delays_us.is_empty() {
                return f64::NAN;
            }
            let i = ((self.delays_us.len() as f64 - 1.0) * p).round() as usize;
            self.delays_us[i] as f64 / 1000.0
        };
        println!(
            "events={} messages={} seconds={secs:.3} p50_ms={:.3} p99_ms={:.3} message_bytes={} wire_bytes={wire_bytes}",
            self.events,
            self.messages,
            pct(0.50),
            pct(0.99),
            self.message_bytes,
        );
    }
}

async fn run(port: u16, expected: u64, latency: bool, ack_delay: Duration) {
    let listener = TcpListener::bind(("127.0.0.1", port))
        .await
        .expect("bind 127.0.0.1");
    println!("ready");
    let tally = Arc::new(Mutex::new(Tally::default()));
    let wire_bytes = Arc::new(AtomicU64::new(0));
    // Stdin closed: report what arrived and stop (reads of the WebSocket
    // cannot be cancelled midway, so this side ends the process).
    {
        let (tally, wire_bytes) = (tally.clone(), wire_bytes.clone());
        tokio::spawn(async move {
            let mut sink = [0u8; 64];
            let mut stdin = tokio::io::stdin();
            while matches!(stdin.read(&mut sink).await, Ok(n) if n > 0) {}
            if let Ok(mut t) = tally.lock() {
                t.report(wire_bytes.load(Ordering::Relaxed));
            }
            std::process::exit(0);
        });
    }
    let id_finder = memchr::memmem::Finder::new(b"\"event_id\"");
    let t_finder = memchr::memmem::Finder::new(b"\"endpoint\":\"/t/");
    let deflate = DeflateExtProvider::with_config(DeflateConfig {
        request_server_no_context_takeover: false,
        request_client_no_context_takeover: false,
        ..DeflateConfig::default()
    });
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let counted = Counted {
            inner: tcp,
            read: wire_bytes.clone(),
        };
        let config = WebSocketConfig {
            max_message_size: 64 << 20,
        };
        let Ok(upgrader) =
            ratchet_rs::accept_with(counted, config, &deflate, SubprotocolRegistry::default())
                .await
        else {
            continue;
        };
        let Ok(upgraded) = upgrader.upgrade().await else {
            continue;
        };
        let mut ws = upgraded.websocket;
        let mut buf = BytesMut::new();
        loop {
            buf.clear();
            match ws.read(&mut buf).await {
                Ok(Message::Text) => {}
                Ok(Message::Close(_)) | Err(_) => break,
                Ok(_) => continue,
            }
            let bytes: &[u8] = &buf;
            let reply = {
                let Ok(mut t) = tally.lock() else { return };
                t.first.get_or_insert_with(Instant::now);
                t.messages += 1;
                t.message_bytes += bytes.len() as u64;
                t.events += id_finder.find_iter(bytes).count() as u64;
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
                            t.delays_us.push(now.saturating_sub(written) / 1000);
                        }
                    }
                }
                if bytes.starts_with(b"{\"type\":\"batch\"") {
                    let seq = bytes[22..].split(|&b| b == b',').next().unwrap_or(b"0");
                    format!(
                        "{{\"type\":\"ack\",\"seq\":{}}}",
                        String::from_utf8_lossy(seq)
                    )
                } else {
                    "{\"status\":\"ok\"}".to_owned()
                }
            };
            if ack_delay > Duration::ZERO {
                tokio::time::sleep(ack_delay).await;
            }
            if ws.write(reply, PayloadType::Text).await.is_err() {
                break;
            }
            // Every event is in and acknowledged: report and stop.
            if let Ok(mut t) = tally.lock()
                && t.events >= expected
            {
                t.report(wire_bytes.load(Ordering::Relaxed));
                std::process::exit(0);
            }
        }
    }
}

/// A socket whose bytes read are counted.
struct Counted {
    inner: TcpStream,
    read: Arc<AtomicU64>,
}

impl AsyncRead for Counted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        self.read.fetch_add(n as u64, Ordering::Relaxed);
        polled
    }
}

impl AsyncWrite for Counted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
