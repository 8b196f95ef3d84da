//! The one place gateway errors become HTTP: `application/problem+json` (RFC 9457).
