//! Checkpoint sources that run on their own: one file per kind, each a task per
//! projection (or per instance) that reads positions and hands vectors to the
//! projection's `apply` (the registry keeps checkpoints monotonic).
//!
//! - [`poll`]: `GET poll_url` every `poll_interval`.
//! - [`nats`]: a JetStream durable consumer's ack floor, every `interval`.
//!
//! The other sources are not tasks of their own: `push` is the admin API
//! (`src/admin/`), `header` is read from answers in the read path
//! (`src/gateway/read.rs`), and `redis` is the Redis subscriber in
//! `src/store/redis/sync.rs` (shared with the push write-through), which feeds the
//! registry through [`crate::checkpoint::sink`].

pub mod nats;
pub mod poll;
