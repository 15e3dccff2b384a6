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
//! ends where the literal after it begins; where a value may hold that
//! literal too, the rest of the line decides (see [`Template::split`]). A
//! value holds only what its server writes (the escape mode: printable
//! ASCII without a raw `"` under `nginx` and `apache`, every `"` escaped
//! under `gunicorn`). Fields the pattern maps to numbers (status, bytes,
//! response time) must be digits (or `-`); a field between brackets holds
//! no bracket. The whole line must be consumed.

use memchr::memmem;

use super::escape::Escape;

/// The most fields a template may have.
pub(crate) const MAX_FIELDS: usize = 32;

#[derive(Debug, Clone)]
struct Field {
    name: String,
    /// The literal that ends the field; empty for a field at the end.
    after: Vec<u8>,
    finder: Option<memmem::Finder<'static>>,
    /// Between brackets: spaces allowed.
    bracketed: bool,
    numeric: bool,
}

/// A compiled format string.
#[derive(Debug, Clone)]
pub(crate) struct Template {
    prefix: Vec<u8>,
    fields: Vec<Field>,
    escape: Escape,
}

/// Byte spans of a line's fields, in template order.
pub(crate) type Spans = [(usize, usize); MAX_FIELDS];

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
                let bracketed = before.last() == Some(&b'[') && after.first() == Some(&b']');
                Field {
                    numeric: numeric.contains(&name.as_str()),
                    finder: (!after.is_empty()).then(|| memmem::Finder::new(&after).into_owned()),
                    name,
                    after,
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
        if !line.starts_with(&self.prefix) {
            return None;
        }
        // Nearly every line fits at the first occurrence of each literal:
        // one straight pass. Only a line that does not is cut again with
        // the search for other readings.
        if self.fit_first(line, spans) {
            return Some(());
        }
        let mut budget = MAX_RETRIES;
        self.fit(line, 0, self.prefix.len(), spans, &mut budget)
            .then_some(())
    }

    /// Cuts every field at the first occurrence of its literal (the last at
    /// the final literal): [`Template::fit`]'s first reading, without the
    /// recursion.
    fn fit_first(&self, line: &[u8], spans: &mut Spans) -> bool {
        let mut pos = self.prefix.len();
        let last = self.fields.len() - 1;
        for (k, f) in self.fields.iter().enumerate() {
            let (end, quote_free) = match f.finder.as_ref().filter(|_| k < last) {
                Some(_) => match find_literal(line, pos, &f.after) {
                    // Found at the first quote after `pos`: none inside.
                    Some((i, first)) => (i, first && f.after[0] == b'"'),
                    None => return false,
                },
                None => match line.len().checked_sub(f.after.len()) {
                    Some(end) if end >= pos && line[end..] == f.after[..] => (end, false),
                    _ => return false,
                },
            };
            let value = &line[pos..end];
            // gunicorn's only rule is about quotes: a value without one
            // needs no look (most values, on the hot path).
            let valid = if quote_free && self.escape == Escape::Gunicorn {
                self.valid_shape(f, value)
            } else {
                self.valid(f, value)
            };
            if !valid {
                return false;
            }
            spans[k] = (pos, end);
            pos = end + f.after.len();
        }
        pos == line.len()
    }

    /// Fits fields `k..` to `line[pos..]`, filling their spans.
    ///
    /// A field ends where the literal after it begins. Usually the first
    /// occurrence of that literal is the end, and this is one search per
    /// field. But a value may hold the literal itself: gunicorn writes a
    /// value ending in `\` before its closing quote as `\"`, exactly as it
    /// writes an escaped quote; an unquoted `$remote_user` may hold a space;
    /// under `escape = "none"` anything goes. So when the rest of the line
    /// does not fit, the next occurrence is tried, as long as the longer
    /// value is still one the server could write ([`Escape::can_write`]):
    /// the structure of the whole line (the later literals and fields, the
    /// end of the line) decides. Readings are tried shortest value first and
    /// the first under which every field is valid wins.
    ///
    /// What stays ambiguous: under `gunicorn`, a quoted value that is
    /// followed only by unquoted fields and holds `\"` plus that field's
    /// literal (e.g. `x\" 200` before ` $status`) could end at that `\"`
    /// too; the shorter reading is taken when the rest is valid under it.
    /// Under `none`, a value holding the next literal is cut at its first
    /// occurrence that leaves a valid rest. At most [`MAX_RETRIES`] other
    /// readings are tried per line, so a hostile line costs a bounded time.
    fn fit(&self, line: &[u8], k: usize, pos: usize, spans: &mut Spans, budget: &mut u32) -> bool {
        let Some(f) = self.fields.get(k) else {
            return pos == line.len();
        };
        let alen = f.after.len();
        let Some(finder) = f.finder.as_ref().filter(|_| k + 1 < self.fields.len()) else {
            // The last field runs to the final literal, which closes the
            // line: search from the end, so that the value may hold the
            // literal itself (a quote in a user agent, under `none`).
            let Some(end) = line.len().checked_sub(alen) else {
                return false;
            };
            if end < pos || line[end..] != f.after[..] || !self.valid(f, &line[pos..end]) {
                return false;
            }
            spans[k] = (pos, end);
            return true;
        };
        let mut from = pos;
        loop {
            let Some(end) = finder.find(&line[from..]).map(|i| from + i) else {
                return false;
            };
            if self.valid(f, &line[pos..end]) {
                spans[k] = (pos, end);
                if self.fit(line, k + 1, end + alen, spans, budget) {
                    return true;
                }
            }
            // A longer value would hold this literal: give up when no value
            // holding it can be valid, or when the line has cost enough.
            if *budget == 0 || !self.valid(f, &line[pos..end + alen]) {
                return false;
            }
            *budget -= 1;
            from = end + 1;
        }
    }

    /// Whether `value` can stand in field `f`: a number where the pattern
    /// wants one, no brackets inside brackets (times never hold them), and
    /// only what the server writes (see [`Escape::can_write`]).
    fn valid(&self, f: &Field, value: &[u8]) -> bool {
        self.valid_shape(f, value) && (f.numeric || self.escape.can_write(value))
    }

    /// [`Template::valid`] without the escape mode's rules.
    fn valid_shape(&self, f: &Field, value: &[u8]) -> bool {
        if f.numeric {
            return value == b"-"
                || (!value.is_empty() && value.iter().all(|b| b.is_ascii_digit() || *b == b'.'));
        }
        // (Empty is allowed: ingress-nginx writes `[]` for an upstream
        // without an alternative; an empty time fails as a time.)
        !(f.bracketed && memchr::memchr2(b'[', b']', value).is_some())
    }
}

/// Where and why a line does not fit a template (see [`Template::explain`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Mismatch {
    /// The byte of the line where the first reading failed.
    pub at: usize,
    pub why: String,
}

impl Template {
    /// Why `line` does not fit, at the first place where the straight
    /// reading (each field cut at the first occurrence of its literal)
    /// fails. For `check` and messages only: not on the hot path.
    pub(crate) fn explain(&self, line: &[u8]) -> Mismatch {
        let same = line
            .iter()
            .zip(&self.prefix)
            .take_while(|(a, b)| a == b)
            .count();
        if same < self.prefix.len() {
            return Mismatch {
                at: same,
                why: format!("expected {}", shown(&self.prefix[same..])),
            };
        }
        let mut pos = self.prefix.len();
        let last = self.fields.len() - 1;
        for (k, f) in self.fields.iter().enumerate() {
            let end = if k < last && !f.after.is_empty() {
                match find_literal(line, pos, &f.after) {
                    Some((i, _)) => i,
                    None => {
                        return Mismatch {
                            at: pos,
                            why: format!(
                                "field `${}` starts here, and no {} follows to end it",
                                f.name,
                                shown(&f.after)
                            ),
                        };
                    }
                }
            } else {
                match line.len().checked_sub(f.after.len()) {
                    Some(end) if end >= pos && line[end..] == f.after[..] => end,
                    _ => {
                        return Mismatch {
                            at: line.len(),
                            why: format!(
                                "the line should end with {} after field `${}`",
                                shown(&f.after),
                                f.name
                            ),
                        };
                    }
                }
            };
            let value = &line[pos..end];
            if !self.valid(f, value) {
                let what = if f.numeric {
                    "a number".to_owned()
                } else if f.bracketed {
                    "a value without brackets".to_owned()
                } else {
                    format!("a value the `{:?}` escaping can write", self.escape).to_lowercase()
                };
                return Mismatch {
                    at: pos,
                    why: format!("field `${}` is {}: expected {what}", f.name, shown(value)),
                };
            }
            pos = end + f.after.len();
        }
        Mismatch {
            at: pos,
            why: "the line goes on after the last field".into(),
        }
    }
}

/// Bytes as a quoted string for messages.
fn shown(bytes: &[u8]) -> String {
    let text: String = String::from_utf8_lossy(bytes).chars().take(60).collect();
    format!("{text:?}")
}

/// The first occurrence of `literal` in `line` at or after `from`. The
/// literals of access-log formats are short and start with a byte that is
/// rare in the value before them (a quote, a bracket, a space after a
/// field that holds none), so a memchr for that byte and a comparison beat
/// a general substring search on these 200-byte lines.
///
/// Also says whether it is the first occurrence of the literal's first byte
/// (then the value before it holds no such byte).
// Inlined into the hot first pass: `explain` calls it too, and with a
// second caller the compiler kept it out of line (2% more instructions per
// line in the agent on the nginx `combined` bench input, by callgrind).
#[inline(always)]
fn find_literal(line: &[u8], from: usize, literal: &[u8]) -> Option<(usize, bool)> {
    let (&first, rest) = literal.split_first()?;
    let mut at = from;
    loop {
        let i = at + memchr::memchr(first, &line[at..])?;
        if rest.is_empty() || line[i + 1..].starts_with(rest) {
            return Some((i, at == from));
        }
        at = i + 1;
    }
}

/// How many other ways to cut a line [`Template::split`] tries before it
/// gives up on the line.
const MAX_RETRIES: u32 = 64;

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
