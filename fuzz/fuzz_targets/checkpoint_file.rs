//! The checkpoint file reader on any bytes: whatever is in the state
//! folder's checkpoints.json, opening the store never panics (an unreadable
//! file is set aside), and a store that opened can be saved again.
#![no_main]

use std::sync::OnceLock;

use cerberus_agent::tail::CheckpointStore;
use libfuzzer_sys::fuzz_target;

fn state_dir() -> &'static std::path::Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| tempfile::tempdir().expect("a temporary folder"))
        .path()
}

fuzz_target!(|bytes: &[u8]| {
    let dir = state_dir();
    // Set-aside copies of earlier inputs are not kept.
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let _ = std::fs::remove_file(e.path());
        }
    }
    std::fs::write(dir.join("checkpoints.json"), bytes).expect("write the input");
    if let Ok(mut store) = CheckpointStore::open(dir) {
        let _ = store.save(true);
    }
});
