//! The compact text form of a token's position vector (claim `p`).
//!
//! A vector over many logs is the usual case (one log per Kafka partition), and their
//! names share long prefixes (`user-events-0` .. `user-events-127`). The JSON object
//! form (`"pos": {"user-events-127": 123456789012, ...}`, ~32 bytes per log) made a
//! 128-log token 4.5 KB, over the size cap and a browser's cookie limit. The compact
//! form is about 14 bytes per such log:
//!
//! - entries in log-name order, separated by `,`;
//! - each entry is `SHARED:SUFFIX=POS`: `SHARED` is how many leading bytes the log
//!   name shares with the previous entry's (decimal, `0` for the first), `SUFFIX` the
//!   rest of the name, `POS` the position in base64url digits (`A`-`Z`, `a`-`z`,
//!   `0`-`9`, `-`, `_` for 0 to 63), most significant first, no leading `A`.
//!
//! Log names can't hold `,` or `=` ([`valid_log_name`]) and `SHARED` is digits only,
//! so the first `:` ends it: the form is unambiguous. Decoding checks everything
//! (order, shared length, char boundaries, digits, overflow, names) and never panics.

use std::collections::BTreeMap;

use crate::position::{valid_log_name, PositionVector};

const DIGITS: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// The value of each byte as a digit of [`DIGITS`], 0xFF for a byte that is not one.
const VALUES: [u8; 256] = {
    let mut table = [0xFF; 256];
    let mut i = 0;
    while i < 64 {
        table[DIGITS[i] as usize] = i as u8;
        i += 1;
    }
    table
};

/// The compact form of `pos` (empty for an empty vector).
pub fn encode(pos: &PositionVector) -> String {
    let mut out = String::with_capacity(pos.len() * 16);
    let mut prev = "";
    for (i, (log, p)) in pos.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let mut shared = log
            .bytes()
            .zip(prev.bytes())
            .take_while(|(a, b)| a == b)
            .count();
        while !log.is_char_boundary(shared) {
            shared -= 1;
        }
        out.push_str(&shared.to_string());
        out.push(':');
        out.push_str(&log[shared..]);
        out.push('=');
        push_digits(&mut out, p);
        prev = log;
    }
    out
}

fn push_digits(out: &mut String, mut n: u64) {
    let mut buf = [0u8; 11];
    let mut at = buf.len();
    loop {
        at -= 1;
        buf[at] = DIGITS[(n % 64) as usize];
        n /= 64;
        if n == 0 {
            break;
        }
    }
    // Only ASCII from DIGITS was written.
    out.extend(buf[at..].iter().map(|&b| b as char));
}

/// Why a compact vector was refused (the message says where).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("entry {entry}: {problem}")]
pub struct CompactError {
    entry: usize,
    problem: &'static str,
}

/// Parses the compact form back into a vector.
pub fn decode(text: &str) -> Result<PositionVector, CompactError> {
    let mut map = BTreeMap::new();
    if text.is_empty() {
        return Ok(PositionVector::new());
    }
    let mut prev = String::new();
    for (entry, item) in text.split(',').enumerate() {
        let err = |problem| CompactError { entry, problem };
        let (shared, rest) = item
            .split_once(':')
            .ok_or(err("no `:` after the shared length"))?;
        let (suffix, digits) = rest
            .split_once('=')
            .ok_or(err("no `=` before the position"))?;
        if shared.is_empty() || shared.len() > 3 || !shared.bytes().all(|b| b.is_ascii_digit()) {
            return Err(err("shared length is not a number of 1 to 3 digits"));
        }
        let shared: usize = shared.parse().map_err(|_| err("bad shared length"))?;
        if shared > prev.len() || !prev.is_char_boundary(shared) {
            return Err(err("shared length is longer than the previous log name"));
        }
        let mut log = String::with_capacity(shared + suffix.len());
        log.push_str(&prev[..shared]);
        log.push_str(suffix);
        if !valid_log_name(&log) {
            return Err(err("not a valid log name"));
        }
        if entry > 0 && log <= prev {
            return Err(err("log names are not in strictly increasing order"));
        }
        let pos = parse_digits(digits).ok_or(err("position is not base64url digits of a u64"))?;
        map.insert(log.clone(), pos);
        prev = log;
    }
    PositionVector::from_map(map).map_err(|_| CompactError {
        entry: 0,
        problem: "not a valid log name",
    })
}

fn parse_digits(digits: &str) -> Option<u64> {
    if digits.is_empty() || digits.len() > 11 || (digits.len() > 1 && digits.starts_with('A')) {
        return None;
    }
    digits.bytes().try_fold(0u64, |acc, b| {
        let d = match VALUES[b as usize] {
            0xFF => return None,
            d => u64::from(d),
        };
        acc.checked_mul(64)?.checked_add(d)
    })
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn vector(pairs: &[(&str, u64)]) -> PositionVector {
        pairs.iter().map(|&(l, p)| (l, p)).collect()
    }

    #[test]
    fn shares_prefixes_and_uses_base64url_digits() {
        let v = vector(&[("users", 64), ("user-events-1", 0), ("user-events-10", 63)]);
        assert_eq!(encode(&v), "0:user-events-1=A,13:0=_,4:s=BA");
        assert_eq!(decode(&encode(&v)).unwrap(), v);
        assert_eq!(encode(&PositionVector::new()), "");
        assert_eq!(decode("").unwrap(), PositionVector::new());
        let max = vector(&[("a", u64::MAX)]);
        assert_eq!(encode(&max), "0:a=P__________");
        assert_eq!(decode(&encode(&max)).unwrap(), max);
    }

    #[test]
    fn refuses_every_malformed_form() {
        for bad in [
            "a=1",
            "0:a",
            ":a=B",
            "1:a=B",
            "0:a=B,0:a=C",
            "0:b=B,0:a=C",
            "0:a=AB",
            "0:a=",
            "0:a=*",
            "0:a=Q__________",
            "0:a b=B",
            "0:a=B,",
            "0000:a=B",
            "0:é=B,1:x=B",
        ] {
            assert!(decode(bad).is_err(), "{bad:?} was accepted");
        }
    }

    proptest! {
        #[test]
        fn round_trips(
            logs in proptest::collection::btree_map("[a-zé._-]{1,6}(-[0-9]{1,3})?", any::<u64>(), 0..40)
        ) {
            let v = PositionVector::from_map(logs).unwrap();
            prop_assert_eq!(decode(&encode(&v)).unwrap(), v);
        }

        #[test]
        fn never_panics_on_garbage(text in "[0-9a-z:=,A_é-]{0,40}") {
            let _ = decode(&text);
        }
    }
}
