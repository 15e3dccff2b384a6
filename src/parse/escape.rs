//! Undo the escaping web servers apply to values inside a log line.
//!
//! nginx (`escape=default`) writes `"`, `\`, control bytes and bytes ≥ 0x7f
//! as `\xHH`. Apache writes `\"`, `\\`, `\n`, `\r`, `\t`, `\b`, `\v` and
//! other unprintable bytes as `\xhh`. gunicorn writes `"` as `\"` and
//! everything else (backslashes, UTF-8) as it is.

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
    pub fn unescape<'a>(self, raw: &'a [u8]) -> Cow<'a, [u8]> {
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
    fn truncated_escape_is_kept() {
        assert_eq!(&*Escape::Nginx.unescape(br"ab\x4"), br"ab\x4".as_slice());
        assert_eq!(&*Escape::Apache.unescape(br"ab\"), br"ab\".as_slice());
    }
}
