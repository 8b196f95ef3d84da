//! Faults: the database killed mid-run and restarted; a fence that times out.
