//! Position vectors: parsing never panics, and what parses formats back to itself.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tidemark::position::PositionVector;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    for default_log in [None, Some("users")] {
        if let Ok(v) = PositionVector::parse(text, default_log) {
            let again = PositionVector::parse(&v.to_string(), None).expect("formatted vectors parse");
            assert_eq!(again, v);
            let mut merged = v.clone();
            assert!(!merged.merge(&v));
            assert!(v.covers(&v));
        }
    }
});
