//! The configuration loader on any config file: layering and validation
//! never panic; bad input is an error.
#![no_main]

use std::sync::OnceLock;

use cerberus_agent::config::Layers;
use libfuzzer_sys::fuzz_target;

fn config_path() -> &'static std::path::Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| tempfile::tempdir().expect("a temporary folder"))
        .path()
}

fuzz_target!(|bytes: &[u8]| {
    let path = config_path().join("agent.toml");
    std::fs::write(&path, bytes).expect("write the input");
    let layers = Layers {
        file: Some((path, true)),
        ..Layers::default()
    };
    if let Ok(settings) = layers.settings() {
        let _ = settings.validate();
    }
});
