//! Client-Server API endpoints, one module per area as ruma names them.

pub mod account;
pub mod backup;
pub mod capabilities;
pub mod config;
pub mod device;
pub mod discovery;
#[cfg(test)]
mod e2ee_tests;
pub mod filter;
pub mod keys;
pub mod profile;
pub mod push;
pub mod register;
pub mod session;
pub mod to_device;
