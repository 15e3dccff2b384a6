//! Tail: read log files as lines that know where they lie.
//!
//! [`LineReader`] splits a file into lines with byte offsets; a file's
//! [`FileIdentity`] (device, inode and a fingerprint of its first line) tells
//! files apart across renames and inode reuse, and names the file in every
//! event's `event_id`.

pub mod identity;
pub mod lines;

pub use identity::FileIdentity;
pub use lines::{Line, LineReader};
