//! /_matrix/client/v1/media/*: download files and thumbnails with an access token, read the
//! upload limit, and (disabled) URL previews.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use http::header::{CONTENT_DISPOSITION, CONTENT_LENGTH, CONTENT_TYPE, X_CONTENT_TYPE_OPTIONS};
use http::{HeaderName, HeaderValue};
use ruma::api::client::authenticated_media::{
    get_content::v1 as get_content_v1, get_content_as_filename::v1 as get_content_as_filename_v1,
    get_content_thumbnail::v1 as get_content_thumbnail_v1,
    get_media_config::v1 as get_media_config_v1, get_media_preview::v1 as get_media_preview_v1,
};
use ruma::http_headers::{ContentDisposition, ContentDispositionType};
use ruma::UInt;
use tokio_util::io::ReaderStream;

use crate::api::ruma::{Ruma, RumaResponse};
use crate::error::{Error, Result};
use crate::service::media::{Disposition, MediaFile, ThumbnailMethod, ThumbnailRequest};
use crate::service::Services;

/// The policy that the Matrix specification recommends for served media: a page opened from a
/// media URL runs no script, loads nothing from elsewhere and is sandboxed, so an uploaded HTML
/// or SVG file cannot act with the homeserver's origin.
const CONTENT_SECURITY_POLICY: &str = "sandbox; default-src 'none'; script-src 'none'; \
     plugin-types application/pdf; style-src 'unsafe-inline'; media-src 'self'; object-src 'self';";

pub async fn get_content(
    State(services): State<Arc<Services>>,
    request: Ruma<get_content_v1::Request>,
) -> Result<MediaResponse> {
    let body = request.body;
    let file =
        services.media.download(&body.server_name, &body.media_id, None, body.timeout_ms).await?;
    Ok(MediaResponse(file))
}

pub async fn get_content_as_filename(
    State(services): State<Arc<Services>>,
    request: Ruma<get_content_as_filename_v1::Request>,
) -> Result<MediaResponse> {
    let body = request.body;
    let file = services
        .media
        .download(&body.server_name, &body.media_id, Some(body.filename), body.timeout_ms)
        .await?;
    Ok(MediaResponse(file))
}

pub async fn get_content_thumbnail(
    State(services): State<Arc<Services>>,
    request: Ruma<get_content_thumbnail_v1::Request>,
) -> Result<MediaResponse> {
    let body = request.body;
    let thumbnail = ThumbnailRequest {
        width: dimension(body.width),
        height: dimension(body.height),
        method: thumbnail_method(body.method.as_ref())?,
    };
    let file = services
        .media
        .thumbnail(&body.server_name, &body.media_id, thumbnail, body.timeout_ms)
        .await?;
    Ok(MediaResponse(file))
}

pub async fn get_media_config(
    State(services): State<Arc<Services>>,
    _request: Ruma<get_media_config_v1::Request>,
) -> Result<RumaResponse<get_media_config_v1::Response>> {
    Ok(get_media_config_v1::Response::new(upload_size(&services)).into())
}

pub async fn get_media_preview(
    State(services): State<Arc<Services>>,
    request: Ruma<get_media_preview_v1::Request>,
) -> Result<RumaResponse<get_media_preview_v1::Response>> {
    services.media.preview_url(&request.body.url)?;
    Ok(get_media_preview_v1::Response::new().into())
}

/// The upload limit as the config endpoints report it.
pub(super) fn upload_size(services: &Services) -> UInt {
    UInt::try_from(services.media.max_upload_bytes()).unwrap_or(UInt::MAX)
}

/// A requested thumbnail dimension; values beyond `u32` are as good as infinite.
pub(super) fn dimension(value: UInt) -> u32 {
    u32::try_from(u64::from(value)).unwrap_or(u32::MAX)
}

/// The resizing method. The specification sets no default; without one, thumbnails are scaled,
/// which keeps the whole image in view.
pub(super) fn thumbnail_method(method: Option<&ruma::media::Method>) -> Result<ThumbnailMethod> {
    match method {
        None | Some(ruma::media::Method::Scale) => Ok(ThumbnailMethod::Scale),
        Some(ruma::media::Method::Crop) => Ok(ThumbnailMethod::Crop),
        Some(other) => Err(Error::invalid_param(format!(
            "The thumbnail method {:?} is unknown; use crop or scale",
            other.as_str()
        ))),
    }
}

/// A file sent to a client, with the headers that keep a browser from running it as a page of
/// the homeserver: a sandboxing `Content-Security-Policy`, `X-Content-Type-Options: nosniff`,
/// and `Content-Disposition: inline` only for the types that cannot carry script.
pub struct MediaResponse(pub MediaFile);

impl IntoResponse for MediaResponse {
    fn into_response(self) -> Response {
        let file = self.0;
        let disposition_type = match file.disposition {
            Disposition::Inline => ContentDispositionType::Inline,
            Disposition::Attachment => ContentDispositionType::Attachment,
        };
        let disposition = ContentDisposition::new(disposition_type).with_filename(file.file_name);
        // Both values were checked when stored; the fallbacks only guard against a header
        // value that `http` still refuses.
        let content_type = HeaderValue::from_str(&file.content_type)
            .unwrap_or(HeaderValue::from_static("application/octet-stream"));
        let disposition = HeaderValue::from_str(&disposition.to_string()).unwrap_or_else(|_| {
            HeaderValue::from_static(match file.disposition {
                Disposition::Inline => "inline",
                Disposition::Attachment => "attachment",
            })
        });

        let headers = [
            (CONTENT_TYPE, content_type),
            (CONTENT_LENGTH, HeaderValue::from(file.size)),
            (CONTENT_DISPOSITION, disposition),
            (
                HeaderName::from_static("content-security-policy"),
                HeaderValue::from_static(CONTENT_SECURITY_POLICY),
            ),
            (X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")),
            (
                HeaderName::from_static("cross-origin-resource-policy"),
                HeaderValue::from_static("cross-origin"),
            ),
        ];
        (headers, Body::from_stream(ReaderStream::new(file.reader))).into_response()
    }
}
