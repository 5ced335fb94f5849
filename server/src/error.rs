//! The server's error type and its one mapping to Matrix error responses.
//!
//! Handlers and services return [`Error`]. Client mistakes carry an [`ErrorCode`] and a message
//! meant for the client; our own failures ([`Error::Internal`]) are logged with their details and
//! reach the client only as a generic `M_UNKNOWN` with status 500.

use std::time::Duration;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Map, Value};

use crate::storage::StorageError;

/// A Matrix error code (`errcode`), with the extra fields some codes carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ErrorCode {
    Forbidden,
    UnknownToken {
        soft_logout: bool,
    },
    MissingToken,
    UserLocked,
    BadJson,
    NotJson,
    NotFound,
    LimitExceeded {
        retry_after: Option<Duration>,
    },
    Unrecognized {
        method_not_allowed: bool,
    },
    Unknown,
    Unauthorized,
    UserDeactivated,
    UserInUse,
    InvalidUsername,
    Exclusive,
    GuestAccessForbidden,
    InvalidParam,
    MissingParam,
    TooLarge,
    WeakPassword,
    KeyTooLarge,
    ProfileTooLarge,
    InvalidSignature,
    /// A key backup upload named a version other than the current one.
    WrongRoomKeysVersion {
        current_version: String,
    },
    UnsupportedRoomVersion,
    RoomInUse,
    InvalidRoomState,
    BadState,
    CannotLeaveServerNoticeRoom,
    CannotOverwriteMedia,
    NotYetUploaded,
    /// The application service to ping has no URL.
    UrlNotSet,
    /// The application service answered a ping with another status than 200.
    BadStatus {
        status: u16,
        body: String,
    },
    ConnectionFailed,
    ConnectionTimeout,
    ThreepidInUse,
    ThreepidNotFound,
    ThreepidDenied,
    ThreepidAuthFailed,
    ThreepidMediumNotSupported,
    ServerNotTrusted,
    /// Not in the Client-Server API's list; the Identity Service API uses it for a malformed
    /// address, and this server validates addresses itself.
    InvalidEmail,
}

impl ErrorCode {
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Forbidden => "M_FORBIDDEN",
            Self::UnknownToken { .. } => "M_UNKNOWN_TOKEN",
            Self::MissingToken => "M_MISSING_TOKEN",
            Self::UserLocked => "M_USER_LOCKED",
            Self::BadJson => "M_BAD_JSON",
            Self::NotJson => "M_NOT_JSON",
            Self::NotFound => "M_NOT_FOUND",
            Self::LimitExceeded { .. } => "M_LIMIT_EXCEEDED",
            Self::Unrecognized { .. } => "M_UNRECOGNIZED",
            Self::Unknown => "M_UNKNOWN",
            Self::Unauthorized => "M_UNAUTHORIZED",
            Self::UserDeactivated => "M_USER_DEACTIVATED",
            Self::UserInUse => "M_USER_IN_USE",
            Self::InvalidUsername => "M_INVALID_USERNAME",
            Self::Exclusive => "M_EXCLUSIVE",
            Self::GuestAccessForbidden => "M_GUEST_ACCESS_FORBIDDEN",
            Self::InvalidParam => "M_INVALID_PARAM",
            Self::MissingParam => "M_MISSING_PARAM",
            Self::TooLarge => "M_TOO_LARGE",
            Self::WeakPassword => "M_WEAK_PASSWORD",
            Self::KeyTooLarge => "M_KEY_TOO_LARGE",
            Self::ProfileTooLarge => "M_PROFILE_TOO_LARGE",
            Self::InvalidSignature => "M_INVALID_SIGNATURE",
            Self::WrongRoomKeysVersion { .. } => "M_WRONG_ROOM_KEYS_VERSION",
            Self::UnsupportedRoomVersion => "M_UNSUPPORTED_ROOM_VERSION",
            Self::RoomInUse => "M_ROOM_IN_USE",
            Self::InvalidRoomState => "M_INVALID_ROOM_STATE",
            Self::BadState => "M_BAD_STATE",
            Self::CannotLeaveServerNoticeRoom => "M_CANNOT_LEAVE_SERVER_NOTICE_ROOM",
            Self::CannotOverwriteMedia => "M_CANNOT_OVERWRITE_MEDIA",
            Self::NotYetUploaded => "M_NOT_YET_UPLOADED",
            Self::UrlNotSet => "M_URL_NOT_SET",
            Self::BadStatus { .. } => "M_BAD_STATUS",
            Self::ConnectionFailed => "M_CONNECTION_FAILED",
            Self::ConnectionTimeout => "M_CONNECTION_TIMEOUT",
            Self::ThreepidInUse => "M_THREEPID_IN_USE",
            Self::ThreepidNotFound => "M_THREEPID_NOT_FOUND",
            Self::ThreepidDenied => "M_THREEPID_DENIED",
            Self::ThreepidAuthFailed => "M_THREEPID_AUTH_FAILED",
            Self::ThreepidMediumNotSupported => "M_THREEPID_MEDIUM_NOT_SUPPORTED",
            Self::ServerNotTrusted => "M_SERVER_NOT_TRUSTED",
            Self::InvalidEmail => "M_INVALID_EMAIL",
        }
    }

    /// Returns the HTTP status the specification gives this code.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Forbidden
            | Self::UserDeactivated
            | Self::GuestAccessForbidden
            | Self::UserLocked
            | Self::ThreepidDenied
            | Self::WrongRoomKeysVersion { .. } => StatusCode::FORBIDDEN,
            Self::UnknownToken { .. } | Self::MissingToken | Self::Unauthorized => {
                StatusCode::UNAUTHORIZED
            }
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::LimitExceeded { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::Unrecognized { method_not_allowed: true } => StatusCode::METHOD_NOT_ALLOWED,
            Self::Unrecognized { method_not_allowed: false } => StatusCode::NOT_FOUND,
            Self::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::CannotOverwriteMedia => StatusCode::CONFLICT,
            Self::NotYetUploaded | Self::ConnectionTimeout => StatusCode::GATEWAY_TIMEOUT,
            Self::BadStatus { .. } | Self::ConnectionFailed => StatusCode::BAD_GATEWAY,
            Self::BadJson
            | Self::NotJson
            | Self::Unknown
            | Self::UserInUse
            | Self::InvalidUsername
            | Self::Exclusive
            | Self::InvalidParam
            | Self::MissingParam
            | Self::WeakPassword
            | Self::KeyTooLarge
            | Self::ProfileTooLarge
            | Self::InvalidSignature => StatusCode::BAD_REQUEST,
            Self::UnsupportedRoomVersion
            | Self::RoomInUse
            | Self::InvalidRoomState
            | Self::BadState
            | Self::CannotLeaveServerNoticeRoom
            | Self::UrlNotSet => StatusCode::BAD_REQUEST,
            Self::CannotLeaveServerNoticeRoom => StatusCode::BAD_REQUEST,
            Self::ThreepidInUse
            | Self::ThreepidNotFound
            | Self::ThreepidAuthFailed
            | Self::ThreepidMediumNotSupported
            | Self::ServerNotTrusted
            | Self::InvalidEmail => StatusCode::BAD_REQUEST,
        }
    }
}

/// The body of a user-interactive authentication (UIA) challenge, sent with status 401.
#[derive(Debug, Clone)]
pub struct UiaChallenge {
    /// The stage lists, any one of which completes the authentication.
    pub flows: Vec<Vec<String>>,
    pub completed: Vec<String>,
    pub session: String,
    pub params: Map<String, Value>,
    /// The reason the last submitted stage failed, if it did.
    pub stage_error: Option<(ErrorCode, String)>,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The client's request was wrong or not allowed.
    #[error("{code:?}: {message}")]
    Matrix { code: ErrorCode, message: String, status: Option<StatusCode> },

    /// The request needs (more) user-interactive authentication.
    #[error("user-interactive authentication required")]
    Uia(Box<UiaChallenge>),

    /// Our own failure; details are logged, never sent.
    #[error("internal error: {0}")]
    Internal(#[from] anyhow::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::Matrix { code, message: message.into(), status: None }
    }

    /// Creates an error with a status other than the code's usual one, as some endpoints specify.
    pub fn with_status(code: ErrorCode, status: StatusCode, message: impl Into<String>) -> Self {
        Self::Matrix { code, message: message.into(), status: Some(status) }
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Forbidden, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::NotFound, message)
    }

    pub fn bad_json(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::BadJson, message)
    }

    pub fn invalid_param(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidParam, message)
    }

    /// Returns the errcode this error is sent with.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::Matrix { code, .. } => code.clone(),
            Self::Uia(_) => ErrorCode::Unauthorized,
            Self::Internal(_) => ErrorCode::Unknown,
        }
    }
}

impl From<StorageError> for Error {
    fn from(error: StorageError) -> Self {
        Self::Internal(error.into())
    }
}

impl From<tokio::task::JoinError> for Error {
    fn from(error: tokio::task::JoinError) -> Self {
        Self::Internal(error.into())
    }
}

fn error_body(code: &ErrorCode, message: &str) -> Map<String, Value> {
    let mut body = Map::new();
    body.insert("errcode".to_owned(), json!(code.as_str()));
    body.insert("error".to_owned(), json!(message));
    match code {
        ErrorCode::UnknownToken { soft_logout } => {
            body.insert("soft_logout".to_owned(), json!(soft_logout));
        }
        ErrorCode::LimitExceeded { retry_after: Some(retry_after) } => {
            body.insert("retry_after_ms".to_owned(), json!(retry_after.as_millis() as u64));
        }
        ErrorCode::WrongRoomKeysVersion { current_version } => {
            body.insert("current_version".to_owned(), json!(current_version));
        }
        ErrorCode::BadStatus { status, body: response } => {
            body.insert("status".to_owned(), json!(status));
            body.insert("body".to_owned(), json!(response));
        }
        _ => {}
    }
    body
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        match self {
            Self::Matrix { code, message, status } => {
                let status = status.unwrap_or_else(|| code.status());
                let mut response = (status, axum::Json(Value::Object(error_body(&code, &message))))
                    .into_response();
                if let ErrorCode::LimitExceeded { retry_after: Some(retry_after) } = code {
                    // Retry-After is in whole seconds; round up so a client never retries early.
                    let seconds = retry_after.as_millis().div_ceil(1000).max(1);
                    if let Ok(value) = HeaderValue::from_str(&seconds.to_string()) {
                        response.headers_mut().insert(header::RETRY_AFTER, value);
                    }
                }
                response
            }
            Self::Uia(challenge) => {
                let mut body = match &challenge.stage_error {
                    Some((code, message)) => error_body(code, message),
                    None => Map::new(),
                };
                let flows: Vec<Value> =
                    challenge.flows.iter().map(|stages| json!({ "stages": stages })).collect();
                body.insert("flows".to_owned(), json!(flows));
                body.insert("params".to_owned(), Value::Object(challenge.params));
                body.insert("session".to_owned(), json!(challenge.session));
                if !challenge.completed.is_empty() {
                    body.insert("completed".to_owned(), json!(challenge.completed));
                }
                (StatusCode::UNAUTHORIZED, axum::Json(Value::Object(body))).into_response()
            }
            Self::Internal(error) => {
                tracing::error!(error = ?error, "request failed with an internal error");
                let body = error_body(&ErrorCode::Unknown, "Internal server error");
                (StatusCode::INTERNAL_SERVER_ERROR, axum::Json(Value::Object(body))).into_response()
            }
        }
    }
}
