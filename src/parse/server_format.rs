//! The servers' own format strings: nginx's `log_format`, gunicorn's
//! `access_log_format` and Apache's `LogFormat`, compiled into what a
//! pattern file's `[split]` and `[fields]` tables would say, so that an
//! operator copies the line from the server's config and writes no mapping.
//!
//! Each server's variables are known: `$remote_addr`, `%(h)s` and `%h` are
//! the client address, `$request_time`, `%(L)s` and `%D` the response time
//! (each in its own unit), the response header `X-Cerberus-Metrics`, in any
//! spelling, the custom metrics. A variable with no meaning to the event
//! stays a named field that a `[fields]` table can still map. The result is
//! a template (the fast splitter, see [`super::template`]), or the JSON
//! splitter for nginx's `escape=json` formats that write a JSON object.

use std::collections::BTreeMap;

use super::escape::Escape;
use super::fields::Role;
use super::pattern::TimeUnit;

/// Which server's syntax a format string is written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Server {
    Nginx,
    Gunicorn,
    Apache,
}

impl Server {
    pub const ALL: [Server; 3] = [Server::Nginx, Server::Gunicorn, Server::Apache];

    /// The name used in pattern files (`nginx = '…'`) and on the command
    /// line (`--format 'nginx:…'`).
    pub fn key(self) -> &'static str {
        match self {
            Server::Nginx => "nginx",
            Server::Gunicorn => "gunicorn",
            Server::Apache => "apache",
        }
    }
}

/// How a compiled format splits lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Split {
    /// A template in the pattern files' `$name` syntax.
    Template { template: String, escape: Escape },
    /// A JSON object per line (nginx `escape=json`); fields are its keys.
    Json,
}

/// What a format string says, in a pattern file's terms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompiledFormat {
    pub split: Split,
    /// Per role, the fields that may hold it, best first.
    pub fields: BTreeMap<Role, Vec<String>>,
    /// How the timestamp field is written (a pattern file's
    /// `timestamp_format` spelling), when the format has one.
    pub timestamp_format: Option<String>,
    pub response_time_unit: TimeUnit,
    /// Every field of the format in order, with the variable it came from
    /// (`("i_user_agent", "%{User-Agent}i")`), for `check` to show.
    pub variables: Vec<(String, String)>,
}

/// The response header the application puts its custom metrics in.
pub(crate) const METRICS_HEADER: &str = "x-cerberus-metrics";

/// nginx's `$time_local`, gunicorn's `%(t)s` and Apache's `%t`.
const CLF_TIME: &str = "%d/%b/%Y:%H:%M:%S %z";

/// Compiles `text`, a format string in `server`'s syntax.
pub fn compile(server: Server, text: &str) -> Result<CompiledFormat, String> {
    match server {
        Server::Nginx => nginx(text),
        Server::Gunicorn => gunicorn(text),
        Server::Apache => apache(text),
    }
}

/// As [`compile`], with `header` (the `metrics_header` setting) a response
/// header that carries custom metrics too, first in line.
pub(crate) fn compile_with(
    server: Server,
    text: &str,
    header: Option<&str>,
) -> Result<CompiledFormat, String> {
    let mut c = compile(server, text)?;
    let Some(header) = header else {
        return Ok(c);
    };
    let wanted = header_field(header);
    let names: Vec<String> = c
        .variables
        .iter()
        .filter(|(_, variable)| {
            let named = match server {
                Server::Nginx => variable
                    .strip_prefix("$upstream_http_")
                    .or_else(|| variable.strip_prefix("$sent_http_"))
                    .map(str::to_owned),
                Server::Gunicorn => variable
                    .strip_prefix("%({")
                    .and_then(|v| v.strip_suffix("}o)s"))
                    .map(header_field),
                Server::Apache => variable
                    .strip_prefix("%{")
                    .and_then(|v| v.strip_suffix("}o"))
                    .map(header_field),
            };
            named.is_some_and(|n| n == wanted)
        })
        .map(|(name, _)| name.clone())
        .collect();
    let metrics = c.fields.entry(Role::Metrics).or_default();
    for name in names.into_iter().rev() {
        metrics.retain(|n| *n != name);
        metrics.insert(0, name);
    }
    if metrics.is_empty() {
        c.fields.remove(&Role::Metrics);
    }
    Ok(c)
}

/// What one variable means to the event.
#[derive(Debug, Clone, Copy)]
struct Meaning {
    role: Role,
    /// Among the fields of one role, lower is preferred.
    rank: u8,
    /// For a timestamp: how it is written.
    timestamp: Option<&'static str>,
    /// For a response time: its unit.
    unit: Option<TimeUnit>,
}

impl Meaning {
    fn of(role: Role, rank: u8) -> Option<Meaning> {
        Some(Meaning {
            role,
            rank,
            timestamp: None,
            unit: None,
        })
    }

    fn time(timestamp: &'static str, rank: u8) -> Option<Meaning> {
        Some(Meaning {
            timestamp: Some(timestamp),
            ..Meaning::of(Role::Timestamp, rank)?
        })
    }

    fn duration(unit: TimeUnit, rank: u8) -> Option<Meaning> {
        Some(Meaning {
            unit: Some(unit),
            ..Meaning::of(Role::ResponseTime, rank)?
        })
    }
}

/// The fields of a format as they are found, then the field table.
#[derive(Default)]
struct Meanings {
    found: Vec<(String, String, Option<Meaning>)>,
}

impl Meanings {
    /// A field named `name`, written `variable` in the format.
    fn add(&mut self, name: &str, variable: &str, meaning: Option<Meaning>) {
        self.found
            .push((name.to_owned(), variable.to_owned(), meaning));
    }

    /// When the template ends with the last field, and that field's name
    /// passes `joins`, `name` (written `variable`) is written right after
    /// it with nothing between: they become one field (`uri__is_args`),
    /// which keeps the last one's meaning. False when it did not apply.
    fn extend_last(
        &mut self,
        template: &mut String,
        name: &str,
        variable: &str,
        joins: impl Fn(&str) -> bool,
    ) -> bool {
        let Some((last, written, _)) = self.found.last_mut() else {
            return false;
        };
        let placeholder = format!("${{{last}}}");
        if !template.ends_with(&placeholder) || !joins(last) {
            return false;
        }
        template.truncate(template.len() - placeholder.len());
        *last = format!("{last}__{name}");
        written.push_str(variable);
        template.push_str(&format!("${{{last}}}"));
        true
    }

    /// Each role's fields, best rank first (then in format order). The
    /// timestamp and the response time have one format or unit per
    /// pattern: only their best field is kept.
    fn finish(self, split: Split) -> CompiledFormat {
        let mut fields: BTreeMap<Role, Vec<String>> = BTreeMap::new();
        let mut timestamp_format = None;
        let mut unit = None;
        let mut ranked: Vec<(&String, Meaning)> = self
            .found
            .iter()
            .filter_map(|(n, _, m)| m.map(|m| (n, m)))
            .collect();
        ranked.sort_by_key(|(_, m)| m.rank);
        for (name, m) in ranked {
            let list = fields.entry(m.role).or_default();
            let single = matches!(m.role, Role::Timestamp | Role::ResponseTime);
            if (single && !list.is_empty()) || list.contains(name) {
                continue;
            }
            list.push(name.clone());
            timestamp_format = timestamp_format.or(m.timestamp.map(str::to_owned));
            unit = unit.or(m.unit);
        }
        CompiledFormat {
            split,
            fields,
            timestamp_format,
            response_time_unit: unit.unwrap_or_default(),
            variables: self.found.into_iter().map(|(n, v, _)| (n, v)).collect(),
        }
    }
}

/// A header name as a field name: `X-Cerberus-Metrics` → `x_cerberus_metrics`.
fn header_field(header: &str) -> String {
    header
        .chars()
        .map(|c| match c {
            'A'..='Z' => c.to_ascii_lowercase(),
            'a'..='z' | '0'..='9' => c,
            _ => '_',
        })
        .collect()
}

/// What a request header, response header or environment variable means,
/// whatever the server's spelling: `kind` is `i` (request header), `o`
/// (response header) or `e` (environment).
fn header_meaning(kind: char, header: &str) -> Option<Meaning> {
    match (kind, header.to_ascii_lowercase().as_str()) {
        ('i', "user-agent") => Meaning::of(Role::UserAgent, 0),
        ('i', "x-forwarded-for") => Meaning::of(Role::ForwardedFor, 0),
        ('o', METRICS_HEADER) => Meaning::of(Role::Metrics, 0),
        _ => None,
    }
}

// ------------------------------------------------------------------ nginx

/// What an nginx variable means.
fn nginx_meaning(var: &str) -> Option<Meaning> {
    match var {
        "remote_addr" => Meaning::of(Role::ClientIp, 0),
        "request" => Meaning::of(Role::Request, 0),
        "request_method" => Meaning::of(Role::Method, 0),
        // The target as the client sent it; `$uri` is decoded and
        // normalised by nginx, second best.
        "request_uri" => Meaning::of(Role::Path, 0),
        "uri" | "document_uri" => Meaning::of(Role::Path, 1),
        "args" | "query_string" => Meaning::of(Role::Query, 0),
        "scheme" => Meaning::of(Role::Scheme, 0),
        "time_iso8601" => Meaning::time("iso8601", 0),
        "time_local" => Meaning::time(CLF_TIME, 1),
        "msec" => Meaning::time("unix", 2),
        "status" => Meaning::of(Role::Status, 0),
        "body_bytes_sent" => Meaning::of(Role::BytesSent, 0),
        "bytes_sent" => Meaning::of(Role::BytesSent, 1),
        "request_time" => Meaning::duration(TimeUnit::Seconds, 0),
        "http_user_agent" => Meaning::of(Role::UserAgent, 0),
        "http_x_forwarded_for" => Meaning::of(Role::ForwardedFor, 0),
        _ => {
            let header = var
                .strip_prefix("upstream_http_")
                .or_else(|| var.strip_prefix("sent_http_"))?;
            (header == header_field(METRICS_HEADER)).then_some(())?;
            // The upstream's header is what the application sent; the
            // header nginx sent on is the same unless a filter changed it.
            Meaning::of(Role::Metrics, u8::from(var.starts_with("sent_")))
        }
    }
}

/// nginx variables that together write a request target.
const TARGET_PARTS: &[&str] = &["uri", "document_uri", "is_args", "args", "query_string"];

/// nginx's `log_format` text, optionally starting with `escape=…`. Several
/// quoted strings, as nginx allows them, are joined first.
fn nginx(text: &str) -> Result<CompiledFormat, String> {
    let text = join_nginx_strings(text.trim())?;
    let (escape, body) = match text.strip_prefix("escape=") {
        Some(rest) => {
            let (mode, body) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
            (mode.to_owned(), body.trim_start().to_owned())
        }
        None => ("default".to_owned(), text.clone()),
    };
    let escape = match escape.as_str() {
        "default" => Escape::Nginx,
        "none" => Escape::None,
        "json" => return nginx_json(&body),
        other => {
            return Err(format!(
                "escape={other} is not an nginx escape mode: expected default, json or none"
            ));
        }
    };
    let mut meanings = Meanings::default();
    let mut template = String::with_capacity(body.len());
    for piece in nginx_pieces(&body)? {
        match piece {
            Piece::Literal(l) => template.push_str(&l),
            // `$uri$is_args$args` writes one request target: one field.
            Piece::Variable(var)
                if TARGET_PARTS.contains(&var.as_str())
                    && meanings.extend_last(&mut template, &var, &format!("${var}"), |n| {
                        n.split("__").all(|p| TARGET_PARTS.contains(&p))
                    }) => {}
            Piece::Variable(var) => {
                template.push_str(&format!("${{{var}}}"));
                meanings.add(&var, &format!("${var}"), nginx_meaning(&var));
            }
        }
    }
    Ok(prefer_request_uri(
        meanings.finish(Split::Template { template, escape }),
    ))
}

/// `$request_uri` holds the path and the query as the client sent them:
/// with it, `$uri` and `$args` add nothing but a lookup per line.
fn prefer_request_uri(mut c: CompiledFormat) -> CompiledFormat {
    let variable_of = |name: &str| {
        c.variables
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    };
    let has_request_uri = c
        .fields
        .get(&Role::Path)
        .and_then(|v| v.first())
        .is_some_and(|n| variable_of(n).as_deref() == Some("$request_uri"));
    if has_request_uri {
        if let Some(paths) = c.fields.get_mut(&Role::Path) {
            paths.truncate(1);
        }
        c.fields.remove(&Role::Query);
    }
    c
}

/// A format string's literal text and variables, in order.
enum Piece {
    Literal(String),
    Variable(String),
}

/// Splits nginx format text into literals and `$var` / `${var}`.
fn nginx_pieces(text: &str) -> Result<Vec<Piece>, String> {
    let mut pieces = Vec::new();
    let mut literal = String::new();
    let mut chars = text.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        if c != '$' {
            literal.push(c);
            continue;
        }
        let name: String = if chars.peek().is_some_and(|(_, c)| *c == '{') {
            chars.next();
            let name: String = chars
                .by_ref()
                .map(|(_, c)| c)
                .take_while(|c| *c != '}')
                .collect();
            if !text[i..].contains('}') {
                return Err(format!("`${{` without `}}` at byte {i} of {text:?}"));
            }
            name
        } else {
            let mut name = String::new();
            while let Some((_, c)) = chars.peek().copied() {
                if !(c.is_ascii_alphanumeric() || c == '_') {
                    break;
                }
                name.push(c);
                chars.next();
            }
            name
        };
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(format!(
                "`$` without a variable name at byte {i} of {text:?}"
            ));
        }
        if !literal.is_empty() {
            pieces.push(Piece::Literal(std::mem::take(&mut literal)));
        }
        pieces.push(Piece::Variable(name));
    }
    if !literal.is_empty() {
        pieces.push(Piece::Literal(literal));
    }
    Ok(pieces)
}

/// nginx's config allows a format as several strings, quoted or not:
/// `'$remote_addr - ' '"$request"'`. Text with no quote at its start is
/// taken as it is.
fn join_nginx_strings(text: &str) -> Result<String, String> {
    let (head, rest) = match text.strip_prefix("escape=") {
        Some(rest) => {
            let (mode, body) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
            (format!("escape={mode} "), body.trim_start())
        }
        None => (String::new(), text),
    };
    if !rest.starts_with(['\'', '"']) {
        return Ok(format!("{head}{rest}"));
    }
    let mut out = head;
    let mut chars = rest.chars();
    loop {
        match chars.next() {
            None => return Ok(out),
            Some(c) if c.is_whitespace() => continue,
            Some(q @ ('\'' | '"')) => {
                let mut closed = false;
                while let Some(c) = chars.next() {
                    match c {
                        '\\' => match chars.next() {
                            Some(n) => out.push_str(&unescape_nginx(n, q)),
                            None => out.push('\\'),
                        },
                        c if c == q => {
                            closed = true;
                            break;
                        }
                        c => out.push(c),
                    }
                }
                if !closed {
                    return Err(format!("a {q}-quoted part of the format is not closed"));
                }
            }
            Some(c) => {
                return Err(format!(
                    "unexpected {c:?} between the quoted parts of the format"
                ));
            }
        }
    }
}

/// What nginx's config reader makes of a backslash and `next` inside a
/// string quoted with `quote`: the quote, a backslash, a tab, a newline or
/// a carriage return; other pairs stay as they are.
pub(crate) fn unescape_nginx(next: char, quote: char) -> String {
    match next {
        n if n == quote || n == '\\' => n.to_string(),
        't' => "\t".into(),
        'n' => "\n".into(),
        'r' => "\r".into(),
        n => format!("\\{n}"),
    }
}

/// Quotes `text` as one nginx string, so that [`compile`] (and nginx)
/// read it back as it is.
pub(crate) fn quote_nginx(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('\'');
    for c in text.chars() {
        match c {
            '\'' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

/// An `escape=json` format writing a JSON object: each key whose value is
/// one variable becomes a field named after the key.
fn nginx_json(body: &str) -> Result<CompiledFormat, String> {
    if !body.trim_start().starts_with('{') {
        return Err(
            "an escape=json format must write a JSON object (`{\"key\":\"$var\", …}`)".into(),
        );
    }
    let pair =
        regex::Regex::new(r#""((?:[^"\\]|\\.)*)"\s*:\s*("?)\$\{?([A-Za-z0-9_]+)\}?("?)\s*[,}]"#)
            .map_err(|e| e.to_string())?;
    let mut meanings = Meanings::default();
    for caps in pair.captures_iter(body) {
        if caps[2] != caps[4] {
            continue;
        }
        let key = &caps[1];
        let var = &caps[3];
        meanings.add(key, &format!("${var}"), nginx_meaning(var));
    }
    if meanings.found.is_empty() {
        return Err("no `\"key\":\"$variable\"` pair in the escape=json format".into());
    }
    Ok(prefer_request_uri(meanings.finish(Split::Json)))
}

// --------------------------------------------------------------- gunicorn

/// What a gunicorn atom means.
fn gunicorn_meaning(atom: &str) -> Option<Meaning> {
    match atom {
        "h" => Meaning::of(Role::ClientIp, 0),
        "r" => Meaning::of(Role::Request, 0),
        "m" => Meaning::of(Role::Method, 0),
        "U" => Meaning::of(Role::Path, 0),
        "q" => Meaning::of(Role::Query, 0),
        "t" => Meaning::time(CLF_TIME, 0),
        "s" => Meaning::of(Role::Status, 0),
        "B" => Meaning::of(Role::BytesSent, 0),
        "b" => Meaning::of(Role::BytesSent, 1),
        "a" => Meaning::of(Role::UserAgent, 0),
        "L" => Meaning::duration(TimeUnit::Seconds, 0),
        "D" => Meaning::duration(TimeUnit::Micros, 1),
        "M" => Meaning::duration(TimeUnit::Millis, 2),
        "T" => Meaning::duration(TimeUnit::Seconds, 3),
        _ => None,
    }
}

/// gunicorn's `access_log_format`: `%(h)s`, `%({header}i)s`, `%%`.
fn gunicorn(text: &str) -> Result<CompiledFormat, String> {
    let text = unquote(text.trim());
    let mut meanings = Meanings::default();
    let mut template = String::with_capacity(text.len());
    let mut rest = text.as_str();
    while let Some(at) = rest.find('%') {
        template.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        if let Some(r) = after.strip_prefix('%') {
            template.push('%');
            rest = r;
            continue;
        }
        let inner_end = after
            .strip_prefix('(')
            .and_then(|a| a.find(")s"))
            .ok_or_else(|| {
                format!(
                    "`%` at {:?} is not an atom like %(h)s",
                    truncate(&rest[at..])
                )
            })?;
        let atom = &after[1..1 + inner_end];
        rest = &after[inner_end + 3..];
        let (name, meaning) = match atom.strip_prefix('{').and_then(|a| a.rsplit_once('}')) {
            Some((header, kind @ ("i" | "o" | "e"))) => {
                let kind = kind.chars().next().unwrap_or('i');
                (
                    format!("{kind}_{}", header_field(header)),
                    header_meaning(kind, header),
                )
            }
            Some(_) => {
                return Err(format!(
                    "unknown atom %({atom})s: expected {{…}}i, {{…}}o or {{…}}e"
                ));
            }
            None if atom.len() == 1 && atom.chars().all(|c| c.is_ascii_alphabetic()) => {
                (atom.to_owned(), gunicorn_meaning(atom))
            }
            None => return Err(format!("unknown atom %({atom})s")),
        };
        // gunicorn writes the time between brackets itself.
        if atom == "t" {
            template.push_str(&format!("[${{{name}}}]"));
        } else {
            template.push_str(&format!("${{{name}}}"));
        }
        meanings.add(&name, &format!("%({atom})s"), meaning);
    }
    template.push_str(rest);
    Ok(meanings.finish(Split::Template {
        template,
        escape: Escape::Gunicorn,
    }))
}

// ----------------------------------------------------------------- Apache

/// What an Apache directive means; `arg` is its `{…}` argument.
fn apache_meaning(letter: char, arg: Option<&str>) -> Option<Meaning> {
    match (letter, arg) {
        ('a', None) => Meaning::of(Role::ClientIp, 0),
        ('h', None) => Meaning::of(Role::ClientIp, 1),
        ('r', None) => Meaning::of(Role::Request, 0),
        ('m', None) => Meaning::of(Role::Method, 0),
        ('U', None) => Meaning::of(Role::Path, 0),
        ('q', None) => Meaning::of(Role::Query, 0),
        ('s', None) => Meaning::of(Role::Status, 0),
        ('b', None) => Meaning::of(Role::BytesSent, 0),
        ('B', None) => Meaning::of(Role::BytesSent, 1),
        ('O', None) => Meaning::of(Role::BytesSent, 2),
        ('D', None) => Meaning::duration(TimeUnit::Micros, 0),
        ('T', Some("ms")) => Meaning::duration(TimeUnit::Millis, 1),
        ('T', Some("us")) => Meaning::duration(TimeUnit::Micros, 1),
        ('T', None | Some("s")) => Meaning::duration(TimeUnit::Seconds, 2),
        ('t', None) => Meaning::time(CLF_TIME, 0),
        ('t', Some("sec")) => Meaning::time("unix", 1),
        ('t', Some("msec")) => Meaning::time("unix_ms", 1),
        ('i' | 'o' | 'e', Some(header)) => header_meaning(letter, header),
        _ => None,
    }
}

/// Apache's `LogFormat` string, as in the config (`\"` for a quote).
fn apache(text: &str) -> Result<CompiledFormat, String> {
    let text = unquote(text.trim());
    let text = text.replace("\\\"", "\"").replace("\\t", "\t");
    let mut meanings = Meanings::default();
    let mut template = String::with_capacity(text.len());
    let mut custom_time: Option<String> = None;
    let mut chars = text.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        if c != '%' {
            template.push(c);
            continue;
        }
        // Modifiers: `<` `>` (original or final request), and status
        // conditions like `!200,304`.
        while chars
            .peek()
            .is_some_and(|(_, c)| matches!(c, '<' | '>' | '!' | ',' | '0'..='9'))
        {
            chars.next();
        }
        let mut arg = None;
        if chars.peek().is_some_and(|(_, c)| *c == '{') {
            chars.next();
            let a: String = chars
                .by_ref()
                .map(|(_, c)| c)
                .take_while(|c| *c != '}')
                .collect();
            arg = Some(a);
        }
        let Some((_, letter)) = chars.next() else {
            return Err(format!("`%` at the end of the format (byte {i})"));
        };
        if letter == '%' {
            template.push('%');
            continue;
        }
        if !letter.is_ascii_alphabetic() {
            return Err(format!(
                "`%{letter}` at byte {i} is not an Apache format directive"
            ));
        }
        let custom = letter == 't' && arg.as_deref().is_some_and(|a| a.contains('%'));
        let name = match &arg {
            // The time in a format of its own: `t`, as `%t` would be.
            Some(_) if custom => "t".to_owned(),
            Some(a) => format!("{letter}_{}", header_field(a)),
            None => letter.to_string(),
        };
        let mut meaning = apache_meaning(letter, arg.as_deref());
        if letter == 't' {
            match arg.as_deref() {
                // `%t` is written between brackets.
                None => {
                    template.push_str(&format!("[${{{name}}}]"));
                    meanings.add(&name, "%t", meaning);
                    continue;
                }
                Some("sec" | "msec") => {}
                Some(fmt) => {
                    // A strftime format, maybe behind `begin:` or `end:`.
                    let fmt = fmt
                        .strip_prefix("begin:")
                        .or_else(|| fmt.strip_prefix("end:"))
                        .unwrap_or(fmt);
                    if fmt.contains('%') && custom_time.is_none() {
                        custom_time = Some(fmt.to_owned());
                        meaning = Meaning::of(Role::Timestamp, 0);
                    }
                }
            }
        }
        // `%U%q` writes one request target: one field.
        if letter == 'q'
            && arg.is_none()
            && meanings.extend_last(&mut template, "q", "%q", |n| n == "U")
        {
            continue;
        }
        template.push_str(&format!("${{{name}}}"));
        let variable = match &arg {
            Some(a) => format!("%{{{a}}}{letter}"),
            None => format!("%{letter}"),
        };
        meanings.add(&name, &variable, meaning);
    }
    let mut compiled = meanings.finish(Split::Template {
        template,
        escape: Escape::Apache,
    });
    if let Some(fmt) = custom_time
        && compiled
            .fields
            .get(&Role::Timestamp)
            .and_then(|v| v.first())
            .is_some_and(|n| n == "t")
    {
        compiled.timestamp_format = Some(fmt);
    }
    Ok(compiled)
}

/// A format copied with its surrounding quotes, as it stands in a config
/// file, loses them.
fn unquote(text: &str) -> String {
    for q in ['"', '\''] {
        if text.len() >= 2 && text.starts_with(q) && text.ends_with(q) {
            let inner = &text[1..text.len() - 1];
            // Only if the quotes are the outer ones, not a field's.
            if !inner.contains(q) || q == '"' && !inner.replace("\\\"", "").contains('"') {
                return inner.to_owned();
            }
        }
    }
    text.to_owned()
}

fn truncate(s: &str) -> &str {
    match s.char_indices().nth(16) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::Pattern;

    fn fields_of(c: &CompiledFormat) -> Vec<(Role, Vec<&str>)> {
        c.fields
            .iter()
            .map(|(r, v)| (*r, v.iter().map(String::as_str).collect()))
            .collect()
    }

    fn template_of(c: &CompiledFormat) -> (&str, Escape) {
        match &c.split {
            Split::Template { template, escape } => (template, *escape),
            Split::Json => panic!("not a template"),
        }
    }

    #[test]
    fn nginx_combined_as_nginx_defines_it_in_several_strings() {
        let c = compile(
            Server::Nginx,
            r#"'$remote_addr - $remote_user [$time_local] '
               '"$request" $status $body_bytes_sent '
               '"$http_referer" "$http_user_agent"'"#,
        )
        .unwrap();
        assert_eq!(
            template_of(&c),
            (
                r#"${remote_addr} - ${remote_user} [${time_local}] "${request}" ${status} ${body_bytes_sent} "${http_referer}" "${http_user_agent}""#,
                Escape::Nginx
            )
        );
        assert_eq!(
            fields_of(&c),
            vec![
                (Role::ClientIp, vec!["remote_addr"]),
                (Role::Request, vec!["request"]),
                (Role::Timestamp, vec!["time_local"]),
                (Role::Status, vec!["status"]),
                (Role::BytesSent, vec!["body_bytes_sent"]),
                (Role::UserAgent, vec!["http_user_agent"]),
            ]
        );
        assert_eq!(c.timestamp_format.as_deref(), Some(CLF_TIME));
    }

    #[test]
    fn nginx_custom_format_with_times_lists_and_the_metrics_header() {
        let text = r#"$remote_addr [$time_iso8601] "$request" $status $bytes_sent ${request_time} "$upstream_response_time" "$upstream_http_x_cerberus_metrics" "$http_x_forwarded_for" $msec"#;
        let c = compile(Server::Nginx, text).unwrap();
        let f = fields_of(&c);
        assert!(
            f.contains(&(Role::ResponseTime, vec!["request_time"])),
            "{f:?}"
        );
        assert!(f.contains(&(Role::Metrics, vec!["upstream_http_x_cerberus_metrics"])));
        // The ISO time is preferred to $msec; one format per pattern.
        assert!(f.contains(&(Role::Timestamp, vec!["time_iso8601"])));
        assert_eq!(c.timestamp_format.as_deref(), Some("iso8601"));
        assert_eq!(c.response_time_unit, TimeUnit::Seconds);

        let p = Pattern::from_server_format(Server::Nginx, text, None).unwrap();
        let line = br#"10.0.0.1 [2026-11-25T10:04:05+00:00] "GET /a?b=1 HTTP/1.1" 200 512 0.012 "0.010, 0.002" "{\x22n\x22:1}" "203.0.113.9, 10.0.0.1" 1764065045.123"#;
        let fields = p.split(line).expect("the line splits");
        assert_eq!(fields.get(Role::ClientIp), Some(&b"10.0.0.1"[..]));
        assert_eq!(fields.get(Role::ResponseTime), Some(&b"0.012"[..]));
        assert_eq!(fields.get(Role::Metrics), Some(&br#"{"n":1}"#[..]));
        assert_eq!(fields.get(Role::BytesSent), Some(&b"512"[..]));
    }

    #[test]
    fn nginx_json_formats_map_their_keys() {
        let c = compile(
            Server::Nginx,
            r#"escape=json '{"ip":"$remote_addr","t":"$time_iso8601",'
                '"req":"$request","code":$status,"rt":"$request_time","other":"$host:$server_port"}'"#,
        )
        .unwrap();
        assert_eq!(c.split, Split::Json);
        let f = fields_of(&c);
        assert!(f.contains(&(Role::ClientIp, vec!["ip"])), "{f:?}");
        assert!(f.contains(&(Role::Status, vec!["code"])), "{f:?}");
        assert!(f.contains(&(Role::Request, vec!["req"])), "{f:?}");
        assert!(
            !c.variables.iter().any(|(n, _)| n == "other"),
            "{:?}",
            c.variables
        );
    }

    #[test]
    fn quoted_nginx_strings_read_back_as_they_were() {
        for text in [r#""$request" $status"#, r"a\b 'q' \t", "tab\there"] {
            let quoted = quote_nginx(text);
            assert_eq!(join_nginx_strings(&quoted).unwrap(), text, "{quoted}");
        }
    }

    #[test]
    fn nginx_errors_name_the_offending_part() {
        let e = compile(Server::Nginx, "escape=xml $remote_addr").unwrap_err();
        assert!(e.contains("escape=xml"), "{e}");
        let e = compile(Server::Nginx, "$remote_addr ${oops").unwrap_err();
        assert!(e.contains("`${`"), "{e}");
        let e = compile(Server::Nginx, "'$remote_addr").unwrap_err();
        assert!(e.contains("not closed"), "{e}");
        let e = compile(Server::Nginx, "escape=json $remote_addr").unwrap_err();
        assert!(e.contains("JSON object"), "{e}");
    }

    #[test]
    fn gunicorn_atoms_headers_and_units() {
        let c = compile(
            Server::Gunicorn,
            r#"'%(h)s %(t)s "%(r)s" %(s)s %(B)s %(D)s "%({X-Forwarded-For}i)s" "%({x-cerberus-metrics}o)s" 100%%'"#,
        )
        .unwrap();
        assert_eq!(
            template_of(&c),
            (
                r#"${h} [${t}] "${r}" ${s} ${B} ${D} "${i_x_forwarded_for}" "${o_x_cerberus_metrics}" 100%"#,
                Escape::Gunicorn
            )
        );
        assert_eq!(c.response_time_unit, TimeUnit::Micros);
        let f = fields_of(&c);
        assert!(
            f.contains(&(Role::Metrics, vec!["o_x_cerberus_metrics"])),
            "{f:?}"
        );
        let e = compile(Server::Gunicorn, "%(h)s %(zz)s").unwrap_err();
        assert!(e.contains("%(zz)s"), "{e}");
        let e = compile(Server::Gunicorn, "%(h)s %h").unwrap_err();
        assert!(e.contains("%h"), "{e}");
    }

    #[test]
    fn the_metrics_header_setting_names_another_header_in_every_spelling() {
        for (server, text) in [
            (
                Server::Nginx,
                r#"$remote_addr "$request" "$sent_http_x_app_stats""#,
            ),
            (Server::Gunicorn, r#"%(h)s "%(r)s" "%({X-App-Stats}o)s""#),
            (Server::Apache, r#"%h \"%r\" \"%{X-App-Stats}o\""#),
        ] {
            let c = compile_with(server, text, Some("X-App-Stats")).unwrap();
            assert_eq!(
                c.fields.get(&Role::Metrics).map(Vec::len),
                Some(1),
                "{server:?}"
            );
            assert!(
                !compile(server, text)
                    .unwrap()
                    .fields
                    .contains_key(&Role::Metrics)
            );
        }
    }

    #[test]
    fn a_target_written_in_parts_is_one_field() {
        let c = compile(
            Server::Nginx,
            r#"'"$request_method $uri$is_args$args $server_protocol" $status'"#,
        )
        .unwrap();
        assert_eq!(
            template_of(&c).0,
            r#""${request_method} ${uri__is_args__args} ${server_protocol}" ${status}"#
        );
        assert_eq!(
            c.fields.get(&Role::Path),
            Some(&vec!["uri__is_args__args".to_owned()])
        );
        let c = compile(Server::Apache, r#""%m %U%q %H" %>s"#).unwrap();
        assert_eq!(template_of(&c).0, r#""${m} ${U__q} ${H}" ${s}"#);
        assert_eq!(c.fields.get(&Role::Path), Some(&vec!["U__q".to_owned()]));
        assert_eq!(c.fields.get(&Role::Query), None);
    }

    #[test]
    fn apache_directives_modifiers_and_custom_times() {
        let c = compile(
            Server::Apache,
            r#""%a %{X-Forwarded-For}i [%{%Y-%m-%d %H:%M:%S}t] \"%r\" %>s %b %{ms}T \"%{User-Agent}i\" \"%{X-Cerberus-Metrics}o\" %v %%""#,
        )
        .unwrap();
        let (template, escape) = template_of(&c);
        assert_eq!(escape, Escape::Apache);
        assert_eq!(
            template,
            r#"${a} ${i_x_forwarded_for} [${t}] "${r}" ${s} ${b} ${T_ms} "${i_user_agent}" "${o_x_cerberus_metrics}" ${v} %"#
        );
        assert_eq!(c.timestamp_format.as_deref(), Some("%Y-%m-%d %H:%M:%S"));
        assert_eq!(c.response_time_unit, TimeUnit::Millis);
        let f = fields_of(&c);
        assert!(f.contains(&(Role::ClientIp, vec!["a"])), "{f:?}");
        assert!(
            f.contains(&(Role::UserAgent, vec!["i_user_agent"])),
            "{f:?}"
        );
        assert!(
            f.contains(&(Role::Metrics, vec!["o_x_cerberus_metrics"])),
            "{f:?}"
        );
        let e = compile(Server::Apache, "%h %").unwrap_err();
        assert!(e.contains("end of the format"), "{e}");
    }
}
