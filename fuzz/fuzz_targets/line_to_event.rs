//! The whole per-line path on any bytes, for every bundled pattern: split,
//! then the event builder (timestamps, request line, percent-decoding of
//! the path, query parameters, metrics JSON and its sanitising, the IP
//! HMAC). An event that is built must be valid JSON.
#![no_main]

use std::cell::RefCell;
use std::sync::Arc;

use cerberus_agent::pipeline::{LineHandler, LineOutcome};
use cerberus_agent::secret::Secret;
use cerberus_agent::event::{EventOptions, Identity, LinePosition};
use cerberus_agent::parse::PatternSet;
use libfuzzer_sys::fuzz_target;

fn handlers() -> Vec<LineHandler> {
    let set = PatternSet::bundled().expect("bundled patterns compile");
    let options = EventOptions {
        identity: Identity {
            token: "tok".into(),
            client_id: "fuzz".into(),
        },
        secret_key: Some(Secret::new("fuzz-secret")),
        query_params: true,
        default_https: None,
        real_ip: None,
    };
    set.iter()
        .map(|p| LineHandler::new(Arc::clone(p), &options))
        .collect()
}

thread_local! {
    // The handlers share one address cache (not Send): one set per thread.
    static HANDLERS: RefCell<Vec<LineHandler>> = RefCell::new(handlers());
}

fuzz_target!(|line: &[u8]| HANDLERS.with_borrow_mut(|handlers| {
    let mut out = Vec::new();
    for handler in handlers.iter_mut() {
        out.clear();
        let position = LinePosition {
            stream: 1,
            offset: 0,
time: None,
};
        if let LineOutcome::Event | LineOutcome::EventWithWarning(_) =
            handler.handle(line, position, &mut out)
        {
            assert!(
                serde_json::from_slice::<serde_json::Value>(&out).is_ok(),
                "the event is not JSON: {}",
                String::from_utf8_lossy(&out)
            );
        }
    }
}));
