//! Compression on the wire: permessage-deflate (RFC 7692).
//!
//! Events of one server look alike (the same keys, user agents, paths,
//! the same client hashes), so the agent offers the extension in every
//! handshake with context takeover (the compressor's window carries over
//! from one message to the next) and uses it when the backend accepts.
//! A backend that does not know the extension answers without it and gets
//! plain messages, with no setting to change. The codec is ratchet's
//! (`ratchet_deflate`, zlib underneath); this module only turns the
//! settings into its offer.

use std::sync::atomic::{AtomicBool, Ordering};

use ratchet_rs::ExtensionProvider;
use ratchet_rs::deflate::{
    Compression as Level, Deflate, DeflateConfig, DeflateExtProvider, DeflateExtensionError,
    WindowBits,
};
use ratchet_rs::ratchet_ext::{HeaderMap, HeaderValue};

/// The `compression` setting.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Default,
    serde::Deserialize,
    serde::Serialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// Offer permessage-deflate; use it when the backend accepts.
    #[default]
    Deflate,
    /// Offer nothing: every message goes out as it is.
    Off,
}

/// How hard and with how large a window the agent compresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeflateSettings {
    /// zlib's level, 1 (fastest) to 9 (smallest).
    pub level: u32,
    /// The LZ77 window the agent compresses with, 2^9 to 2^15 bytes; the
    /// backend may ask for a smaller one in its answer.
    pub window_bits: u8,
}

impl Default for DeflateSettings {
    fn default() -> Self {
        // Levels 1 to 3 are zlib's fast strategy and cost the same CPU on
        // the bench input; 3 finds longer matches (Zipf input: 58.8 bytes
        // an event against 60.0 at level 1). Level 4 and up switch to lazy
        // matching: 52 bytes at 1.5 times the CPU (docs/protocol.md).
        DeflateSettings {
            level: 3,
            window_bits: 15,
        }
    }
}

/// Allowed values, for the settings' error messages.
pub const LEVELS: std::ops::RangeInclusive<u32> = 1..=9;
pub const WINDOW_BITS: std::ops::RangeInclusive<u8> = 9..=15;

impl DeflateSettings {
    /// The extension offered in the handshake.
    pub fn offer(self) -> DeflateExtProvider {
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
            compression_level: Level::new(self.level),
        })
    }
}

/// What one handshake offers, and whether the backend took it.
#[derive(Debug)]
pub struct Offer {
    deflate: Option<DeflateExtProvider>,
    agreed: AtomicBool,
}

impl Offer {
    pub fn new(settings: Option<DeflateSettings>) -> Self {
        Offer {
            deflate: settings.map(DeflateSettings::offer),
            agreed: AtomicBool::new(false),
        }
    }

    /// Whether the backend's answer agreed on permessage-deflate.
    pub fn agreed(&self) -> bool {
        self.agreed.load(Ordering::Relaxed)
    }
}

impl ExtensionProvider for &Offer {
    type Extension = Deflate;
    type Error = DeflateExtensionError;

    fn apply_headers(&self, headers: &mut HeaderMap) {
        self.deflate.apply_headers(headers);
    }

    fn negotiate_client(&self, headers: &HeaderMap) -> Result<Option<Deflate>, Self::Error> {
        let answer = self.deflate.negotiate_client(headers)?;
        self.agreed.store(answer.is_some(), Ordering::Relaxed);
        Ok(answer)
    }

    fn negotiate_server(
        &self,
        headers: &HeaderMap,
    ) -> Result<Option<(Deflate, HeaderValue)>, Self::Error> {
        self.deflate.negotiate_server(headers)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_offer_asks_for_context_takeover_and_names_a_smaller_window() {
        let mut headers = HeaderMap::new();
        DeflateSettings::default()
            .offer()
            .apply_headers(&mut headers);
        let offer = headers["sec-websocket-extensions"].to_str().unwrap_or("");
        assert!(offer.starts_with("permessage-deflate"), "{offer}");
        assert!(!offer.contains("no_context_takeover"), "{offer}");

        let mut headers = HeaderMap::new();
        DeflateSettings {
            level: 9,
            window_bits: 10,
        }
        .offer()
        .apply_headers(&mut headers);
        let offer = headers["sec-websocket-extensions"].to_str().unwrap_or("");
        assert!(offer.contains("client_max_window_bits=10"), "{offer}");
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
}
