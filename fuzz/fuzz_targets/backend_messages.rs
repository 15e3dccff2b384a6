//! What a backend sends the agent, on any bytes: a reply of the batch
//! exchange, a compressed message (inflated within its bound), a close
//! frame's reason in the agent's words, and the secret-key endpoint's
//! answer. Nothing may panic or hang; an inflated message never passes the
//! bound, and a close reason never puts a line break in a message.
#![no_main]

use cerberus_agent::deliver::backend::SendError;
use cerberus_agent::deliver::backend::compression::{BoundedInflate, MAX_INFLATED_BYTES};
use cerberus_agent::deliver::backend::secret_key::parse_answer;
use cerberus_agent::deliver::backend::wire::parse_reply;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let _ = parse_reply(&text);
    for (bits, reset) in [(15, false), (9, true)] {
        let mut inflate = BoundedInflate::new(bits, reset, MAX_INFLATED_BYTES);
        if let Ok(out) = inflate.inflate_message(data) {
            assert!(out.len() <= MAX_INFLATED_BYTES);
        }
    }
    let closed = SendError::Closed {
        code: data.first().map(|&b| 1000 + u16::from(b)),
        reason: text.into_owned(),
    };
    assert!(!closed.to_string().contains(['\n', '\r']));
    let _ = parse_answer(data);
});
