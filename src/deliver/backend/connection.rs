//! One WebSocket connection to the backend and the window of messages in
//! flight on it.
//!
//! [`Outbox`] outlives connections: the units the agent handed over and the
//! backend has not acknowledged, oldest first. A [`Connection`] sends them
//! (up to the window), matches acknowledgements in order, and pops what is
//! acknowledged; when it ends with an error, the outbox is told what was in
//! flight (to narrow down a message the backend will not take), and the
//! next connection sends the rest again from the oldest.
//!
//! The WebSocket is ratchet's, over TCP or TLS (tokio-rustls), with
//! permessage-deflate when both sides want it ([`super::compression`]).
//! Its reads are not cancellation safe, so a [`Listener`] task owns the
//! read half and forwards what the backend says over a channel; the
//! delivery loop waits on that channel, the agent's queue and the timers.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use http::HeaderValue;
use ratchet_rs::{Message, PayloadType, SubprotocolRegistry, WebSocketConfig};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::compression::{BoundedInflate, Offer};
use super::error::SendError;
use super::outbox::Outbox;
use super::sender::SenderConfig;
use super::stats::SenderStats;
use super::transport::Cork;
use super::wire::{self, Reply, Wire};

/// TCP, or TLS over TCP, counted: what the WebSocket runs on.
type Io = super::transport::CountedStream;
type WsSender = ratchet_rs::Sender<Io, super::compression::MessageDeflate>;
type WsReceiver = ratchet_rs::Receiver<Io, BoundedInflate>;

/// The largest message the backend may send (its replies are a few bytes).
const MAX_REPLY_BYTES: usize = 1 << 20;

/// What the backend said, as the [`Listener`] task hands it over.
enum Heard {
    /// A text reply, or a binary one (which `single` also takes for an
    /// acknowledgement).
    Reply(String),
    /// A ping or a pong: the backend is alive.
    Alive,
    /// The backend closed the connection, with a code and reason when it
    /// sent a close frame.
    Closed {
        code: Option<u16>,
        reason: String,
    },
    Failed(ratchet_rs::Error),
}

/// The task that reads the backend's messages for one connection.
struct Listener {
    heard: mpsc::UnboundedReceiver<Heard>,
    task: JoinHandle<()>,
}

impl Listener {
    fn spawn(mut receiver: WsReceiver) -> Self {
        let (tx, heard) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            let mut buf = BytesMut::new();
            loop {
                buf.clear();
                let heard = match receiver.read(&mut buf).await {
                    Ok(Message::Text | Message::Binary) => {
                        Heard::Reply(String::from_utf8_lossy(&buf).into_owned())
                    }
                    Ok(Message::Ping(_) | Message::Pong(_)) => Heard::Alive,
                    Ok(Message::Close(reason)) => Heard::Closed {
                        code: reason.as_ref().map(|r| u16::from(r.code)),
                        reason: reason.and_then(|r| r.description).unwrap_or_default(),
                    },
                    Err(e) => Heard::Failed(e),
                };
                let last = matches!(heard, Heard::Closed { .. } | Heard::Failed(_));
                if tx.send(heard).is_err() || last {
                    return;
                }
            }
        });
        Listener { heard, task }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A message written and not acknowledged.
#[derive(Debug, Clone, Copy)]
struct InFlight {
    seq: u64,
    sent: Instant,
    bytes: usize,
}

/// How long a failed write waits for the backend's close frame, which says
/// why better than the broken pipe does.
const CLOSE_GRACE: Duration = Duration::from_millis(200);

/// An open connection and what is in flight on it.
pub(super) struct Connection<'c> {
    config: &'c SenderConfig,
    sender: WsSender,
    listener: Listener,
    /// Holds back the flush after each message of a burst.
    cork: Cork,
    /// Whether permessage-deflate was agreed on.
    pub compressed: bool,
    /// The sequence number of the last message sent on this connection.
    seq: u64,
    /// The first `in_flight.len()` units of the outbox are sent on this
    /// connection, with their sequence numbers, when they went out and
    /// their size.
    in_flight: VecDeque<InFlight>,
    last_heard: Instant,
}

impl<'c> Connection<'c> {
    /// Connects and completes the WebSocket handshake (TLS for `wss://`),
    /// offering compression as configured; the bytes it writes are counted
    /// in `stats.wire_bytes_sent`.
    pub async fn open(
        config: &'c SenderConfig,
        stats: &Arc<SenderStats>,
    ) -> Result<Self, SendError> {
        let offer = Offer::new(config.compression);
        let cork = Cork::default();
        let attempt = async {
            let request = handshake_request(config)?;
            let io = super::transport::connect(
                request.uri(),
                config.tls.as_ref(),
                stats.clone(),
                cork.clone(),
            )
            .await?;
            let ws_config = WebSocketConfig {
                max_message_size: MAX_REPLY_BYTES,
            };
            let upgraded = ratchet_rs::subscribe_with(
                ws_config,
                io,
                request,
                &offer,
                SubprotocolRegistry::default(),
            )
            .await?;
            Ok::<_, SendError>(upgraded.websocket)
        };
        let ws = match tokio::time::timeout(config.connect_timeout, attempt).await {
            Err(_) => {
                return Err(SendError::ConnectTimeout(
                    config.connect_timeout.as_millis(),
                ));
            }
            Ok(result) => result?,
        };
        let compressed = offer.agreed();
        let (sender, receiver) = ws.split()?;
        Ok(Connection {
            config,
            sender,
            listener: Listener::spawn(receiver),
            cork,
            compressed,
            seq: 0,
            in_flight: VecDeque::new(),
            last_heard: Instant::now(),
        })
    }

    /// Delivers the outbox until the agent closed it and everything is
    /// acknowledged (`Ok`), or the connection fails.
    pub async fn deliver(&mut self, outbox: &mut Outbox) -> Result<(), SendError> {
        let mut ping = tokio::time::interval(self.config.ping_interval);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ping.tick().await;
        loop {
            outbox.retry_held_if_alone();
            if let Err(e) = self.send_window(outbox).await {
                return Err(self.why_writing_failed(e, outbox).await);
            }
            if outbox.is_done() {
                let _ = self
                    .sender
                    .close(ratchet_rs::CloseReason::new(
                        ratchet_rs::CloseCode::Normal,
                        None,
                    ))
                    .await;
                return Ok(());
            }
            let deadline = self
                .in_flight
                .front()
                .map(|m| tokio::time::Instant::from_std(m.sent + self.config.ack_timeout));
            let room = outbox.has_room(self.config.window);
            if !room {
                outbox.announce_acks();
            }
            tokio::select! {
                heard = self.listener.heard.recv() => {
                    self.last_heard = Instant::now();
                    self.take_reply(heard, outbox)?;
                    // Whatever else has come in too, before the next burst:
                    // with `single`, replies arrive one per message.
                    while let Ok(more) = self.listener.heard.try_recv() {
                        self.take_reply(Some(more), outbox)?;
                    }
                }
                batch = outbox.queue.recv(), if room => match batch {
                    Some(b) => outbox.take(b, self.config.wire),
                    None => outbox.closed = true,
                },
                _ = sleep_until(deadline), if deadline.is_some() => {
                    let seq = self.in_flight.front().map(|m| m.seq).unwrap_or_default();
                    return Err(SendError::AckTimeout { seq, ms: self.config.ack_timeout.as_millis() });
                }
                _ = ping.tick() => self.keep_alive().await?,
            }
        }
    }

    /// Handles one thing the backend said.
    fn take_reply(&mut self, heard: Option<Heard>, outbox: &mut Outbox) -> Result<(), SendError> {
        if self.is_acknowledgement(heard)? {
            self.in_flight.pop_front();
            outbox.acknowledge_oldest();
        }
        Ok(())
    }

    /// Writes every message the window allows, flushed once at the end.
    async fn send_window(&mut self, outbox: &mut Outbox) -> Result<(), SendError> {
        let window = outbox.window(self.config.window);
        if self.in_flight.len() >= window || self.in_flight.len() >= outbox.pending.len() {
            return Ok(());
        }
        self.cork.hold();
        let written = self.write_burst(outbox, window).await;
        self.cork.release();
        written?;
        self.sender.flush().await?;
        Ok(())
    }

    async fn write_burst(&mut self, outbox: &mut Outbox, window: usize) -> Result<(), SendError> {
        while self.in_flight.len() < window && self.in_flight.len() < outbox.pending.len() {
            let next = self.in_flight.len();
            outbox.fit(next);
            if next > 0 && outbox.goes_alone(next) {
                break;
            }
            self.seq += 1;
            let stats = &outbox.stats;
            let unit = &mut outbox.pending[next];
            let events = unit.len() as u64;
            if std::mem::replace(&mut unit.sent, true) {
                SenderStats::add(&stats.events_resent, events);
            }
            let message = self.config.wire.message(unit, self.seq);
            SenderStats::add(&stats.messages_sent, 1);
            SenderStats::add(&stats.events_sent, events);
            SenderStats::add(&stats.bytes_sent, message.len() as u64);
            // In flight from the first byte: a backend that cuts the
            // connection while reading it refused this message.
            self.in_flight.push_back(InFlight {
                seq: self.seq,
                sent: Instant::now(),
                bytes: message.len(),
            });
            self.sender.write(message, PayloadType::Text).await?;
        }
        Ok(())
    }

    /// The sizes of the messages in flight, oldest first.
    pub(crate) fn in_flight_sizes(&self) -> Vec<usize> {
        self.in_flight.iter().map(|m| m.bytes).collect()
    }

    /// A write failed: what the backend said just before (its close
    /// frame, an error reply) says why better than the broken pipe does.
    /// Acknowledgements that arrive meanwhile still count.
    async fn why_writing_failed(&mut self, e: SendError, outbox: &mut Outbox) -> SendError {
        let said = tokio::time::timeout(CLOSE_GRACE, async {
            loop {
                let heard = self.listener.heard.recv().await;
                if matches!(heard, Some(Heard::Failed(_)) | None) {
                    return None;
                }
                if let Err(why) = self.take_reply(heard, outbox) {
                    return Some(why);
                }
            }
        })
        .await;
        said.ok().flatten().unwrap_or(e)
    }

    /// Whether what was `heard` acknowledges the oldest message in flight;
    /// an error when it ends the connection.
    fn is_acknowledgement(&self, heard: Option<Heard>) -> Result<bool, SendError> {
        let text = match heard {
            Some(Heard::Reply(text)) => text,
            Some(Heard::Alive) => return Ok(false),
            Some(Heard::Closed { code, reason }) => return Err(SendError::Closed { code, reason }),
            Some(Heard::Failed(e)) => return Err(e.into()),
            None => {
                return Err(SendError::Closed {
                    code: None,
                    reason: String::new(),
                });
            }
        };
        let oldest = self.in_flight.front().map(|m| m.seq);
        match self.config.wire {
            // The middleware's exchange: any reply acknowledges the oldest
            // message in flight.
            Wire::Single => Ok(oldest.is_some()),
            Wire::Batch => match wire::parse_reply(&text) {
                Reply::Ack(n) => match oldest {
                    Some(expected) if expected == n => Ok(true),
                    Some(expected) if n > expected => {
                        Err(SendError::AckOutOfOrder { got: n, expected })
                    }
                    _ => Ok(false),
                },
                Reply::Error { seq, message } => Err(SendError::BatchRefused {
                    seq: seq.map(|s| s.to_string()).unwrap_or_else(|| "?".into()),
                    message,
                }),
                Reply::Unknown(t) => {
                    tracing::debug!("ignoring a reply that is not an acknowledgement: {t}");
                    Ok(false)
                }
            },
        }
    }

    /// Pings the backend; a backend silent for three periods is dead.
    async fn keep_alive(&mut self) -> Result<(), SendError> {
        let silent = self.last_heard.elapsed();
        if silent > self.config.ping_interval * 3 {
            return Err(SendError::Silent(silent.as_secs()));
        }
        self.sender.write_ping(&[]).await?;
        Ok(())
    }
}

/// The handshake request with the token and client id headers.
fn handshake_request(config: &SenderConfig) -> Result<http::Request<()>, SendError> {
    let uri: http::Uri = config
        .url
        .parse()
        .map_err(|e: http::uri::InvalidUri| SendError::BadUrl(e.to_string()))?;
    let mut request = http::Request::get(uri)
        .body(())
        .map_err(|e| SendError::BadUrl(e.to_string()))?;
    let headers = request.headers_mut();
    if let Some(token) = &config.token {
        let bearer = HeaderValue::from_str(&format!("Bearer {}", token.expose()))
            .map_err(|_| SendError::BadToken)?;
        headers.insert("Authorization", bearer);
        let key = HeaderValue::from_str(token.expose()).map_err(|_| SendError::BadToken)?;
        headers.insert("X-API-Key", key);
    }
    if let Some(id) = &config.client_id
        && let Ok(v) = HeaderValue::from_str(id)
    {
        headers.insert("X-Client-Id", v);
    }
    headers.insert(
        "User-Agent",
        HeaderValue::from_static(concat!("cerberus-agent/", env!("CARGO_PKG_VERSION"))),
    );
    Ok(request)
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}
