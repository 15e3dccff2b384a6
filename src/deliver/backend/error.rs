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
    #[error("the backend closed the connection{0}")]
    Closed(String),
    #[error("acknowledgement for batch {got} while batch {expected} is the oldest in flight")]
    AckOutOfOrder { got: u64, expected: u64 },
    #[error("the backend refused batch {seq}: {message}")]
    BatchRefused { seq: String, message: String },
    #[error("no acknowledgement for message {seq} within {ms} ms")]
    AckTimeout { seq: u64, ms: u128 },
    #[error("no sign of life from the backend for {0} s")]
    Silent(u64),
}

impl SendError {
    /// A failed TLS handshake: the certificate, or anything else.
    pub fn from_tls(e: std::io::Error) -> Self {
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
        assert_eq!(
            SendError::from(io).to_string(),
            "connection error: reset by peer"
        );
    }
}
