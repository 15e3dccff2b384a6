//! Apache httpd's configuration: every `CustomLog` (and `TransferLog`)
//! with the `LogFormat` it names, across `Include` and `IncludeOptional`,
//! in every section (`<VirtualHost>`, `<IfModule>`: which modules are
//! loaded is not known here, so every section counts).
//!
//! Debian's layout names paths with `${APACHE_LOG_DIR}`, set in `envvars`
//! beside `apache2.conf`: variables come from `Define`, from that file and
//! from the environment. Relative paths are relative to `ServerRoot` (the
//! main file's folder until a `ServerRoot` says otherwise).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::{Findings, FoundLog, ReadError};
use crate::parse::server_format::Server;

/// What `TransferLog` writes without a default `LogFormat`.
const COMMON: &str = r#"%h %l %u %t "%r" %>s %b"#;
const MAX_DEPTH: usize = 16;

/// A directive: its name (lower case), arguments and place.
#[derive(Debug)]
struct Directive {
    name: String,
    args: Vec<String>,
    file: PathBuf,
    line: usize,
}

impl Directive {
    fn at(&self) -> String {
        format!("{}:{}", self.file.display(), self.line)
    }
}

/// What the reader knows as it goes.
struct State {
    root: PathBuf,
    vars: BTreeMap<String, String>,
    /// Nickname → format string; `None` key: the default format.
    formats: BTreeMap<String, String>,
    default_format: String,
    logs: Vec<(String, String, String, String)>,
    findings: Findings,
}

/// Reads `main` (and what it includes) and finds its access logs.
pub fn read(main: &Path) -> Result<Findings, ReadError> {
    let root = main.parent().unwrap_or(Path::new("/")).to_owned();
    let mut state = State {
        vars: envvars(&root),
        root,
        formats: BTreeMap::new(),
        default_format: COMMON.to_owned(),
        logs: Vec::new(),
        findings: Findings::default(),
    };
    read_file(main, &mut state, 0)?;
    let mut by_path: BTreeMap<String, Vec<(String, String, String)>> = BTreeMap::new();
    for (path, name, format, at) in std::mem::take(&mut state.logs) {
        by_path.entry(path).or_default().push((name, format, at));
    }
    for (path, entries) in by_path {
        let (name, format, at) = &entries[0];
        if let Some((other, _, other_at)) = entries.iter().find(|(_, f, _)| f != format) {
            state.findings.skip(format!(
                "{path}: written by {at} with {name:?} and by {other_at} with {other:?}: its lines have two formats; skipped (give each its own file)"
            ));
            continue;
        }
        state.findings.logs.push(FoundLog {
            path: PathBuf::from(path),
            server: Server::Apache,
            format_name: name.clone(),
            format: format.clone(),
            declared_at: at.clone(),
        });
    }
    Ok(state.findings)
}

/// Debian's `envvars` (`export APACHE_LOG_DIR=/var/log/apache2$SUFFIX`),
/// then the process environment over it.
fn envvars(root: &Path) -> BTreeMap<String, String> {
    let mut vars = BTreeMap::new();
    if let Ok(text) = std::fs::read_to_string(root.join("envvars")) {
        for line in text.lines() {
            let line = line.trim();
            let Some(rest) = line.strip_prefix("export ") else {
                continue;
            };
            let Some((name, value)) = rest.split_once('=') else {
                continue;
            };
            let value = value.trim_matches(['"', '\'']);
            // `$SUFFIX` is empty for the default instance.
            let value = value.replace("$SUFFIX", "").replace("${SUFFIX}", "");
            if !value.contains('$') {
                vars.insert(name.trim().to_owned(), value);
            }
        }
    }
    for (k, v) in std::env::vars() {
        if k.starts_with("APACHE_") {
            vars.insert(k, v);
        }
    }
    vars
}

fn read_file(path: &Path, state: &mut State, depth: usize) -> Result<(), ReadError> {
    let text = std::fs::read_to_string(path).map_err(|e| ReadError::io(path, e))?;
    for d in directives(&text, path)? {
        apply(d, state, depth)?;
    }
    Ok(())
}

fn apply(d: Directive, state: &mut State, depth: usize) -> Result<(), ReadError> {
    match d.name.as_str() {
        "serverroot" => {
            if let Some(root) = d.args.first() {
                state.root = PathBuf::from(substitute(root, &state.vars).unwrap_or_default());
            }
        }
        "define" => {
            if let [name, value, ..] = d.args.as_slice() {
                state.vars.insert(name.clone(), value.clone());
            }
        }
        "include" | "includeoptional" => {
            let Some(pattern) = d.args.first() else {
                return Ok(());
            };
            if depth >= MAX_DEPTH {
                return Err(ReadError::at(
                    &d.file,
                    d.line,
                    format!("`Include {pattern}` nests deeper than {MAX_DEPTH} files"),
                ));
            }
            let Some(pattern) = substitute(pattern, &state.vars) else {
                return Err(ReadError::at(
                    &d.file,
                    d.line,
                    format!("`Include {pattern}` names an undefined variable"),
                ));
            };
            let full = state.root.join(&pattern);
            let mut files: Vec<PathBuf> = glob::glob(&full.to_string_lossy())
                .map_err(|e| ReadError::at(&d.file, d.line, format!("not a glob: {e}")))?
                .filter_map(Result::ok)
                .filter(|p| p.is_file())
                .collect();
            files.sort();
            let glob = crate::tail::discover::is_glob(&pattern);
            if files.is_empty() && d.name == "include" && !glob && !full.is_dir() {
                return Err(ReadError::at(
                    &d.file,
                    d.line,
                    format!("`Include {pattern}`: {} does not exist", full.display()),
                ));
            }
            if files.is_empty() && full.is_dir() {
                // `Include dir/` takes every file in it.
                files = std::fs::read_dir(&full)
                    .map(|it| it.filter_map(|e| e.ok().map(|e| e.path())).collect())
                    .unwrap_or_default();
                files.sort();
            }
            for f in files {
                read_file(&f, state, depth + 1)?;
            }
        }
        "logformat" => match d.args.as_slice() {
            [format] => state.default_format = format.clone(),
            [format, name, ..] => {
                state.formats.insert(name.clone(), format.clone());
            }
            [] => {}
        },
        "customlog" | "transferlog" => custom_log(d, state),
        _ => {}
    }
    Ok(())
}

fn custom_log(d: Directive, state: &mut State) {
    let at = d.at();
    let Some(target) = d.args.first() else { return };
    if target.starts_with('|') {
        state.findings.skip(format!(
            "{at}: CustomLog {target}: a piped log goes to a program, not to a file; skipped"
        ));
        return;
    }
    if target.starts_with("syslog:") {
        state
            .findings
            .skip(format!("{at}: CustomLog {target}: sent to syslog; skipped"));
        return;
    }
    let Some(path) = substitute(target, &state.vars) else {
        state.findings.skip(format!(
            "{at}: CustomLog {target}: names a variable that is not defined (Define, envvars); skipped"
        ));
        return;
    };
    let path = state.root.join(path);
    let (name, format) = match (d.name.as_str(), d.args.get(1)) {
        ("transferlog", _) | (_, None) => ("(default)".to_owned(), state.default_format.clone()),
        (_, Some(f)) if f.contains('%') => ("(inline)".to_owned(), f.clone()),
        (_, Some(nick)) => match state.formats.get(nick) {
            Some(f) => (nick.clone(), f.clone()),
            None => {
                state.findings.skip(format!(
                    "{at}: CustomLog {target} names the LogFormat {nick:?}, which is not defined before it; skipped"
                ));
                return;
            }
        },
    };
    // `env=…` or `expr=…` after the format: only some requests are logged,
    // still in one format. The format is kept as the config writes it, so
    // that it reads as `--format 'apache:…'` would.
    let quoted = format!("\"{}\"", format.replace('"', "\\\""));
    state
        .logs
        .push((path.display().to_string(), name, quoted, at));
}

/// `${NAME}` replaced by its value; `None` when a variable is not known.
fn substitute(text: &str, vars: &BTreeMap<String, String>) -> Option<String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("${") {
        out.push_str(&rest[..i]);
        let end = rest[i..].find('}')?;
        let name = &rest[i + 2..i + end];
        out.push_str(vars.get(name)?);
        rest = &rest[i + end + 1..];
    }
    out.push_str(rest);
    Some(out)
}

/// Apache's lines: `\` at the end continues a line, `#` starts a comment
/// line, arguments are words or `"…"` (with `\"`), and section tags
/// (`<VirtualHost *:80>`, `</VirtualHost>`) are read through.
fn directives(text: &str, file: &Path) -> Result<Vec<Directive>, ReadError> {
    let mut out = Vec::new();
    let mut joined = String::new();
    let mut start = 0;
    for (n, raw) in text.lines().enumerate() {
        if joined.is_empty() {
            start = n + 1;
        }
        if let Some(head) = raw.strip_suffix('\\') {
            joined.push_str(head);
            continue;
        }
        joined.push_str(raw);
        let line = std::mem::take(&mut joined);
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with('<') {
            continue;
        }
        let words = words(line)
            .ok_or_else(|| ReadError::at(file, start, "a quoted argument is not closed"))?;
        let Some((name, args)) = words.split_first() else {
            continue;
        };
        out.push(Directive {
            name: name.to_ascii_lowercase(),
            args: args.to_vec(),
            file: file.to_owned(),
            line: start,
        });
    }
    Ok(out)
}

/// A line's words; `"…"` and `'…'` quote, `\"` inside double quotes is a
/// quote. `None` when a quote is not closed.
fn words(line: &str) -> Option<Vec<String>> {
    let mut out = Vec::new();
    let mut chars = line.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let Some(&first) = chars.peek() else {
            return Some(out);
        };
        let mut word = String::new();
        if first == '"' || first == '\'' {
            chars.next();
            let mut closed = false;
            while let Some(c) = chars.next() {
                match c {
                    '\\' if chars.peek() == Some(&first) => {
                        word.push(first);
                        chars.next();
                    }
                    c if c == first => {
                        closed = true;
                        break;
                    }
                    c => word.push(c),
                }
            }
            if !closed {
                return None;
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c.is_whitespace() {
                    break;
                }
                word.push(c);
                chars.next();
            }
        }
        out.push(word);
    }
}
