//! Client-Server API endpoints, one module per area as ruma names them.

pub mod account;
pub mod alias;
pub mod appservice;
pub mod authenticated_media;
pub mod backup;
pub mod capabilities;
pub mod config;
pub mod context;
pub mod dehydrated_device;
pub mod device;
pub mod directory;
pub mod discovery;
#[cfg(test)]
mod e2ee_tests;
pub mod filter;
pub mod keys;
pub mod media;
pub mod membership;
pub mod message;
pub mod profile;
pub mod push;
pub mod receipt;
pub mod redact;
pub mod register;
pub mod relations;
pub mod room;
pub mod session;
pub mod state;
pub mod sync;
pub mod threepid;
pub mod to_device;
pub mod typing;
pub mod user_directory;
