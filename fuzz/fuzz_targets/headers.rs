//! Header handling: hop-by-hop removal and forwarding headers never panic, and after
//! them no header named in `Connection` (and no hop-by-hop header) is left.
#![no_main]

use std::net::{IpAddr, Ipv4Addr};

use http::{HeaderMap, HeaderName, HeaderValue};
use libfuzzer_sys::fuzz_target;
use tidemark::proxy::headers::{set_forwarded, strip_hop_by_hop};

fuzz_target!(|data: &[u8]| {
    // Lines of `name: value`, the first byte choosing the trusted hop count.
    let Some((&hops, rest)) = data.split_first() else {
        return;
    };
    let mut headers = HeaderMap::new();
    for line in rest.split(|b| *b == b'\n') {
        let Some(colon) = line.iter().position(|b| *b == b':') else {
            continue;
        };
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(&line[..colon]),
            HeaderValue::from_bytes(line[colon + 1..].trim_ascii()),
        ) else {
            continue;
        };
        headers.append(name, value);
    }
    let named: Vec<String> = headers
        .get_all(http::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(',').map(|s| s.trim().to_ascii_lowercase()).collect::<Vec<_>>())
        .filter(|s| !s.is_empty())
        .collect();
    strip_hop_by_hop(&mut headers, false);
    for name in named {
        if let Ok(name) = HeaderName::from_bytes(name.as_bytes()) {
            assert!(!headers.contains_key(&name), "{name} survived");
        }
    }
    for hop in ["connection", "keep-alive", "te", "transfer-encoding", "upgrade", "proxy-connection"] {
        assert!(!headers.contains_key(hop), "{hop} survived");
    }
    set_forwarded(&mut headers, IpAddr::V4(Ipv4Addr::LOCALHOST), "http", None, usize::from(hops % 4));
    let xff = headers.get("x-forwarded-for").expect("x-forwarded-for set");
    assert!(xff.as_bytes().ends_with(b"127.0.0.1"));
});
