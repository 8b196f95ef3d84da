//! Position vectors: a map `log -> position` (SPEC "Concepts").
//!
//! Text form `users=1234,orders=88`; a bare `1234` means the caller's default log.
//! Vector `A` covers `B` when `A[l] >= B[l]` for every log `l` of `B`; merge is the
//! point-wise maximum. Everything here is pure and property-tested.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// Longest log name accepted, in bytes. Log names travel in tokens, so they stay short.
pub const MAX_LOG_NAME: usize = 128;

/// A map `log -> position`, ordered by log name so its text form is canonical.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PositionVector(BTreeMap<String, u64>);

/// Why a position vector's text or JSON form was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PositionError {
    #[error("empty position vector")]
    Empty,
    #[error("item `{0}` has no log name before `=`")]
    MissingLog(String),
    #[error("item `{0}` has no position after `=`")]
    MissingPosition(String),
    #[error("`{0}` is not a position: expected a whole number from 0 to 18446744073709551615")]
    BadNumber(String),
    #[error("log `{0}` appears twice")]
    Duplicate(String),
    #[error("`{0}` is not a valid log name: use up to 128 characters without `,`, `=`, quotes or white space")]
    BadLogName(String),
    #[error(
        "bare position `{0}` given but no default log is configured for it; write it as `log={0}`"
    )]
    NoDefaultLog(String),
}

/// True for a name that may be a log: non-empty, short, and free of the separators of
/// the text form and of anything that would need quoting in a header.
pub fn valid_log_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_LOG_NAME
        && name
            .chars()
            .all(|c| !c.is_whitespace() && !c.is_control() && !matches!(c, ',' | '=' | '"' | ';'))
}

impl PositionVector {
    /// An empty vector (covers nothing but the empty vector).
    pub fn new() -> Self {
        Self::default()
    }

    /// Parses the text form. `default_log` names the log of a bare number.
    pub fn parse(text: &str, default_log: Option<&str>) -> Result<Self, PositionError> {
        let text = text.trim();
        if text.is_empty() {
            return Err(PositionError::Empty);
        }
        let mut out = BTreeMap::new();
        for item in text.split(',') {
            let item = item.trim();
            let (log, num) = match item.split_once('=') {
                Some((log, num)) => {
                    let (log, num) = (log.trim(), num.trim());
                    if log.is_empty() {
                        return Err(PositionError::MissingLog(item.to_string()));
                    }
                    if num.is_empty() {
                        return Err(PositionError::MissingPosition(item.to_string()));
                    }
                    (log, num)
                }
                None => match default_log {
                    Some(log) if !item.is_empty() => (log, item),
                    Some(_) => return Err(PositionError::MissingPosition(item.to_string())),
                    None if item.is_empty() => return Err(PositionError::Empty),
                    None => {
                        parse_u64(item)?;
                        return Err(PositionError::NoDefaultLog(item.to_string()));
                    }
                },
            };
            if !valid_log_name(log) {
                return Err(PositionError::BadLogName(log.to_string()));
            }
            let pos = parse_u64(num)?;
            if out.insert(log.to_string(), pos).is_some() {
                return Err(PositionError::Duplicate(log.to_string()));
            }
        }
        Ok(Self(out))
    }

    /// Builds a vector from a JSON object `{"users": 1234}`, checking log names.
    pub fn from_map(map: BTreeMap<String, u64>) -> Result<Self, PositionError> {
        if let Some(bad) = map.keys().find(|l| !valid_log_name(l)) {
            return Err(PositionError::BadLogName(bad.clone()));
        }
        Ok(Self(map))
    }

    /// The position of `log`, if the vector has it.
    pub fn get(&self, log: &str) -> Option<u64> {
        self.0.get(log).copied()
    }

    /// Sets `log` to `pos`, whatever it was.
    pub fn set(&mut self, log: impl Into<String>, pos: u64) {
        self.0.insert(log.into(), pos);
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, u64)> + '_ {
        self.0.iter().map(|(l, p)| (l.as_str(), *p))
    }

    /// True when `self[l] >= other[l]` for every log `l` of `other`.
    pub fn covers(&self, other: &PositionVector) -> bool {
        other
            .0
            .iter()
            .all(|(log, pos)| self.0.get(log).is_some_and(|mine| mine >= pos))
    }

    /// Point-wise maximum into `self`; returns true when anything moved.
    pub fn merge(&mut self, other: &PositionVector) -> bool {
        let mut changed = false;
        for (log, &pos) in &other.0 {
            match self.0.get_mut(log) {
                Some(mine) if *mine >= pos => {}
                Some(mine) => {
                    *mine = pos;
                    changed = true;
                }
                None => {
                    self.0.insert(log.clone(), pos);
                    changed = true;
                }
            }
        }
        changed
    }

    /// The entries whose log is in `logs`: what a read of a projection fed by `logs`
    /// requires. Entries of other logs never cause a wait.
    pub fn restrict<S: AsRef<str>>(&self, logs: &[S]) -> PositionVector {
        let mut out = BTreeMap::new();
        for log in logs {
            if let Some((k, v)) = self.0.get_key_value(log.as_ref()) {
                out.insert(k.clone(), *v);
            }
        }
        PositionVector(out)
    }

    /// Every log of this vector is one of `logs` (then [`PositionVector::restrict`]
    /// would return a copy of it).
    pub fn logs_within<S: AsRef<str>>(&self, logs: &[S]) -> bool {
        self.0
            .keys()
            .all(|log| logs.iter().any(|l| l.as_ref() == log))
    }

    /// The text form (`a=1,b=2`) as a header value, written without the `fmt`
    /// machinery: every forwarded read with a token sends it
    /// (`Consistency-Min-Position`). `None` for an empty vector.
    pub fn header_value(&self) -> Option<http::HeaderValue> {
        if self.0.is_empty() {
            return None;
        }
        let mut out = Vec::with_capacity(self.0.keys().map(|l| l.len() + 22).sum());
        let mut digits = itoa::Buffer::new();
        for (i, (log, pos)) in self.0.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.extend_from_slice(log.as_bytes());
            out.push(b'=');
            out.extend_from_slice(digits.format(*pos).as_bytes());
        }
        http::HeaderValue::from_maybe_shared(bytes::Bytes::from(out)).ok()
    }

    /// Consumes the vector into its map.
    pub fn into_inner(self) -> BTreeMap<String, u64> {
        self.0
    }
}

fn parse_u64(num: &str) -> Result<u64, PositionError> {
    if num.is_empty() || !num.bytes().all(|b| b.is_ascii_digit()) {
        return Err(PositionError::BadNumber(num.to_string()));
    }
    num.parse::<u64>()
        .map_err(|_| PositionError::BadNumber(num.to_string()))
}

impl fmt::Display for PositionVector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (log, pos)) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{log}={pos}")?;
        }
        Ok(())
    }
}

impl<S: Into<String>> FromIterator<(S, u64)> for PositionVector {
    fn from_iter<I: IntoIterator<Item = (S, u64)>>(iter: I) -> Self {
        Self(iter.into_iter().map(|(l, p)| (l.into(), p)).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_value_is_the_text_form_and_logs_within_checks_every_log() {
        let v = PositionVector::parse("users-0=0,users-1=18446744073709551615,a=7", None).unwrap();
        assert_eq!(v.header_value().unwrap(), v.to_string().as_str());
        assert_eq!(PositionVector::new().header_value(), None);
        assert!(v.logs_within(&["a", "users-0", "users-1", "x"]));
        assert!(!v.logs_within(&["a", "users-0"]));
        assert!(PositionVector::new().logs_within::<&str>(&[]));
    }
    use proptest::prelude::*;

    fn v(text: &str) -> PositionVector {
        PositionVector::parse(text, None).unwrap()
    }

    #[test]
    fn parses_text_form_with_whitespace_and_default_log() {
        assert_eq!(
            v(" users = 1234 , orders=88 ").to_string(),
            "orders=88,users=1234"
        );
        let bare = PositionVector::parse("1234", Some("users")).unwrap();
        assert_eq!(bare, v("users=1234"));
        let mixed = PositionVector::parse("5, orders=2", Some("users")).unwrap();
        assert_eq!(mixed, v("orders=2,users=5"));
        assert_eq!(v("users=18446744073709551615").get("users"), Some(u64::MAX));
    }

    #[test]
    fn refuses_bad_text_with_a_reason() {
        use PositionError::*;
        let cases: &[(&str, PositionError)] = &[
            ("users=", MissingPosition("users=".into())),
            ("=5", MissingLog("=5".into())),
            ("users=-1", BadNumber("-1".into())),
            ("users=+1", BadNumber("+1".into())),
            ("users=1.5", BadNumber("1.5".into())),
            (
                "users=18446744073709551616",
                BadNumber("18446744073709551616".into()),
            ),
            ("users=1,users=2", Duplicate("users".into())),
            ("", Empty),
            ("  ", Empty),
            ("users=1,,orders=2", Empty),
            ("1234", NoDefaultLog("1234".into())),
            ("abc", BadNumber("abc".into())),
            ("us ers=1", BadLogName("us ers".into())),
        ];
        for (text, want) in cases {
            assert_eq!(
                &PositionVector::parse(text, None).unwrap_err(),
                want,
                "{text:?}"
            );
        }
        assert!(PositionVector::parse("users=1,", Some("users")).is_err());
    }

    #[test]
    fn covers_only_looks_at_the_logs_of_the_other_side() {
        assert!(v("users=5,orders=1").covers(&v("users=5")));
        assert!(!v("users=4,orders=9").covers(&v("users=5")));
        assert!(!v("orders=9").covers(&v("users=1")));
        assert!(v("orders=9").covers(&PositionVector::new()));
    }

    #[test]
    fn restrict_keeps_only_named_logs() {
        assert_eq!(
            v("users=5,orders=1").restrict(&["users", "x"]),
            v("users=5")
        );
        assert!(v("orders=1").restrict(&["users"]).is_empty());
    }

    fn arb_vector() -> impl Strategy<Value = PositionVector> {
        prop::collection::btree_map("[a-c]{1,2}", any::<u64>(), 0..5).prop_map(PositionVector)
    }

    proptest! {
        #[test]
        fn merge_is_commutative_associative_idempotent(a in arb_vector(), b in arb_vector(), c in arb_vector()) {
            let mut ab = a.clone(); ab.merge(&b);
            let mut ba = b.clone(); ba.merge(&a);
            prop_assert_eq!(&ab, &ba);
            let mut ab_c = ab.clone(); ab_c.merge(&c);
            let mut bc = b.clone(); bc.merge(&c);
            let mut a_bc = a.clone(); a_bc.merge(&bc);
            prop_assert_eq!(&ab_c, &a_bc);
            let mut aa = a.clone();
            prop_assert!(!aa.merge(&a));
            prop_assert_eq!(&aa, &a);
        }

        #[test]
        fn merge_covers_both_sides(a in arb_vector(), b in arb_vector()) {
            let mut m = a.clone(); m.merge(&b);
            prop_assert!(m.covers(&a) && m.covers(&b));
        }

        #[test]
        fn covers_is_a_partial_order(a in arb_vector(), b in arb_vector(), c in arb_vector()) {
            prop_assert!(a.covers(&a));
            if a.covers(&b) && b.covers(&a) { prop_assert_eq!(&a, &b); }
            if a.covers(&b) && b.covers(&c) { prop_assert!(a.covers(&c)); }
        }

        #[test]
        fn text_form_round_trips(a in arb_vector()) {
            prop_assume!(!a.is_empty());
            prop_assert_eq!(PositionVector::parse(&a.to_string(), None).unwrap(), a);
        }

        #[test]
        fn parse_never_panics(s in "\\PC{0,40}") {
            let _ = PositionVector::parse(&s, Some("users"));
        }
    }
}
