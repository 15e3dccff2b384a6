//! The pattern-file loader on any text: compiling a pattern never panics,
//! and a pattern that compiles splits a few lines without panicking.
#![no_main]

use cerberus_agent::parse::{PatternOrigin, Pattern};
use libfuzzer_sys::fuzz_target;

const LINES: &[&[u8]] = &[
    br#"127.0.0.1 - - [25/Nov/2026:10:04:05 +0000] "GET / HTTP/1.1" 200 5 "-" "ua""#,
    br#"{"remote_addr":"127.0.0.1","request_uri":"/a","time_iso8601":"2026-11-25T10:04:05+00:00"}"#,
    b"",
];

fuzz_target!(|text: &str| {
    if let Ok(pattern) = Pattern::from_toml(text, "fuzz", PatternOrigin::Bundled) {
        for line in LINES {
            let _ = pattern.split(line);
        }
    }
});
