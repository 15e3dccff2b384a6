//! Build the backend's event from a parsed line.
//!
//! [`EventBuilder`] turns [`Fields`] into the JSON object described in
//! the backend contract (`CONTRACT.md` in the shared folder) and writes it
//! straight into an output buffer (no intermediate `serde_json::Value`): the constant part (`api_key`,
//! `client_id`, `token`) is encoded once, IPs go through the
//! [`IpPseudonymiser`], timestamps through a per-second cache. Fields the
//! middleware cannot know (`status`, `duration_ms`, `bytes_sent`) follow, and
//! every event ends with a stable `event_id` derived from where the line
//! lies in which file.

pub mod endpoint;
pub mod real_ip;
pub mod sanitize;

use std::borrow::Cow;
use std::sync::Arc;

use serde_json::Value;

use crate::parse::pattern::{MetricsEncoding, PathForm};
use crate::parse::timestamp::TimestampConverter;
use crate::parse::{Fields, Pattern, Role};
use crate::pseudonymise::IpPseudonymiser;
use crate::secret::Secret;
use endpoint::{Target, decode_path, decode_path_as_asgi, query_params};

/// Who the agent is to the backend; goes into every event.
#[derive(Clone, Default)]
pub struct Identity {
    pub token: String,
    pub client_id: String,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("token", &"[redacted]")
            .field("client_id", &self.client_id)
            .finish()
    }
}

/// What the event builder needs beyond the pattern.
#[derive(Debug, Clone, Default)]
pub struct EventOptions {
    pub identity: Identity,
    /// HMAC key for `remote_addr`; plain IPs when `None`.
    pub secret_key: Option<Secret>,
    /// Send `query_params` (sanitised) instead of null.
    pub query_params: bool,
    /// Overrides the pattern's `default_scheme` when set.
    pub default_https: Option<bool>,
    /// With `client_ip_from = "x_forwarded_for"`: the trusted proxies.
    pub real_ip: Option<std::sync::Arc<real_ip::RealIp>>,
}

/// Where a line is: which file content (the tailer's stream id, the same
/// in every copy of a file) and at which byte it starts. The event's
/// `event_id` is both as 16 hex digits each ([`push_hex`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LinePosition {
    pub stream: u64,
    pub offset: u64,
    /// When the source says the line was written (microseconds since the
    /// epoch): the event's time when its format logs none.
    pub time: Option<i64>,
}

/// Why a line's event could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BuildError {
    #[error("no request line (method and path) in the line")]
    NoRequest,
    #[error("request line {0:?} is not `METHOD TARGET PROTOCOL`")]
    BadRequestLine(String),
    #[error("{0}")]
    BadTimestamp(String),
    /// The server's answer to something that was no request (an empty or
    /// `-` request, or bytes that are no request line, with a 4xx status):
    /// what every public server logs for scanners and idle connections.
    #[error("not a request ({0}): the server's answer to a connection that sent none")]
    NotARequest(Box<BuildError>),
    /// The field the pattern takes for the client holds what no server
    /// writes there (a space, a comma: a line of another format, such as a
    /// host-prefixed `vhost_combined` line, or a forwarded-for list).
    #[error("the client field {0:?} is not an address or a host name")]
    NotAnAddress(String),
}

/// A line's event was built, but part of it was left out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildWarning(pub String);

/// Builds events for lines of one pattern.
#[derive(Debug)]
pub struct EventBuilder {
    pattern: Arc<Pattern>,
    /// `{"api_key":…,"client_id":…,"token":…,` encoded once.
    prefix: Vec<u8>,
    /// Shared by every builder of a pipeline (one per path and pattern):
    /// one cache of hashed addresses, bounded, however many logs are
    /// followed.
    ips: SharedPseudonymiser,
    timestamps: Option<TimestampConverter>,
    send_query: bool,
    https: bool,
    real_ip: Option<Arc<real_ip::RealIp>>,
}

/// An [`IpPseudonymiser`] shared by the builders of one thread.
pub(crate) type SharedPseudonymiser = std::rc::Rc<std::cell::RefCell<IpPseudonymiser>>;

/// A pseudonymiser for `options`' key, to share (see [`EventBuilder::sharing`]).
pub(crate) fn shared_pseudonymiser(options: &EventOptions) -> SharedPseudonymiser {
    std::rc::Rc::new(std::cell::RefCell::new(IpPseudonymiser::new(
        options.secret_key.as_ref().map(Secret::expose),
    )))
}

impl EventBuilder {
    pub fn new(pattern: Arc<Pattern>, options: &EventOptions) -> Self {
        Self::sharing(pattern, options, shared_pseudonymiser(options))
    }

    /// A builder hashing addresses with `ips` (made for `options`' key).
    pub(crate) fn sharing(
        pattern: Arc<Pattern>,
        options: &EventOptions,
        ips: SharedPseudonymiser,
    ) -> Self {
        let mut prefix = Vec::with_capacity(128);
        prefix.extend_from_slice(b"{\"api_key\":");
        push_json_str(&mut prefix, &options.identity.token);
        prefix.extend_from_slice(b",\"client_id\":");
        push_json_str(&mut prefix, &options.identity.client_id);
        prefix.extend_from_slice(b",\"token\":");
        push_json_str(&mut prefix, &options.identity.token);
        prefix.push(b',');
        EventBuilder {
            timestamps: pattern
                .timestamp_format
                .clone()
                .map(TimestampConverter::new),
            https: options.default_https.unwrap_or(pattern.default_https),
            pattern,
            prefix,
            ips,
            send_query: options.query_params,
            real_ip: options.real_ip.clone(),
        }
    }

    /// The pattern this builder serves.
    pub fn pattern(&self) -> &Arc<Pattern> {
        &self.pattern
    }

    /// Appends the event for `fields` to `out` as one JSON object (no
    /// newline). On error nothing is appended.
    ///
    /// One function on purpose: it is the hot path, and it reads top to
    /// bottom as the event's fields in the contract's order.
    pub fn build(
        &mut self,
        fields: &Fields<'_>,
        position: LinePosition,
        out: &mut Vec<u8>,
    ) -> Result<Option<BuildWarning>, BuildError> {
        // Everything that can fail is worked out before anything is written.
        if let Some(client) = fields.get(Role::ClientIp)
            && !is_client_address(client)
        {
            return Err(BuildError::NotAnAddress(
                String::from_utf8_lossy(client).into_owned(),
            ));
        }
        let (method, target) = request_of(fields).map_err(|e| {
            let status = fields.get(Role::Status).and_then(parse_ascii::<u16>);
            match status {
                Some(400..=499) => BuildError::NotARequest(Box::new(e)),
                _ => e,
            }
        })?;
        let target = if self.pattern.path_form == PathForm::Decoded {
            Target {
                path: target,
                query: None,
            }
        } else {
            Target::split(target)
        };
        // A log that keeps the query apart (nginx's `$uri` and `$args`) has
        // a path without `?` and the query in its own field.
        // Apache's `%q` writes the `?` too.
        let query = target.query.or_else(|| {
            fields
                .get(Role::Query)
                .map(|q| q.strip_prefix(b"?").unwrap_or(q))
        });
        let now;
        let timestamp: &str = match (&mut self.timestamps, fields.text(Role::Timestamp)) {
            (Some(conv), Some(text)) => conv.convert(&text).map_err(BuildError::BadTimestamp)?,
            // A pattern without a timestamp gets the time its source gives
            // (a journal entry's), else the time it was read, as the
            // middleware stamps the time it handled the request.
            _ => {
                let at = position
                    .time
                    .and_then(chrono::DateTime::from_timestamp_micros)
                    .unwrap_or_else(chrono::Utc::now);
                now = crate::parse::timestamp::isoformat(&at);
                &now
            }
        };
        let (custom_data, warning) = metrics(self.pattern.metrics_encoding, fields);
        let https = match fields.get(Role::Scheme) {
            Some(s) => s.eq_ignore_ascii_case(b"https"),
            None => self.https,
        };

        out.extend_from_slice(&self.prefix);
        out.extend_from_slice(b"\"remote_addr\":");
        let peer = fields
            .text(Role::ClientIp)
            .map(|c| without_port(c, self.pattern.client_has_port));
        let client = match (&self.real_ip, &peer, fields.text(Role::ForwardedFor)) {
            (Some(real), Some(peer), Some(forwarded)) => {
                Some(Cow::Owned(real.client(peer, &forwarded).into_owned()))
            }
            _ => peer,
        };
        match client {
            Some(ip) => push_json_str(out, self.ips.borrow_mut().pseudonymise(&ip)),
            None => out.extend_from_slice(b"null"),
        }
        out.extend_from_slice(b",\"endpoint\":");
        match self.pattern.path_form {
            PathForm::Raw => push_json_str(out, &decode_path(target.path)),
            PathForm::Asgi => push_json_str(out, &decode_path_as_asgi(target.path)),
            PathForm::Decoded => push_json_str(out, &String::from_utf8_lossy(target.path)),
        }
        out.extend_from_slice(if https {
            b",\"scheme\":true,\"method\":"
        } else {
            b",\"scheme\":false,\"method\":"
        });
        push_json_str(out, &method);
        out.extend_from_slice(b",\"timestamp\":");
        push_json_str(out, timestamp);
        out.extend_from_slice(b",\"custom_data\":");
        match &custom_data {
            Metrics::Verbatim(json) => out.extend_from_slice(json),
            Metrics::Sanitised(v) => push_json_value(out, v),
            Metrics::Empty => out.extend_from_slice(b"{}"),
        }
        out.extend_from_slice(b",\"headers\":null,\"query_params\":");
        match query.filter(|_| self.send_query).and_then(query_params) {
            Some(v) => push_json_value(out, &v),
            None => out.extend_from_slice(b"null"),
        }
        out.extend_from_slice(b",\"body\":null,\"user_agent\":");
        match fields.text(Role::UserAgent) {
            Some(ua) => push_json_str(out, &ua),
            None => out.extend_from_slice(b"null"),
        }
        out.extend_from_slice(b",\"user_id\":null");
        if let Some(status) = fields.get(Role::Status).and_then(parse_ascii::<u16>) {
            out.extend_from_slice(b",\"status\":");
            out.extend_from_slice(itoa::Buffer::new().format(status).as_bytes());
        }
        if let Some(t) = fields.get(Role::ResponseTime).and_then(parse_ascii::<f64>) {
            let ms = t * self.pattern.response_time_unit.to_millis();
            if ms.is_finite() {
                // Rounded to microseconds: the unit conversion must not
                // invent digits (0.123 s is 123 ms, not 123.00000000000001).
                let ms = (ms * 1000.0).round() / 1000.0;
                out.extend_from_slice(b",\"duration_ms\":");
                push_json_value(out, &Value::from(ms));
            }
        }
        if let Some(bytes) = fields.get(Role::BytesSent).and_then(parse_ascii::<u64>) {
            out.extend_from_slice(b",\"bytes_sent\":");
            out.extend_from_slice(itoa::Buffer::new().format(bytes).as_bytes());
        }
        out.extend_from_slice(b",\"event_id\":\"");
        push_hex(out, position.stream);
        push_hex(out, position.offset);
        out.extend_from_slice(b"\"}");
        Ok(warning)
    }
}

/// What goes into `custom_data`.
enum Metrics<'a> {
    Empty,
    /// Valid JSON holding an object that needs no redaction, as written.
    Verbatim(Cow<'a, [u8]>),
    Sanitised(Value),
}

/// Fragments that every sensitive key contains (compared lower-cased).
/// Metrics without any of them need no redaction.
const SENSITIVE_FRAGMENTS: &[&[u8]] = &[
    b"pass",
    b"secret",
    b"token",
    b"key",
    b"auth",
    b"credential",
    b"session",
    b"cookie",
    b"card",
    b"cvv",
    b"ssn",
];

/// The metrics object, sanitised, or why there is none.
fn metrics<'f>(
    encoding: MetricsEncoding,
    fields: &'f Fields<'_>,
) -> (Metrics<'f>, Option<BuildWarning>) {
    let Some(raw) = fields.get(Role::Metrics) else {
        return (Metrics::Empty, None);
    };
    let decoded: Cow<[u8]> = match encoding {
        MetricsEncoding::Json => Cow::Borrowed(raw),
        MetricsEncoding::PercentJson => percent_encoding::percent_decode(raw).into(),
    };
    if needs_no_sanitising(&decoded) {
        return (Metrics::Verbatim(decoded), None);
    }
    let parsed = match serde_json::from_slice::<Value>(&decoded) {
        // Bytes that are not UTF-8 (a header sent in latin-1) become U+FFFD,
        // as in every other text field, rather than costing the metrics.
        Err(_) if std::str::from_utf8(&decoded).is_err() => {
            serde_json::from_str::<Value>(&String::from_utf8_lossy(&decoded))
        }
        parsed => parsed,
    };
    match parsed {
        Ok(mut v @ Value::Object(_)) => {
            sanitize::sanitize(&mut v);
            (Metrics::Sanitised(v), None)
        }
        Ok(_) => (
            Metrics::Empty,
            Some(BuildWarning(
                "metrics field is JSON but not an object; custom_data sent empty".into(),
            )),
        ),
        Err(e) => (
            Metrics::Empty,
            Some(BuildWarning(format!(
                "metrics field is not valid JSON ({e}); custom_data sent empty"
            ))),
        ),
    }
}

/// True when `json` is a valid JSON object that sanitising would not change
/// (no key fragment that could be sensitive, too few containers to be cut
/// for depth): it can go out as written, without building a tree.
fn needs_no_sanitising(json: &[u8]) -> bool {
    let Some(start) = json.iter().position(|b| !b.is_ascii_whitespace()) else {
        return false;
    };
    if json[start] != b'{' || memchr::memchr2_iter(b'{', b'[', json).count() > sanitize::MAX_DEPTH {
        return false;
    }
    let lower = json.to_ascii_lowercase();
    if SENSITIVE_FRAGMENTS
        .iter()
        .any(|f| memchr::memmem::find(&lower, f).is_some())
    {
        return false;
    }
    // IgnoredAny skips strings without checking their UTF-8: `from_str`
    // makes sure what goes out as written is text.
    std::str::from_utf8(json)
        .is_ok_and(|text| serde_json::from_str::<serde::de::IgnoredAny>(text).is_ok())
}

/// Appends `n` as 16 lower-case hex digits.
fn push_hex(out: &mut Vec<u8>, n: u64) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for shift in (0..16).rev() {
        out.push(DIGITS[((n >> (shift * 4)) & 0xf) as usize]);
    }
}

/// Whether a client field holds what servers write there: an IPv4 or IPv6
/// address (with a zone, in brackets, with a port), a host name, `unix:`,
/// or `-`. Never a space or a comma.
fn is_client_address(field: &[u8]) -> bool {
    !field.is_empty()
        && field.iter().all(|&b| {
            b.is_ascii_alphanumeric() || matches!(b, b'.' | b':' | b'-' | b'_' | b'[' | b']' | b'%')
        })
}

/// The client address of a client field: `[::1]:5000` and
/// `127.0.0.1:5000` lose their port always (no address is written that way
/// with a colon of its own); `::1:5000` only when the format writes a port
/// (`has_port`): without one it is an IPv6 address.
fn without_port(client: Cow<'_, str>, has_port: bool) -> Cow<'_, str> {
    let cut = |c: &str| -> Option<(usize, usize)> {
        if let Some(rest) = c.strip_prefix('[') {
            let close = rest.find(']')?;
            let port = rest[close + 1..].strip_prefix(':')?;
            return port
                .bytes()
                .all(|b| b.is_ascii_digit())
                .then_some((1, close + 1));
        }
        let (address, port) = c.rsplit_once(':')?;
        let digits = !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit());
        let ipv4 = !address.contains(':');
        (digits && !address.is_empty() && (ipv4 || has_port)).then_some((0, address.len()))
    };
    match cut(&client) {
        Some((from, to)) => match client {
            Cow::Borrowed(b) => Cow::Borrowed(&b[from..to]),
            Cow::Owned(o) => Cow::Owned(o[from..to].to_owned()),
        },
        None => client,
    }
}

/// Method (upper case) and request target of a line.
fn request_of<'f>(fields: &'f Fields<'_>) -> Result<(Cow<'f, str>, &'f [u8]), BuildError> {
    if let (Some(method), Some(path)) = (fields.get(Role::Method), fields.get(Role::Path)) {
        if !is_token(method) {
            return Err(BuildError::BadRequestLine(
                String::from_utf8_lossy(method).into_owned(),
            ));
        }
        return Ok((upper(method), path));
    }
    let line = fields.get(Role::Request).ok_or(BuildError::NoRequest)?;
    let bad = || BuildError::BadRequestLine(String::from_utf8_lossy(line).into_owned());
    let space = memchr::memchr(b' ', line).ok_or_else(bad)?;
    let method = &line[..space];
    let rest = &line[space + 1..];
    // `GET /x HTTP/1.1`; HTTP/0.9's (and daphne's) `GET /x` with no
    // protocol; hypercorn's `GET /x 1.1`, whose decoded path may hold
    // spaces: the protocol is the last word.
    let target = match memchr::memrchr(b' ', rest) {
        Some(i) if is_protocol(&rest[i + 1..]) => &rest[..i],
        _ => rest,
    };
    let target_ok = target.first() == Some(&b'/')
        || target == b"*"
        || target.starts_with(b"http://")
        || target.starts_with(b"https://");
    if !is_token(method) || !target_ok {
        return Err(bad());
    }
    Ok((upper(method), target))
}

/// `HTTP/1.1`, or a bare version as hypercorn writes it (`1.1`, `2`).
fn is_protocol(word: &[u8]) -> bool {
    let version = word.strip_prefix(b"HTTP/").unwrap_or(word);
    matches!(version, [d] | [d, b'.', _] if d.is_ascii_digit())
        && version.iter().all(|b| b.is_ascii_digit() || *b == b'.')
}

/// An HTTP token (RFC 9110), as methods are.
fn is_token(s: &[u8]) -> bool {
    !s.is_empty()
        && s.iter()
            .all(|&b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

fn upper(method: &[u8]) -> Cow<'_, str> {
    // is_token checked it is ASCII.
    let s = std::str::from_utf8(method).unwrap_or_default();
    if s.bytes().any(|b| b.is_ascii_lowercase()) {
        Cow::Owned(s.to_ascii_uppercase())
    } else {
        Cow::Borrowed(s)
    }
}

fn parse_ascii<T: std::str::FromStr>(raw: &[u8]) -> Option<T> {
    std::str::from_utf8(raw).ok()?.trim().parse().ok()
}

/// Appends `s` as a JSON string.
pub fn push_json_str(out: &mut Vec<u8>, s: &str) {
    // Writing to a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, s);
}

fn push_json_value(out: &mut Vec<u8>, v: &Value) {
    let _ = serde_json::to_writer(&mut *out, v);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_ports_are_cut_only_where_no_address_is_lost() {
        let cut = |c: &str, has_port| without_port(Cow::Borrowed(c), has_port).into_owned();
        assert_eq!(cut("127.0.0.1:36762", false), "127.0.0.1");
        assert_eq!(cut("[::1]:5000", false), "::1");
        assert_eq!(cut("[fe80::1%eth0]:80", false), "fe80::1%eth0");
        // Without brackets, the last group of an IPv6 address looks like a
        // port: only a format that writes one loses it.
        assert_eq!(cut("::1:5000", false), "::1:5000");
        assert_eq!(cut("::1:5000", true), "::1");
        assert_eq!(cut("2001:db8::7:443", true), "2001:db8::7");
        for kept in ["::1", "10.0.0.1", "unix:", "host.example", "-"] {
            assert_eq!(cut(kept, false), kept);
        }
        assert_eq!(cut("unix:", true), "unix:");
    }
}
