//! Every split kind and escape mode on any bytes: the bundled patterns
//! (templates under nginx, Apache and gunicorn escaping, JSON) split the
//! input, and every escape mode undoes its escapes on it. Nothing may
//! panic, hang or read out of bounds; a value that splits must lie inside
//! the line.
#![no_main]

use std::sync::OnceLock;

use cerberus_agent::parse::escape::Escape;
use cerberus_agent::parse::{PatternSet, Role};
use libfuzzer_sys::fuzz_target;

fn patterns() -> &'static PatternSet {
    static SET: OnceLock<PatternSet> = OnceLock::new();
    SET.get_or_init(|| PatternSet::bundled().expect("bundled patterns compile"))
}

fuzz_target!(|line: &[u8]| {
    for pattern in patterns().iter() {
        if let Ok(fields) = pattern.split(line) {
            for role in Role::ALL {
                let _ = fields.text(role);
            }
        }
    }
    for escape in [
        Escape::None,
        Escape::Nginx,
        Escape::Apache,
        Escape::Gunicorn,
    ] {
        let _ = escape.unescape(line);
        let _ = escape.can_write(line);
    }
});
