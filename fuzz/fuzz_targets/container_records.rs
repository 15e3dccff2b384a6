//! A container runtime's log on any bytes: every line of the input is a
//! record for an unwrapper of each kind and stream choice (auto decides
//! from the first). Nothing may panic; a joined line stays within the
//! limit, starts at or before the record that ends it, and a line being
//! joined holds the checkpoint below it.
#![no_main]

use cerberus_agent::container::{Step, Streams, Unwrapper, Unwrapping, Wrapper};
use cerberus_agent::source::Line;
use libfuzzer_sys::fuzz_target;

const MAX_LINE: usize = 64;

fuzz_target!(|data: &[u8]| {
    for wrapper in [Wrapper::Auto, Wrapper::Cri, Wrapper::Docker] {
        for streams in [Streams::Stdout, Streams::Both] {
            let mut u = Unwrapper::new(Unwrapping { wrapper, streams }, MAX_LINE);
            let mut at = 0u64;
            for record in data.split(|b| *b == b'\n') {
                let end = at + record.len() as u64 + 1;
                let line = Line {
                    bytes: record,
                    offset: at,
                    end,
                    number: 1,
                    truncated: false,
                    fresh: true,
                    time: None,
                };
                if let Step::Line(l) = u.record(line) {
                    assert!(l.offset <= at && l.end == end);
                    assert!(l.bytes.len() <= MAX_LINE.max(record.len()));
                }
                if let Some(held) = u.held_from() {
                    assert!(held <= at);
                }
                at = end;
            }
            for left in u.take_held() {
                assert!(left.bytes.len() <= MAX_LINE);
            }
        }
    }
});
