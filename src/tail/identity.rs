//! Which file a path refers to, independent of its name.
//!
//! Rotation renames files and filesystems reuse inodes, so a path is not an
//! identity and neither is an inode. A file is identified by its device and
//! inode plus a fingerprint of its first line (up to [`FINGERPRINT_BYTES`]):
//! a new file that got a deleted file's inode has different content at its
//! start. A file whose first line is not complete yet has no fingerprint.

use std::fs::File;
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt};

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest, Sha256};

/// How much of the first line the fingerprint covers.
pub(crate) const FINGERPRINT_BYTES: usize = 256;

/// A hash of a file's first line (or of its first [`FINGERPRINT_BYTES`]):
/// the same in every copy of the file. Stored as 16 hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Fingerprint(u64);

impl Fingerprint {
    /// The fingerprint of a file starting with `head`, once its first line
    /// is complete (or longer than [`FINGERPRINT_BYTES`]).
    pub(crate) fn of_head(head: &[u8]) -> Option<Fingerprint> {
        let first_line = match memchr::memchr(b'\n', head) {
            Some(i) => &head[..=i],
            None if head.len() >= FINGERPRINT_BYTES => head,
            None => return None,
        };
        Some(Fingerprint(first_u64(&Sha256::digest(first_line))))
    }
}

impl std::fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

impl std::fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Fingerprint({self})")
    }
}

impl Serialize for Fingerprint {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Fingerprint {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        u64::from_str_radix(&text, 16)
            .map(Fingerprint)
            .map_err(|_| serde::de::Error::custom(format!("fingerprint {text:?} is not hex")))
    }
}

/// A file's identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FileIdentity {
    pub device: u64,
    pub inode: u64,
    /// `None` while the file has no complete first line.
    pub fingerprint: Option<Fingerprint>,
}

impl FileIdentity {
    /// Reads the identity of an open file (positioned reads: the file's
    /// read position does not move).
    pub fn of(file: &File) -> io::Result<Self> {
        let meta = file.metadata()?;
        let mut head = [0u8; FINGERPRINT_BYTES];
        let mut filled = 0;
        while filled < head.len() {
            match file.read_at(&mut head[filled..], filled as u64) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(FileIdentity {
            device: meta.dev(),
            inode: meta.ino(),
            fingerprint: Fingerprint::of_head(&head[..filled]),
        })
    }

    /// Whether `other` is the same inode (whatever its content now).
    pub(crate) fn same_inode(&self, other: &FileIdentity) -> bool {
        self.device == other.device && self.inode == other.inode
    }

    /// The number `event_id` carries for lines of this file: a hash of the
    /// fingerprint alone, so that the same line has the same id in every
    /// copy of its file (the live file, the renamed file, the copy that
    /// `copytruncate` leaves), before and after a restart. Two files whose
    /// first lines are byte for byte the same share it; their lines at the
    /// same offset then share an id (README, "The event").
    pub(crate) fn stream_id(&self) -> u64 {
        let mut h = Sha256::new();
        h.update(b"cerberus-agent stream\0");
        h.update(self.fingerprint.map_or(0, |f| f.0).to_le_bytes());
        first_u64(&h.finalize())
    }

    /// A 64-bit number naming this open file among the tailer's files (its
    /// inode too, so two copies of one file are told apart): what
    /// acknowledgements are routed by.
    pub(crate) fn source_id(&self) -> u64 {
        let mut h = Sha256::new();
        h.update(self.device.to_le_bytes());
        h.update(self.inode.to_le_bytes());
        h.update(self.fingerprint.map_or(0, |f| f.0).to_le_bytes());
        first_u64(&h.finalize())
    }
}

/// The first 8 bytes of a digest as a number.
fn first_u64(digest: &[u8]) -> u64 {
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_le_bytes(first)
}
