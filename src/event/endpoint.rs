//! The request target of a log line, split into what the event carries.
//!
//! The middleware sends Django's `request.path`: the path percent-decoded,
//! without the query string, where byte sequences that are not valid UTF-8
//! are percent-encoded again (Django's `repercent_broken_unicode`). The query
//! string is parsed as Django's `QueryDict` parses it (`parse_qsl` with blank
//! values kept, `+` as space, invalid UTF-8 replaced).

use std::borrow::Cow;

use percent_encoding::percent_decode;
use serde_json::{Map, Value};

use super::sanitize::{REDACTED, is_sensitive_key};

/// A request target (`/a%20b?x=1`) split at its query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Target<'a> {
    /// The path as logged, still percent-encoded.
    pub path: &'a [u8],
    /// The query string after `?`, if there was a `?`.
    pub query: Option<&'a [u8]>,
}

impl<'a> Target<'a> {
    /// Splits a request target. An absolute-form target
    /// (`http://host/path`, as sent to proxies) is reduced to its path.
    pub fn split(raw: &'a [u8]) -> Target<'a> {
        let raw = strip_scheme_and_authority(raw);
        let raw = match memchr::memchr(b'#', raw) {
            Some(i) => &raw[..i],
            None => raw,
        };
        match memchr::memchr(b'?', raw) {
            Some(i) => Target {
                path: &raw[..i],
                query: Some(&raw[i + 1..]),
            },
            None => Target {
                path: raw,
                query: None,
            },
        }
    }
}

fn strip_scheme_and_authority(raw: &[u8]) -> &[u8] {
    let rest = if let Some(r) = raw.strip_prefix(b"http://") {
        r
    } else if let Some(r) = raw.strip_prefix(b"https://") {
        r
    } else {
        return raw;
    };
    match memchr::memchr(b'/', rest) {
        Some(i) => &rest[i..],
        None => b"/",
    }
}

/// The event's `endpoint` for a path as logged: percent-decoded, with bytes
/// that do not form valid UTF-8 percent-encoded again.
pub fn decode_path(path: &[u8]) -> Cow<'_, str> {
    if !path.contains(&b'%')
        && let Ok(s) = std::str::from_utf8(path)
    {
        return Cow::Borrowed(s);
    }
    let decoded: Cow<[u8]> = percent_decode(path).into();
    Cow::Owned(repercent_broken_unicode(&decoded))
}

/// The endpoint for a path as logged by an ASGI server: percent-decoded
/// and read as UTF-8 with U+FFFD for what is not, as the server hands the
/// path to Django (its `scope["path"]`).
pub(crate) fn decode_path_as_asgi(path: &[u8]) -> Cow<'_, str> {
    if !path.contains(&b'%') {
        return String::from_utf8_lossy(path);
    }
    let decoded: Cow<[u8]> = percent_decode(path).into();
    Cow::Owned(String::from_utf8_lossy(&decoded).into_owned())
}

/// Decodes `bytes` as UTF-8, percent-encoding (upper-case hex) every byte of
/// an invalid sequence, as Django does for `request.path`.
pub(crate) fn repercent_broken_unicode(mut bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    loop {
        match std::str::from_utf8(bytes) {
            Ok(s) => {
                out.push_str(s);
                return out;
            }
            Err(e) => {
                let (valid, rest) = bytes.split_at(e.valid_up_to());
                // Safe: from_utf8 said this prefix is valid.
                out.push_str(std::str::from_utf8(valid).unwrap_or_default());
                let bad = e.error_len().unwrap_or(rest.len());
                for b in &rest[..bad] {
                    out.push_str(&format!("%{b:02X}"));
                }
                bytes = &rest[bad..];
            }
        }
    }
}

/// Decodes one query component as `urllib.parse.unquote_plus` with
/// `errors='replace'` does.
fn decode_query_component(raw: &[u8]) -> String {
    let plus_as_space: Cow<[u8]> = if raw.contains(&b'+') {
        Cow::Owned(
            raw.iter()
                .map(|&b| if b == b'+' { b' ' } else { b })
                .collect(),
        )
    } else {
        Cow::Borrowed(raw)
    };
    let decoded: Cow<[u8]> = percent_decode(&plus_as_space).into();
    String::from_utf8_lossy(&decoded).into_owned()
}

/// The event's `query_params` for a query string, as the middleware builds
/// them from `request.GET`: one entry per distinct name in order of first
/// appearance, a single value as a string, repeated values as a list, and a
/// sensitive name's value(s) as `"[REDACTED]"`. `None` when there are no
/// parameters at all (the middleware sends null then).
pub fn query_params(query: &[u8]) -> Option<Value> {
    let mut params: Map<String, Value> = Map::new();
    for piece in query.split(|&b| b == b'&') {
        if piece.is_empty() {
            continue;
        }
        let (name, value) = match memchr::memchr(b'=', piece) {
            Some(i) => (&piece[..i], &piece[i + 1..]),
            None => (piece, &b""[..]),
        };
        let name = decode_query_component(name);
        let value = Value::String(decode_query_component(value));
        match params.get_mut(&name) {
            None => {
                params.insert(name, value);
            }
            Some(Value::Array(values)) => values.push(value),
            Some(existing) => {
                let first = existing.take();
                *existing = Value::Array(vec![first, value]);
            }
        }
    }
    if params.is_empty() {
        return None;
    }
    for (name, value) in params.iter_mut() {
        if is_sensitive_key(name) {
            *value = Value::String(REDACTED.to_owned());
        }
    }
    Some(Value::Object(params))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn path_is_decoded_and_broken_utf8_is_encoded_again() {
        assert_eq!(decode_path(b"/caf%C3%A9/a%20b"), "/café/a b");
        assert_eq!(decode_path(b"/%FF/x"), "/%FF/x");
        assert_eq!(decode_path(b"/a+b"), "/a+b");
        assert_eq!(decode_path(b"/%e2%82"), "/%E2%82");
    }

    #[test]
    fn targets_split_at_query_and_lose_authority() {
        let t = Target::split(b"http://example.com/p?q=1");
        assert_eq!(t.path, b"/p");
        assert_eq!(t.query, Some(&b"q=1"[..]));
        assert_eq!(Target::split(b"/x#frag").query, None);
    }

    #[test]
    fn query_follows_django_querydict() {
        assert_eq!(
            query_params(b"a=1&b=x+y&a=2&flag&Token=s&e=%E2%82%AC"),
            Some(json!({"a": ["1", "2"], "b": "x y", "flag": "", "Token": "[REDACTED]", "e": "€"}))
        );
        assert_eq!(query_params(b""), None);
        assert_eq!(query_params(b"&&"), None);
    }
}
