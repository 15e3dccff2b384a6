//! Split a byte stream into lines, remembering where each one lies.
//!
//! Hand-written because it is the hot path and because no line-reading crate
//! reports byte offsets (which checkpoints need) together with a bound on
//! line length: the buffer is read in large blocks and split with `memchr`,
//! lines are handed out as slices of it, and a line longer than the limit is
//! cut at the limit (the cut part is handed out marked `truncated`, the rest
//! up to its newline is skipped) so memory never grows with the input.

use std::io::{self, Read};

pub use crate::source::Line;

/// How much is read from the file at a time, at most; the buffer's size
/// until a line longer than this needs more.
pub(crate) const READ_BLOCK: usize = 256 * 1024;

/// The buffer a reader starts with: it doubles up to [`READ_BLOCK`] while
/// reads fill it, so a busy log reads in large blocks and each of hundreds
/// of quiet ones holds little memory.
pub(crate) const FIRST_BLOCK: usize = 16 * 1024;

/// Longest line kept whole by default.
pub(crate) const DEFAULT_MAX_LINE: usize = 64 * 1024;

/// The largest `max_line_bytes` accepted: a buffer per open file may grow
/// to this.
pub(crate) const MAX_LINE_LIMIT: usize = 16 * 1024 * 1024;

/// Reads a file from its start at positions (`pread`), up to a limit,
/// leaving the file's own position where another reader has it.
#[derive(Debug)]
pub(crate) struct ReadAt<'a> {
    file: &'a std::fs::File,
    at: u64,
    limit: u64,
}

impl<'a> ReadAt<'a> {
    pub fn new(file: &'a std::fs::File, limit: u64) -> Self {
        ReadAt { file, at: 0, limit }
    }
}

impl Read for ReadAt<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        use std::os::unix::fs::FileExt;
        let room = usize::try_from(self.limit.saturating_sub(self.at)).unwrap_or(usize::MAX);
        let want = buf.len().min(room);
        if want == 0 {
            return Ok(0);
        }
        let n = self.file.read_at(&mut buf[..want], self.at)?;
        self.at += n as u64;
        Ok(n)
    }
}

/// Reads lines from `R` with byte offsets and a length limit.
#[derive(Debug)]
pub(crate) struct LineReader<R> {
    inner: R,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    /// How far past `start` we already know there is no newline.
    scanned: usize,
    /// File offset of `buf[start]`.
    offset: u64,
    max_line: usize,
    /// Discarding the rest of a line that was cut.
    skipping: bool,
    number: u64,
    /// A read happened since the last line was handed out.
    fresh: bool,
}

impl<R: Read> LineReader<R> {
    /// A reader whose first byte is at file offset `offset`.
    pub fn new(inner: R, offset: u64, max_line: usize) -> Self {
        let max_line = max_line.clamp(1, MAX_LINE_LIMIT);
        LineReader {
            inner,
            // Grown in `fill` while reads fill it (up to READ_BLOCK), and
            // when a line needs more (up to `max_line + 1`).
            buf: vec![0; FIRST_BLOCK],
            start: 0,
            end: 0,
            scanned: 0,
            offset,
            max_line,
            skipping: false,
            number: 0,
            fresh: false,
        }
    }

    /// The file offset up to which everything has been handed out or
    /// skipped; a partial line held in the buffer starts here.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Bytes held that do not yet end in a newline.
    pub(crate) fn pending(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    /// The next complete line, or `None` when the input has no further
    /// complete line for now (a partial line stays held).
    pub(crate) fn next_line(&mut self) -> io::Result<Option<Line<'_>>> {
        loop {
            let window = &self.buf[self.start + self.scanned..self.end];
            if let Some(i) = memchr::memchr(b'\n', window) {
                let nl = self.start + self.scanned + i;
                let line_start = self.start;
                let line_offset = self.offset;
                let consumed = (nl + 1 - line_start) as u64;
                self.start = nl + 1;
                self.scanned = 0;
                self.offset += consumed;
                if self.skipping {
                    self.skipping = false;
                    continue;
                }
                self.number += 1;
                let mut bytes = &self.buf[line_start..nl];
                if let Some(stripped) = bytes.strip_suffix(b"\r") {
                    bytes = stripped;
                }
                let truncated = bytes.len() > self.max_line;
                if truncated {
                    bytes = &bytes[..self.max_line];
                }
                return Ok(Some(Line {
                    bytes,
                    offset: line_offset,
                    end: self.offset,
                    number: self.number,
                    truncated,
                    fresh: std::mem::take(&mut self.fresh),
                    time: None,
                }));
            }
            let held = self.end - self.start;
            if self.skipping {
                self.offset += held as u64;
                self.start = self.end;
                self.scanned = 0;
            } else if held >= self.max_line {
                return Ok(Some(self.cut_line()));
            } else {
                self.scanned = held;
            }
            if self.fill()? == 0 {
                return Ok(None);
            }
        }
    }

    /// Hands out the held partial line (at the end of a `--once` run, or of
    /// a rotated file that will not grow again).
    pub(crate) fn take_partial(&mut self) -> Option<Line<'_>> {
        if self.start == self.end || self.skipping {
            if self.skipping {
                self.offset += (self.end - self.start) as u64;
                self.start = self.end;
                self.skipping = false;
            }
            return None;
        }
        let line_start = self.start;
        let line_offset = self.offset;
        self.offset += (self.end - self.start) as u64;
        self.start = self.end;
        self.scanned = 0;
        self.number += 1;
        Some(Line {
            bytes: &self.buf[line_start..self.end],
            offset: line_offset,
            end: self.offset,
            number: self.number,
            truncated: false,
            fresh: std::mem::take(&mut self.fresh),
            time: None,
        })
    }

    fn cut_line(&mut self) -> Line<'_> {
        let line_start = self.start;
        let line_offset = self.offset;
        let held = self.end - self.start;
        // Everything held belongs to the over-long line: hand out the first
        // max_line bytes and drop the rest up to the next newline.
        self.offset += held as u64;
        self.start = self.end;
        self.scanned = 0;
        self.skipping = true;
        self.number += 1;
        Line {
            bytes: &self.buf[line_start..line_start + self.max_line],
            offset: line_offset,
            end: self.offset,
            number: self.number,
            truncated: true,
            fresh: std::mem::take(&mut self.fresh),
            time: None,
        }
    }

    /// Reads more input behind what is held. Returns bytes read.
    fn fill(&mut self) -> io::Result<usize> {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        } else if self.end == self.buf.len() {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
            if self.end == self.buf.len() {
                // One line fills the buffer and is shorter than max_line
                // (`next_line` cuts it otherwise): make room for more of it.
                let grown = (self.buf.len() * 2)
                    .min(self.max_line + 1)
                    .max(self.end + 1);
                self.buf.resize(grown, 0);
            }
        }
        loop {
            match self.inner.read(&mut self.buf[self.end..]) {
                Ok(n) => {
                    self.end += n;
                    self.fresh |= n > 0;
                    if self.end == self.buf.len() && self.buf.len() < READ_BLOCK {
                        // A busy file: read it in larger blocks.
                        let grown = (self.buf.len() * 2).min(READ_BLOCK);
                        self.buf.resize(grown, 0);
                    }
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_buffer_grows_with_long_lines_not_with_the_limit() {
        let long = vec![b'a'; 3 * READ_BLOCK];
        let mut input = long.clone();
        input.extend_from_slice(b"\nshort\n");
        let mut r = LineReader::new(&input[..], 0, MAX_LINE_LIMIT);
        assert!(
            r.buf.len() <= READ_BLOCK,
            "nothing large is allocated up front"
        );
        let first = r.next_line().unwrap().unwrap();
        assert_eq!(
            first.bytes,
            &long[..],
            "a line longer than a read block stays whole"
        );
        assert!(!first.truncated);
        assert_eq!(r.next_line().unwrap().unwrap().bytes, b"short");

        let r = LineReader::new(&b""[..], 0, usize::MAX);
        assert_eq!(r.max_line, MAX_LINE_LIMIT, "the limit is bounded");
    }

    fn collect(input: &[u8], max: usize) -> Vec<(Vec<u8>, u64, u64, bool)> {
        let mut r = LineReader::new(input, 0, max);
        let mut out = Vec::new();
        while let Some(l) = r.next_line().unwrap() {
            out.push((l.bytes.to_vec(), l.offset, l.end, l.truncated));
        }
        if let Some(l) = r.take_partial() {
            out.push((l.bytes.to_vec(), l.offset, l.end, l.truncated));
        }
        out
    }

    #[test]
    fn offsets_cover_every_byte() {
        let got = collect(b"ab\r\nc\n\nlast", 100);
        assert_eq!(
            got,
            vec![
                (b"ab".to_vec(), 0, 4, false),
                (b"c".to_vec(), 4, 6, false),
                (b"".to_vec(), 6, 7, false),
                (b"last".to_vec(), 7, 11, false),
            ]
        );
    }

    #[test]
    fn a_long_line_inside_one_block_is_cut_too() {
        let mut input = vec![b'x'; 5000];
        input.extend_from_slice(b"\nok\n");
        let got = collect(&input, 1000);
        assert_eq!(got[0].0.len(), 1000);
        assert!(got[0].3);
        assert_eq!((got[0].1, got[0].2), (0, 5001));
        assert_eq!(got[1], (b"ok".to_vec(), 5001, 5004, false));
    }

    #[test]
    fn long_lines_are_cut_and_the_rest_skipped() {
        let mut input = vec![b'x'; READ_BLOCK * 3];
        input.extend_from_slice(b"\nok\n");
        let got = collect(&input, 1000);
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].0.len(), 1000);
        assert!(got[0].3);
        assert_eq!(
            (got[1].0.as_slice(), got[1].1),
            (&b"ok"[..], READ_BLOCK as u64 * 3 + 1)
        );
    }
}
