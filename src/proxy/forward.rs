//! Forwarding a request to an upstream instance and its response back.
