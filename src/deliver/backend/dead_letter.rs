//! Dead letters: events the backend will not take, kept aside so that
//! nothing waits behind them.
//!
//! When the backend refuses one event alone, again and again, while it
//! takes others (see [`super::outbox`]), the sender writes that event here
//! and acknowledges it, so its file's checkpoint moves on. The file,
//! `dead-letters.jsonl` in the state folder, holds one JSON object a line:
//! `{"time":…,"reason":…,"event":{…}}`, the event without its `api_key`
//! and `token` (a replay puts the token in force then back). It is bounded
//! (`dead_letter_max_bytes`): once full, a refused event stays where it is
//! and delivery waits for the operator, as it would without this file.
//!
//! `cerberus-agent replay-dead-letters` sends the events again: it moves
//! the file aside under a lock ([`DeadLetters::take`]), so that a running
//! agent's new dead letters go to a new file and none is lost or replayed
//! twice.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

/// The dead-letter file's name in the state folder.
pub(crate) const FILE_NAME: &str = "dead-letters.jsonl";
/// Where a replay moves the file while it sends its events.
pub(crate) const REPLAYING_NAME: &str = "dead-letters.replaying.jsonl";
const LOCK_NAME: &str = "dead-letters.lock";

/// The event fields that hold the token: not written to the file.
const SECRET_FIELDS: [&str; 2] = ["api_key", "token"];

/// The dead-letter file of one state folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetters {
    dir: PathBuf,
    max_bytes: u64,
}

/// One dead letter, as read back.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub time: String,
    pub reason: String,
    /// The event, without `api_key` and `token`.
    pub event: Map<String, Value>,
}

impl DeadLetters {
    pub fn new(dir: impl Into<PathBuf>, max_bytes: u64) -> Self {
        DeadLetters {
            dir: dir.into(),
            max_bytes,
        }
    }

    /// The file new dead letters go to.
    pub fn path(&self) -> PathBuf {
        self.dir.join(FILE_NAME)
    }

    /// Appends `event` (an event's JSON) with why it was refused, durably;
    /// writes nothing and fails when the file would pass its bound.
    pub fn write(&self, event: &[u8], reason: &str) -> io::Result<()> {
        let record = record_line(event, reason)?;
        fs::create_dir_all(&self.dir)?;
        let _lock = self.lock()?;
        let path = self.path();
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o640)
            .open(&path)?;
        let len = file.metadata()?.len();
        if len + record.len() as u64 > self.max_bytes {
            return Err(io::Error::other(format!(
                "{} holds {len} bytes and may hold {} (dead_letter_max_bytes): replay or remove it",
                path.display(),
                self.max_bytes
            )));
        }
        file.write_all(&record)?;
        file.sync_data()
    }

    /// Moves the dead letters aside for a replay and returns the files to
    /// replay (one left by a replay that did not finish, then the current
    /// one); new dead letters go to a new file from now on.
    pub fn take(&self) -> io::Result<Vec<PathBuf>> {
        if !self.dir.is_dir() {
            return Ok(Vec::new());
        }
        let _lock = self.lock()?;
        let replaying = self.dir.join(REPLAYING_NAME);
        let current = self.path();
        if current.exists() {
            if replaying.exists() {
                // An unfinished replay: its records come first, then these.
                let mut older = OpenOptions::new().append(true).open(&replaying)?;
                older.write_all(&fs::read(&current)?)?;
                older.sync_data()?;
                fs::remove_file(&current)?;
            } else {
                fs::rename(&current, &replaying)?;
            }
        }
        Ok(if replaying.exists() {
            vec![replaying]
        } else {
            Vec::new()
        })
    }

    /// After a replay of `file`: its first `settled` records were
    /// delivered (or written off again): keeps the rest for the next
    /// replay, or removes the file. Returns how many are kept.
    pub(crate) fn finish_replay(&self, file: &Path, settled: usize) -> io::Result<usize> {
        let _lock = self.lock()?;
        let text = fs::read_to_string(file)?;
        let rest: Vec<&str> = text
            .lines()
            .filter(|l| !l.trim().is_empty())
            .skip(settled)
            .collect();
        if rest.is_empty() {
            fs::remove_file(file)?;
            return Ok(0);
        }
        let mut kept = tempfile::NamedTempFile::new_in(&self.dir)?;
        for line in &rest {
            writeln!(kept, "{line}")?;
        }
        kept.as_file().sync_data()?;
        kept.persist(file).map_err(|e| e.error)?;
        Ok(rest.len())
    }

    /// How many dead letters wait (lines in the file and in an unfinished
    /// replay's).
    pub fn count(&self) -> u64 {
        [self.path(), self.dir.join(REPLAYING_NAME)]
            .iter()
            .filter_map(|p| File::open(p).ok())
            .map(|f| io::BufReader::new(f).lines().count() as u64)
            .sum()
    }

    fn lock(&self) -> io::Result<File> {
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o640)
            .open(self.dir.join(LOCK_NAME))?;
        lock.lock()?;
        Ok(lock)
    }
}

/// The file's line for `event`.
fn record_line(event: &[u8], reason: &str) -> io::Result<Vec<u8>> {
    let mut event: Map<String, Value> = serde_json::from_slice(event)?;
    for field in SECRET_FIELDS {
        event.remove(field);
    }
    let time = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, false);
    let mut line = serde_json::to_vec(&serde_json::json!({
        "time": time,
        "reason": reason,
        "event": event,
    }))?;
    line.push(b'\n');
    Ok(line)
}

/// Reads a dead-letter file; a line that is not a record is an error that
/// names it.
pub fn read(path: &Path) -> io::Result<Vec<Record>> {
    let file = io::BufReader::new(File::open(path)?);
    let mut records = Vec::new();
    for (n, line) in file.lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let bad = |why: String| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}, line {}: {why}", path.display(), n + 1),
            )
        };
        let mut v: Map<String, Value> =
            serde_json::from_str(&line).map_err(|e| bad(e.to_string()))?;
        let text = |v: &mut Map<String, Value>, k: &str| match v.remove(k) {
            Some(Value::String(s)) => s,
            _ => String::new(),
        };
        let time = text(&mut v, "time");
        let reason = text(&mut v, "reason");
        let Some(Value::Object(event)) = v.remove("event") else {
            return Err(bad("no `event` object".into()));
        };
        records.push(Record {
            time,
            reason,
            event,
        });
    }
    Ok(records)
}

/// The event's JSON again, with the token and client id in force now in
/// front, as the event builder writes them.
pub(crate) fn event_with_credentials(
    event: &Map<String, Value>,
    token: Option<&str>,
    client_id: Option<&str>,
) -> Vec<u8> {
    let mut out = Map::new();
    let text = |s: Option<&str>| s.map_or(Value::Null, |s| Value::String(s.to_owned()));
    out.insert("api_key".into(), text(token));
    out.insert(
        "client_id".into(),
        match client_id {
            Some(id) => Value::String(id.to_owned()),
            None => event.get("client_id").cloned().unwrap_or(Value::Null),
        },
    );
    out.insert("token".into(), text(token));
    for (k, v) in event {
        if !out.contains_key(k) {
            out.insert(k.clone(), v.clone());
        }
    }
    serde_json::to_vec(&out).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_keep_the_event_without_the_token_and_are_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let event = br#"{"api_key":"SECRET","client_id":"shop","token":"SECRET","event_id":"e1","endpoint":"/x"}"#;
        let one = record_line(event, "the backend closed the connection")
            .unwrap()
            .len() as u64;
        // Room for two records and a half.
        let letters = DeadLetters::new(dir.path().join("state"), one * 5 / 2);
        letters
            .write(event, "the backend closed the connection")
            .unwrap();
        let text = fs::read_to_string(letters.path()).unwrap();
        assert!(!text.contains("SECRET"), "{text}");
        let records = read(&letters.path()).unwrap();
        assert_eq!(records.len(), 1);
        assert_eq!(records[0].event["event_id"], "e1");
        assert_eq!(records[0].reason, "the backend closed the connection");
        assert_eq!(letters.count(), 1);

        // The third no longer fits: refused, nothing written.
        letters
            .write(event, "the backend closed the connection")
            .unwrap();
        let e = letters
            .write(event, "the backend closed the connection")
            .unwrap_err();
        assert!(e.to_string().contains("dead_letter_max_bytes"), "{e}");
        assert_eq!(read(&letters.path()).unwrap().len(), 2);

        // Credentials in force are put back in front.
        let again = event_with_credentials(&records[0].event, Some("NEW"), None);
        let v: Value = serde_json::from_slice(&again).unwrap();
        assert_eq!(v["api_key"], "NEW");
        assert_eq!(v["token"], "NEW");
        assert_eq!(v["client_id"], "shop");
        assert!(again.starts_with(br#"{"api_key":"NEW","client_id":"shop","token":"NEW","#));
    }

    #[test]
    fn take_moves_the_file_aside_and_joins_an_unfinished_replay() {
        let dir = tempfile::tempdir().unwrap();
        let letters = DeadLetters::new(dir.path(), 1 << 20);
        assert!(letters.take().unwrap().is_empty());
        letters.write(br#"{"event_id":"a"}"#, "r").unwrap();
        let files = letters.take().unwrap();
        assert_eq!(files, vec![dir.path().join(REPLAYING_NAME)]);
        assert!(!letters.path().exists());
        // New dead letters while that replay did not finish.
        letters.write(br#"{"event_id":"b"}"#, "r").unwrap();
        let files = letters.take().unwrap();
        let ids: Vec<_> = read(&files[0])
            .unwrap()
            .into_iter()
            .map(|r| r.event["event_id"].clone())
            .collect();
        assert_eq!(ids, vec!["a", "b"]);
    }
}
