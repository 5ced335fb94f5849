//! Load generators and benchmarks for Caduceus: the messaging load test behind the `load`
//! binary and the directory benchmark behind `directory_bench`.

pub mod directory;
/// The messaging load test behind the `load` binary.
pub mod load;
