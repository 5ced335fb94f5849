//! Load generators and benchmarks for Caduceus.

pub mod directory;
