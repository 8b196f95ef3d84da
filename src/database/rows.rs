//! Rows of `(log, position)` -> a [`PositionVector`]. The position column is a
//! `pg_lsn` (taken as the 64-bit integer `(hi << 32) | lo`), an integer
//! (`bigint`, `integer`; never negative), or text holding either. A row whose
//! position is NULL (no progress recorded yet, or `pg_last_wal_replay_lsn()` on a
//! primary) is skipped.

use std::collections::BTreeMap;

use tokio_postgres::types::{PgLsn, Type};
use tokio_postgres::Row;

use crate::position::{valid_log_name, PositionVector};

/// Why rows could not be read as positions.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RowError {
    #[error("a row has {0} column(s); the query must return (log, position)")]
    Columns(usize),
    #[error("the log column is not text or is NULL")]
    Log,
    #[error("`{0}` is not a valid log name")]
    LogName(String),
    #[error("the position of log `{log}` is {found}; expected a pg_lsn or a non-negative integer")]
    Position { log: String, found: String },
}

/// Reads every row; a log named twice keeps its highest position.
pub fn positions(rows: &[Row]) -> Result<PositionVector, RowError> {
    let mut map: BTreeMap<String, u64> = BTreeMap::new();
    for row in rows {
        if row.len() != 2 {
            return Err(RowError::Columns(row.len()));
        }
        let log: String = row.try_get(0).map_err(|_| RowError::Log)?;
        if !valid_log_name(&log) {
            return Err(RowError::LogName(log));
        }
        let Some(position) = position(row, &log)? else {
            continue;
        };
        let slot = map.entry(log).or_insert(0);
        *slot = (*slot).max(position);
    }
    PositionVector::from_map(map).map_err(|e| RowError::Position {
        log: String::new(),
        found: e.to_string(),
    })
}

fn position(row: &Row, log: &str) -> Result<Option<u64>, RowError> {
    let bad = |found: String| RowError::Position {
        log: log.to_string(),
        found,
    };
    let ty = row.columns()[1].type_().clone();
    let value: Option<i128> = if ty == Type::PG_LSN {
        row.try_get::<_, Option<PgLsn>>(1)
            .map_err(|e| bad(e.to_string()))?
            .map(|l| u64::from(l) as i128)
    } else if ty == Type::INT8 {
        row.try_get::<_, Option<i64>>(1)
            .map_err(|e| bad(e.to_string()))?
            .map(i128::from)
    } else if ty == Type::INT4 {
        row.try_get::<_, Option<i32>>(1)
            .map_err(|e| bad(e.to_string()))?
            .map(i128::from)
    } else if ty == Type::INT2 {
        row.try_get::<_, Option<i16>>(1)
            .map_err(|e| bad(e.to_string()))?
            .map(i128::from)
    } else if ty == Type::TEXT || ty == Type::VARCHAR {
        match row
            .try_get::<_, Option<String>>(1)
            .map_err(|e| bad(e.to_string()))?
        {
            None => None,
            Some(text) => Some(parse_text(&text).ok_or_else(|| bad(format!("`{text}`")))? as i128),
        }
    } else {
        return Err(bad(format!(
            "of type {ty} (cast it: `::bigint` or `::pg_lsn`)"
        )));
    };
    match value {
        None => Ok(None),
        Some(v) if v < 0 => Err(bad(v.to_string())),
        Some(v) => Ok(Some(v as u64)),
    }
}

/// A decimal integer or an LSN `HI/LO` (hexadecimal halves).
pub fn parse_text(text: &str) -> Option<u64> {
    let text = text.trim();
    if let Some((hi, lo)) = text.split_once('/') {
        let hi = u32::from_str_radix(hi, 16).ok()?;
        let lo = u32::from_str_radix(lo, 16).ok()?;
        return Some((u64::from(hi) << 32) | u64::from(lo));
    }
    text.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::parse_text;

    #[test]
    fn lsn_text_is_the_64_bit_integer() {
        assert_eq!(parse_text("0/1511B00"), Some(0x1511B00));
        assert_eq!(parse_text("16/B374D848"), Some((0x16 << 32) | 0xB374D848));
        assert_eq!(parse_text("42"), Some(42));
        assert_eq!(parse_text("-1"), None);
        assert_eq!(parse_text("1/xyz"), None);
    }
}
