//! Split lines by the server's own format string, e.g. nginx's
//! `$remote_addr - $remote_user [$time_local] "$request" $status …`.
//!
//! Hand-written because it is the hot path and no crate does it fast
//! enough: with eight capture groups the `regex` crate (and
//! `regex-automata`'s one-pass DFA) cost ~480 ns per 220-byte line, about
//! half of the whole per-line budget, while cutting each field at the
//! literal that follows it with `memchr` costs a fraction of that
//! (`cargo bench --bench parts`, `split/*`).
//!
//! A template is literals and `$name` (or `${name}`) fields. Each field
//! ends where the literal after it begins. A field between quotes (or
//! brackets) may hold spaces; any other field may not, and must not be
//! empty. Inside quotes, the escape mode decides what a closing quote is
//! (`\"` does not close under `apache` and `gunicorn`) and what may appear
//! (printable ASCII only under `nginx` and `apache`, which escape the rest).
//! Fields the pattern maps to numbers (status, bytes, response time) must
//! be digits (or `-`). The whole line must be consumed.

use memchr::memmem;

use super::escape::Escape;

/// The most fields a template may have.
pub const MAX_FIELDS: usize = 32;

#[derive(Debug, Clone)]
struct Field {
    name: String,
    /// The literal that ends the field; empty for a field at the end.
    after: Vec<u8>,
    finder: Option<memmem::Finder<'static>>,
    /// Between quotes: spaces allowed, closing quote per escape mode.
    quoted: bool,
    /// Between brackets: spaces allowed.
    bracketed: bool,
    numeric: bool,
}

/// A compiled format string.
#[derive(Debug, Clone)]
pub struct Template {
    prefix: Vec<u8>,
    fields: Vec<Field>,
    escape: Escape,
}

/// Byte spans of a line's fields, in template order.
pub type Spans = [(usize, usize); MAX_FIELDS];

impl Template {
    /// Compiles `text`; `numeric` names the fields that must be numbers.
    pub fn compile(text: &str, escape: Escape, numeric: &[&str]) -> Result<Self, String> {
        let bytes = text.as_bytes();
        let mut literals: Vec<Vec<u8>> = vec![Vec::new()];
        let mut names: Vec<String> = Vec::new();
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i] == b'$' {
                let (name, next) = if bytes.get(i + 1) == Some(&b'{') {
                    let close = text[i + 2..]
                        .find('}')
                        .ok_or_else(|| format!("`${{` without `}}` at byte {i}"))?;
                    (&text[i + 2..i + 2 + close], i + 3 + close)
                } else {
                    let len = text[i + 1..]
                        .bytes()
                        .take_while(|b| b.is_ascii_alphanumeric() || *b == b'_')
                        .count();
                    (&text[i + 1..i + 1 + len], i + 1 + len)
                };
                if name.is_empty() {
                    return Err(format!("`$` without a field name at byte {i}"));
                }
                if !names.is_empty() && literals.last().is_some_and(Vec::is_empty) {
                    return Err(format!(
                        "fields `{}` and `{name}` touch: a literal must separate them",
                        names[names.len() - 1]
                    ));
                }
                names.push(name.to_owned());
                literals.push(Vec::new());
                i = next;
            } else {
                if let Some(last) = literals.last_mut() {
                    last.push(bytes[i]);
                }
                i += 1;
            }
        }
        if names.is_empty() {
            return Err("the template has no `$field`".into());
        }
        if names.len() > MAX_FIELDS {
            return Err(format!(
                "the template has {} fields; at most {MAX_FIELDS}",
                names.len()
            ));
        }
        let prefix = literals[0].clone();
        let fields = names
            .into_iter()
            .enumerate()
            .map(|(k, name)| {
                let before = &literals[k];
                let after = literals[k + 1].clone();
                let quoted = before.last() == Some(&b'"') && after.first() == Some(&b'"');
                let bracketed = before.last() == Some(&b'[') && after.first() == Some(&b']');
                Field {
                    numeric: numeric.contains(&name.as_str()),
                    finder: (!after.is_empty()).then(|| memmem::Finder::new(&after).into_owned()),
                    name,
                    after,
                    quoted,
                    bracketed,
                }
            })
            .collect();
        Ok(Template {
            prefix,
            fields,
            escape,
        })
    }

    /// The field names, in order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.fields.iter().map(|f| f.name.as_str())
    }

    /// The escape mode values are written in.
    pub fn escape(&self) -> Escape {
        self.escape
    }

    /// Cuts `line` into field spans; `None` when it does not fit.
    pub fn split(&self, line: &[u8], spans: &mut Spans) -> Option<()> {
        let mut pos = self.prefix.len();
        if !line.starts_with(&self.prefix) {
            return None;
        }
        let last = self.fields.len() - 1;
        for (k, f) in self.fields.iter().enumerate() {
            let end = if f.after.is_empty() {
                line.len()
            } else if k == last {
                // The final literal closes the line: search from the end, so
                // that a value may hold the literal itself (a quote in a
                // user agent, under `none`).
                let end = line.len().checked_sub(f.after.len())?;
                if end < pos || &line[end..] != f.after.as_slice() {
                    return None;
                }
                end
            } else if f.quoted && matches!(self.escape, Escape::Apache | Escape::Gunicorn) {
                unescaped_quote(line, pos, &f.after)?
            } else {
                pos + f.finder.as_ref()?.find(&line[pos..])?
            };
            let value = &line[pos..end];
            if !self.valid(f, value) {
                return None;
            }
            spans[k] = (pos, end);
            pos = end + f.after.len();
        }
        (pos == line.len()).then_some(())
    }

    fn valid(&self, f: &Field, value: &[u8]) -> bool {
        if f.numeric {
            return value == b"-"
                || (!value.is_empty() && value.iter().all(|b| b.is_ascii_digit() || *b == b'.'));
        }
        if f.quoted {
            // A value holds only what its server writes there: nginx
            // escapes quotes and every byte outside printable ASCII, Apache
            // escapes them with backslashes, gunicorn escapes quotes. A raw
            // one means the line is in some other format.
            let printable = || value.iter().all(|b| (0x20..=0x7e).contains(b));
            return match self.escape {
                Escape::Nginx => printable() && memchr::memchr(b'"', value).is_none(),
                Escape::Apache => printable() && !has_unescaped_quote(value),
                Escape::Gunicorn => !has_unescaped_quote(value),
                Escape::None => true,
            };
        }
        if f.bracketed {
            return !value.is_empty();
        }
        !value.is_empty() && !value.contains(&b' ')
    }
}

/// Whether `value` holds a `"` not escaped by a backslash.
fn has_unescaped_quote(value: &[u8]) -> bool {
    memchr::memchr_iter(b'"', value)
        .any(|q| value[..q].iter().rev().take_while(|&&b| b == b'\\').count() % 2 == 0)
}

/// The position of the first `"` at or after `from` that is not escaped by
/// an odd number of backslashes and is followed by the rest of `after`.
fn unescaped_quote(line: &[u8], from: usize, after: &[u8]) -> Option<usize> {
    let mut at = from;
    loop {
        let q = at + memchr::memchr(b'"', &line[at..])?;
        let backslashes = line[from..q]
            .iter()
            .rev()
            .take_while(|&&b| b == b'\\')
            .count();
        if backslashes % 2 == 0 && line[q..].starts_with(after) {
            return Some(q);
        }
        at = q + 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const COMBINED: &str = r#"$remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent "$http_referer" "$http_user_agent""#;

    fn fields<'a>(t: &Template, line: &'a [u8]) -> Option<Vec<&'a str>> {
        let mut spans = [(0, 0); MAX_FIELDS];
        t.split(line, &mut spans)?;
        Some(
            (0..t.fields.len())
                .map(|k| std::str::from_utf8(&line[spans[k].0..spans[k].1]).unwrap())
                .collect(),
        )
    }

    #[test]
    fn splits_nginx_combined() {
        let t = Template::compile(COMBINED, Escape::Nginx, &["status", "body_bytes_sent"]).unwrap();
        let line = br#"1.2.3.4 - - [25/Nov/2026:10:04:05 +0000] "GET /a?b=c HTTP/1.1" 200 5 "-" "Mozilla/5.0 (X11) \x22q\x22""#;
        assert_eq!(
            fields(&t, line).unwrap(),
            vec![
                "1.2.3.4",
                "-",
                "25/Nov/2026:10:04:05 +0000",
                "GET /a?b=c HTTP/1.1",
                "200",
                "5",
                "-",
                r"Mozilla/5.0 (X11) \x22q\x22"
            ]
        );
    }

    #[test]
    fn rejects_what_the_format_cannot_produce() {
        let t = Template::compile(COMBINED, Escape::Nginx, &["status", "body_bytes_sent"]).unwrap();
        for bad in [
            &br#"1.2.3.4 - - [25/Nov/2026:10:04:05 +0000] "GET / HTTP/1.1" 200 5 "-" "raw "quote" ua""#[..],
            br#"1.2.3.4 - - [25/Nov/2026:10:04:05 +0000] "GET / HTTP/1.1" OK 5 "-" "ua""#,
            br#"1.2.3.4 - - [25/Nov/2026:10:04:05 +0000] "GET / HTTP/1.1" 200 5 "-" "ua" trailing"#,
            "1.2.3.4 - - [25/Nov/2026:10:04:05 +0000] \"GET / HTTP/1.1\" 200 5 \"-\" \"caf\u{e9}\"".as_bytes(),
            br#"1.2.3.4 - - [25/Nov/2026:10:04:05 +0000] "GET / HTTP/1.1" 200"#,
            b"",
        ] {
            assert!(fields(&t, bad).is_none(), "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn apache_and_gunicorn_quotes_may_be_escaped() {
        let t = Template::compile(r#"$h "$r" "$a""#, Escape::Apache, &[]).unwrap();
        let line = br#"1.2.3.4 "GET / HTTP/1.1" "say \"hi\" \\""#;
        assert_eq!(
            fields(&t, line).unwrap(),
            vec!["1.2.3.4", "GET / HTTP/1.1", r#"say \"hi\" \\"#]
        );
    }

    #[test]
    fn templates_that_cannot_work_are_refused() {
        assert!(Template::compile("$a$b", Escape::None, &[]).is_err());
        assert!(Template::compile("no fields", Escape::None, &[]).is_err());
        assert!(Template::compile("$", Escape::None, &[]).is_err());
        assert!(Template::compile("${a b", Escape::None, &[]).is_err());
        let t = Template::compile("${a}-$b", Escape::None, &[]).unwrap();
        assert_eq!(t.names().collect::<Vec<_>>(), vec!["a", "b"]);
    }
}
