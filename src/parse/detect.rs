//! `--format auto`: find the pattern that fits a file's first lines.
//!
//! Patterns are tried in their `detect_priority` order; the first that turns
//! every non-blank sample line into an event wins. Stricter patterns come
//! first (nginx's escaped values before gunicorn's raw ones), so a file is
//! given the most specific format that explains all of it.

use std::sync::Arc;

use super::{Pattern, PatternSet};
use crate::diagnostics::excerpt;
use crate::event::{EventBuilder, EventOptions, LinePosition};

/// How many lines from the start of a file are used to detect its format.
pub const SAMPLE_LINES: usize = 20;

/// The detected pattern, and the others that would also have fitted.
#[derive(Debug)]
pub struct Detection {
    pub pattern: Arc<Pattern>,
    pub also_fitting: Vec<String>,
}

/// Why no pattern was chosen.
#[derive(Debug, thiserror::Error)]
pub enum DetectError {
    #[error("no lines to detect the format from")]
    NoLines,
    #[error(
        "no pattern fits every one of the first lines; for example line {line_number}:\n    {sample}\nRun `cerberus-agent check FILE` to see why each line fails, or give --format"
    )]
    NoneFits { line_number: usize, sample: String },
}

/// True when `pattern` turns `line` into an event.
pub fn fits(pattern: &Arc<Pattern>, line: &[u8]) -> bool {
    let mut builder = EventBuilder::new(pattern.clone(), &EventOptions::default());
    let mut scratch = Vec::new();
    pattern.split(line).ok().is_some_and(|f| {
        builder
            .build(
                &f,
                LinePosition {
                    source: 0,
                    offset: 0,
                },
                &mut scratch,
            )
            .is_ok()
    })
}

/// Picks the pattern for `lines` (blank lines are ignored).
pub fn detect(set: &PatternSet, lines: &[Vec<u8>]) -> Result<Detection, DetectError> {
    let sample: Vec<(usize, &[u8])> = lines
        .iter()
        .enumerate()
        .filter(|(_, l)| !l.iter().all(u8::is_ascii_whitespace))
        .map(|(i, l)| (i + 1, l.as_slice()))
        .collect();
    if sample.is_empty() {
        return Err(DetectError::NoLines);
    }
    let fitting: Vec<&Arc<Pattern>> = set
        .iter()
        .filter(|p| sample.iter().all(|(_, l)| fits(p, l)))
        .collect();
    match fitting.split_first() {
        Some((first, rest)) => Ok(Detection {
            pattern: (*first).clone(),
            also_fitting: rest.iter().map(|p| p.name.clone()).collect(),
        }),
        None => {
            // Show the first line that no pattern fits at all, or else the
            // first line: the operator sees what the agent saw.
            let (line_number, line) = sample
                .iter()
                .find(|(_, l)| !set.iter().any(|p| fits(p, l)))
                .unwrap_or(&sample[0]);
            Err(DetectError::NoneFits {
                line_number: *line_number,
                sample: excerpt(line, 200),
            })
        }
    }
}
