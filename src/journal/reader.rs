//! The `journalctl` subprocess and the thread that reads it.
//!
//! `journalctl --output=json --follow` prints one JSON object an entry;
//! the thread parses each (bounded: an entry longer than the limit is
//! skipped and counted), keeps the fields the agent uses, and hands it to
//! the journal source through a bounded channel. A full channel blocks the
//! thread, which stops reading the pipe, which stops journalctl: the
//! journal itself is the buffer, nothing is dropped. Each entry wakes the
//! agent's loop; the loop never waits on the subprocess.

use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::JoinHandle;

use serde::Deserialize;

use crate::wake::{Wake, Waker};

/// Entries read ahead of the agent's loop, at most.
const CHANNEL_ENTRIES: usize = 4096;

/// What journalctl is asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    /// The program (`journalctl`, found on `PATH`).
    pub program: PathBuf,
    /// `--directory`: a journal that is not the system's.
    pub directory: Option<PathBuf>,
    /// Matches, ORed: `FIELD=value`.
    pub matches: Vec<String>,
    /// Where to start.
    pub start: Start,
}

/// Where a read starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Start {
    /// Just after this cursor.
    After(String),
    /// At this cursor (the entry itself first, if the journal holds it).
    At(String),
    /// At the oldest entry.
    Beginning,
    /// With the entries written from now on.
    Now,
}

impl Query {
    /// The command, following (`--follow`) or not.
    pub fn command(&self, follow: bool) -> Command {
        let mut c = Command::new(&self.program);
        c.arg("--output=json").arg("--no-pager").arg("--quiet");
        c.arg("--output-fields=MESSAGE,_SYSTEMD_UNIT,SYSLOG_IDENTIFIER");
        if follow {
            c.arg("--follow");
        }
        if let Some(d) = &self.directory {
            c.arg("--directory").arg(d);
        }
        match &self.start {
            Start::After(cursor) => {
                c.arg(format!("--after-cursor={cursor}"));
            }
            Start::At(cursor) => {
                c.arg(format!("--cursor={cursor}"));
            }
            Start::Beginning => {
                c.arg("--lines=all");
            }
            Start::Now => {
                c.arg("--lines=0");
            }
        }
        for (i, m) in self.matches.iter().enumerate() {
            if i > 0 {
                c.arg("+");
            }
            c.arg(m);
        }
        c.stdin(Stdio::null());
        c
    }
}

/// One entry, as the agent uses it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub cursor: String,
    /// `__REALTIME_TIMESTAMP`, microseconds since the epoch.
    pub time: Option<i64>,
    pub unit: Option<String>,
    pub identifier: Option<String>,
    pub message: Vec<u8>,
}

/// What the reading thread hands over.
#[derive(Debug)]
pub enum Received {
    Entry(Entry),
    /// An entry that could not be read (too long, not JSON): skipped.
    Skipped(String),
    /// journalctl ended (with what it said on stderr, shortened).
    Ended(String),
}

/// journalctl's JSON for one entry. A field whose value is not valid
/// UTF-8 comes as an array of bytes; a field that repeats, as an array of
/// values (the first is taken).
#[derive(Deserialize)]
struct Raw {
    #[serde(rename = "__CURSOR")]
    cursor: String,
    #[serde(rename = "__REALTIME_TIMESTAMP")]
    realtime: Option<String>,
    #[serde(rename = "_SYSTEMD_UNIT")]
    unit: Option<serde_json::Value>,
    #[serde(rename = "SYSLOG_IDENTIFIER")]
    identifier: Option<serde_json::Value>,
    #[serde(rename = "MESSAGE")]
    message: Option<serde_json::Value>,
}

/// A field's bytes: a string, an array of bytes, or the first of an
/// array of values.
fn bytes_of(v: &serde_json::Value) -> Option<Vec<u8>> {
    match v {
        serde_json::Value::String(s) => Some(s.as_bytes().to_vec()),
        serde_json::Value::Array(items) if items.iter().all(|i| i.is_u64()) => Some(
            items
                .iter()
                .filter_map(|i| i.as_u64())
                .map(|b| b as u8)
                .collect(),
        ),
        serde_json::Value::Array(items) => items.first().and_then(bytes_of),
        _ => None,
    }
}

fn text_of(v: &Option<serde_json::Value>) -> Option<String> {
    v.as_ref()
        .and_then(bytes_of)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
}

/// Reads one journalctl JSON line.
pub fn parse(line: &[u8]) -> Result<Entry, String> {
    let raw: Raw = serde_json::from_slice(line).map_err(|e| format!("not an entry: {e}"))?;
    Ok(Entry {
        time: raw.realtime.as_deref().and_then(|t| t.parse().ok()),
        unit: text_of(&raw.unit),
        identifier: text_of(&raw.identifier),
        message: raw.message.as_ref().and_then(bytes_of).unwrap_or_default(),
        cursor: raw.cursor,
    })
}

/// A running journalctl and the thread reading it.
pub struct Reader {
    child: Child,
    thread: Option<JoinHandle<()>>,
    pub entries: Receiver<Received>,
}

impl std::fmt::Debug for Reader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reader")
            .field("pid", &self.child.id())
            .finish_non_exhaustive()
    }
}

impl Reader {
    /// Starts journalctl for `query` (following, or to the journal's end);
    /// every entry wakes `waker`. Entries longer than `max_entry` bytes of
    /// JSON are skipped.
    pub fn spawn(
        query: &Query,
        follow: bool,
        waker: Waker,
        max_entry: usize,
    ) -> std::io::Result<Reader> {
        let mut child = query
            .command(follow)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| std::io::Error::other("journalctl has no standard output"))?;
        let stderr = child.stderr.take();
        let (tx, entries) = sync_channel(CHANNEL_ENTRIES);
        let thread = std::thread::Builder::new()
            .name("journal".into())
            .spawn(move || read_entries(stdout, stderr, tx, waker, max_entry))?;
        Ok(Reader {
            child,
            thread: Some(thread),
            entries,
        })
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(t) = self.thread.take() {
            // The pipe is closed with the child: the thread ends. A thread
            // blocked on a full channel ends when the receiver (ours) goes.
            drop(std::mem::replace(&mut self.entries, sync_channel(1).1));
            let _ = t.join();
        }
    }
}

fn read_entries(
    stdout: impl Read,
    stderr: Option<impl Read>,
    tx: SyncSender<Received>,
    waker: Waker,
    max_entry: usize,
) {
    let mut reader = BufReader::with_capacity(64 * 1024, stdout);
    let mut line = Vec::new();
    loop {
        line.clear();
        match read_bounded(&mut reader, &mut line, max_entry) {
            Ok(None) => break,
            Ok(Some(true)) => {
                let read = match parse(&line) {
                    Ok(e) => Received::Entry(e),
                    Err(why) => Received::Skipped(why),
                };
                if tx.send(read).is_err() {
                    return;
                }
            }
            Ok(Some(false)) => {
                let why = format!("an entry longer than {max_entry} bytes of JSON");
                if tx.send(Received::Skipped(why)).is_err() {
                    return;
                }
            }
            Err(_) => break,
        }
        waker.wake(Wake::Data);
    }
    let mut said = String::new();
    if let Some(e) = stderr {
        let _ = e.take(4096).read_to_string(&mut said);
    }
    let _ = tx.send(Received::Ended(said.trim().to_owned()));
    waker.wake(Wake::Data);
}

/// Reads one line into `line`, at most `max` bytes of it kept: `Ok(None)`
/// at the end, `Some(true)` for a whole line, `Some(false)` for one that
/// was longer (its rest is skipped).
fn read_bounded(
    reader: &mut impl BufRead,
    line: &mut Vec<u8>,
    max: usize,
) -> std::io::Result<Option<bool>> {
    let mut whole = true;
    let mut any = false;
    loop {
        let buf = reader.fill_buf()?;
        if buf.is_empty() {
            return Ok(any.then_some(whole));
        }
        any = true;
        let (chunk, done) = match memchr::memchr(b'\n', buf) {
            Some(i) => (&buf[..i], i + 1),
            None => (buf, buf.len()),
        };
        let newline = done > chunk.len();
        if whole && line.len() + chunk.len() <= max {
            line.extend_from_slice(chunk);
        } else {
            whole = false;
            line.clear();
        }
        reader.consume(done);
        if newline {
            return Ok(Some(whole));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_is_read_whatever_the_encoding_of_its_fields() {
        let e = parse(br#"{"__CURSOR":"s=a;i=1","__REALTIME_TIMESTAMP":"1765000000000000","_SYSTEMD_UNIT":"gunicorn.service","MESSAGE":[71,69,84,32,255]}"#).unwrap();
        assert_eq!(e.message, b"GET \xff");
        assert_eq!(e.unit.as_deref(), Some("gunicorn.service"));
        assert_eq!(e.time, Some(1_765_000_000_000_000));
        let e =
            parse(br#"{"__CURSOR":"c","MESSAGE":["first","second"],"SYSLOG_IDENTIFIER":"nginx"}"#)
                .unwrap();
        assert_eq!(e.message, b"first");
        assert_eq!(e.identifier.as_deref(), Some("nginx"));
        assert!(parse(b"{}").is_err());
    }

    #[test]
    fn a_line_past_the_limit_is_skipped_and_the_next_read() {
        let text = format!("{}\nshort\n", "x".repeat(100));
        let mut r = BufReader::with_capacity(8, text.as_bytes());
        let mut line = Vec::new();
        assert_eq!(read_bounded(&mut r, &mut line, 10).unwrap(), Some(false));
        line.clear();
        assert_eq!(read_bounded(&mut r, &mut line, 10).unwrap(), Some(true));
        assert_eq!(line, b"short");
        line.clear();
        assert_eq!(read_bounded(&mut r, &mut line, 10).unwrap(), None);
    }

    #[test]
    fn the_query_names_its_start_and_its_matches() {
        let q = Query {
            program: "journalctl".into(),
            directory: Some("/srv/journal".into()),
            matches: vec![
                "_SYSTEMD_UNIT=a.service".into(),
                "SYSLOG_IDENTIFIER=nginx".into(),
            ],
            start: Start::After("s=1;i=2".into()),
        };
        let c = q.command(true);
        let args: Vec<String> = c
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert!(args.contains(&"--follow".to_owned()));
        assert!(args.contains(&"--after-cursor=s=1;i=2".to_owned()));
        let tail = &args[args.len() - 3..];
        assert_eq!(
            tail,
            ["_SYSTEMD_UNIT=a.service", "+", "SYSLOG_IDENTIFIER=nginx"]
        );
    }
}
