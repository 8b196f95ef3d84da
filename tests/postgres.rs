//! The PostgreSQL integration suite (real servers, never a mock): presets against
//! each framework's table layout, read-your-writes end to end per preset, faults,
//! and the `LISTEN` wake. One test binary so the servers' start-up is paid once per
//! test, not per compiled crate.

mod common;
#[path = "support/postgres.rs"]
mod pg;

#[path = "postgres/app.rs"]
mod app;
#[path = "postgres/faults.rs"]
mod faults;
#[path = "postgres/listen.rs"]
mod listen;
#[path = "postgres/presets.rs"]
mod presets;
#[path = "postgres/ryw.rs"]
mod ryw;
