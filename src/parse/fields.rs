//! The fields of one log line that the event is built from.
//!
//! A pattern maps its own field names (nginx's `remote_addr`, gunicorn's `h`)
//! to the [`Role`]s the event builder knows. Values are byte slices of the
//! line where possible, with the server's escaping already undone.

use std::borrow::Cow;

/// What a field means to the event builder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    /// The client address (`remote_addr`).
    ClientIp,
    /// A whole request line, `METHOD TARGET PROTOCOL`.
    Request,
    /// The method alone, when the log has it apart.
    Method,
    /// The request target alone (path and query), when the log has it apart.
    Path,
    /// The query string alone, when the log keeps it apart from the path.
    Query,
    /// `http` or `https`.
    Scheme,
    /// When the request was logged.
    Timestamp,
    /// The response status code.
    Status,
    /// How long the response took, in the pattern's unit.
    ResponseTime,
    /// Bytes of response body sent.
    BytesSent,
    /// The User-Agent header.
    UserAgent,
    /// The application's custom metrics (JSON).
    Metrics,
    /// The X-Forwarded-For request header: the client behind trusted
    /// proxies (used with `client_ip_from = "x_forwarded_for"`).
    ForwardedFor,
}

impl Role {
    /// Every role, in the order of [`Fields`] slots.
    pub const ALL: [Role; 13] = [
        Role::ClientIp,
        Role::Request,
        Role::Method,
        Role::Path,
        Role::Query,
        Role::Scheme,
        Role::Timestamp,
        Role::Status,
        Role::ResponseTime,
        Role::BytesSent,
        Role::UserAgent,
        Role::Metrics,
        Role::ForwardedFor,
    ];

    /// The key that maps this role in a pattern file's `[fields]` table.
    pub fn key(self) -> &'static str {
        match self {
            Role::ClientIp => "client_ip",
            Role::Request => "request",
            Role::Method => "method",
            Role::Path => "path",
            Role::Query => "query",
            Role::Scheme => "scheme",
            Role::Timestamp => "timestamp",
            Role::Status => "status",
            Role::ResponseTime => "response_time",
            Role::BytesSent => "bytes_sent",
            Role::UserAgent => "user_agent",
            Role::Metrics => "metrics",
            Role::ForwardedFor => "forwarded_for",
        }
    }

    fn slot(self) -> usize {
        self as usize
    }
}

/// One line's values by role. A value of `-` or empty counts as absent, as
/// servers write `-` (or nothing, in JSON logs) for an unset variable.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Fields<'a> {
    values: [Option<Cow<'a, [u8]>>; Role::ALL.len()],
}

impl<'a> Fields<'a> {
    /// Sets a role's value, unless it is one of the "absent" spellings.
    pub fn set(&mut self, role: Role, value: Cow<'a, [u8]>) {
        if value.is_empty() || &*value == b"-" {
            return;
        }
        self.values[role.slot()] = Some(value);
    }

    /// The same fields, each value passed through `f` and owned.
    pub(crate) fn map_values(self, mut f: impl FnMut(Cow<'a, [u8]>) -> Vec<u8>) -> Fields<'static> {
        Fields {
            values: self.values.map(|v| v.map(|c| Cow::Owned(f(c)))),
        }
    }

    /// The value of `role`, if the line had one.
    pub fn get(&self, role: Role) -> Option<&[u8]> {
        self.values[role.slot()].as_deref()
    }

    /// The value of `role` as text, invalid UTF-8 replaced by U+FFFD.
    pub fn text(&self, role: Role) -> Option<Cow<'_, str>> {
        self.get(role).map(String::from_utf8_lossy)
    }
}
