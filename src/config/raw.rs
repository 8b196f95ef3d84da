//! Raw serde structs mirroring the TOML file. (Stub: the config helper fills this in.)
