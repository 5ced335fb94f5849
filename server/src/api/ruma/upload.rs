//! `RumaUpload<T>`, the extractor for media uploads, whose body is the file itself rather than
//! JSON.
//!
//! It parses the ruma request from the path, query and headers only, and leaves the body as a
//! stream for the media service, which writes it to disk as it arrives. The JSON body limit of
//! [`Ruma`](super::Ruma) does not apply; a `Content-Length` above the media upload limit is
//! rejected with `M_TOO_LARGE` before any byte is read.

use std::sync::Arc;

use axum::body::{Body, BodyDataStream};
use axum::extract::{FromRef, FromRequest, FromRequestParts, RawPathParams, Request};
use bytes::Bytes;
use futures::StreamExt;
use http::header::CONTENT_LENGTH;
use ruma::api::IncomingRequest;

use super::{authenticate, request_error, TokenPolicy};
use crate::error::{Error, ErrorCode, Result};
use crate::service::accounts::Sender;
use crate::service::media::UploadSource;
use crate::service::Services;

/// A parsed ruma upload request, its authenticated sender, and the file as a stream.
pub struct RumaUpload<T> {
    /// The request, with an empty `file`: the bytes are in `content`.
    pub body: T,
    pub sender: Sender,
    pub content: UploadBody,
}

impl<T, S> FromRequest<S> for RumaUpload<T>
where
    T: IncomingRequest + Send + 'static,
    Arc<Services>: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = Error;

    async fn from_request(request: Request, state: &S) -> Result<Self> {
        let services = Arc::<Services>::from_ref(state);
        let (mut parts, body) = request.into_parts();

        let path_args: Vec<String> =
            match RawPathParams::from_request_parts(&mut parts, state).await {
                Ok(params) => params.iter().map(|(_, value)| value.to_owned()).collect(),
                Err(_) => return Err(Error::invalid_param("A path parameter is not valid UTF-8")),
            };

        // Every upload endpoint requires an access token.
        let sender = authenticate(&services, &parts, TokenPolicy::Required)?.ok_or_else(|| {
            Error::new(ErrorCode::MissingToken, "This endpoint requires an access token")
        })?;
        tracing::Span::current().record("user_id", sender.user_id.as_str());

        let declared_len = match parts.headers.get(CONTENT_LENGTH) {
            None => None,
            Some(value) => {
                Some(value.to_str().ok().and_then(|value| value.parse::<u64>().ok()).ok_or_else(
                    || Error::invalid_param("The Content-Length header is not a number"),
                )?)
            }
        };
        let limit = services.media.max_upload_bytes();
        if declared_len.is_some_and(|length| length > limit) {
            return Err(Error::new(
                ErrorCode::TooLarge,
                format!("The upload is larger than this server's limit of {limit} bytes"),
            ));
        }

        let head = http::Request::from_parts(parts, Bytes::new());
        let parsed = T::try_from_http_request(head, &path_args).map_err(request_error)?;
        Ok(Self { body: parsed, sender, content: UploadBody::new(body, declared_len) })
    }
}

/// The body of an upload, read chunk by chunk.
pub struct UploadBody {
    stream: BodyDataStream,
    declared_len: Option<u64>,
}

impl UploadBody {
    fn new(body: Body, declared_len: Option<u64>) -> Self {
        Self { stream: body.into_data_stream(), declared_len }
    }
}

impl UploadSource for UploadBody {
    fn declared_len(&self) -> Option<u64> {
        self.declared_len
    }

    async fn next_chunk(&mut self) -> Result<Option<Bytes>> {
        match self.stream.next().await {
            None => Ok(None),
            Some(Ok(chunk)) => Ok(Some(chunk)),
            Some(Err(error)) => {
                // Most often the client closed the connection before sending the whole body.
                tracing::warn!(error = %error, "reading an upload failed");
                Err(Error::new(
                    ErrorCode::Unknown,
                    "The upload ended before the whole body arrived; nothing was stored",
                ))
            }
        }
    }
}
