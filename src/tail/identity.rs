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

use sha2::{Digest, Sha256};

/// How much of the first line the fingerprint covers.
pub const FINGERPRINT_BYTES: usize = 256;

/// A file's identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FileIdentity {
    pub device: u64,
    pub inode: u64,
    /// Hash of the first line (or its first 256 bytes); `None` while the
    /// file has no complete first line.
    pub fingerprint: Option<u64>,
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
            fingerprint: fingerprint(&head[..filled]),
        })
    }

    /// The number `event_id` carries for lines of this file: a hash of the
    /// fingerprint alone, so that the same line has the same id in every
    /// copy of its file (the live file, the renamed file, the copy that
    /// `copytruncate` leaves), before and after a restart. Two files whose
    /// first lines are byte for byte the same share it; their lines at the
    /// same offset then share an id (README, "The event").
    pub fn stream_id(&self) -> u64 {
        let mut h = Sha256::new();
        h.update(b"cerberus-agent stream\0");
        h.update(self.fingerprint.unwrap_or(0).to_le_bytes());
        first_u64(&h.finalize())
    }

    /// A 64-bit number naming this open file among the tailer's files (its
    /// inode too, so two copies of one file are told apart): what
    /// acknowledgements are routed by.
    pub fn source_id(&self) -> u64 {
        let mut h = Sha256::new();
        h.update(self.device.to_le_bytes());
        h.update(self.inode.to_le_bytes());
        h.update(self.fingerprint.unwrap_or(0).to_le_bytes());
        first_u64(&h.finalize())
    }
}

/// The fingerprint of a file starting with `head`: the hash of its first
/// line, or of its first [`FINGERPRINT_BYTES`] when that line is longer.
pub fn fingerprint(head: &[u8]) -> Option<u64> {
    let first_line = match memchr::memchr(b'\n', head) {
        Some(i) => &head[..=i],
        None if head.len() >= FINGERPRINT_BYTES => head,
        None => return None,
    };
    Some(first_u64(&Sha256::digest(first_line)))
}

/// The first 8 bytes of a digest as a number.
fn first_u64(digest: &[u8]) -> u64 {
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_le_bytes(first)
}
