//! End-to-end tests live in `tests/`; this crate links the agent and the
//! coordinator together, which nothing else may do.
