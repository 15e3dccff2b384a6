//! nginx's configuration: every `access_log` of the `http`, `server` and
//! `location` blocks (across `include`s) with the `log_format` it names.
//!
//! The reader follows nginx's own rules where they matter here: tokens are
//! words, quoted strings (with `\"`, `\'`, `\\`, `\t`, `\n`, `\r`), `{`,
//! `}` and `;`; `#` starts a comment; `include` takes a path or a glob,
//! relative to the main file's folder; an `access_log` without a format
//! uses the built-in `combined`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::{Findings, FoundLog, ReadError};
use crate::parse::server_format::{Server, quote_nginx, unescape_nginx};

/// nginx's predefined format.
const COMBINED: &str = r#"'$remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent "$http_referer" "$http_user_agent"'"#;

/// `include`s nested deeper than this are refused (a file including itself).
const MAX_DEPTH: usize = 16;

/// A token and where it stands.
#[derive(Debug, Clone)]
struct Token {
    text: String,
    /// `{`, `}` or `;` written as such (not quoted).
    punct: bool,
    at: Place,
}

/// A file and a line, for messages.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Place {
    file: PathBuf,
    line: usize,
}

impl std::fmt::Display for Place {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.file.display(), self.line)
    }
}

/// One directive, with its block when it has one.
#[derive(Debug)]
struct Directive {
    name: String,
    args: Vec<String>,
    block: Option<Vec<Directive>>,
    at: Place,
}

/// Reads `main` (and what it includes) and finds its access logs.
pub fn read(main: &Path) -> Result<Findings, ReadError> {
    let base = main.parent().unwrap_or(Path::new("/")).to_owned();
    let directives = parse_file(main, &base, 0)?;
    let mut formats: BTreeMap<String, (String, Place)> = BTreeMap::new();
    formats.insert(
        "combined".into(),
        (
            COMBINED.into(),
            Place {
                file: "(built in)".into(),
                line: 0,
            },
        ),
    );
    let mut uses = Vec::new();
    walk(&directives, &[], &mut formats, &mut uses);
    let mut findings = Findings::default();
    let mut by_path: BTreeMap<PathBuf, Vec<(String, String, Place)>> = BTreeMap::new();
    for AccessLog { args, at } in uses {
        let Some(first) = args.first() else { continue };
        if first == "off" {
            continue;
        }
        if first.starts_with("syslog:") {
            findings.skip(format!(
                "{at}: access_log {first}: sent to syslog, not to a file; skipped"
            ));
            continue;
        }
        if first.contains('$') {
            findings.skip(format!(
                "{at}: access_log {first}: the path holds variables, so the files it names are not known; skipped (name them with --log)"
            ));
            continue;
        }
        let path = PathBuf::from(first);
        if path.is_relative() {
            findings.skip(format!(
                "{at}: access_log {first}: a relative path, which nginx resolves against its prefix (nginx -V shows it); skipped (give the full path with --log)"
            ));
            continue;
        }
        let name = args.get(1).cloned().unwrap_or_else(|| "combined".into());
        let options = &args[args.len().min(2)..];
        if options
            .iter()
            .any(|o| o == "gzip" || o.starts_with("gzip="))
        {
            findings.skip(format!(
                "{at}: access_log {first}: written gzip-compressed, which cannot be followed line by line; skipped"
            ));
            continue;
        }
        let Some((text, _)) = formats.get(&name) else {
            findings.skip(format!(
                "{at}: access_log {first} names the log_format {name:?}, which is not defined; skipped"
            ));
            continue;
        };
        by_path
            .entry(path)
            .or_default()
            .push((name, text.clone(), at));
    }
    for (path, entries) in by_path {
        let (name, text, at) = &entries[0];
        if let Some((other, _, other_at)) = entries.iter().find(|(_, t, _)| t != text) {
            findings.skip(format!(
                "{}: written by {at} with log_format {name:?} and by {other_at} with {other:?}: its lines have two formats; skipped (give each block its own file)",
                path.display()
            ));
            continue;
        }
        findings.logs.push(FoundLog {
            path,
            server: Server::Nginx,
            format_name: name.clone(),
            format: text.clone(),
            declared_at: at.to_string(),
        });
    }
    Ok(findings)
}

/// An `access_log` directive's arguments and place.
struct AccessLog {
    args: Vec<String>,
    at: Place,
}

/// Gathers `log_format`s and `access_log`s, knowing the enclosing blocks.
fn walk(
    directives: &[Directive],
    context: &[&str],
    formats: &mut BTreeMap<String, (String, Place)>,
    uses: &mut Vec<AccessLog>,
) {
    let in_http = context.first() == Some(&"http");
    for d in directives {
        match (d.name.as_str(), &d.block) {
            ("log_format", None) if in_http && d.args.len() >= 2 => {
                let (escape, strings) = match d.args[1].strip_prefix("escape=") {
                    Some(mode) => (format!("escape={mode} "), &d.args[2..]),
                    None => (String::new(), &d.args[1..]),
                };
                let quoted: Vec<String> = strings.iter().map(|s| quote_nginx(s)).collect();
                formats.insert(
                    d.args[0].clone(),
                    (format!("{escape}{}", quoted.join(" ")), d.at.clone()),
                );
            }
            ("access_log", None) if in_http => uses.push(AccessLog {
                args: d.args.clone(),
                at: d.at.clone(),
            }),
            (name, Some(block)) => {
                let mut inner = context.to_vec();
                inner.push(name);
                walk(block, &inner, formats, uses);
            }
            _ => {}
        }
    }
}

fn parse_file(path: &Path, base: &Path, depth: usize) -> Result<Vec<Directive>, ReadError> {
    let text = std::fs::read_to_string(path).map_err(|e| ReadError::io(path, e))?;
    let tokens = tokenize(&text, path)?;
    let mut pos = 0;
    let directives = parse_block(&tokens, &mut pos, base, depth, false)?;
    Ok(directives)
}

fn parse_block(
    tokens: &[Token],
    pos: &mut usize,
    base: &Path,
    depth: usize,
    nested: bool,
) -> Result<Vec<Directive>, ReadError> {
    let mut out = Vec::new();
    while let Some(t) = tokens.get(*pos) {
        if t.punct && t.text == "}" {
            if !nested {
                return Err(ReadError::at(&t.at.file, t.at.line, "unexpected `}`"));
            }
            *pos += 1;
            return Ok(out);
        }
        if t.punct {
            return Err(ReadError::at(
                &t.at.file,
                t.at.line,
                format!("unexpected `{}`", t.text),
            ));
        }
        let name = t.text.clone();
        let at = t.at.clone();
        *pos += 1;
        let mut args: Vec<String> = Vec::new();
        loop {
            let Some(t) = tokens.get(*pos) else {
                return Err(ReadError::at(
                    &at.file,
                    at.line,
                    format!("`{name}` does not end with `;` or a block"),
                ));
            };
            *pos += 1;
            match (t.punct, t.text.as_str()) {
                (true, ";") => {
                    if name == "include" {
                        let pattern = args.first().ok_or_else(|| {
                            ReadError::at(&at.file, at.line, "`include` without a path")
                        })?;
                        out.extend(include(pattern, base, depth, &at)?);
                    } else {
                        out.push(Directive {
                            name,
                            args,
                            block: None,
                            at,
                        });
                    }
                    break;
                }
                (true, "{") => {
                    let block = parse_block(tokens, pos, base, depth, true)?;
                    out.push(Directive {
                        name,
                        args,
                        block: Some(block),
                        at,
                    });
                    break;
                }
                (true, _) => {
                    return Err(ReadError::at(&t.at.file, t.at.line, "unexpected `}`"));
                }
                (false, text) => args.push(text.to_owned()),
            }
        }
    }
    if nested {
        let at = tokens.last().map(|t| t.at.clone());
        return Err(match at {
            Some(at) => ReadError::at(&at.file, at.line, "a block is not closed with `}`"),
            None => ReadError::at(base, 0, "a block is not closed with `}`"),
        });
    }
    Ok(out)
}

/// The directives of the files an `include` names (a glob; none found is
/// fine, as for nginx).
fn include(
    pattern: &str,
    base: &Path,
    depth: usize,
    at: &Place,
) -> Result<Vec<Directive>, ReadError> {
    if depth >= MAX_DEPTH {
        return Err(ReadError::at(
            &at.file,
            at.line,
            format!(
                "`include {pattern}` nests deeper than {MAX_DEPTH} files (does a file include itself?)"
            ),
        ));
    }
    let full = if Path::new(pattern).is_absolute() {
        PathBuf::from(pattern)
    } else {
        base.join(pattern)
    };
    let text = full.to_string_lossy().into_owned();
    let mut files: Vec<PathBuf> = match glob::glob(&text) {
        Ok(paths) => paths.filter_map(Result::ok).collect(),
        Err(e) => {
            return Err(ReadError::at(
                &at.file,
                at.line,
                format!("`include {pattern}` is not a valid glob: {e}"),
            ));
        }
    };
    if files.is_empty() && !crate::tail::discover::is_glob(&text) {
        return Err(ReadError::at(
            &at.file,
            at.line,
            format!("`include {pattern}`: {} does not exist", full.display()),
        ));
    }
    files.sort();
    let mut out = Vec::new();
    for f in files {
        out.extend(parse_file(&f, base, depth + 1)?);
    }
    Ok(out)
}

/// nginx's tokens: words, quoted strings, `{` `}` `;`; `#` comments.
fn tokenize(text: &str, file: &Path) -> Result<Vec<Token>, ReadError> {
    let mut tokens = Vec::new();
    let mut line = 1;
    let mut chars = text.chars().peekable();
    let place = |line| Place {
        file: file.to_owned(),
        line,
    };
    while let Some(c) = chars.next() {
        match c {
            '\n' => line += 1,
            c if c.is_whitespace() => {}
            '#' => {
                for c in chars.by_ref() {
                    if c == '\n' {
                        line += 1;
                        break;
                    }
                }
            }
            '{' | '}' | ';' => tokens.push(Token {
                text: c.to_string(),
                punct: true,
                at: place(line),
            }),
            q @ ('"' | '\'') => {
                let start = line;
                let mut s = String::new();
                let mut closed = false;
                while let Some(c) = chars.next() {
                    match c {
                        '\\' => match chars.next() {
                            Some(n) => {
                                line += usize::from(n == '\n');
                                s.push_str(&unescape_nginx(n, q));
                            }
                            None => s.push('\\'),
                        },
                        c if c == q => {
                            closed = true;
                            break;
                        }
                        c => {
                            line += usize::from(c == '\n');
                            s.push(c);
                        }
                    }
                }
                if !closed {
                    return Err(ReadError::at(
                        file,
                        start,
                        format!("a {q}-quoted string is not closed"),
                    ));
                }
                tokens.push(Token {
                    text: s,
                    punct: false,
                    at: place(start),
                });
            }
            _ => {
                let mut s = String::from(c);
                while let Some(&n) = chars.peek() {
                    if n.is_whitespace() || matches!(n, '{' | '}' | ';') {
                        break;
                    }
                    s.push(n);
                    chars.next();
                }
                tokens.push(Token {
                    text: s,
                    punct: false,
                    at: place(line),
                });
            }
        }
    }
    Ok(tokens)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn errors_name_the_file_and_the_line() {
        let dir = tempfile::tempdir().unwrap();
        let main = write(
            dir.path(),
            "nginx.conf",
            "events {}\nhttp {\n  access_log /x;\n",
        );
        let e = read(&main).unwrap_err().to_string();
        assert!(
            e.contains("nginx.conf:3") && e.contains("not closed"),
            "{e}"
        );
        let main = write(
            dir.path(),
            "nginx.conf",
            "http {\n  include missing.conf;\n}\n",
        );
        let e = read(&main).unwrap_err().to_string();
        assert!(
            e.contains("nginx.conf:2") && e.contains("missing.conf"),
            "{e}"
        );
        let main = write(dir.path(), "nginx.conf", "http {\n  log_format x '$a;\n}\n");
        let e = read(&main).unwrap_err().to_string();
        assert!(
            e.contains("nginx.conf:2") && e.contains("not closed"),
            "{e}"
        );
        let main = write(dir.path(), "loop.conf", "http { include loop.conf; }\n");
        let e = read(&main).unwrap_err().to_string();
        assert!(e.contains("nests deeper"), "{e}");
    }

    #[test]
    fn formats_and_logs_across_includes_with_comments_and_quotes() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("conf.d")).unwrap();
        let main = write(
            dir.path(),
            "nginx.conf",
            "# a comment { ; }\nhttp {\n  log_format q escape=default '\"$request\" $status' \"#$body_bytes_sent\";\n  include conf.d/*.conf;\n  access_log off;\n}\n",
        );
        write(
            dir.path(),
            "conf.d/a.conf",
            "server { location / { access_log /var/log/a.log q if=$loggable; } }\n",
        );
        let found = read(&main).unwrap();
        assert_eq!(found.skipped, Vec::<String>::new());
        assert_eq!(found.logs.len(), 1);
        let log = &found.logs[0];
        assert_eq!(log.path, PathBuf::from("/var/log/a.log"));
        assert_eq!(
            log.format,
            r#"escape=default '"$request" $status' '#$body_bytes_sent'"#
        );
        assert!(log.declared_at.ends_with("a.conf:1"), "{}", log.declared_at);
        // The format reads back as nginx writes it.
        let c = crate::parse::server_format::compile(Server::Nginx, &log.format).unwrap();
        assert!(matches!(
            c.split,
            crate::parse::server_format::Split::Template { .. }
        ));
    }
}
