//! The shared write-through cache: one `SET ... PX` per put, one `MGET` (session and
//! global entry, same slot) per get.
//!
//! Value encoding: `tmc2\n<status>\n<+content-type | ->\n<identity>\n<position
//! text>\n<body>`; the body is raw bytes (everything after the fifth line break).
//! Entries of the older `tmc1` form (no identity) decode with an empty identity,
//! which no request has, so they are never answered (they expire by their TTL).

use std::time::Duration;

use bytes::Bytes;

use super::{Inner, Op};
use crate::cache::CachedResponse;
use crate::config::CacheScope;
use crate::position::PositionVector;
use crate::store::StoreError;

const MAGIC: &[u8] = b"tmc2\n";
const MAGIC_V1: &[u8] = b"tmc1\n";

/// Encodes an entry for Redis.
pub(crate) fn encode(entry: &CachedResponse) -> Vec<u8> {
    let content_type = match &entry.content_type {
        Some(ct) => format!("+{ct}"),
        None => "-".to_owned(),
    };
    let head = format!(
        "{}\n{content_type}\n{}\n{}\n",
        entry.status, entry.identity, entry.position
    );
    let mut out = Vec::with_capacity(MAGIC.len() + head.len() + entry.body.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(head.as_bytes());
    out.extend_from_slice(&entry.body);
    out
}

/// Decodes what [`encode`] wrote; anything else is a [`StoreError::Decode`].
pub(crate) fn decode(bytes: &[u8]) -> Result<CachedResponse, StoreError> {
    let bad = |what: &str| StoreError::Decode(format!("cache entry: {what}"));
    let (rest, fields) = if let Some(rest) = bytes.strip_prefix(MAGIC) {
        (rest, 5)
    } else if let Some(rest) = bytes.strip_prefix(MAGIC_V1) {
        (rest, 4)
    } else {
        return Err(bad("unknown format"));
    };
    let mut lines = rest.splitn(fields, |b| *b == b'\n');
    let (Some(status), Some(content_type)) = (lines.next(), lines.next()) else {
        return Err(bad("truncated"));
    };
    let identity = if fields == 5 {
        lines.next()
    } else {
        Some(&b""[..])
    };
    let (Some(identity), Some(position), Some(body)) = (identity, lines.next(), lines.next())
    else {
        return Err(bad("truncated"));
    };
    fn text(field: &[u8]) -> Result<&str, StoreError> {
        std::str::from_utf8(field).map_err(|_| StoreError::Decode("cache entry: not UTF-8".into()))
    }
    let status: u16 = text(status)?
        .parse()
        .ok()
        .filter(|s| (100..=999).contains(s))
        .ok_or_else(|| bad("bad status"))?;
    let content_type = match text(content_type)? {
        "-" => None,
        ct => Some(
            ct.strip_prefix('+')
                .ok_or_else(|| bad("bad content type"))?
                .to_owned(),
        ),
    };
    let position = match text(position)? {
        "" => PositionVector::new(),
        p => PositionVector::parse(p, None).map_err(|e| bad(&e.to_string()))?,
    };
    Ok(CachedResponse {
        status,
        content_type,
        body: Bytes::copy_from_slice(body),
        position,
        identity: text(identity)?.to_owned(),
    })
}

impl Inner {
    pub(crate) async fn cache_get(
        &self,
        key: &str,
        sid: &str,
        identity: &str,
    ) -> Result<Option<CachedResponse>, StoreError> {
        let keys = [
            self.keys.cache_session(key, sid),
            self.keys.cache_global(key),
        ];
        self.call(Op::CacheGet, async {
            let mut conn = self.conn.handle().await?;
            let values: Vec<Option<Vec<u8>>> =
                redis::cmd("MGET").arg(&keys).query_async(&mut conn).await?;
            // The session's own entry first, then the global one; only the caller's
            // identity's.
            for bytes in values.into_iter().flatten() {
                let entry = decode(&bytes)?;
                if entry.identity == identity {
                    return Ok(Some(entry));
                }
            }
            Ok(None)
        })
        .await
    }

    pub(crate) async fn cache_put(
        &self,
        key: &str,
        scope: CacheScope,
        sid: &str,
        entry: &CachedResponse,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        let redis_key = match scope {
            CacheScope::Session => self.keys.cache_session(key, sid),
            CacheScope::Global => self.keys.cache_global(key),
        };
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
        let value = encode(entry);
        self.call(Op::CachePut, async {
            let mut conn = self.conn.handle().await?;
            let () = redis::cmd("SET")
                .arg(&redis_key)
                .arg(&value)
                .arg("PX")
                .arg(ttl_ms)
                .query_async(&mut conn)
                .await?;
            Ok(())
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(content_type: Option<&str>, position: &str, body: &'static [u8]) -> CachedResponse {
        CachedResponse {
            status: 201,
            content_type: content_type.map(str::to_owned),
            body: Bytes::from_static(body),
            position: if position.is_empty() {
                PositionVector::new()
            } else {
                PositionVector::parse(position, None).expect("test vector")
            },
            identity: "id".into(),
        }
    }

    #[test]
    fn entries_round_trip_including_binary_bodies_and_empty_fields() {
        for e in [
            entry(
                Some("application/json"),
                "users=18446744073709551615",
                b"{\"a\":1}",
            ),
            entry(None, "", b""),
            entry(Some(""), "users=1,orders=2", b"line1\nline2\n\x00\xff"),
        ] {
            assert_eq!(decode(&encode(&e)).expect("decodes"), e);
        }
    }

    #[test]
    fn older_entries_decode_with_no_identity() {
        let old = decode(b"tmc1\n200\n-\nusers=1\nbody").expect("decodes");
        assert_eq!(old.identity, "");
        assert_eq!(&old.body[..], b"body");
    }

    #[test]
    fn foreign_or_truncated_values_are_decode_errors() {
        for bad in [
            &b""[..],
            b"hello",
            b"tmc1\n200\n-\n",
            b"tmc2\n200\n-\nid\n",
            b"tmc1\nabc\n-\n\nbody",
            b"tmc1\n42\n-\n\nbody",
            b"tmc1\n200\ntext/html\n\nbody",
            b"tmc1\n200\n-\nusers=x\nbody",
            b"tmc1\n200\n\xff\n\nbody",
        ] {
            assert!(
                matches!(decode(bad), Err(StoreError::Decode(_))),
                "{bad:?} must be refused"
            );
        }
    }
}
