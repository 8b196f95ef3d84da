//! Config parsing: any text gives a config or a list of errors, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tidemark::config::Config;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let env = [("TIDEMARK__SERVER__MAX_HELD_READS".to_string(), "5".to_string())];
    if let Err(e) = Config::from_toml(text, None, &env) {
        assert!(!e.errors.is_empty(), "an error result names at least one problem");
        let _ = e.to_string();
    }
});
