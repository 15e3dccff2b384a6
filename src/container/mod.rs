//! Container: the logs container runtimes write, unwrapped into the
//! program's own lines.
//!
//! A container's output reaches the node as a file of records, each
//! holding a piece of one output stream with the runtime's time (the
//! formats are in [`record`]). The tailer reads records as lines; an
//! [`Unwrapper`] per file turns them back into the program's lines:
//! it keeps the streams asked for, joins a line's pieces (bounded by the
//! longest line kept), and gives each line the runtime's time. A line's
//! position stays in file terms: it starts where its first record starts
//! and ends where its last ends, so acknowledging it acknowledges all its
//! records, and checkpoints never fall inside it. What the file's path
//! says of the container ([`metadata`]) goes into each event.
//!
//! The wrapper is set per log, or decided from a file's first record
//! (`auto`), as formats are.

pub mod metadata;
pub mod record;

use std::borrow::Cow;

pub use metadata::ContainerMeta;
pub use record::{Record, Stream};

use crate::source::Line;

/// The records a log's lines are wrapped in (setting `wrapper`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Wrapper {
    /// Decided from each file's first record.
    #[default]
    Auto,
    Cri,
    Docker,
    /// The lines are the program's own.
    None,
}

/// Which of a container's outputs are read (setting `streams`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Streams {
    /// Standard output only: where servers write their access logs.
    #[default]
    Stdout,
    Stderr,
    Both,
}

impl Streams {
    fn takes(self, s: Stream) -> bool {
        matches!(
            (self, s),
            (Streams::Both, _)
                | (Streams::Stdout, Stream::Stdout)
                | (Streams::Stderr, Stream::Stderr)
        )
    }
}

/// How one log's files are unwrapped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Unwrapping {
    pub wrapper: Wrapper,
    pub streams: Streams,
}

/// The record format a file turned out to be in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Plain,
    Cri,
    Docker,
}

/// A line whose records were not all read yet.
#[derive(Debug, Clone)]
struct Held {
    start: u64,
    number: u64,
    time: Option<i64>,
    bytes: Vec<u8>,
    truncated: bool,
}

/// What a record gave.
#[derive(Debug)]
pub enum Step<'a> {
    /// A whole line.
    Line(Line<'a>),
    /// A piece of a line that goes on in a later record.
    Held,
    /// A record of a stream not read: nothing to hand on.
    Skipped,
}

/// A line held at a file's end, handed on as it is.
#[derive(Debug)]
pub struct Leftover {
    pub bytes: Vec<u8>,
    pub start: u64,
    pub number: u64,
    pub time: Option<i64>,
    pub truncated: bool,
}

/// Turns one file's records into the program's lines.
#[derive(Debug, Clone)]
pub struct Unwrapper {
    /// `None` until decided (`auto` before the first record).
    kind: Option<Kind>,
    streams: Streams,
    max_line: usize,
    /// Per stream (stdout, stderr), the line being joined.
    held: [Option<Held>; 2],
    /// A joined or unescaped line, as handed out.
    line: Vec<u8>,
}

impl Unwrapper {
    pub fn new(how: Unwrapping, max_line: usize) -> Self {
        Unwrapper {
            kind: match how.wrapper {
                Wrapper::Auto => None,
                Wrapper::Cri => Some(Kind::Cri),
                Wrapper::Docker => Some(Kind::Docker),
                Wrapper::None => Some(Kind::Plain),
            },
            streams: how.streams,
            max_line,
            held: [None, None],
            line: Vec::new(),
        }
    }

    /// The settings, with the decision made so far (`auto` while none).
    pub fn settings(&self) -> Unwrapping {
        Unwrapping {
            wrapper: match self.kind {
                None => Wrapper::Auto,
                Some(Kind::Cri) => Wrapper::Cri,
                Some(Kind::Docker) => Wrapper::Docker,
                Some(Kind::Plain) => Wrapper::None,
            },
            streams: self.streams,
        }
    }

    /// Decides what the file's records are from its first non-empty one
    /// (`auto`); nothing once decided.
    pub fn decide(&mut self, record: &[u8]) {
        if self.kind.is_some() || record.is_empty() {
            return;
        }
        self.kind = Some(if record::cri(record).is_some() {
            Kind::Cri
        } else if record::docker(record).is_some() {
            Kind::Docker
        } else {
            Kind::Plain
        });
    }

    /// What the file's records are, once decided.
    pub fn kind(&self) -> Option<Kind> {
        self.kind
    }

    /// Where the oldest line still being joined starts: no checkpoint may
    /// pass it.
    pub fn held_from(&self) -> Option<u64> {
        self.held.iter().flatten().map(|h| h.start).min()
    }

    /// Bytes held in lines being joined.
    pub fn held_bytes(&self) -> usize {
        self.held.iter().flatten().map(|h| h.bytes.len()).sum()
    }

    /// Unwraps one record read from the file. A line that is not a record
    /// in a wrapped file goes on as it is (the pipeline counts it as a
    /// line it could not read).
    pub fn record<'a>(&'a mut self, line: Line<'a>) -> Step<'a> {
        self.decide(line.bytes);
        let Some(kind) = self.kind else {
            return Step::Line(line);
        };
        let rec = match kind {
            Kind::Plain => return Step::Line(line),
            Kind::Cri => record::cri(line.bytes),
            Kind::Docker => record::docker(line.bytes),
        };
        let Some(rec) = rec else {
            return Step::Line(line);
        };
        if !self.streams.takes(rec.stream) {
            return Step::Skipped;
        }
        let slot = &mut self.held[rec.stream as usize];
        if rec.partial {
            let held = slot.get_or_insert_with(|| Held {
                start: line.offset,
                number: line.number,
                time: rec.time,
                bytes: Vec::new(),
                truncated: false,
            });
            held.truncated |=
                line.truncated | append_within(&mut held.bytes, &rec.content, self.max_line);
            return Step::Held;
        }
        match (slot.take(), rec.content) {
            (Some(mut held), content) => {
                let cut = append_within(&mut held.bytes, &content, self.max_line);
                self.line = held.bytes;
                Step::Line(Line {
                    bytes: &self.line,
                    offset: held.start,
                    end: line.end,
                    number: held.number,
                    truncated: held.truncated | cut | line.truncated,
                    fresh: line.fresh,
                    time: held.time,
                })
            }
            (None, Cow::Borrowed(content)) => Step::Line(Line {
                bytes: content,
                time: rec.time,
                ..line
            }),
            (None, Cow::Owned(content)) => {
                self.line = content;
                Step::Line(Line {
                    bytes: &self.line,
                    time: rec.time,
                    ..line
                })
            }
        }
    }

    /// The lines still being joined when their file ended (its runtime
    /// never wrote their last piece): handed on as they are.
    pub fn take_held(&mut self) -> Vec<Leftover> {
        let mut out: Vec<Leftover> = self
            .held
            .iter_mut()
            .filter_map(Option::take)
            .map(|h| Leftover {
                bytes: h.bytes,
                start: h.start,
                number: h.number,
                time: h.time,
                truncated: h.truncated,
            })
            .collect();
        out.sort_by_key(|l| l.start);
        out
    }

    /// The program's lines in `records` (a file's first records, for
    /// format detection), as this file's records are read.
    pub fn lines_of(how: Unwrapping, max_line: usize, records: &[Vec<u8>]) -> Vec<Vec<u8>> {
        let mut u = Unwrapper::new(how, max_line);
        let mut out = Vec::new();
        for r in records {
            let line = Line {
                bytes: r,
                offset: 0,
                end: 0,
                number: 0,
                truncated: false,
                fresh: false,
                time: None,
            };
            if let Step::Line(l) = u.record(line) {
                out.push(l.bytes.to_vec());
            }
        }
        out
    }
}

/// Appends `more` to `bytes` within `max` bytes; true when some was cut.
fn append_within(bytes: &mut Vec<u8>, more: &[u8], max: usize) -> bool {
    let room = max.saturating_sub(bytes.len());
    let take = more.len().min(room);
    bytes.extend_from_slice(&more[..take]);
    take < more.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(bytes: &[u8], offset: u64) -> Line<'_> {
        Line {
            bytes,
            offset,
            end: offset + bytes.len() as u64 + 1,
            number: 1,
            truncated: false,
            fresh: true,
            time: None,
        }
    }

    /// Feeds records laid end to end; the lines that came out, with their
    /// (offset, end).
    fn run(u: &mut Unwrapper, records: &[&[u8]]) -> Vec<(String, u64, u64)> {
        let mut at = 0;
        let mut out = Vec::new();
        for r in records {
            if let Step::Line(l) = u.record(rec(r, at)) {
                out.push((
                    String::from_utf8_lossy(l.bytes).into_owned(),
                    l.offset,
                    l.end,
                ));
            }
            at += r.len() as u64 + 1;
        }
        out
    }

    const T: &str = "2026-12-06T23:35:41.000000001Z";

    #[test]
    fn pieces_join_per_stream_and_span_their_records() {
        let mut u = Unwrapper::new(
            Unwrapping {
                wrapper: Wrapper::Auto,
                streams: Streams::Both,
            },
            1024,
        );
        let r1 = format!("{T} stdout P GET /lo");
        let r2 = format!("{T} stderr F warning");
        let r3 = format!("{T} stdout F ng 200");
        let lines = run(&mut u, &[r1.as_bytes(), r2.as_bytes(), r3.as_bytes()]);
        assert_eq!(u.kind(), Some(Kind::Cri));
        let end3 = (r1.len() + r2.len() + r3.len() + 3) as u64;
        assert_eq!(
            lines,
            vec![
                (
                    "warning".to_owned(),
                    r1.len() as u64 + 1,
                    (r1.len() + r2.len() + 2) as u64
                ),
                ("GET /long 200".to_owned(), 0, end3),
            ]
        );
        assert_eq!(u.held_from(), None);
    }

    #[test]
    fn only_the_streams_asked_for_and_held_lines_hold_the_checkpoint() {
        let mut u = Unwrapper::new(Unwrapping::default(), 1024);
        let r1 = format!("{T} stderr F noise");
        let r2 = format!("{T} stdout P part");
        let lines = run(&mut u, &[r1.as_bytes(), r2.as_bytes()]);
        assert!(lines.is_empty(), "{lines:?}");
        assert_eq!(u.held_from(), Some(r1.len() as u64 + 1));
        let left = u.take_held();
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].bytes, b"part");
    }

    #[test]
    fn a_joined_line_is_bounded() {
        let mut u = Unwrapper::new(Unwrapping::default(), 10);
        let r1 = format!("{T} stdout P 0123456");
        let r2 = format!("{T} stdout F 789abc");
        let mut at = 0;
        assert!(matches!(u.record(rec(r1.as_bytes(), at)), Step::Held));
        at += r1.len() as u64 + 1;
        let Step::Line(l) = u.record(rec(r2.as_bytes(), at)) else {
            panic!("a line")
        };
        assert_eq!(l.bytes, b"0123456789");
        assert!(l.truncated);
    }

    #[test]
    fn docker_lines_and_plain_files() {
        let mut u = Unwrapper::new(Unwrapping::default(), 1024);
        let lines = run(
            &mut u,
            &[
                br#"{"log":"GET / \"q\" ","stream":"stdout","time":"2026-12-06T23:35:41Z"}"#,
                br#"{"log":"200\n","stream":"stdout","time":"2026-12-06T23:35:41Z"}"#,
            ],
        );
        assert_eq!(u.kind(), Some(Kind::Docker));
        assert_eq!(lines[0].0, "GET / \"q\" 200");
        let mut plain = Unwrapper::new(Unwrapping::default(), 1024);
        let lines = run(&mut plain, &[b"127.0.0.1 - - [x] \"GET / HTTP/1.1\" 200 5"]);
        assert_eq!(plain.kind(), Some(Kind::Plain));
        assert_eq!(lines.len(), 1);
    }
}
