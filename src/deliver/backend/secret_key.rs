//! The secret key from the backend, as the middleware fetches it.
//!
//! With `backend_url` and no `secret_key`: `GET {backend_url}/api/secret-key`
//! with `X-API-Key: <token>`, 5 s timeout; the key is the `secret_key` field
//! of the JSON object returned. Anything else is a failure. No IP is
//! pseudonymised (or sent) before the decision is made.
//!
//! The token goes to `backend_url`'s origin and nowhere else: redirects are
//! not followed (a `302` to another host would hand it the token and let it
//! choose the key), and the server is trusted as the WebSocket's is (the
//! system's roots plus `tls_ca_file`; `tls_verify = false` for tests only).

use std::path::PathBuf;
use std::time::Duration;

use ureq::tls::{Certificate, RootCerts, TlsConfig, TlsProvider};

use super::sender::redact_url;
use crate::secret::Secret;

/// Whom the key fetch trusts: as `tls_ca_file` and `tls_verify` say.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Trust {
    pub ca_file: Option<PathBuf>,
    pub verify: bool,
}

/// How long one fetch may take (the middleware's 5 s).
pub(crate) const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

/// Fetches the key once. The error never holds the token or the key.
pub fn fetch(backend_url: &str, token: Option<&Secret>, trust: &Trust) -> Result<Secret, String> {
    let url = format!("{}/api/secret-key", backend_url.trim_end_matches('/'));
    let shown = redact_url(&url);
    let (system, extra) = super::tls::trust_anchors(trust.ca_file.as_deref())
        .map_err(|e| format!("GET {shown}: {e}"))?;
    let roots: Vec<Certificate<'static>> = system
        .iter()
        .chain(&extra)
        .map(|c| Certificate::from_der(c.as_ref()).to_owned())
        .collect();
    let tls = TlsConfig::builder()
        .provider(TlsProvider::Rustls)
        .root_certs(RootCerts::new_with_certs(&roots))
        .disable_verification(!trust.verify)
        .build();
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(FETCH_TIMEOUT))
        .http_status_as_error(false)
        .max_redirects(0)
        .tls_config(tls)
        .build()
        .into();
    let mut request = agent.get(&url).header(
        "User-Agent",
        concat!("cerberus-agent/", env!("CARGO_PKG_VERSION")),
    );
    if let Some(t) = token {
        request = request.header("X-API-Key", t.expose());
    }
    let mut response = request.call().map_err(|e| format!("GET {shown}: {e}"))?;
    let status = response.status();
    if status.is_redirection() {
        return Err(format!(
            "GET {shown}: HTTP {status}: redirects are not followed (the token goes to backend_url's own origin only); set backend_url to where the key is served"
        ));
    }
    if !status.is_success() {
        return Err(format!("GET {shown}: HTTP {status}"));
    }
    let body = response
        .body_mut()
        .with_config()
        .limit(MAX_ANSWER_BYTES)
        .read_to_vec()
        .map_err(|e| format!("GET {shown}: {e}"))?;
    parse_answer(&body).map_err(|e| format!("GET {shown}: {e}"))
}

/// The largest answer read (the key is a few dozen bytes).
pub(crate) const MAX_ANSWER_BYTES: u64 = 64 * 1024;

/// The key in the endpoint's answer: the `secret_key` string of a JSON
/// object. The error never holds the answer (it may be the key).
pub fn parse_answer(body: &[u8]) -> Result<Secret, String> {
    #[derive(serde::Deserialize)]
    struct Answer {
        secret_key: Option<serde_json::Value>,
    }
    let answer: Answer = serde_json::from_slice(body)
        .map_err(|e| format!("the answer is not a JSON object ({})", e.classify_words()))?;
    match answer.secret_key {
        Some(serde_json::Value::String(k)) if !k.is_empty() => Ok(Secret::new(k)),
        _ => Err("the answer has no non-empty `secret_key` string".into()),
    }
}

/// Words for a JSON error, without its position's text.
trait ClassifyWords {
    fn classify_words(&self) -> &'static str;
}

impl ClassifyWords for serde_json::Error {
    fn classify_words(&self) -> &'static str {
        match self.classify() {
            serde_json::error::Category::Io => "could not be read",
            serde_json::error::Category::Syntax => "not JSON",
            serde_json::error::Category::Data => "not the expected shape",
            serde_json::error::Category::Eof => "cut short",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers() {
        assert_eq!(
            parse_answer(br#"{"secret_key":"k1"}"#).map(|k| k.expose().to_owned()),
            Ok("k1".to_owned())
        );
        for bad in [
            &b"<html>"[..],
            b"[]",
            br#"{"secret_key":""}"#,
            br#"{"secret_key":7}"#,
            b"",
        ] {
            assert!(
                parse_answer(bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
