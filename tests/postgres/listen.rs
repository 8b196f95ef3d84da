//! The `LISTEN` wake.
