//! Print events as JSON lines, for trying the agent out and for backfills.
//!
//! Written and flushed counts as delivered: the sink acknowledges every
//! event once the buffer holding it reached the writer.

use std::io::{self, Write};
use std::time::Instant;

use super::{AckPoint, EventSink};

/// Writes each event followed by a newline to standard output (or any
/// writer, for tests), buffered.
pub(crate) struct StdoutSink<W: Write = io::Stdout> {
    out: io::BufWriter<W>,
    /// Origins of events written but not yet flushed.
    written: Vec<AckPoint>,
    /// Origins of events flushed, not yet taken as acknowledged.
    delivered: Vec<AckPoint>,
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
}

impl<W: Write> EventSink for StdoutSink<W> {
    fn push(&mut self, event: &[u8], origin: AckPoint) -> io::Result<()> {
        self.out.write_all(event)?;
        self.out.write_all(b"\n")?;
        self.written.push(origin);
        Ok(())
    }

    fn flush(&mut self, _now: Instant) -> io::Result<()> {
        self.out.flush()?;
        self.delivered.append(&mut self.written);
        Ok(())
    }

    fn take_acks(&mut self, out: &mut Vec<AckPoint>) {
        out.append(&mut self.delivered);
    }

    fn is_full(&self) -> bool {
        false
    }

    fn deadline(&self) -> Option<Instant> {
        None
    }

    fn close(&mut self) -> io::Result<()> {
        self.flush(Instant::now())
    }

    fn is_finished(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_acknowledged_once_flushed() {
        let mut sink = StdoutSink::with_writer(Vec::new());
        let origin = AckPoint {
            source: 0,
            part: 7,
            end: 42,
        };
        sink.push(b"{\"a\":1}", origin).unwrap();
        let mut acks = Vec::new();
        sink.take_acks(&mut acks);
        assert!(acks.is_empty(), "written to the buffer is not delivered");
        sink.flush(Instant::now()).unwrap();
        sink.take_acks(&mut acks);
        assert_eq!(acks, vec![origin]);
        assert_eq!(sink.out.get_ref(), b"{\"a\":1}\n");
    }
}
