//! The `Ruma<T>` extractor, which turns an HTTP request into a ruma request type, and
//! `RumaResponse<T>`, which turns a ruma response type back into HTTP.
//!
//! The extractor authenticates the sender as the endpoint's ruma metadata requires, reads the body
//! up to the configured limit, and maps every parse failure to the Matrix error a client expects:
//! `M_TOO_LARGE`, `M_NOT_JSON`, `M_BAD_JSON` or `M_INVALID_PARAM`.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{FromRef, FromRequest, FromRequestParts, RawPathParams, Request};
use axum::response::{IntoResponse, Response};
use bytes::BytesMut;
use http::header::{AUTHORIZATION, CONTENT_LENGTH};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use ruma::api::auth_scheme::{
    AccessToken, AccessTokenOptional, AppserviceToken, AppserviceTokenOptional, NoAccessToken,
    NoAuthentication,
};
use ruma::api::error::{DeserializationError, FromHttpRequestError};
use ruma::api::{IncomingRequest, Metadata, OutgoingResponse};
use ruma::{OwnedDeviceId, UserId};

use crate::error::{Error, ErrorCode, Result};
use crate::service::accounts::Sender;
use crate::service::appservices::Appservice;
use crate::service::Services;

mod upload;
pub use upload::{RumaUpload, UploadBody};

/// Whether an endpoint needs an access token, following the auth scheme in its ruma metadata.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenPolicy {
    None,
    Optional,
    Required,
}

pub trait AuthPolicy {
    const POLICY: TokenPolicy;
}

impl AuthPolicy for NoAuthentication {
    const POLICY: TokenPolicy = TokenPolicy::None;
}

impl AuthPolicy for NoAccessToken {
    const POLICY: TokenPolicy = TokenPolicy::None;
}

impl AuthPolicy for AccessToken {
    const POLICY: TokenPolicy = TokenPolicy::Required;
}

impl AuthPolicy for AccessTokenOptional {
    const POLICY: TokenPolicy = TokenPolicy::Optional;
}

// Every endpoint that takes an access token also takes an application service's `as_token`
// (see `authenticate`), so the endpoints that ruma marks as application-service ones need no
// policy of their own.
impl AuthPolicy for AppserviceToken {
    const POLICY: TokenPolicy = TokenPolicy::Required;
}

impl AuthPolicy for AppserviceTokenOptional {
    const POLICY: TokenPolicy = TokenPolicy::Optional;
}

/// A parsed ruma request and, where a token was given, who sent it.
pub struct Ruma<T> {
    pub body: T,
    pub sender: Option<Sender>,
    /// The address the request came from, for login protection and the audit log.
    pub client_ip: Option<std::net::IpAddr>,
}

impl<T> Ruma<T> {
    /// Returns the authenticated sender. Only call this on endpoints whose policy is `Required`, where the
    /// extractor has already rejected requests without a valid token.
    pub fn sender(&self) -> Result<&Sender> {
        self.sender.as_ref().ok_or_else(|| {
            Error::new(ErrorCode::MissingToken, "This endpoint requires an access token")
        })
    }
}

impl<T, S> FromRequest<S> for Ruma<T>
where
    T: IncomingRequest + Send + 'static,
    <T as Metadata>::Authentication: AuthPolicy,
    Arc<Services>: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = Error;

    async fn from_request(request: Request, state: &S) -> Result<Self> {
        let services = Arc::<Services>::from_ref(state);
        let (mut parts, body) = request.into_parts();
        let client_ip = parts
            .extensions
            .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
            .map(|info| info.0.ip());

        let path_args: Vec<String> =
            match RawPathParams::from_request_parts(&mut parts, state).await {
                Ok(params) => params.iter().map(|(_, value)| value.to_owned()).collect(),
                Err(_) => return Err(Error::invalid_param("A path parameter is not valid UTF-8")),
            };

        let sender = authenticate(&services, &parts, <T::Authentication as AuthPolicy>::POLICY)?;
        if let Some(sender) = &sender {
            tracing::Span::current().record("user_id", sender.user_id.as_str());
        }

        let limit = services.config.server.max_request_body_bytes;
        let body = read_body(&parts, body, limit).await?;
        if !body.is_empty() && parts.method != http::Method::GET {
            if let Err(error) = serde_json::from_slice::<serde::de::IgnoredAny>(&body) {
                return Err(Error::new(
                    ErrorCode::NotJson,
                    format!("The request body is not valid JSON: {error}"),
                ));
            }
        }

        let request = http::Request::from_parts(parts, body);
        let parsed = T::try_from_http_request(request, &path_args).map_err(request_error)?;
        Ok(Self { body: parsed, sender, client_ip })
    }
}

/// A JSON request body read with the configured size limit, for handlers whose body does not
/// fit a ruma type. Invalid JSON is `M_NOT_JSON`, an oversized body `M_TOO_LARGE`.
pub struct JsonBody(pub serde_json::Value);

impl<S> FromRequest<S> for JsonBody
where
    Arc<Services>: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = Error;

    async fn from_request(request: Request, state: &S) -> Result<Self> {
        let OptionalJsonBody(value) = OptionalJsonBody::from_request(request, state).await?;
        value.map(Self).ok_or_else(|| {
            Error::new(ErrorCode::NotJson, "The request body is empty; send a JSON object")
        })
    }
}

/// A JSON request body that may be empty (`None`), read like [`JsonBody`].
pub struct OptionalJsonBody(pub Option<serde_json::Value>);

impl<S> FromRequest<S> for OptionalJsonBody
where
    Arc<Services>: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = Error;

    async fn from_request(request: Request, state: &S) -> Result<Self> {
        let services = Arc::<Services>::from_ref(state);
        let (parts, body) = request.into_parts();
        let body = read_body(&parts, body, services.config.server.max_request_body_bytes).await?;
        if body.iter().all(u8::is_ascii_whitespace) {
            return Ok(Self(None));
        }
        let value = serde_json::from_slice(&body).map_err(|error| {
            Error::new(ErrorCode::NotJson, format!("The request body is not valid JSON: {error}"))
        })?;
        Ok(Self(Some(value)))
    }
}

/// The sender of a request whose token is optional, for handlers that parse their request
/// without a ruma type or whose ruma type takes no token. A token that is given must be valid.
pub struct MaybeAuthenticated(pub Option<Sender>);

impl<S> FromRequestParts<S> for MaybeAuthenticated
where
    Arc<Services>: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = Error;

    async fn from_request_parts(parts: &mut http::request::Parts, state: &S) -> Result<Self> {
        let services = Arc::<Services>::from_ref(state);
        let sender = authenticate(&services, parts, TokenPolicy::Optional)?;
        if let Some(sender) = &sender {
            tracing::Span::current().record("user_id", sender.user_id.as_str());
        }
        Ok(Self(sender))
    }
}

/// An authenticated sender, for handlers that parse their request without a ruma type.
pub struct Authenticated(pub Sender);

impl<S> FromRequestParts<S> for Authenticated
where
    Arc<Services>: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = Error;

    async fn from_request_parts(parts: &mut http::request::Parts, state: &S) -> Result<Self> {
        let services = Arc::<Services>::from_ref(state);
        let sender = authenticate(&services, parts, TokenPolicy::Required)?.ok_or_else(|| {
            Error::new(ErrorCode::MissingToken, "This endpoint requires an access token")
        })?;
        tracing::Span::current().record("user_id", sender.user_id.as_str());
        Ok(Self(sender))
    }
}

fn authenticate(
    services: &Services,
    parts: &http::request::Parts,
    policy: TokenPolicy,
) -> Result<Option<Sender>> {
    if policy == TokenPolicy::None {
        return Ok(None);
    }
    let Some(token) = access_token(parts)? else {
        return match policy {
            TokenPolicy::Required => {
                Err(Error::new(ErrorCode::MissingToken, "This endpoint requires an access token"))
            }
            _ => Ok(None),
        };
    };
    if let Some(appservice) = services.appservices.by_as_token(&token) {
        return appservice_sender(services, appservice, parts).map(Some);
    }
    match services.accounts.authenticate(&token)? {
        Some(sender) => {
            let ip = parts
                .extensions
                .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
                .map(|info| info.0.ip().to_string());
            services.accounts.touch_device(&sender, ip)?;
            Ok(Some(sender))
        }
        None => Err(Error::new(
            ErrorCode::UnknownToken { soft_logout: false },
            "The access token is not recognised; log in again",
        )),
    }
}

/// The sender of a request made with an application service's `as_token`: the service's own
/// user, or the user named by `?user_id=` if it is in the service's user namespaces and
/// registered. `?device_id=` picks one of that user's existing devices (MSC3202); without it the
/// request acts from a device ID that stands for the service.
fn appservice_sender(
    services: &Services,
    appservice: &Appservice,
    parts: &http::request::Parts,
) -> Result<Sender> {
    let query = parts.uri.query().unwrap_or_default();
    let param = |name: &str| {
        form_urlencoded::parse(query.as_bytes())
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.into_owned())
    };
    let user_id = match param("user_id") {
        None => appservice.sender.clone(),
        Some(user_id) => {
            let user_id = UserId::parse(&user_id).map_err(|_| {
                Error::invalid_param(format!("The user_id parameter {user_id:?} is not a user ID"))
            })?;
            if !appservice.owns_user(&user_id) {
                return Err(Error::forbidden(
                    "The application service cannot act for a user outside its namespaces",
                ));
            }
            if !services.accounts.is_active(&user_id)? {
                return Err(Error::forbidden(
                    "The application service has not registered this user",
                ));
            }
            user_id
        }
    };
    let device_id = match param("device_id") {
        None => OwnedDeviceId::from(format!("appservice_{}", appservice.id())),
        Some(device_id) => {
            if services.accounts.get_device(&user_id, &device_id)?.is_none() {
                return Err(Error::invalid_param(format!("{user_id} has no device {device_id:?}")));
            }
            OwnedDeviceId::from(device_id)
        }
    };
    Ok(Sender {
        user_id,
        device_id,
        access_token_hash: Vec::new(),
        appservice_id: Some(appservice.id().to_owned()),
    })
}

/// Reads the access token from the `Authorization: Bearer` header or, as older clients do, the
/// `access_token` query parameter.
fn access_token(parts: &http::request::Parts) -> Result<Option<String>> {
    if let Some(value) = parts.headers.get(AUTHORIZATION) {
        let value = value.to_str().map_err(|_| {
            Error::new(
                ErrorCode::UnknownToken { soft_logout: false },
                "The Authorization header is not valid text",
            )
        })?;
        return match value.strip_prefix("Bearer ") {
            Some(token) => Ok(Some(token.trim().to_owned())),
            None => Err(Error::new(
                ErrorCode::MissingToken,
                "The Authorization header must use the Bearer scheme",
            )),
        };
    }
    let query = parts.uri.query().unwrap_or_default();
    Ok(form_urlencoded::parse(query.as_bytes())
        .find(|(key, _)| key == "access_token")
        .map(|(_, value)| value.into_owned()))
}

async fn read_body(parts: &http::request::Parts, body: Body, limit: usize) -> Result<bytes::Bytes> {
    let too_large = || {
        Error::new(
            ErrorCode::TooLarge,
            format!("The request body is larger than the limit of {limit} bytes"),
        )
    };
    let declared = parts
        .headers
        .get(CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    if declared.is_some_and(|length| length > limit as u64) {
        return Err(too_large());
    }
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(error) if error.is::<LengthLimitError>() => Err(too_large()),
        Err(error) => {
            tracing::warn!(error = %error, "reading a request body failed");
            Err(Error::new(ErrorCode::Unknown, "The request body could not be read"))
        }
    }
}

fn request_error(error: FromHttpRequestError) -> Error {
    match error {
        FromHttpRequestError::Deserialization(DeserializationError::Json(error)) => {
            let message = format!("The request body does not match this endpoint: {error}");
            if error.to_string().starts_with("missing field") {
                Error::new(ErrorCode::MissingParam, message)
            } else {
                Error::bad_json(message)
            }
        }
        FromHttpRequestError::Deserialization(DeserializationError::Query(error)) => {
            Error::invalid_param(format!("A query parameter is invalid: {error}"))
        }
        FromHttpRequestError::Deserialization(DeserializationError::Ident(error)) => {
            Error::invalid_param(format!("An identifier in the path is invalid: {error}"))
        }
        FromHttpRequestError::MethodMismatch { .. } => Error::new(
            ErrorCode::Unrecognized { method_not_allowed: true },
            "This method is not allowed on this endpoint",
        ),
        other => Error::invalid_param(format!("The request is invalid: {other}")),
    }
}

/// A ruma response type, sent as the HTTP response.
pub struct RumaResponse<T>(pub T);

impl<T: OutgoingResponse> IntoResponse for RumaResponse<T> {
    fn into_response(self) -> Response {
        match self.0.try_into_http_response::<BytesMut>() {
            Ok(response) => response.map(|body| Body::from(body.freeze())).into_response(),
            Err(error) => {
                Error::Internal(anyhow::anyhow!("response serialisation failed: {error}"))
                    .into_response()
            }
        }
    }
}

impl<T> From<T> for RumaResponse<T> {
    fn from(response: T) -> Self {
        Self(response)
    }
}
