//! The whole per-line path on any bytes, for every bundled pattern: split,
//! then the event builder (timestamps, request line, percent-decoding of
//! the path, query parameters, metrics JSON and its sanitising, the IP
//! HMAC). An event that is built must be valid JSON.
#![no_main]

use std::sync::{Arc, Mutex, OnceLock};

use cerberus_agent::pipeline::{LineHandler, LineOutcome};
use cerberus_agent::secret::Secret;
use cerberus_agent::event::{EventOptions, Identity, LinePosition};
use cerberus_agent::parse::PatternSet;
use libfuzzer_sys::fuzz_target;

fn handlers() -> &'static Mutex<Vec<LineHandler>> {
    static HANDLERS: OnceLock<Mutex<Vec<LineHandler>>> = OnceLock::new();
    HANDLERS.get_or_init(|| {
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
        Mutex::new(
            set.iter()
                .map(|p| LineHandler::new(Arc::clone(p), &options))
                .collect(),
        )
    })
}

fuzz_target!(|line: &[u8]| {
    let mut handlers = handlers().lock().unwrap_or_else(|e| e.into_inner());
    let mut out = Vec::new();
    for handler in handlers.iter_mut() {
        out.clear();
        let position = LinePosition {
            source: 1,
            offset: 0,
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
});
