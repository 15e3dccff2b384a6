//! One log format: its pattern file and the compiled splitter.
//!
//! A pattern file is TOML. It says how a line splits into named fields (a
//! regular expression with named captures, or JSON) and which of those
//! fields carry what the event needs (see [`Role`]). README.md documents the
//! format with an example.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::path::PathBuf;

use regex::bytes::Regex;
use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;

use super::escape::{Escape, undo_latin1};
use super::fields::{Fields, Role};
use super::server_format::{self, CompiledFormat, Server, Split};
use super::template::{MAX_FIELDS, Mismatch, Template};
use super::timestamp::TimestampFormat;

/// Where a pattern came from, for `cerberus-agent patterns` and messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PatternOrigin {
    /// Compiled into the binary from the repository's `patterns/`.
    Bundled,
    /// A user's pattern file.
    File(PathBuf),
    /// A server format string given as `--format` (`nginx:…`).
    Flag,
}

impl std::fmt::Display for PatternOrigin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PatternOrigin::Bundled => f.write_str("bundled"),
            PatternOrigin::File(p) => write!(f, "{}", p.display()),
            PatternOrigin::Flag => f.write_str("--format"),
        }
    }
}

/// A field mapping: one name, or several tried in order.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum Names {
    One(String),
    Many(Vec<String>),
}

impl Names {
    fn list(&self) -> Vec<String> {
        match self {
            Names::One(n) => vec![n.clone()],
            Names::Many(v) => v.clone(),
        }
    }
}

/// The `[split]` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
enum SplitSpec {
    Regex {
        regex: String,
        #[serde(default)]
        escape: Escape,
    },
    Template {
        template: String,
        #[serde(default)]
        escape: Escape,
    },
    Json,
}

/// The unit of the response-time field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Default)]
pub enum TimeUnit {
    #[default]
    #[serde(rename = "s")]
    Seconds,
    #[serde(rename = "ms")]
    Millis,
    #[serde(rename = "us")]
    Micros,
}

impl TimeUnit {
    /// Factor from this unit to milliseconds.
    pub(crate) fn to_millis(self) -> f64 {
        match self {
            TimeUnit::Seconds => 1000.0,
            TimeUnit::Millis => 1.0,
            TimeUnit::Micros => 0.001,
        }
    }
}

/// How a log writes the request target, and so how its endpoint is had.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum PathForm {
    /// As the client sent it (percent-encoded, with its query), served over
    /// WSGI: Django's `request.path` keeps a byte that is not UTF-8 as
    /// `%XX`.
    #[default]
    Raw,
    /// As the client sent it, served over ASGI (uvicorn, daphne): the
    /// server decodes the path as UTF-8, so such a byte becomes U+FFFD.
    Asgi,
    /// Already percent-decoded and without the query (hypercorn's and
    /// granian's `path`): the endpoint as it stands.
    Decoded,
}

/// How the metrics field holds the application's JSON object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum MetricsEncoding {
    /// JSON text (or, in a JSON log, an object or a string holding JSON text).
    #[default]
    Json,
    /// Percent-encoded JSON text, as some applications put it in a header.
    PercentJson,
}

/// A pattern file as written on disk: a `[split]` table with its
/// `[fields]`, or one of the servers' own format strings (`nginx = '…'`,
/// `gunicorn = '…'`, `apache = '…'`), whose fields are known, with an
/// optional `[fields]` table that adds to or overrides what they mean.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct PatternFile {
    name: Option<String>,
    description: Option<String>,
    #[serde(default = "default_priority")]
    detect_priority: i32,
    split: Option<SplitSpec>,
    nginx: Option<String>,
    gunicorn: Option<String>,
    apache: Option<String>,
    #[serde(default)]
    fields: BTreeMap<String, Names>,
    timestamp_format: Option<String>,
    response_time_unit: Option<TimeUnit>,
    #[serde(default)]
    metrics_encoding: MetricsEncoding,
    default_scheme: Option<String>,
    /// The client field is `address:port` (uvicorn, daphne, hypercorn).
    #[serde(default)]
    client_has_port: bool,
    /// How the request target is written, and what Django makes of it.
    #[serde(default)]
    path_form: PathForm,
    /// Only lines matching this are access lines (the log mixes in the
    /// server's own messages: uWSGI's `--logto`, granian's stdout).
    access_lines: Option<String>,
    /// Lines matching this are not requests (daphne's WebSocket lines).
    other_lines: Option<String>,
    /// Lines matching this are surely the server's own messages (uWSGI's
    /// `*** Starting uWSGI`): a log holding only such lines so far is that
    /// server's, with no request yet, rather than one of no known format.
    server_messages: Option<String>,
    /// Template fields whose text is latin-1 decoded bytes written as UTF-8
    /// (ASGI servers decode headers and uvicorn the raw path so): the agent
    /// undoes that to get the bytes the client sent.
    #[serde(default)]
    latin1_fields: Vec<String>,
    /// The zone of a timestamp written without one: `utc` (the default) or
    /// `local` (the agent's zone: `TZ`, else /etc/localtime).
    timestamp_zone: Option<String>,
}

fn default_priority() -> i32 {
    100
}

/// How a compiled pattern splits a line.
#[derive(Debug)]
enum Splitter {
    Regex {
        regex: Regex,
        escape: Escape,
        /// Per role, the capture groups that may hold it, in order.
        groups: Vec<(Role, Vec<usize>)>,
    },
    Template {
        template: Template,
        /// Per role, the template fields that may hold it, in order.
        groups: Vec<(Role, Vec<usize>)>,
        /// Per template field, whether its text is latin-1 written as UTF-8.
        latin1: Vec<bool>,
    },
    Json {
        /// Per role, the field paths that may hold it, in order.
        paths: Vec<(Role, Vec<String>)>,
    },
}

/// A compiled log format.
#[derive(Debug)]
pub struct Pattern {
    pub name: String,
    pub description: String,
    pub origin: PatternOrigin,
    /// Lower is tried first by `--format auto`.
    pub detect_priority: i32,
    pub timestamp_format: Option<TimestampFormat>,
    pub response_time_unit: TimeUnit,
    pub metrics_encoding: MetricsEncoding,
    /// Whether requests count as HTTPS when the line has no scheme field.
    pub default_https: bool,
    /// The client field carries a port after the address.
    pub client_has_port: bool,
    /// How the request target is written.
    pub path_form: PathForm,
    /// Which lines of the log are access lines at all.
    lines: LineKinds,
    splitter: Splitter,
}

/// Which lines of a log are access lines, for servers that write their own
/// messages (startup, WebSocket events) to the same file.
#[derive(Debug, Default)]
struct LineKinds {
    access: Option<Regex>,
    other: Option<Regex>,
    server: Option<Regex>,
}

impl LineKinds {
    fn is_access(&self, line: &[u8]) -> bool {
        self.access.as_ref().is_none_or(|r| r.is_match(line))
            && self.other.as_ref().is_none_or(|r| !r.is_match(line))
    }
}

/// Why a pattern file could not be used.
#[derive(Debug, thiserror::Error)]
#[error("pattern {origin_name}: {message}")]
pub struct PatternError {
    origin_name: String,
    message: String,
}

impl PatternError {
    /// A pattern file or folder that could not be read.
    pub fn io(path: &std::path::Path, e: std::io::Error) -> Self {
        PatternError::new(&path.display().to_string(), format!("cannot read: {e}"))
    }

    fn new(origin_name: &str, message: impl Into<String>) -> Self {
        PatternError {
            origin_name: origin_name.to_owned(),
            message: message.into(),
        }
    }
}

/// Why a line did not split into fields.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SplitError {
    #[error("line does not match the {0} pattern")]
    NoMatch(String),
    #[error("line is not a JSON object: {0}")]
    NotJson(String),
}

impl Pattern {
    /// Compiles a pattern file's text. `fallback_name` (the file stem) names
    /// the pattern when the file has no `name`.
    pub fn from_toml(
        text: &str,
        fallback_name: &str,
        origin: PatternOrigin,
    ) -> Result<Self, PatternError> {
        Self::from_toml_with(text, fallback_name, origin, None)
    }

    /// As [`Pattern::from_toml`], with the `metrics_header` setting applied
    /// to a server format string.
    pub(crate) fn from_toml_with(
        text: &str,
        fallback_name: &str,
        origin: PatternOrigin,
        metrics_header: Option<&str>,
    ) -> Result<Self, PatternError> {
        let where_ = match &origin {
            PatternOrigin::Bundled | PatternOrigin::Flag => fallback_name.to_owned(),
            PatternOrigin::File(p) => p.display().to_string(),
        };
        let file: PatternFile =
            toml::from_str(text).map_err(|e| PatternError::new(&where_, e.to_string()))?;
        Self::build(file, fallback_name, origin, &where_, metrics_header)
    }

    /// A pattern from a server's format string alone (`--format
    /// 'nginx:…'`), named by what was given.
    pub(crate) fn from_server_format(
        server: Server,
        text: &str,
        metrics_header: Option<&str>,
    ) -> Result<Self, PatternError> {
        let name = format!("{}:{text}", server.key());
        let mut file = PatternFile {
            description: Some(format!("{} format given with --format", server.key())),
            detect_priority: default_priority(),
            ..PatternFile::default()
        };
        match server {
            Server::Nginx => file.nginx = Some(text.to_owned()),
            Server::Gunicorn => file.gunicorn = Some(text.to_owned()),
            Server::Apache => file.apache = Some(text.to_owned()),
        }
        Self::build(file, &name, PatternOrigin::Flag, &name, metrics_header)
    }

    fn build(
        file: PatternFile,
        fallback_name: &str,
        origin: PatternOrigin,
        where_: &str,
        metrics_header: Option<&str>,
    ) -> Result<Self, PatternError> {
        let where_ = where_.to_owned();
        let name = file
            .name
            .clone()
            .unwrap_or_else(|| fallback_name.to_owned());
        let (spec, derived) = split_of(&file, &where_, metrics_header)?;
        let mut mappings = role_mappings(&file.fields, &where_)?;
        let (derived_fields, derived_time, derived_unit) = match derived {
            Some(c) => (c.fields, c.timestamp_format, Some(c.response_time_unit)),
            None => (BTreeMap::new(), None, None),
        };
        // What the server format says, unless `[fields]` says otherwise.
        for (role, names) in derived_fields {
            if !mappings.iter().any(|(r, _)| *r == role) {
                mappings.push((role, names));
            }
        }
        let timestamp_spec = file.timestamp_format.clone().or(derived_time);
        let response_time_unit = file.response_time_unit.or(derived_unit).unwrap_or_default();
        let has = |role: Role| mappings.iter().any(|(r, _)| *r == role);
        let has_request = has(Role::Request) || (has(Role::Method) && has(Role::Path));
        if !has_request {
            return Err(PatternError::new(
                &where_,
                "`fields` must map `request`, or both `method` and `path`",
            ));
        }

        let local = match file.timestamp_zone.as_deref() {
            None | Some("utc") => false,
            Some("local") => true,
            Some(other) => {
                return Err(PatternError::new(
                    &where_,
                    format!("`timestamp_zone` is {other:?}: expected \"utc\" or \"local\""),
                ));
            }
        };
        let timestamp_format = match (&timestamp_spec, has(Role::Timestamp)) {
            (Some(spec), _) => Some(
                TimestampFormat::from_spec(spec)
                    .map(|f| if local { f.in_local_zone() } else { f })
                    .map_err(|e| PatternError::new(&where_, e))?,
            ),
            (None, true) => {
                return Err(PatternError::new(
                    &where_,
                    "`fields.timestamp` is mapped but `timestamp_format` is missing",
                ));
            }
            (None, false) => None,
        };

        let default_https = match file.default_scheme.as_deref() {
            None | Some("http") => false,
            Some("https") => true,
            Some(other) => {
                return Err(PatternError::new(
                    &where_,
                    format!("`default_scheme` is {other:?}: expected \"http\" or \"https\""),
                ));
            }
        };

        let line_regex = |key: &str, text: &Option<String>| {
            text.as_deref()
                .map(|t| {
                    Regex::new(t).map_err(|e| PatternError::new(&where_, format!("`{key}`: {e}")))
                })
                .transpose()
        };
        let lines = LineKinds {
            access: line_regex("access_lines", &file.access_lines)?,
            other: line_regex("other_lines", &file.other_lines)?,
            server: line_regex("server_messages", &file.server_messages)?,
        };
        let splitter = splitter(spec, mappings, &file.latin1_fields, &where_)?;
        let description = file.description.unwrap_or_else(|| match &splitter {
            Splitter::Json { .. } => "JSON lines".to_owned(),
            _ => format!("{name} format"),
        });

        Ok(Pattern {
            name,
            description,
            origin,
            detect_priority: file.detect_priority,
            timestamp_format,
            response_time_unit,
            metrics_encoding: file.metrics_encoding,
            default_https,
            client_has_port: file.client_has_port,
            path_form: file.path_form,
            lines,
            splitter,
        })
    }

    /// Whether `line` is an access line at all, and not one of the
    /// server's own messages the pattern says the log also holds.
    #[inline]
    pub fn is_access_line(&self, line: &[u8]) -> bool {
        self.lines.is_access(line)
    }

    /// Whether `line` is surely one of the server's own messages (the
    /// pattern's `server_messages`).
    pub(crate) fn is_server_message(&self, line: &[u8]) -> bool {
        self.lines.server.as_ref().is_some_and(|r| r.is_match(line))
    }

    /// Why `line` does not split, and at which byte, when the pattern can
    /// tell (templates and JSON; a regex only says it did not match).
    pub(crate) fn explain(&self, line: &[u8]) -> Option<Mismatch> {
        match &self.splitter {
            Splitter::Regex { .. } => None,
            Splitter::Template { template, .. } => Some(template.explain(line)),
            Splitter::Json { .. } => {
                let text = RawBytes::smuggle(line);
                let e = serde_json::from_str::<JsonObject<'_>>(&text).err()?;
                // Columns count characters on the line; smuggled bytes are
                // one character each, so this is the byte for ASCII lines.
                let at = text
                    .char_indices()
                    .nth(e.column().saturating_sub(1))
                    .map_or(line.len(), |(i, _)| i.min(line.len()));
                Some(Mismatch {
                    at,
                    why: e.to_string(),
                })
            }
        }
    }

    /// Splits one line (without its newline) into fields.
    pub fn split<'a>(&self, line: &'a [u8]) -> Result<Fields<'a>, SplitError> {
        let mut fields = Fields::default();
        match &self.splitter {
            Splitter::Regex {
                regex,
                escape,
                groups,
            } => {
                let caps = regex
                    .captures(line)
                    .ok_or_else(|| SplitError::NoMatch(self.name.clone()))?;
                for (role, indices) in groups {
                    let found = indices
                        .iter()
                        .filter_map(|&i| caps.get(i))
                        .map(|m| &line[m.start()..m.end()])
                        .find(|v| !v.is_empty() && *v != b"-");
                    if let Some(raw) = found {
                        fields.set(*role, escape.unescape(raw));
                    }
                }
            }
            Splitter::Template {
                template,
                groups,
                latin1,
            } => {
                let mut spans = [(0usize, 0usize); MAX_FIELDS];
                template
                    .split(line, &mut spans)
                    .ok_or_else(|| SplitError::NoMatch(self.name.clone()))?;
                let escape = template.escape();
                for (role, indices) in groups {
                    let found = indices
                        .iter()
                        .map(|&i| (i, &line[spans[i].0..spans[i].1]))
                        .find(|(_, v)| !v.is_empty() && *v != b"-");
                    if let Some((i, raw)) = found {
                        let value = escape.unescape(raw);
                        let value = match latin1.get(i) {
                            Some(true) => match undo_latin1(&value) {
                                Some(bytes) => Cow::Owned(bytes),
                                None => value,
                            },
                            _ => value,
                        };
                        fields.set(*role, value);
                    }
                }
            }
            Splitter::Json { paths } => {
                match std::str::from_utf8(line) {
                    Ok(text) => {
                        let object: JsonObject<'a> = serde_json::from_str(text)
                            .map_err(|e| SplitError::NotJson(e.to_string()))?;
                        object.fill(paths, &mut fields);
                    }
                    Err(_) => {
                        // nginx's escape=json writes bytes >= 0x80 as they
                        // came, so a raw non-UTF-8 byte in a URL or header
                        // makes the line invalid UTF-8. Carry each such byte
                        // through the JSON parser as a private-use character
                        // and put the byte back in the values: the event
                        // builder then treats it as Django does (a path
                        // keeps it percent-encoded, text gets U+FFFD).
                        let text = RawBytes::smuggle(line);
                        let object: JsonObject<'_> = serde_json::from_str(&text)
                            .map_err(|e| SplitError::NotJson(e.to_string()))?;
                        let mut smuggled = Fields::default();
                        object.fill(paths, &mut smuggled);
                        fields = smuggled.map_values(RawBytes::restore);
                    }
                }
            }
        }
        Ok(fields)
    }
}

/// The file's splitter: its `[split]` table, or the one its server format
/// string compiles to (with what that format says the fields mean).
fn split_of(
    file: &PatternFile,
    where_: &str,
    metrics_header: Option<&str>,
) -> Result<(SplitSpec, Option<CompiledFormat>), PatternError> {
    let formats = [
        (Server::Nginx, &file.nginx),
        (Server::Gunicorn, &file.gunicorn),
        (Server::Apache, &file.apache),
    ];
    let mut given = formats
        .iter()
        .filter_map(|(server, text)| text.as_ref().map(|t| (*server, t)));
    let first = given.next();
    let count = usize::from(file.split.is_some()) + usize::from(first.is_some()) + given.count();
    if count != 1 {
        return Err(PatternError::new(
            where_,
            "give exactly one of `nginx`, `gunicorn`, `apache` (the server's format string) or a `[split]` table",
        ));
    }
    match (&file.split, first) {
        (Some(spec), _) => Ok((spec.clone(), None)),
        (None, Some((server, text))) => {
            let compiled = server_format::compile_with(server, text, metrics_header)
                .map_err(|e| PatternError::new(where_, format!("`{}`: {e}", server.key())))?;
            let spec = match &compiled.split {
                Split::Template { template, escape } => SplitSpec::Template {
                    template: template.clone(),
                    escape: *escape,
                },
                Split::Json => SplitSpec::Json,
            };
            Ok((spec, Some(compiled)))
        }
        (None, None) => Err(PatternError::new(where_, "no splitter")),
    }
}

/// The `[fields]` table as roles and the pattern's field names for each.
fn role_mappings(
    fields: &BTreeMap<String, Names>,
    where_: &str,
) -> Result<Vec<(Role, Vec<String>)>, PatternError> {
    let mut mappings = Vec::new();
    for (key, names) in fields {
        let role = Role::ALL
            .iter()
            .copied()
            .find(|r| r.key() == key)
            .ok_or_else(|| {
                let known: Vec<&str> = Role::ALL.iter().map(|r| r.key()).collect();
                PatternError::new(
                    where_,
                    format!(
                        "unknown key `fields.{key}`: expected one of {}",
                        known.join(", ")
                    ),
                )
            })?;
        mappings.push((role, names.list()));
    }
    Ok(mappings)
}

/// Compiles the `[split]` table, resolving each role's field names to the
/// splitter's own indices.
fn splitter(
    spec: SplitSpec,
    mappings: Vec<(Role, Vec<String>)>,
    latin1_fields: &[String],
    where_: &str,
) -> Result<Splitter, PatternError> {
    if !latin1_fields.is_empty() && !matches!(spec, SplitSpec::Template { .. }) {
        return Err(PatternError::new(
            where_,
            "`latin1_fields` needs a `template` split",
        ));
    }
    match spec {
        SplitSpec::Regex { regex, escape } => {
            let regex = Regex::new(&regex)
                .map_err(|e| PatternError::new(where_, format!("`split.regex`: {e}")))?;
            let names: Vec<Option<&str>> = regex.capture_names().collect();
            let groups =
                resolve_groups(&mappings, where_, "a named capture of `split.regex`", |n| {
                    names.iter().position(|c| *c == Some(n))
                })?;
            Ok(Splitter::Regex {
                regex,
                escape,
                groups,
            })
        }
        SplitSpec::Template { template, escape } => {
            let numeric: Vec<&str> = mappings
                .iter()
                .filter(|(r, _)| matches!(r, Role::Status | Role::BytesSent | Role::ResponseTime))
                .flat_map(|(_, names)| names.iter().map(String::as_str))
                .collect();
            let template = Template::compile(&template, escape, &numeric)
                .map_err(|e| PatternError::new(where_, format!("`split.template`: {e}")))?;
            let names: Vec<&str> = template.names().collect();
            let groups = resolve_groups(&mappings, where_, "a field of `split.template`", |n| {
                names.iter().position(|f| *f == n)
            })?;
            let mut latin1 = vec![false; names.len()];
            for n in latin1_fields {
                let i = names.iter().position(|f| f == n).ok_or_else(|| {
                    PatternError::new(
                        where_,
                        format!(
                            "`latin1_fields` names `{n}`, which is not a field of `split.template`"
                        ),
                    )
                })?;
                latin1[i] = true;
            }
            Ok(Splitter::Template {
                template,
                groups,
                latin1,
            })
        }
        SplitSpec::Json => Ok(Splitter::Json { paths: mappings }),
    }
}

/// Each role's field names as indices given by `index_of`; a name it does
/// not know is an error saying it is not `what`.
fn resolve_groups(
    mappings: &[(Role, Vec<String>)],
    where_: &str,
    what: &str,
    index_of: impl Fn(&str) -> Option<usize>,
) -> Result<Vec<(Role, Vec<usize>)>, PatternError> {
    let mut groups = Vec::new();
    for (role, wanted) in mappings {
        let mut indices = Vec::new();
        for n in wanted {
            let i = index_of(n).ok_or_else(|| {
                PatternError::new(
                    where_,
                    format!("`fields.{}` names `{n}`, which is not {what}", role.key()),
                )
            })?;
            indices.push(i);
        }
        groups.push((*role, indices));
    }
    Ok(groups)
}

/// Invalid UTF-8 bytes carried through a JSON parser as the characters
/// U+10FF00 + byte (the end of plane 16's private use area), like Python's
/// `surrogateescape`. Used only for lines that are not valid UTF-8; a
/// character of that range written in such a line itself would come out as
/// a byte, which no server or application is known to log.
struct RawBytes;

impl RawBytes {
    const BASE: u32 = 0x10_FF00;

    fn smuggle(line: &[u8]) -> String {
        let mut text = String::with_capacity(line.len() + 16);
        for chunk in line.utf8_chunks() {
            text.push_str(chunk.valid());
            for &b in chunk.invalid() {
                text.push(char::from_u32(Self::BASE + u32::from(b)).unwrap_or('\u{fffd}'));
            }
        }
        text
    }

    fn restore(value: Cow<'_, [u8]>) -> Vec<u8> {
        let Ok(text) = std::str::from_utf8(&value) else {
            return value.into_owned();
        };
        let mut out = Vec::with_capacity(text.len());
        let mut buf = [0u8; 4];
        for c in text.chars() {
            match u32::from(c).checked_sub(Self::BASE) {
                Some(b) if b <= 0xff => out.push(b as u8),
                _ => out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes()),
            }
        }
        out
    }
}

/// A path part and the list index after it: `User-Agent[0]` is
/// (`User-Agent`, `Some(0)`).
fn indexed(part: &str) -> (&str, Option<usize>) {
    if let Some(open) = part.strip_suffix(']').and_then(|p| p.rfind('['))
        && let Ok(i) = part[open + 1..part.len() - 1].parse()
    {
        return (&part[..open], Some(i));
    }
    (part, None)
}

/// `value`, or its element `index` when one is asked for.
fn element(value: &RawValue, index: Option<usize>) -> Option<&RawValue> {
    let Some(i) = index else {
        return Some(value);
    };
    let list: Vec<&RawValue> = serde_json::from_str(value.get()).ok()?;
    list.get(i).copied()
}

/// A string that borrows from the input when it has no escapes.
struct MaybeBorrowed<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for MaybeBorrowed<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = MaybeBorrowed<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(MaybeBorrowed(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(MaybeBorrowed(Cow::Owned(v.to_owned())))
            }
        }
        d.deserialize_str(V)
    }
}

/// The top level of a JSON log line: keys with their values still as JSON.
struct JsonObject<'a>(Vec<(Cow<'a, str>, &'a RawValue)>);

impl<'de> Deserialize<'de> for JsonObject<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = JsonObject<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Self::Value, M::Error> {
                let mut entries = Vec::with_capacity(16);
                while let Some(key) = map.next_key::<MaybeBorrowed<'de>>()? {
                    let value: &'de RawValue = map.next_value()?;
                    entries.push((key.0, value));
                }
                Ok(JsonObject(entries))
            }
        }
        d.deserialize_map(V)
    }
}

impl<'a> JsonObject<'a> {
    fn fill(&self, paths: &[(Role, Vec<String>)], fields: &mut Fields<'a>) {
        for (role, candidates) in paths {
            let found = candidates
                .iter()
                .filter_map(|p| self.lookup(p))
                .find(|v| !v.is_empty() && &**v != b"-");
            if let Some(v) = found {
                fields.set(*role, v);
            }
        }
    }

    fn get(&self, key: &str) -> Option<&'a RawValue> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| *v)
    }

    /// The value at `path` as bytes: a JSON string's content, or the JSON
    /// text of anything else (a number, an object). `a.b` walks into nested
    /// objects when no top-level key is literally `a.b`; `a[0]` takes the
    /// first element of a list (Caddy logs each header as a list of its
    /// values: `request.headers.User-Agent[0]`). `null` is absent.
    fn lookup(&self, path: &str) -> Option<Cow<'a, [u8]>> {
        let raw = match self.get(path) {
            Some(v) => v,
            None => {
                let mut parts = path.split('.');
                let (key, index) = indexed(parts.next()?);
                let mut current = element(self.get(key)?, index)?;
                for part in parts {
                    let (key, index) = indexed(part);
                    let nested: JsonObject<'a> = serde_json::from_str(current.get()).ok()?;
                    current = element(nested.get(key)?, index)?;
                }
                current
            }
        };
        let text = raw.get();
        if text.starts_with('"') {
            let s: MaybeBorrowed<'a> = serde_json::from_str(text).ok()?;
            Some(match s.0 {
                Cow::Borrowed(b) => Cow::Borrowed(b.as_bytes()),
                Cow::Owned(o) => Cow::Owned(o.into_bytes()),
            })
        } else if text == "null" {
            None
        } else {
            Some(Cow::Borrowed(text.as_bytes()))
        }
    }
}
