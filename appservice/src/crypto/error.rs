//! The one error type of the bot's encryption layer.

use std::path::PathBuf;

use matrix_sdk_crypto::store::CryptoStoreError;
use matrix_sdk_crypto::{MegolmError, OlmError};
use matrix_sdk_sqlite::OpenStoreError;
use ruma::{OwnedEventId, OwnedUserId};

/// A failure of [`BotCrypto`](super::BotCrypto).
///
/// A room key that has not arrived yet is not an error: [`BotCrypto::decrypt`] returns it as
/// [`Decrypted::MissingRoomKey`](super::Decrypted::MissingRoomKey).
///
/// [`BotCrypto::decrypt`]: super::BotCrypto::decrypt
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The homeserver URL given to [`BotCrypto::open`](super::BotCrypto::open) is unusable.
    #[error("invalid homeserver URL {url:?}: {reason}")]
    InvalidHomeserverUrl { url: String, reason: String },

    /// The SQLite crypto store could not be opened or created.
    #[error("failed to open the crypto store in {}: {error}", path.display())]
    OpenStore { path: PathBuf, error: OpenStoreError },

    /// Reading or writing the crypto store failed. This is also the error when the store contains
    /// the keys of another user or device than the one given to `open`.
    #[error(transparent)]
    Store(#[from] CryptoStoreError),

    /// Handling to-device messages, one-time keys or Olm sessions failed.
    #[error(transparent)]
    Olm(#[from] OlmError),

    /// A room event could not be decrypted or encrypted, for another reason than a missing
    /// room key.
    #[error(transparent)]
    Megolm(#[from] MegolmError),

    /// The event was encrypted with a room key that belongs to a device of another user than
    /// the event's sender, so its content must not be attributed to that sender.
    #[error("the room key of event {event_id} does not belong to its sender {sender}")]
    MismatchedSender { event_id: OwnedEventId, sender: OwnedUserId },

    /// A request could not be turned into an HTTP request.
    #[error("failed to build a request of type {request_type}: {error}")]
    BuildRequest { request_type: &'static str, error: ruma::api::error::IntoHttpError },

    /// The homeserver could not be reached, or the connection failed or timed out.
    #[error("{request} failed: {error}")]
    Http { request: String, error: reqwest::Error },

    /// The homeserver returned an error response.
    #[error("{request} returned {status} {}: {message}", errcode.as_deref().unwrap_or("(no errcode)"))]
    Server { request: String, status: u16, errcode: Option<String>, message: String },

    /// The homeserver returned a success status with a body that does not match the endpoint.
    #[error("{request} returned an invalid response: {error}")]
    InvalidResponse { request: String, error: String },

    /// Content to encrypt could not be serialized, or an event was not valid JSON.
    #[error(transparent)]
    Json(#[from] serde_json::Error),
}

impl Error {
    /// Returns whether the homeserver rejected the access token (`401`), which no retry fixes.
    pub fn is_unauthorized(&self) -> bool {
        matches!(self, Error::Server { status: 401, .. })
    }
}

/// The result type of the bot's encryption layer.
pub type Result<T, E = Error> = std::result::Result<T, E>;
