//! Why a connection to the backend failed or ended, in words an operator
//! can act on. Every variant is retried (reconnect with backoff); none holds
//! the token or the secret key.

use std::error::Error as _;

use ratchet_rs::HttpError;

/// A connection attempt failed, or a connection ended before its work was
/// done.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("bad ws_url: {0}")]
    BadUrl(String),
    #[error("the token holds characters not allowed in an HTTP header")]
    BadToken,
    #[error("no answer within {0} ms")]
    ConnectTimeout(u128),
    #[error("{0}")]
    Io(std::io::Error),
    #[error("the backend refused the WebSocket handshake with HTTP {0}")]
    HandshakeRefused(u16),
    #[error("{0} (is the backend's certificate trusted? see tls_ca_file)")]
    Certificate(std::io::Error),
    #[error("{0}")]
    WebSocket(String),
    #[error("the backend closed the connection{}", close_words(*.code, reason))]
    Closed {
        /// The close frame's code, if one came.
        code: Option<u16>,
        /// Its reason, as the backend wrote it.
        reason: String,
    },
    #[error("acknowledgement for batch {got} while batch {expected} is the oldest in flight")]
    AckOutOfOrder { got: u64, expected: u64 },
    #[error("the backend refused batch {seq}: {message}")]
    BatchRefused { seq: String, message: String },
    #[error("no acknowledgement for message {seq} within {ms} ms")]
    AckTimeout { seq: u64, ms: u128 },
    #[error("no sign of life from the backend for {0} s")]
    Silent(u64),
}

/// ` (code 1009: message too big "reason")`, the reason escaped: it is
/// the backend's text and goes into the agent's log.
fn close_words(code: Option<u16>, reason: &str) -> String {
    let Some(code) = code else {
        return String::new();
    };
    let meaning = match code {
        1000 => ": normal closure",
        1001 => ": going away",
        1002 => ": protocol error",
        1003 => ": unsupported data",
        1007 => ": invalid payload",
        1008 => ": policy violation",
        1009 => ": message too big",
        1011 => ": internal error",
        1012 => ": service restart",
        1013 => ": try again later",
        _ => "",
    };
    if reason.is_empty() {
        format!(" (code {code}{meaning})")
    } else {
        format!(" (code {code}{meaning} \"{}\")", reason.escape_debug())
    }
}

/// The close code a backend sends for a message larger than it takes.
pub(crate) const CLOSE_MESSAGE_TOO_BIG: u16 = 1009;

impl SendError {
    /// Whether the connection ended the way it ends when the backend will
    /// not take the oldest message in flight: it closed, reset or refused
    /// it, or never acknowledged it. (Not: the backend went silent
    /// altogether, or could not be reached.)
    pub(crate) fn blames_the_message(&self) -> bool {
        matches!(
            self,
            SendError::Io(_)
                | SendError::WebSocket(_)
                | SendError::Closed { .. }
                | SendError::BatchRefused { .. }
                | SendError::AckTimeout { .. }
        )
    }

    /// The backend said the message was too big (close code 1009).
    pub(crate) fn too_big(&self) -> bool {
        matches!(
            self,
            SendError::Closed {
                code: Some(CLOSE_MESSAGE_TOO_BIG),
                ..
            }
        )
    }

    /// The connection was cut under the message (reset, broken pipe, end
    /// of stream) or closed for its size: what servers whose message limit
    /// is below the message do (some close with 1009, many just reset).
    pub(crate) fn suggests_size(&self) -> bool {
        self.too_big()
            || matches!(self, SendError::Closed { code: None, .. })
            || matches!(self, SendError::Io(e) if matches!(
                e.kind(),
                std::io::ErrorKind::ConnectionReset
                    | std::io::ErrorKind::BrokenPipe
                    | std::io::ErrorKind::UnexpectedEof
                    | std::io::ErrorKind::ConnectionAborted
            ))
    }

    /// A failed TLS handshake: the certificate, or anything else.
    pub(crate) fn from_tls(e: std::io::Error) -> Self {
        if is_certificate_problem(&e) {
            SendError::Certificate(e)
        } else {
            SendError::Io(e)
        }
    }
}

impl From<ratchet_rs::Error> for SendError {
    fn from(e: ratchet_rs::Error) -> Self {
        if let Some(HttpError::Status(code)) = e.downcast_ref::<HttpError>() {
            return SendError::HandshakeRefused(*code);
        }
        // A reset or a broken pipe stays an I/O error of its kind.
        if let Some(io) = e.source().and_then(|s| s.downcast_ref::<std::io::Error>()) {
            return SendError::Io(std::io::Error::new(io.kind(), io.to_string()));
        }
        // ratchet's own Display is its Debug; say it in words instead.
        let what = if e.is_io() {
            "connection"
        } else if e.is_http() {
            "handshake"
        } else if e.is_extension() {
            "compression"
        } else if e.is_protocol() || e.is_encoding() {
            "WebSocket protocol"
        } else {
            "closing"
        };
        match e.source() {
            Some(why) => SendError::WebSocket(format!("{what} error: {why}")),
            None => SendError::WebSocket(format!("{what} error")),
        }
    }
}

/// Whether the TLS handshake failed on the backend's certificate: rustls
/// reports it as its own error inside the I/O error of the TLS stream.
fn is_certificate_problem(e: &std::io::Error) -> bool {
    let rustls_error = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>());
    matches!(
        rustls_error,
        Some(
            rustls::Error::InvalidCertificate(_)
                | rustls::Error::NoCertificatesPresented
                | rustls::Error::InvalidCertRevocationList(_)
        )
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certificate_errors_point_at_tls_ca_file() {
        let io = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer),
        );
        let e = SendError::from_tls(io);
        assert!(matches!(e, SendError::Certificate(_)));
        assert!(e.to_string().contains("tls_ca_file"), "{e}");

        let plain = SendError::from_tls(std::io::Error::other("reset"));
        assert!(!plain.to_string().contains("tls_ca_file"));
    }

    #[test]
    fn a_refused_handshake_names_the_status() {
        let e = ratchet_rs::Error::with_cause(ratchet_rs::ErrorKind::Http, HttpError::Status(401));
        assert_eq!(
            SendError::from(e).to_string(),
            "the backend refused the WebSocket handshake with HTTP 401"
        );
        let io = ratchet_rs::Error::with_cause(
            ratchet_rs::ErrorKind::IO,
            std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset by peer"),
        );
        let e = SendError::from(io);
        assert_eq!(e.to_string(), "reset by peer");
        assert!(e.suggests_size() && e.blames_the_message());
    }

    #[test]
    fn close_codes_are_named_and_reasons_escaped() {
        let e = SendError::Closed {
            code: Some(1009),
            reason: "too big\nFAKE LINE".into(),
        };
        assert_eq!(
            e.to_string(),
            "the backend closed the connection (code 1009: message too big \"too big\\nFAKE LINE\")"
        );
        assert!(e.too_big() && e.blames_the_message());
        let silent = SendError::Silent(60);
        assert!(!silent.blames_the_message() && !silent.suggests_size());
    }
}
