//! End-to-end tests: each test starts its own `caduceus` process and talks to it over HTTP.
//!
//! All areas live in one test binary, so matrix-sdk is linked once instead of once per area.

mod account_data;
mod accounts;
mod admin_cli;
mod devices;
mod discovery;
mod errors;
mod profile;
mod push_rules;
mod restart;
