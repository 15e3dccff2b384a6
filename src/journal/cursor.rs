//! Journal cursors: what an entry's position is, and the checkpoint file
//! that keeps the last delivered one.
//!
//! A cursor is journald's own text (`s=<seqnum id>;i=<seqnum, hex>;b=<boot
//! id>;m=…;t=…;x=…`); the agent keeps it whole to resume from
//! (`journalctl --after-cursor`) and reads two parts of it: the sequence
//! number and its id, which make an entry's `event_id` (the same however
//! often the entry is read) and tell how many entries a vacuum took.

use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// The parts of a cursor the agent uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    /// The whole text, to resume from.
    pub text: String,
    /// Which sequence the number counts in (one per journal writer).
    pub seqnum_id: String,
    pub seqnum: u64,
}

impl Cursor {
    /// Reads a cursor; `None` if it lacks its `s=` or `i=` part.
    pub fn parse(text: &str) -> Option<Cursor> {
        let mut seqnum_id = None;
        let mut seqnum = None;
        for part in text.split(';') {
            match part.split_once('=') {
                Some(("s", v)) => seqnum_id = Some(v.to_owned()),
                Some(("i", v)) => seqnum = u64::from_str_radix(v, 16).ok(),
                _ => {}
            }
        }
        Some(Cursor {
            text: text.to_owned(),
            seqnum_id: seqnum_id?,
            seqnum: seqnum?,
        })
    }

    /// The sequence id as a number, for `event_id` (its first 16 hex
    /// digits; every entry of one sequence shares it).
    pub fn stream(&self) -> u64 {
        let digits: String = self.seqnum_id.chars().take(16).collect();
        u64::from_str_radix(&digits, 16).unwrap_or(0)
    }
}

/// Where the delivered cursor of one journal selection is kept:
/// `journal-<key>.cursor` in the state folder, written whole and renamed.
#[derive(Debug, Clone)]
pub struct CursorFile {
    path: Option<PathBuf>,
}

/// The longest cursor file read (journald's cursors are about 120 bytes).
const MAX_CURSOR_BYTES: u64 = 4096;

impl CursorFile {
    /// `None`: checkpoints are off (`--no-checkpoints`).
    pub fn new(state_dir: Option<&Path>, key: &str) -> Self {
        let name: String = key
            .chars()
            .map(
                |c| match c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                    true => c,
                    false => '_',
                },
            )
            .collect();
        CursorFile {
            path: state_dir.map(|d| d.join(format!("journal-{name}.cursor"))),
        }
    }

    /// The saved cursor, if any. A file that cannot be read is reported
    /// and counts as none.
    pub fn load(&self) -> Option<Cursor> {
        let path = self.path.as_ref()?;
        let file = match std::fs::File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return None,
            Err(e) => {
                tracing::error!(
                    "{}: cannot read the journal checkpoint: {e}",
                    path.display()
                );
                return None;
            }
        };
        let mut text = String::new();
        let read = io::Read::read_to_string(&mut io::Read::take(file, MAX_CURSOR_BYTES), &mut text);
        let cursor = read.ok().and_then(|_| Cursor::parse(text.trim()));
        if cursor.is_none() {
            tracing::error!(
                "{}: not a journal cursor; reading the journal from now on",
                path.display()
            );
        }
        cursor
    }

    /// Saves `cursor` (written to a temporary file, synced, renamed).
    pub fn save(&self, cursor: &Cursor) -> io::Result<()> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        let dir = path.parent().unwrap_or(Path::new("."));
        let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
        tmp.write_all(cursor.text.as_bytes())?;
        tmp.as_file().sync_all()?;
        tmp.persist(path).map_err(|e| e.error)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_gives_its_sequence_and_number() {
        let c = Cursor::parse(
            "s=e9c97360ebb942a4b6d4a32601fa4343;i=1f;b=3a2b0e6b4a1c4c4e9b0b2d7e8f9a0b1c;m=0;t=6454216075000;x=439dc5c84558988",
        )
        .unwrap();
        assert_eq!(c.seqnum, 31);
        assert_eq!(c.seqnum_id, "e9c97360ebb942a4b6d4a32601fa4343");
        assert_eq!(c.stream(), 0xe9c97360ebb942a4);
        assert!(Cursor::parse("b=1;m=2").is_none());
        assert!(Cursor::parse("s=ab;i=zz").is_none());
    }

    #[test]
    fn the_checkpoint_survives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let file = CursorFile::new(Some(dir.path()), "unit:gunicorn.service");
        assert_eq!(file.load(), None);
        let c = Cursor::parse("s=ab;i=2a;b=cd").unwrap();
        file.save(&c).unwrap();
        assert_eq!(
            CursorFile::new(Some(dir.path()), "unit:gunicorn.service").load(),
            Some(c)
        );
        assert!(
            dir.path()
                .join("journal-unit_gunicorn.service.cursor")
                .exists()
        );
        std::fs::write(
            dir.path().join("journal-unit_gunicorn.service.cursor"),
            "junk",
        )
        .unwrap();
        assert_eq!(file.load(), None);
    }
}
