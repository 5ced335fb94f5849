//! placeholder

/// The messaging load test behind the `load` binary.
pub mod load;
