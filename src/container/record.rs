//! The records container runtimes write around each piece of a program's
//! output, read without copying where the format allows it.
//!
//! - CRI (containerd, CRI-O, podman's `k8s-file`): `<RFC 3339 time>
//!   <stdout|stderr> <tags> <content>`, the tags split on `:`, the first
//!   `P` (the line goes on in the next record) or `F` (full). containerd
//!   cuts lines at 16 KiB.
//! - Docker's `json-file`: `{"log":"…\n","stream":"stdout","time":"…"}`, a
//!   line's pieces (16 KB each) without the trailing `\n` but the last.

use std::borrow::Cow;

use serde::Deserialize;

/// Which of a program's outputs a record holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

/// One record, unwrapped.
#[derive(Debug, PartialEq, Eq)]
pub struct Record<'a> {
    pub stream: Stream,
    /// The line goes on in the stream's next record.
    pub partial: bool,
    /// When the runtime received it, in microseconds since the epoch
    /// (`None` when the time does not read).
    pub time: Option<i64>,
    /// The program's bytes, without the record's newline.
    pub content: Cow<'a, [u8]>,
}

/// A CRI record, or `None` when `line` is not one.
pub fn cri(line: &[u8]) -> Option<Record<'_>> {
    let mut parts = line.splitn(4, |b| *b == b' ');
    let time = parts.next()?;
    let stream = match parts.next()? {
        b"stdout" => Stream::Stdout,
        b"stderr" => Stream::Stderr,
        _ => return None,
    };
    let tags = parts.next()?;
    let partial = match tags.split(|b| *b == b':').next()? {
        b"P" => true,
        b"F" => false,
        _ => return None,
    };
    if !looks_like_rfc3339(time) {
        return None;
    }
    // An empty line may be written without the space before its content.
    let content = parts.next().unwrap_or_default();
    Some(Record {
        stream,
        partial,
        time: micros(time),
        content: Cow::Borrowed(content),
    })
}

/// Docker's `json-file` record as written.
#[derive(Deserialize)]
struct DockerRecord<'a> {
    #[serde(borrow)]
    log: Cow<'a, str>,
    #[serde(borrow)]
    stream: Cow<'a, str>,
    #[serde(borrow, default)]
    time: Option<Cow<'a, str>>,
}

/// A Docker `json-file` record, or `None` when `line` is not one.
pub fn docker(line: &[u8]) -> Option<Record<'_>> {
    if !line.starts_with(b"{") {
        return None;
    }
    let r: DockerRecord<'_> = serde_json::from_slice(line).ok()?;
    let stream = match r.stream.as_ref() {
        "stdout" => Stream::Stdout,
        "stderr" => Stream::Stderr,
        _ => return None,
    };
    let time = r.time.as_deref().and_then(|t| micros(t.as_bytes()));
    let (content, partial) = match r.log {
        Cow::Borrowed(s) => match s.strip_suffix('\n') {
            Some(s) => (Cow::Borrowed(s.as_bytes()), false),
            None => (Cow::Borrowed(s.as_bytes()), true),
        },
        Cow::Owned(mut s) => {
            let partial = !s.ends_with('\n');
            if !partial {
                s.pop();
            }
            (Cow::Owned(s.into_bytes()), partial)
        }
    };
    Some(Record {
        stream,
        partial,
        time,
        content,
    })
}

/// `2026-12-06T23:35:41…`: the shape of an RFC 3339 time, checked before
/// anything is parsed.
fn looks_like_rfc3339(t: &[u8]) -> bool {
    t.len() >= 20
        && t[..4].iter().all(u8::is_ascii_digit)
        && t[4] == b'-'
        && t[7] == b'-'
        && t[10] == b'T'
        && t[13] == b':'
}

/// An RFC 3339 time (`Z` or an offset, any fraction) in microseconds since
/// the epoch.
fn micros(t: &[u8]) -> Option<i64> {
    let t = std::str::from_utf8(t).ok()?;
    chrono::DateTime::parse_from_rfc3339(t)
        .ok()
        .map(|d| d.timestamp_micros())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cri_records_as_containerd_and_cri_o_write_them() {
        let r = cri(b"2026-12-06T23:35:41.123456789Z stdout F GET / 200").expect("a record");
        assert_eq!(r.stream, Stream::Stdout);
        assert!(!r.partial);
        assert_eq!(r.content.as_ref(), b"GET / 200");
        assert_eq!(r.time, Some(1_796_600_141_123_456));
        let r = cri(b"2026-12-07T00:35:41.5+01:00 stderr P:x half").expect("a record");
        assert_eq!(r.stream, Stream::Stderr);
        assert!(r.partial);
        assert_eq!(r.time, Some(1_796_600_141_500_000), "the offset is applied");
        assert_eq!(r.content.as_ref(), b"half");
        // Content keeps its own spaces; an empty line may lack its space.
        let r = cri(b"2026-12-06T23:35:41Z stdout F  two  spaces ").expect("a record");
        assert_eq!(r.content.as_ref(), b" two  spaces ");
        let r = cri(b"2026-12-06T23:35:41Z stdout F").expect("a record");
        assert_eq!(r.content.as_ref(), b"");
    }

    #[test]
    fn lines_that_are_not_cri_records() {
        for line in [
            &b"127.0.0.1 - - [06/Dec/2026:23:35:41 +0000] \"GET / HTTP/1.1\" 200 5"[..],
            b"2026-12-06T23:35:41Z stdin F x",
            b"2026-12-06T23:35:41Z stdout X x",
            b"2026-12-06 23:35:41 stdout F x",
            b"",
        ] {
            assert_eq!(cri(line), None, "{}", String::from_utf8_lossy(line));
        }
    }

    #[test]
    fn docker_records_with_their_pieces() {
        let r = docker(
            br#"{"log":"GET / 200\n","stream":"stdout","time":"2026-12-06T23:35:41.123456789Z"}"#,
        )
        .expect("a record");
        assert!(!r.partial);
        assert_eq!(r.content.as_ref(), b"GET / 200");
        assert_eq!(r.time, Some(1_796_600_141_123_456));
        let r =
            docker(br#"{"log":"first \"piece","stream":"stderr","time":"2026-12-06T23:35:41Z"}"#)
                .expect("a record");
        assert!(r.partial, "no newline: the line goes on");
        assert_eq!(r.stream, Stream::Stderr);
        assert_eq!(r.content.as_ref(), b"first \"piece");
        assert_eq!(docker(br#"{"log":"x\n"}"#), None, "no stream");
        assert_eq!(docker(b"{not json"), None);
    }
}
