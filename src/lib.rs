//! tidemark: a read-your-writes consistency gateway.
//!
//! Module map (request flow in `../shared/ARCHITECTURE.md`):
//! - [`config`]: TOML -> raw structs -> validated [`config::Config`] (all errors at once).
//! - [`position`]: position vectors (parse, format, covers, merge).
//! - [`route`]: the route table (file order, matchit patterns) and cache-key templates.
//! - [`token`]: version tokens (JWT), key ring, header/cookie extraction.
//! - [`checkpoint`]: per-projection checkpoints, the waiter registry, write-time record,
//!   checkpoint sources (poll here; push in [`admin`], header in the read path).
//! - [`gate`]: the read decision, a pure function.
//! - [`proxy`]: upstream client, hop-by-hop/forwarded headers, forwarding.
//! - [`cache`]: the write-through cache (memory; Redis in [`store::redis`]).
//! - [`store`]: shared state in Redis.
//! - [`admin`]: the admin listener.
//! - [`error`]: errors -> problem+json.
//! - [`demo`]: the example backend behind `tidemark demo`, tests and load tests.

pub mod admin;
pub mod cache;
pub mod checkpoint;
pub mod config;
pub mod demo;
pub mod error;
pub mod gate;
pub mod position;
pub mod proxy;
pub mod route;
pub mod store;
pub mod token;
