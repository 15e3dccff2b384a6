//! Redact sensitive keys in custom metrics and query parameters.
//!
//! A faithful port of `cerberus_core.sanitization.sanitize_dict`: walk nested
//! objects and arrays; any object key whose lower-cased form is sensitive has
//! its value replaced by `"[REDACTED]"`; an object or array nested deeper than
//! [`MAX_DEPTH`] levels is replaced by `"[REDACTED]"` as a whole. Scalars are
//! never redacted for depth, only containers.

use serde_json::Value;

/// The sentinel the backend knows.
pub const REDACTED: &str = "[REDACTED]";

/// Depth beyond which a container is redacted whole (the middleware's 20).
pub(crate) const MAX_DEPTH: usize = 20;

/// Keys (compared lower-cased) whose values never leave the agent.
pub(crate) const SENSITIVE_KEYS: &[&str] = &[
    "password",
    "passwd",
    "secret",
    "token",
    "api_key",
    "apikey",
    "api_secret",
    "access_token",
    "refresh_token",
    "authorization",
    "auth",
    "credential",
    "credentials",
    "private_key",
    "ssh_key",
    "session_id",
    "session_token",
    "cookie",
    "credit_card",
    "card_number",
    "cvv",
    "ssn",
];

/// True when `key` names a value that must be redacted.
pub(crate) fn is_sensitive_key(key: &str) -> bool {
    // Python's str.lower() on the key, then set membership. Keys are short,
    // so a linear scan over 22 entries beats building a HashSet.
    if key.is_ascii() {
        SENSITIVE_KEYS.iter().any(|k| k.eq_ignore_ascii_case(key))
    } else {
        let lower = key.to_lowercase();
        SENSITIVE_KEYS.contains(&lower.as_str())
    }
}

/// Sanitises `value` in place, as `sanitize_dict(value)` would return it.
pub fn sanitize(value: &mut Value) {
    sanitize_at(value, 0);
}

fn sanitize_at(value: &mut Value, depth: usize) {
    if depth > MAX_DEPTH {
        *value = Value::String(REDACTED.to_owned());
        return;
    }
    match value {
        Value::Object(map) => {
            for (key, child) in map.iter_mut() {
                if is_sensitive_key(key) {
                    *child = Value::String(REDACTED.to_owned());
                } else if child.is_object() || child.is_array() {
                    sanitize_at(child, depth + 1);
                }
            }
        }
        Value::Array(items) => {
            for child in items.iter_mut() {
                if child.is_object() || child.is_array() {
                    sanitize_at(child, depth + 1);
                }
            }
        }
        _ => {}
    }
}
