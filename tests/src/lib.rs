//! End-to-end test harness for Caduceus.
//!
//! Every test starts its own `caduceus` process ([`TestServer`]) on a free loopback port, with a
//! fresh RocksDB data directory in a temporary folder. The test drives it like a client would,
//! with raw HTTP requests ([`ApiResponse`]) and with a real matrix-sdk client ([`TestClient`]).
//! [`assert_matches_spec`] checks response bodies against the Matrix Client-Server API
//! definitions stored in `spec/client-server-api.json`. [`SmtpServer`] receives the mails the
//! server sends.
//!
//! The tests run the binary that is already built. `cargo test --workspace` builds it, because
//! the server crate has tests of its own. `cargo test -p caduceus-tests` does not, so run
//! `cargo build -p caduceus-server` first, or set `CADUCEUS_BIN` to the binary to test.
//! [`TestAppservice`] runs `caduceus-appservice`, found next to `caduceus` or through
//! `CADUCEUS_APPSERVICE_BIN`; build it with `cargo build -p caduceus-appservice`.

mod accounts;
mod appservice;
mod http;
mod sdk;
mod server;
mod smtp;
mod spec;

pub use accounts::{password_auth, Account, PASSWORD};
pub use appservice::{appservice_binary, TestAppservice, BOT_LOCALPART};
pub use http::{encode_path_segment, ApiResponse};
pub use sdk::{uiaa_password, TestClient};
pub use server::{caduceus_binary, AdminOutput, TestServer, SERVER_NAME, SEVERAL_PRIMARY_DEVICES};
pub use smtp::{ReceivedMail, SmtpServer};
pub use spec::{assert_matches_spec, assert_transaction_matches_spec, validate_response};
