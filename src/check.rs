//! `cerberus-agent check`: show what the agent makes of a file.
//!
//! Each line's event, or the reason it failed, goes to standard output in
//! order, then a summary (lines, parsed, failed, per pattern). With
//! `--format auto` every line is tried against every pattern, so a mixed or
//! unknown file shows which lines fit what.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::sync::Arc;

use crate::config::ConfigError;
use crate::diagnostics::{FailReason, excerpt};
use crate::event::{EventOptions, LinePosition};
use crate::parse::{Format, Pattern, PatternSet};
use crate::pipeline::{LineHandler, LineOutcome};
use crate::source::Line;
use crate::tail::LineReader;

/// What `check` counted.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct CheckSummary {
    pub lines: u64,
    pub parsed: u64,
    pub failed: u64,
    /// Lines that are no request by their format: answers to connections
    /// that sent none, the server's own messages.
    pub not_requests: u64,
    pub blank: u64,
    pub warnings: u64,
    pub per_pattern: BTreeMap<String, u64>,
}

/// Checks `input` line by line, writing the report to `out`.
pub fn check(
    input: impl Read,
    patterns: &mut PatternSet,
    format: &Format,
    options: &EventOptions,
    max_line: usize,
    out: &mut impl Write,
) -> anyhow::Result<CheckSummary> {
    let candidates: Vec<Arc<Pattern>> = match patterns.resolve(format).map_err(ConfigError::new)? {
        Some(p) => vec![p],
        None => patterns.iter().cloned().collect(),
    };
    let mut handlers: Vec<LineHandler> = candidates
        .into_iter()
        .map(|p| LineHandler::new(p, options))
        .collect();
    let mut reader = LineReader::new(input, 0, max_line);
    let mut summary = CheckSummary::default();
    let mut event = Vec::with_capacity(1024);
    loop {
        let line = match reader.next_line()? {
            Some(l) => l,
            None => match reader.take_partial() {
                Some(l) => l,
                None => break,
            },
        };
        check_line(&mut handlers, &line, &mut summary, &mut event, out)?;
    }
    writeln!(out)?;
    writeln!(
        out,
        "lines: {}, parsed: {}, failed: {}, not requests: {}, blank: {}, metrics warnings: {}",
        summary.lines,
        summary.parsed,
        summary.failed,
        summary.not_requests,
        summary.blank,
        summary.warnings
    )?;
    for (name, n) in &summary.per_pattern {
        writeln!(out, "  {name}: {n}")?;
    }
    Ok(summary)
}

/// One line through the candidate patterns: its event, or why it failed.
fn check_line(
    handlers: &mut [LineHandler],
    line: &Line<'_>,
    summary: &mut CheckSummary,
    event: &mut Vec<u8>,
    out: &mut impl Write,
) -> std::io::Result<()> {
    summary.lines += 1;
    let position = LinePosition {
        stream: 0,
        offset: line.offset,
        time: None,
    };
    let mut reasons = Vec::new();
    let mut not_request = None;
    let handlers_count = handlers.len();
    for handler in handlers.iter_mut() {
        match handler.handle(line.bytes, position, event) {
            LineOutcome::Blank => {
                summary.blank += 1;
                return Ok(());
            }
            outcome @ (LineOutcome::Event | LineOutcome::EventWithWarning(_)) => {
                summary.parsed += 1;
                *summary
                    .per_pattern
                    .entry(handler.pattern().name.clone())
                    .or_default() += 1;
                out.write_all(event)?;
                out.write_all(b"\n")?;
                event.clear();
                if let LineOutcome::EventWithWarning(w) = outcome {
                    summary.warnings += 1;
                    writeln!(out, "line {}: warning: {w}", line.number)?;
                }
                return Ok(());
            }
            // That a line is not an access line of a format that shares its
            // log with the server's messages says nothing when the line
            // could be of any format: only the chosen format may say so.
            LineOutcome::Failed(failure)
                if failure.reason == FailReason::ServerMessage && handlers_count > 1 => {}
            LineOutcome::Failed(failure) if failure.reason.is_expected() => {
                not_request.get_or_insert(failure.message);
            }
            LineOutcome::Failed(failure) => reasons.push(failure.message),
        }
    }
    if let Some(what) = not_request {
        summary.not_requests += 1;
        writeln!(out, "line {}: not a request: {what}", line.number)?;
        return Ok(());
    }
    summary.failed += 1;
    let why = if reasons.len() == 1 {
        reasons.remove(0)
    } else {
        "no pattern fits (give --format NAME to see why that one fails)".to_owned()
    };
    let cut = if line.truncated {
        " (line cut at max_line_bytes)"
    } else {
        ""
    };
    writeln!(
        out,
        "line {}: failed: {why}{cut}: {}",
        line.number,
        excerpt(line.bytes, 160)
    )?;
    // Where the line stops fitting: the chosen pattern, or with `auto` the
    // one that fits it furthest.
    // `max_by_key` keeps the last of equals: reversed, the first pattern in
    // trial order wins a tie.
    let nearest = handlers
        .iter()
        .rev()
        .filter_map(|h| h.pattern().explain(line.bytes).map(|m| (h.pattern(), m)))
        .max_by_key(|(_, m)| m.at);
    if let Some((pattern, mismatch)) = nearest {
        let nearest = if handlers.len() > 1 { "nearest: " } else { "" };
        writeln!(
            out,
            "    {nearest}{}: at byte {}: {}",
            pattern.name, mismatch.at, mismatch.why
        )?;
        let (shown, column) = marked(line.bytes, mismatch.at);
        writeln!(out, "    {shown}")?;
        writeln!(out, "    {}^", " ".repeat(column))?;
    }
    // A whole known format with more after it: a log_format that adds
    // fields to a known one. Cut before each of the last spaces (a few
    // dozen at most, the longest first) and see whether a pattern takes
    // what is left.
    let cuts: Vec<usize> = memchr::memrchr_iter(b' ', line.bytes).take(32).collect();
    let extended = cuts.iter().find_map(|&at| {
        let known = &line.bytes[..at];
        handlers
            .iter()
            .find(|h| crate::pipeline::detect::fits(h.pattern(), known))
            .map(|h| (h.pattern().name.clone(), at))
    });
    if let Some((name, at)) = extended {
        writeln!(
            out,
            "    this is {name} with extra fields after byte {at}: give the server's own format string with --format (README: \"Point it at your server's config\")"
        )?;
    }
    Ok(())
}

/// Up to about 100 characters of `line` around byte `at`, printable (other
/// bytes as `\xNN`), and the column of `at` in that text.
fn marked(line: &[u8], at: usize) -> (String, usize) {
    const BEFORE: usize = 60;
    const AFTER: usize = 40;
    let start = at.saturating_sub(BEFORE);
    let end = (at + AFTER).min(line.len());
    let mut text = String::new();
    let mut column = 0;
    if start > 0 {
        text.push('…');
    }
    for (i, &b) in line[start..end].iter().enumerate() {
        if start + i == at {
            column = text.chars().count();
        }
        if (0x20..0x7f).contains(&b) {
            text.push(b as char);
        } else {
            text.push_str(&format!("\\x{b:02x}"));
        }
    }
    if start + (end - start) <= at {
        column = text.chars().count();
    }
    if end < line.len() {
        text.push('…');
    }
    (text, column)
}

/// `check --nginx-conf FILE` without a log file: what the config declares.
/// For each log: its path, its format and where it is declared, the event
/// fields the format fills and those it leaves empty; then the logs left
/// out and why. Returns how many logs can be followed.
pub fn server_config(
    findings: &crate::server_config::Findings,
    out: &mut impl Write,
) -> anyhow::Result<usize> {
    use crate::parse::fields::Role;
    use crate::parse::server_format;
    for log in &findings.logs {
        writeln!(
            out,
            "{}\n  format: {} {} {:?} ({})",
            log.path.display(),
            log.server.key(),
            match log.server {
                crate::parse::server_format::Server::Apache => "LogFormat",
                _ => "log_format",
            },
            log.format_name,
            log.declared_at
        )?;
        match server_format::compile(log.server, &log.format) {
            Ok(compiled) => {
                let has = |r: Role| compiled.fields.contains_key(&r);
                let whole_request = has(Role::Request) || (has(Role::Method) && has(Role::Path));
                let (filled, empty): (Vec<Role>, Vec<Role>) =
                    Role::ALL.iter().copied().partition(|r| match r {
                        Role::Request | Role::Method | Role::Path => has(*r) || whole_request,
                        // The query comes with the request target too.
                        Role::Query => has(*r) || has(Role::Request) || has(Role::Path),
                        r => has(*r),
                    });
                let names = |v: &[Role]| v.iter().map(|r| r.key()).collect::<Vec<_>>().join(", ");
                writeln!(out, "  fills: {}", names(&filled))?;
                if !empty.is_empty() {
                    writeln!(out, "  empty: {}", names(&empty))?;
                }
                if !whole_request {
                    writeln!(
                        out,
                        "  problem: the format has no request line (nor method and path): its lines give no event"
                    )?;
                }
            }
            Err(e) => writeln!(out, "  problem: the format does not compile: {e}")?,
        }
    }
    for why in &findings.skipped {
        writeln!(out, "skipped: {why}")?;
    }
    writeln!(
        out,
        "\n{} access logs to follow, {} left out",
        findings.logs.len(),
        findings.skipped.len()
    )?;
    Ok(findings.logs.len())
}
