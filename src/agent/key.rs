//! The secret key decision, made before any event is built: no client IP
//! is pseudonymised, or sent, before it is known which key hashes it.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};

use crate::deliver::backend::secret_key;
use crate::plan::KeySource;
use crate::secret::Secret;
use crate::wake::{Wake, Wakes};

/// What `remote_addr` will be.
pub(crate) enum KeyDecision {
    Key(Secret),
    /// Plain (normalised) IPs.
    Plain,
    /// A signal stopped the agent while it waited for the key.
    Stopped,
}

/// The key for `remote_addr`: configured, fetched from the backend
/// (retrying with backoff until it comes, or a signal stops the agent), or
/// none.
pub(crate) fn decide(source: &KeySource, wakes: &Wakes) -> KeyDecision {
    let (url, token, trust, wait) = match source {
        KeySource::Configured(k) => return KeyDecision::Key(k.clone()),
        KeySource::None => return KeyDecision::Plain,
        KeySource::Fetch {
            backend_url,
            token,
            trust,
            wait,
        } => (backend_url, token, trust, *wait),
    };
    if url.starts_with("http://") {
        tracing::warn!(
            "backend_url uses unencrypted http://: the secret key travels in clear text; use https://"
        );
    }
    let mut delays = ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(500))
        .with_max_delay(Duration::from_secs(60))
        .with_jitter()
        .without_max_times()
        .build();
    loop {
        match secret_key::fetch(url, token.as_ref(), trust) {
            Ok(key) => {
                tracing::info!("secret key fetched from the backend");
                return KeyDecision::Key(key);
            }
            Err(e) if !wait => {
                tracing::warn!(
                    "cannot fetch the secret key: {e}; sending client IPs in plain text (wait_for_secret_key = false)"
                );
                return KeyDecision::Plain;
            }
            Err(e) => {
                let delay = delays.next().unwrap_or(Duration::from_secs(60));
                tracing::warn!(
                    "cannot fetch the secret key: {e}; retrying in {} ms (no event is sent before the key is known)",
                    delay.as_millis()
                );
                if wakes.wait(delay).contains(Wake::Shutdown) {
                    return KeyDecision::Stopped;
                }
            }
        }
    }
}
