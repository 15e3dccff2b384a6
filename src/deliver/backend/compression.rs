//! Compression on the wire: permessage-deflate (RFC 7692).
//!
//! Events of one server look alike (the same keys, user agents, paths,
//! the same client hashes), so the agent offers the extension in every
//! handshake with context takeover (the compressor's window carries over
//! from one message to the next) and uses it when the backend accepts.
//! A backend that does not know the extension answers without it and gets
//! plain messages, with no setting to change. The offer is made twice,
//! first without letting the backend name a smaller window (see
//! [`offer_header`]); ratchet (`ratchet_deflate`) checks the answer; the
//! codecs are ours, on ratchet's extension interface:
//!
//! - [`MessageDeflate`] compresses what the agent sends: with the agent's
//!   own compressor ([`EventDeflate`], made for its JSON batches) unless
//!   `compression_level` names a zlib level, then with zlib-rs. The system
//!   zlib that ratchet's compressor is built on cost more CPU than the
//!   whole pipeline before it, and twice as much again with the 4 KiB
//!   window Python's `websockets` asks for; zlib-rs at level 2 cost 40 %
//!   of that, and the agent's own about 60 % of zlib-rs, with fewer bytes
//!   (docs/protocol.md, "Compression").
//! - [`BoundedInflate`] inflates the backend's messages: ratchet's inflates
//!   a message whole, however large it grows, so that one 1 MiB message
//!   from a hostile backend (a "deflate bomb") took 1,000 MiB; ours stops at
//!   the reply limit and fails that connection only.

use std::sync::atomic::{AtomicBool, Ordering};

use bytes::BytesMut;

use super::event_deflate::EventDeflate;
use flate2::{Decompress, FlushDecompress};
use ratchet_rs::ExtensionProvider;
use ratchet_rs::deflate::{
    Compression as Level, DeflateConfig, DeflateExtProvider, DeflateExtensionError, WindowBits,
};
use ratchet_rs::ratchet_ext::{
    Extension, ExtensionDecoder, ExtensionEncoder, FrameHeader, HeaderMap, HeaderValue, OpCode,
    RsvBits, SplittableExtension,
};

/// How hard and with how large a window the agent compresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeflateSettings {
    /// `None`: the agent's own compressor ([`EventDeflate`]); 1 (fastest)
    /// to 9 (smallest): zlib-rs at that level.
    pub level: Option<u32>,
    /// The LZ77 window the agent compresses with, 2^9 to 2^15 bytes; the
    /// backend may ask for a smaller one in its answer.
    pub window_bits: u8,
}

impl Default for DeflateSettings {
    fn default() -> Self {
        // The agent's own compressor: on the agent's batches, fewer bytes
        // than zlib-rs's level 2 for 40 % less CPU (docs/protocol.md).
        DeflateSettings {
            level: None,
            window_bits: 15,
        }
    }
}

/// Allowed values, for the settings' error messages.
pub const LEVELS: std::ops::RangeInclusive<u32> = 1..=9;
pub const WINDOW_BITS: std::ops::RangeInclusive<u8> = 9..=15;

impl DeflateSettings {
    /// The extension offered in the handshake.
    pub(crate) fn offer(self) -> DeflateExtProvider {
        // try_from fails only outside 8..=15; the settings are checked to
        // be within 9..=15 when they are read.
        let bits = WindowBits::try_from(self.window_bits).unwrap_or(WindowBits::fifteen());
        DeflateExtProvider::with_config(DeflateConfig {
            // What the backend may use for its replies (acknowledgements,
            // a few bytes each): whatever it likes.
            server_max_window_bits: WindowBits::fifteen(),
            client_max_window_bits: bits,
            // Context takeover both ways: consecutive events share most of
            // their bytes. A backend that cannot keep a window per
            // connection may still answer `client_no_context_takeover`,
            // which is accepted.
            request_server_no_context_takeover: false,
            request_client_no_context_takeover: false,
            accept_no_context_takeover: true,
            // ratchet's own compressor is never used (ours replace it).
            compression_level: Level::new(self.level.unwrap_or(1)),
        })
    }
}

/// What one handshake offers, and whether the backend took it.
#[derive(Debug)]
pub(crate) struct Offer {
    deflate: Option<DeflateExtProvider>,
    /// What was offered (the level, and the window the agent compresses
    /// with at most).
    settings: DeflateSettings,
    agreed: AtomicBool,
}

impl Offer {
    pub fn new(settings: Option<DeflateSettings>) -> Self {
        Offer {
            deflate: settings.map(DeflateSettings::offer),
            settings: settings.unwrap_or_default(),
            agreed: AtomicBool::new(false),
        }
    }

    /// Whether the backend's answer agreed on permessage-deflate.
    pub fn agreed(&self) -> bool {
        self.agreed.load(Ordering::Relaxed)
    }
}

impl ExtensionProvider for &Offer {
    type Extension = Negotiated;
    type Error = DeflateExtensionError;

    fn apply_headers(&self, headers: &mut HeaderMap) {
        if self.deflate.is_some() {
            headers.insert(
                "sec-websocket-extensions",
                offer_header(self.settings.window_bits),
            );
        }
    }

    fn negotiate_client(&self, headers: &HeaderMap) -> Result<Option<Negotiated>, Self::Error> {
        let answer = self.deflate.negotiate_client(headers)?;
        self.agreed.store(answer.is_some(), Ordering::Relaxed);
        Ok(answer.map(|_| {
            // ratchet checked the answer; the codecs are ours, with the
            // windows and resets it agreed on.
            let (bits, reset) = client_parameters(headers, self.settings.window_bits);
            let (server_bits, server_reset) = server_parameters(headers);
            Negotiated {
                encoder: MessageDeflate::new(self.settings.level, bits, reset),
                decoder: BoundedInflate::new(server_bits, server_reset, MAX_INFLATED_BYTES),
            }
        }))
    }

    fn negotiate_server(
        &self,
        _headers: &HeaderMap,
    ) -> Result<Option<(Negotiated, HeaderValue)>, Self::Error> {
        // The agent is never the server.
        Ok(None)
    }
}

/// The extension as the handshake offers it: twice, in order of
/// preference (RFC 7692 section 5).
///
/// First without `client_max_window_bits`: a backend then cannot ask the
/// agent for a smaller window (section 7.1.2.2), and the agent compresses
/// with its own (`window_bits`, 32 KiB by default). Python's `websockets`
/// takes this one: it would otherwise answer `client_max_window_bits=12`,
/// and a 4 KiB window costs 55 % more bytes on the wire (80.8 against
/// 52.2 an event on the e2e bench's Zipf input) and 4 % more instructions
/// for the whole agent (docs/protocol.md, "Compression"), to save the
/// backend 28 KiB of inflate window on the connection. Then with it: a
/// backend that will compress only with a window it names (`websockets`'
/// `require_client_max_window_bits`) declines the first and takes this
/// one, and the agent compresses with the window its answer names.
fn offer_header(window_bits: u8) -> HeaderValue {
    let limit = if window_bits < 15 {
        format!("client_max_window_bits={window_bits}")
    } else {
        "client_max_window_bits".to_owned()
    };
    HeaderValue::from_str(&format!("permessage-deflate, permessage-deflate; {limit}"))
        // Never fails (ASCII made here); a plain offer if it did.
        .unwrap_or(HeaderValue::from_static("permessage-deflate"))
}

/// The largest message the backend may send once inflated (its replies
/// are a few bytes).
pub const MAX_INFLATED_BYTES: usize = 1 << 20;

/// The backend's window for its messages, and whether it resets its
/// compressor after each, from its answer's `permessage-deflate` entry.
fn server_parameters(headers: &HeaderMap) -> (u8, bool) {
    answer_parameters(headers, "server", 15)
}

/// The window the agent compresses with (what it offered, or less if the
/// backend asked), and whether it must reset its compressor after each
/// message (`client_no_context_takeover`).
fn client_parameters(headers: &HeaderMap, offered: u8) -> (u8, bool) {
    let (bits, reset) = answer_parameters(headers, "client", offered);
    (bits.min(offered), reset)
}

/// `<side>_max_window_bits` (or `default`) and whether
/// `<side>_no_context_takeover` is in the answer's `permessage-deflate`
/// entry.
fn answer_parameters(headers: &HeaderMap, side: &str, default: u8) -> (u8, bool) {
    let mut bits = default;
    let mut reset = false;
    let answers = headers
        .get_all("sec-websocket-extensions")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','));
    for entry in answers {
        let mut params = entry.split(';').map(str::trim);
        if params.next() != Some("permessage-deflate") {
            continue;
        }
        for param in params {
            let (name, value) = param.split_once('=').unwrap_or((param, ""));
            let Some(name) = name.trim().strip_prefix(side) else {
                continue;
            };
            match name {
                "_max_window_bits" => {
                    bits = value.trim().trim_matches('"').parse().unwrap_or(default);
                }
                "_no_context_takeover" => reset = true,
                _ => {}
            }
        }
        break;
    }
    // zlib can neither deflate nor inflate with a window of 2^8 (RFC 7692
    // allows it; a stream written with 2^9 reads with 2^9, as every zlib
    // based peer does).
    (bits.clamp(9, 15), reset)
}

/// permessage-deflate as agreed: [`MessageDeflate`] for what the agent
/// sends, [`BoundedInflate`] for what the backend sends.
#[derive(Debug)]
pub(crate) struct Negotiated {
    encoder: MessageDeflate,
    decoder: BoundedInflate,
}

impl Extension for Negotiated {
    fn bits(&self) -> RsvBits {
        RsvBits {
            rsv1: true,
            rsv2: false,
            rsv3: false,
        }
    }
}

impl ExtensionEncoder for Negotiated {
    type Error = DeflateFailed;

    fn encode(
        &mut self,
        payload: &mut BytesMut,
        header: &mut FrameHeader,
    ) -> Result<(), Self::Error> {
        self.encoder.encode(payload, header)
    }
}

impl ExtensionDecoder for Negotiated {
    type Error = InflateError;

    fn decode(
        &mut self,
        payload: &mut BytesMut,
        header: &mut FrameHeader,
    ) -> Result<(), Self::Error> {
        self.decoder.decode(payload, header)
    }
}

impl SplittableExtension for Negotiated {
    type SplitEncoder = MessageDeflate;
    type SplitDecoder = BoundedInflate;

    fn split(self) -> (MessageDeflate, BoundedInflate) {
        (self.encoder, self.decoder)
    }
}

/// Why a message could not be compressed (zlib-rs's own words; it fails
/// only on a broken state, never on input).
#[derive(Debug, thiserror::Error)]
#[error("compressing a message failed: {0}")]
pub struct DeflateFailed(&'static str);

/// Compresses the agent's messages (RFC 7692 section 7.2.1): each message
/// whole, in one call, ending as a sync flush ends with its `00 00 ff ff`
/// left out. With context takeover the window carries over from message
/// to message.
pub struct MessageDeflate {
    compressor: Compressor,
}

/// Which deflate writes the messages.
enum Compressor {
    /// The agent's own, made for its JSON batches (the default).
    Events(Box<EventDeflate>),
    /// zlib-rs at the level the settings name, into a buffer kept for
    /// the connection.
    Zlib {
        deflate: Box<zlib_rs::Deflate>,
        /// `client_no_context_takeover`: a fresh window for every message.
        reset_each_message: bool,
        out: Vec<u8>,
    },
}

impl std::fmt::Debug for MessageDeflate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.compressor {
            Compressor::Events(e) => e.fmt(f),
            Compressor::Zlib {
                reset_each_message, ..
            } => f
                .debug_struct("MessageDeflate")
                .field("reset_each_message", reset_each_message)
                .finish_non_exhaustive(),
        }
    }
}

/// The deflate trailer RFC 7692 has the sender strip.
const SYNC_TRAILER: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

impl MessageDeflate {
    /// `level` `None` for the agent's own compressor, else zlib-rs at 1 to
    /// 9; a window of 2^`window_bits` bytes (9 to 15).
    pub fn new(level: Option<u32>, window_bits: u8, reset_each_message: bool) -> Self {
        let window_bits = window_bits.clamp(9, 15);
        let Some(level) = level else {
            return MessageDeflate {
                compressor: Compressor::Events(Box::new(EventDeflate::new(
                    window_bits,
                    reset_each_message,
                ))),
            };
        };
        let config = zlib_rs::DeflateConfig {
            level: level.clamp(1, 9) as i32,
            method: zlib_rs::Method::Deflated,
            // Negative: raw deflate, no zlib header.
            window_bits: -i32::from(window_bits),
            // The most symbols a block holds before its codes are written
            // (2^(9+6)): a 128 KiB batch is two or three blocks, not six,
            // for 5 % less CPU with 4 KiB windows; 256 KiB more memory.
            mem_level: 9,
            strategy: zlib_rs::Strategy::Default,
        };
        MessageDeflate {
            compressor: Compressor::Zlib {
                deflate: Box::new(zlib_rs::Deflate::new_with_config(config)),
                reset_each_message,
                out: Vec::new(),
            },
        }
    }

    /// `payload` compressed, ready to send (without the trailer).
    pub fn compress(&mut self, payload: &[u8]) -> Result<&[u8], DeflateFailed> {
        let (deflate, reset_each_message, out) = match &mut self.compressor {
            Compressor::Events(e) => return Ok(e.compress(payload)),
            Compressor::Zlib {
                deflate,
                reset_each_message,
                out,
            } => (deflate, *reset_each_message, out),
        };
        // Room for all of it, even if it does not compress, and the
        // flush: one call does the message.
        let need = zlib_rs::compress_bound(payload.len()) + 64;
        if out.len() < need {
            out.resize(need, 0);
        }
        let start_in = deflate.total_in();
        let mut written = 0;
        loop {
            let consumed = (deflate.total_in() - start_in) as usize;
            let before = deflate.total_out();
            let status = deflate
                .compress(
                    payload.get(consumed..).unwrap_or_default(),
                    &mut out[written..],
                    zlib_rs::DeflateFlush::SyncFlush,
                )
                .map_err(|e| DeflateFailed(e.as_str()))?;
            written += (deflate.total_out() - before) as usize;
            let all_in = (deflate.total_in() - start_in) as usize >= payload.len();
            // Done when everything went in and the flush had room to end
            // (or had nothing left to write: zlib's "no progress").
            if all_in && (written < out.len() || status == zlib_rs::Status::BufError) {
                break;
            }
            let grown = out.len() * 2;
            out.resize(grown, 0);
        }
        if reset_each_message {
            deflate.reset();
        }
        let compressed = &out[..written];
        compressed
            .strip_suffix(&SYNC_TRAILER)
            .ok_or(DeflateFailed("the sync flush did not end the message"))
    }

    /// Lets go of a large buffer after a large message.
    fn shrink(&mut self) {
        match &mut self.compressor {
            Compressor::Events(e) => e.shrink(),
            Compressor::Zlib { out, .. } => {
                if out.len() > MAX_KEPT_BUFFER {
                    *out = Vec::new();
                }
            }
        }
    }
}

/// The compressed-output buffer kept between messages, at most (a default
/// batch of 128 KiB needs about that).
const MAX_KEPT_BUFFER: usize = 256 * 1024;

impl ExtensionEncoder for MessageDeflate {
    type Error = DeflateFailed;

    fn encode(
        &mut self,
        payload: &mut BytesMut,
        header: &mut FrameHeader,
    ) -> Result<(), Self::Error> {
        // An empty message goes out as it is (RSV1 clear), as ratchet's
        // compressor did.
        if payload.is_empty() {
            return Ok(());
        }
        let compressed = self.compress(payload)?;
        payload.clear();
        payload.extend_from_slice(compressed);
        self.shrink();
        if !matches!(header.opcode, OpCode::Continuation) {
            header.rsv1 = true;
        }
        Ok(())
    }
}

/// Why a message from the backend could not be inflated.
#[derive(Debug, thiserror::Error)]
pub enum InflateError {
    #[error("a compressed message from the backend inflates past {0} bytes: refused")]
    TooLarge(usize),
    #[error("a compressed message from the backend is not valid deflate data: {0}")]
    Corrupt(#[from] flate2::DecompressError),
}

/// Inflates the backend's messages (RFC 7692 section 7.2.2), never past a
/// limit: output grows in steps and the message is refused as soon as it
/// passes `max`, so memory stays within `max` plus one step whatever the
/// compressed bytes say.
#[derive(Debug)]
pub struct BoundedInflate {
    decompress: Decompress,
    /// `server_no_context_takeover`: a fresh window for every message.
    reset_each_message: bool,
    /// Inside a compressed message (its first frame had RSV1).
    compressed: bool,
    max: usize,
    out: Vec<u8>,
}

/// How much the output grows at a time.
const INFLATE_STEP: usize = 16 * 1024;

impl BoundedInflate {
    pub fn new(window_bits: u8, reset_each_message: bool, max: usize) -> Self {
        BoundedInflate {
            decompress: Decompress::new_with_window_bits(false, window_bits),
            reset_each_message,
            compressed: false,
            max,
            out: Vec::new(),
        }
    }

    /// Inflates one whole message as it came in a single frame (for tests
    /// and the fuzzer; the connection goes through `decode`).
    pub fn inflate_message(&mut self, compressed: &[u8]) -> Result<Vec<u8>, InflateError> {
        let mut payload = BytesMut::from(compressed);
        self.inflate(&mut payload)?;
        Ok(payload.to_vec())
    }

    fn inflate(&mut self, payload: &mut BytesMut) -> Result<(), InflateError> {
        // The end of every message's deflate block, which RFC 7692 has the
        // sender strip.
        payload.extend_from_slice(&[0x00, 0x00, 0xff, 0xff]);
        self.out.clear();
        let start = self.decompress.total_in();
        loop {
            let read = (self.decompress.total_in() - start) as usize;
            if read >= payload.len() {
                break;
            }
            if self.out.len() > self.max {
                return Err(InflateError::TooLarge(self.max));
            }
            // Doubling, but never past the limit and a step.
            let capacity = (self.out.capacity() * 2).clamp(INFLATE_STEP, self.max + INFLATE_STEP);
            self.out
                .reserve_exact(capacity.saturating_sub(self.out.len()).max(1));
            let before = (self.decompress.total_in(), self.decompress.total_out());
            self.decompress.decompress_vec(
                &payload[read..],
                &mut self.out,
                FlushDecompress::Sync,
            )?;
            let after = (self.decompress.total_in(), self.decompress.total_out());
            if after == before && self.out.len() < self.out.capacity() {
                // No progress with room to spare: the input is exhausted.
                break;
            }
        }
        if self.out.len() > self.max {
            return Err(InflateError::TooLarge(self.max));
        }
        payload.clear();
        payload.extend_from_slice(&self.out);
        if self.out.capacity() > INFLATE_STEP * 4 {
            // A large reply's buffer is not kept for the connection's life.
            self.out = Vec::new();
        }
        if self.reset_each_message {
            self.decompress.reset(false);
        }
        Ok(())
    }
}

impl ExtensionDecoder for BoundedInflate {
    type Error = InflateError;

    fn decode(
        &mut self,
        payload: &mut BytesMut,
        header: &mut FrameHeader,
    ) -> Result<(), Self::Error> {
        match header.opcode {
            OpCode::Binary | OpCode::Text if header.rsv1 => {
                self.compressed = true;
                if !header.fin {
                    // The frames so far accumulate; inflated at the last.
                    return Ok(());
                }
            }
            OpCode::Continuation if header.fin && self.compressed => {}
            _ => return Ok(()),
        }
        self.compressed = false;
        header.rsv1 = true;
        self.inflate(payload)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deflated(data: &[u8], bits: u8) -> BytesMut {
        let mut c =
            flate2::Compress::new_with_window_bits(flate2::Compression::new(9), false, bits);
        let mut out = Vec::with_capacity(data.len() + 64);
        c.compress_vec(data, &mut out, flate2::FlushCompress::Sync)
            .unwrap();
        // RFC 7692: the sender strips the sync flush's 00 00 ff ff.
        out.truncate(out.len() - 4);
        BytesMut::from(&out[..])
    }

    fn text_frame() -> FrameHeader {
        FrameHeader {
            fin: true,
            rsv1: true,
            rsv2: false,
            rsv3: false,
            opcode: OpCode::Text,
        }
    }

    #[test]
    fn replies_inflate_and_a_bomb_stops_at_the_limit() {
        let mut inflate = BoundedInflate::new(12, false, MAX_INFLATED_BYTES);
        let ack = br#"{"type":"ack","seq":17}"#;
        for _ in 0..3 {
            // Context carries over: the second and third reuse the window.
            let mut payload = deflated(ack, 12);
            inflate.decode(&mut payload, &mut text_frame()).unwrap();
            assert_eq!(&payload[..], ack);
        }

        // 100 MiB of zeros compress to about 100 KiB.
        let bomb = vec![0u8; 100 << 20];
        let mut payload = deflated(&bomb, 15);
        assert!(payload.len() < 200 * 1024, "{}", payload.len());
        let mut fresh = BoundedInflate::new(15, false, MAX_INFLATED_BYTES);
        let e = fresh.decode(&mut payload, &mut text_frame()).unwrap_err();
        assert!(matches!(e, InflateError::TooLarge(_)), "{e}");
        assert!(fresh.out.capacity() < MAX_INFLATED_BYTES + 2 * INFLATE_STEP);
    }

    #[test]
    fn the_answer_names_the_backends_window() {
        let mut headers = HeaderMap::new();
        headers.insert(
            "sec-websocket-extensions",
            HeaderValue::from_static(
                "permessage-deflate; server_max_window_bits=12; server_no_context_takeover",
            ),
        );
        assert_eq!(server_parameters(&headers), (12, true));
        assert_eq!(server_parameters(&HeaderMap::new()), (15, false));
    }

    /// What the handshake offers with these settings.
    fn offered(settings: DeflateSettings) -> String {
        let mut headers = HeaderMap::new();
        (&Offer::new(Some(settings))).apply_headers(&mut headers);
        let offer = headers["sec-websocket-extensions"].to_str().unwrap_or("");
        offer.to_owned()
    }

    #[test]
    fn the_offer_asks_for_context_takeover_first_without_a_window_limit() {
        // Context takeover both ways (nothing asks the backend to reset);
        // first an offer the backend cannot limit, then one it can.
        assert_eq!(
            offered(DeflateSettings::default()),
            "permessage-deflate, permessage-deflate; client_max_window_bits"
        );
        // A smaller window set here is named in the second.
        assert_eq!(
            offered(DeflateSettings {
                level: Some(9),
                window_bits: 10,
            }),
            "permessage-deflate, permessage-deflate; client_max_window_bits=10"
        );
    }

    /// ratchet's own server (the Rust backends' handshake) takes the first
    /// offer; whichever the backend takes, the agent compresses with the
    /// window its answer names, its own when the answer names none.
    #[test]
    fn either_offer_taken_is_understood() {
        let offer = Offer::new(Some(DeflateSettings::default()));
        let mut request = HeaderMap::new();
        (&offer).apply_headers(&mut request);
        let server = DeflateExtProvider::with_config(DeflateConfig {
            server_max_window_bits: WindowBits::fifteen(),
            client_max_window_bits: WindowBits::fifteen(),
            request_server_no_context_takeover: false,
            request_client_no_context_takeover: false,
            accept_no_context_takeover: true,
            compression_level: Level::new(1),
        });
        let (_, answer) = server
            .negotiate_server(&request)
            .ok()
            .flatten()
            .expect("ratchet's server takes the offer");
        let mut headers = HeaderMap::new();
        headers.insert("sec-websocket-extensions", answer);
        assert!(matches!((&offer).negotiate_client(&headers), Ok(Some(_))));
        assert_eq!(client_parameters(&headers, 15), (15, false));
    }

    #[test]
    fn a_backend_answering_without_the_extension_means_plain_messages() {
        let offer = Offer::new(Some(DeflateSettings::default()));
        let none = (&offer).negotiate_client(&HeaderMap::new());
        assert!(matches!(none, Ok(None)));
        assert!(!offer.agreed());
        let mut headers = HeaderMap::new();
        headers.insert(
            "sec-websocket-extensions",
            HeaderValue::from_static("permessage-deflate; client_max_window_bits=12"),
        );
        assert!(matches!((&offer).negotiate_client(&headers), Ok(Some(_))));
        assert!(offer.agreed());

        // Turned off: nothing offered, and an answer naming it anyway is
        // not taken up.
        let off = Offer::new(None);
        let mut offered = HeaderMap::new();
        (&off).apply_headers(&mut offered);
        assert!(offered.is_empty());
        assert!(matches!((&off).negotiate_client(&headers), Ok(None)));
    }

    /// Messages as the agent sends them: alike, then one that does not
    /// compress at all.
    fn messages() -> Vec<Vec<u8>> {
        let mut out: Vec<Vec<u8>> = (0..40)
            .map(|i| {
                format!(
                    "{{\"type\":\"batch\",\"seq\":{i},\"events\":[{}]}}",
                    "{\"endpoint\":\"/item/7\",\"status\":200},".repeat(i * 37 % 500)
                )
                .into_bytes()
            })
            .collect();
        // A xorshift stream: incompressible, larger than the first buffer.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let noise = (0..300_000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        out.insert(7, noise);
        out
    }

    #[test]
    fn what_the_agent_compresses_inflates_as_sent_with_its_window_and_resets() {
        for (level, bits, reset) in [
            (None, 15, false),
            (None, 12, false),
            (None, 9, false),
            (None, 15, true),
            (Some(2), 15, false),
            (Some(2), 12, false),
            (Some(2), 9, false),
            (Some(9), 15, true),
        ] {
            let mut deflate = MessageDeflate::new(level, bits, reset);
            // The reader a backend runs: zlib with the negotiated window.
            let mut inflate = BoundedInflate::new(bits, reset, 1 << 21);
            let mut total = 0;
            for message in messages() {
                let compressed = deflate.compress(&message).unwrap().to_vec();
                total += compressed.len();
                let back = inflate.inflate_message(&compressed).unwrap();
                assert!(back == message, "{level:?}, window {bits}, reset {reset}");
            }
            // Context takeover shows: what repeats across messages costs
            // little (300,000 bytes of noise, 40 messages of repeats).
            if !reset && bits >= 12 {
                assert!(total < 310_000, "window {bits}: {total} bytes");
            }
        }
    }

    #[test]
    fn the_frame_says_compressed_and_an_empty_message_goes_as_it_is() {
        let mut deflate = MessageDeflate::new(None, 15, false);
        let mut header = FrameHeader {
            rsv1: false,
            ..text_frame()
        };
        let mut payload = BytesMut::from(&b"{\"type\":\"batch\"}"[..]);
        deflate.encode(&mut payload, &mut header).unwrap();
        assert!(header.rsv1);
        assert_ne!(&payload[..], b"{\"type\":\"batch\"}");

        let mut header = FrameHeader {
            rsv1: false,
            ..text_frame()
        };
        let mut empty = BytesMut::new();
        deflate.encode(&mut empty, &mut header).unwrap();
        assert!(!header.rsv1 && empty.is_empty());
    }

    #[test]
    fn the_agent_compresses_with_the_window_the_backend_asked_for() {
        let mut headers = HeaderMap::new();
        headers.insert(
            "sec-websocket-extensions",
            HeaderValue::from_static(
                "permessage-deflate; client_max_window_bits=12; client_no_context_takeover",
            ),
        );
        assert_eq!(client_parameters(&headers, 15), (12, true));
        // Never more than it offered; and without an answer's word, what
        // it offered.
        assert_eq!(client_parameters(&headers, 10), (10, true));
        assert_eq!(client_parameters(&HeaderMap::new(), 15), (15, false));
    }
}
