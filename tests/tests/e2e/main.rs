//! End-to-end tests: each test starts its own `caduceus` process and talks to it over HTTP.
//!
//! All areas live in one test binary, so matrix-sdk is linked once instead of once per area.

// Spawning matrix-sdk's sync future needs a deeper trait-solver recursion than the default 128.
#![recursion_limit = "256"]

mod account_data;
mod accounts;
mod admin_cli;
mod appservice;
mod bot_crypto;
mod deletion_requests;
mod devices;
mod directory;
mod discovery;
mod e2ee;
mod email;
mod errors;
mod gatekeeper;
mod gating;
mod invitations;
mod media;
mod profile;
mod push_rules;
mod rate_limits;
mod restart;
mod rooms;
mod security;
mod sessions;
mod threepid;
