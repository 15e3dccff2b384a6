//! Print events as JSON lines, for trying the agent out and for backfills.

use std::io::{self, Write};

/// Writes each event followed by a newline to standard output (or any
/// writer, for tests), buffered.
pub struct StdoutSink<W: Write = io::Stdout> {
    out: io::BufWriter<W>,
    /// Origins of events written but not yet flushed.
    pub(super) written: Vec<crate::batch::Origin>,
    /// Origins of events flushed, not yet taken as acknowledged.
    pub(super) delivered: Vec<crate::batch::Origin>,
}

impl StdoutSink<io::Stdout> {
    pub fn new() -> Self {
        Self::with_writer(io::stdout())
    }
}

impl Default for StdoutSink<io::Stdout> {
    fn default() -> Self {
        Self::new()
    }
}

impl<W: Write> StdoutSink<W> {
    pub fn with_writer(writer: W) -> Self {
        StdoutSink {
            out: io::BufWriter::with_capacity(256 * 1024, writer),
            written: Vec::new(),
            delivered: Vec::new(),
        }
    }

    /// Writes one event (a JSON object without newline).
    pub fn write_event(&mut self, event: &[u8]) -> io::Result<()> {
        self.out.write_all(event)?;
        self.out.write_all(b"\n")
    }

    /// Pushes everything written so far out.
    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}
