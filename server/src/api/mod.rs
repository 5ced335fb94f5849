//! The HTTP layer: axum routes, the request extractor and the response conversion.
//!
//! Handlers parse with [`ruma::Ruma`], call one service function and shape the response; the
//! rules live in `service`.

pub mod admin_v1;
pub mod client;
pub mod directory_v1;
mod router;
pub mod ruma;

pub use router::router;
