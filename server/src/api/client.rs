//! Client-Server API endpoints, one module per area as ruma names them.

pub mod account;
pub mod authenticated_media;
pub mod capabilities;
pub mod config;
pub mod device;
pub mod discovery;
pub mod filter;
pub mod media;
pub mod profile;
pub mod push;
pub mod register;
pub mod session;
