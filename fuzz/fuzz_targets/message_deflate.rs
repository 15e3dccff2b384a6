//! The agent's own deflate on any bytes: the first byte picks the window
//! (2^9 to 2^15) and whether each message stands alone; the rest, cut at
//! 0xff bytes, is the messages. Each must come out of zlib's inflate,
//! holding the same window as the backend would, exactly as it went in
//! (a distance past the window, a bad code or a lost byte fails here).
#![no_main]

use cerberus_agent::deliver::backend::event_deflate::EventDeflate;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let bits = 9 + first % 7;
    let reset = first & 0x80 != 0;
    let mut deflate = EventDeflate::new(bits, reset);
    let mut inflate = zlib_rs::Inflate::new(false, bits);
    for message in rest.split(|b| *b == 0xff) {
        let mut input = deflate.compress(message).to_vec();
        input.extend_from_slice(&[0, 0, 0xff, 0xff]);
        let mut out = vec![0u8; message.len() + 64];
        let before = inflate.total_out();
        let status = inflate.decompress(&input, &mut out, zlib_rs::InflateFlush::SyncFlush);
        assert!(status.is_ok(), "inflate failed: {:?}", inflate.error_message());
        let n = (inflate.total_out() - before) as usize;
        assert_eq!(&out[..n], message);
        if reset {
            inflate = zlib_rs::Inflate::new(false, bits);
        }
    }
});
