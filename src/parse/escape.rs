//! Undo the escaping web servers apply to values inside a log line.
//!
//! nginx (`escape=default`) writes `"`, `\`, control bytes and bytes ≥ 0x7f
//! as `\xHH`. Apache writes `\"`, `\\`, `\n`, `\r`, `\t`, `\b`, `\v` and
//! other unprintable bytes as `\xhh`. gunicorn writes `"` as `\"` and
//! everything else (backslashes, tabs) as it is; and, like every WSGI server,
//! it holds header values and the request target as latin-1 text, which it
//! writes to the log as UTF-8, so `café` sent as UTF-8 is logged `cafÃ©`.
//! [`Escape::unescape`] undoes both steps and gives the bytes the client or
//! the application sent.
//!
//! [`Escape::can_write`] says whether a value could have been written by the
//! server at all: the template splitter uses it to tell where a value ends
//! when a line could be cut in more than one way.

use std::borrow::Cow;

use serde::Deserialize;

/// How a log format escapes special bytes in its values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Escape {
    /// Values are written as they are.
    #[default]
    None,
    /// nginx's default `\xHH`.
    Nginx,
    /// Apache's backslash escapes and `\xhh`.
    Apache,
    /// gunicorn's `\"` for a double quote, nothing else.
    Gunicorn,
}

impl Escape {
    /// The value with escapes undone; borrowed when there was nothing to undo.
    #[inline]
    pub fn unescape<'a>(self, raw: &'a [u8]) -> Cow<'a, [u8]> {
        if self == Escape::Gunicorn {
            // The usual value (ASCII, no backslash) in one pass.
            if !raw
                .iter()
                .fold(false, |seen, &b| seen | (b == b'\\') | (b >= 0x80))
            {
                return Cow::Borrowed(raw);
            }
            return match self.unescape_backslashes(raw) {
                Cow::Borrowed(b) => undo_latin1(b).map_or(Cow::Borrowed(b), Cow::Owned),
                Cow::Owned(o) => Cow::Owned(undo_latin1(&o).unwrap_or(o)),
            };
        }
        self.unescape_backslashes(raw)
    }

    /// Whether the server could have written `value` (as it appears in the
    /// line, before [`Escape::unescape`]).
    #[inline]
    pub fn can_write(self, value: &[u8]) -> bool {
        // Every value of every line goes through here: the checks are
        // written to run over the whole value without branching per byte
        // (the compiler vectorises `printable`), with memchr for quotes.
        match self {
            // Every `"`, `\`, control byte and byte >= 0x7f is `\xHH`.
            Escape::Nginx => value.iter().fold(true, |ok, &b| {
                ok & (b.wrapping_sub(0x20) < 0x5f) & (b != b'"')
            }),
            // `"` and `\` are backslash-escaped, unprintable bytes `\xhh`.
            Escape::Apache => {
                let (printable, quote) = value.iter().fold((true, false), |(ok, q), &b| {
                    (ok & (b.wrapping_sub(0x20) < 0x5f), q | (b == b'"'))
                });
                printable && (!quote || !has_unescaped_quote(value))
            }
            // `"` is `\"`; backslashes are not escaped, so a `"` after any
            // number of backslashes is an escaped quote.
            Escape::Gunicorn => match memchr::memchr(b'"', value) {
                None => true,
                Some(_) => memchr::memchr_iter(b'"', value).all(|q| q > 0 && value[q - 1] == b'\\'),
            },
            Escape::None => true,
        }
    }

    fn unescape_backslashes<'a>(self, raw: &'a [u8]) -> Cow<'a, [u8]> {
        if self == Escape::None || !raw.contains(&b'\\') {
            return Cow::Borrowed(raw);
        }
        let mut out = Vec::with_capacity(raw.len());
        let mut i = 0;
        while i < raw.len() {
            let b = raw[i];
            if b != b'\\' || i + 1 >= raw.len() {
                out.push(b);
                i += 1;
                continue;
            }
            let next = raw[i + 1];
            if self == Escape::Gunicorn {
                // Only `"` is escaped: a backslash before anything else is
                // the value's own, and so is the first of `\\"` (the
                // value held `\"`).
                if next == b'"' {
                    out.push(b'"');
                    i += 2;
                } else {
                    out.push(b);
                    i += 1;
                }
                continue;
            }
            if next == b'x'
                && let Some(byte) = raw.get(i + 2..i + 4).and_then(hex_byte)
            {
                out.push(byte);
                i += 4;
                continue;
            }
            if self == Escape::Apache {
                let simple = match next {
                    b'"' => Some(b'"'),
                    b'\\' => Some(b'\\'),
                    b'n' => Some(b'\n'),
                    b'r' => Some(b'\r'),
                    b't' => Some(b'\t'),
                    b'b' => Some(0x08),
                    b'v' => Some(0x0b),
                    _ => None,
                };
                if let Some(byte) = simple {
                    out.push(byte);
                    i += 2;
                    continue;
                }
            }
            // Not an escape this server writes: keep the backslash literally.
            out.push(b);
            i += 1;
        }
        Cow::Owned(out)
    }
}

/// Whether `value` holds a `"` not escaped by an odd number of backslashes
/// (Apache escapes both `"` and `\`).
pub(crate) fn has_unescaped_quote(value: &[u8]) -> bool {
    memchr::memchr_iter(b'"', value)
        .any(|q| value[..q].iter().rev().take_while(|&&b| b == b'\\').count() % 2 == 0)
}

/// gunicorn's text is latin-1 decoded bytes written as UTF-8: the bytes the
/// client sent are the code points. `None` when there is nothing to undo
/// (ASCII), or the text cannot have come that way (invalid UTF-8, or a code
/// point above U+00FF): then the value is kept as it is.
pub(crate) fn undo_latin1(text: &[u8]) -> Option<Vec<u8>> {
    if text.is_ascii() {
        return None;
    }
    let text = std::str::from_utf8(text).ok()?;
    text.chars()
        .map(|c| u8::try_from(u32::from(c)).ok())
        .collect()
}

fn hex_byte(pair: &[u8]) -> Option<u8> {
    let hi = (pair[0] as char).to_digit(16)?;
    let lo = (pair[1] as char).to_digit(16)?;
    Some((hi * 16 + lo) as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nginx_hex_escapes() {
        assert_eq!(
            &*Escape::Nginx.unescape(br#"{\x22a\x22:1} caf\xC3\xA9 \q"#),
            "{\"a\":1} café \\q".as_bytes()
        );
    }

    #[test]
    fn apache_backslash_escapes() {
        assert_eq!(
            &*Escape::Apache.unescape(br#"say \"hi\" \\ \x41\n"#),
            b"say \"hi\" \\ A\n".as_slice()
        );
    }

    #[test]
    fn gunicorn_escapes_only_quotes() {
        assert_eq!(
            &*Escape::Gunicorn.unescape(br#"a \"q\" b\slash \x41"#),
            br#"a "q" b\slash \x41"#.as_slice()
        );
    }

    #[test]
    fn gunicorn_backslash_before_an_escaped_quote_is_the_values_own() {
        // The application sent `\"` (a JSON-escaped quote): gunicorn wrote
        // `\\"`.
        assert_eq!(
            &*Escape::Gunicorn.unescape(br#"{\"a\":\"x \\"q\\" \\ y\"}"#),
            br#"{"a":"x \"q\" \\ y"}"#.as_slice()
        );
        assert!(Escape::Gunicorn.can_write(br#"x \\"q\\" y"#));
        assert!(!Escape::Gunicorn.can_write(br#"x "q" y"#));
        assert!(!Escape::Gunicorn.can_write(br#""q"#));
    }

    #[test]
    fn gunicorn_latin1_text_is_turned_back_into_the_bytes_sent() {
        // `café` sent as UTF-8, logged as the UTF-8 of its latin-1 reading.
        assert_eq!(
            &*Escape::Gunicorn.unescape("caf\u{c3}\u{a9}".as_bytes()),
            "café".as_bytes()
        );
        // A lone 0xE9 byte was logged as `é`.
        assert_eq!(&*Escape::Gunicorn.unescape("é \\\"".as_bytes()), b"\xe9 \"");
        // Not latin-1 text: kept.
        assert_eq!(&*Escape::Gunicorn.unescape("€".as_bytes()), "€".as_bytes());
        assert_eq!(&*Escape::Gunicorn.unescape(b"\xff"), b"\xff".as_slice());
    }

    #[test]
    fn truncated_escape_is_kept() {
        assert_eq!(&*Escape::Nginx.unescape(br"ab\x4"), br"ab\x4".as_slice());
        assert_eq!(&*Escape::Apache.unescape(br"ab\"), br"ab\".as_slice());
    }
}
